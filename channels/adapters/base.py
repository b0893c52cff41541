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
    # What we believe the channel holds now (our last acknowledged push, or a level read back
    # since); None when unknown. Marketplaces with compare-and-set (Shopify changeFromQuantity)
    # send it; the others ignore it.
    change_from: int | None = None
    # Identifies the push attempt this item belongs to (outbox pair and generation): a retry of the
    # same attempt carries the same key, so an idempotency key derived from it is reused. Empty
    # when the push has no outbox row (a dead-letter retry).
    attempt_key: str = ""


@dataclass
class PushOutcome:
    sku: str
    ok: bool
    status: int | None = None
    error: str = ""
    retry_after: float | None = None  # seconds the marketplace asked us to wait
    # The level the marketplace turned out to hold when it refused our compare-and-set (read back
    # before pushing again): recorded as drift from `PushItem.change_from` and as the last seen level.
    seen: int | None = None
    # Accepted for asynchronous processing under this reference (an Amazon feed id): neither
    # acknowledged nor failed yet; propagation holds the item back and records its result when the
    # marketplace reports it (`ChannelAdapter.feed_result`). `ok` stays False.
    pending: str = ""
    # Refused because a per-listing quota is used up (eBay's revisions per listing per calendar
    # day): not a failure of the data, so no attempt is charged; the item waits for the quota to renew.
    limit_reached: bool = False


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
    # Revisions the marketplace allows per listing per calendar day (eBay: 250); None = no such
    # quota. When set, propagation budgets them per listing (channels.propagation.budget).
    daily_revision_limit: int | None = None
    # True when `push` may answer `PushOutcome.pending` (asynchronous feeds); `feed_result` then
    # reports the outcome later.
    submits_feeds: bool = False

    def batch_size(self, channel, pending: int) -> int:
        """How many items one `push` call carries when `pending` items wait (the drain cuts its
        batches with it; `channel.settings.max_batch` can lower it). Default: `max_batch`."""
        return self.max_batch

    def rate_limit(self, channel) -> tuple[float, int]:
        """(requests per second, burst) for the channel's token bucket: the channel's own settings,
        lowered by an adapter whose marketplace publishes a stricter limit."""
        return channel.rate_limit_per_second, channel.rate_limit_burst

    def push(self, channel, session, items: list[PushItem]) -> list[PushOutcome]:
        raise NotImplementedError

    def feed_result(self, channel, session, reference: str,
                    items: list[PushItem]) -> tuple[str, list[PushOutcome] | None]:
        """For an adapter that submits feeds: (marketplace status, outcomes per item) once the feed
        `reference` finished, (status, None) while it is still processing. Raises requests
        exceptions when the marketplace could not be asked (asked again later)."""
        raise NotImplementedError

    def fetch_levels(self, channel, session, items: list[PushItem]) -> dict[str, int] | None:
        """Current levels by SKU for reconciliation; None when the API does not allow it."""
        return None
