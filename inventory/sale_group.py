"""Group commit for sales of one hot SKU at one location (setting STOCK_SALE_GROUP_COMMIT;
docs/performance.md, session 8). The waiting and the hand-over of the lead are core.combine's.

Sales of one position that arrive while another of them runs in this process wait for it, then
run together as ONE statement: their Idempotency-Key claims inserted first, the position locked
once, a running sum over the sales in arrival order taking the prefix that fits, one UPDATE (the
version rises by the number of sales), and per sale its own ledger row with its own
on_hand_after. Each sale's answer shows the position as its own sale left it, as one after
another would have.

Only what the one-statement sale takes (a plain SKU by code, a location by code, no expected
version) is combined. A sale whose ledger key is already there, that does not fit (and every one
after it), or whose Idempotency-Key is taken, sells nothing here and takes its own path as a
refused one-statement sale does (its claim, if inserted here, is its own). A batch of one is the
one-statement sale; a combined statement that fails as a whole runs each sale alone.
"""

from __future__ import annotations

from functools import cache

from django.db import DatabaseError
from django.utils import timezone
from psycopg import sql
from psycopg.types.json import Jsonb

from core.combine import Combiner, Waiting, run_split
from core.idempotency import PendingClaim, claim_batch_ctes, claim_batch_params, claim_to_insert
from core.observability.metrics import SALE_GROUPED, SALE_GROUPS
from core.sql import sql_compose
from inventory.models import Location, MovementType, Sku, StockMovement, StockPosition
from inventory.one_statement import compact, reactions, statement_run
from inventory.sale_statement import sale_in_one_statement


@cache
def _batch_sql() -> str:
    parts = reactions()
    assert parts is not None
    return compact(sql_compose(
        "WITH req AS (SELECT * FROM unnest(%(quantities)s::bigint[], %(event_keys)s::text[], "
        "%(claim_api_keys)s::bigint[], %(claim_keys)s::text[], %(claim_fingerprints)s::text[], %(actors)s::text[], "
        "%(references)s::text[], %(metadata)s::jsonb[], %(sources)s::text[], %(occurred)s::timestamptz[], "
        "%(reservations)s::uuid[]) WITH ORDINALITY AS r(quantity, event_key, claim_api_key, claim_key, "
        "claim_fingerprint, actor, reference, metadata, source, occurred_at, reservation_id, n)), "
        # The claims, every one of them before the position is locked (`target` counts them all).
        "{claims}, target AS (SELECT p.id FROM {position} p JOIN {sku} s ON s.id = p.sku_id "
        "JOIN {location} l ON l.id = p.location_id WHERE s.code = %(sku)s AND NOT s.is_bundle "
        "AND l.code = %(location)s AND (SELECT count(*) FROM claim) >= 0 AND EXISTS (SELECT 1 FROM gated)), "
        "locked AS (SELECT p.id, p.on_hand - p.reserved AS free FROM {position} p JOIN target t ON t.id = p.id "
        "FOR UPDATE OF p), "
        # A sale whose ledger key is there already is a replay: its own path answers it.
        "fresh AS (SELECT g.* FROM gated g WHERE g.event_key IS NULL OR NOT EXISTS (SELECT 1 FROM {movement} m "
        "WHERE m.event_key IN (g.event_key, g.event_key || %(in_suffix)s))), "
        "running AS (SELECT f.*, sum(f.quantity) OVER (ORDER BY f.n) AS upto, "
        "row_number() OVER (ORDER BY f.n) AS rank FROM fresh f), "
        "fits AS (SELECT a.* FROM running a, locked WHERE a.upto <= locked.free), "
        "total AS (SELECT sum(quantity) AS quantity, count(*) AS sales FROM fits), "
        "moved AS (UPDATE {position} p SET on_hand = p.on_hand - total.quantity, version = p.version + total.sales, "
        "updated_at = %(now)s FROM locked, total WHERE p.id = locked.id AND total.sales > 0 "
        "AND p.on_hand - p.reserved >= total.quantity "
        "RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version, total.quantity AS total, "
        "total.sales AS sales), "
        "ledger AS (INSERT INTO {movement} (position_id, sku_id, location_id, type, on_hand_delta, reserved_delta, "
        "on_hand_after, reserved_after, source, reference, event_key, actor, occurred_at, recorded_at, metadata, "
        "reservation_id) SELECT m.id, m.sku_id, m.location_id, %(type)s, -a.quantity, 0, "
        "m.on_hand + m.total - a.upto, m.reserved, a.source, a.reference, a.event_key, a.actor, a.occurred_at, "
        "%(now)s, a.metadata, a.reservation_id FROM fits a CROSS JOIN moved m ORDER BY a.n RETURNING id), "
        "changed AS (SELECT sku_id, location_id FROM moved){ctes} "
        # Per sale: its claim, and if sold its rank, on_hand after it and ledger row (the rows were
        # inserted in arrival order, so their ids rise with it).
        "SELECT (SELECT json_agg(json_build_array(r.n, g.claim_id, f.rank, "
        "(SELECT m.on_hand + m.total - f.upto FROM moved m)) ORDER BY r.n) FROM req r "
        "LEFT JOIN gated g ON g.n = r.n LEFT JOIN fits f ON f.n = r.n), "
        "(SELECT json_agg(id ORDER BY id) FROM ledger), "
        "(SELECT json_agg(json_build_array(id, sku_id, location_id, on_hand, reserved, version, sales)) FROM moved)"
        "{arrays}",
        claims=sql.SQL(claim_batch_ctes()), position=StockPosition._meta.db_table, sku=Sku._meta.db_table,
        location=Location._meta.db_table, movement=StockMovement._meta.db_table, ctes=parts.ctes,
        arrays=parts.arrays))


