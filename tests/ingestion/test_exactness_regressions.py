"""Regressions from the exactness review (issue 8). Each failed before its fix.

1. One bad event stopped all ingestion: an unexpected exception while planning or applying rolled
   back the whole batch (attempt counters included) and the same batch was claimed forever.
2. An order smaller than its reservation took the whole hold from on_hand (and SKUs held but not
   ordered too).
6. Restocks went back to one location when the order line was taken from several.
10. A delta that happened before a newer count but arrived after it was applied again; a late
    channel level observed before our newer push was applied as a count.
"""

import json

import pytest
from django.utils import timezone

from channels.models import ChannelSkuState
from ingestion.models import InboundEvent, IngestedOrderLine
from ingestion.services import events_accept, inbound_events_drain
from inventory.models import StockPosition
from inventory.selectors import ledger_drift
from inventory.services import stock_receive
from reservations.models import Reservation
from reservations.services import reservation_create
from tests.factories import LocationFactory
from tests.ingestion.conftest import drain_all, listing, post_webhook, shopify_headers

pytestmark = pytest.mark.django_db


def level(sku, location) -> tuple[int, int]:
    position = StockPosition.objects.filter(sku=sku, location=location).first()
    return (position.on_hand, position.reserved) if position else (0, 0)


def shopify_order(order_id: int, lines: list[dict]) -> dict:
    return {"id": order_id, "name": f"#{order_id}", "created_at": "2024-05-01T10:00:00-04:00", "cancelled_at": None,
            "line_items": lines}


def post_order(client, order: dict, topic: str = "orders/create") -> None:
    body = json.dumps(order).encode()
    assert post_webhook(client, "shop", None, shopify_headers(body, topic=topic), raw=body).status_code == 200


def sale(event_id: str, sku: str, quantity: int, *, reference: str = "", location: str = "wh") -> dict:
    return {"event_id": event_id, "type": "sale", "sku": sku, "location": location, "quantity": quantity,
            "occurred_at": "2024-05-01T10:00:00Z", "reference": reference}


# ------------------------------------------------------------------------------ 1. poison


def test_unicode_digit_listing_id_fails_alone_and_the_rest_of_the_batch_applies(client, shopify, tee, wh):
    # given: a listing the Resolver matches by attributes, and an order whose variant id is "²"
    listing(shopify, tee, "808950810", variant_id=39072856)
    stock_receive(sku=tee, location=wh, quantity=10)
    post_order(client, shopify_order(1, [{"id": 1, "variant_id": "²", "quantity": 1}]))
    events_accept(events=[sale("after-the-poison", "TEE-M", 2)])

    # when
    drain_all()

    # then: the good event applied, the bad one is failed with a reason, nothing is left pending
    assert level(tee, wh) == (8, 0)
    statuses = dict(InboundEvent.objects.values_list("delivery_id", "status"))
    assert statuses["after-the-poison"] == "done"
    assert not InboundEvent.objects.filter(status="pending").exists()
    assert all(e.error_code and e.last_error for e in InboundEvent.objects.filter(status="failed"))


def test_channel_setting_of_the_wrong_json_type_fails_that_event_only(client, shopify, tee, wh):
    shopify.settings = {"location_id": "905684977", "locations": ["not", "a", "mapping"]}
    shopify.save()
    listing(shopify, tee, "808950810")
    body = json.dumps({"inventory_item_id": 808950810, "location_id": 1, "available": 5,
                       "updated_at": "2024-05-01T10:00:00-04:00"}).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="inventory_levels/update"), raw=body)
    events_accept(events=[{"event_id": "rcv", "type": "receipt", "sku": "TEE-M", "location": "wh", "quantity": 3,
                           "occurred_at": "2024-05-01T10:00:00Z"}])

    drain_all()

    assert level(tee, wh) == (3, 0)
    assert not InboundEvent.objects.filter(status="pending").exists()


def test_an_exception_nobody_foresaw_is_confined_to_its_event(tee, wh, monkeypatch):
    """Any exception, not only the expected classes, while applying: the event is retried with
    the reason recorded and its attempt counted; the others apply; the batch is not re-claimed."""
    from ingestion.processing import apply

    original = apply.BatchProcessor._apply_line

    def explode(self, plan, line):
        if line.key == "api:boom":
            raise ZeroDivisionError("nobody foresaw this")
        return original(self, plan, line)

    monkeypatch.setattr(apply.BatchProcessor, "_apply_line", explode)
    events_accept(events=[{"event_id": e, "type": "receipt", "sku": "TEE-M", "location": "wh", "quantity": 1,
                           "occurred_at": "2024-05-01T10:00:00Z"} for e in ("a", "boom", "b")])

    result = inbound_events_drain()

    assert result.claimed == 3 and result.done == 2 and result.retrying == 1
    boom = InboundEvent.objects.get(delivery_id="boom")
    assert (boom.status, boom.attempts, boom.error_code) == ("pending", 1, "unexpected_error")
    assert boom.next_attempt_at > timezone.now()  # backed off: the next drain does not claim it
    assert inbound_events_drain().claimed == 0
    assert level(tee, wh) == (2, 0)


