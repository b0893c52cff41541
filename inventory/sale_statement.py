"""A sale of one plain SKU at one location as one SQL statement: the flash-sale hot path
(docs/performance.md, "One-statement sale").

`stock_adjust` tries this first for every `sale` (setting STOCK_SALE_ONE_STATEMENT). One
statement finds the position by its codes, takes the units with a conditional UPDATE, writes the
ledger row and runs every stock-change reaction's statement form (inventory.hooks) over the
changed row. Outside a transaction it is its own transaction, so the position's row lock is held
for one round trip; the general path holds it across five round trips and a COMMIT.

Exactness without an explicit FOR UPDATE: a concurrent sale of the same position waits for the
UPDATE's row lock, and PostgreSQL then re-checks the WHERE clause (units available, the expected
version) on the newest row version (READ COMMITTED's re-check), so no decision is ever taken on
stale numbers; on_hand_after of each ledger row is the row it wrote.

It returns None whenever it did not sell: unknown codes, a bundle, no position, too few units,
another version, an event key already in the ledger, or a twin with the same key committed
first (the unique index). The caller then takes the general path, which locks, decides and
answers with the proper refusal or replay. Nothing was written in any of those cases.
"""

from __future__ import annotations

from functools import cache

from django.db import IntegrityError
from django.utils import timezone
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from core.idempotency import PendingClaim, claim_cte, claim_to_insert
from core.sql import sql_compose
from inventory.models import Location, MovementType, Sku, StockMovement, StockPosition
from inventory.one_statement import compact, ledger_insert, reactions, statement_run


@cache
def _sale_sql(with_claim: bool) -> str:
    """`with_claim`: the request's Idempotency-Key claim is the first CTE (core.idempotency
    PendingClaim), the position is only targeted if it was inserted, and the statement always
    answers one row whose all-or-nothing guard undoes the claim unless the sale was made."""
    parts = reactions()
    assert parts is not None
    columns = sql.SQL("moved.id, moved.sku_id, moved.location_id, moved.on_hand, moved.reserved, moved.version, "
                      "ledger.id") + parts.arrays
    if with_claim:
        result = sql.SQL("SELECT stockline_all_or_nothing(EXISTS (SELECT 1 FROM moved)), (SELECT id FROM claim), "
                         "{columns} FROM (SELECT 1) AS one LEFT JOIN moved ON true LEFT JOIN ledger ON true")
    else:
        result = sql.SQL("SELECT {columns} FROM moved, ledger")
    return compact(sql_compose(
        "WITH {claim}target AS (SELECT p.id FROM {position} p JOIN {sku} s ON s.id = p.sku_id "
        "JOIN {location} l ON l.id = p.location_id "
        "WHERE s.code = %(sku)s AND NOT s.is_bundle AND l.code = %(location)s{gate}), "
        "moved AS (UPDATE {position} p SET on_hand = p.on_hand + %(on_hand_delta)s, version = p.version + 1, "
        "updated_at = %(now)s FROM target WHERE p.id = target.id "
        "AND p.on_hand - p.reserved >= %(quantity)s "
        "AND (%(expected_version)s::bigint IS NULL OR p.version = %(expected_version)s::bigint) "
        "AND NOT EXISTS (SELECT 1 FROM {movement} m WHERE m.event_key = ANY(%(replay_keys)s::text[])) "
        "RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version), "
        "ledger AS ({ledger}), changed AS (SELECT sku_id, location_id FROM moved){ctes} {result}",
        position=StockPosition._meta.db_table, sku=Sku._meta.db_table, location=Location._meta.db_table,
        movement=StockMovement._meta.db_table, ledger=ledger_insert(), ctes=parts.ctes,
        result=result.format(columns=columns),
        claim=sql.SQL(claim_cte() + ", " if with_claim else ""),
        gate=sql.SQL(" AND EXISTS (SELECT 1 FROM claim)" if with_claim else "")))


def sale_in_one_statement(*, sku: str, location: str, quantity: int, expected_version: int | None,
                          context, replay_keys: list[str], claim: PendingClaim | None = None,
                          ) -> tuple[StockMovement, StockPosition] | None:
    """Sell `quantity` (> 0, validated) of a plain SKU at a location, or None (nothing written:
    the general path decides). `context` is a services.MovementContext; `replay_keys` are the
    ledger keys that, if present, make this a replay (the general path answers those). With
    `claim` (its key taken: None), its `record_id` is set when the sale is made."""
    parts = reactions()
    if parts is None:
        return None
    now = timezone.now()
    key = context.event_key
    params = {
        **parts.params, "sku": sku, "location": location, "quantity": quantity,
        "expected_version": expected_version, "replay_keys": replay_keys, "now": now,
        "type": MovementType.SALE, "on_hand_delta": -quantity, "reserved_delta": 0, "source": context.source,
        "reference": context.reference, "event_key": key, "actor": context.actor,
        "occurred_at": context.occurred_at or now, "metadata": Jsonb(context.metadata),
        "reservation_id": context.reservation_id}
    claim = claim_to_insert(claim)
    if claim is not None:
        params.update(claim.params())
    try:
        row = statement_run(_sale_sql(claim is not None), params)
    except IntegrityError as exc:
        if isinstance(exc.__cause__, pg_errors.UniqueViolation):
            return None  # a twin with this event key committed first: the general path replays it
        raise  # anything else (a CHECK violated) is a defect, never hidden by a retry
    if row is None:
        return None
    if claim is not None:
        _ok, claim.record_id, *row = row
    position_id, sku_id, location_id, on_hand, reserved, version, movement_id, *returned = row
    position = StockPosition(pk=position_id, sku=Sku(pk=sku_id, code=sku), location=Location(pk=location_id,
                             code=location), on_hand=on_hand, reserved=reserved, version=version)
    movement = StockMovement(
        pk=movement_id, position=position, sku_id=sku_id, location_id=location_id, type=MovementType.SALE,
        on_hand_delta=-quantity, reserved_delta=0, on_hand_after=on_hand, reserved_after=reserved,
        source=context.source, reference=context.reference, event_key=key, actor=context.actor,
        occurred_at=params["occurred_at"], recorded_at=now, metadata=context.metadata)
    movement._state.adding, movement._state.db = False, "default"  # saved, as objects.create() leaves it
    parts.after_commit([position], returned)
    return movement, position
