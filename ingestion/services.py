"""Ingestion writes: accept webhooks and canonical events durably, drain them into stock.

Receiving is deliberately thin (verify, one INSERT, answer): the sender gets its 200 as soon as
the raw event is committed, and processing happens in the drain. The only thing that leaves the
request after commit is a debounced "drain now" task; if that message is lost (broker down,
process killed between commit and enqueue) the beat sweeper finds the pending rows and
re-enqueues, so an accepted event is never lost.

Draining: `inbound_events_drain` claims a batch with SELECT ... FOR UPDATE SKIP LOCKED (several
workers take disjoint batches), applies it in the same transaction (ingestion.processing) and
marks each event done/failed/retrying. A worker killed mid-batch rolls the whole transaction
back: its events are pending again, unlocked, and nothing was half-applied.

Fetching: thin webhooks (BigCommerce) need the order's products from the store first. That is
`inbound_events_fetch`, run per channel by its own task within a time budget and behind a
per-channel circuit breaker (ingestion.fetching); the drain never makes an HTTP call and leaves
such events out of its batches until their data is stored, so a slow store delays nobody else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from channels.adapters import ADAPTERS
from channels.adapters.base import ChannelAdapter, Delivery
from channels.models import Channel
from core.errors import DomainError, ValidationFailed
from core.jsonsafe import json_contains_nul, json_parse, json_replace_nul, text_clean
from ingestion.canonical import MAX_BATCH, CanonicalError, canonical_event_parse, canonical_event_to_json
from ingestion.models import InboundEvent
from ingestion.processing import BatchProcessor, EventResult, Transient

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024  # contract: a body over 1 MiB is refused with 413
DRAIN_FLAG = "ingestion:drain-queued"
DRAIN_FLAG_TTL = 30  # seconds; bounds the wait if a queued drain message is lost
# Request headers never stored with an event (credentials of whoever relayed the request).
DROPPED_HEADERS = {"authorization", "cookie", "proxy-authorization", "x-api-key"}


def batch_size() -> int:
    return getattr(settings, "INGESTION_BATCH_SIZE", 100)


def max_attempts() -> int:
    return getattr(settings, "INGESTION_MAX_ATTEMPTS", 8)


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff with jitter: 2 s, 4 s, 8 s ... capped at 10 minutes."""
    base = min(2.0 * 2 ** max(attempts - 1, 0), 600.0)
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------------------------ intake

_COLUMNS = ("channel_id", "source", "dedup_key", "delivery_id", "topic", "headers", "body", "payload", "fetched",
            "status", "attempts", "next_attempt_at", "error_code", "last_error", "outcome", "received_at",
            "processed_at", "processed_by")
_JSON_COLUMNS = {"headers", "payload", "fetched", "outcome"}


def _insert_new(rows: list[dict]) -> list[int]:
    """INSERT the rows, skipping any whose dedup_key exists (ON CONFLICT DO NOTHING), in one
    statement; returns the ids actually inserted. Concurrent twins: exactly one wins."""
    if not rows:
        return []
    from psycopg.types.json import Jsonb

    params = []
    for row in rows:
        for column in _COLUMNS:
            value = row.get(column)
            params.append(Jsonb(value) if column in _JSON_COLUMNS and value is not None else value)
    values = ",".join(["(" + ",".join(["%s"] * len(_COLUMNS)) + ")"] * len(rows))
    sql = (f"INSERT INTO {InboundEvent._meta.db_table} ({', '.join(_COLUMNS)}) VALUES {values} "  # noqa: S608
           "ON CONFLICT (dedup_key) DO NOTHING RETURNING id")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def _row(**fields) -> dict:
    now = timezone.now()
    row = {"headers": {}, "body": None, "payload": None, "fetched": None, "status": InboundEvent.Status.PENDING,
           "attempts": 0, "next_attempt_at": now, "error_code": "", "last_error": "", "outcome": {},
           "received_at": now, "processed_at": None, "processed_by": "", "topic": "", "channel_id": None}
    row.update(fields)
    return row


@dataclass
class WebhookAccepted:
    event_id: int | None  # None when this delivery was already stored
    duplicate: bool


