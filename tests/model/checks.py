"""Invariants shared by the machines, read straight from the database.

Each function looks only at the rows of one example (its SKU ids) and returns a list of
problems, each naming the row and both numbers, so an assertion message says exactly what drifted.
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, F, Sum
from django.db.models.functions import Coalesce

from inventory.models import StockMovement, StockPosition
from reservations.models import Reservation, ReservationLine


def label(sku_code: str, location_code: str) -> str:
    return f"{sku_code}@{location_code}"


def positions(sku_ids) -> dict[tuple[int, int], dict]:
    """{(sku_id, location_id): row} with the counters and the sums/count of the ledger rows."""
    rows = (StockPosition.objects.filter(sku_id__in=list(sku_ids))
            .annotate(ledger_on_hand=Coalesce(Sum("movements__on_hand_delta"), 0),
                      ledger_reserved=Coalesce(Sum("movements__reserved_delta"), 0),
                      ledger_rows=Count("movements"))
            .values("sku_id", "location_id", "sku__code", "location__code", "on_hand", "reserved", "version",
                    "ledger_on_hand", "ledger_reserved", "ledger_rows"))
    return {(r["sku_id"], r["location_id"]): r for r in rows}


def ledger_problems(rows: dict) -> list[str]:
    """Invariant 1: counters equal the sums of the ledger deltas; version equals the row count."""
    problems = []
    for r in rows.values():
        if (r["on_hand"], r["reserved"], r["version"]) != (r["ledger_on_hand"], r["ledger_reserved"],
                                                           r["ledger_rows"]):
            problems.append(f"{label(r['sku__code'], r['location__code'])}: position on_hand/reserved/version "
                            f"{r['on_hand']}/{r['reserved']}/{r['version']} but ledger "
                            f"{r['ledger_on_hand']}/{r['ledger_reserved']}/{r['ledger_rows']}")
    return problems


def negative_problems(rows: dict) -> list[str]:
    """Invariant 2: nothing below zero."""
    return [f"{label(r['sku__code'], r['location__code'])}: on_hand={r['on_hand']} reserved={r['reserved']}"
            for r in rows.values() if r["on_hand"] < 0 or r["reserved"] < 0]


def active_holds(sku_ids) -> dict[tuple[int, int], int]:
    """{(sku_id, location_id): units held by lines of active reservations}."""
    rows = (ReservationLine.objects.filter(sku_id__in=list(sku_ids), reservation__status=Reservation.Status.ACTIVE)
            .values("sku_id", "location_id").annotate(held=Sum("quantity")))
    return {(r["sku_id"], r["location_id"]): r["held"] for r in rows}


def reserved_problems(rows: dict, sku_ids) -> list[str]:
    """Invariant 3: a position's reserved is exactly what active reservations hold there."""
    held = active_holds(sku_ids)
    problems = []
    for key in set(rows) | set(held):
        reserved = rows[key]["reserved"] if key in rows else 0
        if reserved != held.get(key, 0):
            name = label(rows[key]["sku__code"], rows[key]["location__code"]) if key in rows else str(key)
            problems.append(f"{name}: reserved={reserved} but active reservation lines hold {held.get(key, 0)}")
    return problems


def overdrawn_reserve_rows(sku_ids, *, after_id: int = 0) -> list[str]:
    """A hold (creation or waitlist activation) only ever takes *available* units, so every
    `reserve` ledger row leaves reserved <= on_hand at its position. A row that does not was
    decided on stale numbers."""
    rows = (StockMovement.objects.filter(sku_id__in=list(sku_ids), type="reserve", id__gt=after_id,
                                         reserved_after__gt=F("on_hand_after"))
            .values("id", "sku__code", "location__code", "source", "reserved_delta", "on_hand_after",
                    "reserved_after", "reservation_id"))
    return [f"ledger #{r['id']} reserve {r['reserved_delta']} at {label(r['sku__code'], r['location__code'])} "
            f"(source {r['source']!r}, reservation {r['reservation_id']}) left reserved={r['reserved_after']} > "
            f"on_hand={r['on_hand_after']}"
            for r in rows]


def stock_problems(sku_ids) -> dict[str, list[str]]:
    rows = positions(sku_ids)
    return {"ledger": ledger_problems(rows), "negative": negative_problems(rows),
            "reserved": reserved_problems(rows, sku_ids)}


def sums_by(rows, key_fields, value_field, sign: int = 1) -> dict:
    totals: dict = defaultdict(int)
    for r in rows:
        totals[tuple(r[f] for f in key_fields)] += sign * r[value_field]
    return dict(totals)
