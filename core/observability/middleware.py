"""Request id and HTTP metrics for every request, outermost in settings.MIDDLEWARE.

Cheap by design (the flash-sale path runs through it): a header read, a contextvar, a clock, one
counter and one histogram update in memory (an mmap write in multiprocess mode), one log line.
No database query, no cache call. Works under WSGI and ASGI (an async view is awaited, not
pushed to a thread).
"""

from __future__ import annotations

import logging
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.encoding import escape_uri_path

from core.observability.context import (
    REQUEST_ID_HEADER,
    request_id_new,
    request_id_reset,
    request_id_sane,
    request_id_set,
)
from core.observability.metrics import HTTP_DURATION, HTTP_REQUESTS

access_logger = logging.getLogger("stockline.request")

# The label of requests no URL pattern matched (404s, refusals before URL resolution): one value,
# so a scan of random paths cannot create a time series per path.
UNMATCHED_ROUTE = "<unmatched>"
# Methods outside this set are counted as "other" (a client can send any token as a method).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_META_REQUEST_ID = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


def route_of(request) -> str:
    """The URL pattern that served the request (`api/v1/stock/<str:sku>/`), never the raw path."""
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route is not None else UNMATCHED_ROUTE


class ObservabilityMiddleware:
    """Takes the caller's `X-Request-ID` when sane (else makes one), keeps it in the context for
    every log line and task queued meanwhile, echoes it in the response, counts and times the
    request by URL pattern, and writes one `stockline.request` log line."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        request_id, token, started = self._begin(request)
        try:
            response = self.get_response(request)
            self._end(request, response, request_id, started)
            return response
        finally:
            request_id_reset(token)

    async def _acall(self, request):
        request_id, token, started = self._begin(request)
        try:
            response = await self.get_response(request)
            self._end(request, response, request_id, started)
            return response
        finally:
            request_id_reset(token)

    @staticmethod
    def _begin(request):
        request_id = request_id_sane(request.META.get(_META_REQUEST_ID)) or request_id_new()
        request.request_id = request_id
        return request_id, request_id_set(request_id), time.perf_counter()

    @staticmethod
    def _end(request, response, request_id: str, started: float) -> None:
        # A streaming answer (server-sent events) is timed to its first byte's readiness, not to
        # the end of the stream: a stream open for an hour is not a slow request.
        elapsed = time.perf_counter() - started
        route = route_of(request)
        method = request.method if request.method in _METHODS else "other"
        status = response.status_code
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_DURATION.labels(route).observe(elapsed)
        response[REQUEST_ID_HEADER] = request_id
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                # The path escaped (no forged log lines), without the query string (`?key=`).
                "%s %s %s %.1fms", method, escape_uri_path(request.path), status, elapsed * 1000.0,
                extra={"method": method, "route": route, "status": status,
                       "duration_ms": round(elapsed * 1000.0, 2)},
            )
