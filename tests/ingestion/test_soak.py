"""A small soak end to end: gunicorn and two Celery workers (subprocesses on the test database),
client threads sending every kind of traffic, workers SIGKILLed meanwhile; nothing acknowledged
may be lost and the ledger must not drift."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from ingestion.models import InboundEvent
from inventory.models import StockPosition
from inventory.selectors import ledger_drift
from tests.conftest import database_url_for_subprocess

pytestmark = pytest.mark.slow


def figure(report: str, name: str) -> str:
    match = re.search(rf"^{name}\s+(.*)$", report, re.M)
    assert match, f"no '{name}' line in the report:\n{report}"
    return match.group(1)


def test_small_soak_with_worker_kills_loses_nothing(transactional_db, monkeypatch):
    from config.celery import app

    app.control.purge()  # tasks of earlier tests name rows that no longer exist
    monkeypatch.setenv("DATABASE_URL", database_url_for_subprocess())  # the children use the test database
    out = io.StringIO()

    # when
    call_command("soak", "--events", "300", "--workers", "2", "--kill-every", "1.5", "--clients", "6",
                 "--seed", "7", "--timeout", "60", stdout=out)

    # then
    report = out.getvalue()
    assert figure(report, "lost") == "0", report
    assert figure(report, "ledger drift").startswith("none"), report
    assert figure(report, "negative stock") == "none", report
    assert figure(report, "reservations left active") == "0", report
    assert int(figure(report, "worker kills").split()[0]) >= 1, report
    assert int(figure(report, "events sent").split()[0]) == 300, report
    failed = figure(report, "failed with reason")  # the deliberately malformed events, each with its reason
    for code in ("invalid_json", "unknown_listing", "unknown_sku"):
        assert re.search(rf"{code} \d+ \(expected\)", failed), report
    assert "UNEXPECTED" not in failed, report
    assert report.rstrip().endswith("verdict: PASS"), report
    # And independently of the report:
    assert ledger_drift() == []
    assert not InboundEvent.objects.filter(status="pending").exists()
    assert not StockPosition.objects.filter(on_hand__lt=0).exists()
    assert InboundEvent.objects.filter(channel__slug="soak-shopify", status="done").exists()
