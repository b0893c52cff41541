"""Channel rules (CONTRACT.md §4 "Channel rules", docs/propagation.md#channel-rules): `zero_below`
and `max_quantity` shape what a channel is pushed, in the order available - safety stock, then the
buffer, then `zero_below`, then `max_quantity`. Pushes are checked over real HTTP: what the
channel simulator shows after the outbox is drained."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from django.urls import reverse

from channels.models import Channel, DirtyPair
from channels.propagation import buffered_quantity, channel_push
from inventory import services as stock
from inventory.services import MAX_QUANTITY
from tests.admin_forms import admin_post
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------------------ the order


@pytest.mark.parametrize(("available", "safety", "buffer_type", "buffer_value", "zero_below", "max_quantity",
                          "expected"), [
    # no rules: the quantity after safety stock and buffer, as before
    (10, 2, "units", 3, 0, None, 5),
    (5, 0, "percent", 10, 0, None, 4),  # ceil(0.5) = 1 held back
    (2, 5, "units", 0, 0, None, 0),  # never below 0
    # max_quantity only: a cap, never a floor
    (10, 2, "units", 3, 0, 4, 4),
    (10, 2, "units", 3, 0, 5, 5),  # equal to the cap: unchanged
    (10, 2, "units", 3, 0, 50, 5),
    (10, 0, "units", 0, 0, 0, 0),  # a cap of 0 shows nothing
    # zero_below only: judged on the quantity after safety stock and buffer, strictly below
    (10, 2, "units", 3, 6, None, 0),  # 5 < 6
    (10, 2, "units", 3, 5, None, 5),  # 5 is not below 5
    (10, 0, "units", 0, 6, None, 10),  # judged after the buffer, not on available: 10 - 0 = 10
    (8, 0, "units", 3, 6, None, 0),  # 8 >= 6 but 8 - 3 = 5 < 6: the buffer comes first
    (8, 3, "units", 0, 6, None, 0),  # ... and safety stock before it: 8 - 3 = 5 < 6
    # percent buffer, then the rules
    (20, 0, "percent", 10, 18, None, 18),  # 20 - 2 = 18, not below 18
    (20, 0, "percent", 10, 19, None, 0),  # 18 < 19
    (21, 1, "percent", 25, 15, 12, 12),  # 20 - ceil(5) = 15, not below 15, capped at 12
    (21, 1, "percent", 25, 16, 12, 0),  # 15 < 16: zeroed, the cap does not lift it
    (11, 0, "percent", 10, 10, 5, 0),  # 11 - ceil(1.1) = 9 < 10: zeroed, though 9 is above the cap
    # both rules: zero_below before max_quantity, so a cap below zero_below does not zero by itself
    (40, 2, "percent", 10, 3, 20, 20),  # docs/propagation.md example: 38 - 4 = 34, capped at 20
    (6, 2, "percent", 10, 3, 20, 3),  # 4 - 1 = 3, not below 3, under the cap
    (5, 2, "percent", 10, 3, 20, 0),  # 3 - 1 = 2 < 3
    (10, 0, "units", 0, 5, 2, 2),  # 10 >= 5, then capped at 2 (a cap applied first would give 0)
    (4, 0, "units", 0, 5, 2, 0),  # 4 < 5
    (0, 0, "units", 0, 0, 3, 0),
])
def test_buffered_quantity_applies_the_contract_order(available, safety, buffer_type, buffer_value, zero_below,
                                                      max_quantity, expected):
    assert buffered_quantity(available=available, safety_stock=safety, buffer_type=buffer_type,
                             buffer_value=buffer_value, zero_below=zero_below, max_quantity=max_quantity) == expected


def test_buffered_quantity_defaults_change_nothing():
    for available, safety, value in itertools.product(range(0, 12), range(0, 4), range(0, 5)):
        for buffer_type in ("units", "percent"):
            plain = buffered_quantity(available=available, safety_stock=safety, buffer_type=buffer_type,
                                      buffer_value=value * 10 if buffer_type == "percent" else value)
            assert plain == buffered_quantity(
                available=available, safety_stock=safety, buffer_type=buffer_type,
                buffer_value=value * 10 if buffer_type == "percent" else value, zero_below=0, max_quantity=None)


def test_buffered_quantity_every_small_combination():
    """Every combination in a small range, against the contract's four steps written out."""
    for available, safety, buffer_type, value, zero_below, max_quantity in itertools.product(
            range(0, 14), (0, 3), ("units", "percent"), (0, 2, 30), (0, 1, 4, 9), (None, 0, 2, 6)):
        after_safety = max(available - safety, 0)
        held = math.ceil(after_safety * value / 100) if buffer_type == "percent" else value
        after_buffer = max(after_safety - held, 0)
        after_zero = 0 if after_buffer < zero_below else after_buffer
        expected = after_zero if max_quantity is None else min(after_zero, max_quantity)
        got = buffered_quantity(available=available, safety_stock=safety, buffer_type=buffer_type,
                                buffer_value=value, zero_below=zero_below, max_quantity=max_quantity)
        assert got == expected, (available, safety, buffer_type, value, zero_below, max_quantity)
        assert 0 <= got <= (max_quantity if max_quantity is not None else after_buffer)


