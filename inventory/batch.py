"""Set-based stock writes for callers that change many locked positions in one transaction.

`movement_apply` writes one position UPDATE and one ledger INSERT per change: two round trips
each, which is most of what the ingestion drain spent per event. `MovementBatch` keeps the same
rules and writes the same rows, set-based:

- `apply()` takes the same arguments as `movement_apply`, checks the same conditions against the
  in-memory numbers (exact: the caller holds the positions' locks, inventory.locking) and changes
  the position object and the pending ledger row in memory;
- `flush()` writes every changed position with ONE `UPDATE ... FROM <rows>` guarded by each
  row's version as it was when locked (a row changed behind the lock matches nothing, and the
  whole flush refuses), then every ledger row with ONE `INSERT ... SELECT`, the rows passed as
  one JSON parameter each (core.sql.sql_json_rows).

Invariants as in inventory.services: each change is one ledger row whose `*_after` columns are the
position's numbers after it, and bumps the version by one; positions equal the sums of their
ledger deltas once flushed. The caller flushes before anything else reads those positions from
the database (the stock-change hooks do), and inside the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.utils import timezone

from core.errors import InsufficientStock
from core.sql import sql_compose, sql_json_param, sql_json_rows
from inventory.models import StockMovement, StockPosition
from inventory.services import MovementContext


class MovementBatch:
    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._positions: dict[int, StockPosition] = {}
        self._locked_version: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def apply(self, *, position: StockPosition, type: str, on_hand_delta: int = 0, reserved_delta: int = 0,
              context: MovementContext, event_key: str | None = None,
              metadata: dict[str, Any] | None = None) -> None:
        """Like `movement_apply`, written at `flush()`: the same refusals, now, in memory."""
        on_hand, reserved = position.on_hand + on_hand_delta, position.reserved + reserved_delta
        if on_hand < 0 or reserved < 0 or (reserved_delta > 0 and on_hand < reserved):
            raise InsufficientStock("Stock changed underneath this operation; nothing was applied.",
                                    available=position.available)
        self._locked_version.setdefault(position.pk, position.version)
        self._positions[position.pk] = position
        position.on_hand, position.reserved, position.version = on_hand, reserved, position.version + 1
        # A plain row in _LEDGER_COLUMNS order (building model instances cost more than the SQL).
        self._rows.append((
            position.pk, position.sku_id, position.location_id, type, on_hand_delta, reserved_delta, on_hand,
            reserved, context.source, context.reference, event_key, context.actor,
            context.occurred_at or timezone.now(), None, {**context.metadata, **(metadata or {})},
            context.reservation_id))

    def flush(self) -> None:
        """Write what `apply()` gathered: one UPDATE of the positions, one INSERT of the ledger."""
        if not self._rows:
            return
        positions = list(self._positions.values())
        # Rows as one JSON parameter each (core.sql.sql_json_rows): dumping 16 arrays element by
        # element in Python cost more than the statements.
        update = sql_compose(
            "UPDATE {table} AS p SET on_hand = v.on_hand, reserved = v.reserved, version = v.version, "
            "updated_at = %s FROM {rows} AS v(id, on_hand, reserved, version, locked_version) "
            "WHERE p.id = v.id AND p.version = v.locked_version",
            table=StockPosition._meta.db_table, rows=sql_json_rows(["bigint"] * 5))
        now = timezone.now()
        insert = sql_compose(
            "INSERT INTO {table} ({columns}) SELECT * FROM {rows} AS r",
            table=StockMovement._meta.db_table, columns=_LEDGER_COLUMNS, rows=sql_json_rows(_LEDGER_TYPES))
        ledger = [(*row[:13], now, row[14], row[15]) for row in self._rows]
        with connection.cursor() as cursor:
            cursor.execute(update, [now, sql_json_param(
                [(p.pk, p.on_hand, p.reserved, p.version, self._locked_version[p.pk]) for p in positions])])
            if cursor.rowcount != len(positions):
                # Only possible if a caller wrote a position without its lock: refuse it all
                # (the caller's transaction rolls back; the ingestion drain retries carefully).
                raise InsufficientStock("Stock changed underneath this operation; nothing was applied.")
            cursor.execute(insert, [sql_json_param(ledger)])
        self._rows, self._positions, self._locked_version = [], {}, {}


_LEDGER_COLUMNS = ("position_id", "sku_id", "location_id", "type", "on_hand_delta", "reserved_delta", "on_hand_after",
                   "reserved_after", "source", "reference", "event_key", "actor", "occurred_at", "recorded_at",
                   "metadata", "reservation_id")
_LEDGER_TYPES = ("bigint", "bigint", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "text", "text", "text",
                 "text", "timestamptz", "timestamptz", "jsonb", "uuid")
