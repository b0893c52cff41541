"""A checkout reservation as one SQL statement: the flash-sale hot path (docs/performance.md,
"One-statement changes"; machinery in inventory.one_statement).

`reservation_create` tries this first (setting RESERVATION_ONE_STATEMENT) for the common
request: plain active SKUs, no location named. Each line is held whole at the first eligible
location (priority order) that had its units in an unlocked read made with the SKU lookup; a
line no single location could hold whole is left to the general path (it splits lines).

One statement then locks those positions in primary-key order, raises each `reserved` by its
line's quantity only where that many units are available (re-checked by PostgreSQL on the
newest row version after any wait), and writes the ledger rows, the reservation, its lines and
the stock-change reactions' marks. Unless every line was held, `stockline_all_or_nothing` undoes
it all and this returns None: the general path then locks, allocates, refuses or waitlists,
exactly as before. Units are never decided on stale numbers.

The location is chosen on the unlocked read: if a higher-priority location received units
after that read, the hold lands where the read said units were, as if the reservation had come
just before that receipt (the general path would have held at the higher-priority one). Both
are correct holds; the ledger and every count are exact either way.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from django.utils import timezone
from psycopg import sql
from psycopg.types.json import Jsonb

from channels.models import Channel
from core.models import ApiKey
from core.sql import sql_compose
from inventory.models import Location, MovementType, StockPosition
from inventory.one_statement import compact, ledger_insert, reactions, statement_run
from inventory.services import MovementContext
from reservations.allocation import LineRequest
from reservations.holds import RESERVATION_COLUMNS, reservation_context
from reservations.models import Reservation, ReservationLine


@cache
def _create_sql() -> str:
    parts = reactions()
    assert parts is not None
    return compact(sql_compose(
        "WITH wanted AS (SELECT * FROM unnest(%(skus)s::bigint[], %(locations)s::bigint[], %(quantities)s::bigint[]) "
        "WITH ORDINALITY AS w(sku_id, location_id, quantity, n)), "
        # Locked in primary-key order (the one global lock order), before any is changed.
        "locked AS (SELECT p.id, w.quantity FROM {position} p JOIN wanted w ON w.sku_id = p.sku_id "
        "AND w.location_id = p.location_id ORDER BY p.id FOR UPDATE OF p), "
        "moved AS (UPDATE {position} p SET reserved = p.reserved + locked.quantity, version = p.version + 1, "
        "updated_at = %(now)s FROM locked WHERE p.id = locked.id AND p.on_hand - p.reserved >= locked.quantity "
        "RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version, locked.quantity), "
        "ledger AS ({ledger}), "
        "reservation AS (INSERT INTO {reservations} ({columns}) VALUES ({values})), "
        "lines AS (INSERT INTO {lines} (reservation_id, sku_id, location_id, quantity, committed) "
        "SELECT %(id)s, sku_id, location_id, quantity, 0 FROM wanted ORDER BY n RETURNING id), "
        "changed AS (SELECT sku_id, location_id FROM moved){ctes} "
        "SELECT stockline_all_or_nothing((SELECT count(*) FROM moved) = %(holds)s), "
        "(SELECT json_agg(json_build_array(id, sku_id, location_id, on_hand, reserved, version)) FROM moved), "
        "ARRAY(SELECT id FROM lines){arrays}",
        position=StockPosition._meta.db_table, ledger=ledger_insert(reserved_delta="quantity", on_hand_delta="0"),
        reservations=Reservation._meta.db_table, columns=RESERVATION_COLUMNS,
        values=sql.SQL(", ").join(sql.Placeholder(f"r_{c}") for c in RESERVATION_COLUMNS),
        lines=ReservationLine._meta.db_table,
        ctes=parts.ctes, arrays=parts.arrays))


def reservation_create_in_one_statement(
    *, requests: list[LineRequest], eligible: list[Location], available: dict[tuple[int, int], int],
    channel: Channel | None, order_ref: str, ttl: int, created_by: ApiKey | None, context: MovementContext,
    request_key: str | None,
) -> tuple[Reservation, list[ReservationLine]] | None:
    """The reservation with its lines (ids set), or None (nothing written): not a request this
    path serves, or a line could not be held whole where the unlocked read (`available`, units
    per (SKU id, location id)) put it. A unique constraint (request_key, a live order_ref)
    raises IntegrityError as the general path's does."""
    parts = reactions()
    if parts is None or any(r.location_id is not None or r.components for r in requests):
        return None
    where: list[int] = []
    for r in requests:
        found = next((loc.pk for loc in eligible if available.get((r.sku_id, loc.pk), 0) >= r.quantity), None)
        if found is None:
            return None  # split over locations, or short: the general path decides
        where.append(found)
    now = timezone.now()
    reservation = Reservation(
        status=Reservation.Status.ACTIVE, channel=channel, order_ref=order_ref, ttl_seconds=ttl,
        expires_at=now + timedelta(seconds=ttl), activated_at=now, created_by=created_by, request_key=request_key,
        created_at=now, updated_at=now)
    ctx = reservation_context(reservation=reservation, context=context)
    r = reservation
    params = {
        **parts.params, "skus": [q.sku_id for q in requests], "quantities": [q.quantity for q in requests],
        "locations": where, "holds": len(requests), "now": now, "id": r.pk,
        "type": MovementType.RESERVE, "source": ctx.source, "reference": ctx.reference, "event_key": None,
        "actor": ctx.actor, "occurred_at": ctx.occurred_at or now, "metadata": Jsonb(ctx.metadata),
        "reservation_id": r.pk,
        **{f"r_{c}": v for c, v in zip(RESERVATION_COLUMNS, (
            r.pk, r.status, r.channel_id, r.order_ref, r.ttl_seconds, r.expires_at, r.created_by_id, r.created_at,
            r.updated_at, r.activated_at, r.closed_at, r.closed_by, r.request_key), strict=True)}}
    row = statement_run(_create_sql(), params)
    if row is None:
        return None
    _ok, moved, line_ids, *returned = row
    positions = [StockPosition(pk=pk, sku_id=sku_id, location_id=location_id, on_hand=on_hand, reserved=reserved,
                               version=version) for pk, sku_id, location_id, on_hand, reserved, version in moved]
    written = [ReservationLine(pk=pk, reservation=reservation, sku_id=q.sku_id, location_id=location_id,
                               quantity=q.quantity, committed=0)
               for pk, q, location_id in zip(line_ids, requests, where, strict=True)]
    reservation._state.adding, reservation._state.db = False, "default"  # saved: a later .save() updates it
    for line in written:
        line._state.adding, line._state.db = False, "default"
    parts.after_commit(positions, returned)
    return reservation, written
