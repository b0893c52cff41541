"""Analytics reads (docs/analytics.md): units sold and velocities, days of cover, stockout risk,
fast movers, stock history from snapshots, safety-stock history. No writes, no locks.

Units sold (contract) are the units leaving on_hand through ledger rows of type `sale` and
`reservation_commit`, counted by `occurred_at`; velocity over N days = units sold in the last
N x 24 h / N. Every velocity here comes from one statement, `_units_sql`, that reads:
- whole UTC days inside the window from `DailySales` (rows recorded before the refresh cutoff),
- the ledger rows recorded since that cutoff on those days (late, back-dated events),
- the ledger for today and for the partial first day of the window,
so answers are exact as of `now` whatever the refresh lag, and cost what the daily table and a few
hours of ledger cost, not 28 days of ledger rows per SKU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg import sql

from analytics.models import DailySales, JobMark, SafetyStockChange, SkuSalesWindow
from core.errors import NotFound
from core.sql import sql_compose
from inventory.models import (
    SOLD_TYPES,
    Sku,
    SnapshotRun,
    StockMovement,
    StockPosition,
    StockSnapshot,
    StockSnapshotHourly,
)

VELOCITY_WINDOWS = (1, 7, 28)
MAX_DAYS = 90  # fast movers' `days`: the daily table keeps ANALYTICS_DAILY_SALES_RETENTION_DAYS (>= this)
MAX_LIMIT = 1000
MAX_HISTORY_POINTS = 10_000
DAILY_SALES_MARK = "daily_sales"
PRECOMPUTED = {1, 7, 28}  # windows whose whole days SkuSalesWindow holds (1 has none)


def sold_types_sql() -> sql.Composable:
    # Literals, not parameters: the partial indexes on the ledger (movement_sold_*) are used only
    # when the planner can see the query's types match the index predicate.
    return sql.SQL(", ").join(sql.Literal(t) for t in SOLD_TYPES)


def _midnight(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


# One window's partial first day; `{n}` is the window's length in days (an int), the rest are
# psycopg.sql placeholders and query parameters.
EDGE_BRANCH = ("SELECT m.sku_id, {cols} FROM {movement} m WHERE m.type IN ({sold}) "
               "AND m.occurred_at > %(s{n})s AND m.occurred_at < %(e{n})s {ledger_filter}")


def _cutoff_hint() -> datetime:
    """The daily-sales cutoff as last committed, or the beginning of time. Only a hint for the
    planner (an index range on recorded_at); the statements compare with the cutoff they read
    themselves, which can only be later (a refresh moves it forward), never earlier."""
    cutoff = JobMark.objects.filter(name=DAILY_SALES_MARK).values_list("cutoff", flat=True).first()
    return cutoff or datetime.min.replace(tzinfo=UTC)


def _units_sql(windows: Sequence[int], *, now: datetime, sku_ids: Sequence[int] | None) -> tuple[str, dict[str, Any]]:
    """One statement answering `(sku_id, units_<N>...)` for each window N (days), SKUs with no
    sale in the longest window left out. For window N ending at `now`, with t0 = today's UTC
    midnight, the sources cover disjoint times:
    - the partial first day (now - N days, t0 - (N-1) days) and today [t0, now]: the ledger;
    - the whole days [t0 - (N-1) days, t0): DailySales (rows recorded before the refresh
      cutoff), or for N in (7, 28) its per-SKU sums in SkuSalesWindow when they are for today,
      plus the ledger rows recorded at or after the cutoff.
    The cutoff and the day of SkuSalesWindow are read in the same statement as the tables they
    describe, so a refresh committing meanwhile cannot count a row twice or never."""
    windows = sorted(set(windows))
    longest = windows[-1]
    t0 = _midnight(now)
    params: dict[str, Any] = {"now": now, "t0": t0, "d_now": t0.date(), "skus": list(sku_ids or []),
                              "mark": DAILY_SALES_MARK, "cutoff": _cutoff_hint()}
    for n in windows:
        params[f"s{n}"] = now - timedelta(days=n)
        params[f"e{n}"] = t0 - timedelta(days=n - 1)
        params[f"f{n}"] = t0.date() - timedelta(days=n - 1)
    params["f_longest"], params["e_longest"] = params[f"f{longest}"], params[f"e{longest}"]

    def columns(template: str) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL(template.format(n=n)) for n in windows)

    units = "GREATEST(-m.on_hand_delta, 0)"
    sku_filter = sql.SQL("AND {col} = ANY(%(skus)s)") if sku_ids is not None else sql.SQL("")
    mark_day = sql_compose("(SELECT MAX(k.day) FROM {mark} k WHERE k.name = %(mark)s)", mark=JobMark._meta.db_table)
    daily = sql_compose(
        """SELECT d.sku_id, {daily_columns} FROM {daily} d
           WHERE d.day >= %(f_longest)s AND d.day < %(d_now)s {daily_filter} {stale} GROUP BY d.sku_id""",
        daily_columns=columns("SUM(d.units) FILTER (WHERE d.day >= %(f{n})s)::bigint AS u{n}"),
        daily=DailySales._meta.db_table, daily_filter=sku_filter.format(col=sql.SQL("d.sku_id")),
        stale=sql.SQL(f"AND {mark_day} IS DISTINCT FROM %(d_now)s" if set(windows) <= PRECOMPUTED else ""))
    whole: sql.Composable = sql.SQL(daily)
    if set(windows) <= PRECOMPUTED:
        whole = sql.SQL(" UNION ALL ").join([whole, sql.SQL(sql_compose(
            "SELECT w.sku_id, {window_columns} FROM {window} w WHERE {mark_day} = %(d_now)s {window_filter}",
            window_columns=sql.SQL(", ").join(
                sql.SQL(f"w.whole_{n} AS u{n}" if n > 1 else "0::bigint AS u1") for n in windows),
            window=SkuSalesWindow._meta.db_table, mark_day=sql.SQL(mark_day),
            window_filter=sku_filter.format(col=sql.SQL("w.sku_id"))))])
    query = sql_compose(
        """
        WITH whole AS MATERIALIZED ({whole}),
        live AS MATERIALIZED (
            SELECT sku_id, {sums} FROM (
                SELECT m.sku_id, {today_columns} FROM {movement} m
                WHERE m.type IN ({sold}) AND m.occurred_at >= %(t0)s AND m.occurred_at <= %(now)s {ledger_filter}
                UNION ALL
                {edges}
                UNION ALL
                SELECT m.sku_id, {late_columns} FROM {movement} m
                WHERE m.type IN ({sold})
                  AND m.recorded_at >= %(cutoff)s
                  AND m.recorded_at >= (SELECT COALESCE(MAX(k.cutoff), '-infinity'::timestamptz) FROM {mark} k
                                        WHERE k.name = %(mark)s)
                  AND m.occurred_at >= %(e_longest)s AND m.occurred_at < %(t0)s {ledger_filter}
            ) parts
            GROUP BY sku_id
        )
        SELECT COALESCE(w.sku_id, l.sku_id) AS sku_id, {totals}
        FROM whole w FULL JOIN live l ON l.sku_id = w.sku_id
        """,
        whole=whole,
        sums=columns("SUM(u{n})::bigint AS u{n}"),
        totals=columns("COALESCE(w.u{n}, 0) + COALESCE(l.u{n}, 0) AS units_{n}"),
        today_columns=columns(f"{units} AS u{{n}}"),
        late_columns=columns(f"CASE WHEN m.occurred_at >= %(e{{n}})s THEN {units} ELSE 0 END AS u{{n}}"),
        # One range scan per window's partial first day (each its own UNION ALL branch, so each
        # is an index-only range scan of movement_sold_occurred); a row there counts for its
        # window only (other windows cover that day whole).
        edges=sql.SQL(" UNION ALL ").join(
            sql.SQL(EDGE_BRANCH.replace("{n}", str(n))).format(
                cols=sql.SQL(", ").join(sql.SQL(f"{units} AS u{k}" if k == n else f"0 AS u{k}") for k in windows),
                movement=sql.Identifier(StockMovement._meta.db_table), sold=sold_types_sql(),
                ledger_filter=sku_filter.format(col=sql.SQL("m.sku_id")))
            for n in windows),
        sold=sold_types_sql(),
        ledger_filter=sku_filter.format(col=sql.SQL("m.sku_id")),
        movement=StockMovement._meta.db_table, mark=JobMark._meta.db_table,
    )
    return query, params


def units_sold(*, windows: Sequence[int] = VELOCITY_WINDOWS, now: datetime | None = None,
               sku_ids: Sequence[int] | None = None) -> dict[int, dict[int, int]]:
    """{sku_id: {N: units sold in the last N x 24 h}} for SKUs with a sale in the longest window
    (all SKUs, or those of `sku_ids`)."""
    now = now or timezone.now()
    windows = sorted(set(windows))
    query, params = _units_sql(windows, now=now, sku_ids=sku_ids)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return {row[0]: dict(zip(windows, row[1:], strict=True)) for row in cursor.fetchall()}


def daily_units(*, sku_ids: Sequence[int], first_day: date, last_day: date) -> dict[int, dict[date, int]]:
    """{sku_id: {day: units}} for whole UTC days in [first_day, last_day] (days without sales
    absent): DailySales plus ledger rows recorded since its cutoff, in one statement."""
    query = sql_compose(
        """
        SELECT sku_id, day, SUM(units)::bigint FROM (
            SELECT d.sku_id, d.day, d.units FROM {daily} d
            WHERE d.sku_id = ANY(%(skus)s) AND d.day >= %(first)s AND d.day <= %(last)s
            UNION ALL
            SELECT m.sku_id, (m.occurred_at AT TIME ZONE 'UTC')::date, GREATEST(-m.on_hand_delta, 0)
            FROM {movement} m
            WHERE m.type IN ({sold}) AND m.sku_id = ANY(%(skus)s)
              AND m.recorded_at >= %(cutoff)s
              AND m.recorded_at >= (SELECT COALESCE(MAX(k.cutoff), '-infinity'::timestamptz) FROM {mark} k
                                    WHERE k.name = %(mark)s)
              AND m.occurred_at >= %(start)s AND m.occurred_at < %(end)s
        ) parts
        GROUP BY sku_id, day
        """,
        sold=sold_types_sql(), daily=DailySales._meta.db_table, movement=StockMovement._meta.db_table,
        mark=JobMark._meta.db_table,
    )
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    end = datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC) + timedelta(days=1)
    result: dict[int, dict[date, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(query, {"skus": list(sku_ids), "first": first_day, "last": last_day, "start": start,
                               "end": end, "mark": DAILY_SALES_MARK, "cutoff": _cutoff_hint()})
        for sku_id, day, units in cursor.fetchall():
            result.setdefault(sku_id, {})[day] = units
    return result


# ------------------------------------------------------------------------------ analytics objects


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def analytics_object(*, code: str, available: int, units: dict[int, int], lead_time_days: int, safety_stock: int,
                     reorder_point: int | None, now: datetime) -> dict[str, Any]:
    """The contract's analytics object. Cover, at-risk and the computed reorder point use exact
    integer arithmetic on units sold (velocity 7d = units_7d / 7), not the rounded velocity: a
    ceil of 10/7 x 7 must be 10, not 11."""
    units_7d = units.get(7, 0)
    days_of_cover: float | None = None
    stockout_at: datetime | None = None
    at_risk = False
    if units_7d > 0:
        cover = available * 7 / units_7d
        days_of_cover = round(cover, 2)
        at_risk = available * 7 < lead_time_days * units_7d  # cover < lead time, exactly
        try:
            stockout_at = now + timedelta(days=cover)
        except OverflowError:  # past year 9999: as good as never
            stockout_at = None
    if reorder_point is None:
        reorder_point = _ceil_div(units_7d * lead_time_days, 7) + safety_stock
    return {
        "sku": code,
        "available": available,
        "velocity": {f"{n}d": round(units.get(n, 0) / n, 2) for n in VELOCITY_WINDOWS},
        "days_of_cover": days_of_cover,
        "stockout_at": stockout_at,
        "lead_time_days": lead_time_days,
        "safety_stock": safety_stock,
        "reorder_point": reorder_point,
        "at_risk": at_risk,
    }


def _available(sku_ids: Sequence[int]) -> dict[int, int]:
    """A SKU's available = sum over its locations of max(on_hand - reserved, 0) (as GET /stock/)."""
    with connection.cursor() as cursor:
        cursor.execute(sql_compose(
            "SELECT sku_id, SUM(GREATEST(on_hand - reserved, 0))::bigint FROM {position} "
            "WHERE sku_id = ANY(%s) GROUP BY sku_id", position=StockPosition._meta.db_table), [list(sku_ids)])
        return dict(cursor.fetchall())


