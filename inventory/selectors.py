"""Reads of stock. No locks: a read is a consistent snapshot of committed rows."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.db import connection
from django.db.models import Count, Max, QuerySet
from psycopg import sql

from core.errors import NotFound
from core.sql import sql_compose
from inventory.bundles import bundle_components, bundle_location_numbers, bundles_stock_rows
from inventory.models import Location, Sku, StockMovement, StockPosition


def _position_dict(location_code: str, on_hand: int, reserved: int, version: int) -> dict:
    return {
        "location": location_code,
        "on_hand": on_hand,
        "reserved": reserved,
        "available": max(on_hand - reserved, 0),
        "version": version,
    }


def _stock_dict(sku_code: str, locations: list[dict], *, bundle: bool = False) -> dict:
    """Totals sum the locations; `available` sums per-location availability, because stock
    reserved at one location cannot be covered by stock at another. A bundle's answer says so
    (contract: `"bundle": true`); a plain SKU's answer has no such key."""
    locations.sort(key=lambda row: row["location"])
    found = {
        "sku": sku_code,
        "on_hand": sum(row["on_hand"] for row in locations),
        "reserved": sum(row["reserved"] for row in locations),
        "available": sum(row["available"] for row in locations),
        "locations": locations,
    }
    if bundle:
        found["bundle"] = True
    return found


def position_to_dict(position: StockPosition) -> dict:
    """A single position as the API shows it in adjustment answers."""
    return {"sku": position.sku.code, **_position_dict(position.location.code, position.on_hand,
                                                        position.reserved, position.version)}


@cache
def _stock_sql(one: bool) -> str:
    # Composed once per process (identifiers from model metadata; values are parameters). One
    # code is compared as a scalar: PostgreSQL then reuses the prepared statement's plan. With an
    # array, a custom plan (made for the one element it sees) always looks cheaper than the
    # generic one (which assumes ten), so every read was planned anew (pg_prepared_statements:
    # 0 generic, 3,045 custom), a share of the read's database CPU.
    # Each SKU's positions through its index (the LATERAL subquery, kept apart by OFFSET 0): as a
    # plain join, the plan for several codes hashed the SKUs and read every position (a sequential
    # scan of 1,112 rows per read of 10 SKUs in the benchmark; database CPU per read 0.18-0.20 ->
    # 0.11-0.12 ms in-process, docs/performance.md, session 10).
    return sql_compose(
        "SELECT s.code, x.code, x.on_hand, x.reserved, x.version, s.is_bundle, s.id FROM {sku} s "
        "LEFT JOIN LATERAL (SELECT l.code, p.on_hand, p.reserved, p.version FROM {position} p "
        "JOIN {location} l ON l.id = p.location_id WHERE p.sku_id = s.id OFFSET 0) x ON true WHERE {match}",
        sku=Sku._meta.db_table, position=StockPosition._meta.db_table, location=Location._meta.db_table,
        match=sql.SQL("s.code = %s" if one else "s.code = ANY(%s)"))


def stock_get_many(*, sku_codes: list[str]) -> list[dict]:
    """Current stock for several SKUs in one query, in the order asked; unknown codes omitted.

    The hot read of every storefront page: one statement (SKUs, their positions and location
    codes joined), no ORM query building, so a read costs one round trip and little Python."""
    wanted = list(dict.fromkeys(sku_codes))
    by_sku: dict[str, list[dict]] = {}
    bundles: dict[int, str] = {}  # bundles hold no positions: derived from their components below
    with connection.cursor() as cursor:
        cursor.execute(_stock_sql(len(wanted) == 1), [wanted[0] if len(wanted) == 1 else wanted])
        for sku_code, location_code, on_hand, reserved, version, is_bundle, sku_id in cursor.fetchall():
            rows = by_sku.setdefault(sku_code, [])
            if is_bundle:
                bundles[sku_id] = sku_code
            elif location_code is not None:  # a SKU with no position yet has no stock anywhere
                rows.append(_position_dict(location_code, on_hand, reserved, version))
    if bundles:
        for bundle_id, derived in bundles_stock_rows(list(bundles)).items():
            by_sku[bundles[bundle_id]] = [
                {"location": code, "on_hand": on_hand, "reserved": reserved, "available": available,
                 "version": version} for code, on_hand, reserved, available, version in derived]
    codes_of_bundles = set(bundles.values())
    return [_stock_dict(code, by_sku[code], bundle=code in codes_of_bundles) for code in wanted if code in by_sku]


