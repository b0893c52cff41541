"""Group commit for one-line checkouts (setting RESERVATION_GROUP_COMMIT; docs/performance.md).

In a flash sale every checkout reserves the same SKU, and each one-statement reservation
(reservations.create_statement) waits for the previous one's row lock and commit: the position's
row is the queue. Here, single-line reservations on one channel that arrive while such a
reservation is running in this process wait for it, then run together as ONE statement: their
Idempotency-Key claims inserted first (one INSERT), the positions locked in primary-key order
(one per SKU), per SKU a running sum over its requests in arrival order accepting the prefix that
fits, one UPDATE of the positions, and per accepted request its own ledger row (with its own
reserved_after), reservation and line. Checkouts of different SKUs share the statement and its
commit too (session 10: spread checkouts paid a transaction each).

Each request is still all or nothing, and the outcome is the one the same requests would have
had one after another: a request that does not fit (and every later one for its SKU) holds
nothing here and takes its own path, as a refused one-statement reservation does (its claim, if
inserted here, is its own). A batch of one runs the one-statement reservation itself. If the
combined statement fails as a whole (a live order_ref taken, say), every request runs on its
own, as if never combined. Positions are locked in primary-key order, the global lock order, and
only after every claim is inserted (claims in key order).

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
        "WITH req AS (SELECT * FROM unnest(%(codes)s::text[], %(quantities)s::bigint[], %(ids)s::uuid[], "
        "%(request_keys)s::text[], %(order_refs)s::text[], %(ttls)s::integer[], %(expires)s::timestamptz[], "
        "%(created_by)s::bigint[], %(claim_api_keys)s::bigint[], %(claim_keys)s::text[], "
        "%(claim_fingerprints)s::text[], %(actors)s::text[], %(references)s::text[], %(metadata)s::jsonb[], "
        "%(sources)s::text[], %(occurred)s::timestamptz[]) "
        "WITH ORDINALITY AS r(code, quantity, id, request_key, order_ref, ttl, expires_at, created_by, claim_api_key, "
        "claim_key, claim_fingerprint, actor, reference, metadata, source, occurred_at, n)), "
        # The claims, every one of them before any row is locked (`pick` counts them all).
        "{claims}, eligible AS ({eligible}), "
        # Per SKU, the first eligible location with any units, as the one-statement reservation picks it.
        "pick AS (SELECT s.code, pk.id, pk.location_code FROM (SELECT DISTINCT code FROM gated) w "
        "JOIN {sku} s ON s.code = w.code AND s.active AND NOT s.is_bundle CROSS JOIN LATERAL "
        "(SELECT p.id, e.code AS location_code FROM {position} p JOIN eligible e ON e.id = p.location_id "
        "WHERE p.sku_id = s.id AND p.on_hand - p.reserved > 0 ORDER BY e.priority, e.code LIMIT 1) pk "
        "WHERE (SELECT count(*) FROM claim) >= 0), "
        # Locked in primary-key order (the one global lock order), before any is changed.
        "locked AS (SELECT p.id, p.on_hand - p.reserved AS free FROM {position} p JOIN pick ON pick.id = p.id "
        "ORDER BY p.id FOR UPDATE OF p), "
        # Arrival order per SKU; for each, the prefix that fits, as one-by-one statements would have held it.
        "accepted AS (SELECT g.*, pick.id AS position_id, pick.location_code, "
        "sum(g.quantity) OVER (PARTITION BY g.code ORDER BY g.n) AS upto "
        "FROM gated g JOIN pick ON pick.code = g.code), "
        "fits AS (SELECT a.* FROM accepted a JOIN locked ON locked.id = a.position_id WHERE a.upto <= locked.free), "
        "total AS (SELECT position_id, sum(quantity) AS quantity, count(*) AS holds FROM fits GROUP BY position_id), "
        "moved AS (UPDATE {position} p SET reserved = p.reserved + total.quantity, version = p.version + total.holds, "
        "updated_at = %(now)s FROM total WHERE p.id = total.position_id AND p.on_hand - p.reserved >= total.quantity "
        "RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version, total.quantity AS total), "
        "held AS (SELECT a.*, m.sku_id, m.location_id, m.on_hand, m.reserved - m.total + a.upto AS reserved_after, "
        "m.id AS moved_id FROM fits a JOIN moved m ON m.id = a.position_id), "
        "ledger AS (INSERT INTO {movement} (position_id, sku_id, location_id, type, on_hand_delta, reserved_delta, "
        "on_hand_after, reserved_after, source, reference, event_key, actor, occurred_at, recorded_at, metadata, "
        "reservation_id) SELECT a.moved_id, a.sku_id, a.location_id, %(type)s, 0, a.quantity, a.on_hand, "
        "a.reserved_after, a.source, a.reference, NULL, a.actor, a.occurred_at, %(now)s, a.metadata, a.id "
        "FROM held a ORDER BY a.n RETURNING id), "
        "reservation AS (INSERT INTO {reservations} ({columns}) SELECT {values} FROM held a), "
        "lines AS (INSERT INTO {lines} (reservation_id, sku_id, location_id, quantity, committed) "
        "SELECT a.id, a.sku_id, a.location_id, a.quantity, 0 FROM held a ORDER BY a.n "
        "RETURNING id, reservation_id), "
        "changed AS (SELECT sku_id, location_id FROM moved){ctes} "
        # Per request: its claim's id (inserted, held or not) and, when held, its line, SKU and location.
        "SELECT (SELECT json_agg(json_build_array(r.n, g.claim_id, l.id, h.sku_id, h.location_id, h.location_code) "
        "ORDER BY r.n) FROM req r LEFT JOIN gated g ON g.n = r.n LEFT JOIN lines l ON l.reservation_id = r.id "
        "LEFT JOIN held h ON h.n = r.n), "
        "(SELECT json_agg(json_build_array(id, sku_id, location_id, on_hand, reserved, version)) FROM moved)"
        "{arrays}",
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
    with the one-line requests of the same channel that wait at the same time (module docstring)."""
    key = request.channel.pk if request.channel is not None else None
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
        **parts.params, "codes": [q.code for q in batch], "channel": channel.pk if channel is not None else None,
        "now": now,
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
    per_request, moved, *returned = row
    for (_n, claim_id, *_held), request in zip(per_request, batch, strict=True):
        if request.claim is not None and claim_id is not None:
            request.claim.record_id = claim_id  # its own claim, held or not: before anything can fail
    RESERVATION_GROUPS.labels(result="committed").inc()
    for (_n, _claim_id, line_id, sku_id, location_id, location_code), request, reservation in zip(
            per_request, batch, reservations, strict=True):
        if line_id is None:
            request.outcome = None  # did not fit (or its key was taken): its own path decides
            RESERVATION_GROUPED.labels(outcome="own_path").inc()
            continue
        RESERVATION_GROUPED.labels(outcome="held").inc()
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
