"""Dead letters an operator retries (with the quantity current now) or discards."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from channels.models import (
    ChannelListing,
    ChannelSkuState,
    DeadLetter,
    DirtyPair,
    PushAttempt,
)
from channels.propagation.base import (
    LOCK_TTL,
    _Claimed,
    believed_level,
)
from channels.propagation.breaker import _health
from channels.propagation.budget import budget_policy, budget_refund, budget_spend
from channels.propagation.feeds import feeds_in_flight
from channels.propagation.outbox import (
    channels_wake_on_commit,
    pairs_mark_dirty,
)
from channels.propagation.push import (
    _send,
)
from channels.propagation.quantity import channel_quantities
from channels.propagation.record import (
    _fence_holds,
    _fence_issue,
    _record_seen,
)
from channels.ratelimit import push_lock
from core.errors import Conflict, ValidationFailed

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ dead letters


@dataclass
class RetryResult:
    ok: bool
    quantity: int | None
    error: str = ""
    queued: bool = False


def dead_letter_retry(*, dead_letter: DeadLetter, actor: str = "") -> RetryResult:
    """Push the quantity current *now* (never the stale one the dead letter recorded), under the
    channel's push lock so it cannot overtake or be overtaken by a regular push. On success the
    dead letter is closed as retried; on failure it stays open with the new error. If the lock
    stays busy, the pair is re-marked (fresh attempts) and left to the regular push."""
    if dead_letter.status != DeadLetter.Status.OPEN:
        raise Conflict(f"Dead letter {dead_letter.pk} is already {dead_letter.status}.", code="dead_letter_closed")
    channel = dead_letter.channel
    lock = push_lock(channel_id=channel.pk, ttl=LOCK_TTL)
    if not lock.acquire(blocking=True, blocking_timeout=5):
        with transaction.atomic():
            _requeue(dead_letter, actor)
        return RetryResult(ok=False, quantity=None, queued=True, error="channel busy; queued for the next push")
    fence = _fence_issue(channel.pk)
    try:
        listing = ChannelListing.objects.filter(channel=channel, sku_id=dead_letter.sku_id).values(
            "sku_id", "external_id", "attributes", "updated_at").first()
        if listing is None:
            raise ValidationFailed("The SKU is no longer listed on this channel; discard the dead letter.",
                                   code="listing_not_found")
        quantity = channel_quantities(channel=channel, sku_ids=[dead_letter.sku_id])[dead_letter.sku_id]
        state = ChannelSkuState.objects.filter(channel=channel, sku_id=dead_letter.sku_id).values(
            "last_pushed", "last_pushed_at", "last_seen", "last_seen_at").first() or {}
        claimed = _Claimed(pair_id=0, sku_id=dead_letter.sku_id, sku_code=dead_letter.sku.code, generation=0,
                           attempts=0, force=True, first_error="", first_failed_at=None, quantity=quantity,
                           change_from=believed_level(last_pushed=state.get("last_pushed"),
                                                      last_pushed_at=state.get("last_pushed_at"),
                                                      last_seen=state.get("last_seen"),
                                                      last_seen_at=state.get("last_seen_at"),
                                                      listing_updated_at=listing["updated_at"]),
                           attributes=listing["attributes"] or {})
        if dead_letter.sku_id in feeds_in_flight(channel):  # an Amazon feed still carries it: after it
            with transaction.atomic():
                _requeue(dead_letter, actor)
            return RetryResult(ok=False, quantity=None, queued=True,
                               error="the SKU is in a feed still processing; queued to be pushed after it")
        policy = budget_policy(channel)  # an operator's retry skips the budget's holds, not its count
        if policy is not None:
            budget_spend(channel, policy, [claimed], timezone.now())
        result = _send(channel, [claimed], {dead_letter.sku_id: listing})
        if policy is not None:
            budget_refund(channel, policy, [claimed], result, timezone.now())
        outcome = result.outcomes[claimed.sku_code]
        now = timezone.now()
        _record_seen(channel, [claimed], result, now)
        with transaction.atomic():
            if not _fence_holds(channel.pk, fence):  # a regular push took over meanwhile: it sends now
                _requeue(dead_letter, actor)
                return RetryResult(ok=False, quantity=None, queued=True, error="channel busy; queued for the next push")
            PushAttempt.objects.create(
                channel=channel, purpose=PushAttempt.Purpose.RETRY, started_at=result.started_at,
                latency_ms=round(result.latency_ms, 2), http_status=result.http_status,
                outcome=PushAttempt.Outcome.SUCCESS if outcome.ok else (
                    PushAttempt.Outcome.RATE_LIMITED if result.rate_limited else PushAttempt.Outcome.FAILED),
                sku_count=1, error=result.error[:2000],
                items=[{"sku": claimed.sku_code, "quantity": quantity, "ok": outcome.ok}])
            if outcome.ok:
                ChannelSkuState.objects.update_or_create(
                    channel=channel, sku_id=dead_letter.sku_id,
                    defaults={"last_pushed": quantity, "last_pushed_at": now})
                DeadLetter.objects.filter(pk=dead_letter.pk).update(
                    status=DeadLetter.Status.RETRIED, resolved_at=now, resolved_by=actor[:200],
                    resolution_note=f"pushed {quantity} (current at retry time)", quantity=quantity)
            else:
                DeadLetter.objects.filter(pk=dead_letter.pk).update(
                    attempts=F("attempts") + 1, last_error=outcome.error[:2000], last_failed_at=now)
            _health(channel, result, now, probe=False)
        dead_letter.refresh_from_db()
        return RetryResult(ok=outcome.ok, quantity=quantity, error=outcome.error)
    finally:
        try:
            lock.release()
        except Exception:
            logger.warning("push lock for channel %s expired during a dead-letter retry", channel.pk)


def _requeue(dead_letter: DeadLetter, actor: str) -> None:
    pairs_mark_dirty(sku_ids=[dead_letter.sku_id], channel_ids=[dead_letter.channel_id], force=True)
    DirtyPair.objects.filter(channel_id=dead_letter.channel_id, sku_id=dead_letter.sku_id).update(
        attempts=0, next_attempt_at=timezone.now())
    DeadLetter.objects.filter(pk=dead_letter.pk).update(
        status=DeadLetter.Status.RETRIED, resolved_at=timezone.now(), resolved_by=actor[:200],
        resolution_note="queued for the next push (channel busy)")
    channels_wake_on_commit([dead_letter.channel_id])


def dead_letter_discard(*, dead_letter: DeadLetter, reason: str, actor: str = "") -> DeadLetter:
    """Close a dead letter without pushing; the reason is kept for the audit."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("A reason is required to discard a dead letter.", code="reason_required")
    updated = DeadLetter.objects.filter(pk=dead_letter.pk, status=DeadLetter.Status.OPEN).update(
        status=DeadLetter.Status.DISCARDED, resolved_at=timezone.now(), resolved_by=actor[:200],
        resolution_note=reason[:2000])
    dead_letter.refresh_from_db()
    if not updated:
        raise Conflict(f"Dead letter {dead_letter.pk} is already {dead_letter.status}.", code="dead_letter_closed")
    return dead_letter
