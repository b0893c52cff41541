"""Propagation: every channel learns its sellable quantity fast, in order, and no failure is silent.

Flow
1. A stock change marks the affected (channel, SKU) pairs dirty *in its own transaction*
   (`DirtyPair`, the outbox) and enqueues one push task per channel on commit. A crash between
   commit and enqueue loses nothing: the sweeper finds the due rows.
2. `channel_push` drains one channel under a per-channel single-flight lock (Redis). For each
   claimed pair it reads the pair's `generation`, *then* computes the quantity from committed
   stock, so what it sends is at least as new as the mark it read. Pairs whose quantity equals the
   last pushed value are settled without a request (a 1,000-sale burst collapses to a handful of
   pushes carrying the latest value). The rest go in the adapter's largest batch.
3. After the acknowledgement a pair is deleted only if its generation is unchanged; otherwise a
   newer change arrived meanwhile and the pair is pushed again. Because only one push per channel
   is ever in flight and quantities are computed at send time, an older quantity can never be
   delivered after a newer one.
4. Failures retry with exponential backoff and full jitter, scheduled in `next_attempt_at` (never a
   long Celery countdown); after the channel's last attempt the pair becomes a `DeadLetter`. A
   per-channel circuit breaker stops burning attempts while a channel is down. Every request is
   audited (`PushAttempt`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.db import connection, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from channels.adapters import adapter_for
from channels.adapters.base import ChannelAdapter, PushItem, PushOutcome
from channels.adapters.http import TimeoutSession
from channels.models import (
    Channel,
    ChannelDrift,
    ChannelListing,
    ChannelSkuState,
    DeadLetter,
    DirtyPair,
    PushAttempt,
)
from channels.ratelimit import push_lock, ratelimit_acquire, ratelimit_block, wake_claim
from core.errors import Conflict, ValidationFailed
from inventory.hooks import StockChange
from inventory.models import Location, Sku, StockPosition

logger = logging.getLogger(__name__)

CLAIM_SIZE = 500  # pairs read per drain round; batches are cut from them
LOCK_TTL = 60.0  # seconds; > connect+read timeouts of one request, extended after every request
MAX_INLINE_WAIT = 2.0  # rate-limit waits up to this are slept; longer ones end the drain
DRAIN_BUDGET = 30.0  # seconds one task drains before handing over (far below the task time limit)
CHANNEL_FAILURE_STATUSES = {401, 403, 408}  # plus no answer and 5xx: the channel, not the item


# ------------------------------------------------------------------------------ quantity


def buffered_quantity(*, available: int, safety_stock: int, buffer_type: str, buffer_value: int) -> int:
    """What a channel may sell: available minus safety stock, minus the channel buffer, >= 0.

    A percent buffer holds back ceil(p% of what is left after safety stock): rounding toward
    holding back, because overselling costs more than one unsold unit.
    """
    base = max(available - safety_stock, 0)
    held = math.ceil(base * buffer_value / 100) if buffer_type == Channel.BufferType.PERCENT else buffer_value
    return max(base - held, 0)


def _tables() -> dict:
    return {"pair": DirtyPair._meta.db_table, "sku": Sku._meta.db_table, "loc": Location._meta.db_table,
            "pos": StockPosition._meta.db_table, "cl": Channel.locations.through._meta.db_table,
            "state": ChannelSkuState._meta.db_table, "listing": ChannelListing._meta.db_table}


# Where a channel's quantity comes from: its `locations`, or every location when it names none;
# inactive locations never count. Shared by every quantity query below.
_ELIGIBLE = """
    eligible AS (
        SELECT l.id FROM {loc} l
        WHERE l.active AND (NOT EXISTS (SELECT 1 FROM {cl} x WHERE x.channel_id = %(channel)s)
                            OR l.id IN (SELECT x.location_id FROM {cl} x WHERE x.channel_id = %(channel)s)))
