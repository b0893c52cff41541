"""Writing holds: the step reservation creation and waitlist activation share.

Both allocate over locked positions (reservations.allocation) and then raise `reserved` here, so
one function writes every hold and its ledger row.
"""

from __future__ import annotations

from dataclasses import replace

from inventory.models import MovementType, StockPosition
from inventory.services import MovementContext, movement_apply
from reservations.allocation import Allocation
from reservations.models import Reservation, ReservationLine


def reservation_context(*, reservation: Reservation, context: MovementContext | None) -> MovementContext:
    context = context or MovementContext()
    return replace(context, reservation_id=reservation.pk, reference=context.reference or reservation.order_ref)


def holds_apply(*, reservation: Reservation, plan: Allocation, context: MovementContext,
                order: list[int] | None = None) -> tuple[list[StockPosition], list[ReservationLine]]:
    """Raise `reserved` for every planned hold of a locked plan and write the lines + ledger rows.

    `order` (SKU ids) only orders the lines as the client listed them; positions are already locked.
    Returns the positions changed and the lines written.
    """
    rank = {sku_id: i for i, sku_id in enumerate(order or [])}
    ctx = reservation_context(reservation=reservation, context=context)
    touched: list[StockPosition] = []
    lines: list[ReservationLine] = []
    for position, quantity in sorted(plan.holds.values(), key=lambda h: (rank.get(h[0].sku_id, 0), h[0].pk)):
        movement_apply(position=position, type=MovementType.RESERVE, reserved_delta=quantity, context=ctx)
        lines.append(ReservationLine(reservation=reservation, sku_id=position.sku_id,
                                     location_id=position.location_id, quantity=quantity))
        touched.append(position)
    ReservationLine.objects.bulk_create(lines)
    return touched, lines


def held_at(line: ReservationLine) -> tuple[int, int]:
    """(sku_id, location_id) of a line that holds stock: an active reservation's lines always
    name their location (only a waiting reservation's request lines may not)."""
    assert line.location_id is not None, f"reservation line {line.pk} holds stock at no location"
    return line.sku_id, line.location_id
