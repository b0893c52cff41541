"""A checkout reservation as one SQL statement: the flash-sale hot path (docs/performance.md,
"One-statement changes"; machinery in inventory.one_statement).

`reservation_create` tries this first (setting RESERVATION_ONE_STATEMENT) for the common
request: lines that name no location (merged by SKU). One statement finds the SKUs (active, not
bundles) and the channel's eligible locations, puts each line at the first eligible location
(priority, then code) that has any units, provided it has all the line needs (else allocation
would split the line: the general path's case), locks those positions in primary-key order, raises each
`reserved` by its line's quantity only where that many units are still available (re-checked by
PostgreSQL on the newest row version after any wait), and writes the ledger rows, the
reservation, its lines and the stock-change reactions' marks. Unless every line was held,
`stockline_all_or_nothing` undoes it all and this returns None: the general path then resolves,
locks, allocates (splitting a line across locations), refuses or waitlists, exactly as before,
with its own error answers. Units are never decided on stale numbers.

The location is chosen before the lock: if, while this statement waits for a lock, a
higher-priority location receives units, the hold stays where units were seen (as if the
reservation had come just before that receipt; the general path, deciding under its locks,
could have chosen the other one). Both are valid holds; units, ledger and counts are exact
either way.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from django.utils import timezone
from psycopg import sql
from psycopg.types.json import Jsonb

from channels.models import Channel
from core.idempotency import PendingClaim, claim_cte, claim_to_insert
from core.models import ApiKey
from core.sql import sql_compose
from inventory.models import Location, MovementType, Sku, StockPosition
from inventory.one_statement import compact, ledger_insert, reactions, statement_run
from inventory.services import MovementContext
from reservations.allocation import eligible_locations_sql
from reservations.holds import RESERVATION_COLUMNS, reservation_context
from reservations.models import Reservation, ReservationLine

# The reservation row's values: the statement's own parameters where it has them (a parameter used
# twice is sent and dumped once), constants for a new active reservation, and its own otherwise.
_RESERVATION_VALUES = {
    "id": sql.Placeholder("id"), "status": sql.Literal(Reservation.Status.ACTIVE.value),
    "channel_id": sql.Placeholder("channel"), "order_ref": sql.Placeholder("order_ref"),
    "ttl_seconds": sql.Placeholder("ttl"), "expires_at": sql.Placeholder("expires_at"),
    "created_by_id": sql.Placeholder("created_by"), "created_at": sql.Placeholder("now"),
    "updated_at": sql.Placeholder("now"), "activated_at": sql.Placeholder("now"), "closed_at": sql.SQL("NULL"),
    "closed_by": sql.Literal(""), "request_key": sql.Placeholder("request_key")}


@cache
def _create_sql(with_claim: bool) -> str:
    """`with_claim`: the request's Idempotency-Key claim is the first CTE (core.idempotency
    PendingClaim) and every line is gated on it, so a key already taken changes nothing (the
    all-or-nothing guard undoes the claim-less attempt); the claim is inserted before any row
    is locked, so a twin waiting on it holds no lock. Its id is the statement's second value."""
    parts = reactions()
    assert parts is not None
    return compact(sql_compose(
        "WITH {claim}wanted AS (SELECT * FROM unnest(%(codes)s::text[], %(quantities)s::bigint[]) "
        "WITH ORDINALITY AS w(code, quantity, n){gate}), "
        "eligible AS ({eligible}), "
        "chosen AS (SELECT w.n, w.quantity, s.id AS sku_id, s.code AS sku_code, pick.id AS position_id, "
        "pick.location_id, pick.location_code FROM wanted w "
        "JOIN {sku} s ON s.code = w.code AND s.active AND NOT s.is_bundle CROSS JOIN LATERAL "
        # The first eligible location with any units: allocation fills lines in priority order,
        # so a line is held whole at one location only where the ones before it have none.
        "(SELECT p.id, p.location_id, e.code AS location_code, p.on_hand - p.reserved AS free "
        "FROM {position} p JOIN eligible e ON e.id = p.location_id "
        "WHERE p.sku_id = s.id AND p.on_hand - p.reserved > 0 "
        "ORDER BY e.priority, e.code LIMIT 1) pick WHERE pick.free >= w.quantity), "
        # Locked in primary-key order (the one global lock order), before any is changed.
        "locked AS (SELECT p.id, c.quantity FROM {position} p JOIN chosen c ON c.position_id = p.id "
        "ORDER BY p.id FOR UPDATE OF p), "
        "moved AS (UPDATE {position} p SET reserved = p.reserved + locked.quantity, version = p.version + 1, "
        "updated_at = %(now)s FROM locked WHERE p.id = locked.id AND p.on_hand - p.reserved >= locked.quantity "
        "RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version, locked.quantity), "
        "ledger AS ({ledger}), "
        "reservation AS (INSERT INTO {reservations} ({columns}) VALUES ({values})), "
        "lines AS (INSERT INTO {lines} (reservation_id, sku_id, location_id, quantity, committed) "
        "SELECT %(id)s, sku_id, location_id, quantity, 0 FROM chosen ORDER BY n RETURNING id, sku_id), "
        "changed AS (SELECT sku_id, location_id FROM moved){ctes} "
        "SELECT stockline_all_or_nothing((SELECT count(*) FROM moved) = %(holds)s), {claim_id}, "
        "(SELECT json_agg(json_build_array(id, sku_id, location_id, on_hand, reserved, version)) FROM moved), "
        "(SELECT json_agg(json_build_array(lines.id, c.sku_id, c.sku_code, c.location_id, c.location_code, "
        "c.quantity) ORDER BY c.n) FROM lines JOIN chosen c ON c.sku_id = lines.sku_id){arrays}",
        position=StockPosition._meta.db_table, sku=Sku._meta.db_table, eligible=eligible_locations_sql(),
        ledger=ledger_insert(reserved_delta="quantity", on_hand_delta="0"),
        reservations=Reservation._meta.db_table, columns=RESERVATION_COLUMNS,
        values=sql.SQL(", ").join(_RESERVATION_VALUES[c] for c in RESERVATION_COLUMNS),
        lines=ReservationLine._meta.db_table, ctes=parts.ctes, arrays=parts.arrays,
        claim=sql.SQL(claim_cte() + ", " if with_claim else ""),
        gate=sql.SQL(" WHERE EXISTS (SELECT 1 FROM claim)" if with_claim else ""),
        claim_id=sql.SQL("(SELECT id FROM claim)" if with_claim else "NULL::bigint")))


