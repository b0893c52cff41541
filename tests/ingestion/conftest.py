"""Ingestion fixtures: channels of each kind, signing exactly as each marketplace documents it
(computed here with hmac/base64, independently of the code under test), and an in-process drain."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest

from channels.models import Channel, ChannelListing
from ingestion.services import channels_awaiting_fetch, inbound_events_drain, inbound_events_fetch
from tests.factories import LocationFactory, SkuFactory

SHOPIFY_SECRET = "shpss_test_secret"
WOO_SECRET = "woo secret with spaces"
BC_SECRET = "bc-client-secret"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def b64_hmac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def shopify_headers(body: bytes, *, topic: str, webhook_id: str | None = None, secret: str = SHOPIFY_SECRET) -> dict:
    """https://shopify.dev/docs/apps/build/webhooks/verify-deliveries"""
    return {
        "HTTP_X_SHOPIFY_HMAC_SHA256": b64_hmac(secret.encode(), body),
        "HTTP_X_SHOPIFY_TOPIC": topic,
        "HTTP_X_SHOPIFY_WEBHOOK_ID": webhook_id or str(uuid.uuid4()),
        "HTTP_X_SHOPIFY_EVENT_ID": str(uuid.uuid4()),
        "HTTP_X_SHOPIFY_TRIGGERED_AT": "2024-05-01T10:00:00.000000Z",
        "HTTP_X_SHOPIFY_SHOP_DOMAIN": "test-shop.myshopify.com",
    }


def woo_headers(body: bytes, *, topic: str, delivery_id: str | None = None, secret: str = WOO_SECRET) -> dict:
    return {
        "HTTP_X_WC_WEBHOOK_SIGNATURE": b64_hmac(secret.encode(), body),
        "HTTP_X_WC_WEBHOOK_TOPIC": topic,
        "HTTP_X_WC_WEBHOOK_DELIVERY_ID": delivery_id or uuid.uuid4().hex,
        "HTTP_X_WC_WEBHOOK_ID": "7",
        "HTTP_X_WC_WEBHOOK_SOURCE": "https://shop.example/",
    }


def standard_headers(body: bytes, *, key: bytes, msg_id: str | None = None, timestamp: int | None = None,
                     extra_signatures: tuple[str, ...] = ()) -> dict:
    """https://www.standardwebhooks.com/ : v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = "v1," + b64_hmac(key, f"{msg_id}.{timestamp}.".encode() + body)
    return {
        "HTTP_WEBHOOK_ID": msg_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(timestamp),
        "HTTP_WEBHOOK_SIGNATURE": " ".join([*extra_signatures, signature]),
    }


def webhook_kind_key() -> bytes:
    return base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))


def post_webhook(client, slug: str, payload, headers: dict, *, raw: bytes | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    return client.post(f"/webhooks/{slug}/", data=body, content_type="application/json", **headers)


def drain_all(max_rounds: int = 20) -> int:
    """Run, in-process, what the workers run until nothing due is left: the fetch task for each
    channel whose events wait for their data (BigCommerce), then the drain. Returns events claimed."""
    total = 0
    for _ in range(max_rounds):
        for channel_id in channels_awaiting_fetch():
            inbound_events_fetch(channel_id=channel_id)
        result = inbound_events_drain()
        total += result.claimed
        if result.claimed == 0:
            break
    return total


@pytest.fixture
def wh(db):
    return LocationFactory(code="wh")


@pytest.fixture
def shop_location(db):
    return LocationFactory(code="shop-floor")


@pytest.fixture
def make_channel(db, wh):
    def make(kind: str, slug: str | None = None, *, secret: str = "", **fields) -> Channel:
        channel = Channel.objects.create(slug=slug or kind, name=slug or kind, kind=kind, webhook_secret=secret,
                                         default_location=wh, push_enabled=False, **fields)
        channel.locations.add(wh)
        return channel

    return make


@pytest.fixture
def shopify(make_channel):
    return make_channel("shopify", "shop", secret=SHOPIFY_SECRET, settings={"location_id": "905684977"})


@pytest.fixture
def woo(make_channel):
    return make_channel("woocommerce", "woo", secret=WOO_SECRET)


@pytest.fixture
def pos(make_channel):
    return make_channel("webhook", "pos", secret=WEBHOOK_SECRET)


@pytest.fixture
def tee(db):
    return SkuFactory(code="TEE-M")


@pytest.fixture
def mug(db):
    return SkuFactory(code="MUG-1")


def listing(channel, sku, external_id: str, **attributes) -> ChannelListing:
    return ChannelListing.objects.create(channel=channel, sku=sku, external_id=external_id, attributes=attributes)
