"""Stock snapshots: every 5 minutes the positions that changed, once a day all of them, rolled up
hourly and pruned (docs/analytics.md, "Snapshots").

Each function is one set-based statement (or a few) under a transaction-scoped advisory lock, and
idempotent per time bucket: two beat processes started by mistake, or a task redelivered after a
worker died, converge on the same rows instead of adding any.
- A bucket is the 5-minute interval (UTC, aligned on the epoch) the run falls in. A position has
  at most one row per bucket (unique index); a second run in the same bucket writes only the
  positions that moved since the first, over their row (`ON CONFLICT ... DO UPDATE`).
- "Changed since the previous snapshot" is a hash join of positions with `SnapshotMark` (each
  position's version at its latest snapshot), not a look-up per position.
- Reads only committed positions, in one statement: the copy is consistent across positions and
  takes no lock a stock change waits for. It never changes stock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.sql import sql_compose
from inventory.models import SnapshotMark, SnapshotRun, StockMovement, StockPosition, StockSnapshot, StockSnapshotHourly

BUCKET_SECONDS = 300  # the contract's "5-minute snapshot"
# pg_advisory_xact_lock key ("snap" in ASCII) taken by every snapshot job: a duplicate run waits
# for the first, then finds its work done; and a snapshot, a rollup and a prune never interleave
# (the first two write SnapshotMark rows, which would otherwise be locked in different orders).
SNAPSHOT_LOCK = 0x736E6170


def snapshot_bucket(at: datetime) -> datetime:
    """The start of the 5-minute bucket `at` falls in (UTC)."""
    seconds = int(at.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    return datetime.fromtimestamp(seconds, tz=UTC)


def _tables() -> dict[str, str]:
    return {"position": StockPosition._meta.db_table, "snapshot": StockSnapshot._meta.db_table,
            "mark": SnapshotMark._meta.db_table, "run": SnapshotRun._meta.db_table,
            "movement": StockMovement._meta.db_table, "hourly": StockSnapshotHourly._meta.db_table}


@transaction.atomic
def snapshot_take(*, now: datetime | None = None, baseline: bool | None = None) -> int:
    """Snapshot the positions whose version moved since their latest snapshot (beat, every 5 min),
    or every position when this is the day's baseline (`baseline=None`: the first run of the UTC
    day). Returns the rows written. A second run in the same bucket writes only what moved since
    the first, over the same rows: a duplicate beat is a no-op."""
    started = time.monotonic()
    now = now or timezone.now()
    bucket = snapshot_bucket(now)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SNAPSHOT_LOCK])
        if baseline is None:
            day = bucket.replace(hour=0, minute=0, second=0, microsecond=0)
            baseline = not SnapshotRun.objects.filter(baseline=True, bucket__gte=day,
                                                      bucket__lt=day + timedelta(days=1)).exists()
        # The newest ledger id per written position (index movement_position_newest), so an
        # auditor can replay from the snapshot; same statement snapshot as the numbers.
        cursor.execute(sql_compose("""
            WITH changed AS (
                SELECT p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version
                FROM {position} p LEFT JOIN {mark} k ON k.position_id = p.id
                WHERE %(baseline)s OR k.version IS DISTINCT FROM p.version
            ), written AS (
                INSERT INTO {snapshot} AS s (bucket, taken_at, baseline, position_id, sku_id, location_id,
                                             on_hand, reserved, version, last_movement_id)
                SELECT %(bucket)s, %(now)s, %(baseline)s, c.id, c.sku_id, c.location_id, c.on_hand, c.reserved,
                       c.version,
                       COALESCE((SELECT m.id FROM {movement} m WHERE m.position_id = c.id
                                 ORDER BY m.id DESC LIMIT 1), 0)
                FROM changed c
                ON CONFLICT (position_id, bucket) DO UPDATE SET
                    taken_at = EXCLUDED.taken_at, baseline = s.baseline OR EXCLUDED.baseline,
                    on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved, version = EXCLUDED.version,
                    last_movement_id = EXCLUDED.last_movement_id
                RETURNING s.position_id, s.version
            )
            INSERT INTO {mark} AS k (position_id, version, bucket)
            SELECT position_id, version, %(bucket)s FROM written
            ON CONFLICT (position_id) DO UPDATE SET version = EXCLUDED.version, bucket = EXCLUDED.bucket
        """, **_tables()), {"bucket": bucket, "now": now, "baseline": baseline})
        written = cursor.rowcount
        cursor.execute(sql_compose("""
            INSERT INTO {run} AS r (bucket, taken_at, baseline, positions, duration_ms, rolled_up)
            VALUES (%(bucket)s, %(now)s, %(baseline)s, %(written)s, %(ms)s, false)
            ON CONFLICT (bucket) DO UPDATE SET
                taken_at = EXCLUDED.taken_at, baseline = r.baseline OR EXCLUDED.baseline,
                positions = r.positions + EXCLUDED.positions, duration_ms = EXCLUDED.duration_ms
        """, **_tables()), {"bucket": bucket, "now": now, "baseline": baseline, "written": written,
                            "ms": (time.monotonic() - started) * 1000})
    return written


@transaction.atomic
def snapshot_rollup(*, now: datetime | None = None) -> int:
    """Roll every finished hour not yet rolled up into `StockSnapshotHourly` (beat, hourly): per
    position and hour the hour's last snapshot, when its version differs from the position's
    previous hourly row. Runs are marked rolled up in the same transaction; a rerun finds nothing
    to do. Returns the hourly rows written."""
    now = now or timezone.now()
    hour_now = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SNAPSHOT_LOCK])
        pending = list(SnapshotRun.objects.filter(rolled_up=False, bucket__lt=hour_now)
                       .values_list("bucket", flat=True))
        if not pending:
            return 0
        # The previous hourly version of each position is its SnapshotMark's (a hash join, not a
        # look-up per row into the hourly table this statement is filling).
        cursor.execute(sql_compose("""
            WITH last_in_hour AS (
                SELECT DISTINCT ON (s.position_id, date_trunc('hour', s.bucket AT TIME ZONE 'UTC'))
                       s.position_id, s.sku_id, s.location_id,
                       date_trunc('hour', s.bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
                       s.bucket, s.on_hand, s.reserved, s.version
                FROM {snapshot} s
                WHERE s.bucket = ANY(%(buckets)s)
                ORDER BY s.position_id, date_trunc('hour', s.bucket AT TIME ZONE 'UTC'), s.bucket DESC
            ), compared AS (
                SELECT l.*,
                       COALESCE(lag(l.version) OVER (PARTITION BY l.position_id ORDER BY l.hour),
                                k.hourly_version) AS previous_version,
                       row_number() OVER (PARTITION BY l.position_id ORDER BY l.hour DESC) AS newest
                FROM last_in_hour l LEFT JOIN {mark} k ON k.position_id = l.position_id
            ), marked AS (
                UPDATE {mark} k SET hourly_version = c.version
                FROM compared c
                WHERE c.position_id = k.position_id AND c.newest = 1 AND k.hourly_version IS DISTINCT FROM c.version
            )
            INSERT INTO {hourly} AS h (hour, bucket, position_id, sku_id, location_id, on_hand, reserved, version)
            SELECT hour, bucket, position_id, sku_id, location_id, on_hand, reserved, version
            FROM compared WHERE previous_version IS DISTINCT FROM version
            ON CONFLICT (position_id, hour) DO UPDATE SET
                bucket = EXCLUDED.bucket, on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved,
                version = EXCLUDED.version
            WHERE EXCLUDED.bucket >= h.bucket
        """, **_tables()), {"buckets": pending})
        written = cursor.rowcount
        SnapshotRun.objects.filter(bucket__in=pending).update(rolled_up=True)
    return written


@transaction.atomic
def snapshot_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete 5-minute rows past SNAPSHOT_RETENTION_DAYS (only once their hour is rolled up) and
    hourly rows and runs past SNAPSHOT_ROLLUP_RETENTION_DAYS, keeping each position's newest hourly
    row (the level carried forward). Idempotent; returns the rows deleted per table."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.SNAPSHOT_RETENTION_DAYS)
    rollup_cutoff = now - timedelta(days=settings.SNAPSHOT_ROLLUP_RETENTION_DAYS)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SNAPSHOT_LOCK])
        oldest_pending = (SnapshotRun.objects.filter(rolled_up=False).order_by("bucket")
                          .values_list("bucket", flat=True).first())
        if oldest_pending is not None:
            cutoff = min(cutoff, oldest_pending)
        cursor.execute(sql_compose("DELETE FROM {snapshot} WHERE bucket < %s", **_tables()), [cutoff])
        snapshots = cursor.rowcount
        cursor.execute(sql_compose("""
            DELETE FROM {hourly} h WHERE h.hour < %(cutoff)s
              AND EXISTS (SELECT 1 FROM {hourly} n WHERE n.position_id = h.position_id AND n.hour > h.hour)
        """, **_tables()), {"cutoff": rollup_cutoff})
        hourly = cursor.rowcount
        runs, _ = SnapshotRun.objects.filter(bucket__lt=rollup_cutoff).delete()
    return {"snapshots": snapshots, "hourly": hourly, "runs": runs}


def snapshot_maintain(*, now: datetime | None = None) -> dict[str, int]:
    """Hourly upkeep: roll up the finished hours, then prune what retention lets go."""
    rolled = snapshot_rollup(now=now)
    return {"rolled_up": rolled, **snapshot_prune(now=now)}
