"""GET /metrics: the contract's families, route labels from URL patterns, the access rule, the
database-state gauges, and counters summed over processes in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels.models import Channel, DeadLetter
from channels.services import channel_create, listing_upsert
from core.observability.middleware import UNMATCHED_ROUTE
from core.sql import sql_compose
from ingestion.models import InboundEvent, OversellIncident
from inventory import services as stock
from inventory.models import StockPosition
from inventory.tasks import verify_ledger_task
from reservations.models import Reservation
from tests.conftest import ROOT, database_url_for_subprocess
from tests.factories import LocationFactory, SkuFactory
from tests.observability.conftest import CONTRACT_FAMILIES, parse, sample_value

REMOTE = "203.0.113.7"  # TEST-NET-3: not loopback


def test_metrics_parse_and_have_every_contract_family(client, db, scrape):
    # given: one request answered, so the HTTP families have samples
    client.get("/healthz")

    # when
    response = client.get("/metrics")

    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = parse(response.content.decode())
    for name, kind in CONTRACT_FAMILIES.items():
        assert name in families, f"missing family {name}"
        assert families[name].type == kind, (name, families[name].type)
    samples = {s.name for family in families.values() for s in family.samples}
    assert "stockline_http_requests_total" in samples
    assert "stockline_http_request_duration_seconds_bucket" in samples
    assert "stockline_oversell_incidents_total" in samples
    assert "stockline_channel_circuit_open" in families
    assert sample_value(families, "stockline_metrics_state_up") == 1


def test_route_label_is_the_url_pattern_never_the_path(api, db, scrape):
    # given
    location = LocationFactory(code="wh")
    sku = SkuFactory(code="ROUTE-SECRET-42")
    stock.stock_receive(sku=sku, location=location, quantity=3)
    route = "api/v1/stock/<str:sku>/"
    before = sample_value(scrape(), "stockline_http_requests", "stockline_http_requests_total",
                          method="GET", route=route, status="200") or 0

    # when
    assert api.get(f"/api/v1/stock/{sku.code}/").status_code == 200
    assert api.get("/api/v1/no/such/thing/ROUTE-SECRET-42").status_code == 404

    # then
    families = scrape()
    after = sample_value(families, "stockline_http_requests", "stockline_http_requests_total",
                         method="GET", route=route, status="200")
    assert after == before + 1
    assert sample_value(families, "stockline_http_request_duration_seconds",
                        "stockline_http_request_duration_seconds_count", route=route) >= 1
    assert sample_value(families, "stockline_http_requests", "stockline_http_requests_total",
                        method="GET", route=UNMATCHED_ROUTE, status="404") >= 1
    routes = {s.labels.get("route") for family in families.values() for s in family.samples}
    assert not any("ROUTE-SECRET-42" in (r or "") for r in routes), routes


def test_unknown_methods_share_one_label(client, db, scrape):
    client.generic("BREW", "/healthz")
    families = scrape()
    methods = {s.labels["method"] for s in families["stockline_http_requests"].samples}
    assert "BREW" not in methods and "other" in methods


def test_metrics_from_elsewhere_need_the_token(client, db, settings):
    # no token configured: not found from a remote address (but open from loopback)
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR=REMOTE).status_code == 404
    assert client.get("/metrics").status_code == 200

    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", REMOTE_ADDR=REMOTE).status_code == 404
    assert client.get("/metrics", REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION="Basic s3cret-token").status_code == 404
    ok = client.get("/metrics", REMOTE_ADDR=REMOTE, HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ok.status_code == 200
    assert "stockline_inbound_events" in parse(ok.content.decode())
    # a reverse proxy on the same host connects from loopback: what it forwards is not local
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR=REMOTE).status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_state_gauges_count_the_database(db, scrape):
    # given: a channel with a waiting pair, an open dead letter and an open circuit; inbound events;
    # reservations; an oversell incident
    location = LocationFactory(code="wh")
    sku = SkuFactory(code="OBS-1")
    channel = channel_create(slug="obs-shop", name="Obs shop", kind="woocommerce", base_url="http://127.0.0.1:9/",
                             credentials={"consumer_key": "ck", "consumer_secret": "cs"})
    listing_upsert(channel=channel, sku=sku, external_id="501")
    stock.stock_receive(sku=sku, location=location, quantity=5)
    now = timezone.now()
    DeadLetter.objects.create(channel=channel, sku=sku, quantity=5, attempts=8, first_failed_at=now,
                              last_failed_at=now)
    Channel.objects.filter(pk=channel.pk).update(circuit_state=Channel.Circuit.OPEN, circuit_opened_at=now)
    for n, (status, age) in enumerate([("pending", 120), ("pending", 5), ("failed", 1), ("done", 1)]):
        InboundEvent.objects.create(source="api", dedup_key=f"api:obs-{n}", delivery_id=f"obs-{n}", status=status,
                                    next_attempt_at=now, received_at=now - timedelta(seconds=age))
    Reservation.objects.create(status="active", expires_at=now + timedelta(minutes=15))
    Reservation.objects.create(status="committed")
    OversellIncident.objects.create(sku=sku, location=location, event_key="obs-oversell", requested=3,
                                    available_before=1, applied=1, shortfall=2)

    # when
    families = scrape()

    # then
    assert sample_value(families, "stockline_channel_backlog", channel="obs-shop") >= 1
    assert sample_value(families, "stockline_channel_oldest_dirty_age_seconds", channel="obs-shop") >= 0
    assert sample_value(families, "stockline_dead_letters", channel="obs-shop") == 1
    assert sample_value(families, "stockline_channel_circuit_open", channel="obs-shop") == 1
    assert sample_value(families, "stockline_inbound_events", status="pending") == 2
    assert sample_value(families, "stockline_inbound_events", status="failed") == 1
    assert sample_value(families, "stockline_inbound_events", status="ignored") == 0
    assert 119 <= sample_value(families, "stockline_inbound_oldest_pending_age_seconds") < 600
    assert sample_value(families, "stockline_reservations", status="active") == 1
    assert sample_value(families, "stockline_reservations", status="committed") == 1
    assert sample_value(families, "stockline_reservations", status="waiting") == 0
    assert sample_value(families, "stockline_oversell_incidents", "stockline_oversell_incidents_total") == 1


def test_state_gauges_cost_a_fixed_number_of_queries(db, client):
    def queries_of_one_scrape() -> int:
        with CaptureQueriesContext(connection) as context:
            assert client.get("/metrics").status_code == 200
        return len(context)

    def add_channels(first: int, count: int) -> None:
        for n in range(first, first + count):
            channel = channel_create(slug=f"obs-{n}", name=f"Obs {n}", kind="woocommerce",
                                     base_url="http://127.0.0.1:9/",
                                     credentials={"consumer_key": "ck", "consumer_secret": "cs"})
            listing_upsert(channel=channel, sku=SkuFactory(code=f"OBS-Q-{n}"), external_id=f"{n}")

    add_channels(0, 1)
    few = queries_of_one_scrape()
    add_channels(1, 10)
    # seven aggregates, plus the savepoint and its release inside the test's transaction
    assert queries_of_one_scrape() == few == 9


def test_ledger_drift_comes_from_the_last_verification(db, scrape):
    # given: a clean ledger, verified by the nightly task
    location = LocationFactory(code="wh")
    sku = SkuFactory(code="DRIFT-1")
    stock.stock_receive(sku=sku, location=location, quantity=4)
    started = time.time()
    verify_ledger_task.apply()
    families = scrape()
    assert sample_value(families, "stockline_ledger_drift_positions") == 0
    assert sample_value(families, "stockline_ledger_verified_timestamp_seconds") >= started

    # when: a position is changed behind the services' back (the ledger does not follow) and the
    # verification runs again
    with connection.cursor() as cursor:
        cursor.execute(sql_compose("UPDATE {table} SET on_hand = on_hand + 1 WHERE sku_id = %s",
                                   table=StockPosition._meta.db_table), [sku.pk])
    assert verify_ledger_task.apply().get() == 1

    # then
    assert sample_value(scrape(), "stockline_ledger_drift_positions") == 1


# ----------------------------------------------------------------------------------- processes

_REQUESTS_SCRIPT = textwrap.dedent("""
    import sys
    import django
    django.setup()
    from django.test import Client
    client = Client()
    for _ in range(int(sys.argv[1])):
        assert client.get("/no-such-page/").status_code == 404
    if sys.argv[2] == "scrape":
        response = client.get("/metrics")
        assert response.status_code == 200, response.content
        sys.stdout.write(response.content.decode())
