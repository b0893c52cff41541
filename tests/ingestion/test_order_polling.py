"""Orders polled from eBay (Fulfillment API getOrders) and Amazon (Orders API v0 getOrders +
getOrderItems), over real HTTP against the channel simulator's order books: each order version is
stored once as an inbound event like a webhook and drained by the same pipeline; the cursor and
its overlap window miss nothing and apply nothing twice; failures leave the cursor where it was
and back off; one poller per channel."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from channels.adapters import adapter_for
from channels.adapters.base import Delivery
from devtools.simulator import Simulator
from devtools.simulator.core import order_book_apply
from ingestion.models import ChannelPollCursor, InboundEvent, IngestedOrderLine
from ingestion.polling import channel_orders_poll, channels_poll_dispatch
from inventory.models import StockMovement, StockPosition
from inventory.services import stock_receive
from tests.ingestion.conftest import WOO_SECRET, drain_all, post_webhook, woo_headers

pytestmark = pytest.mark.django_db

TOKEN = "poll-access-token"
MARKETPLACE = "ATVPDKIKX0DER"


@pytest.fixture
def sim():
    simulator = Simulator(seed=11).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def polled(make_channel, sim, tee):
    """A polled channel of a kind, pointed at its own simulator store, with 10 TEE-M in stock."""

    def make(kind: str, slug: str | None = None, **settings):
        slug = slug or f"{kind}-orders"
        channel = make_channel(kind, slug, base_url=sim.store_url(slug), credentials={"access_token": TOKEN},
                               settings={"marketplace_id": MARKETPLACE, "seller_id": "A1SELLER", **settings})
        order_book_apply(sim.state, {"store": slug, "kind": kind, "action": "configure", "token": TOKEN})
        return channel

    stock_receive(sku=tee, location=tee_location(), quantity=10)
    return make


def tee_location():
    from inventory.models import Location

    return Location.objects.get(code="wh")


def on_hand(sku) -> int:
    position = StockPosition.objects.filter(sku=sku, location__code="wh").first()
    return position.on_hand if position else 0


def book(sim, channel, action: str, **body) -> dict:
    return order_book_apply(sim.state, {"store": channel.slug, "kind": channel.kind, "action": action, **body})


def order(sim, channel, quantity: int = 1, sku: str = "TEE-M", **body) -> str:
    return book(sim, channel, "create", lines=[{"sku": sku, "quantity": quantity}], **body)["order_id"]


def poll(channel, **kwargs):
    result = channel_orders_poll(channel_id=channel.pk, force=True, **kwargs)
    assert result.polled
    return result


def requests_to(sim, channel, suffix: str) -> int:
    return sum(1 for r in sim.state.requests_for(channel.slug) if r["path"].endswith(suffix))


def cursor(channel) -> ChannelPollCursor:
    return ChannelPollCursor.objects.get(channel=channel)


# ------------------------------------------------------------------------------ new orders, overlap


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_new_orders_are_applied_once_and_the_overlapping_poll_applies_nothing_again(kind, sim, polled, tee):
    # given
    channel = polled(kind)
    first, second = order(sim, channel, 2), order(sim, channel, 3)

    # when
    result = poll(channel)
    drain_all()

    # then
    assert (result.orders, result.stored, result.complete) == (2, 2, True)
    assert on_hand(tee) == 5
    events = InboundEvent.objects.filter(channel=channel)
    assert sorted(e.status for e in events) == ["done", "done"]
    assert {e.topic for e in events} == {"order"} and all(e.dedup_key.startswith(f"wh:{channel.pk}:order:")
                                                          for e in events)
    assert {e.payload["orderId"] if kind == "ebay" else e.payload["Order"]["AmazonOrderId"]
            for e in events} == {first, second}
    row = cursor(channel)
    assert row.cursor_at is not None and row.window_from is None and row.page_token == ""
    assert row.consecutive_failures == 0 and row.last_error == "" and row.last_stored == 2

    # a second poll re-reads the overlap (both orders again) and stores and applies nothing
    again = poll(channel)
    drain_all()
    assert (again.orders, again.stored) == (2, 0)
    assert InboundEvent.objects.filter(channel=channel).count() == 2
    assert on_hand(tee) == 5
    assert StockMovement.objects.filter(sku=tee, type="sale").count() == 2


def test_amazon_asks_for_items_only_for_order_versions_not_stored_yet(sim, polled):
    channel = polled("amazon")
    order(sim, channel, 1)
    order(sim, channel, 1)
    poll(channel)
    assert requests_to(sim, channel, "/orderItems") == 2

    poll(channel)  # the same two versions: no getOrderItems call spent on them (0.5 requests/s)

    assert requests_to(sim, channel, "/orderItems") == 2
    assert requests_to(sim, channel, "/orders/v0/orders") == 2


def test_amazon_statuses_fulfilled_by_amazon_and_preorders_move_no_stock(sim, polled, tee):
    channel = polled("amazon")
    order(sim, channel, 1, fulfillment_channel="AFN")  # Amazon's warehouse, not ours
    preorder = order(sim, channel, 1, status="PendingAvailability")
    order(sim, channel, 2, status="Pending")  # payment not authorized yet: Amazon reserves the unit

    poll(channel)
    drain_all()

    assert on_hand(tee) == 8
    assert requests_to(sim, channel, "/orderItems") == 1  # only the Pending order's items are asked for
    assert sorted(InboundEvent.objects.filter(channel=channel).values_list("status", flat=True)) == [
        "done", "ignored", "ignored"]

    # the pre-order's release: Pending is a new version, and it sells
    book(sim, channel, "status", order_id=preorder, status="Pending")
    poll(channel)
    drain_all()
    assert on_hand(tee) == 7


# ------------------------------------------------------------------------------ nothing missed


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_paging_reads_every_page_of_the_window(kind, sim, polled, tee):
    channel = polled(kind)
    book(sim, channel, "configure", page_size=2)
    for _ in range(5):
        order(sim, channel, 1)

    result = poll(channel)
    drain_all()

    assert (result.pages, result.orders, result.stored, result.complete) == (3, 5, 5, True)
    assert on_hand(tee) == 5
    list_path = "/sell/fulfillment/v1/order" if kind == "ebay" else "/orders/v0/orders"
    assert requests_to(sim, channel, list_path) == 3
    assert cursor(channel).busy  # a full page: the next poll comes sooner


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_orders_placed_or_cancelled_while_a_poll_is_between_pages_are_not_missed(kind, sim, polled, tee):
    # given three orders on pages of two, and two changes that happen after the first page was served
    channel = polled(kind)
    book(sim, channel, "configure", page_size=2)
    first = order(sim, channel, 1)
    order(sim, channel, 1)
    order(sim, channel, 1)
    book(sim, channel, "create", lines=[{"sku": "TEE-M", "quantity": 2}], defer_pages=1)
    book(sim, channel, "cancel", order_id=first, defer_pages=1)

    # when the channel is polled, then polled again (its overlap)
    poll(channel)
    poll(channel)
    drain_all()

    # then every sale is applied once and the cancellation gave its unit back
    assert on_hand(tee) == 10 - 2 - 2
    assert StockMovement.objects.filter(sku=tee, type="sale").count() == 4
    assert StockMovement.objects.filter(sku=tee, type="cancellation").count() == 1


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_an_order_stamped_just_before_the_cursor_is_read_by_the_next_poll(kind, sim, polled, tee):
    """An order the marketplace shows late, with a modification time a little before the cursor
    (index lag, clock skew), is inside the next poll's overlap window."""
    channel = polled(kind)
    poll(channel)
    moved_to = cursor(channel).cursor_at
    late = (moved_to - timedelta(seconds=90)).isoformat()

    order(sim, channel, 4, at=late)
    poll(channel)
    drain_all()

    assert on_hand(tee) == 6
    assert cursor(channel).cursor_at >= moved_to  # Amazon's LastUpdatedBefore has whole seconds


