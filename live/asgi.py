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

Everything but a stream is served by `OneCallHandler`: the whole request in one call on that
thread (Django's own handler hops between the loop and the thread five times per request).

Lifespan: the live hub of the process (live.hub) is stopped cleanly at shutdown.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse
from django.urls import set_script_prefix

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


class OneCallHandler(ASGIHandler):
    """Django's ASGI handler, with each request's synchronous part run as one call on the
    request's thread: request_started, the middleware chain, URL resolution, the view, and, for
    an answer held in memory, request_finished.

    Django's own handler builds an async chain and, with our synchronous middlewares, crosses
    between the event loop and the thread five times per request (request_started, the chain,
    back to the loop to resolve the URL, the view, response.close()); each crossing costs a
    thread wake-up and a context copy, more than a bare request's own work (docs/performance.md).
    Only the body is read and the answer sent on the loop, as before. A streamed answer (a
    static file) is sent by Django's send_response, then closed on the thread, as Django does.
    Live streams, whose views are async, keep Django's handler (application_wrap).
    """

    def __init__(self):
        BaseHandler.__init__(self)  # not ASGIHandler.__init__: it builds the async chain
        self.load_middleware(is_async=False)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            try:
                await self.send_response(response, send)  # uvicorn ignores sends to a client gone
            finally:
                if response.streaming:
                    await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    def _respond(self, scope, body_file):
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)  # the chain; a 4xx/5xx is logged here, as Django does
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            response.close()  # request_finished on the request's thread; the body is already in memory
        return response


def application_wrap(django_app):
    """The ASGI callable `config.asgi` serves. `django_app` (Django's handler) serves the live
    streams; everything else goes to a OneCallHandler unless ASGI_ONE_CALL is off."""
    threads = _Threads(settings.ASGI_SYNC_THREADS)
    api_app = OneCallHandler() if settings.ASGI_ONE_CALL else django_app
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
                await api_app(scope, receive, send)
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