class Sale(Waiting):
    """One sale waiting to be combined (the arguments of sale_in_one_statement, no expected
    version). Its outcome: (movement, position), or None when its own path decides."""

    def __init__(self, *, sku: str, location: str, quantity: int, context, replay_keys: list[str],
                 claim: PendingClaim | None):
        super().__init__()
        self.sku, self.location, self.quantity, self.context = sku, location, quantity, context
        self.replay_keys, self.claim = replay_keys, claim


def sale_combined(sale: Sale) -> tuple[StockMovement, StockPosition] | None:
    """What sale_in_one_statement answers for this sale, run together with the sales of the same
    SKU and location that wait at the same time (module docstring)."""
    return _combiner.submit((sale.sku, sale.location), sale)


def _run(batch: list[Sale]) -> None:
    run_split(batch, keys=_keys, combined=_run_combined, alone=lambda sale: sale_in_one_statement(
        sku=sale.sku, location=sale.location, quantity=sale.quantity, expected_version=None, context=sale.context,
        replay_keys=sale.replay_keys, claim=sale.claim))


def _keys(sale: Sale) -> set:
    """Twins of one Idempotency-Key or ledger key are never combined."""
    claim = claim_to_insert(sale.claim)
    keys = {("claim", claim.identity)} if claim else set()
    return keys | {("event", key) for key in sale.replay_keys}


def _run_combined(batch: list[Sale]) -> bool:
    """Run the combined statement and decide every sale's outcome; False (nothing written) when
    the statement failed as a whole."""
    from inventory.services import TRANSFER_IN_SUFFIX

    parts = reactions()
    assert parts is not None
    now = timezone.now()
    contexts = [s.context for s in batch]
    params = {
        **parts.params, "sku": batch[0].sku, "location": batch[0].location, "now": now, "type": MovementType.SALE,
        **claim_batch_params([s.claim for s in batch]), "in_suffix": TRANSFER_IN_SUFFIX,
        "quantities": [s.quantity for s in batch], "event_keys": [c.event_key for c in contexts],
        "actors": [c.actor for c in contexts], "references": [c.reference for c in contexts],
        "metadata": [Jsonb(c.metadata) for c in contexts], "sources": [c.source for c in contexts],
        "occurred": [c.occurred_at or now for c in contexts], "reservations": [c.reservation_id for c in contexts]}
    try:
        row = statement_run(_batch_sql(), params)
    except DatabaseError:
        SALE_GROUPS.labels(result="failed").inc()
        return False
    assert row is not None  # the combined statement never refuses as a whole
    per_sale, ledger_ids, moved, *returned = row
    for (_n, claim_id, _rank, _on_hand), sale in zip(per_sale, batch, strict=True):
        if sale.claim is not None and claim_id is not None:
            sale.claim.record_id = claim_id  # its own claim, sold or not: before anything can fail
    SALE_GROUPS.labels(result="committed").inc()
    if moved:
        pk, sku_id, location_id, _on_hand, reserved, version, sales = moved[0]
    for (_n, _claim_id, rank, on_hand), sale, context in zip(per_sale, batch, contexts, strict=True):
        if rank is None:
            sale.outcome = None  # a replay, did not fit, or its key was taken: its own path decides
            SALE_GROUPED.labels(outcome="own_path").inc()
            continue
        SALE_GROUPED.labels(outcome="sold").inc()
        position = StockPosition(pk=pk, sku=Sku(pk=sku_id, code=sale.sku), location=Location(
            pk=location_id, code=sale.location), on_hand=on_hand, reserved=reserved, version=version - sales + rank)
        movement = StockMovement(
            pk=ledger_ids[rank - 1], position=position, sku_id=sku_id, location_id=location_id,
            type=MovementType.SALE, on_hand_delta=-sale.quantity, reserved_delta=0, on_hand_after=on_hand,
            reserved_after=reserved, source=context.source, reference=context.reference,
            event_key=context.event_key, actor=context.actor, occurred_at=context.occurred_at or now,
            recorded_at=now, metadata=context.metadata)
        movement._state.adding, movement._state.db = False, "default"
        sale.outcome = (movement, position)
    if moved:
        parts.after_commit([StockPosition(pk=pk, sku_id=sku_id, location_id=location_id, on_hand=moved[0][3],
                                          reserved=reserved, version=version)], returned)
    return True


_combiner = Combiner(_run)