def test_amazon_window_ends_at_amazons_last_updated_before(sim, polled, tee):
    """Amazon answers LastUpdatedBefore (what it could see): the cursor moves there, not to our
    clock, so an order Amazon shows only later is still in the next window."""
    channel = polled("amazon")
    book(sim, channel, "configure", lag_seconds=120)
    asked = timezone.now()

    poll(channel)

    assert cursor(channel).cursor_at <= asked - timedelta(seconds=119)


def test_a_run_stopped_by_its_budget_resumes_at_the_next_page(sim, polled, tee):
    channel = polled("ebay")
    book(sim, channel, "configure", page_size=2)
    for _ in range(5):
        order(sim, channel, 1)

    partial = poll(channel, budget=0)  # the first page always goes, then the budget is spent

    row = cursor(channel)
    assert (partial.pages, partial.stored, partial.complete) == (1, 2, False)
    assert row.cursor_at is None and row.page_token == "2" and row.window_from is not None
    assert row.next_due_at <= timezone.now()  # pages left: due again at once
    rest = poll(channel)
    drain_all()
    assert (rest.pages, rest.stored, rest.complete) == (2, 3, True)
    assert on_hand(tee) == 5 and requests_to(sim, channel, "/sell/fulfillment/v1/order") == 3


def test_amazon_items_calls_are_budgeted_inside_a_page(sim, polled, tee):
    channel = polled("amazon")
    for _ in range(3):
        order(sim, channel, 1)

    partial = poll(channel, budget=0)  # one order's items, then the budget is spent mid-page

    assert (partial.stored, partial.complete) == (1, False) and cursor(channel).page_token == ""
    rest = poll(channel)
    drain_all()
    assert (rest.stored, rest.complete) == (2, True) and on_hand(tee) == 7
    assert requests_to(sim, channel, "/orderItems") == 3  # the stored order's items were not asked again


