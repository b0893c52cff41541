"""Analytics writes (docs/analytics.md): the daily-sales table and the daily safety-stock
recompute. Neither changes stock; a safety-stock change goes through the catalog service
(`inventory.services.sku_update`), which announces it so the channels re-push the SKU.

Both are idempotent per time bucket, so two beat processes (or a redelivered task) cannot double
an effect: the refresh recomputes sums (it never adds to them) under an advisory lock, and the
safety-stock run is once per UTC day (`JobMark`), each SKU decided under its row lock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from analytics.models import DailySales, JobMark, SafetyStockChange, SkuSalesWindow
from analytics.selectors import (
    BUNDLE_ROWS,
    BUNDLE_UNITS,
    DAILY_SALES_MARK,
    bundle_first_sql,
    bundles_among,
    daily_units,
    safety_stock_formula,
    sold_types_sql,
)
from core.sql import sql_compose
from inventory.models import Sku, StockMovement
from inventory.services import sku_safety_stocks_set

logger = logging.getLogger(__name__)

SAFETY_STOCK_MARK = "safety_stock"
SALES_LOCK = 0x73616C65  # pg_advisory_xact_lock key ("sale")
SAFETY_STOCK_DAYS = 28  # the demand series: the 28 whole UTC days before the run
SAFETY_STOCK_BATCH = 1000


@transaction.atomic
def daily_sales_refresh(*, now: datetime | None = None) -> int:
    """Bring `DailySales` up to a new cutoff, now - ANALYTICS_LEDGER_SETTLE_SECONDS: every (SKU,
    day) pair that a sold row recorded since the previous cutoff (less the settle time again, for
    transactions that committed late) belongs to is recomputed from the ledger, counting rows
    recorded before the new cutoff. The first run builds the table from the whole ledger.
    The cutoff and the sums commit together; readers add the ledger rows recorded since the cutoff
    (analytics.selectors), so a row is never counted twice or missed. Bundles get rows of their
    own, in bundle units (`_bundle_daily_refresh`), by the same rules. Returns the pairs written."""
    now = now or timezone.now()
    settle = timedelta(seconds=settings.ANALYTICS_LEDGER_SETTLE_SECONDS)
    cutoff = now - settle
    tables = {"daily": DailySales._meta.db_table, "movement": StockMovement._meta.db_table}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SALES_LOCK])
        mark = JobMark.objects.filter(name=DAILY_SALES_MARK).first()
        previous = mark.cutoff if mark else None
        if previous is not None and cutoff <= previous:
            return 0  # a twin run got here first
        if previous is None:
            cursor.execute(sql_compose("""
                INSERT INTO {daily} AS d (sku_id, day, units, refreshed_at)
                SELECT m.sku_id, (m.occurred_at AT TIME ZONE 'UTC')::date, SUM(GREATEST(-m.on_hand_delta, 0)), %(ran)s
                FROM {movement} m
                WHERE m.type IN ({sold}) AND m.recorded_at < %(cutoff)s
                GROUP BY 1, 2
                ON CONFLICT (sku_id, day) DO UPDATE SET units = EXCLUDED.units, refreshed_at = EXCLUDED.refreshed_at
            """, sold=sold_types_sql(), **tables), {"cutoff": cutoff, "ran": timezone.now()})
        else:
            cursor.execute(sql_compose("""
                WITH touched AS (
                    SELECT DISTINCT m.sku_id, (m.occurred_at AT TIME ZONE 'UTC')::date AS day
                    FROM {movement} m
                    WHERE m.type IN ({sold}) AND m.recorded_at >= %(since)s AND m.recorded_at < %(cutoff)s
                )
                INSERT INTO {daily} AS d (sku_id, day, units, refreshed_at)
                SELECT t.sku_id, t.day,
                       (SELECT COALESCE(SUM(GREATEST(-m.on_hand_delta, 0)), 0) FROM {movement} m
                        WHERE m.sku_id = t.sku_id AND m.type IN ({sold})
                          AND m.occurred_at >= t.day::timestamp AT TIME ZONE 'UTC'
                          AND m.occurred_at < (t.day + 1)::timestamp AT TIME ZONE 'UTC'
                          AND m.recorded_at < %(cutoff)s),
                       %(ran)s
                FROM touched t
                ON CONFLICT (sku_id, day) DO UPDATE SET units = EXCLUDED.units, refreshed_at = EXCLUDED.refreshed_at
                RETURNING d.sku_id, d.day
            """, sold=sold_types_sql(), **tables),
                {"since": previous - settle, "cutoff": cutoff, "ran": timezone.now()})
        written = cursor.rowcount
        touched = cursor.fetchall() if previous is not None else []
        if bundles_among(None):
            bundle_written, bundle_touched = _bundle_daily_refresh(
                cursor, since=None if previous is None else previous - settle, cutoff=cutoff)
            written += bundle_written
            touched += bundle_touched
        today = now.astimezone(UTC).date()
        if previous is None or mark is None or mark.day != today:
            _window_refresh(cursor, today=today, sku_ids=None)  # a new day: every SKU's window moved
        else:
            first = today - timedelta(days=27)
            skus = sorted({sku_id for sku_id, day in touched if first <= day < today})
            if skus:
                _window_refresh(cursor, today=today, sku_ids=skus)
    JobMark.objects.update_or_create(name=DAILY_SALES_MARK, defaults={"cutoff": cutoff, "day": today,
                                                                      "ran_at": timezone.now()})
    return written


def _bundle_daily_refresh(cursor: Any, *, since: datetime | None, cutoff: datetime) -> tuple[int, list[Any]]:
    """DailySales rows of bundles, in the refresh's transaction and with its cutoff: per bundle and
    UTC day, the bundle units of its first component's sold rows written for it (analytics.selectors,
    BUNDLE_ROWS), rows recorded before the cutoff. `since` None: built from the whole ledger;
    else the (bundle, day) pairs touched by such rows recorded since then are recomputed (set, not
    added to, as for plain SKUs). Returns (rows written, touched (bundle id, day) pairs)."""
    tables: dict[str, str | sql.Composable] = {
        "daily": DailySales._meta.db_table, "movement": StockMovement._meta.db_table, "sold": sold_types_sql(),
        "first": sql.SQL(bundle_first_sql(filtered=False)), "units": sql.SQL(BUNDLE_UNITS),
        "rows": sql.SQL(BUNDLE_ROWS).format(movement=sql.Identifier(StockMovement._meta.db_table))}
    if since is None:
        cursor.execute(sql_compose("""
            WITH bundle_first AS MATERIALIZED ({first})
            INSERT INTO {daily} AS d (sku_id, day, units, refreshed_at)
            SELECT bf.bundle_id, (m.occurred_at AT TIME ZONE 'UTC')::date, SUM({units}), %(ran)s
            FROM {rows}
            WHERE m.type IN ({sold}) AND m.recorded_at < %(cutoff)s
            GROUP BY 1, 2
            ON CONFLICT (sku_id, day) DO UPDATE SET units = EXCLUDED.units, refreshed_at = EXCLUDED.refreshed_at
        """, **tables), {"cutoff": cutoff, "ran": timezone.now()})
        return cursor.rowcount, []
    cursor.execute(sql_compose("""
        WITH bundle_first AS MATERIALIZED ({first}),
        touched AS (
            SELECT DISTINCT bf.bundle_id, bf.component_id, bf.quantity, (m.occurred_at AT TIME ZONE 'UTC')::date AS day
            FROM {rows}
            WHERE m.type IN ({sold}) AND m.recorded_at >= %(since)s AND m.recorded_at < %(cutoff)s
        )
        INSERT INTO {daily} AS d (sku_id, day, units, refreshed_at)
        SELECT t.bundle_id, t.day,
               (SELECT COALESCE(SUM(GREATEST(-m.on_hand_delta, 0) / t.quantity), 0) FROM {movement} m
                WHERE m.sku_id = t.component_id AND m.type IN ({sold})
                  AND m.metadata ->> 'bundle_id' = t.bundle_id::text
                  AND m.occurred_at >= t.day::timestamp AT TIME ZONE 'UTC'
                  AND m.occurred_at < (t.day + 1)::timestamp AT TIME ZONE 'UTC'
                  AND m.recorded_at < %(cutoff)s),
               %(ran)s
        FROM touched t
        ON CONFLICT (sku_id, day) DO UPDATE SET units = EXCLUDED.units, refreshed_at = EXCLUDED.refreshed_at
        RETURNING d.sku_id, d.day
    """, **tables), {"since": since, "cutoff": cutoff, "ran": timezone.now()})
    return cursor.rowcount, cursor.fetchall()


def _window_refresh(cursor: Any, *, today: date, sku_ids: list[int] | None) -> None:
    """SkuSalesWindow for `today` from DailySales: every SKU, or those given (their daily rows on
    whole days of the windows changed). In the refresh's transaction, with its cutoff."""
    sku_filter = sql.SQL("AND {col} = ANY(%(skus)s)") if sku_ids is not None else sql.SQL("")
    cursor.execute(sql_compose("""
        WITH sums AS MATERIALIZED (
            SELECT d.sku_id, COALESCE(SUM(d.units) FILTER (WHERE d.day >= %(f7)s), 0) AS whole_7,
                   SUM(d.units) AS whole_28
            FROM {daily} d WHERE d.day >= %(f28)s AND d.day < %(today)s {daily_filter}
            GROUP BY d.sku_id HAVING SUM(d.units) > 0
        ), upserted AS (
            INSERT INTO {window} AS w (sku_id, whole_7, whole_28) SELECT sku_id, whole_7, whole_28 FROM sums
            ON CONFLICT (sku_id) DO UPDATE SET whole_7 = EXCLUDED.whole_7, whole_28 = EXCLUDED.whole_28
            WHERE (w.whole_7, w.whole_28) IS DISTINCT FROM (EXCLUDED.whole_7, EXCLUDED.whole_28)
        )
        DELETE FROM {window} w WHERE NOT EXISTS (SELECT 1 FROM sums s WHERE s.sku_id = w.sku_id) {window_filter}
    """, daily=DailySales._meta.db_table, window=SkuSalesWindow._meta.db_table,
        daily_filter=sku_filter.format(col=sql.SQL("d.sku_id")),
        window_filter=sku_filter.format(col=sql.SQL("w.sku_id"))),
        {"today": today, "f7": today - timedelta(days=6), "f28": today - timedelta(days=27), "skus": sku_ids or []})