"""
_AVAILABLE = """COALESCE((SELECT SUM(GREATEST(p.on_hand - p.reserved, 0)) FROM {pos} p
                         WHERE p.sku_id = s.id AND p.location_id IN (SELECT id FROM eligible)), 0)"""


_QUANTITY_SQL = ("WITH " + _ELIGIBLE + " SELECT s.id, s.safety_stock, s.active, " + _AVAILABLE  # noqa: S608
                 + " FROM {sku} s WHERE s.id = ANY(%(skus)s)")  # table names from model metadata only


def channel_quantities(*, channel: Channel, sku_ids: Iterable[int]) -> dict[int, int]:
    """The quantity each SKU should show on the channel now, in one query for any number of SKUs.
    An inactive SKU shows 0."""
    sku_ids = sorted(set(sku_ids))
    if not sku_ids:
        return {}
    sql = _QUANTITY_SQL.format(**_tables())
    with connection.cursor() as cursor:
        cursor.execute(sql, {"channel": channel.pk, "skus": sku_ids})
        rows = cursor.fetchall()
    return {sku_id: buffered_quantity(available=int(available) if active else 0, safety_stock=safety,
                                      buffer_type=channel.buffer_type, buffer_value=channel.buffer_value)
            for sku_id, safety, active, available in rows}


# ------------------------------------------------------------------------------ marking (the outbox)


def pairs_mark_dirty(*, sku_ids: Iterable[int], location_ids: Iterable[int] | None = None,
                     channel_ids: Iterable[int] | None = None, force: bool = False) -> list[int]:
    """Mark (channel, SKU) pairs dirty for every push-enabled channel listing these SKUs, in the
    caller's transaction, in one statement. With `location_ids`, channels whose eligible
    locations exclude all of them are skipped (their quantity cannot have changed).
    `force` sends the pair even if its quantity equals the last pushed value. Rows are upserted in
    (channel, sku) order so concurrent markers never deadlock. Returns the channel ids marked."""
    sku_ids = sorted(set(sku_ids))
    if not sku_ids:
        return []
    through = Channel.locations.through._meta.db_table
    params = {"skus": sku_ids, "force": force,
              "locs": sorted(set(location_ids)) if location_ids is not None else None,
              "channels": sorted(set(channel_ids)) if channel_ids is not None else None}
    sql = f"""
        INSERT INTO {DirtyPair._meta.db_table}
            (channel_id, sku_id, generation, force, marked_at, next_attempt_at, attempts,
             first_error, last_error)
        SELECT l.channel_id, l.sku_id, 1, %(force)s, clock_timestamp(), clock_timestamp(), 0, '', ''
        FROM {ChannelListing._meta.db_table} l
        JOIN {Channel._meta.db_table} c ON c.id = l.channel_id
        WHERE l.sku_id = ANY(%(skus)s) AND c.active AND c.push_enabled
          AND (%(channels)s::bigint[] IS NULL OR l.channel_id = ANY(%(channels)s::bigint[]))
          AND (%(locs)s::bigint[] IS NULL
               OR NOT EXISTS (SELECT 1 FROM {through} cl WHERE cl.channel_id = c.id)
               OR EXISTS (SELECT 1 FROM {through} cl
                          WHERE cl.channel_id = c.id AND cl.location_id = ANY(%(locs)s::bigint[])))
        ORDER BY l.channel_id, l.sku_id
        ON CONFLICT (channel_id, sku_id) DO UPDATE SET
            generation = {DirtyPair._meta.db_table}.generation + 1,
            force = {DirtyPair._meta.db_table}.force OR EXCLUDED.force,
            next_attempt_at = CASE WHEN EXCLUDED.force
                THEN LEAST({DirtyPair._meta.db_table}.next_attempt_at, EXCLUDED.next_attempt_at)
                ELSE {DirtyPair._meta.db_table}.next_attempt_at END
        RETURNING channel_id
    """  # noqa: S608 - table names come from model metadata; values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sorted({row[0] for row in cursor.fetchall()})


class _ChannelWake:
    """What `enqueue_on_commit` sends after commit: a push task for each channel that has none
    queued yet (`wake_claim` debounces a burst of commits into a handful of tasks)."""

    name = "channels.push_channel"

    def apply_async(self, args=(), kwargs=None):
        from channels.tasks import channel_push_task

        (channel_ids,) = args
        for channel_id, wanted in zip(channel_ids, wake_claim(channel_ids), strict=True):
            if wanted:
                channel_push_task.apply_async(args=[channel_id])


_CHANNEL_WAKE = _ChannelWake()


def channels_wake_on_commit(channel_ids: Iterable[int]) -> None:
    """Wake the channels' push tasks once the transaction commits (nothing leaves before commit).
    Losing this message loses nothing: the outbox rows are committed and the sweeper finds them."""
    from core.oncommit import enqueue_on_commit

    channel_ids = sorted(set(channel_ids))
    if channel_ids:
        enqueue_on_commit(_CHANNEL_WAKE, channel_ids)


def outbox_on_stock_change(change: StockChange) -> None:
    """Stock-change reaction (settings.STOCK_CHANGE_REACTIONS, last): mark the affected pairs
    dirty in the stock transaction (one ordered statement) and wake their channels' push tasks
    on commit."""
    positions = change.positions
    if not positions:
        return
    channel_ids = pairs_mark_dirty(sku_ids={p.sku_id for p in positions},
                                   location_ids={p.location_id for p in positions})
    channels_wake_on_commit(channel_ids)


def channel_mark_all(*, channel: Channel, force: bool = False) -> int:
    """Mark every listing of the channel dirty (config change, reconnect, operator re-push)."""
    sku_ids = list(ChannelListing.objects.filter(channel=channel).values_list("sku_id", flat=True))
    marked = pairs_mark_dirty(sku_ids=sku_ids, channel_ids=[channel.pk], force=force)
    channels_wake_on_commit(marked)
    return len(sku_ids) if marked else 0


# ------------------------------------------------------------------------------ backoff


def backoff_delay(*, attempt: int, base: float, cap: float, rand=random.random) -> float:
    """Seconds to wait after the `attempt`-th failure: full jitter, uniform in
    [0, min(cap, base * 2 ** (attempt - 1))] (spreads retries of many pairs/workers apart)."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return rand() * ceiling


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


