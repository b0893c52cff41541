"""Every analytics and snapshot job is in the one beat schedule, under its task's stable name,
and its task only calls the service (run here in-process, twice: the second is a no-op)."""

import pytest
from celery.schedules import crontab

from config.celery import app
from inventory.models import SnapshotRun
from tests.analytics.conftest import receive

JOBS = {
    "inventory-snapshot": "inventory.snapshot_positions",
    "inventory-snapshot-maintain": "inventory.snapshot_maintain",
    "analytics-refresh-sales": "analytics.refresh_sales",
    "analytics-daily": "analytics.daily",
}


def test_jobs_are_scheduled_on_crontabs_and_registered():
    app.loader.import_default_modules()
    for entry, task in JOBS.items():
        assert app.conf.beat_schedule[entry]["task"] == task
        assert isinstance(app.conf.beat_schedule[entry]["schedule"], crontab)
        assert task in app.tasks
    assert app.conf.beat_schedule["inventory-snapshot"]["schedule"].minute == set(range(0, 60, 5))


@pytest.mark.django_db
def test_tasks_run_their_service_and_a_second_run_does_nothing(sku, location):
    from analytics.tasks import analytics_daily_task, sales_refresh_task
    from inventory.tasks import snapshot_maintain_task, snapshot_positions_task

    receive(sku, location, 3)
    assert snapshot_positions_task() >= 1
    assert snapshot_positions_task() == 0  # nothing moved since (same bucket or not)
    assert SnapshotRun.objects.exists()
    assert snapshot_maintain_task()["rolled_up"] == 0  # the bucket's hour is not finished
    sales_refresh_task()
    assert sales_refresh_task() == 0
    assert analytics_daily_task()["safety_stock_changed"] == 0
