"""Writing holds: the step reservation creation and waitlist activation share.

Both allocate over locked positions (reservations.allocation) and then raise `reserved` here, so
one module writes every hold and its ledger row. Creation, the checkout hot path, writes its
holds set-based (`holds_write`: one UPDATE of the positions and one INSERT of the ledger rows,
whatever the number of lines, through inventory.batch) and its reservation with its lines in one
statement (`reservation_insert`); waitlist activation, whose reservation row exists, writes the same
holds and then the lines (`holds_apply`).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from django.db import connection
from psycopg import sql

from core.sql import sql_compose, sql_unnest
from inventory.batch import MovementBatch
from inventory.models import MovementType, StockPosition
from inventory.services import MovementContext
from reservations.allocation import Allocation
from reservations.models import Reservation, ReservationLine


def reservation_context(*, reservation: Reservation, context: MovementContext | None) -> MovementContext:
    context = context or MovementContext()
    return replace(context, reservation_id=reservation.pk, reference=context.reference or reservation.order_ref)


def _planned(plan: Allocation, order: list[int] | None) -> list[tuple[StockPosition, int, int | None]]:
    """The plan's holds, lines in the order the client listed their SKUs (a bundle's components
    where the bundle was listed), then by position."""
    rank = {sku_id: i for i, sku_id in enumerate(order or [])}
    return sorted(plan.holds.values(), key=lambda h: (rank.get(h[2] or h[0].sku_id, 0), h[0].pk, h[2] or 0))


def holds_apply(*, reservation: Reservation, plan: Allocation, context: MovementContext,
                order: list[int] | None = None) -> tuple[list[StockPosition], list[ReservationLine]]:
    """Raise `reserved` for every planned hold of a locked plan and write the lines + ledger rows
    (`holds_write`, then the lines): for a reservation whose row exists (waitlist activation).

    `order` (SKU ids) only orders the lines as the client listed them; positions are already locked.
    Returns the positions changed and the lines written.
    """
    touched, lines = holds_write(reservation=reservation, plan=plan, context=context, order=order)
    ReservationLine.objects.bulk_create(lines)
    return touched, lines


def holds_write(*, reservation: Reservation, plan: Allocation, context: MovementContext,
                order: list[int] | None = None) -> tuple[list[StockPosition], list[ReservationLine]]:
    """`holds_apply` for a new reservation, set-based: every hold's `reserved` and ledger row in
    two statements (inventory.batch.MovementBatch: the same refusals, decided on the locked
    numbers, and an UPDATE guarded by each position's locked version). The lines are returned
    unsaved: `reservation_insert` writes them with the reservation row."""
    ctx = reservation_context(reservation=reservation, context=context)
    batch = MovementBatch()
    touched: dict[int, StockPosition] = {}  # a bundle's hold and a plain one may share a position
    lines: list[ReservationLine] = []
    for position, quantity, bundle_id in _planned(plan, order):
        batch.apply(position=position, type=MovementType.RESERVE, reserved_delta=quantity, context=ctx)
        lines.append(ReservationLine(reservation=reservation, sku_id=position.sku_id,
                                     location_id=position.location_id, quantity=quantity, bundle_id=bundle_id))
        touched[position.pk] = position
    batch.flush()
    return list(touched.values()), lines


RESERVATION_COLUMNS = ("id", "status", "channel_id", "order_ref", "ttl_seconds", "expires_at", "created_by_id",
                        "created_at", "updated_at", "activated_at", "closed_at", "closed_by", "request_key")


@cache
def _insert_sql() -> str:
    return sql_compose(
        "WITH reservation AS (INSERT INTO {reservations} ({columns}) VALUES ({values})) "
        "INSERT INTO {lines} (reservation_id, sku_id, location_id, quantity, committed, bundle_id) "
        "SELECT %s, sku_id, location_id, quantity, 0, bundle_id FROM {rows} AS l(sku_id, location_id, quantity, "
        "bundle_id) RETURNING id",
        reservations=Reservation._meta.db_table, columns=RESERVATION_COLUMNS,
        values=sql.SQL(", ").join([sql.Placeholder()] * len(RESERVATION_COLUMNS)),
        lines=ReservationLine._meta.db_table, rows=sql_unnest(("bigint", "bigint", "integer", "bigint")))


def reservation_insert(*, reservation: Reservation, lines: list[ReservationLine]) -> None:
    """INSERT a new reservation and its lines in one statement (ids set on the line objects).

    Its unique constraints (request_key, the live order_ref) refuse it as an IntegrityError, as
    `Reservation.objects.create` would. Run inside the creating transaction: ledger rows written
    earlier in it point at this row (foreign keys are checked at commit)."""
    r = reservation
    values: list[Any] = [r.pk, r.status, r.channel_id, r.order_ref, r.ttl_seconds, r.expires_at, r.created_by_id,
                         r.created_at, r.updated_at, r.activated_at, r.closed_at, r.closed_by, r.request_key]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(), [*values, r.pk, [ln.sku_id for ln in lines],
                                       [ln.location_id for ln in lines], [ln.quantity for ln in lines],
                                       [ln.bundle_id for ln in lines]])
        ids = [row[0] for row in cursor.fetchall()]
    for line, pk in zip(lines, ids, strict=True):
        line.pk = pk
    r._state.adding, r._state.db = False, "default"  # saved: a later .save() updates it


def held_at(line: ReservationLine) -> tuple[int, int]:
    """(sku_id, location_id) of a line that holds stock: an active reservation's lines always
    name their location (only a waiting reservation's request lines may not)."""
    assert line.location_id is not None, f"reservation line {line.pk} holds stock at no location"
    return line.sku_id, line.location_id
