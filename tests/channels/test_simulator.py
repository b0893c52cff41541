"""The simulator as a marketplace that sends orders: signed webhooks the service verifies and
applies (through ingestion), including BigCommerce's thin webhook + order products fetch."""

from __future__ import annotations

import pytest
import requests

from inventory import services as stock
from inventory.models import StockPosition
from tests.channels.conftest import wait_for
from tests.factories import LocationFactory, SkuFactory

SECRETS = {"shopify": "shpss_order_secret", "woocommerce": "wc_order_secret", "bigcommerce": "bc_order_secret",
           "webhook": "whsec_" + "b3JkZXItc2VjcmV0LW9yZGVyLXNlY3JldA=="}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_simulator_sends_signed_orders_that_the_service_applies(kind, live_server, simulator, make_channel,
                                                                list_sku):
    from ingestion.models import InboundEvent
    from ingestion.services import channels_awaiting_fetch, inbound_events_drain, inbound_events_fetch

    location = LocationFactory(code="wh")
    sku = SkuFactory(code=f"ORD-{kind}")
    channel = make_channel(kind, slug=f"orders-{kind}", webhook_secret=SECRETS[kind], default_location=location,
                           push_enabled=False)
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=10)
    target = f"{live_server.url}/webhooks/{channel.slug}/"
    answer = requests.post(f"{simulator.url}/_sim/orders", timeout=10, json={
        "store": channel.slug, "kind": kind, "target": target, "secret": SECRETS[kind], "location": "wh",
        "lines": [{"sku": sku.code, "quantity": 3}]}).json()
    assert answer["status"] == 200, answer  # the signature was accepted
    wait_for(lambda: InboundEvent.objects.filter(channel=channel).exists(), message="the inbound event")
    for channel_id in channels_awaiting_fetch():  # BigCommerce: the fetch task's part comes first
        inbound_events_fetch(channel_id=channel_id)
    inbound_events_drain()
    event = InboundEvent.objects.get(channel=channel)
    assert StockPosition.objects.get(sku=sku, location=location).on_hand == 7, (event.status, event.last_error,
                                                                                 event.outcome, event.payload)

    # the same order signed with the wrong secret is refused
    refused = requests.post(f"{simulator.url}/_sim/orders", timeout=10, json={
        "store": channel.slug, "kind": kind, "target": target, "secret": "wrong-secret", "location": "wh",
        "lines": [{"sku": sku.code, "quantity": 1}]}).json()
    assert refused["status"] == 401