class _Stop(Exception):  # noqa: N818 - control flow inside the drain
    pass


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


def _fence_issue(channel_id: int) -> int:
    """A fencing token for the push lock just acquired: strictly increasing per channel, issued by
    the database that will check it. The Redis lock can expire under a stalled holder; the token
    makes sure only the newest holder records results (see `_record`)."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Channel._meta.db_table} SET push_fence = push_fence + 1 "  # noqa: S608
                       "WHERE id = %s RETURNING push_fence", [channel_id])
        row = cursor.fetchone()
    return row[0] if row else 0


def _fence_holds(channel_id: int, fence: int) -> bool:
    """Inside the recording transaction: lock the channel row and check our token is the newest."""
    return Channel.objects.select_for_update(of=("self",)).filter(pk=channel_id, push_fence=fence).exists()


def _fenced_out(channel: Channel, batch: list[_Claimed], result: _Result) -> None:
    """A newer holder took the channel while our request was in flight: what we delivered may be
    older than what it delivered. Record nothing as pushed; re-mark the pairs (forced) so the
    current quantity is sent again after ours."""
    PushAttempt.objects.create(
        channel=channel, purpose=PushAttempt.Purpose.PUSH, started_at=result.started_at,
        latency_ms=round(result.latency_ms, 2), http_status=result.http_status, outcome=PushAttempt.Outcome.FAILED,
        sku_count=len(batch), error="fenced: a newer push took over this channel; re-queued",
        items=[{"sku": c.sku_code, "quantity": c.quantity, "ok": result.outcomes[c.sku_code].ok} for c in batch])
    marked = pairs_mark_dirty(sku_ids=[c.sku_id for c in batch], channel_ids=[channel.pk], force=True)
    channels_wake_on_commit(marked)
    logger.warning("push to channel %s fenced out (lock lost mid-request); %s pair(s) re-queued",
                   channel.slug, len(batch))


def _lock_pairs(pair_ids: list[int]) -> None:
    """Lock outbox rows in (channel, sku) order, the order stock transactions mark them in, before
    a push-side statement changes several (one unordered DELETE could deadlock with a marker)."""
    if not pair_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {DirtyPair._meta.db_table} WHERE id = ANY(%s) "  # noqa: S608
                       "ORDER BY channel_id, sku_id FOR UPDATE", [sorted(pair_ids)])


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
        listings = {c.sku_id: {"external_id": c.external_id, "attributes": c.attributes}
                    for c in claimed if c.external_id is not None}
        # Nothing to send: the channel already shows this quantity, or the listing is gone.
        settled = [c for c in claimed
                   if c.sku_id not in listings or (not c.force and c.last_pushed == c.quantity)]
        _settle_without_sending(settled)
        report.skipped += len(settled)
        settled_ids = {c.pair_id for c in settled}
        to_send = [c for c in claimed if c.pair_id not in settled_ids]
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
            result = _send(channel, batch, listings)
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
        if len(claimed) < CLAIM_SIZE:
            # Everything due was handled. Failures scheduled retries: say when to come back.
            # (Pairs re-marked while in flight are found by channel_push's check after release.)
            if report.failed:
                report.wake_in = _next_due_in(channel_id)
            return


def _circuit_gate(channel: Channel, report: PushReport) -> bool:
    """Closed: go. Open and cooling down: stop (pairs wait, no attempt is burnt). Cool-down over:
    half-open, and the next request is the one probe that decides. Returns True for a probe."""
    if channel.circuit_state == Channel.Circuit.CLOSED:
        return False
    opened = channel.circuit_opened_at or timezone.now()
    reopen_at = opened + timedelta(seconds=channel.circuit_cooldown_seconds)
    now = timezone.now()
    if channel.circuit_state == Channel.Circuit.OPEN and now < reopen_at:
        report.wake_in = (reopen_at - now).total_seconds()
        raise _Stop
    if channel.circuit_state == Channel.Circuit.OPEN:
        Channel.objects.filter(pk=channel.pk, circuit_state=Channel.Circuit.OPEN).update(
            circuit_state=Channel.Circuit.HALF_OPEN)
        channel.circuit_state = Channel.Circuit.HALF_OPEN
    return True


def _circuit_open_now(channel_id: int) -> bool:
    return Channel.objects.filter(pk=channel_id, circuit_state=Channel.Circuit.OPEN).exists()


_CLAIM_SQL = """
    WITH due AS (
        SELECT d.id, d.sku_id, d.generation, d.attempts, d.force, d.first_error, d.first_failed_at
        FROM {pair} d
        WHERE d.channel_id = %(channel)s AND d.next_attempt_at <= %(now)s
        ORDER BY d.next_attempt_at, d.id
        LIMIT %(limit)s
    ), """ + _ELIGIBLE + """
    SELECT due.id, due.sku_id, s.code, due.generation, due.attempts, due.force, due.first_error,
           due.first_failed_at, s.safety_stock, s.active, """ + _AVAILABLE + """ AS available,
           st.last_pushed, li.external_id, li.attributes
    FROM due
    JOIN {sku} s ON s.id = due.sku_id
    LEFT JOIN {state} st ON st.channel_id = %(channel)s AND st.sku_id = due.sku_id
    LEFT JOIN {listing} li ON li.channel_id = %(channel)s AND li.sku_id = due.sku_id