def test_an_expired_amazon_next_token_restarts_the_window_instead_of_sticking(sim, polled, tee):
    channel = polled("amazon")
    book(sim, channel, "configure", page_size=2)
    for _ in range(5):
        order(sim, channel, 1)
    now = timezone.now()
    # a window left mid-way on a NextToken Amazon no longer knows (expired)
    ChannelPollCursor.objects.create(channel=channel, next_due_at=now, window_from=now - timedelta(minutes=5),
                                     window_until=now, page_token="expired-token")

    failed = poll(channel)

    assert "400" in failed.error and cursor(channel).page_token == "" and cursor(channel).cursor_at is None
    done = poll(channel)
    drain_all()
    assert done.complete and on_hand(tee) == 5
    assert StockMovement.objects.filter(sku=tee, type="sale").count() == 5


# ------------------------------------------------------------------------------ cancellations, refunds


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_a_cancellation_gives_the_stock_back_once(kind, sim, polled, tee):
    channel = polled(kind)
    placed = order(sim, channel, 3)
    poll(channel)
    drain_all()
    assert on_hand(tee) == 7

    book(sim, channel, "cancel", order_id=placed)
    poll(channel)
    poll(channel)
    drain_all()

    assert on_hand(tee) == 10
    assert StockMovement.objects.filter(sku=tee, type="cancellation").count() == 1
    versions = InboundEvent.objects.filter(channel=channel).order_by("id")
    assert versions.count() == 2 and versions[0].delivery_id != versions[1].delivery_id


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_an_order_first_seen_cancelled_moves_nothing(kind, sim, polled, tee):
    channel = polled(kind)
    placed = order(sim, channel, 3)
    book(sim, channel, "cancel", order_id=placed)  # created and cancelled between two polls

    poll(channel)
    drain_all()

    assert on_hand(tee) == 10
    event = InboundEvent.objects.get(channel=channel)
    assert event.status == "done" and "no recorded sale" in json.dumps(event.outcome)


def test_amazon_cancellation_puts_back_what_the_line_took_whatever_quantity_it_shows(sim, polled, tee):
    channel = polled("amazon")
    adapter = adapter_for(channel)
    payload = {"Order": {"AmazonOrderId": "902-1-1", "OrderStatus": "Canceled", "FulfillmentChannel": "MFN",
                         "LastUpdateDate": "2026-12-01T10:00:00Z"},
               "OrderItems": [{"OrderItemId": "11", "SellerSKU": "TEE-M", "QuantityOrdered": 0}]}

    [event] = adapter.parse_webhook(channel, Delivery(delivery_id="x", topic="order"), payload)

    assert event.type == "cancellation" and event.metadata["restock"] and event.quantity >= 10**9


