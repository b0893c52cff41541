"""State that keeps one marketplace's fetches from hurting anyone else, kept in Redis (shared by
every worker, no database rows), used by ingestion.fetch.inbound_events_fetch:

- a per-channel **circuit breaker**: after the channel's `circuit_failure_threshold` consecutive
  failures (no answer, a timeout, 5xx, 401/403/408) its fetches are skipped for
  `circuit_cooldown_seconds` (the same settings as its pushes, separate state); then one probe
  goes: success closes it, failure re-opens it. A marketplace's 429 closes the same gate for the
  time it asks, without counting as a failure;
- a per-channel **single-flight lock**: one fetch run per channel at a time, so a slow store
  holds at most one worker slot however many wake-ups it gets.

Redis being unreachable never stops ingestion: the gate then reads as closed and the lock as
free (at worst a store is asked twice; fetching is idempotent).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import redis

from channels.ratelimit import redis_client

logger = logging.getLogger(__name__)

FAILURES_TTL = 24 * 3600  # a failure count older than a day says nothing about the store now


def _keys(channel_id: int) -> tuple[str, str]:
    base = f"stockline:fetch-circuit:{channel_id}"
    return f"{base}:failures", f"{base}:open"


@dataclass
class FetchGate:
    state: str  # "closed", "open" (skip, retry in `wait` seconds) or "half_open" (one probe may go)
    wait: float = 0.0


def fetch_gate(*, channel_id: int, threshold: int) -> FetchGate:
    """May this channel be fetched from now?"""
    failures_key, open_key = _keys(channel_id)
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.get(failures_key)
        pipe.pttl(open_key)
        failures, open_ms = pipe.execute()
    except redis.RedisError:
        logger.warning("fetch circuit of channel %s unreadable; treating it as closed", channel_id, exc_info=True)
        return FetchGate("closed")
    if open_ms is not None and open_ms > 0:
        return FetchGate("open", open_ms / 1000.0)
    if int(failures or 0) >= max(threshold, 1):
        return FetchGate("half_open")
    return FetchGate("closed")


def fetch_failure_record(*, channel_id: int, threshold: int, cooldown: float) -> bool:
    """One more consecutive failure of the channel; at `threshold` (or a failed probe) the circuit
    opens for `cooldown` seconds. True when it is open now."""
    failures_key, open_key = _keys(channel_id)
    try:
        client = redis_client()
        failures = client.incr(failures_key)
        client.expire(failures_key, FAILURES_TTL)
        if failures >= max(threshold, 1):
            client.set(open_key, "1", px=max(int(cooldown * 1000), 1))
            return True
    except redis.RedisError:
        logger.warning("could not record a fetch failure of channel %s", channel_id, exc_info=True)
    return False


def fetch_success_record(*, channel_id: int) -> None:
    """The channel answered: close its circuit and forget its failures."""
    with contextlib.suppress(redis.RedisError):
        redis_client().delete(*_keys(channel_id))


def fetch_hold(*, channel_id: int, seconds: float) -> None:
    """The marketplace asked us to wait (429): no fetch from this channel for `seconds`. Not a
    failure: it is pacing us, not failing."""
    _failures_key, open_key = _keys(channel_id)
    ms = max(int(seconds * 1000), 1)
    with contextlib.suppress(redis.RedisError):
        client = redis_client()
        current = client.pttl(open_key)
        if current is None or current < ms:
            client.set(open_key, "1", px=ms)


def fetch_circuit_reset(*, channel_id: int) -> None:
    """Forget a channel's fetch circuit (tests, or an operator who fixed the channel)."""
    fetch_success_record(channel_id=channel_id)


class _NoLock:
    """Stands in for the Redis lock when Redis is unreachable."""

    def release(self) -> None:
        return None


def fetch_lock_acquire(*, channel_id: int, ttl: float):
    """The channel's single-flight lock (expires after `ttl` seconds if its holder dies), or None
    when another run holds it."""
    try:
        lock = redis_client().lock(f"stockline:fetch-lock:{channel_id}", timeout=ttl, blocking=False,
                                   thread_local=False)
        return lock if lock.acquire() else None
    except redis.RedisError:
        logger.warning("fetch lock of channel %s unavailable; fetching without it", channel_id, exc_info=True)
        return _NoLock()


def fetch_lock_release(lock) -> None:
    with contextlib.suppress(redis.RedisError, redis.exceptions.LockError):
        lock.release()
