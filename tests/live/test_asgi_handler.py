"""live.asgi.OneCallHandler answers exactly as Django's own ASGI handler (in-process, on a
request thread lent as live.asgi.application_wrap lends it), and keeps Django's request signals:
request_started and request_finished once per request, on the thread that ran the view."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import ThreadSensitiveContext
from asgiref.testing import ApplicationCommunicator
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import connections

from live.asgi import OneCallHandler
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the views run on another thread
    # WhiteNoise's file is a synchronous iterator: Django's ASGI send_response warns, either handler.
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators"),
]


async def _exchange(app, method: str, path: str, *, headers=(), body: bytes = b"") -> tuple[int, dict, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in headers)],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(20)
    parts = []
    while True:
        message = await communicator.receive_output(20)
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.wait(20)
    headers_out = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers_out, b"".join(parts)


def _answers(handler, requests, lent_thread_ident: list | None = None) -> list[tuple[int, dict, bytes]]:
    """Each request through `handler` on one lent thread, as application_wrap serves the API
    (the context is entered inside the application: the communicator runs it in a fresh one)."""
    thread = ThreadPoolExecutor(max_workers=1)

    async def application(scope, receive, send):
        async with ThreadSensitiveContext(executor=thread):
            await handler(scope, receive, send)

    async def run():
        return [await _exchange(application, method, path, **options) for method, path, options in requests]

    try:
        answers = asyncio.run(run())
        if lent_thread_ident is not None:
            lent_thread_ident.append(thread.submit(threading.get_ident).result())
    finally:
        thread.submit(connections.close_all).result()
        thread.shutdown()
    for _status, headers, _body in answers:
        headers.pop("x-request-id", None)  # new per request
    return answers


def test_one_call_handler_answers_as_djangos_own(make_key, sku, location):
    key = make_key()
    auth = {"headers": [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]}
    requests = [
        ("GET", "/healthz", {}),
        ("GET", f"/api/v1/stock/{sku.code}/", auth),
        ("GET", "/api/v1/stock/NO-SUCH-SKU/", auth),
        ("GET", f"/api/v1/stock/{sku.code}/", {}),  # no key: 401
        ("POST", "/api/v1/reservations/", {**auth, "body": b"{not json"}),  # no Idempotency-Key: 400
        ("DELETE", "/healthz", {}),
        ("GET", "/no/such/page/", {}),
        ("GET", "/static/live/storefront.css", {}),  # a streamed answer (WhiteNoise's file)
    ]
    one_call = _answers(OneCallHandler(), requests)
    django_own = _answers(ASGIHandler(), requests)
    assert [answer[0] for answer in one_call] == [200, 200, 404, 401, 400, 405, 404, 200]
    assert one_call == django_own
    static = (ROOT / "live/static/live/storefront.css").read_bytes()
    assert one_call[-1][2] == static  # the streamed file, every byte


def test_request_signals_fire_once_per_request_on_the_views_thread(sku, make_key):
    seen: list[tuple[str, int]] = []

    def started(**kwargs):
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs):
        seen.append(("finished", threading.get_ident()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        lent: list[int] = []
        status = [answer[0] for answer in _answers(OneCallHandler(), [("GET", "/healthz", {}),
                                                                      ("GET", "/static/live/storefront.css", {})],
                                                   lent)]
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert status == [200, 200]
    assert [name for name, _ in seen] == ["started", "finished", "started", "finished"]
    assert {thread for _, thread in seen} == set(lent)  # the lent thread, which ran the view