def test_ebay_refunds_restock_like_the_webhook_path(sim, polled, make_channel, client, tee):
    """eBay's FULLY_REFUNDED (a completed return or cancellation) puts the order back, as a
    WooCommerce `refunded` order does; a partial refund (which units is not said) restocks
    nothing, as for WooCommerce; a refund after a cancellation never puts back twice."""
    ebay = polled("ebay")
    woo = make_channel("woocommerce", "woo", secret=WOO_SECRET)

    # the webhook path: a WooCommerce order for 2, then refunded
    for status in ("processing", "refunded"):
        body = json.dumps({"id": 77, "status": status, "date_modified_gmt": "2026-12-01T10:00:00",
                           "line_items": [{"id": 701, "sku": "TEE-M", "quantity": 2}]}).encode()
        post_webhook(client, "woo", None, woo_headers(body, topic="order.updated"), raw=body)
        drain_all()
    # the polled path: an eBay order for 2, shipped, then fully refunded (a return)
    refunded = order(sim, ebay, 2)
    poll(ebay)
    drain_all()
    book(sim, ebay, "ship", order_id=refunded)
    book(sim, ebay, "refund", order_id=refunded)
    poll(ebay)
    drain_all()

    def history(channel):
        return [(m.type, m.on_hand_delta) for m in StockMovement.objects.filter(
            sku=tee, event_key__startswith=f"{channel.slug}:").order_by("id")]

    assert history(woo) == history(ebay) == [("sale", -2), ("return", 2)]
    assert on_hand(tee) == 10

    # a partial refund restocks nothing
    partial = order(sim, ebay, 1)
    poll(ebay)
    drain_all()
    book(sim, ebay, "refund", order_id=partial, partial=True)
    poll(ebay)
    drain_all()
    assert on_hand(tee) == 9

    # a cancellation after a full refund: the line is put back once
    both = order(sim, ebay, 2)
    poll(ebay)
    drain_all()
    book(sim, ebay, "refund", order_id=both)
    poll(ebay)
    drain_all()
    book(sim, ebay, "cancel", order_id=both)
    poll(ebay)
    drain_all()
    assert on_hand(tee) == 9
    line = IngestedOrderLine.objects.get(channel=ebay, order_ref=both)
    assert (line.taken, line.restocked) == (2, 2)


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_no_webhooks_for_polled_marketplaces_and_a_changed_version_never_sells_twice(kind, sim, polled, client,
                                                                                      tee):
    """eBay and Amazon deliver no webhooks here (polling is their only path); two versions of one
    order (placed, then shipped) are two events, and the sale is applied once."""
    channel = polled(kind)
    answer = client.post(f"/webhooks/{channel.slug}/", data=b"{}", content_type="application/json")
    assert answer.status_code == 404 and answer.json()["error"] == "webhooks_not_supported"

    placed = order(sim, channel, 2)
    poll(channel)
    book(sim, channel, "ship", order_id=placed)
    poll(channel)
    drain_all()

    assert InboundEvent.objects.filter(channel=channel, status="done").count() == 2
    assert on_hand(tee) == 8
    assert StockMovement.objects.filter(sku=tee, type="sale").count() == 1


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_an_http_failure_leaves_the_cursor_and_backs_off(kind, sim, polled, tee):
    channel = polled(kind)
    order(sim, channel, 1)
    sim.state.faults[channel.slug] = _faults(fail_next=1, error_status=503)

    failed = poll(channel)

    row = cursor(channel)
    assert failed.error and "503" in row.last_error and row.consecutive_failures == 1
    assert row.cursor_at is None and row.window_until is None and row.page_token == ""
    assert row.window_from is not None  # the first window stays where the first attempt put it
    assert row.next_due_at > timezone.now() + timedelta(seconds=20)  # half the 60 s interval at least
    assert row.claim_token == "" and row.claimed_until is None
    assert channel_orders_poll(channel_id=channel.pk).polled is False  # not due: backing off

    ok = poll(channel)
    drain_all()
    row.refresh_from_db()
    assert ok.complete and row.consecutive_failures == 0 and row.last_error == "" and row.cursor_at is not None
    assert on_hand(tee) == 9