"""  # noqa: S608 - table names come from model metadata; values are parameters


def _claim(channel: Channel, now) -> list[_Claimed]:
    """Due pairs with everything needed to push them, in one statement. Its single snapshot reads
    each pair's generation and the stock together, so the quantity computed is at least as new
    as the mark read (a change committed later bumps the generation and is pushed again)."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL.format(**_tables()), {"channel": channel.pk, "now": now, "limit": CLAIM_SIZE})
        rows = cursor.fetchall()
    claimed = []
    for (pair_id, sku_id, code, generation, attempts, force, first_error, first_failed_at, safety, active,
         available, last_pushed, external_id, attributes) in rows:
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        claimed.append(_Claimed(
            pair_id=pair_id, sku_id=sku_id, sku_code=code, generation=generation, attempts=attempts, force=force,
            first_error=first_error, first_failed_at=first_failed_at,
            quantity=buffered_quantity(available=int(available) if active else 0, safety_stock=safety,
                                       buffer_type=channel.buffer_type, buffer_value=channel.buffer_value),
            last_pushed=last_pushed, external_id=external_id, attributes=attributes or {}))
    return claimed


def _settle_without_sending(pairs: list[_Claimed]) -> int:
    """The channel shows this quantity now (or the listing is gone): delete the outbox rows,
    except those re-marked since we read them. Returns how many were deleted."""
    if not pairs:
        return 0
    condition = Q()
    for c in pairs:
        condition |= Q(id=c.pair_id, generation=c.generation)
    with transaction.atomic():
        _lock_pairs([c.pair_id for c in pairs])
        deleted, _ = DirtyPair.objects.filter(condition).delete()
    return deleted


def _batches(channel: Channel, pairs: list[_Claimed], listings: dict) -> list[list[_Claimed]]:
    adapter = adapter_for(channel)
    size = adapter.max_batch
    wanted = channel.settings.get("max_batch") if isinstance(channel.settings, dict) else None
    if isinstance(wanted, int) and wanted > 0:
        size = min(size, wanted)
    key = getattr(adapter, "batch_key", None)
    groups: dict[str, list[_Claimed]] = defaultdict(list)
    for c in pairs:
        listing = listings[c.sku_id]
        groups[key(_item(c, listing)) if key else ""].append(c)
    out = []
    for group in groups.values():
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out


