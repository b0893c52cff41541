"""One Redis connection pool per process for Django's cache.

Django keeps cache backends in a context-local (`asgiref.local.Local`): under ASGI every request
runs in a fresh context, so it built a new `RedisCache`, hence a new connection pool, and so
opened a new Redis connection (TCP connect, HELLO, CLIENT SETINFO with a package-metadata
lookup) on every request that touched the cache: 12-20 % of a webhook acknowledgement's CPU in
py-spy (docs/performance.md). Django lets the pool class be chosen (CACHES OPTIONS
`pool_class`); this one hands every backend instance of a process the same pool for the same
URL and options. redis-py pools are thread-safe, and a forked child (a Celery or gunicorn worker)
gets its own, because the process id is part of the key.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class SharedConnectionPool(redis.ConnectionPool):
    _shared: dict[tuple, redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Any:  # the pool redis-py would make, made once
        key = (os.getpid(), url, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
            return pool


class _SharedClientCacheClient(RedisCacheClient):
    """Django's client object for Redis, handing out one `redis.Redis` per pool instead of
    building one per cache call (its constructor was 3-6 % of a webhook acknowledgement's CPU,
    which calls `cache.add` once to wake the drain). A `redis.Redis` is thread-safe."""

    _clients: dict[int, redis.Redis] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None or client.connection_pool is not pool:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class SharedRedisCache(RedisCache):
    """Django's RedisCache with the shared pool (CACHES OPTIONS `pool_class`, above) and the
    shared client object (CACHES BACKEND `core.cache.SharedRedisCache`)."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _SharedClientCacheClient
