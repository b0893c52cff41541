"""Per-channel rate limits and the per-channel push lock, shared by every worker through Redis.

The limiter is a token bucket (`rate_limit_per_second` refill, `rate_limit_burst` capacity) kept
in one Redis hash and updated by one Lua script, so N workers on M machines together never send a
channel more than its limit. The clock is Redis' own (`TIME`), so skew between worker machines
does not matter. A marketplace's own "slow down" (429 + Retry-After / X-Rate-Limit-Time-Reset-Ms)
blocks the channel for every worker with `ratelimit_block`.
"""

from __future__ import annotations

import contextlib
import threading

import redis
from django.conf import settings

_BUCKET_SCRIPT = """
local bucket = KEYS[1]
local block = KEYS[2]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local blocked = redis.call('PTTL', block)
if blocked > 0 then return blocked end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', bucket, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 60000)
return wait
"""

_local = threading.local()


def redis_client() -> redis.Redis:
    """One client per thread (and per process: redis-py resets its pool after a fork)."""
    client = getattr(_local, "client", None)
    url = settings.REDIS_URL
    if client is None or getattr(_local, "url", None) != url:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
        _local.client, _local.url = client, url
    return client


def _keys(channel_id: int) -> list[str]:
    return [f"stockline:ratelimit:{channel_id}", f"stockline:ratelimit:{channel_id}:blocked"]


def ratelimit_acquire(*, channel_id: int, rate: float, burst: int) -> float:
    """Take one request token for the channel. Returns 0.0 when the request may go now, else the
    seconds to wait before asking again (nothing is taken then)."""
    wait_ms = redis_client().eval(_BUCKET_SCRIPT, 2, *_keys(channel_id), max(rate, 0.001), max(burst, 1))
    return int(wait_ms) / 1000.0


def ratelimit_block(*, channel_id: int, seconds: float) -> None:
    """The marketplace asked us to wait: no worker sends to this channel for `seconds`."""
    ms = max(int(seconds * 1000), 1)
    client = redis_client()
    current = client.pttl(_keys(channel_id)[1])
    if current is None or current < ms:
        client.set(_keys(channel_id)[1], "1", px=ms)


def ratelimit_reset(*, channel_id: int) -> None:
    """Forget the bucket and any block (tests, and an operator's config change)."""
    redis_client().delete(*_keys(channel_id))


def push_lock(*, channel_id: int, ttl: float):
    """The single-flight lock for pushes to one channel: while one worker holds it no other sends
    to that channel, so an older quantity can never arrive after a newer one. The holder extends
    it (`reacquire`) after every request; if the holder dies it expires after `ttl` seconds."""
    return redis_client().lock(f"stockline:push-lock:{channel_id}", timeout=ttl, blocking=False,
                               thread_local=False)


WAKE_TTL = 5  # seconds; a queued wake-up older than this is assumed lost and may be queued again


def _wake_key(channel_id: int) -> str:
    return f"stockline:push-wake:{channel_id}"


def wake_claim(channel_ids: list[int]) -> list[bool]:
    """For each channel, True if no push task is queued-but-not-started for it (and mark one as
    queued now). Debounces wake-ups: 1,000 commits in a burst queue a handful of tasks, not
    1,000 per channel. On a Redis error every channel is woken (a duplicate task is harmless)."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        for channel_id in channel_ids:
            pipe.set(_wake_key(channel_id), "1", nx=True, ex=WAKE_TTL)
        return [bool(ok) for ok in pipe.execute()]
    except redis.RedisError:
        return [True] * len(channel_ids)


def wake_clear(channel_id: int) -> None:
    """A push task starting for the channel: from now on a new commit must queue another one
    (it may commit after this task's claim)."""
    with contextlib.suppress(redis.RedisError):
        redis_client().delete(_wake_key(channel_id))
