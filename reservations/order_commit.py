"""Marketplace orders meet the reservations held for them (`order_ref`).

The rule (docs/reservations.md, "Orders and their holds"): when an order's sale arrives, the hold
kept for it is *settled* once, under its row lock:
- of each SKU the order sells, up to the held quantity is committed (leaves on_hand and
  reserved) at the positions where it was held;
- everything else the hold kept (SKUs the order does not sell, units beyond what it sells) is
  released back to sale in the same transaction;
- a hold that was committed earlier (checkout commit, or an earlier part of the order) covers the
  order's lines up to what it committed, once (`ReservationLine.committed` minus what order lines
  already counted as covered);
- a waiting reservation is released: the order is served from stock by the caller.

Lock order is the global one: reservation rows (primary-key order), then positions through
inventory.locking (primary-key order). `order_holds_lock` takes the first; the caller takes every
position of its transaction in one `positions_lock` call that includes `OrderHolds.pairs`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from core.sql import sql_models
from inventory.models import MovementType, StockPosition
from inventory.services import MovementContext, movement_apply
from reservations.holds import reservation_context
from reservations.models import Reservation, ReservationLine, WaitlistEntry

Status = Reservation.Status
OrderKey = tuple[int | None, str]  # (channel id, order_ref)


@dataclass
class OrderHold:
    """The reservation that serves one order, with its lines, locked."""

    reservation: Reservation
    lines: list[ReservationLine]


@dataclass
class OrderHolds:
    """Reservations locked for a set of orders, and the positions their lines sit on."""

    by_order: dict[OrderKey, OrderHold] = field(default_factory=dict)
    waiting: dict[OrderKey, list[Reservation]] = field(default_factory=dict)

    @property
    def pairs(self) -> set[tuple[int, int]]:
        return {(line.sku_id, line.location_id) for hold in self.by_order.values() for line in hold.lines
                if line.location_id is not None}


_HOLDS_WHERE = ("WHERE order_ref = ANY(%s::text[]) AND order_ref <> '' "
                "AND (channel_id IS NULL OR channel_id = ANY(%s::bigint[])) "
                f"AND status IN ('{Status.ACTIVE.value}', '{Status.COMMITTED.value}', '{Status.WAITING.value}') "
                "ORDER BY id FOR UPDATE")


def order_holds_lock(*, orders: set[OrderKey]) -> OrderHolds:
    """Lock (primary-key order, one query) the live or committed reservations of these orders and
    read their lines. For each order the reservation that serves it: a committed one if any (it
    already took its units), else the oldest active one of the order's channel, else the oldest
    channel-less active one. Runs inside the caller's transaction."""
    found = OrderHolds()
    if not orders:
        return found
    # One flat condition (the orders' refs, their channels or none), not one OR'ed clause per order:
    # building those was an eighth of a webhook drain's CPU. It may also lock a reservation with
    # one order's ref on another order's channel (harmless: still pk order); `mine` below picks.
    # Composed SQL, not a queryset: compiling the two querysets was a sixth of a small drain
    # batch's time. `order_ref <> ''` lets the generic plan use the partial index on order_ref.
    channel_ids = sorted({channel_id for channel_id, _ in orders if channel_id})
    candidates = sql_models(Reservation, _HOLDS_WHERE, [sorted({order_ref for _, order_ref in orders}), channel_ids])
    lines: defaultdict[UUID, list[ReservationLine]] = defaultdict(list)
    if candidates:
        for line in sql_models(ReservationLine, "WHERE reservation_id = ANY(%s::uuid[]) ORDER BY id",
                               [[r.pk for r in candidates]]):
            lines[line.reservation_id].append(line)
    for channel_id, order_ref in orders:
        mine = [r for r in candidates if r.order_ref == order_ref and r.channel_id in (None, channel_id)]
        committed = sorted((r for r in mine if r.status == Status.COMMITTED),
                           key=lambda r: r.closed_at or r.created_at, reverse=True)
        active = sorted((r for r in mine if r.status == Status.ACTIVE),
                        key=lambda r: (r.channel_id is None, r.created_at))
        chosen = next(iter(committed or active), None)
        if chosen is not None:
            found.by_order[(channel_id, order_ref)] = OrderHold(chosen, lines[chosen.pk])
        waiting = [r for r in mine if r.status == Status.WAITING]
        if waiting and chosen is None:
            found.waiting[(channel_id, order_ref)] = waiting
    return found