""")


def _run(env: dict, requests: int, scrape: bool) -> str:
    result = subprocess.run([sys.executable, "-c", _REQUESTS_SCRIPT, str(requests), "scrape" if scrape else "-"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_multiprocess_mode_sums_every_process(db, tmp_path):
    """Like gunicorn workers and Celery children: each process writes its own files, and a scrape
    in any process sums them all."""
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DJANGO_SETTINGS_MODULE": "config.settings",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    _run(env, 3, scrape=False)
    _run(env, 2, scrape=False)
    families = parse(_run(env, 1, scrape=True))
    assert sample_value(families, "stockline_http_requests", "stockline_http_requests_total",
                        method="GET", route=UNMATCHED_ROUTE, status="404") == 6
    assert sample_value(families, "stockline_http_request_duration_seconds",
                        "stockline_http_request_duration_seconds_count", route=UNMATCHED_ROUTE) == 6
    assert "stockline_inbound_events" in families  # the state collector runs in this mode too
    assert len(list((tmp_path / "prom").glob("counter_*.db"))) == 3  # one file per process


def test_an_unusable_multiprocess_dir_falls_back_to_the_process(db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DJANGO_SETTINGS_MODULE": "config.settings",
           "PROMETHEUS_MULTIPROC_DIR": str(blocker / "prom")}
    families = parse(_run(env, 2, scrape=True))
    assert sample_value(families, "stockline_http_requests", "stockline_http_requests_total",
                        method="GET", route=UNMATCHED_ROUTE, status="404") == 2


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_metrics_answers_get_only(client, db, method):
    response = client.generic(method, "/metrics")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