def test_a_failure_outside_any_event_falls_back_to_one_event_at_a_time(tee, wh, monkeypatch):
    """An error in the batch-wide steps (here: the lookups of a batch holding one bad event) must
    not hold the others back: each event is then applied in a batch of its own."""
    from ingestion.processing import plan as planning

    original = planning.Resolver.__init__

    def fragile(self, plans):
        if any(inbound.delivery_id == "poison" for inbound, _channel, _events in plans):
            raise OverflowError("a lookup nobody foresaw")
        original(self, plans)

    monkeypatch.setattr(planning.Resolver, "__init__", fragile)
    events_accept(events=[{"event_id": e, "type": "receipt", "sku": "TEE-M", "location": "wh", "quantity": 1,
                           "occurred_at": "2024-05-01T10:00:00Z"} for e in ("a", "poison", "b")])

    inbound_events_drain()

    assert level(tee, wh) == (2, 0)
    poison = InboundEvent.objects.get(delivery_id="poison")
    assert poison.status == "pending" and poison.attempts == 1 and "OverflowError" in poison.last_error


# ------------------------------------------------------------------------------ 2. order < hold


def test_order_smaller_than_its_hold_takes_only_what_it_sold(client, shopify, tee, mug, wh):
    # given: 10 tees and 10 mugs; a checkout held 3 tees and 2 mugs for order 77
    stock_receive(sku=tee, location=wh, quantity=10)
    stock_receive(sku=mug, location=wh, quantity=10)
    held = reservation_create(lines=[{"sku": "TEE-M", "quantity": 3}, {"sku": "MUG-1", "quantity": 2}],
                              channel=shopify, order_ref="77")
    # when: the order sells 1 tee and no mug
    post_order(client, shopify_order(77, [{"id": 1, "sku": "TEE-M", "quantity": 1}]))
    drain_all()
    # then: one tee left on_hand, the other 2 tees and both mugs are back on sale
    assert level(tee, wh) == (9, 0)
    assert level(mug, wh) == (10, 0)
    held.refresh_from_db()
    assert held.status == "committed"
    assert sorted(held.lines.values_list("quantity", "committed")) == [(2, 0), (3, 1)]
    line = IngestedOrderLine.objects.get()
    assert (line.taken, line.covered) == (1, 1)
    assert ledger_drift() == []


def test_order_for_none_of_the_held_skus_releases_the_hold(client, shopify, tee, mug, wh):
    stock_receive(sku=tee, location=wh, quantity=5)
    stock_receive(sku=mug, location=wh, quantity=5)
    held = reservation_create(lines=[{"sku": "MUG-1", "quantity": 2}], channel=shopify, order_ref="78")

    post_order(client, shopify_order(78, [{"id": 1, "sku": "TEE-M", "quantity": 1}]))
    drain_all()

    assert level(tee, wh) == (4, 0)
    assert level(mug, wh) == (5, 0)
    assert Reservation.objects.get(pk=held.pk).status == "released"