def webhook_accept(*, channel: Channel, adapter: ChannelAdapter, headers, body: bytes) -> WebhookAccepted:
    """Store one verified delivery (raw body, headers) and schedule the drain.

    The caller has verified the signature. Whatever the body is, the delivery is stored and the
    sender gets 200 (retrying the same bytes would not help): a body that is not JSON PostgreSQL
    can store (syntax, NaN/Infinity, 1e400, lone surrogates, a nesting bomb, bad UTF-8) is stored
    as failed `invalid_json` with the reason, the raw bytes kept (bytea holds any bytes). NUL
    characters inside strings are valid JSON that jsonb cannot hold: they are replaced with
    U+FFFD in the parsed payload (the raw body keeps them) and the event is processed.
    Dedup on the channel's delivery id; a delivery without one is identified by its body's hash.
    """
    try:
        delivery = adapter.read_delivery(channel, headers, body)
    except Exception:  # e.g. RecursionError from an adapter reading a nesting bomb: still store it
        logger.warning("%s could not read the delivery's id/topic; using the body hash", type(adapter).__name__,
                       exc_info=True)
        delivery = Delivery(delivery_id="", topic="")
    delivery_id = text_clean((delivery.delivery_id or "").strip()[:255]) or "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        payload, error = json_parse(body, allow_nul=True), ""
    except ValueError as exc:
        payload, error = None, f"The body is not valid JSON: {exc}"
    if payload is not None and json_contains_nul(payload):
        payload = json_replace_nul(payload)
    kept = {text_clean(str(name)): text_clean(str(value)) for name, value in headers.items()
            if str(name).lower() not in DROPPED_HEADERS}
    row = _row(channel_id=channel.pk, source=InboundEvent.Source.WEBHOOK, dedup_key=f"wh:{channel.pk}:{delivery_id}",
               delivery_id=delivery_id, topic=text_clean(str(delivery.topic or ""))[:100], headers=kept, body=body,
               payload=payload)
    if error:
        row.update(status=InboundEvent.Status.FAILED, error_code="invalid_json", last_error=error[:2000],
                   processed_at=row["received_at"])
    inserted = _insert_new([row])
    if inserted and not error:
        if hasattr(adapter, "needs_fetch"):
            fetch_kick([channel.pk])  # thin payload (BigCommerce): its data first, then the drain
        else:
            drain_kick()
    return WebhookAccepted(event_id=inserted[0] if inserted else None, duplicate=not inserted)


@dataclass
class BatchAccepted:
    accepted: int
    duplicates: int
    rejected: list[dict]

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


def events_accept(*, events, source: str = "api") -> BatchAccepted:
    """Store a canonical batch (1 to 1000 events) in one INSERT; `event_id` dedups forever.

    Items are validated for shape only; a malformed one is rejected with its index and the rest
    are accepted. Whether the SKU/location exists is decided when processing (an unknown one
    fails visibly and is reprocessed once it exists), so intake never waits on lookups.
    """
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_BATCH:
        raise ValidationFailed(f"events must be a list of 1 to {MAX_BATCH} events.", code="validation_error")
    rejected, rows, seen = [], [], set()
    duplicates = 0
    for index, raw in enumerate(events):
        try:
            event = canonical_event_parse(raw, default_source=source)
        except CanonicalError as exc:
            rejected.append({"index": index, "error": exc.code, "detail": exc.detail})
            continue
        dedup_key = f"api:{event.event_id}"
        if dedup_key in seen:
            duplicates += 1  # the same event twice in one batch
            continue
        seen.add(dedup_key)
        rows.append(_row(source=InboundEvent.Source.API, dedup_key=dedup_key, delivery_id=event.event_id,
                         topic=event.type, payload=canonical_event_to_json(event)))
    inserted = _insert_new(rows)
    if inserted:
        drain_kick()
    return BatchAccepted(accepted=len(inserted), duplicates=duplicates + len(rows) - len(inserted),
                         rejected=rejected)


# ------------------------------------------------------------------------------ scheduling


def drain_kick() -> None:
    """Ask for a drain once the current transaction commits, at most one queued at a time.

    The flag is cleared by the drain task *before* it claims, so an event committed after a
    drain's claim always finds the flag clear and queues a new drain (no lost wake-up).
    """
    transaction.on_commit(_kick, robust=True)


def _kick() -> None:
    try:
        if cache.add(DRAIN_FLAG, 1, timeout=DRAIN_FLAG_TTL):
            drain_enqueue()
    except Exception:  # Redis or broker down: the sweeper re-enqueues pending events
        logger.exception("could not queue an ingestion drain; the sweeper will")


def drain_enqueue() -> None:
    from ingestion.tasks import inbound_drain_task

    inbound_drain_task.apply_async()


# ------------------------------------------------------------------------------ drain


@dataclass
class DrainResult:
    claimed: int = 0
    done: int = 0
    ignored: int = 0
    failed: int = 0
    retrying: int = 0