def test_a_failed_page_is_asked_again_and_the_cursor_waits_for_it(sim, polled, tee):
    channel = polled("ebay")
    book(sim, channel, "configure", page_size=2)
    for _ in range(5):
        order(sim, channel, 1)
    poll(channel, budget=0)  # page 1 stored, page 2 saved as the next one
    sim.state.faults[channel.slug] = _faults(fail_next=1, error_status=500)

    failed = poll(channel)

    row = cursor(channel)
    assert failed.error and row.cursor_at is None and row.page_token == "2"
    assert InboundEvent.objects.filter(channel=channel).count() == 2
    poll(channel)
    drain_all()
    assert cursor(channel).cursor_at is not None and on_hand(tee) == 5


def test_repeated_failures_back_off_longer_and_timeouts_count(sim, polled, settings):
    settings.INGESTION_FETCH_TIMEOUT_SECONDS = 0.2
    channel = polled("ebay", poll_seconds=20)
    sim.state.faults[channel.slug] = _faults(latency_ms=600)  # slower than the read timeout
    waits = []
    for _ in range(4):
        before = timezone.now()
        assert poll(channel).error
        waits.append((cursor(channel).next_due_at - before).total_seconds())
    row = cursor(channel)
    assert row.consecutive_failures == 4 and "Timeout" in row.last_error
    assert all(w >= 10 - 1 for w in waits) and max(waits) <= 15 * 60 + 1  # from half the interval to 15 min


def test_a_rate_limit_waits_as_asked_without_counting_a_failure(sim, polled):
    channel = polled("ebay")
    sim.state.faults[channel.slug] = _faults(rate_limit_next=1, retry_after=120)

    poll(channel)

    row = cursor(channel)
    assert row.consecutive_failures == 0 and "429" in row.last_error
    assert timedelta(seconds=110) < row.next_due_at - timezone.now() <= timedelta(seconds=121)


@pytest.mark.parametrize("kind", ["ebay", "amazon"])
def test_the_channel_credentials_are_sent_and_a_wrong_token_is_refused(kind, sim, polled):
    channel = polled(kind)
    channel.credentials = {"access_token": "revoked"}
    channel.save(update_fields=["credentials"])

    failed = poll(channel)

    assert failed.error and ("401" in failed.error or "403" in failed.error)
    assert cursor(channel).cursor_at is None


# ------------------------------------------------------------------------------ scheduling and the claim


def test_dispatch_creates_cursors_and_queues_only_due_unclaimed_channels(sim, polled, make_channel):
    ebay, amazon = polled("ebay"), polled("amazon")
    make_channel("shopify", "shop")  # not polled
    polled("ebay", "quiet", poll_orders=False)

    due = channels_poll_dispatch()

    assert sorted(due) == sorted([ebay.pk, amazon.pk])
    assert set(ChannelPollCursor.objects.values_list("channel_id", flat=True)) == {ebay.pk, amazon.pk}
    poll(ebay)
    ChannelPollCursor.objects.filter(channel=amazon).update(claimed_until=timezone.now() + timedelta(minutes=1))
    assert channels_poll_dispatch() == []
    # a live claim also keeps a forced poll out
    assert channel_orders_poll(channel_id=amazon.pk, force=True).polled is False


