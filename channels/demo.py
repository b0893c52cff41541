"""Demo channels: one of each kind, pointed at the channel simulator (`seed_demo`, idempotent).

Each channel's base_url is `{SIMULATOR_URL}/s/{slug}`, so every channel is a store of its own in
the simulator. Its settings carry `"simulator": true`; the simulator re-points such channels at
itself when it starts on another port (`./dev up` picks a free port each start).
"""

from __future__ import annotations

import base64
import secrets

from django.conf import settings
from django.db import transaction

from channels.models import Channel, ChannelListing
from inventory.demo import SKUS

DEFAULT_LOCATION = "wh-main"
DEMO_CHANNELS = [
    # slug, kind, settings, buffer (type, value)
    ("demo-shopify", "shopify", {"api_version": settings.SHOPIFY_API_VERSION, "location_id": 7001}, ("units", 0)),
    ("demo-woocommerce", "woocommerce", {}, ("units", 1)),
    ("demo-bigcommerce", "bigcommerce", {"store_hash": "demo", "location_id": 1}, ("units", 0)),
    ("demo-ebay", "ebay", {}, ("percent", 10)),
    ("demo-amazon", "amazon", {"seller_id": "A1DEMOSELLER", "marketplace_id": "ATVPDKIKX0DER"}, ("units", 2)),
    ("demo-webhook", "webhook", {}, ("units", 0)),
]


def _credentials(kind: str) -> dict:
    if kind == "woocommerce":
        return {"consumer_key": f"ck_{secrets.token_hex(8)}", "consumer_secret": f"cs_{secrets.token_hex(8)}"}
    if kind == "webhook":
        return {}
    return {"access_token": f"demo_{secrets.token_hex(12)}"}


def _secret(kind: str) -> str:
    if kind == "webhook":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return secrets.token_hex(16)


def _listing(kind: str, n: int, code: str) -> tuple[str, dict]:
    return {
        "shopify": (str(40_000 + n), {"variant_id": str(30_000 + n), "product_id": str(20_000 + n)}),
        "woocommerce": (str(500 + n), {}),
        "bigcommerce": (str(800 + n), {"product_id": str(100 + n)}),
        "ebay": (f"OFFER-{n}", {"sku": code}),
        "amazon": (code, {"product_type": "SHIRT"}),
        "webhook": (code, {}),
    }[kind]


def demo_channels_seed() -> dict:
    """Create the demo channels and their listings for the demo SKUs (existing ones are kept)."""
    from channels.services import channel_create, channel_update, listing_upsert
    from inventory.models import Location

    base = settings.SIMULATOR_URL.rstrip("/")
    # Marketplace orders carry no location of ours: they are taken from the main warehouse.
    default_location = Location.objects.filter(code=DEFAULT_LOCATION).first()
    created = 0
    for slug, kind, extra, (buffer_type, buffer_value) in DEMO_CHANNELS:
        with transaction.atomic():
            channel = Channel.objects.filter(slug=slug).first()
            if channel is None:
                store = f"{base}/s/{slug}"
                channel_settings = {**extra, "simulator": True}
                if kind == "webhook":
                    channel_settings["target_url"] = f"{store}/hooks/stock"
                channel = channel_create(
                    slug=slug, name=f"Demo {kind}", kind=kind, base_url=store, credentials=_credentials(kind),
                    webhook_secret=_secret(kind), settings=channel_settings, push_enabled=True,
                    buffer={"type": buffer_type, "value": buffer_value}, default_location=default_location)
                created += 1
            elif channel.default_location_id is None and default_location is not None:
                channel_update(channel=channel, default_location=default_location)
            for n, (code, *_rest) in enumerate(SKUS, 1):
                if not ChannelListing.objects.filter(channel=channel, sku__code=code).exists():
                    external_id, attributes = _listing(kind, n, code)
                    listing_upsert(channel=channel, sku=code, external_id=external_id, attributes=attributes)
    return {"channels": Channel.objects.count(), "demo_channels_created": created}


def demo_channels_repoint(*, simulator_url: str) -> int:
    """Point the simulator-backed demo channels at `simulator_url` (and re-push them there)."""
    from channels.services import channel_update

    base = simulator_url.rstrip("/")
    moved = 0
    for channel in Channel.objects.filter(settings__simulator=True):
        wanted = f"{base}/s/{channel.slug}"
        if channel.base_url.rstrip("/") == wanted:
            continue
        changes = {"base_url": wanted}
        if channel.kind == "webhook":
            changes["settings"] = {**channel.settings, "target_url": f"{wanted}/hooks/stock"}
        channel_update(channel=channel, **changes)
        moved += 1
    return moved