def daily_sales_prune(*, now: datetime | None = None) -> int:
    """Delete daily sales older than ANALYTICS_DAILY_SALES_RETENTION_DAYS (daily)."""
    now = now or timezone.now()
    oldest = now.astimezone(UTC).date() - timedelta(days=settings.ANALYTICS_DAILY_SALES_RETENTION_DAYS)
    deleted, _ = DailySales.objects.filter(day__lt=oldest).delete()
    return deleted


# ------------------------------------------------------------------------------ dynamic safety stock


@dataclass
class SafetyStockComputation:
    sku_id: int
    series: list[int]  # units per whole day, oldest first


def _demand_series(skus: list[Sku], today: datetime) -> list[SafetyStockComputation]:
    """Each SKU's daily units over the 28 whole days before `today`, zeros included. The series
    starts at the SKU's creation day or its first sale in the period, whichever is earlier (days
    before a SKU existed are not days of zero demand; imported history counts)."""
    last = today.date() - timedelta(days=1)
    first = today.date() - timedelta(days=SAFETY_STOCK_DAYS)
    by_sku = daily_units(sku_ids=[s.pk for s in skus], first_day=first, last_day=last,
                         bundles=any(s.is_bundle for s in skus))
    out = []
    for sku in skus:
        days = by_sku.get(sku.pk, {})
        created = sku.created_at.astimezone(UTC).date()
        start = max(first, min([created, *[d for d, units in days.items() if units > 0]]))
        series = [days.get(start + timedelta(days=i), 0) for i in range((last - start).days + 1)]
        out.append(SafetyStockComputation(sku_id=sku.pk, series=series))
    return out


