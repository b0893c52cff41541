"""The push loop: `channel_push` drains one channel's due pairs under its single-flight lock."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict

import requests
from django.db import connection
from django.db.models import Min
from django.utils import timezone

from channels.adapters import adapter_for
from channels.adapters.base import PushItem, PushOutcome
from channels.models import (
    Channel,
    DirtyPair,
)
from channels.propagation.base import (
    CHANNEL_FAILURE_STATUSES,
    CLAIM_SIZE,
    DRAIN_BUDGET,
    LOCK_TTL,
    MAX_INLINE_WAIT,
    PushReport,
    _Claimed,
    _Result,
    _session,
    _Stop,
    believed_level,
)
from channels.propagation.breaker import _circuit_gate, _circuit_open_now
from channels.propagation.budget import budget_hold, budget_policy, budget_refund, budget_spend
from channels.propagation.feeds import feed_hold
from channels.propagation.outbox import (
    _settle_without_sending,
)
from channels.propagation.quantity import _AVAILABLE, _ELIGIBLE, _tables, buffered_quantity, channel_quantities
from channels.propagation.record import (
    _fence_issue,
    _record,
)
from channels.ratelimit import push_lock, ratelimit_acquire
from core.sql import sql_compose

logger = logging.getLogger(__name__)


def channel_push(*, channel_id: int, budget: float = DRAIN_BUDGET) -> PushReport:
    """Drain the channel's due dirty pairs. Single-flight per channel: returns `busy` at once if
    another worker holds the channel's push lock (that worker re-checks for due pairs after it
    releases the lock, so no wake-up is lost)."""
    report = PushReport()
    deadline = time.monotonic() + budget
    while True:
        lock = push_lock(channel_id=channel_id, ttl=LOCK_TTL)
        if not lock.acquire(blocking=False):
            report.busy = True
            return report
        try:
            _drain(channel_id, lock, report, deadline, fence=_fence_issue(channel_id))
        except _Stop:
            pass
        finally:
            try:
                lock.release()
            except Exception:  # expired: another worker may already hold it; nothing to undo
                logger.warning("push lock for channel %s expired before release", channel_id)
        # A task that found the lock busy while we held it has exited: look again after release.
        if report.wake_in is not None or time.monotonic() > deadline or not _has_due(channel_id):
            return report


def _has_due(channel_id: int) -> bool:
    return DirtyPair.objects.filter(channel_id=channel_id, next_attempt_at__lte=timezone.now()).exists()


def _next_due_in(channel_id: int) -> float | None:
    nxt = DirtyPair.objects.filter(channel_id=channel_id).aggregate(at=Min("next_attempt_at"))["at"]
    if nxt is None:
        return None
    return max((nxt - timezone.now()).total_seconds(), 0.0)



def _drain(channel_id: int, lock, report: PushReport, deadline: float, *, fence: int) -> None:
    while True:
        channel = Channel.objects.filter(pk=channel_id).first()
        if channel is None or not channel.active or not channel.push_enabled:
            return  # pairs stay dirty; re-enabling the channel marks everything again
        probe = _circuit_gate(channel, report)
        claimed = _claim(channel, timezone.now())
        if not claimed:
            report.wake_in = _next_due_in(channel_id)
            return
        claimed_count = len(claimed)
        # SKUs in a feed still processing wait for its result (Amazon), before anything is settled.
        claimed = feed_hold(channel, claimed, report)
        listings = {c.sku_id: {"external_id": c.external_id, "attributes": c.attributes}
                    for c in claimed if c.external_id is not None}
        # Nothing to send: the channel already shows this quantity, or the listing is gone.
        settled = [c for c in claimed
                   if c.sku_id not in listings or (not c.force and c.last_pushed == c.quantity)]
        _settle_without_sending(settled)
        report.skipped += len(settled)
        settled_ids = {c.pair_id for c in settled}
        to_send = [c for c in claimed if c.pair_id not in settled_ids]
        # A per-listing daily quota (eBay revisions) may hold some back; see propagation.budget.
        to_send = budget_hold(channel, to_send, report)
        policy = budget_policy(channel)
        for batch in _batches(channel, to_send, listings):
            if time.monotonic() > deadline:
                report.wake_in = 0.0
                raise _Stop
            _wait_for_token(channel, report)
            try:
                lock.reacquire()  # still ours? (if it expired, someone else may be sending: stop)
            except Exception:
                logger.warning("lost the push lock for channel %s; stopping this drain", channel_id)
                raise _Stop from None
            # Computed again now, after any rate-limit wait: the newest committed stock is sent.
            fresh = channel_quantities(channel=channel, sku_ids=[c.sku_id for c in batch])
            for c in batch:
                c.quantity = fresh.get(c.sku_id, c.quantity)
            if policy is not None:  # counted before the request: a lost answer may still have revised
                budget_spend(channel, policy, batch, timezone.now())
            result = _send(channel, batch, listings)
            if policy is not None:
                budget_refund(channel, policy, batch, result, timezone.now())
            if not _record(channel, batch, result, report, probe=probe, fence=fence):
                raise _Stop
            if result.rate_limited:
                report.wake_in = result.retry_after
                raise _Stop
            if result.channel_failed and (probe or _circuit_open_now(channel_id)):
                report.wake_in = channel.circuit_cooldown_seconds
                raise _Stop
            if probe:
                probe = False  # the probe succeeded: the circuit is closed again
        if claimed_count < _claim_size(channel):
            # Everything due was handled. Failures scheduled retries: say when to come back.
            # (Pairs re-marked while in flight are found by channel_push's check after release.)
            if report.failed:
                report.wake_in = _next_due_in(channel_id)
            return



_CLAIM_SQL = """
    WITH due AS (
        SELECT d.id, d.sku_id, d.generation, d.attempts, d.force, d.first_error, d.first_failed_at, d.next_attempt_at
        FROM {pair} d
        WHERE d.channel_id = %(channel)s AND d.next_attempt_at <= %(now)s
        ORDER BY d.next_attempt_at, d.id
        LIMIT %(limit)s
    ), """ + _ELIGIBLE + """
    SELECT due.id, due.sku_id, s.code, due.generation, due.attempts, due.force, due.first_error,
           due.first_failed_at, s.safety_stock, s.active, """ + _AVAILABLE + """ AS available,
           st.last_pushed, li.external_id, li.attributes, st.last_pushed_at, st.last_seen, st.last_seen_at,
           li.updated_at
    FROM due
    JOIN {sku} s ON s.id = due.sku_id
    LEFT JOIN {state} st ON st.channel_id = %(channel)s AND st.sku_id = due.sku_id
    LEFT JOIN {listing} li ON li.channel_id = %(channel)s AND li.sku_id = due.sku_id
    ORDER BY due.next_attempt_at, due.id  -- the oldest mark first: the joins above need not keep the order of due