def inbound_events_drain(*, limit: int | None = None, worker: str | None = None, on_full_batch=None) -> DrainResult:
    """Claim up to `limit` due pending events (SKIP LOCKED) and apply them in one transaction.

    `on_full_batch` is called once the claim returned a full batch, before applying it, so a
    helper drain can start on the next batch in parallel (other workers skip our locked rows).
    """
    limit = limit or batch_size()
    worker = worker or worker_name()
    result = DrainResult()
    now = timezone.now()
    with transaction.atomic():
        events = list(
            InboundEvent.objects.select_for_update(skip_locked=True, of=("self",)).select_related("channel")
            .filter(status=InboundEvent.Status.PENDING, next_attempt_at__lte=now)
            # Events still waiting for their channel's data (BigCommerce products) belong to the
            # fetch task (inbound_events_fetch): the drain makes no HTTP call, and they take no
            # slot in its batch, so a slow marketplace delays nobody else's events.
            .exclude(_awaiting_fetch())
            .order_by("id")[:limit]
        )
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
                event.next_attempt_at = finished_at + retry_delay(event.attempts)
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
    """Write the batch's statuses in one UPDATE ... FROM (VALUES ...) (Django's bulk_update builds
    a CASE per row and field, which costs more than applying the events)."""
    from psycopg.types.json import Jsonb

    row = "(%s::bigint, %s::varchar, %s::integer, %s::timestamptz, %s::varchar, %s::text, %s::jsonb, " \
          "%s::timestamptz, %s::varchar)"
    params = []
    for e in events:
        params += [e.pk, e.status, e.attempts, e.next_attempt_at, e.error_code, e.last_error, Jsonb(e.outcome),
                   e.processed_at, e.processed_by]
    table = InboundEvent._meta.db_table
    sql = (f"UPDATE {table} AS t SET status = v.status, attempts = v.attempts, "  # noqa: S608 - fixed names
           "next_attempt_at = v.next_attempt_at, error_code = v.error_code, last_error = v.last_error, "
           "outcome = v.outcome, processed_at = v.processed_at, processed_by = v.processed_by "
           f"FROM (VALUES {', '.join([row] * len(events))}) AS v(id, status, attempts, next_attempt_at, error_code, "
           "last_error, outcome, processed_at, processed_by) WHERE t.id = v.id")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# ------------------------------------------------------------------------------ fetch (thin webhooks)

FETCH_FLAG_TTL = 30  # seconds; bounds the wait if a queued fetch message is lost (the sweep also finds it)
# A refusal that says the channel itself is failing (counts toward its circuit), not this order.
FETCH_CHANNEL_FAILURES = {401, 403, 408}


def fetch_budget() -> float:
    return float(getattr(settings, "INGESTION_FETCH_BUDGET_SECONDS", 10.0))


def fetch_timeout() -> float:
    return float(getattr(settings, "INGESTION_FETCH_TIMEOUT_SECONDS", 5.0))


def _awaiting_fetch() -> Q:
    """Webhook events of channels whose payloads are thin (BigCommerce) whose data is not fetched yet."""
    kinds = sorted(kind for kind, adapter in ADAPTERS.items() if hasattr(adapter, "needs_fetch"))
    return Q(source=InboundEvent.Source.WEBHOOK, fetched__isnull=True, channel__kind__in=kinds)


def _awaiting_fetch_due(now: datetime | None = None) -> QuerySet[InboundEvent]:
    return InboundEvent.objects.filter(_awaiting_fetch(), status=InboundEvent.Status.PENDING,
                                       next_attempt_at__lte=now or timezone.now())


def channels_awaiting_fetch() -> list[int]:
    """Channels with due events waiting for their data (the sweep wakes a fetch for each)."""
    return sorted(set(_awaiting_fetch_due().order_by().values_list("channel_id", flat=True).distinct()))


def fetch_flag(channel_id: int) -> str:
    return f"ingestion:fetch-queued:{channel_id}"


def fetch_kick(channel_ids: Iterable[int]) -> None:
    """Ask for a fetch run per channel once the current transaction commits, at most one queued
    per channel (the task clears its flag before it selects events: no lost wake-up)."""
    transaction.on_commit(partial(_fetch_kick, sorted(set(channel_ids))), robust=True)


def _fetch_kick(channel_ids: list[int]) -> None:
    for channel_id in channel_ids:
        try:
            if cache.add(fetch_flag(channel_id), 1, timeout=FETCH_FLAG_TTL):
                fetch_enqueue(channel_id)
        except Exception:  # Redis or broker down: the sweeper re-enqueues
            logger.exception("could not queue an ingestion fetch for channel %s; the sweeper will", channel_id)


def fetch_enqueue(channel_id: int) -> None:
    from ingestion.tasks import inbound_fetch_task

    inbound_fetch_task.apply_async(args=[channel_id])


