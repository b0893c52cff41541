"""The request id: taken or made at the door, echoed, on every log line, and carried into the
Celery tasks a request causes (and the pushes they make) through the message headers."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from core.observability.context import request_id_get, request_id_sane
from core.observability.logs import JsonFormatter, RequestContextFilter, TextFormatter
from inventory.models import StockPosition
from tests.channels.conftest import external_id, wait_for
from tests.factories import LocationFactory, SkuFactory

ADJUST = "/api/v1/stock/adjustments/"


def test_a_sane_incoming_id_is_kept_and_echoed(client, db):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="trace-1234.abcd")
    assert response["X-Request-ID"] == "trace-1234.abcd"


@pytest.mark.parametrize("given", ["", "has space", "x" * 200, "bad\"quote", "-leading-dash", "ünï"])
def test_an_insane_incoming_id_is_replaced(client, db, given):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=given)
    made = response["X-Request-ID"]
    assert made != given and len(made) == 32 and int(made, 16) >= 0


def test_every_answer_carries_an_id_even_refusals(client, db):
    assert client.get("/no/such/page/")["X-Request-ID"]
    assert client.get("/api/v1/stock/x/")["X-Request-ID"]  # 401 from DRF
    assert request_id_get() is None  # nothing leaks into the next request of this thread


def test_json_log_line_carries_the_request_id(client, db, json_log):
    # when
    response = client.get("/healthz", HTTP_X_REQUEST_ID="req-json-1")

    # then: the request's line is one JSON object with the id, the route and the status
    assert response.status_code == 200
    [line] = [entry for entry in json_log() if entry["logger"] == "stockline.request"]
    assert line["request_id"] == "req-json-1"
    assert line["route"] == "healthz" and line["status"] == 200 and line["method"] == "GET"
    assert line["level"] == "INFO" and line["ts"].endswith("+00:00")


def test_formatters_without_and_with_a_request():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    RequestContextFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] is None
    assert "] hello" not in TextFormatter().format(record)
    record.request_id = "abc"
    assert TextFormatter().format(record).endswith("WARNING x [abc] hello world")
    assert request_id_sane("abc") == "abc" and request_id_sane("a\nb") is None


@pytest.fixture
def json_worker_logs(monkeypatch):
    """The worker started by `celery_worker_process` (asked for after this) logs JSON."""
    monkeypatch.setenv("LOG_FORMAT", "json")


@pytest.mark.slow
def test_the_request_id_follows_the_change_into_the_push_task(json_worker_logs, celery_worker_process, tmp_path,
                                                              simulator, make_channel, list_sku, api):
    # given: a SKU sold on a channel (the simulator's store), its first push done
    LocationFactory(code="wh")
    sku = SkuFactory(code="RID-1")
    channel = make_channel("woocommerce", slug="rid-shop")
    list_sku(channel, sku)
    shown = lambda: simulator.state.levels(channel.slug)["levels"].get(external_id("woocommerce", 1, sku.code))  # noqa: E731
    wait_for(lambda: shown() == 0, timeout=90, message="the listing's first push")
    request_id = f"rid-{uuid.uuid4().hex}"

    # when: a stock change arrives over HTTP with our id
    response = api.post(ADJUST, data=json.dumps({"sku": sku.code, "location": "wh", "type": "receipt",
                                                 "quantity": 7}), content_type="application/json",
                        HTTP_X_REQUEST_ID=request_id)
    assert response.status_code == 201, response.content
    assert StockPosition.objects.get(sku=sku).on_hand == 7

    # then: the worker pushed it, and its log lines for that push carry the request's id
    wait_for(lambda: shown() == 7, timeout=90, message="the channel to show 7")
    log = tmp_path / "worker.log"

    def push_lines() -> list[dict]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return [entry for entry in lines if entry.get("request_id") == request_id]

    deadline = time.monotonic() + 30
    while not any(e.get("task") == "channels.push_channel" and "succeeded" in e["message"] for e in push_lines()):
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        time.sleep(0.2)
    succeeded = [e for e in push_lines() if "succeeded" in e["message"]]
    assert all(e["task"] == "channels.push_channel" and e["task_id"] for e in succeeded)


def test_the_middleware_serves_asgi_too(db):
    """Under an ASGI server (async views, server-sent events) the same id and metrics apply."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    response = async_to_sync(AsyncClient().get)("/no/such/async/page/", headers={"X-Request-ID": "asgi-1"})
    assert response.status_code == 404
    assert response["X-Request-ID"] == "asgi-1"
