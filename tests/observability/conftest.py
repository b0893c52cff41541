"""Observability fixtures: scraping /metrics the way Prometheus reads it, and a JSON log capture."""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.observability.logs import JsonFormatter, RequestContextFilter

# The channel simulator and channel builders of the propagation tests (real HTTP, no patching).
from tests.channels.conftest import list_sku, make_channel, simulator  # noqa: F401

# Every family the contract names (section 4, "Metrics"); counters by their family name, which
# the text format exposes with a `_total` sample.
CONTRACT_FAMILIES = {
    "stockline_http_requests": "counter",
    "stockline_http_request_duration_seconds": "histogram",
    "stockline_inbound_events": "gauge",
    "stockline_inbound_oldest_pending_age_seconds": "gauge",
    "stockline_channel_backlog": "gauge",
    "stockline_channel_oldest_dirty_age_seconds": "gauge",
    "stockline_dead_letters": "gauge",
    "stockline_oversell_incidents": "counter",
    "stockline_reservations": "gauge",
    "stockline_ledger_drift_positions": "gauge",
}


def parse(text: str) -> dict:
    """{family name: family} as the Prometheus text parser reads the exposition."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(families: dict, family: str, sample: str | None = None, **labels) -> float | None:
    """The value of the one sample of `family` named `sample` (default: the family's own name)
    whose labels include `labels`; None when there is none."""
    for s in families[family].samples:
        if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


@pytest.fixture
def scrape(client):
    """GET /metrics from loopback (the test client's REMOTE_ADDR); the parsed families."""

    def get() -> dict:
        response = client.get("/metrics")
        assert response.status_code == 200, response.content
        return parse(response.content.decode())

    return get


@pytest.fixture
def json_log():
    """Root-logger lines formatted as LOG_FORMAT=json formats them, parsed; list of dicts."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        root.removeHandler(handler)