# ------------------------------------------------------------------------------ API


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_rules_default_to_no_rule(api):
    created = post(api, "/api/v1/channels/", {"slug": "plain", "name": "Plain", "kind": "webhook"})

    assert created.status_code == 201, created.content
    assert created.json()["zero_below"] == 0 and created.json()["max_quantity"] is None
    detail = api.get("/api/v1/channels/plain/").json()
    assert (detail["zero_below"], detail["max_quantity"]) == (0, None)
    channel = Channel.objects.get(slug="plain")
    assert (channel.zero_below, channel.max_quantity) == (0, None)


def test_rules_round_trip_create_patch_get(api):
    created = post(api, "/api/v1/channels/", {"slug": "rules", "name": "Rules", "kind": "webhook",
                                              "buffer": {"type": "units", "value": 1},
                                              "zero_below": 3, "max_quantity": 20})
    assert created.status_code == 201, created.content
    assert (created.json()["zero_below"], created.json()["max_quantity"]) == (3, 20)
    detail = api.get("/api/v1/channels/rules/")
    assert detail.status_code == 200
    assert (detail.json()["zero_below"], detail.json()["max_quantity"]) == (3, 20)

    # a PATCH of one rule leaves the other as it is
    patched = api.patch("/api/v1/channels/rules/", {"max_quantity": 7}, format="json")
    assert patched.status_code == 200, patched.content
    assert (patched.json()["zero_below"], patched.json()["max_quantity"]) == (3, 7)
    patched = api.patch("/api/v1/channels/rules/", {"zero_below": 0}, format="json")
    assert (patched.json()["zero_below"], patched.json()["max_quantity"]) == (0, 7)
    # null lifts the cap
    patched = api.patch("/api/v1/channels/rules/", {"max_quantity": None}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["max_quantity"] is None

    listed = [c for c in api.get("/api/v1/channels/").json() if c["slug"] == "rules"]
    assert (listed[0]["zero_below"], listed[0]["max_quantity"]) == (0, None)
    channel = Channel.objects.get(slug="rules")
    assert (channel.zero_below, channel.max_quantity, channel.buffer_value) == (0, None, 1)


@pytest.mark.parametrize("rules", [
    {"zero_below": -1}, {"max_quantity": -1},
    {"zero_below": "3"}, {"max_quantity": "3"},
    {"zero_below": 2.5}, {"max_quantity": 2.0},
    {"zero_below": True}, {"max_quantity": False},
    {"zero_below": None},  # only max_quantity may be null
    {"zero_below": [1]}, {"max_quantity": {"value": 1}},
    {"zero_below": MAX_QUANTITY + 1}, {"max_quantity": MAX_QUANTITY + 1},
])
def test_invalid_rules_are_400(api, rules):
    body = {"slug": "bad", "name": "Bad", "kind": "webhook", **rules}
    created = post(api, "/api/v1/channels/", body)
    assert created.status_code == 400, created.content
    assert created.json()["error"] == "validation_error"
    assert not Channel.objects.filter(slug="bad").exists()

    assert post(api, "/api/v1/channels/", {"slug": "ok", "name": "OK", "kind": "webhook", "zero_below": 2,
                                           "max_quantity": 9}).status_code == 201
    patched = api.patch("/api/v1/channels/ok/", rules, format="json")
    assert patched.status_code == 400, patched.content
    assert patched.json()["error"] == "validation_error"
    channel = Channel.objects.get(slug="ok")
    assert (channel.zero_below, channel.max_quantity) == (2, 9)


def test_rules_are_in_the_openapi_document(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    components = schema.json()["components"]["schemas"]
    write = components["ChannelWriteRequest"]["properties"]
    assert write["zero_below"]["type"] == "integer" and write["zero_below"]["minimum"] == 0
    assert "nullable" not in write["zero_below"]
    assert write["max_quantity"]["type"] == "integer" and write["max_quantity"]["minimum"] == 0
    assert write["max_quantity"]["nullable"] is True
    read = components["ChannelRead"]
    assert {"zero_below", "max_quantity"} <= set(read["required"])
    assert read["properties"]["max_quantity"]["nullable"] is True


# ------------------------------------------------------------------------------ pushes over HTTP


def shown(simulator, channel: Channel) -> dict:
    """What the marketplace shows, by external id, after the channel's outbox is drained."""
    channel_push(channel_id=channel.pk)
    return simulator.state.levels(channel.slug)["levels"]


def pairs(channel: Channel) -> set[str]:
    return set(DirtyPair.objects.filter(channel=channel).values_list("sku__code", flat=True))


@pytest.fixture
def listed(simulator, make_channel, list_sku, location):
    """A BigCommerce channel listing RULE-1 (external id 801) with 10 available (safety stock 1,
    buffer 1: the channel shows 8), pushed: the outbox is empty."""
    sku = SkuFactory(code="RULE-1", safety_stock=1)
    stock.stock_receive(sku=sku, location=location, quantity=10)
    channel = make_channel("bigcommerce", buffer={"type": "units", "value": 1})
    list_sku(channel, sku)
    assert shown(simulator, channel) == {"801": 8}
    assert pairs(channel) == set()
    return channel, sku


def test_patching_max_quantity_re_pushes_every_listing(api, simulator, listed, list_sku, location):
    channel, _sku = listed
    other = SkuFactory(code="RULE-2")
    stock.stock_receive(sku=other, location=location, quantity=3)
    list_sku(channel, other, n=2)
    assert shown(simulator, channel) == {"801": 8, "802": 2}

    response = api.patch(f"/api/v1/channels/{channel.slug}/", {"max_quantity": 5}, format="json")

    assert response.status_code == 200, response.content
    assert pairs(channel) == {"RULE-1", "RULE-2"}  # every listing marked, the uncapped one too
    assert shown(simulator, channel) == {"801": 5, "802": 2}
    assert api.get(f"/api/v1/channels/{channel.slug}/stock/RULE-1/").json()["available"] == 5


def test_patching_zero_below_re_pushes_and_later_stock_changes_keep_the_rules(api, simulator, listed, location):
    channel, sku = listed

    # 8 is below 9: the channel is told 0
    assert api.patch(f"/api/v1/channels/{channel.slug}/", {"zero_below": 9}, format="json").status_code == 200
    assert pairs(channel) == {"RULE-1"}
    assert shown(simulator, channel) == {"801": 0}

    # stock rises to 16 - 1 - 1 = 14: not below 9, capped at 12
    assert api.patch(f"/api/v1/channels/{channel.slug}/", {"max_quantity": 12}, format="json").status_code == 200
    stock.stock_receive(sku=sku, location=location, quantity=6)
    assert shown(simulator, channel) == {"801": 12}

    # a sale leaves 10 - 1 - 1 = 8 < 9: zeroed by the stock change's own push
    stock.stock_sell(sku=sku, location=location, quantity=6)
    assert shown(simulator, channel) == {"801": 0}

    # both rules lifted: the plain quantity again
    response = api.patch(f"/api/v1/channels/{channel.slug}/", {"zero_below": 0, "max_quantity": None}, format="json")
    assert response.status_code == 200, response.content
    assert shown(simulator, channel) == {"801": 8}


def test_a_patch_that_does_not_touch_rules_does_not_re_push(api, listed):
    channel, _sku = listed

    assert api.patch(f"/api/v1/channels/{channel.slug}/", {"name": "Renamed"}, format="json").status_code == 200

    assert pairs(channel) == set()


# ------------------------------------------------------------------------------ admin


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def test_rules_changed_in_admin_are_saved_and_pushed(admin_client, simulator, listed):
    channel, _sku = listed
    page = admin_client.get(change_url(channel))
    assert b'name="zero_below"' in page.content and b'name="max_quantity"' in page.content

    response = admin_post(admin_client, change_url(channel), {"max_quantity": "6", "zero_below": "2"})

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    channel.refresh_from_db()
    assert (channel.zero_below, channel.max_quantity) == (2, 6)
    assert pairs(channel) == {"RULE-1"}
    assert shown(simulator, channel) == {"801": 6}

    # zero_below above what is left zeroes it; an empty cap is no cap
    response = admin_post(admin_client, change_url(channel), {"max_quantity": "", "zero_below": "9"})

    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.zero_below, channel.max_quantity) == (9, None)
    assert shown(simulator, channel) == {"801": 0}


def test_admin_refuses_a_negative_rule(admin_client, listed):
    channel, _sku = listed

    response = admin_post(admin_client, change_url(channel), {"zero_below": "-1"})

    assert response.status_code == 200  # the form again, with its error
    assert "zero_below" in response.context["adminform"].form.errors
    channel.refresh_from_db()
    assert channel.zero_below == 0
    assert pairs(channel) == set()


def test_channel_created_in_admin_with_rules(admin_client, simulator, location):
    sku = SkuFactory(code="RULE-3")
    stock.stock_receive(sku=sku, location=location, quantity=6)

    response = admin_post(admin_client, reverse("admin:channels_channel_add"), {
        "slug": "rules-bc", "name": "Rules BC", "kind": "bigcommerce", "base_url": simulator.store_url("rules-bc"),
        "settings": json.dumps({"store_hash": "abc123", "location_id": 1}),
        "new_credentials": json.dumps({"access_token": "bc_x"}), "push_enabled": True, "active": True,
        "buffer_type": "units", "buffer_value": "0", "zero_below": "1", "max_quantity": "4",
        "rate_limit_per_second": "1000", "rate_limit_burst": "1000",
        "retry_max_attempts": "8", "retry_base_delay": "1", "retry_max_delay": "30",
        "circuit_failure_threshold": "5", "circuit_cooldown_seconds": "60",
        "listings-TOTAL_FORMS": "1", "listings-INITIAL_FORMS": "0", "listings-0-sku": str(sku.pk),
        "listings-0-external_id": "805", "listings-0-attributes": "{}"})

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    channel = Channel.objects.get(slug="rules-bc")
    assert (channel.zero_below, channel.max_quantity) == (1, 4)
    assert shown(simulator, channel) == {"805": 4}
