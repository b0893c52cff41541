"""Receiving webhooks over HTTP (Django test client against the real URL and view), then the
drain applies them to stock."""

import json
import time

import pytest
from django.db.models import ProtectedError

from channels.models import Channel, ChannelSkuState
from ingestion.models import InboundEvent, LevelDrift, OversellIncident
from inventory.models import StockMovement, StockPosition
from inventory.services import stock_receive
from tests.ingestion.conftest import (
    SHOPIFY_SECRET,
    WEBHOOK_SECRET,
    drain_all,
    listing,
    post_webhook,
    shopify_headers,
    standard_headers,
    webhook_kind_key,
    woo_headers,
)

pytestmark = pytest.mark.django_db


def on_hand(sku, location) -> int:
    position = StockPosition.objects.filter(sku=sku, location=location).first()
    return position.on_hand if position else 0


def shopify_order(order_id=820982911946154508, lines=None):
    return {
        "id": order_id, "name": "#1001", "created_at": "2024-05-01T10:00:00-04:00", "cancelled_at": None,
        "line_items": lines or [
            {"id": 466157049, "variant_id": 39072856, "product_id": 632910392, "sku": "TEE-M", "quantity": 2,
             "fulfillable_quantity": 2, "fulfillment_status": None, "gift_card": False},
        ],
    }


# ------------------------------------------------------------------------------ contract


def test_valid_shopify_webhook_is_stored_with_headers_and_answered_200(client, shopify, tee, wh):
    body = json.dumps(shopify_order()).encode()
    headers = shopify_headers(body, topic="orders/create", webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")

    response = post_webhook(client, "shop", None, headers, raw=body)

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    event = InboundEvent.objects.get()
    assert event.status == "pending" and event.topic == "orders/create"
    assert event.delivery_id == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert bytes(event.body) == body
    assert event.headers["X-Shopify-Event-Id"] and event.headers["X-Shopify-Triggered-At"]
    assert on_hand(tee, wh) == 0  # nothing applied before the drain: the answer never waits on it


def test_a_channel_with_events_cannot_be_deleted(client, shopify, tee, wh):
    """The database holds no constraint for an event's channel (ingestion.models: its check
    share-locked the channel's row on every ack); the ORM's PROTECT still refuses the delete."""
    body = json.dumps(shopify_order()).encode()
    assert post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body).status_code == 200

    with pytest.raises(ProtectedError):
        shopify.delete()
    assert Channel.objects.filter(pk=shopify.pk).exists() and InboundEvent.objects.get().channel_id == shopify.pk