def stock_get(*, sku_code: str) -> dict:
    found = stock_get_many(sku_codes=[sku_code])
    if not found:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    return found[0]


def stock_as_of(*, sku_code: str, at: datetime) -> dict:
    """Stock as the system knew it at `at`, rebuilt from the ledger.

    Uses recorded_at (when we learned of a change), not occurred_at, so an answer about the past
    never changes later when a late event arrives: an audit view. For each position, the newest
    ledger row recorded by then holds on_hand/reserved after it; the row count is the version.
    """
    sku = Sku.objects.filter(code=sku_code).first()
    if sku is None:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    if sku.is_bundle:
        return _bundle_as_of(sku, at)
    latest = (
        StockMovement.objects.filter(sku=sku, recorded_at__lte=at)
        .values("position_id")
        .annotate(last_id=Max("id"), rows=Count("id"))
    )
    versions = {row["last_id"]: row["rows"] for row in latest}
    movements = StockMovement.objects.filter(id__in=versions).select_related("location")
    locations = [
        _position_dict(m.location.code, m.on_hand_after, m.reserved_after, versions[m.id]) for m in movements
    ]
    return _stock_dict(sku.code, locations)


def _bundle_as_of(bundle: Sku, at: datetime) -> dict:
    """A bundle as of `at`: each component's ledger state then, derived as for a current read."""
    components = bundle_components([bundle.pk])[bundle.pk]
    codes = dict(Sku.objects.filter(pk__in=[c for c, _ in components]).values_list("pk", "code"))
    per_location: dict[str, dict[int, tuple[int, int, int]]] = {}
    for component_id, _ in components:
        for row in stock_as_of(sku_code=codes[component_id], at=at)["locations"]:
            per_location.setdefault(row["location"], {})[component_id] = (
                row["on_hand"], row["reserved"], row["version"])
    locations = []
    for code, numbers in per_location.items():
        on_hand, reserved, available, version = bundle_location_numbers(components, numbers)
        locations.append({"location": code, "on_hand": on_hand, "reserved": reserved, "available": available,
                          "version": version})
    return _stock_dict(bundle.code, locations, bundle=True)


def movements_for_sku(*, sku_code: str, location_code: str | None = None) -> QuerySet[StockMovement]:
    """Ledger rows of a SKU, newest first (a queryset, for cursor pagination)."""
    sku = Sku.objects.filter(code=sku_code).first()
    if sku is None:
        raise NotFound(f"Unknown SKU '{sku_code}'.", code="sku_not_found")
    qs = StockMovement.objects.filter(sku=sku).select_related("location").order_by("-id")
    if location_code:
        location = Location.objects.filter(code=location_code).first()
        if location is None:
            raise NotFound(f"Unknown location '{location_code}'.", code="location_not_found")
        qs = qs.filter(location=location)
    return qs


def ledger_drift() -> list[dict]:
    """Positions whose counters differ from the sums of their ledger rows (should be none)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.id, s.code, l.code, p.on_hand, p.reserved, p.version,
                   COALESCE(m.on_hand_sum, 0), COALESCE(m.reserved_sum, 0), COALESCE(m.rows, 0)
            FROM inventory_stockposition p
            JOIN inventory_sku s ON s.id = p.sku_id
            JOIN inventory_location l ON l.id = p.location_id
            LEFT JOIN (
                SELECT position_id, SUM(on_hand_delta) AS on_hand_sum,
                       SUM(reserved_delta) AS reserved_sum, COUNT(*) AS rows
                FROM inventory_stockmovement GROUP BY position_id
            ) m ON m.position_id = p.id
            WHERE p.on_hand <> COALESCE(m.on_hand_sum, 0)
               OR p.reserved <> COALESCE(m.reserved_sum, 0)
               OR p.version <> COALESCE(m.rows, 0)
            ORDER BY p.id
            """
        )
        columns = ["position_id", "sku", "location", "on_hand", "reserved", "version",
                   "ledger_on_hand", "ledger_reserved", "ledger_rows"]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
