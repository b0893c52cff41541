"""Real Celery workers (subprocesses on the test database and the real broker) drain events."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from django.db import connection, transaction

from core.auth import api_key_create
from ingestion.models import InboundEvent
from ingestion.services import drain_enqueue, inbound_events_drain, inbound_events_sweep
from inventory.models import StockMovement, StockPosition
from inventory.selectors import ledger_drift
from inventory.services import stock_receive
from tests.conftest import run_concurrently
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.slow


def receipts(prefix: str, count: int, skus: list[str], locations: list[str]) -> tuple[list[dict], dict]:
    events, expected = [], {}
    for i in range(count):
        sku, location, quantity = skus[i % len(skus)], locations[(i // len(skus)) % len(locations)], 1 + i % 3
        events.append({"event_id": f"{prefix}-{i}", "type": "receipt", "sku": sku, "location": location,
                       "quantity": quantity, "occurred_at": "2024-05-01T10:00:00Z"})
        expected[(sku, location)] = expected.get((sku, location), 0) + quantity
    return events, expected


def post_all(client, events: list[dict], batch: int = 100) -> None:
    for start in range(0, len(events), batch):
        response = client.post("/api/v1/events/", {"events": events[start:start + batch]}, format="json")
        assert response.status_code == 202 and response.json()["accepted"] == len(events[start:start + batch])


def wait_until_applied(count: int, timeout: float = 90, kick=None) -> None:
    deadline = time.monotonic() + timeout
    while InboundEvent.objects.filter(status="done").count() < count:
        assert time.monotonic() < deadline, (
            f"only {InboundEvent.objects.filter(status='done').count()} of {count} applied; statuses: "
            f"{list(InboundEvent.objects.exclude(status='done').values_list('status', 'error_code')[:5])}")
        if kick:
            kick()
        time.sleep(0.5)


def assert_exactly_once(expected: dict, total_events: int) -> None:
    assert StockMovement.objects.filter(event_key__startswith="api:").count() == total_events
    for (sku, location), quantity in expected.items():
        position = StockPosition.objects.get(sku__code=sku, location__code=location)
        assert position.on_hand == quantity, (sku, location)
    assert ledger_drift() == []


@pytest.fixture
def catalog(transactional_db):
    skus = [SkuFactory(code=f"W-{i}").code for i in range(4)]
    locations = [LocationFactory(code=code).code for code in ("wa", "wb")]
    return skus, locations


@pytest.fixture
def events_client(transactional_db):
    from rest_framework.test import APIClient

    _key, plaintext = api_key_create(name="wms", scopes=["events:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def test_1000_events_drained_by_two_workers_at_once_each_applied_exactly_once(request, catalog, events_client,
                                                                              settings, monkeypatch):
    # Three drain partitions (in this process, which stores the events, and in the workers): the
    # four SKUs hash onto all three, so both worker processes have a partition to drain.
    settings.INGESTION_PARTITIONS = 3
    monkeypatch.setenv("INGESTION_PARTITIONS", "3")
    skus, locations = catalog
    events, expected = receipts("bulk", 1000, skus, locations)
    post_all(events_client, events)  # durable before any worker exists; drains are queued on commit

    request.getfixturevalue("celery_worker_process")  # two prefork worker processes (queue purged)
    from ingestion.tasks import inbound_drain_task

    for partition in range(3):
        inbound_drain_task.delay(partition)  # every partition at once, so both processes claim
    wait_until_applied(1000)

    assert_exactly_once(expected, 1000)
    drainers = set(InboundEvent.objects.values_list("processed_by", flat=True))
    assert len(drainers) >= 2, drainers  # really drained by more than one process


def test_worker_killed_mid_batch_loses_nothing(request, catalog, events_client):
    skus, locations = catalog
    for sku in skus:  # positions exist, so the test can hold one of their locks
        for location in locations:
            stock_receive(sku=sku, location=location, quantity=1)
    events, expected = receipts("kill", 300, skus, locations)
    expected = {pair: quantity + 1 for pair, quantity in expected.items()}
    post_all(events_client, events)

    with transaction.atomic():
        # Hold every position lock: the worker claims a batch, then blocks inside it.
        list(StockPosition.objects.select_for_update().all())
        worker = request.getfixturevalue("celery_worker_process")  # purges the queue
        drain_enqueue()  # queue the drain again, now that a worker listens
        deadline = time.monotonic() + 120  # generous: CI machines are shared
        while not _a_backend_waits_on_a_lock():
            assert time.monotonic() < deadline, "the worker never reached the stock locks"
            time.sleep(0.1)
        children = psutil.Process(worker.pid).children(recursive=True)
        assert children
        for child in children:
            os.kill(child.pid, signal.SIGKILL)  # no cleanup, no rollback from the worker's side
        psutil.wait_procs(children, timeout=10)
    # Our locks are released; the killed worker's transaction can never commit.

    # What beat would do every 10 s: re-enqueue a drain while events are pending.
    wait_until_applied(300, kick=inbound_events_sweep)
    assert_exactly_once(expected, 300)


def _a_backend_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        # pg_stat_activity is snapshotted once per transaction, and the caller holds one open:
        # without clearing, every later look would repeat the first (stale) answer.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0


def test_concurrent_drains_in_threads_never_apply_twice(catalog, events_client):
    skus, locations = catalog
    events, expected = receipts("threads", 400, skus, locations)
    post_all(events_client, events)

    def drain_until_empty():
        claimed = 0
        while (result := inbound_events_drain(limit=25)).claimed:
            claimed += result.claimed
        return claimed

    results = run_concurrently(drain_until_empty, [()] * 4)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(results) == 400  # every event claimed by exactly one drain
    assert_exactly_once(expected, 400)