"""  # noqa: S608 - a template for core.sql.sql_compose: {names} are quoted identifiers, values parameters


def _claim_size(channel: Channel) -> int:
    """Pairs read per drain round: CLAIM_SIZE, or the adapter's largest batch when it is larger
    (BigCommerce takes 2,000 per request: a round of 500 would never fill one)."""
    return max(CLAIM_SIZE, adapter_for(channel).max_batch)


def _claim(channel: Channel, now) -> list[_Claimed]:
    """Due pairs with everything needed to push them, in one statement. Its single snapshot reads
    each pair's generation and the stock together, so the quantity computed is at least as new
    as the mark read (a change committed later bumps the generation and is pushed again)."""
    with connection.cursor() as cursor:
        cursor.execute(sql_compose(_CLAIM_SQL, **_tables()),
                       {"channel": channel.pk, "now": now, "limit": _claim_size(channel)})
        rows = cursor.fetchall()
    claimed = []
    for (pair_id, sku_id, code, generation, attempts, force, first_error, first_failed_at, safety, active,
         available, last_pushed, external_id, attributes, last_pushed_at, last_seen, last_seen_at,
         listing_updated_at) in rows:
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        claimed.append(_Claimed(
            pair_id=pair_id, sku_id=sku_id, sku_code=code, generation=generation, attempts=attempts, force=force,
            first_error=first_error, first_failed_at=first_failed_at,
            quantity=buffered_quantity(available=int(available) if active else 0, safety_stock=safety,
                                       buffer_type=channel.buffer_type, buffer_value=channel.buffer_value,
                                       zero_below=channel.zero_below, max_quantity=channel.max_quantity),
            last_pushed=last_pushed, external_id=external_id, attributes=attributes or {},
            change_from=believed_level(last_pushed=last_pushed, last_pushed_at=last_pushed_at, last_seen=last_seen,
                                       last_seen_at=last_seen_at, listing_updated_at=listing_updated_at)))
    return claimed


def _batches(channel: Channel, pairs: list[_Claimed], listings: dict) -> list[list[_Claimed]]:
    adapter = adapter_for(channel)
    wanted = channel.settings.get("max_batch") if isinstance(channel.settings, dict) else None
    key = getattr(adapter, "batch_key", None)
    groups: dict[str, list[_Claimed]] = defaultdict(list)
    for c in pairs:
        listing = listings[c.sku_id]
        groups[key(_item(c, listing)) if key else ""].append(c)
    out = []
    for group in groups.values():
        # The adapter's size for this many (Amazon: one feed when many SKUs changed at once).
        size = max(adapter.batch_size(channel, len(group)), 1)
        if isinstance(wanted, int) and wanted > 0:
            size = min(size, wanted)
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out


def _item(c: _Claimed, listing: dict) -> PushItem:
    # The attempt key names the outbox mark this push answers (pair, generation): a retry of the
    # same mark reuses it (an idempotent replay), a newer mark or a forced re-queue gets a new one.
    return PushItem(sku=c.sku_code, external_id=listing["external_id"], quantity=c.quantity,
                    attributes=listing["attributes"] or {}, change_from=c.change_from,
                    attempt_key=f"{c.pair_id}.{c.generation}" if c.pair_id else "")


def _wait_for_token(channel: Channel, report: PushReport) -> None:
    rate, burst = adapter_for(channel).rate_limit(channel)  # the channel's, or the marketplace's if stricter
    while True:
        wait = ratelimit_acquire(channel_id=channel.pk, rate=rate, burst=burst)
        if wait <= 0:
            return
        if wait > MAX_INLINE_WAIT:
            report.wake_in = wait
            raise _Stop
        time.sleep(wait)



def _send(channel: Channel, batch: list[_Claimed], listings: dict) -> _Result:
    """One request to the marketplace. Never raises: transport errors and adapter errors become
    failed outcomes for every item of the batch."""
    items = [_item(c, listings[c.sku_id]) for c in batch]
    started = timezone.now()
    t0 = time.perf_counter()
    try:
        outcomes = adapter_for(channel).push(channel, _session(), items)
    except requests.RequestException as exc:
        outcomes = [PushOutcome(sku=i.sku, ok=False, status=None, error=f"{type(exc).__name__}: {exc}"[:500])
                    for i in items]
    except Exception as exc:  # a bug or a misconfigured channel must not kill the drain silently
        logger.exception("adapter %s failed for channel %s", channel.kind, channel.slug)
        outcomes = [PushOutcome(sku=i.sku, ok=False, status=None, error=f"{type(exc).__name__}: {exc}"[:500])
                    for i in items]
    latency_ms = (time.perf_counter() - t0) * 1000
    by_sku = {o.sku: o for o in outcomes}
    for i in items:
        by_sku.setdefault(i.sku, PushOutcome(sku=i.sku, ok=False, status=None, error="no result for this item"))
    # Accepted for later (a feed) or waiting for a daily quota: not failures of this request.
    failures = [o for o in by_sku.values() if not o.ok and not o.pending and not o.limit_reached]
    statuses = [o.status for o in by_sku.values()]
    rate_limited = any(o.status == 429 for o in failures)
    retry_after = max((o.retry_after or 0.0 for o in failures if o.status == 429), default=0.0)
    channel_failed = not rate_limited and any(
        o.status is None or o.status >= 500 or o.status in CHANNEL_FAILURE_STATUSES for o in failures)
    return _Result(
        outcomes=by_sku, started_at=started, latency_ms=latency_ms,
        http_status=next((s for s in statuses if s is not None), None),
        rate_limited=rate_limited, retry_after=retry_after if rate_limited else None,
        channel_failed=channel_failed, error=failures[0].error if failures else "",
    )
