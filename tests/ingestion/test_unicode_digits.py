"""Marketplace payloads and ids with Unicode digits: "٣" is not 3 and "²" is not a crash. The
adapters read quantities, order ids and status ids as JSON integers or ASCII digits only."""

import json

import pytest

from ingestion.models import InboundEvent
from inventory.models import StockPosition
from inventory.services import stock_receive
from tests.core.test_unicode_digits import SUPERSCRIPT_TWO, arabic_indic
from tests.ingestion.conftest import BC_SECRET, drain_all, listing, post_webhook, shopify_headers
from tests.ingestion.test_bigcommerce import STORE_HASH, TOKEN, FakeBigCommerce, notify, product_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def bigcommerce_api():
    fake = FakeBigCommerce()
    yield fake
    fake.close()


@pytest.fixture
def bc(make_channel, bigcommerce_api):
    return make_channel("bigcommerce", "bc", secret=BC_SECRET, base_url=bigcommerce_api.url,
                        credentials={"access_token": TOKEN}, settings={"store_hash": STORE_HASH})


def on_hand(sku, location) -> int:
    return StockPosition.objects.get(sku=sku, location=location).on_hand


@pytest.mark.parametrize("quantity", [arabic_indic(3), SUPERSCRIPT_TWO])
def test_shopify_quantity_in_other_digits_is_an_invalid_payload(client, shopify, tee, wh, quantity):
    stock_receive(sku=tee, location=wh, quantity=10)
    listing(shopify, tee, "4401")
    body = json.dumps({"id": 820982911946154508, "name": "#1001", "created_at": "2024-05-01T10:00:00Z",
                       "line_items": [{"id": 1, "variant_id": 4401, "sku": "TEE-M", "quantity": quantity}]}).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)

    drain_all()

    event = InboundEvent.objects.get()
    assert (event.status, event.error_code) == ("failed", "invalid_payload")
    assert on_hand(tee, wh) == 10  # "٣" did not sell 3


def test_bigcommerce_status_id_superscript_is_ignored_without_a_fetch(client, bc, bigcommerce_api):
    notify(client, "store/order/statusUpdated", 250, status={"previous_status_id": 1, "new_status_id": "²"})

    drain_all()

    assert InboundEvent.objects.get().status == "ignored"
    assert bigcommerce_api.requests == []


def test_bigcommerce_order_id_in_other_digits_is_not_fetched(client, bc, bigcommerce_api, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    listing(bc, tee, "501")
    bigcommerce_api.orders[3] = [product_row(1, 3, 501, 2)]

    notify(client, "store/order/created", arabic_indic(3))
    drain_all()

    event = InboundEvent.objects.get()
    assert (event.status, event.error_code) == ("failed", "invalid_payload")
    assert bigcommerce_api.requests == []  # order 3 was not fetched for "٣"
    assert on_hand(tee, wh) == 10


def test_bigcommerce_product_quantity_in_other_digits_is_an_invalid_payload(client, bc, bigcommerce_api, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    listing(bc, tee, "501")
    bigcommerce_api.orders[7] = [{**product_row(1, 7, 501, 1), "quantity": arabic_indic(2)}]

    notify(client, "store/order/created", 7)
    drain_all()

    event = InboundEvent.objects.get()
    assert (event.status, event.error_code) == ("failed", "invalid_payload")
    assert on_hand(tee, wh) == 10


def test_string_quantities_in_ascii_digits_still_count(client, shopify, tee, wh):
    """Some marketplaces send numbers as strings; ASCII digits are still read."""
    stock_receive(sku=tee, location=wh, quantity=10)
    listing(shopify, tee, "4401")
    body = json.dumps({"id": 5, "name": "#5", "line_items": [{"id": 1, "variant_id": 4401, "quantity": "3"}]}).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)

    drain_all()

    assert InboundEvent.objects.get().status == "done"
    assert on_hand(tee, wh) == 7