def test_same_delivery_ten_times_has_one_effect(client, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    body = json.dumps(shopify_order()).encode()
    headers = shopify_headers(body, topic="orders/create", webhook_id="same-delivery")

    answers = [post_webhook(client, "shop", None, headers, raw=body) for _ in range(10)]
    drain_all()

    assert [a.status_code for a in answers] == [200] * 10
    assert [a.json()["status"] for a in answers].count("accepted") == 1
    assert InboundEvent.objects.count() == 1
    assert on_hand(tee, wh) == 8


def test_same_order_in_two_different_deliveries_is_applied_once(client, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    body = json.dumps(shopify_order()).encode()
    for _ in range(2):  # Shopify may redeliver an event under a new webhook id
        post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    drain_all()
    assert InboundEvent.objects.filter(status="done").count() == 2
    assert on_hand(tee, wh) == 8
    assert StockMovement.objects.filter(type="sale").count() == 1


@pytest.mark.parametrize("tamper", ["body", "secret", "missing"])
def test_bad_signature_is_401_and_stores_nothing(client, shopify, tee, tamper):
    body = json.dumps(shopify_order()).encode()
    headers = shopify_headers(body, topic="orders/create", secret="wrong" if tamper == "secret" else SHOPIFY_SECRET)
    if tamper == "missing":
        del headers["HTTP_X_SHOPIFY_HMAC_SHA256"]
    raw = body.replace(b'"quantity": 2', b'"quantity": 1') if tamper == "body" else body

    response = post_webhook(client, "shop", None, headers, raw=raw)

    assert response.status_code == 401 and response.json()["error"] == "invalid_signature"
    assert InboundEvent.objects.count() == 0


def test_unknown_channel_404_and_channels_without_webhooks(client, make_channel):
    make_channel("ebay", "ebay-uk", secret="x")
    assert client.post("/webhooks/nope/", data=b"{}", content_type="application/json").json()["error"] == \
        "channel_not_found"
    response = client.post("/webhooks/ebay-uk/", data=b"{}", content_type="application/json")
    assert response.status_code == 404 and response.json()["error"] == "webhooks_not_supported"


def test_body_over_one_mebibyte_is_413(client, shopify):
    big = b'{"x": "' + b"a" * (1024 * 1024) + b'"}'
    response = post_webhook(client, "shop", None, shopify_headers(big, topic="orders/create"), raw=big)
    assert response.status_code == 413
    # A lying Content-Length does not get past the check on the bytes actually read.
    response = client.generic("POST", "/webhooks/shop/", big, content_type="application/json",
                              CONTENT_LENGTH="10", **shopify_headers(big, topic="orders/create"))
    assert response.status_code in (401, 413)
    assert InboundEvent.objects.count() == 0


def test_signed_body_that_is_not_json_is_stored_as_failed(client, shopify):
    body = b"<xml>not json</xml>"
    response = post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert event.status == "failed" and event.error_code == "invalid_json" and "JSON" in event.last_error


def test_woocommerce_creation_ping_answers_200_unsigned(client, woo):
    response = client.post("/webhooks/woo/", data=b"webhook_id=7", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert InboundEvent.objects.count() == 0


# ------------------------------------------------------------------------------ Shopify topics


def test_orders_create_then_refunds_create_restores_stock(client, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    listing(shopify, tee, "808950810", variant_id=39072856, product_id=632910392)
    order = shopify_order(lines=[{"id": 1, "variant_id": 39072856, "product_id": 632910392, "sku": "their-code",
                                  "quantity": 3, "fulfillment_status": None}])
    body = json.dumps(order).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    drain_all()
    assert on_hand(tee, wh) == 7  # matched by the listing's variant_id, not the (unknown) sku code

    refund = {"id": 509562969, "order_id": order["id"], "created_at": "2024-05-02T10:00:00-04:00",
              "refund_line_items": [
                  {"id": 104689539, "line_item_id": 1, "quantity": 2, "restock_type": "return",
                   "line_item": order["line_items"][0]},
                  {"id": 104689540, "line_item_id": 1, "quantity": 1, "restock_type": "no_restock",
                   "line_item": order["line_items"][0]}]}
    body = json.dumps(refund).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="refunds/create"), raw=body)
    drain_all()

    assert on_hand(tee, wh) == 9
    assert StockMovement.objects.filter(type="return", on_hand_delta=2).count() == 1


def test_cancel_after_refund_never_puts_back_more_than_was_sold(client, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=5)
    order = shopify_order()
    for topic, payload in [
        ("orders/create", order),
        ("refunds/create", {"id": 1, "order_id": order["id"], "refund_line_items": [
            {"id": 11, "line_item_id": 466157049, "quantity": 2, "restock_type": "cancel",
             "line_item": order["line_items"][0]}]}),
        ("orders/cancelled", {**order, "cancelled_at": "2024-05-01T11:00:00-04:00"}),
    ]:
        body = json.dumps(payload).encode()
        post_webhook(client, "shop", None, shopify_headers(body, topic=topic), raw=body)
    drain_all()
    assert on_hand(tee, wh) == 5


def test_unknown_sku_fails_visibly_then_reprocesses_once_the_listing_exists(client, api, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=4)
    order = shopify_order(lines=[{"id": 9, "variant_id": 555, "sku": "NOT-OURS", "quantity": 1}])
    body = json.dumps(order).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    drain_all()
    event = InboundEvent.objects.get()
    assert event.status == "failed" and event.error_code == "unknown_listing"
    assert on_hand(tee, wh) == 4

    listing(shopify, tee, "inv-1", variant_id="555")
    response = api.post(f"/api/v1/events/{event.pk}/reprocess/")
    assert response.status_code == 202 and response.json() == {"requeued": 1}
    drain_all()

    event.refresh_from_db()
    assert event.status == "done" and on_hand(tee, wh) == 3


def test_sale_beyond_stock_applies_what_exists_and_records_an_oversell_incident(client, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=1)
    body = json.dumps(shopify_order(lines=[{"id": 5, "sku": "TEE-M", "quantity": 3}])).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    drain_all()

    assert InboundEvent.objects.get().status == "done"  # the fact is kept, never dropped
    assert on_hand(tee, wh) == 0
    incident = OversellIncident.objects.get()
    assert (incident.channel, incident.sku, incident.requested, incident.applied, incident.shortfall) == \
        (shopify, tee, 3, 1, 2)
    assert incident.order_ref == str(shopify_order()["id"])


def test_shopify_order_commits_the_reservation_held_for_it(client, shopify, tee, wh):
    from reservations.models import Reservation
    from reservations.services import reservation_create

    stock_receive(sku=tee, location=wh, quantity=10)
    order = shopify_order(lines=[{"id": 1, "sku": "TEE-M", "quantity": 3}])
    reservation = reservation_create(lines=[{"sku": "TEE-M", "quantity": 2, "location": "wh"}], channel=shopify,
                                     order_ref=str(order["id"]))
    body = json.dumps(order).encode()
    for _ in range(2):  # a redelivery under a new webhook id must not take the stock twice
        post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
        drain_all()

    position = StockPosition.objects.get(sku=tee, location=wh)
    assert Reservation.objects.get(pk=reservation.pk).status == "committed"
    assert (position.on_hand, position.reserved) == (7, 0)  # 2 from the reservation, 1 from free stock


def level_update(client, available, *, location_id="905684977", updated_at="2024-05-01T10:00:00-04:00"):
    payload = {"inventory_item_id": 808950810, "location_id": int(location_id), "available": available,
               "updated_at": updated_at}
    body = json.dumps(payload).encode()
    return post_webhook(client, "shop", None, shopify_headers(body, topic="inventory_levels/update"), raw=body)


def test_inventory_level_applied_where_authoritative_and_stale_levels_ignored(client, shopify, tee, wh):
    listing(shopify, tee, "808950810")
    shopify.authoritative_locations.add(wh)
    stock_receive(sku=tee, location=wh, quantity=10)

    level_update(client, 7, updated_at="2024-05-01T10:00:00Z")
    level_update(client, 3, updated_at="2024-05-01T09:00:00Z")  # older, delivered later
    drain_all()

    assert on_hand(tee, wh) == 7
    outcomes = [list(e.outcome.values())[0] for e in InboundEvent.objects.order_by("id")]
    assert outcomes[0].startswith("applied: count 7") and outcomes[1].startswith("stale")


def test_inventory_level_elsewhere_is_drift_and_our_own_echo_is_ignored(client, shopify, tee, wh):
    listing(shopify, tee, "808950810")
    stock_receive(sku=tee, location=wh, quantity=10)
    ChannelSkuState.objects.create(channel=shopify, sku=tee, last_pushed=10)

    level_update(client, 10)  # what we pushed: an echo
    level_update(client, 4)  # not authoritative for wh: drift
    drain_all()

    assert on_hand(tee, wh) == 10
    drift = LevelDrift.objects.get()
    assert (drift.reported, drift.on_hand) == (4, 10)
    assert "echo" in list(InboundEvent.objects.order_by("id")[0].outcome.values())[0]


# ------------------------------------------------------------------------------ WooCommerce


def woo_order(status, *, order_id=727, quantity=2):
    return {"id": order_id, "status": status, "date_created_gmt": "2024-05-01T10:00:00",
            "date_modified_gmt": "2024-05-01T10:05:00",
            "line_items": [{"id": 315, "product_id": 93, "variation_id": 0, "quantity": quantity, "sku": "MUG-1"}]}


def test_woocommerce_order_sold_once_then_cancelled_restocks(client, woo, mug, wh):
    stock_receive(sku=mug, location=wh, quantity=6)
    for topic, status in [("order.created", "pending"), ("order.updated", "processing"),
                          ("order.updated", "processing"), ("order.updated", "cancelled")]:
        body = json.dumps(woo_order(status)).encode()
        assert post_webhook(client, "woo", None, woo_headers(body, topic=topic), raw=body).status_code == 200
        drain_all()
        if status == "processing":
            assert on_hand(mug, wh) == 4
    assert on_hand(mug, wh) == 6
    assert list(InboundEvent.objects.order_by("id").values_list("status", flat=True)) == \
        ["ignored", "done", "done", "done"]


def test_woocommerce_wrong_secret_is_401(client, woo):
    body = json.dumps(woo_order("processing")).encode()
    response = post_webhook(client, "woo", None, woo_headers(body, topic="order.updated", secret="nope"), raw=body)
    assert response.status_code == 401 and InboundEvent.objects.count() == 0


# ------------------------------------------------------------------------------ webhook kind


def test_standard_webhooks_channel_carries_canonical_events(client, pos, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=5)
    payload = {"events": [
        {"event_id": "till-1", "type": "sale", "sku": "TEE-M", "location": "wh", "quantity": 2,
         "occurred_at": "2024-05-01T10:00:00Z"},
        {"event_id": "till-2", "type": "return", "sku": "TEE-M", "location": "wh", "quantity": 1,
         "occurred_at": "2024-05-01T10:01:00Z"}]}
    body = json.dumps(payload).encode()
    headers = standard_headers(body, key=webhook_kind_key(), extra_signatures=("v1,Zm9v",))

    response = post_webhook(client, "pos", None, headers, raw=body)
    drain_all()

    assert response.status_code == 200
    assert on_hand(tee, wh) == 4
    assert set(StockMovement.objects.filter(sku=tee).values_list("event_key", flat=True)) >= {"pos:till-1",
                                                                                               "pos:till-2"}


def test_stale_standard_webhooks_timestamp_is_401(client, pos):
    body = b'{"events": []}'
    headers = standard_headers(body, key=webhook_kind_key(), timestamp=int(time.time()) - 600)
    assert post_webhook(client, "pos", None, headers, raw=body).status_code == 401
    assert InboundEvent.objects.count() == 0


def test_webhook_kind_with_plain_secret_uses_utf8_bytes(client, make_channel, tee):
    make_channel("webhook", "wms", secret="plain-secret")
    body = json.dumps({"events": [{"event_id": "r1", "type": "receipt", "sku": "TEE-M", "location": "wh",
                                   "quantity": 3, "occurred_at": "2024-05-01T10:00:00Z"}]}).encode()
    assert post_webhook(client, "wms", None, standard_headers(body, key=b"plain-secret"), raw=body).status_code == 200
    # The whsec_ interpretation of the same string would be a different key.
    assert WEBHOOK_SECRET.startswith("whsec_")
    drain_all()
    assert on_hand(tee, Channel.objects.get(slug="wms").default_location) == 3


def test_a_channel_made_authoritative_here_counts_from_the_next_drain(client, shopify, tee, wh):
    """The drain keeps a batch's channels in the process for a few seconds (DRAIN_CHANNEL_CACHE_SECONDS);
    a change saved in this process reaches the next batch at once. Fails if the cache does not
    forget on the authoritative locations' change (the second level would be drift too)."""
    listing(shopify, tee, "808950810")
    stock_receive(sku=tee, location=wh, quantity=10)
    level_update(client, 4, updated_at="2024-05-01T10:00:00Z")
    drain_all()  # not authoritative: drift, and the channel is now kept
    assert on_hand(tee, wh) == 10

    shopify.authoritative_locations.add(wh)
    level_update(client, 6, updated_at="2024-05-01T11:00:00Z")
    drain_all()

    assert on_hand(tee, wh) == 6


def test_a_channel_saved_here_reaches_the_next_drain(client, shopify, tee, wh):
    """Fails if saving a channel does not forget the drain's copy (the settings' location
    mapping below would still be the old one)."""
    listing(shopify, tee, "808950810")
    shopify.authoritative_locations.add(wh)
    stock_receive(sku=tee, location=wh, quantity=10)
    level_update(client, 4, location_id="111", updated_at="2024-05-01T10:00:00Z")
    drain_all()  # location 111 is not mapped: nothing applied
    assert on_hand(tee, wh) == 10

    shopify.settings = {**shopify.settings, "location_id": "111"}
    shopify.save()
    level_update(client, 6, location_id="111", updated_at="2024-05-01T11:00:00Z")
    drain_all()

    assert on_hand(tee, wh) == 6
