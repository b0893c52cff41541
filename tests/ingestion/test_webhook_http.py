"""Webhook bodies over real HTTP: chunked transfer encoding and refused bodies on keep-alive
connections, against gunicorn as deployed (gthread, Dockerfile) and Django's own live server."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ingestion.models import InboundEvent
from ingestion.services import MAX_WEBHOOK_BYTES
from tests.conftest import ROOT, database_url_for_subprocess
from tests.ingestion.conftest import shopify_headers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn_url(transactional_db, tmp_path):
    """gunicorn serving the app (separate process, test database), as the Dockerfile runs it."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--worker-class",
             "gthread", "--workers", "1", "--threads", "4", "--timeout", "60"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}") from None
                    time.sleep(0.2)
            yield ("127.0.0.1", port)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def http_headers(meta: dict) -> dict:
    """Test-client META names (HTTP_X_SHOPIFY_TOPIC) as HTTP header names (X-Shopify-Topic)."""
    return {name.removeprefix("HTTP_").replace("_", "-").title(): value for name, value in meta.items()}


def chunks(body: bytes, size: int = 16 * 1024):
    for start in range(0, len(body), size):
        yield body[start:start + size]


def post_chunked(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict):
    # An iterable body and no Content-Length: http.client sends Transfer-Encoding: chunked.
    conn.request("POST", path, body=chunks(body), headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    return response.status, response.read()


def order_body() -> bytes:
    return json.dumps({"id": 5150, "name": "#1", "created_at": "2024-05-01T10:00:00Z", "line_items": []}).encode()


@pytest.fixture
def shop_channel(transactional_db, make_channel):
    from tests.ingestion.conftest import SHOPIFY_SECRET

    return make_channel("shopify", "shop", secret=SHOPIFY_SECRET, settings={"location_id": "905684977"})


def test_small_signed_chunked_webhook_is_accepted_over_gunicorn(gunicorn_url, shop_channel):
    body = order_body()
    conn = http.client.HTTPConnection(*gunicorn_url, timeout=30)

    status, answer = post_chunked(conn, "/webhooks/shop/", body, http_headers(
        shopify_headers(body, topic="orders/create", webhook_id="chunked-1")))

    assert status == 200, answer
    assert json.loads(answer)["status"] == "accepted"
    assert bytes(InboundEvent.objects.get(delivery_id="chunked-1").body) == body


def test_chunked_body_over_one_mebibyte_is_413_over_gunicorn(gunicorn_url, shop_channel):
    body = b"x" * (MAX_WEBHOOK_BYTES + 100 * 1024)  # 1.1 MiB
    conn = http.client.HTTPConnection(*gunicorn_url, timeout=30)

    status, answer = post_chunked(conn, "/webhooks/shop/", body, http_headers(
        shopify_headers(body, topic="orders/create")))

    assert status == 413, answer
    assert json.loads(answer)["error"] == "payload_too_large"
    assert InboundEvent.objects.count() == 0


def test_keep_alive_connection_still_works_after_a_413_over_gunicorn(gunicorn_url, shop_channel):
    conn = http.client.HTTPConnection(*gunicorn_url, timeout=30)
    big = b"x" * (2 * MAX_WEBHOOK_BYTES)
    conn.request("POST", "/webhooks/shop/", body=big, headers={"Content-Type": "application/json"})
    first = conn.getresponse()
    first.read()
    assert first.status == 413

    body = order_body()
    headers = http_headers(shopify_headers(body, topic="orders/create", webhook_id="after-413"))
    conn.request("POST", "/webhooks/shop/", body=body, headers={"Content-Type": "application/json", **headers})
    second = conn.getresponse()

    assert second.status == 200, second.read()
    assert InboundEvent.objects.filter(delivery_id="after-413").exists()


def test_chunked_webhook_on_djangos_live_server_is_411_not_401(live_server, shop_channel):
    """Django's own server does not de-chunk (no wsgi.input_terminated): the view cannot know the
    body, so it asks for a Content-Length rather than failing the signature."""
    host, port = live_server.url.removeprefix("http://").split(":")
    body = order_body()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    status, answer = post_chunked(conn, "/webhooks/shop/", body, http_headers(
        shopify_headers(body, topic="orders/create")))

    assert status == 411, answer
    assert json.loads(answer)["error"] == "length_required"
