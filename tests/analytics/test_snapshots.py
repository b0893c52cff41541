"""Snapshots: bucketed, changed positions only (all of them once a day), one row per position
and bucket whatever the number of runs, rolled up hourly and pruned by retention."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from inventory import services
from inventory.models import SnapshotRun, StockPosition, StockSnapshot, StockSnapshotHourly
from inventory.snapshots import snapshot_bucket
from tests.analytics.conftest import minutes, receive, sell
from tests.conftest import run_concurrently
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db


def rows(bucket):
    return {(s.position.location.code, s.on_hand, s.baseline)
            for s in StockSnapshot.objects.filter(bucket=bucket).select_related("position__location")}


def test_buckets_are_5_minute_utc_intervals():
    assert snapshot_bucket(datetime(2031, 3, 10, 10, 4, 59, 999999, tzinfo=UTC)) == datetime(2031, 3, 10, 10, 0,
                                                                                               tzinfo=UTC)
    assert snapshot_bucket(datetime(2031, 3, 10, 10, 5, tzinfo=UTC)) == datetime(2031, 3, 10, 10, 5, tzinfo=UTC)


def test_daily_baseline_then_changed_positions_only(sku, location, other_location, bucket_base):
    receive(sku, location, 10)
    receive(sku, other_location, 3)
    idle = SkuFactory(code="IDLE")
    receive(idle, location, 1)

    # the day's first run copies every position
    assert services.snapshot_take(now=bucket_base + minutes(1)) == 3
    assert rows(bucket_base) == {("wh", 10, True), ("store", 3, True), ("wh", 1, True)}
    # next bucket: only what moved since
    sell(sku, location, 4)
    assert services.snapshot_take(now=bucket_base + minutes(6)) == 1
    assert rows(bucket_base + minutes(5)) == {("wh", 6, False)}
    # a bucket where nothing moved writes nothing, but is a point of history (a run)
    assert services.snapshot_take(now=bucket_base + minutes(11)) == 0
    assert SnapshotRun.objects.filter(bucket=bucket_base + minutes(10), positions=0).exists()
    # the next day starts with a baseline again
    next_day = bucket_base + timedelta(days=1)
    assert services.snapshot_take(now=next_day) == 3
    run = SnapshotRun.objects.get(bucket=next_day)
    assert run.baseline and run.positions == 3


def test_a_second_run_in_the_same_bucket_is_a_no_op_and_a_rerun_after_a_change_rewrites_the_row(
        sku, location, bucket_base):
    receive(sku, location, 10)
    services.snapshot_take(now=bucket_base)
    at = bucket_base + minutes(5)
    sell(sku, location, 1)
    assert services.snapshot_take(now=at + timedelta(seconds=10)) == 1
    # a duplicate beat in the same bucket: nothing moved since, nothing written
    assert services.snapshot_take(now=at + timedelta(seconds=20)) == 0
    assert StockSnapshot.objects.filter(bucket=at).count() == 1
    # stock moves again inside the bucket: the bucket's row is brought up to date, not duplicated
    sell(sku, location, 2)
    assert services.snapshot_take(now=at + timedelta(seconds=30)) == 1
    snap = StockSnapshot.objects.get(bucket=at)
    assert (snap.on_hand, snap.version) == (7, 3)
    assert SnapshotRun.objects.filter(bucket=at).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_in_one_bucket_write_each_position_once(bucket_base):
    locations = [LocationFactory(code=f"c-{i}") for i in range(3)]
    skus = [SkuFactory(code=f"C-{i}") for i in range(20)]
    for s in skus:
        for loc in locations:
            receive(s, loc, 5)
    at = bucket_base + minutes(2)

    results = run_concurrently(lambda: services.snapshot_take(now=at), [()] * 4)

    connections.close_all()
    assert all(isinstance(r, int) for r in results), results
    assert sorted(results) == [0, 0, 0, 60]  # the first wrote everything; the twins found it done
    assert StockSnapshot.objects.filter(bucket=snapshot_bucket(at)).count() == 60
    assert SnapshotRun.objects.count() == 1


def test_rollup_keeps_each_hours_last_level_and_only_changes(sku, location, other_location, bucket_base):
    receive(sku, location, 10)
    receive(sku, other_location, 5)
    services.snapshot_take(now=bucket_base)  # 10:00 baseline: wh 10, store 5
    sell(sku, location, 1)
    services.snapshot_take(now=bucket_base + minutes(20))  # 10:20 wh 9
    sell(sku, location, 2)
    services.snapshot_take(now=bucket_base + minutes(55))  # 10:55 wh 7
    services.snapshot_take(now=bucket_base + minutes(65))  # 11:05 nothing moved
    sell(sku, other_location, 1)
    services.snapshot_take(now=bucket_base + minutes(70))  # 11:10 store 4

    # at 11:30 only the 10:00 hour is finished
    assert services.snapshot_rollup(now=bucket_base + minutes(90)) == 2
    hourly = {(h.position.location.code, h.hour, h.bucket, h.on_hand)
              for h in StockSnapshotHourly.objects.select_related("position__location")}
    assert hourly == {("wh", bucket_base, bucket_base + minutes(55), 7),
                      ("store", bucket_base, bucket_base, 5)}
    assert services.snapshot_rollup(now=bucket_base + minutes(95)) == 0  # rerun: nothing left to do
    # 11:00 hour: the store changed, the warehouse did not (no row: its 10:00 level carries forward)
    assert services.snapshot_rollup(now=bucket_base + minutes(125)) == 1
    assert StockSnapshotHourly.objects.get(hour=bucket_base + minutes(60)).on_hand == 4
    assert not SnapshotRun.objects.filter(rolled_up=False).exists()


def test_prune_keeps_5_minute_rows_14_days_and_hourly_rows_a_year(sku, location, bucket_base, settings):
    receive(sku, location, 10)
    services.snapshot_take(now=bucket_base)
    sell(sku, location, 1)
    services.snapshot_take(now=bucket_base + timedelta(days=1))

    # two weeks after both: the first hour is rolled up and goes; the second waits for its rollup
    services.snapshot_rollup(now=bucket_base + minutes(70))  # rolls up 10:00 of the first day only
    later = bucket_base + timedelta(days=15, hours=1)
    assert services.snapshot_prune(now=later)["snapshots"] == 1
    assert StockSnapshot.objects.get().bucket == bucket_base + timedelta(days=1)
    assert services.snapshot_maintain(now=later) == {"rolled_up": 1, "snapshots": 1, "hourly": 0, "runs": 0}
    assert StockSnapshotHourly.objects.count() == 2 and not StockSnapshot.objects.exists()

    # a year on: hourly rows go too, except each position's newest (the level carried forward)
    result = services.snapshot_prune(now=bucket_base + timedelta(days=400))
    assert result == {"snapshots": 0, "hourly": 1, "runs": 2}
    kept = StockSnapshotHourly.objects.get()
    assert kept.on_hand == 9 and kept.position == StockPosition.objects.get(sku=sku, location=location)
    assert settings.SNAPSHOT_RETENTION_DAYS == 14 and settings.SNAPSHOT_ROLLUP_RETENTION_DAYS == 365