def _item(c: _Claimed, listing: dict) -> PushItem:
    return PushItem(sku=c.sku_code, external_id=listing["external_id"], quantity=c.quantity,
                    attributes=listing["attributes"] or {})


def _wait_for_token(channel: Channel, report: PushReport) -> None:
    while True:
        wait = ratelimit_acquire(channel_id=channel.pk, rate=channel.rate_limit_per_second,
                                 burst=channel.rate_limit_burst)
        if wait <= 0:
            return
        if wait > MAX_INLINE_WAIT:
            report.wake_in = wait
            raise _Stop
        time.sleep(wait)


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
    failures = [o for o in by_sku.values() if not o.ok]
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


def _record(channel: Channel, batch: list[_Claimed], result: _Result, report: PushReport, *, probe: bool,
            fence: int) -> bool:
    """Write the outcome of one request: audit row, last-pushed state, outbox rows, retries,
    dead letters and channel health, in one transaction. Returns False when fenced out (a newer
    push-lock holder exists): then nothing is recorded as pushed and the drain must stop."""
    now = timezone.now()
    ok = [c for c in batch if result.outcomes[c.sku_code].ok]
    failed = [c for c in batch if not result.outcomes[c.sku_code].ok]
    if result.rate_limited:
        outcome = PushAttempt.Outcome.RATE_LIMITED
    elif not failed:
        outcome = PushAttempt.Outcome.SUCCESS
    elif ok:
        outcome = PushAttempt.Outcome.PARTIAL
    else:
        outcome = PushAttempt.Outcome.FAILED
    report.requests += 1
    report.pushed += len(ok)
    if not failed:
        if _record_success(channel, batch, result, now, probe=probe, fence=fence):
            return True
        with transaction.atomic():
            _fenced_out(channel, batch, result)
        return False
    with transaction.atomic():
        if not _fence_holds(channel.pk, fence):
            _fenced_out(channel, batch, result)
            return False
        _lock_pairs([c.pair_id for c in batch])
        PushAttempt.objects.create(
            channel=channel, purpose=PushAttempt.Purpose.PROBE if probe else PushAttempt.Purpose.PUSH,
            started_at=result.started_at, latency_ms=round(result.latency_ms, 2), http_status=result.http_status,
            outcome=outcome, sku_count=len(batch), error=result.error[:2000],
            items=[{"sku": c.sku_code, "quantity": c.quantity, "ok": result.outcomes[c.sku_code].ok,
                    **({"error": result.outcomes[c.sku_code].error[:300]}
                       if not result.outcomes[c.sku_code].ok else {})} for c in batch],
        )
        if ok:
            _acknowledged(channel, ok, now)
        if result.rate_limited:
            # The marketplace said "slow down": not the items' fault, no attempt is charged.
            wait = result.retry_after or backoff_delay(attempt=1, base=channel.retry_base_delay,
                                                       cap=channel.retry_max_delay)
            ratelimit_block(channel_id=channel.pk, seconds=wait)
            DirtyPair.objects.filter(id__in=[c.pair_id for c in failed]).update(
                next_attempt_at=now + timedelta(seconds=wait), last_error=f"rate limited: {result.error}"[:2000])
            result.retry_after = wait
            Channel.objects.filter(pk=channel.pk).update(last_error=f"rate limited: {result.error}"[:2000])
        elif failed:
            if probe and result.channel_failed:
                # The channel is still down: the probe's pairs wait again, attempts intact.
                DirtyPair.objects.filter(id__in=[c.pair_id for c in failed]).update(last_error=result.error[:2000])
            else:
                report.dead_lettered += _charge_attempts(channel, failed, result, now)
            report.failed += len(failed)
        _health(channel, result, now, probe=probe)
    return True


