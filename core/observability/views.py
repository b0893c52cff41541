"""`GET /metrics`: Prometheus text exposition (contract section 4, "Metrics")."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client.exposition import choose_encoder

from core.errors import json_error
from core.observability.metrics import scrape_registry

# Headers a reverse proxy adds: a request that came through one is not a local caller, even
# when the proxy itself connects from 127.0.0.1 (nginx on the same host).
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def request_is_local(request) -> bool:
    """The caller is on this machine: a loopback address that no proxy forwarded."""
    try:
        local = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
    return local and not any(request.META.get(header) for header in _PROXY_HEADERS)


def request_has_metrics_token(request) -> bool:
    """`Authorization: Bearer <METRICS_TOKEN>`, compared in constant time; never without a token."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if not token:
        return False
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def request_is_operator(request) -> bool:
    """Who may read operational detail (metrics, health check errors)."""
    return request_is_local(request) or request_has_metrics_token(request)


@csrf_exempt  # a POST must get our JSON 405, not Django's CSRF page
def metrics(request):
    """Open from loopback; from elsewhere only with the METRICS_TOKEN bearer, else 404 (the
    endpoint's existence is not advertised)."""
    if not request_is_operator(request):
        return json_error(404, "not_found", "No such resource.")  # as for any unknown URL
    if request.method not in ("GET", "HEAD"):
        response = json_error(405, "method_not_allowed", "Use GET.")
        response["Allow"] = "GET, HEAD"
        return response
    # Text format 0.0.4 unless the scraper's Accept asks for OpenMetrics (as prometheus-client's
    # own exporters negotiate).
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    body = encoder(scrape_registry())
    return HttpResponse(b"" if request.method == "HEAD" else body, content_type=content_type)