@transaction.atomic
def _safety_stock_apply(*, computations: list[SafetyStockComputation], day: datetime, z: float) -> int:
    """Decide a batch of SKUs under their row locks (pk order: a merchandiser's concurrent edit, or
    a twin run, waits and is then seen) and set the changed values through the catalog service,
    which announces them so every channel listing of those SKUs is marked for a push. Logs each
    change with its inputs. Returns the SKUs changed."""
    series = {c.sku_id: c.series for c in computations}
    skus = list(Sku.objects.select_for_update(of=("self",)).filter(pk__in=list(series)).order_by("pk"))
    values: dict[int, int] = {}
    changes: list[SafetyStockChange] = []
    computed_at = timezone.now()
    for sku in skus:
        if not sku.dynamic_safety_stock or not sku.active:
            continue
        new, sigma, mean = safety_stock_formula(daily=series[sku.pk], z=z, lead_time_days=sku.lead_time_days)
        if new == sku.safety_stock:
            continue
        values[sku.pk] = new
        changes.append(SafetyStockChange(
            sku=sku, day=day.date(), computed_at=computed_at, demand_days=len(series[sku.pk]), mean=mean,
            sigma=sigma, z=z, lead_time_days=sku.lead_time_days, old_safety_stock=sku.safety_stock,
            new_safety_stock=new))
    sku_safety_stocks_set(safety_stocks=values)
    SafetyStockChange.objects.bulk_create(changes)
    for change in changes:
        logger.info("safety stock of %s: %s -> %s (sigma %.3f over %s days, z %s, lead time %s d)",
                    change.sku.code, change.old_safety_stock, change.new_safety_stock, change.sigma,
                    change.demand_days, z, change.lead_time_days)
    return len(changes)


