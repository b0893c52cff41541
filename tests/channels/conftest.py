"""Propagation fixtures: the channel simulator on a free port (real HTTP) and channel builders."""

from __future__ import annotations

import time

import pytest

from channels.models import Channel
from channels.ratelimit import ratelimit_reset, redis_client
from devtools.simulator import Simulator

# kind -> (settings, credentials, listing external id for SKU n, listing attributes)
KINDS = {
    "shopify": ({"api_version": "2024-01", "location_id": 7001}, {"access_token": "shpat_x"}, "4400{n}", {}),
    "woocommerce": ({}, {"consumer_key": "ck_x", "consumer_secret": "cs_x"}, "50{n}", {}),
    "bigcommerce": ({"store_hash": "abc123", "location_id": 1}, {"access_token": "bc_x"}, "80{n}", {}),
    "ebay": ({}, {"access_token": "v^1.1#x"}, "OFFER-{n}", {}),
    "amazon": ({"seller_id": "A1SELLER", "marketplace_id": "ATVPDKIKX0DER"}, {"access_token": "Atza|x"}, "SELLER-{n}",
               {"product_type": "SHIRT"}),
    "webhook": ({}, {}, "{code}", {}),
}


@pytest.fixture
def simulator():
    sim = Simulator(seed=7).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def make_channel(simulator):
    """Build a channel of a kind pointed at its own simulator store, through the service."""
    from channels.services import channel_create

    def make(kind: str, slug: str | None = None, **overrides) -> Channel:
        slug = slug or f"{kind}-ch"
        settings_, credentials, _ext, _attrs = KINDS[kind]
        settings_ = {**settings_, **overrides.pop("settings", {})}
        if kind == "webhook":
            settings_.setdefault("target_url", f"{simulator.store_url(slug)}/hooks/stock")
        data = {"slug": slug, "name": slug, "kind": kind, "base_url": simulator.store_url(slug),
                "credentials": credentials, "settings": settings_, "push_enabled": True,
                "rate_limit_per_second": 1000.0, "rate_limit_burst": 1000, **overrides}
        channel = channel_create(**data)
        ratelimit_reset(channel_id=channel.pk)
        redis_client().delete(f"stockline:push-lock:{channel.pk}")
        return channel

    return make


def external_id(kind: str, n: int, code: str) -> str:
    return KINDS[kind][2].format(n=n, code=code)


@pytest.fixture
def list_sku():
    from channels.services import listing_upsert

    def add(channel: Channel, sku, n: int = 1, external: str | None = None):
        ext = external or external_id(channel.kind, n, sku.code)
        listing, _ = listing_upsert(channel=channel, sku=sku.code, external_id=ext,
                                    attributes=dict(KINDS[channel.kind][3]))
        return listing

    return add


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)
