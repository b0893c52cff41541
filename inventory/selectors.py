"""Reads of stock. No locks: a read is a consistent snapshot of committed rows."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.db import connection
from django.db.models import Count, Max, QuerySet

from core.errors import NotFound
from inventory.models import Location, Sku, StockMovement, StockPosition


def _position_dict(location_code: str, on_hand: int, reserved: int, version: int) -> dict:
    return {
        "location": location_code,
        "on_hand": on_hand,
        "reserved": reserved,
        "available": max(on_hand - reserved, 0),
        "version": version,
    }


def _stock_dict(sku_code: str, locations: list[dict]) -> dict:
    """Totals sum the locations; `available` sums per-location availability, because stock
    reserved at one location cannot be covered by stock at another."""
    locations.sort(key=lambda row: row["location"])
    return {
        "sku": sku_code,
        "on_hand": sum(row["on_hand"] for row in locations),
        "reserved": sum(row["reserved"] for row in locations),
        "available": sum(row["available"] for row in locations),
        "locations": locations,
    }


def position_to_dict(position: StockPosition) -> dict:
    """A single position as the API shows it in adjustment answers."""
    return {"sku": position.sku.code, **_position_dict(position.location.code, position.on_hand,
                                                        position.reserved, position.version)}


def stock_get_many(*, sku_codes: list[str]) -> list[dict]:
    """Current stock for several SKUs in two queries, in the order asked; unknown codes omitted."""
    skus = {s.code: s for s in Sku.objects.filter(code__in=sku_codes)}
    rows = (
        StockPosition.objects.filter(sku__in=skus.values())
        .values_list("sku_id", "location__code", "on_hand", "reserved", "version")
    )
    by_sku: dict[int, list[dict]] = defaultdict(list)
    for sku_id, location_code, on_hand, reserved, version in rows:
        by_sku[sku_id].append(_position_dict(location_code, on_hand, reserved, version))
    seen, result = set(), []
    for code in sku_codes:
        if code in skus and code not in seen:
            seen.add(code)
            result.append(_stock_dict(code, by_sku[skus[code].pk]))
    return result


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
