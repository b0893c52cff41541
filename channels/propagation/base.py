"""Shared pieces of the push path: limits, the HTTP session, and the records passed between steps."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from channels.adapters.base import PushOutcome
from channels.adapters.http import TimeoutSession

logger = logging.getLogger(__name__)


CLAIM_SIZE = 500  # pairs read per drain round; batches are cut from them
LOCK_TTL = 60.0  # seconds; > connect+read timeouts of one request, extended after every request
MAX_INLINE_WAIT = 2.0  # rate-limit waits up to this are slept; longer ones end the drain
DRAIN_BUDGET = 30.0  # seconds one task drains before handing over (far below the task time limit)
CHANNEL_FAILURE_STATUSES = {401, 403, 408}  # plus no answer and 5xx: the channel, not the item
# Asynchronous feeds (Amazon JSON_LISTINGS_FEED): seconds between polls of one feed, the last
# repeated. Feeds take minutes; getFeed allows 2 requests/s, so this is far from its limit.
FEED_POLL_SCHEDULE = (15.0, 30.0, 60.0)


# ------------------------------------------------------------------------------ draining

_sessions = threading.local()


def _session() -> TimeoutSession:
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = TimeoutSession()
    return session




@dataclass
class PushReport:
    """What one `channel_push` call did; `wake_in` is when the channel wants draining again."""

    requests: int = 0
    pushed: int = 0
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    busy: bool = False
    wake_in: float | None = None
    held: int = 0  # held back by a marketplace quota (eBay revisions per listing) or an in-flight feed
    submitted: int = 0  # accepted into an asynchronous feed (Amazon); results recorded when it finishes


@dataclass
class _Claimed:
    pair_id: int
    sku_id: int
    sku_code: str
    generation: int
    attempts: int
    force: bool
    first_error: str
    first_failed_at: object
    quantity: int = 0
    last_pushed: int | None = None
    external_id: str | None = None
    attributes: dict | None = None
    change_from: int | None = None  # what we believe the channel holds (see `believed_level`)


def believed_level(*, last_pushed, last_pushed_at, last_seen, last_seen_at, listing_updated_at) -> int | None:
    """The level we believe a channel holds for a listing (sent as a compare-and-set base, Shopify's
    `changeFromQuantity`): our last acknowledged push or the level last read back (reconciliation,
    a refused compare-and-set), whichever is newer (a tie goes to the push). None when we know
    neither, or when the listing changed since (a remap: the value was about another item)."""
    known = [(at, value) for at, value in ((last_pushed_at, last_pushed), (last_seen_at, last_seen))
             if at is not None and value is not None]
    if not known:
        return None
    at, value = max(known, key=lambda pair: pair[0])  # max keeps the first of equals: the push
    if listing_updated_at is not None and listing_updated_at > at:
        return None
    return int(value)


class _Stop(Exception):  # noqa: N818 - control flow inside the drain
    pass




@dataclass
class _Result:
    outcomes: dict[str, PushOutcome]
    started_at: object
    latency_ms: float
    http_status: int | None
    rate_limited: bool
    retry_after: float | None
    channel_failed: bool
    error: str
