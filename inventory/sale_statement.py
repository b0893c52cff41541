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
from psycopg.types.json import Jsonb

from core.sql import sql_compose
from inventory.models import Location, MovementType, Sku, StockMovement, StockPosition
from inventory.one_statement import compact, ledger_insert, reactions, statement_run


@cache
def _sale_sql() -> str:
    parts = reactions()
    assert parts is not None
    return compact(sql_compose(
        "WITH target AS (SELECT p.id FROM {position} p JOIN {sku} s ON s.id = p.sku_id "
        "JOIN {location} l ON l.id = p.location_id "
        "WHERE s.code = %(sku)s AND NOT s.is_bundle AND l.code = %(location)s), "
        "moved AS (UPDATE {position} p SET on_hand = p.on_hand + %(on_hand_delta)s, version = p.version + 1, "
        "updated_at = %(now)s FROM target WHERE p.id = target.id "
        "AND p.on_hand - p.reserved >= %(quantity)s "
        "AND (%(expected_version)s::bigint IS NULL OR p.version = %(expected_version)s::bigint) "
        "AND NOT EXISTS (SELECT 1 FROM {movement} m WHERE m.event_key = ANY(%(replay_keys)s::text[])) "
        "RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved, p.version), "
        "ledger AS ({ledger}), changed AS (SELECT sku_id, location_id FROM moved){ctes} "
        "SELECT moved.id, moved.sku_id, moved.location_id, moved.on_hand, moved.reserved, moved.version, "
        "ledger.id{arrays} FROM moved, ledger",
        position=StockPosition._meta.db_table, sku=Sku._meta.db_table, location=Location._meta.db_table,
        movement=StockMovement._meta.db_table, ledger=ledger_insert(), ctes=parts.ctes, arrays=parts.arrays))


def sale_in_one_statement(*, sku: str, location: str, quantity: int, expected_version: int | None,
                          context, replay_keys: list[str]) -> tuple[StockMovement, StockPosition] | None:
    """Sell `quantity` (> 0, validated) of a plain SKU at a location, or None (nothing written:
    the general path decides). `context` is a services.MovementContext; `replay_keys` are the
    ledger keys that, if present, make this a replay (the general path answers those)."""
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
    try:
        row = statement_run(_sale_sql(), params)
    except IntegrityError as exc:
        if isinstance(exc.__cause__, pg_errors.UniqueViolation):
            return None  # a twin with this event key committed first: the general path replays it
        raise  # anything else (a CHECK violated) is a defect, never hidden by a retry
    if row is None:
        return None
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