def test_interval_is_the_channel_setting_and_shorter_when_busy(sim, polled):
    quiet = polled("ebay", "quiet", poll_seconds=120)
    busy = polled("ebay", "busy", poll_seconds=120, poll_page_size=2)
    order(sim, busy, 1)
    order(sim, busy, 1)

    poll(quiet)
    poll(busy)

    now = timezone.now()
    assert timedelta(seconds=115) < cursor(quiet).next_due_at - now <= timedelta(seconds=120)
    assert cursor(busy).busy and timedelta(seconds=10) < cursor(busy).next_due_at - now <= timedelta(seconds=15)


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_poll_one_channel_at_once(sim, make_channel, tee):
    from inventory.models import Location

    wh = Location.objects.get(code="wh")
    stock_receive(sku=tee, location=wh, quantity=10)
    channel = make_channel("ebay", "race", base_url=sim.store_url("race"), credentials={"access_token": TOKEN})
    order_book_apply(sim.state, {"store": "race", "kind": "ebay", "action": "create",
                                 "lines": [{"sku": "TEE-M", "quantity": 1}]})
    sim.state.faults["race"] = _faults(latency_ms=300)
    barrier, results = threading.Barrier(4), []

    def run():
        from django.db import connection

        barrier.wait()
        try:
            results.append(channel_orders_poll(channel_id=channel.pk, force=True))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sum(r.polled for r in results) == 1
    assert requests_to(sim, channel, "/sell/fulfillment/v1/order") == 1
    assert InboundEvent.objects.filter(channel=channel).count() == 1


def test_storing_a_page_costs_a_fixed_number_of_queries(sim, polled, django_assert_max_num_queries):
    channel = polled("ebay")
    for _ in range(30):
        order(sim, channel, 1)
    poll(channel)  # creates the row, reads nothing new below
    for _ in range(30):
        order(sim, channel, 1)

    with django_assert_max_num_queries(8):  # channel, row, claim, row, dedup keys, INSERT, cursor, done
        result = poll(channel)

    assert result.stored == 30


# ------------------------------------------------------------------------------ admin


def test_admin_lists_poll_cursors_read_only(admin_client, sim, polled):
    channel = polled("ebay")
    poll(channel)

    listing = admin_client.get("/admin/ingestion/channelpollcursor/")
    detail = admin_client.get(f"/admin/ingestion/channelpollcursor/{channel.pk}/change/")

    assert listing.status_code == 200 and channel.slug.encode() in listing.content
    assert detail.status_code == 200 and TOKEN.encode() not in detail.content
    assert admin_client.get("/admin/ingestion/channelpollcursor/add/").status_code == 403


def _faults(**fields):
    from devtools.simulator.core import Faults

    return Faults(**fields)


def test_simulator_order_books_filter_by_modification_time_and_check_auth(sim):
    """The simulator's order APIs themselves: lastmodifieddate / LastUpdatedAfter filtering,
    limit caps, and the token."""
    import requests

    ebay, amazon = f"{sim.store_url('e')}/sell/fulfillment/v1/order", f"{sim.store_url('a')}/orders/v0/orders"
    for store, kind in (("e", "ebay"), ("a", "amazon")):
        order_book_apply(sim.state, {"store": store, "kind": kind, "action": "create", "at": "2026-01-01T00:00:00Z",
                                     "lines": [{"sku": "OLD", "quantity": 1}]})
        order_book_apply(sim.state, {"store": store, "kind": kind, "action": "create",
                                     "lines": [{"sku": "NEW", "quantity": 1}]})
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    got = requests.get(ebay, params={"filter": f"lastmodifieddate:[{since}..]"}, headers=bearer, timeout=5).json()
    assert [o["lineItems"][0]["sku"] for o in got["orders"]] == ["NEW"] and got["total"] == 1
    assert requests.get(ebay, params={"limit": 201}, headers=bearer, timeout=5).status_code == 400
    assert requests.get(ebay, timeout=5).status_code == 401
    answer = requests.get(amazon, params={"MarketplaceIds": MARKETPLACE, "LastUpdatedAfter": since},
                          headers={"x-amz-access-token": TOKEN}, timeout=5).json()["payload"]
    assert [o["AmazonOrderId"] for o in answer["Orders"]] and "LastUpdatedBefore" in answer
    assert len(answer["Orders"]) == 1
    assert requests.get(amazon, params={"LastUpdatedAfter": since}, headers={"x-amz-access-token": TOKEN},
                        timeout=5).status_code == 400  # MarketplaceIds is required
    with pytest.raises(ValueError):
        order_book_apply(sim.state, {"store": "a", "kind": "amazon", "action": "refund", "order_id": "x"})