def sku_analytics_get(*, sku_code: str, now: datetime | None = None) -> dict[str, Any]:
    """GET /api/v1/analytics/skus/{sku}/: live, exact as of `now`."""
    now = now or timezone.now()
    sku = Sku.objects.filter(code=sku_code).first()
    if sku is None:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    units = units_sold(now=now, sku_ids=[sku.pk]).get(sku.pk, {})
    return analytics_object(code=sku.code, available=_available([sku.pk]).get(sku.pk, 0), units=units,
                            lead_time_days=sku.lead_time_days, safety_stock=sku.safety_stock,
                            reorder_point=sku.reorder_point, now=now)


def fast_movers_list(*, days: int = 7, limit: int = 20, now: datetime | None = None) -> list[dict[str, Any]]:
    """SKUs by units sold in the last `days` x 24 h, most first (ties by code); no sales, left out."""
    now = now or timezone.now()
    units_query, params = _units_sql([days], now=now, sku_ids=None)
    query = sql_compose(
        """
        WITH units AS ({units})
        SELECT s.code, u.{column} FROM units u JOIN {sku} s ON s.id = u.sku_id
        WHERE u.{column} > 0
        ORDER BY u.{column} DESC, s.code
        LIMIT %(limit)s
        """,
        units=sql.SQL(units_query), sku=Sku._meta.db_table, column=f"units_{days}")
    with connection.cursor() as cursor:
        cursor.execute(query, {**params, "limit": limit})
        return [{"sku": code, "units": units, "velocity": round(units / days, 2)} for code, units in cursor.fetchall()]


