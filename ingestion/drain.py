"""Draining: `inbound_events_drain` claims a batch with SELECT ... FOR UPDATE SKIP LOCKED (several
workers take disjoint batches), applies it in the same transaction (ingestion.processing) and
marks each event done/failed/retrying. A worker killed mid-batch rolls the whole transaction
back: its events are pending again, unlocked, and nothing was half-applied. Also the sweep and
reprocessing, which send events through the drain again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone
from psycopg import sql

from channels.models import Channel
from core.errors import DomainError
from core.jsonsafe import json_replace_nul, text_clean
from core.sql import sql_compose, sql_json_param, sql_json_rows
from ingestion.models import InboundEvent
from ingestion.processing import BatchProcessor, EventResult, Transient
from ingestion.scheduling import (
    awaiting_fetch,
    batch_size,
    channels_awaiting_fetch,
    drain_enqueue,
    drain_kick,
    drain_linger,
    fetch_enqueue,
    fetch_kick_now,
    kick_quiet,
    max_attempts,
    retry_delay,
    thin_webhook_kinds,
    worker_name,
)

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ drain


@dataclass
class DrainResult:
    claimed: int = 0
    done: int = 0
    ignored: int = 0
    failed: int = 0
    retrying: int = 0
    busy: bool = False  # another drain holds this partition


# Beyond kick_quiet(): clock granularity between hosts measuring the same span.
_QUIET_MARGIN = 0.01

# Namespace of the drains' advisory locks (pg_try_advisory_xact_lock(namespace, partition)).
_PARTITION_LOCK_NAMESPACE = 0x5354_4B4C  # "STKL"


def _partition_lock(partition: int) -> bool:
    """Take the partition's advisory lock for this transaction, without waiting."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_PARTITION_LOCK_NAMESPACE, partition])
        row = cursor.fetchone()
        return bool(row and row[0])


