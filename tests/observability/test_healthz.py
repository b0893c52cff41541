"""/healthz names a failing check to everyone, but its exception text only to an operator."""

from __future__ import annotations

REMOTE = "198.51.100.23"  # TEST-NET-2: not loopback
BROKEN_REDIS = "redis://leaky-user:leaky-pass@127.0.0.1:1/0"  # nothing listens on port 1


def test_anonymous_callers_get_no_exception_text(client, db, settings):
    settings.REDIS_URL = BROKEN_REDIS

    response = client.get("/healthz", REMOTE_ADDR=REMOTE)

    assert response.status_code == 503
    assert response.json() == {"status": "error", "checks": {"database": "ok", "redis": "error", "broker": "ok"}}
    for leak in (b"Error", b"127.0.0.1", b"leaky", b"refused", b"port"):
        assert leak not in response.content


def test_operators_get_the_detail_and_the_log_has_it(client, db, settings, json_log):
    settings.REDIS_URL = BROKEN_REDIS
    settings.METRICS_TOKEN = "ops-token"

    local = client.get("/healthz", HTTP_X_REQUEST_ID="hz-1").json()["checks"]["redis"]
    with_token = client.get("/healthz", REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION="Bearer ops-token").json()
    proxied = client.get("/healthz", HTTP_X_FORWARDED_FOR=REMOTE).json()

    assert local.startswith("error: ") and "ConnectionError" in local
    assert with_token["checks"]["redis"].startswith("error: ")
    assert proxied["checks"]["redis"] == "error"
    [warning] = [e for e in json_log() if e["logger"] == "core.views" and e["request_id"] == "hz-1"]
    assert warning["level"] == "WARNING" and "redis" in warning["message"] and "ConnectionError" in warning["message"]
