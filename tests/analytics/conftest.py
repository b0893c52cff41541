"""Ledgers built through the real services: sales back-dated with `occurred_at` (the services
take it in MovementContext, as events from a POS or marketplace carry it), so the ledger invariant
holds and every analytics answer is checked against numbers the test knows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from inventory import services
from inventory.services import MovementContext


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def patch(client, url, body):
    return client.patch(url, data=json.dumps(body), content_type="application/json")


def assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
    if code:
        assert body["error"] == code, body


def receive(sku, location, quantity, at: datetime | None = None):
    return services.stock_receive(sku=sku.code, location=location.code, quantity=quantity,
                                  context=MovementContext(source="test", occurred_at=at))


def sell(sku, location, quantity, at: datetime | None = None):
    """A sale that happened at `at` (recorded now)."""
    return services.stock_sell(sku=sku.code, location=location.code, quantity=quantity,
                               context=MovementContext(source="test", occurred_at=at))


def midnight(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def bucket_base():
    """A 5-minute bucket far from today's real buckets, at 10:00 UTC on a fixed day, so tests that
    snapshot at chosen instants never meet the day's real baseline rules by accident."""
    return datetime(2031, 3, 10, 10, 0, tzinfo=UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
