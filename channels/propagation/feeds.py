"""Asynchronous feeds (Amazon JSON_LISTINGS_FEED): hold their SKUs while in flight, poll them
from beat, and record each SKU's result like a push's.

A push that submits a feed records a `PendingFeed` (in its recording transaction, see
`record._feeds_submitted`) and holds the feed's pairs back. `feeds_poll` (task
`channels.poll_feeds`, beat every 10 s) asks the marketplace about each due feed once per
call, without holding a worker for minutes: while it is processing the next poll is scheduled
(`FEED_POLL_SCHEDULE`); once it is done, its per-SKU results are recorded in one transaction
that also resolves the feed row (so they are recorded exactly once):
- accepted SKUs are acknowledged (last pushed value, compare-and-delete of the outbox row, open
  dead letters superseded); a SKU re-marked while the feed was in flight is made due at once;
- refused SKUs are charged one attempt (retried with backoff, dead-lettered after the channel's
  last attempt), exactly like an item refused inside a synchronous push.
A feed with no result after `AMAZON_FEED_TIMEOUT_SECONDS` (or FATAL/CANCELLED) fails every SKU
it carried (one attempt each; the current quantity is sent again later).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from channels.adapters import adapter_for
from channels.adapters.base import PushItem, PushOutcome
from channels.models import Channel, DirtyPair, PendingFeed, PushAttempt
from channels.propagation.base import FEED_POLL_SCHEDULE, PushReport, _Claimed, _Result, _session
from channels.propagation.outbox import _lock_pairs, channels_wake_on_commit
from channels.propagation.record import _acknowledged, _charge_attempts

logger = logging.getLogger(__name__)

POLL_LEASE = 60.0  # seconds a poller owns a feed while it asks the marketplace (longer than a request)


@dataclass
class FeedPollReport:
    """What one `feeds_poll` call did."""

    polled: int = 0
    processing: int = 0  # still in the marketplace's queue or being processed
    resolved: int = 0
    acknowledged: int = 0  # SKUs the marketplace accepted
    failed: int = 0  # SKUs refused (charged one attempt)
    dead_lettered: int = 0
    errors: int = 0  # polls that could not reach the marketplace (asked again later)


def feeds_in_flight(channel: Channel) -> dict[int, datetime]:
    """SKU ids in the channel's feeds still processing, with the latest deadline of their feeds."""
    if not adapter_for(channel).submits_feeds:
        return {}
    in_flight: dict[int, datetime] = {}
    pending = PendingFeed.objects.filter(channel=channel, status=PendingFeed.Status.PENDING)
    for submitted_at, items in pending.values_list("submitted_at", "items"):
        deadline = submitted_at + timedelta(seconds=settings.AMAZON_FEED_TIMEOUT_SECONDS)
        for item in items:
            in_flight[item["sku_id"]] = max(deadline, in_flight.get(item["sku_id"], deadline))
    return in_flight


def feed_hold(channel: Channel, claimed: list[_Claimed], report: PushReport) -> list[_Claimed]:
    """The claimed pairs that are not in a feed still processing; those wait for its result (a
    newer push sent meanwhile could land before the feed's older value). Called before pairs are
    settled, so an in-flight SKU is never settled against a value the feed has not applied yet."""
    if not claimed:
        return claimed
    in_flight = feeds_in_flight(channel)
    held = [c for c in claimed if c.sku_id in in_flight]
    if not held:
        return claimed
    # Until the latest deadline of their feeds: resolving a feed makes its pairs due at once anyway.
    until = max(max(in_flight[c.sku_id] for c in held), timezone.now())
    with transaction.atomic():
        _lock_pairs([c.pair_id for c in held])
        DirtyPair.objects.filter(id__in=[c.pair_id for c in held]).update(
            next_attempt_at=until, last_error="waiting for an in-flight feed")
    report.held += len(held)
    held_ids = {c.pair_id for c in held}
    return [c for c in claimed if c.pair_id not in held_ids]


def feeds_poll(*, channel_id: int | None = None, limit: int = 50) -> FeedPollReport:
    """Ask the marketplace once about each due pending feed (optionally of one channel) and
    record the results of those that finished."""
    report = FeedPollReport()
    now = timezone.now()
    due = PendingFeed.objects.filter(status=PendingFeed.Status.PENDING, next_poll_at__lte=now)
    if channel_id is not None:
        due = due.filter(channel_id=channel_id)
    for feed_id in list(due.order_by("next_poll_at", "id").values_list("id", flat=True)[:limit]):
        # A lease: the first poller to move next_poll_at owns this poll; another one skips it.
        if not PendingFeed.objects.filter(id=feed_id, status=PendingFeed.Status.PENDING,
                                          next_poll_at__lte=now).update(
                next_poll_at=now + timedelta(seconds=POLL_LEASE)):
            continue
        _poll(feed_id, report)
    return report


def _items(feed: PendingFeed) -> list[PushItem]:
    return [PushItem(sku=i["sku"], external_id=i["external_id"], quantity=i["quantity"],
                     attributes=i.get("attributes") or {}) for i in feed.items]


