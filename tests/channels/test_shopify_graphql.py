"""Shopify pushes through the GraphQL Admin API, over real HTTP against the channel simulator:
`inventorySetQuantities` with changeFromQuantity and @idempotent keys, the compare-and-set rule
(read, record drift, push again), the cost-based throttle, batching per location, and reads."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from django.utils import timezone

from channels.adapters.shopify import cost_key
from channels.models import ChannelDrift, ChannelSkuState, DirtyPair, PushAttempt
from channels.propagation import channel_mark_all, channel_push, channel_reconcile
from channels.ratelimit import redis_client
from inventory import services as stock
from tests.channels.conftest import external_id
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db

VERSION = "2026-10"


@pytest.fixture
def shop(make_channel):
    """A Shopify channel on a current API version, with no cost-bucket state left in Redis."""

    def make(slug: str = "gql-shop", **overrides):
        settings_ = {"api_version": VERSION, "location_id": 7001, **overrides.pop("settings", {})}
        channel = make_channel("shopify", slug=slug, settings=settings_, **overrides)
        redis_client().delete(cost_key(channel.pk))
        return channel

    return make


def calls(simulator, store: str, operation: str | None = None) -> list[dict]:
    log = simulator.state.store(store).details.get("graphql", {"calls": []})
    return [c for c in log["calls"] if operation is None or c["operation"] == operation]


def quantities(call: dict) -> list[dict]:
    return call["variables"]["input"]["quantities"]


def level(simulator, store: str, item: str):
    return simulator.state.levels(store)["levels"].get(item)


def control(simulator, **body) -> dict:
    return requests.post(f"{simulator.url}/_sim/shopify", json=body, timeout=5).json()


# ------------------------------------------------------------------------------ pushing


def test_a_push_lands_with_change_from_quantity_and_an_idempotency_key(simulator, shop, list_sku, location):
    # given two listed SKUs
    channel = shop()
    a, b = SkuFactory(code="GQL-A"), SkuFactory(code="GQL-B")
    list_sku(channel, a, n=1)
    list_sku(channel, b, n=2)
    stock.stock_receive(sku=a, location=location, quantity=5)
    stock.stock_receive(sku=b, location=location, quantity=8)
    # when they are pushed: one call, nothing known yet about what Shopify holds
    assert channel_push(channel_id=channel.pk).requests == 1
    (first,) = calls(simulator, channel.slug, "set")
    assert first["version"] == VERSION and first["outcome"] == "applied"
    payload = first["variables"]["input"]
    assert payload["name"] == "available" and payload["reason"] == "correction"
    assert payload["referenceDocumentUri"] == f"gid://stockline/ChannelPush/{first['key']}"
    assert str(uuid.UUID(first["key"])) == first["key"]
    assert {q["inventoryItemId"]: (q["locationId"], q["quantity"], q["changeFromQuantity"])
            for q in quantities(first)} == {
        "gid://shopify/InventoryItem/44001": ("gid://shopify/Location/7001", 5, None),
        "gid://shopify/InventoryItem/44002": ("gid://shopify/Location/7001", 8, None)}
    assert level(simulator, channel.slug, "44001") == 5 and level(simulator, channel.slug, "44002") == 8
    # then the next push compares with what Shopify acknowledged
    stock.stock_sell(sku=a, location=location, quantity=2)
    channel_push(channel_id=channel.pk)
    second = calls(simulator, channel.slug, "set")[-1]
    assert [(q["quantity"], q["changeFromQuantity"]) for q in quantities(second)] == [(3, 5)]
    assert second["outcome"] == "applied" and second["key"] != first["key"]
    assert level(simulator, channel.slug, "44001") == 3
    assert ChannelSkuState.objects.get(channel=channel, sku=a).last_pushed == 3
    assert not ChannelDrift.objects.exists()


def test_channels_without_an_api_version_use_the_setting(simulator, shop, list_sku, location, sku, settings):
    settings.SHOPIFY_API_VERSION = "2026-07"
    channel = shop(settings={"api_version": ""})
    list_sku(channel, sku)
    channel_push(channel_id=channel.pk)
    (call,) = calls(simulator, channel.slug, "set")
    assert call["version"] == "2026-07" and call["key"] and call["outcome"] == "applied"
    paths = {r["path"] for r in simulator.state.requests_for(channel.slug)}
    assert paths == {"/admin/api/2026-07/graphql.json"}  # the REST endpoints are no longer called


def test_a_stale_change_from_is_read_recorded_as_drift_and_pushed_again(simulator, shop, list_sku, location):
    # given Shopify acknowledged 10 and 4
    channel = shop()
    a, b = SkuFactory(code="STALE-A"), SkuFactory(code="STALE-B")
    list_sku(channel, a, n=1)
    list_sku(channel, b, n=2)
    stock.stock_receive(sku=a, location=location, quantity=10)
    stock.stock_receive(sku=b, location=location, quantity=4)
    channel_push(channel_id=channel.pk)
    # and a sale happens on Shopify (10 -> 9) before its order webhook reaches us
    simulator.state.set_level(channel.slug, "shopify", "44001", 9)
    # when our stock changes and we push 15 and 6, comparing with 10 and 4
    stock.stock_receive(sku=a, location=location, quantity=5)
    stock.stock_receive(sku=b, location=location, quantity=2)
    report = channel_push(channel_id=channel.pk)
    # then the refused call changed nothing, the level was read, and the push went again from 9
    refused, read, landed = calls(simulator, channel.slug)[1:]
    assert refused["outcome"] == "user_errors" and refused["codes"] == ["CHANGE_FROM_QUANTITY_STALE"]
    assert read["operation"] == "levels" and read["variables"]["ids"] == ["gid://shopify/InventoryItem/44001"]
    assert read["variables"]["locationId"] == "gid://shopify/Location/7001"
    assert landed["outcome"] == "applied" and landed["key"] != refused["key"]
    assert {q["inventoryItemId"][-5:]: (q["quantity"], q["changeFromQuantity"]) for q in quantities(landed)} == {
        "44001": (15, 9), "44002": (6, 4)}
    assert level(simulator, channel.slug, "44001") == 15 and level(simulator, channel.slug, "44002") == 6
    assert report.pushed == 2 and report.failed == 0 and not DirtyPair.objects.filter(channel=channel).exists()
    drift = ChannelDrift.objects.get(channel=channel)
    assert (drift.sku, drift.expected, drift.actual) == (a, 10, 9)
    state = ChannelSkuState.objects.get(channel=channel, sku=a)
    assert (state.last_pushed, state.last_seen) == (15, 9)
    assert PushAttempt.objects.filter(channel=channel, outcome="success").count() == 2


def test_a_level_that_keeps_moving_fails_the_item_after_a_few_reads(simulator, shop, list_sku, location, sku,
                                                                     monkeypatch):
    import devtools.simulator.shopify as sim_shopify

    channel = shop(retry={"max_attempts": 5, "base_delay": 0.01, "max_delay": 0.02})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=10)
    channel_push(channel_id=channel.pk)
    stock.stock_receive(sku=sku, location=location, quantity=1)
    simulator.state.set_level(channel.slug, "shopify", "44001", 9)
    real_levels = sim_shopify._levels

    def read_then_a_sale_lands(s, variables):  # the level has moved again by the time we call
        answer = real_levels(s, variables)
        s.levels["44001"] -= 1
        return answer

    monkeypatch.setattr(sim_shopify, "_levels", read_then_a_sale_lands)
    report = channel_push(channel_id=channel.pk)
    assert report.failed == 1 and report.pushed == 0
    pair = DirtyPair.objects.get(channel=channel)
    assert pair.attempts == 1 and "CHANGE_FROM_QUANTITY_STALE" in pair.last_error
    assert len(calls(simulator, channel.slug, "levels")) == 3  # three reads, then the item fails
    assert level(simulator, channel.slug, "44001") == 6  # never overwritten blindly
    assert ChannelDrift.objects.filter(channel=channel).count() == 1  # expected 10, last read 7


# ------------------------------------------------------------------------------ idempotency


def test_an_idempotent_retry_of_the_same_attempt_is_not_applied_twice(simulator, shop, list_sku, location, sku):
    channel = shop(retry={"max_attempts": 5, "base_delay": 0.01, "max_delay": 0.02})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=10)
    channel_push(channel_id=channel.pk)
    stock.stock_sell(sku=sku, location=location, quantity=3)
    # given Shopify applies our push of 7 but the answer is lost on the way back
    control(simulator, store=channel.slug, lose_answer_next=1)
    report = channel_push(channel_id=channel.pk)
    assert report.failed == 1 and level(simulator, channel.slug, "44001") == 7
    pair = DirtyPair.objects.get(channel=channel)
    assert pair.attempts == 1 and "ConnectionError" in pair.last_error
    # when the same attempt is retried (same outbox mark, same values)
    DirtyPair.objects.filter(pk=pair.pk).update(next_attempt_at=timezone.now())
    assert channel_push(channel_id=channel.pk).pushed == 1
    # then it carried the same key and Shopify answered from it: applied once, no false drift
    lost, retried = calls(simulator, channel.slug, "set")[1:]
    assert retried["key"] == lost["key"] and retried["outcome"] == "replayed"
    assert control(simulator, store=channel.slug)["applied"] == 2  # the first push and the lost one
    assert not ChannelDrift.objects.exists() and level(simulator, channel.slug, "44001") == 7
    assert ChannelSkuState.objects.get(channel=channel, sku=sku).last_pushed == 7
    # while a new attempt with identical values (an operator's re-push, twice) is a new operation
    for _ in range(2):
        channel_mark_all(channel=channel, force=True)
        channel_push(channel_id=channel.pk)
    once, twice = calls(simulator, channel.slug, "set")[-2:]
    assert quantities(once) == quantities(twice) == [{"inventoryItemId": "gid://shopify/InventoryItem/44001",
                                                      "locationId": "gid://shopify/Location/7001", "quantity": 7,
                                                      "changeFromQuantity": 7}]
    assert once["key"] != twice["key"] and once["outcome"] == twice["outcome"] == "applied"


def test_our_own_lost_push_met_by_a_newer_attempt_is_not_reported_as_drift(simulator, shop, list_sku, location,
                                                                             sku):
    channel = shop(retry={"max_attempts": 5, "base_delay": 0.01, "max_delay": 0.02})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=10)
    channel_push(channel_id=channel.pk)
    stock.stock_sell(sku=sku, location=location, quantity=1)
    control(simulator, store=channel.slug, lose_answer_next=1)
    channel_push(channel_id=channel.pk)  # 9 landed, we never heard of it
    # a newer mark of the same value (an operator's re-push) is a new attempt: refused (Shopify
    # holds 9, not 10), read back as 9 = what we send, so no drift; it lands comparing with 9
    channel_mark_all(channel=channel, force=True)
    assert channel_push(channel_id=channel.pk).pushed == 1
    outcomes = [(c["operation"], c["outcome"]) for c in calls(simulator, channel.slug)[2:]]
    assert outcomes == [("set", "user_errors"), ("levels", "answered"), ("set", "applied")]
    assert quantities(calls(simulator, channel.slug)[-1])[0]["changeFromQuantity"] == 9
    assert not ChannelDrift.objects.exists()
    assert ChannelSkuState.objects.get(channel=channel, sku=sku).last_pushed == 9


# ------------------------------------------------------------------------------ cost-based throttle


def test_a_call_waits_for_the_cost_bucket_before_it_is_sent(simulator, shop, list_sku, location):
    # given a bucket of 20 points restoring 10/s, and three single-SKU calls of 10 points each
    channel = shop(settings={"max_batch": 1})
    control(simulator, store=channel.slug, throttle={"maximum": 20, "restore_rate": 10, "available": 20})
    for n in range(3):
        list_sku(channel, SkuFactory(code=f"COST-{n}"), n=n)
    # when they are pushed in one drain
    assert channel_push(channel_id=channel.pk).pushed == 3
    # then the third waited about a second (as throttleStatus said) instead of being throttled
    sent = calls(simulator, channel.slug, "set")
    assert [c["outcome"] for c in sent] == ["applied"] * 3
    assert sent[2]["at"] - sent[1]["at"] >= 0.85


def test_a_long_wait_for_the_bucket_ends_the_push_with_a_retry_after(simulator, shop, list_sku, location):
    channel = shop(settings={"max_batch": 1})
    control(simulator, store=channel.slug, throttle={"maximum": 20, "restore_rate": 2, "available": 20})
    for n in range(3):
        list_sku(channel, SkuFactory(code=f"SLOW-{n}"), n=n)
    report = channel_push(channel_id=channel.pk)
    # the third call would need 5 s: it is not sent; the pair waits, no attempt is charged
    assert report.pushed == 2 and len(calls(simulator, channel.slug)) == 2
    assert report.wake_in == pytest.approx(5.0, abs=0.5)
    pair = DirtyPair.objects.get(channel=channel)
    assert pair.attempts == 0 and "rate limited" in pair.last_error
    assert PushAttempt.objects.filter(channel=channel, outcome="rate_limited").count() == 1


def test_throttled_calls_are_retried_after_the_time_the_bucket_needs(simulator, shop, list_sku, location, sku):
    channel = shop()
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=4)
    # given the bucket was emptied by someone else (another app on the store) since our last answer
    control(simulator, store=channel.slug, throttle={"maximum": 100, "restore_rate": 4, "available": 0})
    # when we push
    first = channel_push(channel_id=channel.pk)
    # then Shopify answers THROTTLED; we wait (10 - 0) / 4 = 2.5 s without charging an attempt (less
    # whatever the bucket refilled, in real time, before the call reached it: a slow machine sees less)
    (throttled,) = calls(simulator, channel.slug)
    assert throttled["outcome"] == "throttled" and first.pushed == 0
    assert 1.5 <= first.wake_in <= 2.6
    assert DirtyPair.objects.get(channel=channel).attempts == 0
    assert channel_push(channel_id=channel.pk).requests == 0  # nothing goes before that time
    time.sleep(first.wake_in + 0.05)
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert [c["outcome"] for c in calls(simulator, channel.slug)] == ["throttled", "applied"]
    assert level(simulator, channel.slug, "44001") == 4
    channel.refresh_from_db()
    assert channel.consecutive_failures == 0 and channel.circuit_state == "closed"


# ------------------------------------------------------------------------------ batching


def test_up_to_250_quantities_per_call_one_location_per_call(simulator, shop, location):
    from channels.services import listing_upsert

    # given 260 listings at the channel's location and 3 at another (listing attributes)
    channel = shop()
    skus = SkuFactory.create_batch(263)
    for n, sku in enumerate(skus):
        attributes = {"location_id": 7002} if n >= 260 else {}
        listing_upsert(channel=channel, sku=sku.code, external_id=f"9{n:04d}", attributes=attributes)
    # when the new listings are pushed
    report = channel_push(channel_id=channel.pk)
    # then three calls: 250 + 10 at 7001, 3 at 7002, never two locations in one call
    sent = calls(simulator, channel.slug, "set")
    assert report.requests == 3 and report.pushed == 263
    assert sorted(len(quantities(c)) for c in sent) == [3, 10, 250]
    per_call = [{q["locationId"] for q in quantities(c)} for c in sent]
    assert all(len(locations) == 1 for locations in per_call)
    assert sorted(loc.pop() for loc in per_call) == ["gid://shopify/Location/7001"] * 2 + [
        "gid://shopify/Location/7002"]
    assert level(simulator, channel.slug, "90261") == 0 and len(simulator.state.levels(channel.slug)["levels"]) == 263


# ------------------------------------------------------------------------------ reconciliation


def test_reconciliation_reads_levels_through_graphql(simulator, shop, list_sku, location):
    from channels.services import listing_upsert

    channel = shop()
    a, b, c = SkuFactory(code="REC-A"), SkuFactory(code="REC-B"), SkuFactory(code="REC-C")
    list_sku(channel, a, n=1)
    list_sku(channel, b, n=2)
    listing_upsert(channel=channel, sku=c.code, external_id="44003", attributes={"location_id": 7002})
    for sku, qty in ((a, 5), (b, 8), (c, 2)):
        stock.stock_receive(sku=sku, location=location, quantity=qty)
    channel_push(channel_id=channel.pk)
    simulator.state.set_level(channel.slug, "shopify", "44002", 99)  # an edit in Shopify's admin
    report = channel_reconcile(channel_id=channel.pk)
    assert (report.checked, report.drifted, report.errors) == (3, 1, 0)
    reads = calls(simulator, channel.slug, "levels")
    assert sorted(len(r["variables"]["ids"]) for r in reads) == [1, 2]  # one read per location
    drift = ChannelDrift.objects.get(channel=channel)
    assert (drift.sku, drift.expected, drift.actual) == (b, 8, 99)
    assert ChannelSkuState.objects.get(channel=channel, sku=c).last_seen == 2
    # the forced re-push compares with the level read back, so it lands at once
    channel_push(channel_id=channel.pk)
    last = calls(simulator, channel.slug, "set")[-1]
    assert [(q["quantity"], q["changeFromQuantity"]) for q in quantities(last)] == [(8, 99)]
    assert last["outcome"] == "applied" and level(simulator, channel.slug, "44002") == 8


# ------------------------------------------------------------------------------ older versions


def test_versions_before_2026_01_use_compare_quantity(simulator, shop, list_sku, location, sku):
    channel = shop(settings={"api_version": "2025-10"})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=6)
    channel_push(channel_id=channel.pk)
    first = calls(simulator, channel.slug, "set")[0]
    assert first["key"] is None and first["variables"]["input"]["ignoreCompareQuantity"] is True
    assert "changeFromQuantity" not in quantities(first)[0] and "compareQuantity" not in quantities(first)[0]
    # later pushes compare; a stale compareQuantity is read and pushed again like changeFromQuantity
    simulator.state.set_level(channel.slug, "shopify", external_id("shopify", 1, sku.code), 5)
    stock.stock_receive(sku=sku, location=location, quantity=1)
    channel_push(channel_id=channel.pk)
    refused, _read, landed = calls(simulator, channel.slug)[1:]
    assert refused["codes"] == ["COMPARE_QUANTITY_STALE"] and quantities(refused)[0]["compareQuantity"] == 6
    assert landed["variables"]["input"]["ignoreCompareQuantity"] is False
    assert quantities(landed)[0]["compareQuantity"] == 5 and landed["outcome"] == "applied"
    assert level(simulator, channel.slug, "44001") == 7
    assert ChannelDrift.objects.get(channel=channel).actual == 5


# ------------------------------------------------------------------------------ the simulator


def test_the_simulator_speaks_shopify_graphql(simulator):
    url = f"{simulator.store_url('raw')}/admin/api/{VERSION}/graphql.json"
    auth = {"X-Shopify-Access-Token": "shpat_x"}
    mutation = ("mutation Set($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input)"
                " @idempotent(key: \"%s\") { inventoryAdjustmentGroup { id } userErrors { code field message } } }")

    def set_(key, qty, change_from, headers=auth, version=VERSION):
        body = {"query": mutation % key if key else mutation.replace(' @idempotent(key: "%s")', ""),
                "variables": {"input": {"name": "available", "reason": "correction",
                                        "referenceDocumentUri": "gid://stockline/Test/1",
                                        "quantities": [{"inventoryItemId": "gid://shopify/InventoryItem/1",
                                                        "locationId": "gid://shopify/Location/2", "quantity": qty,
                                                        "changeFromQuantity": change_from}]}}}
        return requests.post(url.replace(VERSION, version), json=body, headers=headers, timeout=5)

    def user_errors(response):
        return [e["code"] for e in response.json()["data"]["inventorySetQuantities"]["userErrors"]]

    assert set_("k1", 5, None, headers={}).status_code == 401
    assert "errors" in set_(None, 5, None).json()  # 2026-04 on: @idempotent is required
    ok = set_("k1", 5, None)
    assert ok.status_code == 200 and user_errors(ok) == []
    status = ok.json()["extensions"]["cost"]["throttleStatus"]
    assert status["maximumAvailable"] == 1000.0 and status["restoreRate"] == 100.0
    assert set_("k1", 5, None).json()["data"] == ok.json()["data"]  # replayed, not applied again
    assert user_errors(set_("k1", 6, None)) == ["IDEMPOTENCY_KEY_PARAMETER_MISMATCH"]
    assert user_errors(set_("k2", 6, 4)) == ["CHANGE_FROM_QUANTITY_STALE"]
    assert user_errors(set_("k2", 6, 4)) == ["IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"]
    assert user_errors(set_("k3", 6, 5)) == []
    read = requests.post(url, headers=auth, timeout=5, json={
        "query": "query L($ids: [ID!]!, $locationId: ID!) { nodes(ids: $ids) { ... on InventoryItem { id "
                 "inventoryLevel(locationId: $locationId) { quantities(names: [\"available\"]) { name quantity } "
                 "} } } }",
        "variables": {"ids": ["gid://shopify/InventoryItem/1", "gid://shopify/InventoryItem/9"],
                      "locationId": "gid://shopify/Location/2"}}).json()
    assert read["data"]["nodes"][0]["inventoryLevel"]["quantities"] == [{"name": "available", "quantity": 6}]
    assert read["data"]["nodes"][1]["inventoryLevel"] is None
    assert control(simulator, store="raw", throttle={"available": 3})["throttle"]["available"] == 3
    throttled = set_("k4", 7, 6).json()
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert throttled["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] < 10
    assert requests.post(f"{simulator.url}/_sim/shopify", json={"store": "raw", "throttle": "x"},
                         timeout=5).status_code == 400
    assert simulator.state.levels("raw")["levels"] == {"1": 6}
