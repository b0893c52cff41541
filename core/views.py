from __future__ import annotations

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core.errors import json_error
from core.observability.views import request_is_operator

logger = logging.getLogger(__name__)


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_redis() -> str:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_broker() -> str:
    from celery import current_app  # the project's app (config/__init__.py loads it at start-up)

    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


@csrf_exempt  # a POST must get our JSON 405, not Django's CSRF page
def healthz(request):
    """Liveness and dependencies. 503 names the failing check. The exception's class and message
    (which can carry host names, ports, user names) go to the log, and in the answer only to an
    operator (loopback, or the METRICS_TOKEN bearer); anyone else reads `"error"`."""
    if request.method not in ("GET", "HEAD"):
        return json_error(405, "method_not_allowed", "Use GET.")
    checks = {}
    detailed = request_is_operator(request)
    for name, check in (("database", _check_database), ("redis", _check_redis), ("broker", _check_broker)):
        try:
            checks[name] = check()
        except Exception as exc:  # a health check reports, it never raises
            logger.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300] if detailed else "error"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)