def reservation_create_in_one_statement(
    *, lines: list[tuple[str, int]], channel: Channel | None, order_ref: str, ttl: int,
    created_by: ApiKey | None, context: MovementContext, request_key: str | None,
    claim: PendingClaim | None = None,
) -> tuple[Reservation, list[ReservationLine]] | None:
    """The reservation with its lines (ids, SKU and location objects set), or None (nothing
    written): a line's SKU is unknown, inactive or a bundle, or no eligible location could hold
    it whole, or `claim`'s key was taken. `lines`: (SKU code, quantity), merged by code, in the
    client's order. A unique constraint (request_key, a live order_ref) raises IntegrityError as
    the general path's does. With `claim`, its `record_id` is set when the reservation is made."""
    parts = reactions()
    if parts is None:
        return None
    now = timezone.now()
    reservation = Reservation(
        status=Reservation.Status.ACTIVE, channel=channel, order_ref=order_ref, ttl_seconds=ttl,
        expires_at=now + timedelta(seconds=ttl), activated_at=now, created_by=created_by, request_key=request_key,
        created_at=now, updated_at=now)
    ctx = reservation_context(reservation=reservation, context=context)
    r = reservation
    params = {
        **parts.params, "codes": [code for code, _ in lines], "quantities": [quantity for _, quantity in lines],
        "channel": channel.pk if channel is not None else None, "holds": len(lines), "now": now, "id": r.pk,
        "type": MovementType.RESERVE, "source": ctx.source, "reference": ctx.reference, "event_key": None,
        "actor": ctx.actor, "occurred_at": ctx.occurred_at or now, "metadata": Jsonb(ctx.metadata),
        "reservation_id": r.pk, "order_ref": r.order_ref, "ttl": r.ttl_seconds, "expires_at": r.expires_at,
        "created_by": r.created_by_id, "request_key": r.request_key}
    claim = claim_to_insert(claim)
    if claim is not None:
        params.update(claim.params())
    row = statement_run(_create_sql(claim is not None), params, generic_plan=True)
    if row is None:
        return None
    _ok, claim_id, moved, written_rows, *returned = row
    if claim is not None:
        claim.record_id = claim_id
    positions = [StockPosition(pk=pk, sku_id=sku_id, location_id=location_id, on_hand=on_hand, reserved=reserved,
                               version=version) for pk, sku_id, location_id, on_hand, reserved, version in moved]
    written = []
    for pk, sku_id, sku_code, location_id, location_code, quantity in written_rows:
        line = ReservationLine(pk=pk, reservation=reservation, sku=Sku(pk=sku_id, code=sku_code),
                               location=Location(pk=location_id, code=location_code), quantity=quantity, committed=0)
        line._state.adding, line._state.db = False, "default"
        written.append(line)
    reservation._state.adding, reservation._state.db = False, "default"  # saved: a later .save() updates it
    parts.after_commit(positions, returned)
    return reservation, written