def test_canonical_order_lines_split_over_batches_share_one_hold(tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    reservation_create(lines=[{"sku": "TEE-M", "quantity": 3, "location": "wh"}], order_ref="ORD-5")

    events_accept(events=[sale("l1", "TEE-M", 1, reference="ORD-5"), sale("l2", "TEE-M", 1, reference="ORD-5")])
    drain_all()

    # the batch sold 2 of the 3 held: 2 leave on_hand, the third goes back to sale
    assert level(tee, wh) == (8, 0)
    assert ledger_drift() == []


def test_held_units_an_adjustment_removed_are_sold_from_what_is_there(client, shopify, tee, wh):
    """A count removed held units: the order commits what is on hand and the shortfall is an
    oversell incident; the hold never stays active behind the order (reported by review)."""
    from inventory.services import stock_adjust

    stock_receive(sku=tee, location=wh, quantity=3)
    held = reservation_create(lines=[{"sku": "TEE-M", "quantity": 3}], channel=shopify, order_ref="79")
    stock_adjust(sku=tee, location=wh, type="adjustment", quantity=-2)

    post_order(client, shopify_order(79, [{"id": 1, "sku": "TEE-M", "quantity": 3}]))
    drain_all()

    assert level(tee, wh) == (0, 0)
    assert Reservation.objects.get(pk=held.pk).status == "committed"
    from ingestion.models import OversellIncident

    assert OversellIncident.objects.get().shortfall == 2
    assert ledger_drift() == []


# ------------------------------------------------------------------------------ 6. restock places


def test_refund_returns_each_unit_where_it_was_taken(client, shopify, tee, wh):
    # given: 2 held at the store, 5 free at wh (the channel's default location)
    store = LocationFactory(code="store", priority=1)
    shopify.locations.add(store)
    stock_receive(sku=tee, location=store, quantity=2)
    stock_receive(sku=tee, location=wh, quantity=5)
    reservation_create(lines=[{"sku": "TEE-M", "quantity": 2, "location": "store"}], channel=shopify,
                       order_ref="80")
    # when: the order sells 3 (2 covered at the store, 1 free at wh), then all 3 are refunded
    post_order(client, shopify_order(80, [{"id": 1, "sku": "TEE-M", "quantity": 3}]))
    drain_all()
    assert level(tee, store) == (0, 0) and level(tee, wh) == (4, 0)
    refund = {"id": 9, "order_id": 80, "refund_line_items": [
        {"id": 91, "line_item_id": 1, "quantity": 3, "restock_type": "return",
         "line_item": {"id": 1, "sku": "TEE-M", "quantity": 3}}]}
    post_order(client, refund, topic="refunds/create")
    drain_all()
    # then: each unit is back where it left
    assert level(tee, store) == (2, 0) and level(tee, wh) == (5, 0)
    assert ledger_drift() == []


def test_partial_refunds_never_exceed_what_each_place_gave(client, shopify, tee, wh):
    store = LocationFactory(code="store", priority=1)
    shopify.locations.add(store)
    stock_receive(sku=tee, location=store, quantity=1)
    stock_receive(sku=tee, location=wh, quantity=5)
    reservation_create(lines=[{"sku": "TEE-M", "quantity": 1, "location": "store"}], channel=shopify,
                       order_ref="81")
    post_order(client, shopify_order(81, [{"id": 1, "sku": "TEE-M", "quantity": 3}]))
    drain_all()
    for refund_id in (10, 11, 12, 13):  # four refunds of one unit: only three were sold
        refund = {"id": refund_id, "order_id": 81, "refund_line_items": [
            {"id": refund_id, "line_item_id": 1, "quantity": 1, "restock_type": "return",
             "line_item": {"id": 1, "sku": "TEE-M", "quantity": 3}}]}
        post_order(client, refund, topic="refunds/create")
        drain_all()
    assert level(tee, store) == (1, 0) and level(tee, wh) == (5, 0)
    assert IngestedOrderLine.objects.get().restocked == 3


# ------------------------------------------------------------------------------ 10. late arrivals


def test_delta_that_happened_before_a_newer_count_is_not_applied_again(tee, wh):
    events_accept(events=[{"event_id": "count", "type": "count", "sku": "TEE-M", "location": "wh", "quantity": 10,
                           "occurred_at": "2024-05-01T12:00:00Z"}])
    drain_all()
    # a receipt from 11:00 arrives late: the 12:00 count already includes it
    events_accept(events=[{"event_id": "late", "type": "receipt", "sku": "TEE-M", "location": "wh", "quantity": 4,
                           "occurred_at": "2024-05-01T11:00:00Z"},
                          {"event_id": "newer", "type": "receipt", "sku": "TEE-M", "location": "wh", "quantity": 1,
                           "occurred_at": "2024-05-01T13:00:00Z"}])
    drain_all()

    assert level(tee, wh) == (11, 0)
    late = InboundEvent.objects.get(delivery_id="late")
    assert late.status == "done" and late.outcome["api:late"].startswith("stale")


def test_late_channel_level_observed_before_our_newer_push_is_stale(client, shopify, tee, wh):
    shopify.authoritative_locations.add(wh)
    listing(shopify, tee, "808950810")
    stock_receive(sku=tee, location=wh, quantity=10)
    # we pushed 10 at 12:00; an older push of 7 echoes back late, observed at 11:00
    ChannelSkuState.objects.create(channel=shopify, sku=tee, last_pushed=10,
                                   last_pushed_at="2024-05-01T12:00:00Z")
    body = json.dumps({"inventory_item_id": 808950810, "location_id": 905684977, "available": 7,
                       "updated_at": "2024-05-01T11:00:00Z"}).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="inventory_levels/update"), raw=body)
    drain_all()

    assert level(tee, wh) == (10, 0)
    assert next(iter(InboundEvent.objects.get().outcome.values())).startswith("stale")
