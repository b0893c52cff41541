"""The one small interface every marketplace adapter implements.

Adding a marketplace = adding one module here with a `ChannelAdapter` subclass and registering it
in `channels/adapters/__init__.py`. Each module has two sections:
- inbound (used by ingestion): verify a webhook's signature over the raw body, read its
  delivery id and topic, and map its payload to canonical events;
- outbound (used by propagation): push sellable quantities in the marketplace's largest batch,
  and read current levels back for reconciliation where the API allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Delivery:
    """What identifies one webhook delivery, read from headers (and body where needed)."""

    delivery_id: str
    topic: str
    extra_headers: dict = field(default_factory=dict)  # e.g. Shopify event id, triggered-at


@dataclass
class CanonicalEvent:
    """One stock event in the internal shape shared by every source (POST /api/v1/events/)."""

    event_id: str
    type: str  # sale, return, receipt, adjustment, count, transfer, cancellation
    quantity: int
    occurred_at: datetime | None = None
    sku: str | None = None  # our SKU code, when the source knows it
    external_id: str | None = None  # the channel's id for the item, matched through listings
    location: str | None = None  # our location code; None = the channel's default location
    to_location: str | None = None
    source: str = ""
    reference: str = ""  # e.g. the marketplace order number (order_ref for reservations)
    metadata: dict = field(default_factory=dict)


@dataclass
class PushItem:
    sku: str
    external_id: str
    quantity: int
    attributes: dict = field(default_factory=dict)


@dataclass
class PushOutcome:
    sku: str
    ok: bool
    status: int | None = None
    error: str = ""
    retry_after: float | None = None  # seconds the marketplace asked us to wait


class ChannelAdapter:
    kind: str = ""

    # ---------------------------------------------------------------- inbound (ingestion)
    def verify_webhook(self, channel, headers, body: bytes) -> bool:
        raise NotImplementedError

    def read_delivery(self, channel, headers, body: bytes) -> Delivery:
        raise NotImplementedError

    def parse_webhook(self, channel, delivery: Delivery, payload) -> list[CanonicalEvent]:
        raise NotImplementedError

    # ---------------------------------------------------------------- outbound (propagation)
    max_batch: int = 1

    def push(self, channel, session, items: list[PushItem]) -> list[PushOutcome]:
        raise NotImplementedError

    def fetch_levels(self, channel, session, items: list[PushItem]) -> dict[str, int] | None:
        """Current levels by SKU for reconciliation; None when the API does not allow it."""
        return None
