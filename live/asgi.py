"""The ASGI application around Django's: which thread runs the synchronous parts of a request.

Django under ASGI runs each request's synchronous code (sync views, sync middleware, signal
receivers) on a thread made for that request and kept until the response ends. For the API
that means a new thread and a new PostgreSQL connection per request (connections are
per-thread; CONN_MAX_AGE cannot reuse them); for a stream it means one idle thread per open
connection. So, per request:

- the API and pages borrow one of `ASGI_SYNC_THREADS` long-lived threads (the gthread model:
  persistent connections, at most that many sync requests at once per process; a request
  waiting for a thread waits in the event loop, holding none);
- streams (`/api/v1/stream/`) share a few threads for their short synchronous parts (the sync
  middleware, the key and SKU checks, request signals): any of them may run any part, since a
  stream's only database work is one call. An open stream holds no thread at all.

Lifespan: the live hub of the process (live.hub) is stopped cleanly at shutdown.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings

STREAM_PREFIX = "/api/v1/stream/"
# Threads opening streams at once (each busy a few milliseconds per new stream).
STREAM_THREADS = 4


class _Threads:
    """A fixed set of single-thread executors, lent one per request."""

    def __init__(self, size: int):
        self.size = size
        self._free: asyncio.Queue[ThreadPoolExecutor] | None = None

    def _queue(self) -> asyncio.Queue[ThreadPoolExecutor]:
        if self._free is None:
            self._free = asyncio.Queue()
            for n in range(self.size):
                self._free.put_nowait(ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"web-{n}"))
        return self._free

    async def borrow(self) -> ThreadPoolExecutor:
        return await self._queue().get()

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        self._queue().put_nowait(executor)


def application_wrap(django_app):
    """The ASGI callable `config.asgi` serves."""
    threads = _Threads(settings.ASGI_SYNC_THREADS)
    stream_threads = ThreadPoolExecutor(max_workers=STREAM_THREADS, thread_name_prefix="stream")

    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"].startswith(STREAM_PREFIX):
            async with ThreadSensitiveContext(executor=stream_threads):
                await django_app(scope, receive, send)
            return
        executor = await threads.borrow()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await django_app(scope, receive, send)
        finally:
            threads.give_back(executor)

    return application


async def _lifespan(receive, send) -> None:
    from live.hub import hubs_close

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await hubs_close()
            await send({"type": "lifespan.shutdown.complete"})
            return