_SUCCESS_SQL = """
    WITH fence AS (
        SELECT id FROM {channel} WHERE id = %(channel)s AND push_fence = %(fence)s FOR UPDATE
    ), locked AS (
        SELECT d.id FROM {pair} d WHERE d.id = ANY(%(pairs)s::bigint[]) AND EXISTS (SELECT 1 FROM fence)
        ORDER BY d.channel_id, d.sku_id FOR UPDATE
    ), attempt AS (
        INSERT INTO {attempt} (channel_id, purpose, started_at, latency_ms, http_status, outcome, items, sku_count,
                               error)
        VALUES (%(channel)s, %(purpose)s, %(started)s, %(latency)s, %(status)s, 'success', %(items)s::jsonb,
                %(count)s, '')
        RETURNING id
    ), state AS (
        INSERT INTO {state} (channel_id, sku_id, last_pushed, last_pushed_at)
        SELECT %(channel)s, u.sku_id, u.qty, %(now)s
        FROM unnest(%(skus)s::bigint[], %(qtys)s::bigint[]) AS u(sku_id, qty)
        WHERE EXISTS (SELECT 1 FROM fence)
        ON CONFLICT (channel_id, sku_id) DO UPDATE
            SET last_pushed = EXCLUDED.last_pushed, last_pushed_at = EXCLUDED.last_pushed_at
        RETURNING 1
    ), settled AS (
        DELETE FROM {pair} d USING unnest(%(pairs)s::bigint[], %(gens)s::bigint[]) AS g(id, gen)
        WHERE d.id = g.id AND d.generation = g.gen AND d.id IN (SELECT id FROM locked)
        RETURNING d.id
    ), remarked AS (
        UPDATE {pair} d SET attempts = 0, force = false, first_error = '', last_error = '', first_failed_at = NULL
        WHERE d.id IN (SELECT id FROM locked) AND d.id NOT IN (SELECT id FROM settled)
        RETURNING d.id
    ), superseded AS (
        UPDATE {dead} SET status = 'superseded', resolved_at = %(now)s, resolved_by = 'propagation',
                          resolution_note = 'a later push of this SKU succeeded'
        WHERE channel_id = %(channel)s AND sku_id = ANY(%(skus)s::bigint[]) AND status = 'open'
          AND EXISTS (SELECT 1 FROM fence)
        RETURNING id
    )
    UPDATE {channel} SET last_success_at = %(now)s, consecutive_failures = 0, circuit_state = 'closed',
                         circuit_opened_at = NULL, last_error = ''
    WHERE id IN (SELECT id FROM fence)
    RETURNING id
"""


