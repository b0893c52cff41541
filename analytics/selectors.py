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

Bundles (inventory.bundles; docs/analytics.md "Bundles"). A bundle's sale writes ledger rows on
its components, so a component's units sold include the units it sold inside bundles. A bundle's
own units sold are counted from the sold rows of its first component (lowest id) whose metadata
names the bundle (`bundle_id`), each row's units divided by that component's units per bundle
(rounded down per row, so the count adds up the same over any split of time). Those rows are a
second "source" beside the plain one in every statement here (and DailySales holds them under
the bundle's id), so a bundle's velocity is as exact and as fresh as a plain SKU's. Its stock is
its derived availability (inventory.bundles), its history derived from its components' snapshots.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg import sql

from analytics.models import DailySales, JobMark, SafetyStockChange, SkuSalesWindow
from core.errors import NotFound
from core.sql import sql_compose
from inventory.bundles import bundle_components, bundle_location_numbers, bundles_stock_rows
from inventory.models import (
    SOLD_TYPES,
    BundleComponent,
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
EDGE_BRANCH = ("SELECT {sku_col}, {cols} FROM {rows} WHERE m.type IN ({sold}) "
               "AND m.occurred_at > %(s{n})s AND m.occurred_at < %(e{n})s {ledger_filter}")


# ------------------------------------------------------------------------------ bundles' units


def bundle_first_sql(*, filtered: bool) -> str:
    """Each bundle's first component (lowest id) and its units per bundle: the rows that count a
    bundle's units sold. `filtered`: only the bundles in %(skus)s."""
    return sql_compose(
        "SELECT DISTINCT ON (bc.bundle_id) bc.bundle_id, bc.component_id, bc.quantity FROM {component} bc "
        "{where} ORDER BY bc.bundle_id, bc.component_id", component=BundleComponent._meta.db_table,
        where=sql.SQL("WHERE bc.bundle_id = ANY(%(skus)s)" if filtered else ""))


# Ledger rows of a bundle's first component written for that bundle (`bundle_first` in a WITH),
# and one row's bundle units (every row of a bundle's sale or commit is whole bundles; a
# marketplace line oversold part-way counts the whole bundles it took).
BUNDLE_ROWS = ("{movement} m JOIN bundle_first bf ON bf.component_id = m.sku_id "
               "AND m.metadata ->> 'bundle_id' = bf.bundle_id::text")
BUNDLE_UNITS = "GREATEST(-m.on_hand_delta, 0) / bf.quantity"
PLAIN_UNITS = "GREATEST(-m.on_hand_delta, 0)"


def bundles_among(sku_ids: Sequence[int] | None) -> bool:
    """Whether any of these SKUs (any SKU, for None) is a bundle: one index probe."""
    components = BundleComponent.objects.all()
    if sku_ids is not None:
        components = components.filter(bundle_id__in=list(sku_ids))
    return components.exists()


def _cutoff_hint() -> datetime:
    """The daily-sales cutoff as last committed, or the beginning of time. Only a hint for the
    planner (an index range on recorded_at); the statements compare with the cutoff they read
    themselves, which can only be later (a refresh moves it forward), never earlier."""
    cutoff = JobMark.objects.filter(name=DAILY_SALES_MARK).values_list("cutoff", flat=True).first()
    return cutoff or datetime.min.replace(tzinfo=UTC)


def _units_sql(windows: Sequence[int], *, now: datetime, sku_ids: Sequence[int] | None,
               bundles: bool) -> tuple[str, dict[str, Any]]:
    """One statement answering `(sku_id, units_<N>...)` for each window N (days), SKUs with no
    sale in the longest window left out. For window N ending at `now`, with t0 = today's UTC
    midnight, the sources cover disjoint times:
    - the partial first day (now - N days, t0 - (N-1) days) and today [t0, now]: the ledger;
    - the whole days [t0 - (N-1) days, t0): DailySales (rows recorded before the refresh
      cutoff), or for N in (7, 28) its per-SKU sums in SkuSalesWindow when they are for today,
      plus the ledger rows recorded at or after the cutoff.
    The cutoff and the day of SkuSalesWindow are read in the same statement as the tables they
    describe, so a refresh committing meanwhile cannot count a row twice or never.
    `bundles`: each ledger source is read a second time for bundles' units (BUNDLE_ROWS, under the
    bundle's id); without it a bundle's answer would hold only its whole days. Plain SKUs' numbers
    are the same either way (the bundle branches answer bundle ids only)."""
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
    movement = sql.Identifier(StockMovement._meta.db_table)
    sources: list[tuple[sql.Composable, sql.Composable, str, sql.Composable]] = [
        (sql.SQL("m.sku_id"), sql.SQL("{movement} m").format(movement=movement), PLAIN_UNITS,
         sku_filter.format(col=sql.SQL("m.sku_id")))]
    if bundles:  # bundle_first is filtered by %(skus)s itself
        sources.append((sql.SQL("bf.bundle_id"), sql.SQL(BUNDLE_ROWS).format(movement=movement), BUNDLE_UNITS,
                        sql.SQL("")))
    branches: list[sql.Composable] = []
    for sku_col, rows, units, ledger_filter in sources:
        branches.append(sql.SQL("""
                SELECT {sku_col}, {today_columns} FROM {rows}
                WHERE m.type IN ({sold}) AND m.occurred_at >= %(t0)s AND m.occurred_at <= %(now)s {ledger_filter}
        """).format(sku_col=sku_col, rows=rows, sold=sold_types_sql(), ledger_filter=ledger_filter,
                    today_columns=columns(f"{units} AS u{{n}}")))
        # One range scan per window's partial first day (each its own UNION ALL branch, so each
        # is an index-only range scan of movement_sold_occurred); a row there counts for its
        # window only (other windows cover that day whole).
        branches.extend(
            sql.SQL(EDGE_BRANCH.replace("{n}", str(n))).format(
                sku_col=sku_col, rows=rows, sold=sold_types_sql(), ledger_filter=ledger_filter,
                cols=sql.SQL(", ").join(sql.SQL(f"{units} AS u{k}" if k == n else f"0 AS u{k}") for k in windows))
            for n in windows)
        branches.append(sql.SQL("""
                SELECT {sku_col}, {late_columns} FROM {rows}
                WHERE m.type IN ({sold})
                  AND m.recorded_at >= %(cutoff)s
                  AND m.recorded_at >= (SELECT COALESCE(MAX(k.cutoff), '-infinity'::timestamptz) FROM {mark} k
                                        WHERE k.name = %(mark)s)
                  AND m.occurred_at >= %(e_longest)s AND m.occurred_at < %(t0)s {ledger_filter}
        """).format(sku_col=sku_col, rows=rows, sold=sold_types_sql(), ledger_filter=ledger_filter,
                    mark=sql.Identifier(JobMark._meta.db_table),
                    late_columns=columns(f"CASE WHEN m.occurred_at >= %(e{{n}})s THEN {units} ELSE 0 END AS u{{n}}")))
    query = sql_compose(
        """
        WITH {bundle_first} whole AS MATERIALIZED ({whole}),
        live AS MATERIALIZED (
            SELECT sku_id, {sums} FROM ({branches}) parts (sku_id, {names})
            GROUP BY sku_id
        )
        SELECT COALESCE(w.sku_id, l.sku_id) AS sku_id, {totals}
        FROM whole w FULL JOIN live l ON l.sku_id = w.sku_id
        """,
        bundle_first=sql.SQL(f"bundle_first AS MATERIALIZED ({bundle_first_sql(filtered=sku_ids is not None)}),"
                             if bundles else ""),
        whole=whole,
        branches=sql.SQL(" UNION ALL ").join(branches),
        names=columns("u{n}"),
        sums=columns("SUM(u{n})::bigint AS u{n}"),
        totals=columns("COALESCE(w.u{n}, 0) + COALESCE(l.u{n}, 0) AS units_{n}"),
    )
    return query, params


def units_sold(*, windows: Sequence[int] = VELOCITY_WINDOWS, now: datetime | None = None,
               sku_ids: Sequence[int] | None = None, bundles: bool | None = None) -> dict[int, dict[int, int]]:
    """{sku_id: {N: units sold in the last N x 24 h}} for SKUs with a sale in the longest window
    (all SKUs, or those of `sku_ids`); a bundle's are bundle units (module docstring). `bundles`:
    whether bundles are among them, when the caller knows (None: looked up)."""
    now = now or timezone.now()
    windows = sorted(set(windows))
    if bundles is None:
        bundles = bundles_among(sku_ids)
    query, params = _units_sql(windows, now=now, sku_ids=sku_ids, bundles=bundles)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return {row[0]: dict(zip(windows, row[1:], strict=True)) for row in cursor.fetchall()}


def daily_units(*, sku_ids: Sequence[int], first_day: date, last_day: date,
                bundles: bool | None = None) -> dict[int, dict[date, int]]:
    """{sku_id: {day: units}} for whole UTC days in [first_day, last_day] (days without sales
    absent): DailySales plus ledger rows recorded since its cutoff, in one statement (a bundle's
    late rows counted as for units_sold, under the bundle; `bundles` as for units_sold)."""
    late = """
            SELECT {sku_col}, (m.occurred_at AT TIME ZONE 'UTC')::date, {units}
            FROM {rows}
            WHERE m.type IN ({sold}) {ledger_filter}
              AND m.recorded_at >= %(cutoff)s
              AND m.recorded_at >= (SELECT COALESCE(MAX(k.cutoff), '-infinity'::timestamptz) FROM {mark} k
                                    WHERE k.name = %(mark)s)
              AND m.occurred_at >= %(start)s AND m.occurred_at < %(end)s"""
    movement, mark = sql.Identifier(StockMovement._meta.db_table), sql.Identifier(JobMark._meta.db_table)
    branches = [sql.SQL(late).format(sku_col=sql.SQL("m.sku_id"), units=sql.SQL(PLAIN_UNITS), sold=sold_types_sql(),
                                     rows=sql.SQL("{movement} m").format(movement=movement), mark=mark,
                                     ledger_filter=sql.SQL("AND m.sku_id = ANY(%(skus)s)"))]
    if bundles is None:
        bundles = bundles_among(sku_ids)
    if bundles:
        branches.append(sql.SQL(late).format(sku_col=sql.SQL("bf.bundle_id"), units=sql.SQL(BUNDLE_UNITS),
                                             sold=sold_types_sql(), mark=mark, ledger_filter=sql.SQL(""),
                                             rows=sql.SQL(BUNDLE_ROWS).format(movement=movement)))
    query = sql_compose(
        """
        WITH {bundle_first} daily AS (
            SELECT d.sku_id, d.day, d.units FROM {daily} d
            WHERE d.sku_id = ANY(%(skus)s) AND d.day >= %(first)s AND d.day <= %(last)s
        )
        SELECT sku_id, day, SUM(units)::bigint FROM (
            SELECT sku_id, day, units FROM daily
            UNION ALL
            {late}
        ) parts
        GROUP BY sku_id, day
        """,
        bundle_first=sql.SQL(f"bundle_first AS MATERIALIZED ({bundle_first_sql(filtered=True)}),"
                             if bundles else ""),
        late=sql.SQL(" UNION ALL ").join(branches), daily=DailySales._meta.db_table)
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


def _bundles_available(bundle_ids: Sequence[int]) -> dict[int, int]:
    """A bundle's available = the sum over locations of the whole bundles its components make
    there (inventory.bundles, as GET /stock/{bundle}/ answers), in one query."""
    if not bundle_ids:
        return {}
    return {bundle_id: sum(row[3] for row in rows) for bundle_id, rows in bundles_stock_rows(list(bundle_ids)).items()}


def available_totals(skus: Sequence[Sku]) -> dict[int, int]:
    """{sku id: available} for plain SKUs and bundles alike (a SKU with no stock: absent)."""
    plain = [s.pk for s in skus if not s.is_bundle]
    return {**(_available(plain) if plain else {}), **_bundles_available([s.pk for s in skus if s.is_bundle])}


def sku_analytics_get(*, sku_code: str, now: datetime | None = None) -> dict[str, Any]:
    """GET /api/v1/analytics/skus/{sku}/: live, exact as of `now`. A bundle's is in bundle units
    and its derived availability."""
    now = now or timezone.now()
    sku = Sku.objects.filter(code=sku_code).first()
    if sku is None:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    units = units_sold(now=now, sku_ids=[sku.pk], bundles=sku.is_bundle).get(sku.pk, {})
    return analytics_object(code=sku.code, available=available_totals([sku]).get(sku.pk, 0), units=units,
                            lead_time_days=sku.lead_time_days, safety_stock=sku.safety_stock,
                            reorder_point=sku.reorder_point, now=now)


def fast_movers_list(*, days: int = 7, limit: int = 20, now: datetime | None = None) -> list[dict[str, Any]]:
    """SKUs by units sold in the last `days` x 24 h, most first (ties by code); no sales, left out.
    Bundles are listed with their bundle units (their components with every unit they sold)."""
    now = now or timezone.now()
    # Bundles' branches always: with no bundle they join an empty table and read nothing.
    units_query, params = _units_sql([days], now=now, sku_ids=None, bundles=True)
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


# (sku id, code, lead_time_days, safety_stock, reorder_point, units_7d, available)
RiskRow = tuple[int, str, int, int, int | None, int, int]


def _cover_key(row: RiskRow) -> tuple[Fraction, str]:
    return Fraction(row[6], row[5]), row[1]


def stockout_risk_list(*, limit: int = 50, now: datetime | None = None) -> list[dict[str, Any]]:
    """Active SKUs at risk (days of cover < lead time), fewest days of cover first (ties by code),
    as analytics objects. Only SKUs that sold in the last 7 days can be at risk (no velocity, no
    cover), so the scan starts from those. Active bundles are at risk by the same rule on their
    bundle units and derived availability: the statement also answers the bundles that sold (their
    availability is derived after it, inventory.bundles) and they are merged in cover order."""
    now = now or timezone.now()
    units_query, params = _units_sql([7], now=now, sku_ids=None, bundles=True)
    # Both sides materialized and joined by hash: the planner cannot estimate how many SKUs sold
    # (an aggregate over a union), and a nested loop over tens of thousands of them is seconds.
    # Bundles hold no positions: the join with `stock` leaves them out of `risky`.
    query = sql_compose(
        """
        WITH units AS MATERIALIZED ({units}),
        stock AS MATERIALIZED (
            SELECT s.id, s.code, s.lead_time_days, s.safety_stock, s.reorder_point,
                   SUM(GREATEST(p.on_hand - p.reserved, 0))::bigint AS available
            FROM {position} p JOIN {sku} s ON s.id = p.sku_id
            WHERE s.active
            GROUP BY s.id
        ),
        risky AS (
            SELECT a.id, a.code, a.lead_time_days, a.safety_stock, a.reorder_point, u.units_7, a.available,
                   a.available::numeric / u.units_7 AS cover
            FROM units u JOIN stock a ON a.id = u.sku_id
            WHERE u.units_7 > 0 AND a.available * 7 < a.lead_time_days::bigint * u.units_7
            ORDER BY cover, a.code
            LIMIT %(limit)s
        )
        SELECT false AS bundle, r.* FROM risky r
        UNION ALL
        SELECT true, s.id, s.code, s.lead_time_days, s.safety_stock, s.reorder_point, u.units_7, NULL, NULL
        FROM units u JOIN {sku} s ON s.id = u.sku_id
        WHERE s.is_bundle AND s.active AND u.units_7 > 0
        ORDER BY bundle, cover, code
        """,
        units=sql.SQL(units_query), sku=Sku._meta.db_table, position=StockPosition._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(query, {**params, "limit": limit})
        found = cursor.fetchall()
    rows: list[RiskRow] = [tuple(row[1:8]) for row in found if not row[0]]
    sold_bundles = [row[1:7] for row in found if row[0]]
    bundle_ids: set[int] = set()
    if sold_bundles:
        available = _bundles_available([row[0] for row in sold_bundles])
        at_risk: list[RiskRow] = sorted(
            ((*row, available.get(row[0], 0)) for row in sold_bundles
             if available.get(row[0], 0) * 7 < row[2] * row[5]), key=_cover_key)
        bundle_ids = {row[0] for row in at_risk}
        # Both lists are in cover order; the merge keeps the plain SKUs' order as the database gave it.
        rows = list(heapq.merge(rows, at_risk, key=_cover_key))[:limit]
    other = units_sold(windows=(1, 28), now=now, sku_ids=[row[0] for row in rows],
                       bundles=any(row[0] in bundle_ids for row in rows)) if rows else {}
    return [
        analytics_object(code=code, available=available_, units={**other.get(sku_id, {}), 7: units_7d},
                         lead_time_days=lead_time_days, safety_stock=safety_stock, reorder_point=reorder_point,
                         now=now)
        for sku_id, code, lead_time_days, safety_stock, reorder_point, units_7d, available_ in rows
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

    A bundle has no positions: its points are derived from its components' snapshot rows at each
    point (whole bundles per location, summed), as GET /stock/{bundle}/ derives current stock.
    """
    now = now or timezone.now()
    sku = Sku.objects.filter(code=sku_code).first()
    if sku is None:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    body: dict[str, Any] = {"sku": sku.code, "points": [], "truncated": False}
    components = bundle_components([sku.pk]).get(sku.pk, ()) if sku.is_bundle else ()
    # The SKUs whose positions' rows make the points: the SKU itself, or a bundle's components.
    sku_ids = [component_id for component_id, _ in components] if sku.is_bundle else [sku.pk]
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
            WHERE p.sku_id = ANY(%(skus)s)
            UNION ALL
            SELECT s.position_id, s.bucket, s.on_hand, s.reserved FROM {snapshot} s
            WHERE s.sku_id = ANY(%(skus)s) AND s.bucket > %(first)s AND s.bucket <= %(last)s
            UNION ALL
            SELECT h.position_id, h.bucket, h.on_hand, h.reserved FROM {hourly} h
            WHERE h.sku_id = ANY(%(skus)s) AND h.bucket > %(first)s AND h.bucket <= %(last)s
            ORDER BY 2
        """, **tables), {"skus": sku_ids, "first": points[0], "last": points[-1]})
        rows = cursor.fetchall()
    state: dict[int, tuple[int, int]] = {}
    # A bundle's component positions: which component and location each row is of.
    where = ({pk: (sku_id, location_id) for pk, sku_id, location_id in StockPosition.objects.filter(
        sku_id__in=sku_ids).values_list("pk", "sku_id", "location_id")} if sku.is_bundle else {})
    out, i = [], 0
    for at in points:
        while i < len(rows) and rows[i][1] <= at:
            position_id, _bucket, on_hand, reserved = rows[i]
            state[position_id] = (on_hand, reserved)
            i += 1
        out.append({"at": at, **(_bundle_point(components, state, where) if sku.is_bundle else {
            "on_hand": sum(on_hand for on_hand, _ in state.values()),
            "reserved": sum(reserved for _, reserved in state.values()),
            "available": sum(max(on_hand - reserved, 0) for on_hand, reserved in state.values()),
        })})
    body["points"] = out
    return body


def _bundle_point(components: tuple[tuple[int, int], ...], state: dict[int, tuple[int, int]],
                  where: dict[int, tuple[int, int]]) -> dict[str, int]:
    """A bundle's totals from its components' positions' levels at one point: per location, the
    whole bundles they make (inventory.bundles.bundle_location_numbers), summed."""
    by_location: dict[int, dict[int, tuple[int, int, int]]] = {}
    for position_id, (on_hand, reserved) in state.items():
        component_id, location_id = where[position_id]
        by_location.setdefault(location_id, {})[component_id] = (on_hand, reserved, 0)
    numbers = [bundle_location_numbers(components, at) for at in by_location.values()]
    return {"on_hand": sum(n[0] for n in numbers), "reserved": sum(n[1] for n in numbers),
            "available": sum(n[2] for n in numbers)}


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