def safety_stock_recompute(*, now: datetime | None = None, force: bool = False,
                           budget_seconds: float | None = None) -> int:
    """Daily: for every active SKU with `dynamic_safety_stock`, safety_stock = ceil(z x sigma x
    sqrt(lead_time_days)), sigma the sample standard deviation of units sold per day over the 28
    whole UTC days before today (ANALYTICS_SAFETY_STOCK_Z, default 1.65: ~95% service level).
    SKUs with fewer than ANALYTICS_SAFETY_STOCK_MIN_DAYS days of history keep their value. Each
    change is logged with its inputs (SafetyStockChange) and re-pushed to channels.

    Once per UTC day (`force` runs again): the day is marked done at the end, and a run on a
    marked day does nothing, so it never overrides an edit a merchandiser made after the day's
    run. A run that stops early (`budget_seconds` spent, or killed) leaves the day unmarked; the
    next run (beat retries hourly) recomputes the same values and changes only what is left.
    Returns the SKUs changed."""
    started = time.monotonic()
    now = now or timezone.now()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    mark = JobMark.objects.filter(name=SAFETY_STOCK_MARK).first()
    if mark and mark.day == today.date() and not force:
        return 0
    daily_sales_refresh(now=now)
    z = float(settings.ANALYTICS_SAFETY_STOCK_Z)
    min_days = settings.ANALYTICS_SAFETY_STOCK_MIN_DAYS
    ids = list(Sku.objects.filter(dynamic_safety_stock=True, active=True).order_by("pk").values_list("pk", flat=True))
    changed = skipped = 0
    for i in range(0, len(ids), SAFETY_STOCK_BATCH):
        if budget_seconds is not None and time.monotonic() - started > budget_seconds:
            logger.warning("safety stock recompute stopped after %.0f s at %s of %s SKUs; the next run "
                           "goes on", time.monotonic() - started, i, len(ids))
            return changed
        skus = list(Sku.objects.filter(pk__in=ids[i:i + SAFETY_STOCK_BATCH]).order_by("pk"))
        computations = []
        for computation in _demand_series(skus, today):
            if len(computation.series) < max(min_days, 2):
                skipped += 1
            else:
                computations.append(computation)
        changed += _safety_stock_apply(computations=computations, day=today, z=z)
    JobMark.objects.update_or_create(name=SAFETY_STOCK_MARK, defaults={
        "day": today.date(), "ran_at": timezone.now(),
        "detail": {"skus": len(ids), "changed": changed, "skipped_short_history": skipped}})
    return changed


def analytics_daily(*, now: datetime | None = None, budget_seconds: float | None = None) -> dict[str, int]:
    """The daily job: recompute dynamic safety stock, then prune old daily sales."""
    return {"safety_stock_changed": safety_stock_recompute(now=now, budget_seconds=budget_seconds),
            "daily_sales_pruned": daily_sales_prune(now=now)}