@dataclass
class FetchResult:
    fetched: int = 0  # events whose data is stored now (the drain applies them)
    failed: int = 0  # requests that failed (charged to their event, except a half-open probe's)
    skipped: int = 0  # left for later: the channel's circuit is open or it asked us to wait (no charge)
    remaining: int = 0  # not tried: the run's time budget ran out (no charge; the next run goes on)


def inbound_events_fetch(*, channel_id: int, budget: float | None = None, limit: int | None = None) -> FetchResult:
    """Fetch what one channel's thin webhooks leave out (BigCommerce order products) for its due
    events, outside any transaction, and store it on each event; then queue a drain, which applies
    them. Run by the `ingestion.fetch` task, never by the drain, so a slow or silent marketplace
    holds one worker slot (single-flight per channel) and delays no other channel's events.

    - Each request has short (connect, read) timeouts (INGESTION_FETCH_TIMEOUT_SECONDS). No event
      is started after `budget` seconds (INGESTION_FETCH_BUDGET_SECONDS; the first always is, so
      every run makes progress): a run lasts at most the budget plus one event's requests, and
      events left over are fetched by the next run, queued at once, without a charge.
    - A failure charges one attempt to its event (backoff, then `failed` after
      INGESTION_MAX_ATTEMPTS); a 4xx other than 401/403/408/429 fails the event at once (the
      order is gone, not the store). No answer, timeouts, 5xx, 401/403/408 and unreadable
      answers also count toward the channel's circuit (ingestion.fetching): once open, the
      channel's events wait for the cool-down without a charge, then one probe goes (a failed
      probe charges nothing either). A 429 holds the channel for the time it asks, no charge.
    """
    result = FetchResult()
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None:
        return result
    from ingestion.fetching import fetch_lock_acquire, fetch_lock_release

    budget = fetch_budget() if budget is None else budget
    lock = fetch_lock_acquire(channel_id=channel.pk, ttl=budget + 4 * fetch_timeout() + 60)
    if lock is None:
        return result  # another run has this channel; it looks again when it ends
    try:
        _fetch_run(channel, budget=budget, limit=limit or batch_size(), result=result)
    finally:
        fetch_lock_release(lock)
    # Look again now the lock is free: a wake-up that found it busy has exited, and the budget
    # may have left events over. Failed, postponed and fetched events are not due any more, so
    # this never spins: each run tries an event or postpones them all.
    if _awaiting_fetch_due().filter(channel=channel).exists():
        fetch_kick([channel.pk])
    if result.fetched:
        drain_kick()
    return result


def _fetch_run(channel: Channel, *, budget: float, limit: int, result: FetchResult) -> None:
    from channels.adapters import adapter_for
    from channels.adapters.http import CONNECT_TIMEOUT, TimeoutSession
    from ingestion.fetching import fetch_gate

    events = list(_awaiting_fetch_due().filter(channel=channel).order_by("id")[:limit])
    adapter: Any = adapter_for(channel)  # a fetching adapter (needs_fetch, fetch): BigCommerce
    todo = []
    for event in events:
        try:
            needed = adapter.needs_fetch(channel, _delivery(event), event.payload)
        except Exception:  # the drain reports the payload as invalid; nothing to ask the store
            logger.warning("inbound event %s: could not tell whether it needs a fetch", event.pk, exc_info=True)
            needed = False
        if needed:
            todo.append(event)
        else:  # a status change that moves no stock, an invalid payload: the drain decides, no HTTP
            result.fetched += _fetch_store(event, {})
    if not todo:
        return
    gate = fetch_gate(channel_id=channel.pk, threshold=channel.circuit_failure_threshold)
    if gate.state == "open":
        result.skipped += _fetch_postpone(todo, gate.wait, "fetch_circuit_open",
                                          "The channel's fetches are paused (circuit open or rate limited).")
        return
    probe = gate.state == "half_open"
    timeout = fetch_timeout()
    deadline = time.monotonic() + budget
    with TimeoutSession(timeout=(min(CONNECT_TIMEOUT, timeout), timeout)) as session:
        for index, event in enumerate(todo):
            if index and time.monotonic() >= deadline:
                result.remaining += len(todo) - index
                return
            try:
                data = adapter.fetch(channel, session, _delivery(event), event.payload)
            except Exception as exc:
                stop = _fetch_failed(channel, event, exc, probe=probe, result=result, rest=todo[index + 1:])
                if stop:
                    return
                continue
            _fetch_success(channel)
            probe = False
            result.fetched += _fetch_store(event, data)


def _delivery(event: InboundEvent) -> Delivery:
    return Delivery(delivery_id=event.delivery_id, topic=event.topic)