def stockout_risk_list(*, limit: int = 50, now: datetime | None = None) -> list[dict[str, Any]]:
    """Active SKUs at risk (days of cover < lead time), fewest days of cover first (ties by code),
    as analytics objects. Only SKUs that sold in the last 7 days can be at risk (no velocity, no
    cover), so the scan starts from those."""
    now = now or timezone.now()
    units_query, params = _units_sql([7], now=now, sku_ids=None)
    # Both sides materialized and joined by hash: the planner cannot estimate how many SKUs sold
    # (an aggregate over a union), and a nested loop over tens of thousands of them is seconds.
    query = sql_compose(
        """
        WITH units AS MATERIALIZED ({units}),
        stock AS MATERIALIZED (
            SELECT s.id, s.code, s.lead_time_days, s.safety_stock, s.reorder_point,
                   SUM(GREATEST(p.on_hand - p.reserved, 0))::bigint AS available
            FROM {position} p JOIN {sku} s ON s.id = p.sku_id
            WHERE s.active
            GROUP BY s.id
        )
        SELECT a.id, a.code, a.lead_time_days, a.safety_stock, a.reorder_point, u.units_7, a.available
        FROM units u JOIN stock a ON a.id = u.sku_id
        WHERE u.units_7 > 0 AND a.available * 7 < a.lead_time_days::bigint * u.units_7
        ORDER BY a.available::numeric / u.units_7, a.code
        LIMIT %(limit)s
        """,
        units=sql.SQL(units_query), sku=Sku._meta.db_table, position=StockPosition._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(query, {**params, "limit": limit})
        rows = cursor.fetchall()
    other = units_sold(windows=(1, 28), now=now, sku_ids=[row[0] for row in rows]) if rows else {}
    return [
        analytics_object(code=code, available=available, units={**other.get(sku_id, {}), 7: units_7d},
                         lead_time_days=lead_time_days, safety_stock=safety_stock, reorder_point=reorder_point,
                         now=now)
        for sku_id, code, lead_time_days, safety_stock, reorder_point, units_7d, available in rows
    ]


# ------------------------------------------------------------------------------ stock history


def stock_history_get(*, sku_code: str, start: datetime, end: datetime, now: datetime | None = None,
                      max_points: int = MAX_HISTORY_POINTS) -> dict[str, Any]:
    """GET /api/v1/stock/{sku}/history/: the SKU's totals at each snapshot bucket in [start, end],
    oldest first, at most `max_points` (then `truncated` and `next_from`, where to continue).

    Snapshots hold only positions that changed (and all of them once a day), so a position's
    numbers at a bucket are those of its latest row at or before it: carried forward. Buckets
    younger than SNAPSHOT_RETENTION_DAYS are points every 5 minutes; older ones, whose 5-minute rows
    are pruned, are one point per hour (the hour's last bucket) read from the hourly rollup.
    """
    now = now or timezone.now()
    sku = Sku.objects.filter(code=sku_code).first()
    if sku is None:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    body: dict[str, Any] = {"sku": sku.code, "points": [], "truncated": False}
    if start > end:
        return body
    fine_from = now - timedelta(days=settings.SNAPSHOT_RETENTION_DAYS)
    tables = {"run": SnapshotRun._meta.db_table, "snapshot": StockSnapshot._meta.db_table,
              "hourly": StockSnapshotHourly._meta.db_table, "position": StockPosition._meta.db_table}
    with connection.cursor() as cursor:
        cursor.execute(sql_compose("""
            SELECT at FROM (
                SELECT MAX(r.bucket) AS at FROM {run} r
                WHERE r.bucket >= %(start)s AND r.bucket <= %(end)s AND r.bucket < %(fine)s
                GROUP BY date_trunc('hour', r.bucket AT TIME ZONE 'UTC')
                UNION ALL
                SELECT r.bucket FROM {run} r
                WHERE r.bucket >= GREATEST(%(start)s, %(fine)s) AND r.bucket <= %(end)s
            ) points ORDER BY at LIMIT %(limit)s
        """, **tables), {"start": start, "end": end, "fine": fine_from, "limit": max_points + 1})
        points = [row[0] for row in cursor.fetchall()]
        if len(points) > max_points:
            body["truncated"], body["next_from"] = True, points[max_points]
            points = points[:max_points]
        if not points:
            return body
        # Each position's level at the first point (its latest row at or before it, in either
        # table: the 5-minute row may be pruned, the hourly one is kept), then every row up to the
        # last point, in bucket order.
        cursor.execute(sql_compose("""
            SELECT anchor.position_id, anchor.bucket, anchor.on_hand, anchor.reserved
            FROM {position} p
            CROSS JOIN LATERAL (
                SELECT * FROM (
                    (SELECT s.position_id, s.bucket, s.on_hand, s.reserved FROM {snapshot} s
                     WHERE s.position_id = p.id AND s.bucket <= %(first)s ORDER BY s.bucket DESC LIMIT 1)
                    UNION ALL
                    (SELECT h.position_id, h.bucket, h.on_hand, h.reserved FROM {hourly} h
                     WHERE h.position_id = p.id AND h.hour <= %(first)s AND h.bucket <= %(first)s
                     ORDER BY h.hour DESC LIMIT 1)
                ) latest ORDER BY bucket DESC LIMIT 1
            ) anchor
            WHERE p.sku_id = %(sku)s
            UNION ALL
            SELECT s.position_id, s.bucket, s.on_hand, s.reserved FROM {snapshot} s
            WHERE s.sku_id = %(sku)s AND s.bucket > %(first)s AND s.bucket <= %(last)s
            UNION ALL
            SELECT h.position_id, h.bucket, h.on_hand, h.reserved FROM {hourly} h
            WHERE h.sku_id = %(sku)s AND h.bucket > %(first)s AND h.bucket <= %(last)s
            ORDER BY 2
        """, **tables), {"sku": sku.pk, "first": points[0], "last": points[-1]})
        rows = cursor.fetchall()
    state: dict[int, tuple[int, int]] = {}
    out, i = [], 0
    for at in points:
        while i < len(rows) and rows[i][1] <= at:
            position_id, _bucket, on_hand, reserved = rows[i]
            state[position_id] = (on_hand, reserved)
            i += 1
        out.append({
            "at": at,
            "on_hand": sum(on_hand for on_hand, _ in state.values()),
            "reserved": sum(reserved for _, reserved in state.values()),
            "available": sum(max(on_hand - reserved, 0) for on_hand, reserved in state.values()),
        })
    body["points"] = out
    return body


# ------------------------------------------------------------------------------ safety stock


def safety_stock_changes_list(*, sku_code: str, limit: int = 100) -> dict[str, Any]:
    """A SKU's safety-stock changes by the daily recompute, newest first, with their inputs."""
    sku = Sku.objects.filter(code=sku_code).first()
    if sku is None:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    changes = SafetyStockChange.objects.filter(sku=sku).order_by("-computed_at", "-id")[:limit]
    return {
        "sku": sku.code,
        "dynamic_safety_stock": sku.dynamic_safety_stock,
        "safety_stock": sku.safety_stock,
        "lead_time_days": sku.lead_time_days,
        "changes": [{
            "computed_at": c.computed_at, "day": c.day, "old": c.old_safety_stock, "new": c.new_safety_stock,
            "sigma": c.sigma, "mean": c.mean, "z": c.z, "lead_time_days": c.lead_time_days,
            "demand_days": c.demand_days,
        } for c in changes],
    }


def safety_stock_formula(*, daily: Sequence[int], z: float, lead_time_days: int) -> tuple[int, float, float]:
    """ceil(z x sigma x sqrt(lead time)) over a series of daily units (sample standard deviation),
    with the sigma and mean it used. Rounded to 9 decimals before the ceiling, so float noise
    (6.000000000001) does not add a unit."""
    n = len(daily)
    mean = sum(daily) / n
    sigma = math.sqrt(sum((x - mean) ** 2 for x in daily) / (n - 1)) if n > 1 else 0.0
    return math.ceil(round(z * sigma * math.sqrt(lead_time_days), 9)), sigma, mean
