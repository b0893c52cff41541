"""Propagation over real HTTP against the channel simulator (push service called directly)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels.models import Channel, ChannelSkuState, DeadLetter, DirtyPair, PushAttempt
from channels.propagation import backoff_delay, buffered_quantity, channel_push, channel_quantities
from inventory import services as stock
from tests.channels.conftest import KINDS, external_id
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db


def levels(simulator, store: str) -> dict:
    return simulator.state.levels(store)["levels"]


def requests_to(simulator, store: str) -> list[dict]:
    return simulator.state.requests_for(store)


# ------------------------------------------------------------------------------ quantity


def test_buffered_quantity_rules():
    assert buffered_quantity(available=10, safety_stock=2, buffer_type="units", buffer_value=3) == 5
    assert buffered_quantity(available=10, safety_stock=0, buffer_type="percent", buffer_value=10) == 9
    assert buffered_quantity(available=5, safety_stock=0, buffer_type="percent", buffer_value=10) == 4  # ceil
    assert buffered_quantity(available=2, safety_stock=5, buffer_type="units", buffer_value=0) == 0  # never < 0


def test_channel_quantity_counts_eligible_locations_minus_safety_and_buffer(api, make_channel, list_sku):
    # given stock at two locations, one of them not eligible for the channel
    wh, store_loc = LocationFactory(code="wh"), LocationFactory(code="store")
    sku = SkuFactory(code="Q-1", safety_stock=2)
    stock.stock_receive(sku=sku, location=wh, quantity=30)
    stock.stock_receive(sku=sku, location=store_loc, quantity=50)
    everywhere = make_channel("shopify", slug="all-locs", buffer={"type": "percent", "value": 10})
    only_wh = make_channel("webhook", slug="wh-only", buffer={"type": "units", "value": 3})
    only_wh.locations.set([wh])
    # then: all active locations when none are named; percent buffer rounds toward holding back
    assert channel_quantities(channel=everywhere, sku_ids=[sku.pk]) == {sku.pk: 78 - 8}
    assert channel_quantities(channel=only_wh, sku_ids=[sku.pk]) == {sku.pk: 30 - 2 - 3}
    # an inactive location stops counting; an inactive SKU shows 0
    stock.location_update(location=store_loc, active=False)
    assert channel_quantities(channel=everywhere, sku_ids=[sku.pk]) == {sku.pk: 28 - 3}
    stock.sku_update(sku=sku, active=False)
    assert channel_quantities(channel=only_wh, sku_ids=[sku.pk]) == {sku.pk: 0}

    body = api.get("/api/v1/channels/wh-only/stock/Q-1/").json()
    assert body["sku"] == "Q-1" and body["available"] == 0
    assert body["last_pushed"] is None and body["last_pushed_at"] is None
    assert api.get("/api/v1/channels/wh-only/stock/NOPE/").status_code == 404
    assert api.get("/api/v1/channels/nope/stock/Q-1/").status_code == 404


# ------------------------------------------------------------------------------ every kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_push_reaches_every_kind_of_channel(kind, api, simulator, make_channel, list_sku, location):
    # given a listed SKU with stock
    sku = SkuFactory(code=f"SKU-{kind}", safety_stock=1)
    channel = make_channel(kind, buffer={"type": "units", "value": 2})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=20)
    assert DirtyPair.objects.filter(channel=channel, sku=sku).exists()  # marked in the same transaction
    # when the channel is drained
    report = channel_push(channel_id=channel.pk)
    # then the marketplace shows available - safety - buffer
    assert report.pushed == 1 and report.requests == 1
    assert levels(simulator, channel.slug) == {external_id(kind, 1, sku.code): 17}
    assert not DirtyPair.objects.filter(channel=channel).exists()
    attempt = PushAttempt.objects.get(channel=channel)
    assert attempt.outcome == "success" and attempt.items == [{"sku": sku.code, "quantity": 17, "ok": True}]
    assert attempt.http_status in (200, 204) and attempt.latency_ms > 0
    body = api.get(f"/api/v1/channels/{channel.slug}/stock/{sku.code}/").json()
    assert body["available"] == 17 and body["last_pushed"] == 17 and body["last_pushed_at"]
    channel.refresh_from_db()
    assert channel.last_success_at is not None and channel.consecutive_failures == 0
    # and a change that does not move the channel's quantity sends nothing
    stock.stock_receive(sku=sku, location=location, quantity=5)
    stock.stock_sell(sku=sku, location=location, quantity=5)
    assert channel_push(channel_id=channel.pk).requests == 0
    assert len(requests_to(simulator, channel.slug)) == 1


def test_marking_costs_one_query_per_stock_change(make_channel, list_sku, location, sku):
    for n in range(3):
        list_sku(make_channel("webhook", slug=f"hook-{n}"), sku)
    stock.stock_receive(sku=sku, location=location, quantity=1)
    with CaptureQueriesContext(connection) as queries:
        stock.stock_receive(sku=sku, location=location, quantity=1)
    marking = [q for q in queries.captured_queries if "channels_dirtypair" in q["sql"]]
    assert len(marking) == 1
    assert DirtyPair.objects.filter(sku=sku).values_list("generation", flat=True).distinct().get() == 3


def test_webhook_push_is_signed_with_standard_webhooks(simulator, make_channel, list_sku, location, sku):
    channel = make_channel("webhook", webhook_secret="whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    # the simulator verifies signatures for a store that knows the secret
    simulator.state.store(channel.slug).secret = channel.webhook_secret
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=4)
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert levels(simulator, channel.slug) == {sku.code: 4}
    simulator.state.store(channel.slug).secret = "whsec_" + "b3RoZXItc2VjcmV0"  # a different key: refused
    stock.stock_receive(sku=sku, location=location, quantity=1)
    channel_push(channel_id=channel.pk)
    assert requests_to(simulator, channel.slug)[-1]["status"] == 401
    assert levels(simulator, channel.slug) == {sku.code: 4}


# ------------------------------------------------------------------------------ batching, per-item errors


def test_woocommerce_batches_and_per_item_errors_fail_only_those_items(simulator, make_channel, list_sku, location):
    from devtools.simulator import Faults

    channel = make_channel("woocommerce", settings={"max_batch": 2}, retry={"base_delay": 5.0})
    skus = [SkuFactory(code=f"W-{n}") for n in range(5)]
    for n, sku in enumerate(skus):
        list_sku(channel, sku, n=n)
        stock.stock_receive(sku=sku, location=location, quantity=10 + n)
    # WooCommerce refuses one id inside a 200 answer
    simulator.state.faults["*"] = Faults(item_errors={external_id("woocommerce", 3, "")})
    report = channel_push(channel_id=channel.pk)
    assert report.requests == 3  # 5 items in batches of 2
    assert report.pushed == 4 and report.failed == 1
    assert levels(simulator, channel.slug) == {external_id("woocommerce", n, ""): 10 + n for n in (0, 1, 2, 4)}
    failed = DirtyPair.objects.get(channel=channel)
    assert failed.sku == skus[3] and failed.attempts == 1 and "invalid_id" in failed.last_error
    assert failed.next_attempt_at > timezone.now() - timedelta(seconds=1)
    outcomes = sorted(PushAttempt.objects.filter(channel=channel).values_list("outcome", flat=True))
    assert outcomes == ["partial", "success", "success"]
    channel.refresh_from_db()
    assert channel.consecutive_failures == 0  # the channel answered: not a channel failure


def test_ebay_sends_25_per_call_and_reads_per_item_status(simulator, make_channel, list_sku, location):
    from devtools.simulator import Faults

    channel = make_channel("ebay", retry={"base_delay": 5.0})
    skus = [SkuFactory(code=f"E-{n}") for n in range(30)]
    for n, sku in enumerate(skus):
        list_sku(channel, sku, n=n)
        stock.stock_receive(sku=sku, location=location, quantity=n + 1)
    simulator.state.faults["*"] = Faults(item_errors={"OFFER-7"})
    report = channel_push(channel_id=channel.pk)
    sent = requests_to(simulator, channel.slug)
    assert [r["items"] for r in sent] == [25, 5]
    assert {r["status"] for r in sent} == {200, 207}
    assert report.pushed == 29 and report.failed == 1
    assert DirtyPair.objects.get(channel=channel).sku.code == "E-7"
    assert levels(simulator, channel.slug)["OFFER-8"] == 9


# ------------------------------------------------------------------------------ rate limits


@pytest.mark.parametrize("kind", ["shopify", "bigcommerce"])
def test_429_retry_after_is_honoured_without_burning_attempts(kind, simulator, make_channel, list_sku, location, sku):
    from devtools.simulator import Faults

    channel = make_channel(kind)
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=9)
    simulator.state.faults["*"] = Faults(rate_limit_next=1, retry_after=0.4)
    first = channel_push(channel_id=channel.pk)
    assert first.requests == 1 and first.pushed == 0
    assert first.wake_in == pytest.approx(0.4, abs=0.05)  # Retry-After / X-Rate-Limit-Time-Reset-Ms
    pair = DirtyPair.objects.get(channel=channel)
    assert pair.attempts == 0 and "rate limited" in pair.last_error
    # asked again at once: nothing is sent before the marketplace's wait is over
    assert channel_push(channel_id=channel.pk).requests == 0
    time.sleep(0.45)
    assert channel_push(channel_id=channel.pk).pushed == 1
    sent = requests_to(simulator, channel.slug)
    assert [r["status"] for r in sent] == [429, 200]
    assert sent[1]["at"] - sent[0]["at"] >= 0.4
    assert PushAttempt.objects.filter(channel=channel, outcome="rate_limited").count() == 1
    channel.refresh_from_db()
    assert channel.circuit_state == "closed" and channel.consecutive_failures == 0


def test_channel_rate_limit_is_shared_and_paces_requests(simulator, make_channel, list_sku, location):
    # one SKU per request (Shopify would take all six in one call), so six requests are paced
    channel = make_channel("shopify", rate_limit_per_second=20.0, rate_limit_burst=2, settings={"max_batch": 1})
    for n in range(6):
        sku = SkuFactory(code=f"R-{n}")
        list_sku(channel, sku, n=n)
        stock.stock_receive(sku=sku, location=location, quantity=1)
    started = time.monotonic()
    assert channel_push(channel_id=channel.pk).pushed == 6
    # 2 from the burst, then 4 at 20/s: at least ~0.2 s
    assert time.monotonic() - started >= 0.18


# ------------------------------------------------------------------------------ failures


def test_backoff_schedule_is_exponential_with_full_jitter():
    caps = [backoff_delay(attempt=n, base=1.0, cap=30.0, rand=lambda: 1.0) for n in range(1, 9)]
    assert caps == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_delay(attempt=5, base=1.0, cap=30.0, rand=lambda: 0.0) == 0
    samples = [backoff_delay(attempt=4, base=1.0, cap=30.0) for _ in range(500)]
    assert min(samples) >= 0 and max(samples) <= 8 and max(samples) - min(samples) > 4  # spread, not fixed


def test_failed_pushes_are_scheduled_from_the_database(simulator, make_channel, list_sku, location, sku):
    from devtools.simulator import Faults

    channel = make_channel("amazon", retry={"base_delay": 2.0, "max_delay": 30.0, "max_attempts": 8})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=3)
    simulator.state.faults["*"] = Faults(error_rate=1.0, error_status=503)
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0)):
        before = timezone.now()
        DirtyPair.objects.filter(channel=channel).update(next_attempt_at=before)  # due now
        report = channel_push(channel_id=channel.pk)
        pair = DirtyPair.objects.get(channel=channel)
        assert report.requests == 1 and pair.attempts == attempt
        wait = (pair.next_attempt_at - before).total_seconds()
        assert 0 <= wait <= ceiling + 0.5
        assert report.wake_in is not None and report.wake_in <= ceiling + 0.5  # the task's wake-up hint
    assert pair.first_error.startswith("HTTP 503") and pair.first_failed_at <= pair.next_attempt_at


def test_dead_letter_after_the_last_attempt(api, simulator, make_channel, list_sku, location, sku):
    from devtools.simulator import Faults

    channel = make_channel("shopify", retry={"max_attempts": 3, "base_delay": 0.01, "max_delay": 0.02},
                           circuit={"failure_threshold": 100, "cooldown_seconds": 60})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=12)
    simulator.state.faults["*"] = Faults(down=True)
    for _ in range(50):
        channel_push(channel_id=channel.pk)
        if DeadLetter.objects.filter(channel=channel).exists():
            break
        time.sleep(0.03)
    letter = DeadLetter.objects.get(channel=channel)
    assert (letter.sku, letter.quantity, letter.attempts, letter.status) == (sku, 12, 3, "open")
    assert "ConnectionError" in letter.first_error and "ConnectionError" in letter.last_error
    assert letter.first_failed_at <= letter.last_failed_at
    assert not DirtyPair.objects.filter(channel=channel).exists()
    assert PushAttempt.objects.filter(channel=channel, outcome="failed").count() == 3
    health = api.get(f"/api/v1/channels/{channel.slug}/").json()
    assert health["dead_letters"] == 1 and health["backlog"] == 0 and health["consecutive_failures"] == 3
    listed = api.get(f"/api/v1/dead-letters/?channel={channel.slug}").json()
    assert [row["id"] for row in listed["results"]] == [letter.pk]
    assert listed["results"][0]["sku"] == sku.code and listed["results"][0]["quantity"] == 12


def test_circuit_opens_holds_pairs_then_one_probe_decides(api, simulator, make_channel, list_sku, location):
    from devtools.simulator import Faults

    channel = make_channel("bigcommerce", settings={"max_batch": 1},
                           retry={"max_attempts": 50, "base_delay": 0.01, "max_delay": 0.01},
                           circuit={"failure_threshold": 2, "cooldown_seconds": 0.5})
    skus = [SkuFactory(code=f"C-{n}") for n in range(3)]
    for n, sku in enumerate(skus):
        list_sku(channel, sku, n=n)
        stock.stock_receive(sku=sku, location=location, quantity=5)
    simulator.state.faults["*"] = Faults(error_rate=1.0, error_status=500)
    # two failed requests open the circuit; the drain stops instead of burning attempts
    report = channel_push(channel_id=channel.pk)
    channel.refresh_from_db()
    assert report.requests == 2 and channel.circuit_state == "open"
    assert api.get(f"/api/v1/channels/{channel.slug}/").json()["circuit"] == "open"
    attempts_before = sorted(DirtyPair.objects.filter(channel=channel).values_list("attempts", flat=True))
    time.sleep(0.05)
    assert channel_push(channel_id=channel.pk).requests == 0  # cooling down: pairs wait
    assert DirtyPair.objects.filter(channel=channel).count() == 3
    # cool-down over, still failing: exactly one probe, circuit re-opens, attempts untouched
    time.sleep(0.55)
    assert channel_push(channel_id=channel.pk).requests == 1
    channel.refresh_from_db()
    assert channel.circuit_state == "open"
    assert sorted(DirtyPair.objects.filter(channel=channel).values_list("attempts", flat=True)) == attempts_before
    assert PushAttempt.objects.filter(channel=channel, purpose="probe").count() == 1
    # the marketplace recovers: after the cool-down the probe succeeds and the backlog drains
    simulator.state.faults.clear()
    time.sleep(0.55)
    DirtyPair.objects.filter(channel=channel).update(next_attempt_at=timezone.now())
    report = channel_push(channel_id=channel.pk)
    channel.refresh_from_db()
    assert report.pushed == 3 and channel.circuit_state == "closed" and channel.consecutive_failures == 0
    assert levels(simulator, channel.slug) == {external_id("bigcommerce", n, ""): 5 for n in range(3)}
    health = api.get(f"/api/v1/channels/{channel.slug}/").json()
    assert health["circuit"] == "closed" and health["backlog"] == 0 and health["last_success_at"]


# ------------------------------------------------------------------------------ ordering / coalescing


def test_changes_while_in_flight_are_pushed_again_with_the_newer_value(simulator, make_channel, list_sku,
                                                                       location, sku):
    channel = make_channel("webhook")
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=10)
    pair = DirtyPair.objects.get(channel=channel)
    # a push read generation g; a change lands (g+1) before the ack: the pair must stay dirty
    from channels.propagation.base import _Claimed
    from channels.propagation.outbox import _settle_without_sending

    stale = _Claimed(pair.pk, sku.pk, sku.code, pair.generation, 0, False, "", None, 10)
    stock.stock_sell(sku=sku, location=location, quantity=3)
    _settle_without_sending([stale])
    assert DirtyPair.objects.filter(pk=pair.pk).exists()
    channel_push(channel_id=channel.pk)
    assert levels(simulator, channel.slug) == {sku.code: 7}


def test_a_burst_of_changes_is_coalesced_into_one_push_of_the_latest_value(simulator, make_channel, list_sku,
                                                                           location, sku):
    channel = make_channel("shopify")
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=200)
    for _ in range(100):
        stock.stock_sell(sku=sku, location=location, quantity=1)
    report = channel_push(channel_id=channel.pk)
    assert report.requests == 1
    assert levels(simulator, channel.slug) == {external_id("shopify", 1, sku.code): 100}
    assert ChannelSkuState.objects.get(channel=channel, sku=sku).last_pushed == 100


def test_config_change_and_listing_create_trigger_pushes(simulator, make_channel, list_sku, location, sku):
    from channels.services import channel_update

    stock.stock_receive(sku=sku, location=location, quantity=10)
    channel = make_channel("woocommerce")
    list_sku(channel, sku)  # a new listing is pushed even though stock did not change
    channel_push(channel_id=channel.pk)
    assert levels(simulator, channel.slug) == {"501": 10}
    channel_update(channel=Channel.objects.get(pk=channel.pk), buffer={"type": "units", "value": 4})
    channel_push(channel_id=channel.pk)
    assert levels(simulator, channel.slug) == {"501": 6}


# ------------------------------------------------------------------------------ dead letters: API


def _dead_letter(channel, sku, quantity=1) -> DeadLetter:
    now = timezone.now()
    return DeadLetter.objects.create(channel=channel, sku=sku, quantity=quantity, attempts=8, first_error="HTTP 500",
                                     last_error="HTTP 500", first_failed_at=now, last_failed_at=now)


def test_dead_letter_api_retry_pushes_current_quantity_and_discard_needs_reason(
        client_with, simulator, make_channel, list_sku, location, sku):
    ops = client_with("ops")
    channel = make_channel("ebay")
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=6)
    letter, other = _dead_letter(channel, sku, quantity=2), _dead_letter(make_channel("amazon"), sku)
    assert client_with("stock:read").get("/api/v1/dead-letters/").status_code == 403

    response = ops.post(f"/api/v1/dead-letters/{letter.pk}/retry/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "retried" and body["retry"]["ok"] is True and body["retry"]["quantity"] == 6
    assert levels(simulator, channel.slug) == {"OFFER-1": 6}
    assert ops.post(f"/api/v1/dead-letters/{letter.pk}/retry/").status_code == 409

    assert ops.post(f"/api/v1/dead-letters/{other.pk}/discard/", {}, format="json").status_code == 400
    discarded = ops.post(f"/api/v1/dead-letters/{other.pk}/discard/", {"reason": "listing removed"}, format="json")
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    assert discarded.json()["resolution_note"] == "listing removed"
    assert ops.post("/api/v1/dead-letters/999999/retry/").status_code == 404
    assert ops.post("/api/v1/dead-letters/abc/discard/", {"reason": "x"}, format="json").status_code == 404
    assert ops.get("/api/v1/dead-letters/").json()["count"] == 0
    assert ops.get("/api/v1/dead-letters/?status=all").json()["count"] == 2
    assert ops.get("/api/v1/dead-letters/?status=bogus").status_code == 400


def test_admin_retry_selected_pushes_the_quantity_current_at_retry_time(client, simulator, make_channel, list_sku,
                                                                        location, sku, django_user_model):
    # given a dead letter that wanted 12, and stock that has since moved to 7
    channel = make_channel("shopify")
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=12)
    letter = _dead_letter(channel, sku, quantity=12)
    stock.stock_sell(sku=sku, location=location, quantity=5)
    admin = django_user_model.objects.create_superuser("ops-admin", "ops@example.com", "pw-123456789")
    client.force_login(admin)
    # when an operator runs "Retry selected" through the admin's own changelist action
    response = client.post("/admin/channels/deadletter/", {"action": "retry_selected",
                                                           "_selected_action": [letter.pk]})
    assert response.status_code == 302
    # then the channel shows the current quantity, not the stale one
    assert levels(simulator, channel.slug) == {external_id("shopify", 1, sku.code): 7}
    letter.refresh_from_db()
    assert letter.status == "retried" and letter.resolved_by == "admin:ops-admin" and "7" in letter.resolution_note
    assert PushAttempt.objects.filter(channel=channel, purpose="retry", outcome="success").count() == 1
    # the dead-letter list, its filters and the discard form render
    assert client.get("/admin/channels/deadletter/?age=24h&status__exact=retried").status_code == 200
    other = _dead_letter(channel, sku)
    form = client.post("/admin/channels/deadletter/", {"action": "discard_selected", "_selected_action": [other.pk]})
    assert form.status_code == 200 and b"reason" in form.content
    done = client.post("/admin/channels/deadletter/", {"action": "discard_selected", "_selected_action": [other.pk],
                                                       "apply": "1", "reason": "duplicate listing"})
    assert done.status_code == 302
    other.refresh_from_db()
    assert other.status == "discarded" and other.resolution_note == "duplicate listing"
    page = client.get("/admin/channels/channel/")
    assert page.status_code == 200 and b"backlog" in page.content
    assert client.get("/admin/channels/pushattempt/").status_code == 200


def test_a_later_successful_push_supersedes_an_open_dead_letter(simulator, make_channel, list_sku, location, sku):
    channel = make_channel("webhook")
    list_sku(channel, sku)
    letter = _dead_letter(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=3)
    channel_push(channel_id=channel.pk)
    letter.refresh_from_db()
    assert letter.status == "superseded"


# ------------------------------------------------------------------------------ reconciliation


def test_reconciliation_records_drift_and_repushes(simulator, make_channel, list_sku, location):
    from channels.models import ChannelDrift
    from channels.propagation import channel_reconcile

    channel = make_channel("shopify")
    a, b = SkuFactory(code="REC-A"), SkuFactory(code="REC-B")
    list_sku(channel, a, n=1)
    list_sku(channel, b, n=2)
    stock.stock_receive(sku=a, location=location, quantity=5)
    stock.stock_receive(sku=b, location=location, quantity=8)
    channel_push(channel_id=channel.pk)
    # someone edits the level on the marketplace itself
    simulator.state.set_level(channel.slug, "shopify", external_id("shopify", 2, ""), 99)
    report = channel_reconcile(channel_id=channel.pk)
    assert (report.checked, report.drifted, report.errors) == (2, 1, 0)
    drift = ChannelDrift.objects.get(channel=channel)
    assert (drift.sku, drift.expected, drift.actual) == (b, 8, 99)
    assert DirtyPair.objects.get(channel=channel).force is True  # re-pushed although "unchanged"
    channel_push(channel_id=channel.pk)
    assert levels(simulator, channel.slug)[external_id("shopify", 2, "")] == 8
    assert channel_reconcile(channel_id=make_channel("webhook").pk).supported is False


@pytest.mark.parametrize("kind", ["woocommerce", "bigcommerce", "ebay", "amazon"])
def test_reconciliation_reads_levels_back_from_every_readable_kind(kind, simulator, make_channel, list_sku,
                                                                   location, sku):
    from channels.propagation import channel_reconcile

    channel = make_channel(kind)
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=4)
    channel_push(channel_id=channel.pk)
    assert channel_reconcile(channel_id=channel.pk).checked == 1
    assert ChannelSkuState.objects.get(channel=channel, sku=sku).last_seen == 4


# ------------------------------------------------------------------------------ simulator control


def test_simulator_control_endpoints(simulator):
    import requests

    base = simulator.url
    assert requests.post(f"{base}/_sim/faults", json={"store": "x", "latency_ms": 5, "down": False},
                         timeout=5).json()["faults"]["x"]["latency_ms"] == 5
    assert requests.post(f"{base}/_sim/levels", json={"store": "x", "levels": {"1": 3}}, timeout=5).status_code == 200
    everything = requests.get(f"{base}/_sim/levels", timeout=5).json()
    assert everything == {"stores": {"x": {"kind": None, "levels": {"1": 3}}}}
    assert requests.get(f"{base}/_sim/levels?store=x", timeout=5).json()["levels"] == {"1": 3}
    assert requests.post(f"{base}/_sim/orders", json={"store": "nowhere", "lines": []}, timeout=5).status_code == 400
    assert requests.post(f"{base}/_sim/reset", timeout=5).json() == {"reset": True}
    assert json.loads(requests.get(f"{base}/_sim/levels", timeout=5).content) == {"stores": {}}


def test_channel_list_health_costs_no_query_per_channel(api, make_channel):
    make_channel("webhook", slug="one")
    api.get("/api/v1/channels/")  # warm-up: the first request of a key also records its use
    with CaptureQueriesContext(connection) as few:
        assert api.get("/api/v1/channels/").status_code == 200
    for n in range(4):
        make_channel("shopify", slug=f"more-{n}")
    with CaptureQueriesContext(connection) as many:
        body = api.get("/api/v1/channels/").json()
    assert len(body) == 5 and all(row["backlog"] == 0 and row["dead_letters"] == 0 for row in body)
    assert len(many.captured_queries) == len(few.captured_queries)