def _poll(feed_id: int, report: FeedPollReport) -> None:
    feed = PendingFeed.objects.select_related("channel").get(id=feed_id)
    channel = feed.channel
    report.polled += 1
    started, t0 = timezone.now(), time.perf_counter()
    status, outcomes, error = feed.last_status, None, ""
    try:
        status, outcomes = adapter_for(channel).feed_result(channel, _session(), feed.reference, _items(feed))
    except requests.RequestException as exc:  # asked again at the next poll (until the timeout)
        error = f"{type(exc).__name__}: {exc}"[:500]
        report.errors += 1
        logger.warning("could not poll feed %s of channel %s: %s", feed.reference, channel.slug, error)
    except Exception as exc:  # an unreadable answer or report: likewise, and logged in full
        error = f"{type(exc).__name__}: {exc}"[:500]
        report.errors += 1
        logger.exception("could not read feed %s of channel %s", feed.reference, channel.slug)
    now = timezone.now()
    expired = now >= feed.submitted_at + timedelta(seconds=settings.AMAZON_FEED_TIMEOUT_SECONDS)
    if outcomes is None and not expired:
        step = FEED_POLL_SCHEDULE[min(feed.polls, len(FEED_POLL_SCHEDULE) - 1)]
        PendingFeed.objects.filter(id=feed.id, status=PendingFeed.Status.PENDING).update(
            polls=feed.polls + 1, last_status=status[:40], next_poll_at=now + timedelta(seconds=step),
            error=error)
        report.processing += 1
        return
    if outcomes is None:
        message = (f"no result for feed {feed.reference} within {settings.AMAZON_FEED_TIMEOUT_SECONDS} s "
                   f"(last status {status or 'unknown'})")
        outcomes = [PushOutcome(sku=i["sku"], ok=False, status=None, error=message) for i in feed.items]
        final = PendingFeed.Status.EXPIRED
    elif status == "DONE":
        final = PendingFeed.Status.DONE
    else:
        final = PendingFeed.Status.FAILED
    _resolve(feed, outcomes, final, status, report, latency_ms=(time.perf_counter() - t0) * 1000, started=started)


def _resolve(feed: PendingFeed, outcomes: list[PushOutcome], final: str, status: str, report: FeedPollReport, *,
             latency_ms: float, started: datetime) -> None:
    """Record every SKU's result and resolve the feed, in one transaction (exactly once: the
    feed row is locked and must still be pending)."""
    channel = feed.channel
    by_sku = {o.sku: o for o in outcomes}
    now = timezone.now()
    with transaction.atomic():
        locked = PendingFeed.objects.select_for_update().filter(id=feed.id, status=PendingFeed.Status.PENDING).first()
        if locked is None:
            return  # resolved by another poller meanwhile
        sku_ids = [i["sku_id"] for i in feed.items]
        pairs = {p.id: p for p in DirtyPair.objects.filter(channel=channel, sku_id__in=sku_ids)}
        claimed = []
        for item in feed.items:
            by_sku.setdefault(item["sku"], PushOutcome(sku=item["sku"], ok=False, status=None,
                                                       error="no result for this SKU in the processing report"))
            pair = pairs.get(item["pair"])
            claimed.append(_Claimed(
                pair_id=item["pair"], sku_id=item["sku_id"], sku_code=item["sku"], generation=item["generation"],
                attempts=pair.attempts if pair else 0, force=False, first_error=pair.first_error if pair else "",
                first_failed_at=pair.first_failed_at if pair else None, quantity=item["quantity"],
                external_id=item["external_id"], attributes=item.get("attributes") or {}))
        _lock_pairs(sorted(set(pairs) | {c.pair_id for c in claimed}))
        ok = [c for c in claimed if by_sku[c.sku_code].ok]
        failed = [c for c in claimed if not by_sku[c.sku_code].ok]
        errors = [by_sku[c.sku_code].error for c in failed]
        PushAttempt.objects.create(
            channel=channel, purpose=PushAttempt.Purpose.FEED, started_at=started, latency_ms=round(latency_ms, 2),
            http_status=next((o.status for o in by_sku.values() if o.status is not None), None),
            outcome=(PushAttempt.Outcome.SUCCESS if not failed else
                     PushAttempt.Outcome.PARTIAL if ok else PushAttempt.Outcome.FAILED),
            sku_count=len(claimed), error=(f"feed {feed.reference}: " + (errors[0] if errors else ""))[:2000],
            items=[{"sku": c.sku_code, "quantity": c.quantity, "ok": by_sku[c.sku_code].ok,
                    **({"error": by_sku[c.sku_code].error[:300]} if not by_sku[c.sku_code].ok else {})}
                   for c in claimed])
        if ok:
            _acknowledged(channel, ok, now)
        # Pairs of these SKUs still waiting (re-marked while the feed was in flight, or held back
        # for it) are pushed now, with the newer value; refused ones get their backoff below.
        DirtyPair.objects.filter(channel=channel, sku_id__in=sku_ids).exclude(
            id__in=[c.pair_id for c in failed]).update(next_attempt_at=now)
        if failed:
            result = _Result(outcomes=by_sku, started_at=started, latency_ms=latency_ms, http_status=None,
                             rate_limited=False, retry_after=None, channel_failed=False,
                             error=errors[0] if errors else "")
            report.dead_lettered += _charge_attempts(channel, failed, result, now)
        PendingFeed.objects.filter(id=feed.id).update(
            status=final, resolved_at=now, last_status=status[:40], polls=feed.polls + 1,
            summary={"accepted": len(ok), "failed": len(failed),
                     "errors": {c.sku_code: by_sku[c.sku_code].error[:300] for c in failed[:50]}},
            error=(errors[0] if errors and final != PendingFeed.Status.DONE else "")[:2000])
        channels_wake_on_commit([channel.pk])
    report.resolved += 1
    report.acknowledged += len(ok)
    report.failed += len(failed)
    logger.info("feed %s of channel %s resolved (%s): %s accepted, %s failed", feed.reference, channel.slug, final,
                len(ok), len(failed))