def _record_success(channel: Channel, batch: list[_Claimed], result: _Result, now, *, probe: bool,
                    fence: int) -> bool:
    """The common case, every item acknowledged, in one atomic statement (the hot path of a
    fan-out: fence check, audit row, last-pushed state, compare-and-delete of the outbox rows in
    (channel, sku) lock order, superseded dead letters, channel health). Same effects as the
    general path in `_record`. Returns False, having recorded only the audit row, when fenced out."""
    sql = _SUCCESS_SQL.format(attempt=PushAttempt._meta.db_table, state=ChannelSkuState._meta.db_table,
                              pair=DirtyPair._meta.db_table, dead=DeadLetter._meta.db_table,
                              channel=Channel._meta.db_table)
    params = {
        "channel": channel.pk, "purpose": PushAttempt.Purpose.PROBE if probe else PushAttempt.Purpose.PUSH,
        "started": result.started_at, "latency": round(result.latency_ms, 2), "status": result.http_status,
        "items": json.dumps([{"sku": c.sku_code, "quantity": c.quantity, "ok": True} for c in batch]),
        "count": len(batch), "now": now, "skus": [c.sku_id for c in batch], "qtys": [c.quantity for c in batch],
        "pairs": [c.pair_id for c in batch], "gens": [c.generation for c in batch], "fence": fence,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def _acknowledged(channel: Channel, ok: list[_Claimed], now) -> None:
    ChannelSkuState.objects.bulk_create(
        [ChannelSkuState(channel=channel, sku_id=c.sku_id, last_pushed=c.quantity, last_pushed_at=now) for c in ok],
        update_conflicts=True, unique_fields=["channel", "sku"], update_fields=["last_pushed", "last_pushed_at"],
    )
    if _settle_without_sending(ok) < len(ok):
        # Still present = re-marked while in flight: push again soon, with a clean slate.
        DirtyPair.objects.filter(id__in=[c.pair_id for c in ok]).update(
            attempts=0, force=False, first_error="", last_error="", first_failed_at=None)
    DeadLetter.objects.filter(channel=channel, sku_id__in=[c.sku_id for c in ok],
                              status=DeadLetter.Status.OPEN).update(
        status=DeadLetter.Status.SUPERSEDED, resolved_at=now, resolved_by="propagation",
        resolution_note="a later push of this SKU succeeded")


def _charge_attempts(channel: Channel, failed: list[_Claimed], result: _Result, now) -> int:
    """One more failed attempt for each pair: schedule its retry, or dead-letter it after the
    channel's last attempt. Returns how many were dead-lettered."""
    dead = 0
    updates = []
    for c in failed:
        error = result.outcomes[c.sku_code].error or result.error
        attempts = c.attempts + 1
        if attempts >= channel.retry_max_attempts:
            _dead_letter(channel, c, attempts, error, now)
            dead += 1
            continue
        delay = backoff_delay(attempt=attempts, base=channel.retry_base_delay, cap=channel.retry_max_delay)
        updates.append(DirtyPair(id=c.pair_id, attempts=attempts, next_attempt_at=now + timedelta(seconds=delay),
                                 last_error=error[:2000], first_error=(c.first_error or error)[:2000],
                                 first_failed_at=c.first_failed_at or now))
    if updates:
        DirtyPair.objects.bulk_update(updates, ["attempts", "next_attempt_at", "last_error", "first_error",
                                                "first_failed_at"])
    return dead


def _dead_letter(channel: Channel, c: _Claimed, attempts: int, error: str, now) -> None:
    existing = DeadLetter.objects.select_for_update().filter(
        channel=channel, sku_id=c.sku_id, status=DeadLetter.Status.OPEN).first()
    if existing:
        existing.quantity, existing.last_error, existing.last_failed_at = c.quantity, error[:2000], now
        existing.attempts += attempts
        existing.save(update_fields=["quantity", "last_error", "last_failed_at", "attempts"])
    else:
        DeadLetter.objects.create(
            channel=channel, sku_id=c.sku_id, quantity=c.quantity, attempts=attempts,
            first_error=(c.first_error or error)[:2000], last_error=error[:2000],
            first_failed_at=c.first_failed_at or now, last_failed_at=now)
    # Compare-and-delete, as on success: a change marked during the last attempt keeps its pair,
    # with fresh attempts, so the newer quantity is still pushed (and supersedes this letter).
    deleted, _ = DirtyPair.objects.filter(id=c.pair_id, generation=c.generation).delete()
    if not deleted:
        DirtyPair.objects.filter(id=c.pair_id).update(attempts=0, force=False, first_error="", last_error="",
                                                     first_failed_at=None, next_attempt_at=now)
    logger.error("dead letter: channel %s sku %s after %s attempts: %s", channel.slug, c.sku_code, attempts, error)


def _health(channel: Channel, result: _Result, now, *, probe: bool) -> None:
    """Channel health and the circuit breaker. A request the channel answered (even with per-item
    refusals) proves it is up; no answer, 5xx, 401/403 count toward opening the circuit."""
    if result.rate_limited:
        return
    if not result.channel_failed:
        Channel.objects.filter(pk=channel.pk).update(
            last_success_at=now, consecutive_failures=0, circuit_state=Channel.Circuit.CLOSED,
            circuit_opened_at=None, last_error=result.error[:2000])
        return
    Channel.objects.filter(pk=channel.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_failure_at=now, last_error=result.error[:2000])
    failures = Channel.objects.filter(pk=channel.pk).values_list("consecutive_failures", flat=True).first() or 0
    if probe or failures >= channel.circuit_failure_threshold:
        Channel.objects.filter(pk=channel.pk).update(circuit_state=Channel.Circuit.OPEN, circuit_opened_at=now)
        logger.warning("circuit open for channel %s after %s consecutive failures: %s", channel.slug, failures,
                       result.error)


# ------------------------------------------------------------------------------ sweeping


def channels_due() -> list[int]:
    """Channels with due dirty pairs whose circuit is not cooling down (the sweeper wakes them:
    retries whose wake-up hint was lost, outbox rows whose enqueue was lost)."""
    now = timezone.now()
    due = set(DirtyPair.objects.filter(next_attempt_at__lte=now, channel__active=True, channel__push_enabled=True)
              .values_list("channel_id", flat=True).distinct())
    if not due:
        return []
    cooling = set()
    for pk, opened, cooldown in Channel.objects.filter(pk__in=due, circuit_state=Channel.Circuit.OPEN).values_list(
            "pk", "circuit_opened_at", "circuit_cooldown_seconds"):
        if opened and opened + timedelta(seconds=cooldown) > now:
            cooling.add(pk)
    return sorted(due - cooling)


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
            "sku_id", "external_id", "attributes").first()
        if listing is None:
            raise ValidationFailed("The SKU is no longer listed on this channel; discard the dead letter.",
                                   code="listing_not_found")
        quantity = channel_quantities(channel=channel, sku_ids=[dead_letter.sku_id])[dead_letter.sku_id]
        claimed = _Claimed(pair_id=0, sku_id=dead_letter.sku_id, sku_code=dead_letter.sku.code, generation=0,
                           attempts=0, force=True, first_error="", first_failed_at=None, quantity=quantity)
        result = _send(channel, [claimed], {dead_letter.sku_id: listing})
        outcome = result.outcomes[claimed.sku_code]
        now = timezone.now()
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