def inbound_events_drain_partition(*, partition: int, budget_seconds: float = 5.0,
                                   on_idle: Callable[[], None] | None = None) -> DrainResult:
    """Drain one partition batch after batch until a claim finds no due events or `budget_seconds` have
    passed (the task then queues its successor, so one busy partition never keeps a worker
    process for long). When another drain holds the partition, retry shortly: that drain may
    have claimed before our events committed.

    `on_idle` is called once, when a claim first finds nothing; one more claim follows. The task
    clears its wake-up flag there, not when it starts: while this drain runs, the flag stays set
    and the events received meanwhile queue no further drains (each of which used to find the
    partition held, retry every 0.2 s with a connection of its own, and take the partition
    between our batches). An event committed before the clear is taken by the claim after it;
    one committed after it finds the flag clear and queues a new drain. Whoever clears the flag
    claims afterwards, so no wake-up is lost.

    While batches come back short of the batch size, claims are at least `drain_linger()` apart
    (the next batch gathers what arrives meanwhile: a batch's fixed cost is shared by more
    events, for at most that much more latency); full batches follow each other at once.

    After the clear, the drain returns only once a claim that started at least kick_quiet() after
    it found nothing: a process that saw the flag set sends no wake-up for that long
    (ingestion.scheduling._kick), so events it committed meanwhile are this drain's."""
    deadline = time.monotonic() + budget_seconds
    linger, limit = drain_linger(), batch_size()
    total = DrainResult()
    claimed_at = 0.0
    settled_at: float | None = None  # once the flag is cleared: claims from then on see every skipped wake-up
    while True:
        if linger and total.claimed:
            time.sleep(max(0.0, claimed_at + linger - time.monotonic()))
        claimed_at = time.monotonic()
        result = inbound_events_drain(partition=partition)
        if result.busy:
            # The drain holding the partition claims after this one's quiet period ends, or ours does.
            wait = max(0.2, (settled_at or 0.0) - time.monotonic())
            drain_enqueue(partition=partition, countdown=wait)
            total.busy = True
            return total
        for name in ("claimed", "done", "ignored", "failed", "retrying"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        if result.claimed == 0:
            if on_idle is not None:
                on_idle()
                on_idle = None
                settled_at = time.monotonic() + kick_quiet() + _QUIET_MARGIN
                claimed_at = 0.0  # the claim after the clear does not wait
                continue  # "due" is read again after the clear: what committed before it is ours
            if settled_at is None or claimed_at >= settled_at:
                return total
            time.sleep(max(0.0, settled_at - time.monotonic()))
            claimed_at = 0.0
            continue
        if time.monotonic() > deadline:
            drain_enqueue(partition=partition)
            return total
        if result.claimed >= limit:
            claimed_at = 0.0  # a full batch: more are likely due, claim again at once


def inbound_events_drain(*, limit: int | None = None, worker: str | None = None, partition: int | None = None,
                         on_full_batch: Callable[[], None] | None = None) -> DrainResult:
    """Claim up to `limit` due pending events (SKIP LOCKED) and apply them in one transaction.

    With `partition`, only that partition's events, and only if no other drain holds the
    partition (a transaction-scoped advisory lock; `result.busy` when another does): one drain
    at a time per partition applies its events in id order, so an order's sale is applied before
    the cancellation received after it, whichever worker or host runs which drain. Without it
    (tests, tools), every partition's due events.

    `on_full_batch` is called once the claim returned a full batch, before applying it, so a
    helper drain can start on the next batch in parallel (other workers skip our locked rows).
    """
    limit = limit or batch_size()
    worker = worker or worker_name()
    result = DrainResult()
    with transaction.atomic():
        if partition is not None and not _partition_lock(partition):
            result.busy = True
            return result
        # "Due" is read here, after any wake-up flag was cleared (inbound_events_drain_partition):
        # an event received between an earlier clock reading and the clear would be neither
        # claimed nor woken for.
        now = timezone.now()
        # The raw body and headers stay in the table: planning reads the parsed payload, and the
        # batch's channels once (BatchProcessor), not a channel row per event.
        events = list(InboundEvent.objects.raw(_claim_sql(by_partition=partition is not None),
                                               {"now": now, "partition": partition, "limit": limit}))
        result.claimed = len(events)
        if not events:
            return result
        if on_full_batch is not None and len(events) == limit:
            on_full_batch()
        ready = events
        outcomes = _process(ready, worker) if ready else {}
        finished_at = timezone.now()
        for event in ready:
            outcome = outcomes[event.pk]
            event.attempts += 1
            event.processed_by = worker[:200]
            event.outcome = outcome.outcome or event.outcome
            if outcome.transient and event.attempts < max_attempts():
                event.status = InboundEvent.Status.PENDING
                event.next_attempt_at = finished_at + retry_delay(attempts=event.attempts)
                result.retrying += 1
            else:
                event.status = InboundEvent.Status.FAILED if outcome.transient else outcome.status
                event.processed_at = finished_at
            # Texts from payloads and exceptions may hold what PostgreSQL cannot store (NUL):
            # cleaned, so saving the outcomes can never fail the batch.
            event.outcome = json_replace_nul(event.outcome)
            event.error_code, event.last_error = text_clean(outcome.error_code)[:64], text_clean(outcome.error)[:2000]
            result.done += event.status == InboundEvent.Status.DONE
            result.ignored += event.status == InboundEvent.Status.IGNORED
            result.failed += event.status == InboundEvent.Status.FAILED
        _events_save(ready)
    return result


@cache
def _claim_sql(*, by_partition: bool) -> str:
    """Due pending events in id order, locked, skipping rows another drain holds.

    The constant conditions are literals, not parameters: the connection prepares a statement it
    runs often (DB_PREPARE_THRESHOLD) and PostgreSQL then switches to a generic plan, which with
    `status = $1` cannot use the partial indexes on pending events and read the whole table
    (66 ms a claim on a 46,000-event table, against 0.3 ms; the ORM's filter sends every value
    as a parameter). Events still waiting for their channel's data (BigCommerce products) belong
    to the fetch task (inbound_events_fetch): the drain makes no HTTP call, and they take no slot
    in its batch, so a slow marketplace delays nobody else's events."""
    table = InboundEvent._meta.db_table
    columns = [f.column for f in InboundEvent._meta.concrete_fields if f.name not in ("body", "headers")]
    thin_kinds = thin_webhook_kinds()
    waiting = sql.SQL("e.source = {webhook} AND e.fetched IS NULL AND EXISTS (SELECT 1 FROM {channels} c "
                      "WHERE c.id = e.channel_id AND c.kind IN ({kinds}))").format(
        webhook=sql.Literal(InboundEvent.Source.WEBHOOK.value), channels=sql.Identifier(Channel._meta.db_table),
        kinds=sql.SQL(", ").join(sql.Literal(kind) for kind in thin_kinds) if thin_kinds else sql.SQL("NULL"))
    return sql_compose(
        "SELECT {columns} FROM {table} e WHERE e.status = {pending} AND e.next_attempt_at <= %(now)s {partition} "
        "AND NOT ({waiting}) ORDER BY e.id LIMIT %(limit)s FOR UPDATE OF e SKIP LOCKED",
        columns=sql.SQL(", ").join(sql.SQL("e.") + sql.Identifier(c) for c in columns), table=table,
        pending=sql.Literal(InboundEvent.Status.PENDING.value), waiting=waiting,
        partition=sql.SQL("AND e.partition = %(partition)s" if by_partition else ""))


def _process(events: list[InboundEvent], worker: str) -> dict[int, EventResult]:
    """Apply a claimed batch so that no event, however bad, can hold back another.

    1. Fast path: the whole batch without per-event savepoints (errors are rare, and the
       savepoints' round trips are most of a drain's cost).
    2. On any error, roll that back and apply event by event (a savepoint each, inside one
       BatchProcessor: one lock set, one settlement per order).
    3. If even that fails as a whole (an error outside any one event's lines: a lookup, the lock
       step, the stock-change hook), apply each event in a batch of its own; an event that still
       fails alone is retried per policy with the error as its reason.
    Every path ends with an outcome for every event, so the drain never claims the same
    poisoned batch again without having moved its attempt counters."""
    try:
        with transaction.atomic():
            return BatchProcessor(events, worker=worker).run()
    except Exception as exc:
        logger.info("drain fast path aborted (%s: %s); applying event by event", type(exc).__name__, exc)
    try:
        with transaction.atomic():
            return BatchProcessor(events, worker=worker, careful=True).run()
    except Exception:
        logger.warning("drain batch failed as a whole; applying each event alone", exc_info=True)
    results: dict[int, EventResult] = {}
    for event in events:
        try:
            with transaction.atomic():
                results.update(BatchProcessor([event], worker=worker, careful=True).run())
        except Exception as exc:
            logger.warning("inbound event %s failed on its own; will retry", event.pk, exc_info=True)
            code = getattr(exc, "code", "") if isinstance(exc, Transient | DomainError) else "unexpected_error"
            results[event.pk] = EventResult(InboundEvent.Status.PENDING, code[:64], f"{type(exc).__name__}: {exc}",
                                            transient=True)
    return results


def _events_save(events: list[InboundEvent]) -> None:
    """Write the batch's statuses in one UPDATE ... FROM <rows as one JSON parameter> (Django's
    bulk_update builds a CASE per row and field, which costs more than applying the events)."""
    rows = [(e.pk, e.status, e.attempts, e.next_attempt_at, e.error_code, e.last_error, e.outcome,
             e.processed_at, e.processed_by) for e in events]
    sql = sql_compose(
        "UPDATE {table} AS t SET status = v.status, attempts = v.attempts, next_attempt_at = v.next_attempt_at, "
        "error_code = v.error_code, last_error = v.last_error, outcome = v.outcome, processed_at = v.processed_at, "
        "processed_by = v.processed_by FROM {rows} AS v(id, status, attempts, next_attempt_at, "
        "error_code, last_error, outcome, processed_at, processed_by) WHERE t.id = v.id",
        table=InboundEvent._meta.db_table,
        rows=sql_json_rows(["bigint", "text", "integer", "timestamptz", "text", "text", "jsonb", "timestamptz",
                            "text"]))
    with connection.cursor() as cursor:
        cursor.execute(sql, [sql_json_param(rows)])


def inbound_events_sweep() -> int:
    """Queue a drain if due pending events exist (a lost wake-up, retries whose backoff ended),
    and a fetch for each channel whose due events wait for their data (the same, or a circuit's
    cool-down that ended). Returns how many events were due for the drain."""
    due = dict(InboundEvent.objects.filter(status=InboundEvent.Status.PENDING, next_attempt_at__lte=timezone.now())
               .exclude(awaiting_fetch()).order_by().values("partition").annotate(n=Count("id"))
               .values_list("partition", "n"))
    for partition in sorted(due):
        drain_enqueue(partition=partition)
    for channel_id in channels_awaiting_fetch():
        fetch_enqueue(channel_id=channel_id)
    return sum(due.values())


def inbound_events_reprocess(*, ids: list[int] | None = None, channel: Channel | None = None,
                             statuses: tuple[str, ...] = (InboundEvent.Status.FAILED,),
                             error_code: str | None = None) -> int:
    """Send failed (or, named by id, ignored/done) events through the drain again, e.g. after the
    missing SKU or listing was created. Safe for any event: lines already applied replay as
    no-ops (ledger keys). Returns how many were queued."""
    qs = InboundEvent.objects.exclude(status=InboundEvent.Status.PENDING)
    qs = qs.filter(pk__in=ids) if ids is not None else qs.filter(status__in=statuses)
    if channel is not None:
        qs = qs.filter(channel=channel)
    if error_code:
        qs = qs.filter(error_code=error_code)
    # invalid_json events stay failed: the stored bytes will never parse.
    qs = qs.exclude(error_code="invalid_json", payload__isnull=True)
    with transaction.atomic():
        count = qs.update(status=InboundEvent.Status.PENDING, attempts=0, next_attempt_at=timezone.now(),
                          error_code="", processed_at=None)
        if count:
            drain_kick()
            transaction.on_commit(fetch_kick_due, robust=True)  # those that need their data fetched again
    return count


def fetch_kick_due() -> None:
    fetch_kick_now(channel_ids=channels_awaiting_fetch())


def oversell_incidents_resolve(*, ids: list[int], note: str = "") -> int:
    """Mark incidents handled (stock found, order cancelled...). Stock is not touched here."""
    from ingestion.models import OversellIncident

    return OversellIncident.objects.filter(pk__in=ids, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolution_note=note)