def _fetch_success(channel: Channel) -> None:
    from ingestion.fetching import fetch_success_record

    fetch_success_record(channel_id=channel.pk)


def _fetch_failed(channel: Channel, event: InboundEvent, exc: Exception, *, probe: bool, result: FetchResult,
                  rest: list[InboundEvent]) -> bool:
    """Record one failed fetch; True when the run must stop (circuit open, rate limited)."""
    from channels.adapters.http import retry_after_seconds
    from ingestion.fetching import fetch_failure_record, fetch_hold

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    detail = text_clean(f"Fetching from the channel failed: {type(exc).__name__}: {exc}")[:2000]
    logger.warning("inbound event %s: %s", event.pk, detail)
    if status == 429:  # the marketplace pacing us: wait as asked, charge nobody
        wait = (retry_after_seconds(response) if response is not None else None) or retry_delay(1).total_seconds()
        fetch_hold(channel_id=channel.pk, seconds=wait)
        result.skipped += _fetch_postpone([event, *rest], wait, "fetch_rate_limited", detail)
        return True
    if status is not None and 400 <= status < 500 and status not in FETCH_CHANNEL_FAILURES:
        _fetch_success(channel)  # the store answered: this order is the problem, not the channel
        result.failed += 1
        _fetch_charge(event, detail, permanent=True)
        return False
    result.failed += 1
    opened = fetch_failure_record(channel_id=channel.pk, threshold=channel.circuit_failure_threshold,
                                  cooldown=channel.circuit_cooldown_seconds)
    if probe:  # the channel was known to be failing: the probe's event is not charged for it
        _fetch_postpone([event], channel.circuit_cooldown_seconds, "fetch_failed", detail)
    else:
        _fetch_charge(event, detail, permanent=False)
    if opened:
        result.skipped += _fetch_postpone(rest, channel.circuit_cooldown_seconds, "fetch_circuit_open",
                                          f"The channel's fetches are paused after repeated failures: {detail}")
        return True
    return False


def _still_waiting(events: list[InboundEvent]) -> QuerySet[InboundEvent]:
    return InboundEvent.objects.filter(pk__in=[e.pk for e in events], status=InboundEvent.Status.PENDING,
                                       fetched__isnull=True)


def _fetch_store(event: InboundEvent, data: Any) -> int:
    try:
        return _still_waiting([event]).update(fetched=json_replace_nul(data))
    except DatabaseError as exc:  # an answer jsonb cannot hold (NaN, ...): retrying will not help
        _fetch_charge(event, f"The channel's answer cannot be stored: {exc}"[:2000], permanent=True)
        return 0


def _fetch_charge(event: InboundEvent, detail: str, *, permanent: bool) -> None:
    attempts = event.attempts + 1
    now = timezone.now()
    if permanent or attempts >= max_attempts():
        _still_waiting([event]).update(status=InboundEvent.Status.FAILED, attempts=attempts,
                                       error_code="fetch_failed", last_error=detail, processed_at=now)
    else:
        _still_waiting([event]).update(attempts=attempts, error_code="fetch_failed", last_error=detail,
                                       next_attempt_at=now + retry_delay(attempts))


def _fetch_postpone(events: list[InboundEvent], seconds: float, code: str, detail: str) -> int:
    """Try these events again in `seconds`, without charging them an attempt."""
    if not events:
        return 0
    return _still_waiting(events).update(error_code=code, last_error=detail[:2000],
                                         next_attempt_at=timezone.now() + timedelta(seconds=max(seconds, 0.001)))


def inbound_events_sweep() -> int:
    """Queue a drain if due pending events exist (a lost wake-up, retries whose backoff ended),
    and a fetch for each channel whose due events wait for their data (the same, or a circuit's
    cool-down that ended). Returns how many events were due for the drain."""
    due = (InboundEvent.objects.filter(status=InboundEvent.Status.PENDING, next_attempt_at__lte=timezone.now())
           .exclude(_awaiting_fetch()).count())
    if due:
        drain_enqueue()
    for channel_id in channels_awaiting_fetch():
        fetch_enqueue(channel_id)
    return due


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
            transaction.on_commit(_fetch_kick_due, robust=True)  # those that need their data fetched again
    return count


def _fetch_kick_due() -> None:
    _fetch_kick(channels_awaiting_fetch())


def oversell_incidents_resolve(*, ids: list[int], note: str = "") -> int:
    """Mark incidents handled (stock found, order cancelled...). Stock is not touched here."""
    from ingestion.models import OversellIncident

    return OversellIncident.objects.filter(pk__in=ids, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolution_note=note)