# ------------------------------------------------------------------------------ reconciliation


@dataclass
class ReconcileReport:
    supported: bool = True
    checked: int = 0
    drifted: int = 0
    errors: int = 0


def channel_reconcile(*, channel_id: int) -> ReconcileReport:
    """Read what the channel shows (where its API allows), compare with what it should show,
    record drift and re-push those pairs (forced: their last pushed value no longer matters).
    Pairs already dirty are left to the regular push (their level is in flux)."""
    report = ReconcileReport()
    channel = Channel.objects.filter(pk=channel_id, active=True, push_enabled=True).first()
    if channel is None:
        return report
    adapter = adapter_for(channel)
    if type(adapter).fetch_levels is ChannelAdapter.fetch_levels:  # the API offers no read-back
        report.supported = False
        return report
    listings = list(ChannelListing.objects.filter(channel=channel).select_related("sku").order_by("id"))
    dirty = set(DirtyPair.objects.filter(channel=channel).values_list("sku_id", flat=True))
    listings = [lst for lst in listings if lst.sku_id not in dirty]
    size = getattr(adapter, "fetch_batch", adapter.max_batch)
    drifted: list[int] = []
    for i in range(0, len(listings), size):
        chunk = listings[i:i + size]
        expected = channel_quantities(channel=channel, sku_ids=[lst.sku_id for lst in chunk])
        items = [PushItem(sku=lst.sku.code, external_id=lst.external_id, quantity=expected[lst.sku_id],
                          attributes=lst.attributes or {}) for lst in chunk]
        report_stub = PushReport()
        try:
            _wait_for_token(channel, report_stub)
        except _Stop:
            time.sleep(min(report_stub.wake_in or 0, MAX_INLINE_WAIT))
        started, t0 = timezone.now(), time.perf_counter()
        try:
            levels = adapter.fetch_levels(channel, _session(), items) or {}
            error, status = "", 200
        except Exception as exc:
            levels, error = {}, f"{type(exc).__name__}: {exc}"[:500]
            status = getattr(getattr(exc, "response", None), "status_code", None)
            report.errors += 1
        now = timezone.now()
        PushAttempt.objects.create(
            channel=channel, purpose=PushAttempt.Purpose.RECONCILE, started_at=started,
            latency_ms=round((time.perf_counter() - t0) * 1000, 2), http_status=status,
            outcome=PushAttempt.Outcome.FAILED if error else PushAttempt.Outcome.SUCCESS, sku_count=len(chunk),
            error=error, items=[{"sku": it.sku, "expected": it.quantity, "seen": levels.get(it.sku)} for it in items])
        for lst in chunk:
            seen = levels.get(lst.sku.code)
            if seen is None:
                continue
            report.checked += 1
            ChannelSkuState.objects.update_or_create(channel=channel, sku_id=lst.sku_id,
                                                     defaults={"last_seen": seen, "last_seen_at": now})
            if seen != expected[lst.sku_id]:
                ChannelDrift.objects.create(channel=channel, sku_id=lst.sku_id, expected=expected[lst.sku_id],
                                            actual=seen)
                drifted.append(lst.sku_id)
    if drifted:
        report.drifted = len(drifted)
        logger.warning("reconciliation: channel %s shows %s SKU(s) off; re-pushing", channel.slug, len(drifted))
        with transaction.atomic():
            marked = pairs_mark_dirty(sku_ids=drifted, channel_ids=[channel.pk], force=True)
            channels_wake_on_commit(marked)
    return report


def channels_for_reconciliation() -> list[int]:
    return list(Channel.objects.filter(active=True, push_enabled=True).values_list("id", flat=True))


def push_attempts_prune(*, older_than_days: int = 30) -> int:
    """Drop audit rows past retention (the audit is for investigating recent incidents)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = PushAttempt.objects.filter(started_at__lt=cutoff).delete()
    return deleted
