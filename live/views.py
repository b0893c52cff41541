"""`GET /api/v1/stream/stock/` (server-sent events) and the demo storefront page.

The stream is a plain async Django view, not a DRF view (DRF has no async views): it checks the
key and the SKUs with one short database visit, registers with this process's hub
(live.hub) and answers a StreamingHttpResponse whose async generator waits on the hub. Served by
the ASGI application (config.asgi, uvicorn workers): an open stream holds no thread and no
database connection. Contract: CONTRACT.md section 4 "Live stock"; decisions in docs/live.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from core.auth import api_key_from_token
from core.errors import json_error
from live.hub import Hub, StockEvent, Subscriber, hub_get
from live.keys import cursor_parse
from live.selectors import sku_ids_for_codes

STREAM_MAX_SKUS = 100  # contract
READ_SCOPE = "stock:read"


class _Refusal(Exception):  # noqa: N818 - carries the answer, not a failure of ours
    def __init__(self, response: JsonResponse):
        self.response = response


def _unauthorized(code: str, detail: str) -> _Refusal:
    response = json_error(401, code, detail)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return _Refusal(response)


def _codes(request: HttpRequest) -> list[str]:
    """The distinct `?sku=` codes, in order; 400 when none or more than 100."""
    codes = list(dict.fromkeys(code.strip() for code in request.GET.getlist("sku") if code.strip()))
    if not codes:
        raise _Refusal(json_error(400, "sku_required", "Give at least one ?sku= parameter."))
    if len(codes) > STREAM_MAX_SKUS:
        raise _Refusal(json_error(400, "too_many_skus", f"At most {STREAM_MAX_SKUS} SKUs per stream."))
    return codes


def _authorize(request: HttpRequest) -> None:
    """Bearer key with `stock:read`; or `?key=` for a key whose only scope is `stock:read`
    (EventSource cannot send headers, and a URL ends up in logs and histories: a key that can
    change anything must never travel there)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("authentication_failed", "Authorization must be 'Bearer <api key>'.")
        key = api_key_from_token(token.strip())
        if key is None:
            raise _unauthorized("authentication_failed", "Invalid or revoked API key.")
        if READ_SCOPE not in key.scopes:
            raise _Refusal(json_error(403, "permission_denied", f"This API key lacks the '{READ_SCOPE}' scope."))
        return
    token = request.GET.get("key", "").strip()
    if not token:
        raise _unauthorized("not_authenticated",
                            "An API key is required: 'Authorization: Bearer <key>' (or ?key= for a key "
                            "whose only scope is stock:read).")
    key = api_key_from_token(token)
    if key is None:
        raise _unauthorized("authentication_failed", "Invalid or revoked API key.")
    if set(key.scopes) != {READ_SCOPE}:
        raise _Refusal(json_error(
            403, "key_not_allowed_in_url",
            "Only a key whose only scope is 'stock:read' may be given as ?key= (URLs are logged); "
            "send this key as 'Authorization: Bearer <key>' instead."))


def _stream_prepare(request: HttpRequest) -> dict[int, str]:
    """Database part of opening a stream (one short visit): key, then SKUs; id -> code."""
    codes = _codes(request)
    _authorize(request)
    found = sku_ids_for_codes(codes=codes)
    unknown = [code for code in codes if code not in found]
    if unknown:
        raise _Refusal(json_error(404, "sku_not_found", f"Unknown SKU(s): {', '.join(unknown[:10])}.",
                                  skus=unknown))
    return {found[code]: code for code in codes}


@csrf_exempt  # an API endpoint (Bearer keys, no cookies): other methods get the API's 405, not CSRF's 403
async def stock_stream(request: HttpRequest) -> HttpResponse:
    """Server-sent events: `event: stock` with the SKU's stock after each committed change."""
    if request.method != "GET":
        response = json_error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
        response["Allow"] = "GET"
        return response
    if not isinstance(request, ASGIRequest):
        return json_error(503, "stream_unavailable",
                          "Streams are served by the ASGI application (config.asgi), not under WSGI.")
    try:
        skus = await sync_to_async(_stream_prepare)(request)
    except _Refusal as refusal:
        return refusal.response
    hub = hub_get()
    try:
        await asyncio.wait_for(hub.ready.wait(), timeout=5)
        subscriber, resume = await _subscribe(hub, request, skus)
    except (TimeoutError, OSError, ConnectionError) as exc:
        response = json_error(503, "stream_unavailable", f"Live stock is unavailable ({type(exc).__name__}).")
        response["Retry-After"] = "2"
        return response
    response = StreamingHttpResponse(_events(hub, subscriber, resume), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a buffering proxy (nginx) would hold the events back
    return response


async def _subscribe(hub: Hub, request: HttpRequest, skus: dict[int, str]) -> tuple[Subscriber, dict[int, int]]:
    """Register before answering (a change committed once the client has the headers is never
    missed), and work out what the client missed: SKU id -> number of its latest change."""
    epoch, now = await hub.position()
    last_event = cursor_parse(request.headers.get("Last-Event-ID") or request.GET.get("last_event_id"))
    resuming = last_event is not None and last_event[0] == epoch and last_event[1] <= now
    send_all = (not resuming and (request.headers.get("Last-Event-ID") is not None
                                  or request.GET.get("initial") in ("1", "true")))
    after = last_event[1] if resuming and last_event else now
    subscriber = Subscriber(skus=skus, epoch=epoch, after=after, cursor=0 if send_all else after)
    hub.add(subscriber)
    last = await hub.last_changes(skus)
    if send_all:
        resume = {sku_id: last.get(sku_id, 0) for sku_id in skus}
    else:
        resume = {sku_id: seq for sku_id, seq in last.items() if seq > after}
    return subscriber, resume


async def _events(hub: Hub, subscriber: Subscriber, resume: dict[int, int]):
    heartbeat = settings.LIVE_HEARTBEAT_SECONDS
    ends_at = time.monotonic() + settings.LIVE_STREAM_MAX_SECONDS
    try:
        # `retry`: how long a browser waits before reconnecting (with Last-Event-ID).
        yield b"retry: 2000\n: stream open\n\n"
        if resume:
            states = await hub.read({sku_id: subscriber.skus[sku_id] for sku_id in resume})
            for sku_id, (revision, body) in states.items():
                subscriber.offer(StockEvent(sku_id, subscriber.epoch, resume[sku_id], revision, body), force=True)
        next_beat = time.monotonic() + heartbeat
        while True:
            frames = subscriber.take()
            if frames:
                yield frames
            now = time.monotonic()
            if now >= ends_at:
                return  # the client reconnects with Last-Event-ID: nothing is lost
            if now >= next_beat:
                yield b": keep-alive\n\n"
                next_beat = now + heartbeat
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscriber.wake.wait(), timeout=max(0.0, min(next_beat, ends_at) - now))
    finally:
        hub.remove(subscriber)


# ------------------------------------------------------------------------------ storefront


@never_cache
def storefront(request: HttpRequest) -> HttpResponse:
    """The demo storefront: demo SKUs (or `?sku=`), live over SSE, a "buy one" button each."""
    from live.demo import storefront_keys, storefront_skus

    codes = [c for c in request.GET.getlist("sku") if c.strip()][:STREAM_MAX_SKUS] or None
    keys = storefront_keys() if settings.DEMO_MODE else None
    return render(request, "storefront/index.html", {
        "skus": storefront_skus(codes=codes),
        "read_key": keys.read if keys else "",
        "write_key": keys.write if keys else "",
        "demo_mode": settings.DEMO_MODE,
    })
