"""Fetching: thin webhooks (BigCommerce) need the order's products from the store first. That is
`inbound_events_fetch`, run per channel by its own task within a time budget and behind a
per-channel circuit breaker (ingestion.fetching); the drain never makes an HTTP call and leaves
such events out of its batches until their data is stored, so a slow store delays nobody else."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import DatabaseError
from django.db.models import QuerySet
from django.utils import timezone

from channels.adapters.base import Delivery
from channels.models import Channel
from core.jsonsafe import json_replace_nul, text_clean
from ingestion.models import InboundEvent
from ingestion.scheduling import (
    FETCH_CHANNEL_FAILURES,
    awaiting_fetch_due,
    batch_size,
    drain_kick,
    fetch_budget,
    fetch_kick,
    fetch_timeout,
    max_attempts,
    retry_delay,
)

logger = logging.getLogger(__name__)

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
    if awaiting_fetch_due().filter(channel=channel).exists():
        fetch_kick(channel_ids=[channel.pk])
    if result.fetched:
        drain_kick()
    return result


def _fetch_run(channel: Channel, *, budget: float, limit: int, result: FetchResult) -> None:
    from channels.adapters import adapter_for
    from channels.adapters.http import CONNECT_TIMEOUT, TimeoutSession
    from ingestion.fetching import fetch_gate

    events = list(awaiting_fetch_due().filter(channel=channel).order_by("id")[:limit])
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
        wait = ((retry_after_seconds(response) if response is not None else None)
                or retry_delay(attempts=1).total_seconds())
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
                                       next_attempt_at=now + retry_delay(attempts=attempts))


def _fetch_postpone(events: list[InboundEvent], seconds: float, code: str, detail: str) -> int:
    """Try these events again in `seconds`, without charging them an attempt."""
    if not events:
        return 0
    return _still_waiting(events).update(error_code=code, last_error=detail[:2000],
                                         next_attempt_at=timezone.now() + timedelta(seconds=max(seconds, 0.001)))