@dataclass
class Settlement:
    """What settling one order's hold did: units committed per SKU at each location (the cover
    the order's lines draw from) and whether any held unit went back to sale."""

    cover: dict[int, list[list[int]]] = field(default_factory=dict)  # sku_id -> [[location_id, units], ...]
    positions: list[StockPosition] = field(default_factory=list)
    released: bool = False


def order_hold_settle(*, hold: OrderHold, sold: dict[int, int], positions: dict[tuple[int, int], StockPosition],
                      context: MovementContext, now: datetime, actor: str) -> Settlement:
    """Settle an *active* hold against what the order sells (`sold`: sku_id -> units): commit up
    to the held units of each sold SKU, release the rest, close the reservation. `positions` are
    the locked positions of the hold's lines. A position whose on_hand fell below what it holds (a
    count or adjustment removed held units) commits only what is on hand; the caller then sells
    the rest from free stock and records any shortfall as an oversell."""
    reservation = hold.reservation
    ctx = reservation_context(reservation=reservation, context=context)
    wanted = dict(sold)
    result = Settlement()
    for line in hold.lines:
        assert line.location_id is not None  # an active reservation's lines name where they hold
        position = positions[(line.sku_id, line.location_id)]
        commit = max(0, min(wanted.get(line.sku_id, 0), line.quantity, position.on_hand))
        if commit:
            movement_apply(position=position, type=MovementType.RESERVATION_COMMIT, on_hand_delta=-commit,
                           reserved_delta=-commit, context=ctx, metadata={"order": reservation.order_ref})
            wanted[line.sku_id] -= commit
            result.cover.setdefault(line.sku_id, []).append([line.location_id, commit])
        if line.quantity > commit:
            movement_apply(position=position, type=MovementType.RESERVATION_RELEASE,
                           reserved_delta=-(line.quantity - commit), context=ctx,
                           metadata={"reason": "not in the order", "order": reservation.order_ref})
            result.released = True
        line.committed = commit
        result.positions.append(position)
    ReservationLine.objects.bulk_update(hold.lines, ["committed"])
    status = Status.COMMITTED if result.cover else Status.RELEASED
    reservation.status, reservation.closed_at = status, now
    reservation.closed_by = (f"{actor}: order" if status == Status.COMMITTED
                             else f"{actor}: order sold none of the held SKUs")[:200]
    reservation.save(update_fields=["status", "closed_at", "closed_by", "updated_at"])
    return result


def order_hold_cover(*, hold: OrderHold) -> dict[int, list[list[int]]]:
    """What a *committed* hold committed, per SKU and location (before subtracting what order
    lines already counted as covered: the caller does that)."""
    cover: dict[int, list[list[int]]] = {}
    for line in hold.lines:
        if line.committed:
            assert line.location_id is not None  # a committed line left stock somewhere
            cover.setdefault(line.sku_id, []).append([line.location_id, line.committed])
    return cover


def order_waiting_release(*, reservations: list[Reservation], now: datetime, actor: str) -> None:
    """Waiting reservations of an order that arrived: the order is served from stock, so they
    leave the queue (they hold nothing)."""
    for reservation in reservations:
        WaitlistEntry.objects.filter(reservation=reservation).delete()
        reservation.status, reservation.closed_at = Status.RELEASED, now
        reservation.closed_by = f"{actor}: fulfilled by order"[:200]
        reservation.save(update_fields=["status", "closed_at", "closed_by", "updated_at"])
