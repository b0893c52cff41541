"""Marketplace orders and canonical events naming a bundle act on its components (contract,
"Bundles"): a sale consumes each component's share, a cancellation or refund gives it back, and
any other change of a bundle fails visibly with `bundle_has_no_stock`."""

import json
import uuid

import pytest
from django.utils import timezone

from ingestion.models import InboundEvent, OversellIncident
from inventory import selectors
from inventory.models import StockMovement, StockPosition
from inventory.services import sku_create, stock_receive
from reservations import services as reservations
from tests.factories import SkuFactory
from tests.ingestion.conftest import drain_all, listing, post_webhook, shopify_headers

pytestmark = pytest.mark.django_db


def on_hand(code: str) -> int:
    position = StockPosition.objects.filter(sku__code=code, location__code="wh").first()
    return position.on_hand if position else 0


@pytest.fixture
def gift(db, wh):
    SkuFactory(code="MUG")
    SkuFactory(code="TEA")
    stock_receive(sku="MUG", location="wh", quantity=10)
    stock_receive(sku="TEA", location="wh", quantity=10)
    return sku_create(code="GIFT", name="Gift", components=[{"sku": "MUG", "quantity": 2},
                                                            {"sku": "TEA", "quantity": 1}])


def order(order_id=5001, quantity=3, line_id=77):
    return {"id": order_id, "name": "#5001", "created_at": "2024-05-01T10:00:00-04:00", "cancelled_at": None,
            "line_items": [{"id": line_id, "variant_id": 4242, "product_id": 1, "sku": "GIFT", "quantity": quantity,
                            "fulfillable_quantity": quantity, "fulfillment_status": None, "gift_card": False}]}


def send(client, topic: str, payload: dict) -> None:
    body = json.dumps(payload).encode()
    assert post_webhook(client, "shop", None, shopify_headers(body, topic=topic), raw=body).status_code == 200


def test_a_marketplace_order_of_a_bundle_consumes_its_components_and_a_cancellation_gives_them_back(
        client, shopify, gift):
    listing(shopify, gift, "inv-gift", variant_id="4242")
    send(client, "orders/create", order())
    drain_all()

    assert (on_hand("MUG"), on_hand("TEA")) == (4, 7)
    rows = StockMovement.objects.filter(type="sale").order_by("id")
    assert {(r.sku.code, r.on_hand_delta, r.metadata["bundle_id"]) for r in rows} == {
        ("MUG", -6, gift.pk), ("TEA", -3, gift.pk)}

    send(client, "orders/cancelled", {**order(), "cancelled_at": "2024-05-01T11:00:00-04:00"})
    send(client, "orders/cancelled", {**order(), "cancelled_at": "2024-05-01T11:00:00-04:00"})  # twice: once back
    drain_all()

    assert (on_hand("MUG"), on_hand("TEA")) == (10, 10)
    assert InboundEvent.objects.exclude(status="done").count() == 0
    assert selectors.ledger_drift() == []


def test_an_order_of_more_bundles_than_exist_records_the_oversell_per_component(client, shopify, gift):
    listing(shopify, gift, "inv-gift", variant_id="4242")
    send(client, "orders/create", order(quantity=6))  # 12 mugs wanted, 10 on hand
    drain_all()

    assert (on_hand("MUG"), on_hand("TEA")) == (0, 4)
    incident = OversellIncident.objects.get()
    assert (incident.sku.code, incident.requested, incident.shortfall) == ("MUG", 12, 2)


def test_an_order_of_a_reserved_bundle_draws_on_its_hold(client, shopify, gift):
    listing(shopify, gift, "inv-gift", variant_id="4242")
    held = reservations.reservation_create(lines=[{"sku": "GIFT", "quantity": 3}], channel=shopify,
                                           order_ref="5001")
    send(client, "orders/create", order())
    drain_all()

    held.refresh_from_db()
    assert held.status == "committed"
    mug = StockPosition.objects.get(sku__code="MUG")
    assert (mug.on_hand, mug.reserved) == (4, 0)
    assert OversellIncident.objects.count() == 0
    assert selectors.ledger_drift() == []


def canonical(type_: str, quantity: int, sku: str = "GIFT") -> dict:
    return {"event_id": str(uuid.uuid4()), "type": type_, "sku": sku, "location": "wh", "quantity": quantity,
            "occurred_at": timezone.now().isoformat()}


def test_canonical_events_sell_and_cancel_bundles_and_refuse_other_changes(api, gift):
    sale, cancel, receipt = canonical("sale", 2), canonical("cancellation", 1), canonical("receipt", 5)
    response = api.post("/api/v1/events/", data=json.dumps({"events": [sale, cancel, receipt]}),
                        content_type="application/json")
    assert response.status_code == 202, response.content
    drain_all()

    assert (on_hand("MUG"), on_hand("TEA")) == (10 - 4 + 2, 10 - 2 + 1)
    failed = InboundEvent.objects.get(status="failed")
    assert failed.error_code == "bundle_has_no_stock"
    assert InboundEvent.objects.filter(status="done").count() == 2


def test_a_marketplace_level_of_a_bundle_listing_is_ignored_with_its_reason(client, shopify, gift):
    listing(shopify, gift, "808950810")
    shopify.authoritative_locations.add(shopify.default_location)
    payload = {"inventory_item_id": 808950810, "location_id": 905684977, "available": 1,
               "updated_at": "2024-05-01T10:00:00-04:00"}
    send(client, "inventory_levels/update", payload)  # e.g. Shopify echoing our push of the bundle
    drain_all()

    event = InboundEvent.objects.get()
    assert event.status == "done"
    assert "bundle" in list(event.outcome.values())[0]
    assert (on_hand("MUG"), on_hand("TEA")) == (10, 10)
