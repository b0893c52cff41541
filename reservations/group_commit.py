"""Group commit for checkouts of one hot SKU (setting RESERVATION_GROUP_COMMIT; docs/performance.md).

In a flash sale every checkout reserves the same SKU, and each one-statement reservation
(reservations.create_statement) waits for the previous one's row lock and commit: the position's
row is the queue. Here, single-line reservations of one SKU (and one channel) that arrive while
such a reservation is running in this process wait for it, then run together as ONE statement:
their Idempotency-Key claims inserted first (one INSERT), the position locked once, a running sum
over the requests in arrival order accepting the prefix that fits, one UPDATE of the position,
and per accepted request its own ledger row (with its own reserved_after), reservation and line.

Each request is still all or nothing, and the outcome is the one the same requests would have
had one after another: a request that does not fit (and every one after it) holds nothing here
and takes its own path, as a refused one-statement reservation does (its claim, if inserted here,
is its own). A batch of one runs the one-statement reservation itself. If the combined statement
fails as a whole (a live order_ref taken, say), every request runs on its own, as if never
combined. Requests of different SKUs are never combined: one statement locks one position, so
the global lock order is kept.

The waiting and the hand-over of the lead are core.combine's.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from django.db import DatabaseError
from django.utils import timezone
from psycopg import sql
from psycopg.types.json import Jsonb

from channels.models import Channel
from core.combine import Combiner, Waiting, run_split
from core.idempotency import PendingClaim, claim_batch_ctes, claim_batch_params, claim_to_insert
from core.models import ApiKey
from core.observability.metrics import RESERVATION_GROUPED, RESERVATION_GROUPS
from core.sql import sql_compose
from inventory.models import Location, MovementType, Sku, StockMovement, StockPosition
from inventory.one_statement import compact, reactions, statement_run
from inventory.services import MovementContext
from reservations.allocation import eligible_locations_sql
from reservations.create_statement import reservation_create_in_one_statement
from reservations.holds import RESERVATION_COLUMNS, reservation_context
from reservations.models import Reservation, ReservationLine

# Each column of a new reservation, from the combined statement's `accepted` rows `a` and its
# parameters (the same for all) where they are shared.
_RESERVATION_VALUES = {
    "id": "a.id", "status": f"'{Reservation.Status.ACTIVE.value}'", "channel_id": "%(channel)s",
    "order_ref": "a.order_ref", "ttl_seconds": "a.ttl", "expires_at": "a.expires_at",
    "created_by_id": "a.created_by", "created_at": "%(now)s", "updated_at": "%(now)s", "activated_at": "%(now)s",
    "closed_at": "NULL", "closed_by": "''", "request_key": "a.request_key"}


@cache
def _batch_sql() -> str:
    parts = reactions()
    assert parts is not None
    return compact(sql_compose(
        "WITH req AS (SELECT * FROM unnest(%(quantities)s::bigint[], %(ids)s::uuid[], %(request_keys)s::text[], "
        "%(order_refs)s::text[], %(ttls)s::integer[], %(expires)s::timestamptz[], %(created_by)s::bigint[], "
        "%(claim_api_keys)s::bigint[], %(claim_keys)s::text[], %(claim_fingerprints)s::text[], %(actors)s::text[], "
        "%(references)s::text[], %(metadata)s::jsonb[], %(sources)s::text[], %(occurred)s::timestamptz[]) "
        "WITH ORDINALITY AS r(quantity, id, request_key, order_ref, ttl, expires_at, created_by, claim_api_key, "
        "claim_key, claim_fingerprint, actor, reference, metadata, source, occurred_at, n)), "
        # The claims, every one of them before any row is locked (`pick` counts them all).
        "{claims}, eligible AS ({eligible}), "
        # The first eligible location with any units, as the one-statement reservation picks it.
        "pick AS (SELECT p.id, e.code AS location_code FROM {position} p JOIN eligible e ON e.id = p.location_id "
        "JOIN {sku} s ON s.id = p.sku_id WHERE s.code = %(code)s AND s.active AND NOT s.is_bundle "
        "AND p.on_hand - p.reserved > 0 AND (SELECT count(*) FROM claim) >= 0 AND EXISTS (SELECT 1 FROM gated) "
        "ORDER BY e.priority, e.code LIMIT 1), "
        "locked AS (SELECT p.id, p.on_hand - p.reserved AS free FROM {position} p JOIN pick ON pick.id = p.id "
        "FOR UPDATE OF p), "
        # Arrival order; the prefix that fits, as one-by-one statements would have held it.
        "accepted AS (SELECT g.*, sum(g.quantity) OVER (ORDER BY g.n) AS upto FROM gated g), "
        "fits AS (SELECT a.* FROM accepted a, locked WHERE a.upto <= locked.free), "
        "total AS (SELECT sum(quantity) AS quantity, count(*) AS holds FROM fits), "
        "moved AS (UPDATE {position} p SET reserved = p.reserved + total.quantity, version = p.version + total.holds, "
        "updated_at = %(now)s FROM locked, total WHERE p.id = locked.id AND total.holds > 0 "
        "AND p.on_hand - p.reserved >= total.quantity "
        "RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version, total.quantity AS total), "
        "ledger AS (INSERT INTO {movement} (position_id, sku_id, location_id, type, on_hand_delta, reserved_delta, "
        "on_hand_after, reserved_after, source, reference, event_key, actor, occurred_at, recorded_at, metadata, "
        "reservation_id) SELECT m.id, m.sku_id, m.location_id, %(type)s, 0, a.quantity, m.on_hand, "
        "m.reserved - m.total + a.upto, a.source, a.reference, NULL, a.actor, a.occurred_at, %(now)s, a.metadata, a.id "
        "FROM fits a CROSS JOIN moved m ORDER BY a.n RETURNING id), "
        "reservation AS (INSERT INTO {reservations} ({columns}) SELECT {values} FROM fits a CROSS JOIN moved m), "
        "lines AS (INSERT INTO {lines} (reservation_id, sku_id, location_id, quantity, committed) "
        "SELECT a.id, m.sku_id, m.location_id, a.quantity, 0 FROM fits a CROSS JOIN moved m ORDER BY a.n "
        "RETURNING id, reservation_id), "
        "changed AS (SELECT sku_id, location_id FROM moved){ctes} "
        "SELECT (SELECT json_agg(json_build_array(r.n, g.claim_id, l.id) ORDER BY r.n) FROM req r "
        "LEFT JOIN gated g ON g.n = r.n LEFT JOIN lines l ON l.reservation_id = r.id), "
        "(SELECT json_agg(json_build_array(id, sku_id, location_id, on_hand, reserved, version)) FROM moved), "
        "(SELECT location_code FROM pick){arrays}",
        claims=sql.SQL(claim_batch_ctes()), eligible=eligible_locations_sql(),
        position=StockPosition._meta.db_table, sku=Sku._meta.db_table, movement=StockMovement._meta.db_table,
        reservations=Reservation._meta.db_table, columns=RESERVATION_COLUMNS,
        values=sql.SQL(", ".join(_RESERVATION_VALUES[c] for c in RESERVATION_COLUMNS)),
        lines=ReservationLine._meta.db_table, ctes=parts.ctes, arrays=parts.arrays))


class Request(Waiting):
    """One single-line reservation waiting to be combined (the arguments of
    reservation_create_in_one_statement, with one line). Its outcome: (reservation, lines), or
    None when its own path decides."""

    def __init__(self, *, code: str, quantity: int, channel: Channel | None, order_ref: str, ttl: int,
                 created_by: ApiKey | None, context: MovementContext, request_key: str | None,
                 claim: PendingClaim | None):
        super().__init__()
        self.code, self.quantity, self.channel, self.order_ref, self.ttl = code, quantity, channel, order_ref, ttl
        self.created_by, self.context, self.request_key, self.claim = created_by, context, request_key, claim


def reservation_create_combined(request: Request) -> tuple[Reservation, list[ReservationLine]] | None:
    """What reservation_create_in_one_statement answers for this one-line request, run together
    with the requests for the same SKU and channel that wait at the same time (module docstring)."""
    key = (request.code, request.channel.pk if request.channel is not None else None)
    return _combiner.submit(key, request)


def _run(batch: list[Request]) -> None:
    run_split(batch, keys=_keys, combined=_run_combined, alone=lambda request: reservation_create_in_one_statement(
        lines=[(request.code, request.quantity)], channel=request.channel, order_ref=request.order_ref,
        ttl=request.ttl, created_by=request.created_by, context=request.context, request_key=request.request_key,
        claim=request.claim))


def _keys(request: Request) -> set:
    """Twins of one Idempotency-Key, and two live reservations of one order_ref, are never combined."""
    claim = claim_to_insert(request.claim)
    keys = {("claim", claim.identity)} if claim else set()
    return keys | ({("order_ref", request.order_ref)} if request.order_ref else set())


def _run_combined(batch: list[Request]) -> bool:
    """Run the combined statement and decide every request's outcome; False (nothing written)
    when the statement failed as a whole."""
    parts = reactions()
    assert parts is not None
    now = timezone.now()
    reservations = []
    for request in batch:
        reservation = Reservation(
            status=Reservation.Status.ACTIVE, channel=request.channel, order_ref=request.order_ref,
            ttl_seconds=request.ttl, expires_at=now + timedelta(seconds=request.ttl), activated_at=now,
            created_by=request.created_by, request_key=request.request_key, created_at=now, updated_at=now)
        reservations.append(reservation)
    contexts = [reservation_context(reservation=r, context=q.context) for r, q in zip(reservations, batch, strict=True)]
    channel = batch[0].channel
    params = {
        **parts.params, "code": batch[0].code, "channel": channel.pk if channel is not None else None, "now": now,
        **claim_batch_params([q.claim for q in batch]),
        "type": MovementType.RESERVE, "sources": [c.source for c in contexts],
        "quantities": [q.quantity for q in batch], "ids": [r.pk for r in reservations],
        "request_keys": [q.request_key for q in batch], "order_refs": [q.order_ref for q in batch],
        "ttls": [q.ttl for q in batch], "expires": [r.expires_at for r in reservations],
        "created_by": [r.created_by_id for r in reservations],
        "actors": [c.actor for c in contexts], "references": [c.reference for c in contexts],
        "metadata": [Jsonb(c.metadata) for c in contexts], "occurred": [c.occurred_at or now for c in contexts]}
    try:
        row = statement_run(_batch_sql(), params, generic_plan=True)
    except DatabaseError:
        RESERVATION_GROUPS.labels(result="failed").inc()
        return False
    assert row is not None  # the combined statement never refuses as a whole
    per_request, moved, location_code, *returned = row
    for (_n, claim_id, _line_id), request in zip(per_request, batch, strict=True):
        if request.claim is not None and claim_id is not None:
            request.claim.record_id = claim_id  # its own claim, held or not: before anything can fail
    RESERVATION_GROUPS.labels(result="committed").inc()
    for (_n, _claim_id, line_id), request, reservation in zip(per_request, batch, reservations, strict=True):
        if line_id is None:
            request.outcome = None  # did not fit (or its key was taken): its own path decides
            RESERVATION_GROUPED.labels(outcome="own_path").inc()
            continue
        RESERVATION_GROUPED.labels(outcome="held").inc()
        pk, sku_id, location_id = moved[0][:3]
        line = ReservationLine(pk=line_id, reservation=reservation, sku=Sku(pk=sku_id, code=request.code),
                               location=Location(pk=location_id, code=location_code), quantity=request.quantity,
                               committed=0)
        line._state.adding, line._state.db = False, "default"
        reservation._state.adding, reservation._state.db = False, "default"
        request.outcome = (reservation, [line])
    if moved:
        positions = [StockPosition(pk=pk, sku_id=sku_id, location_id=location_id, on_hand=on_hand, reserved=reserved,
                                   version=version) for pk, sku_id, location_id, on_hand, reserved, version in moved]
        parts.after_commit(positions, returned)
    return True


_combiner = Combiner(_run)
