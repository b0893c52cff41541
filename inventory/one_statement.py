"""Stock changes as one SQL statement: the machinery the hot paths share (docs/performance.md,
"One-statement changes"). Users: inventory.sale_statement (a sale) and
reservations.create_statement (a checkout reservation).

Such a statement is a chain of CTEs: the positions' rows changed by a conditional UPDATE named
`moved` (id, sku_id, location_id, on_hand, reserved, version, ...), the ledger rows written from
it (`ledger_insert`), `changed(sku_id, location_id)` and then every stock-change reaction's
statement form (inventory.hooks) as `r0`, `r1`, ... whose returned values the final SELECT
gathers as arrays, in the registered order. Outside a transaction the statement is its own
transaction (for the reservation: BEGIN, a transaction-local generic-plan setting, the
statement and COMMIT sent in one pipeline), so the positions' row locks are held for one round
trip.

All or nothing: a statement that must change every row it names or none calls
`stockline_all_or_nothing(ok)` in its final SELECT (a function made by migration
inventory/0008); when `ok` is false it raises SQLSTATE `SL001` and everything the statement did is
undone. `statement_run` turns that into None: the caller then takes its general path, which
locks, decides and answers with the proper refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from psycopg import sql
from psycopg.pq import ExecStatus, TransactionStatus

from inventory.hooks import ReactionStatement, StockChange, reaction_statements
from inventory.models import StockMovement, StockPosition

ALL_OR_NOTHING_SQLSTATE = "SL001"


def ledger_insert(*, on_hand_delta: str = "%(on_hand_delta)s", reserved_delta: str = "%(reserved_delta)s"
                  ) -> sql.Composed:
    """The ledger rows a change writes from its `moved` rows, as a CTE body (RETURNING id). The
    deltas are SQL: a parameter (the default) or a column of `moved` for per-row amounts."""
    return sql.SQL(
        "INSERT INTO {movement} (position_id, sku_id, location_id, type, on_hand_delta, reserved_delta, "
        "on_hand_after, reserved_after, source, reference, event_key, actor, occurred_at, recorded_at, metadata, "
        "reservation_id) SELECT id, sku_id, location_id, %(type)s, {on_hand_delta}, {reserved_delta}, on_hand, "
        "reserved, %(source)s, %(reference)s, %(event_key)s, %(actor)s, %(occurred_at)s, %(now)s, %(metadata)s, "
        "%(reservation_id)s FROM moved RETURNING id").format(
            movement=sql.Identifier(StockMovement._meta.db_table), on_hand_delta=sql.SQL(on_hand_delta),
            reserved_delta=sql.SQL(reserved_delta))


@dataclass(frozen=True)
class Reactions:
    """The registered reactions' statement forms, as the parts a statement splices in."""

    forms: tuple[ReactionStatement, ...]
    ctes: sql.Composable  # ", r0 AS (...), r1 AS (...)" after the `changed` CTE
    arrays: sql.Composable  # ", ARRAY(SELECT * FROM r0), ..." at the end of the final SELECT's list
    params: dict[str, Any]

    def after_commit(self, positions: list[StockPosition], returned: Iterable[Any]) -> None:
        """Each reaction's after-commit work, with the values its statement returned."""
        change = StockChange(positions=positions, availability_rose=False)
        values = iter(returned)
        for form in self.forms:
            found = list(next(values)) if form.sql else []
            if form.after_commit is not None:
                form.after_commit(change, found)


@cache
def reactions() -> Reactions | None:
    """The parts for the registered reactions, or None when one has no statement form (the
    change must then take its general path). Once per process, like the reactions list."""
    forms = reaction_statements()
    if forms is None:
        return None
    # The forms' statements are composed already: joined in as SQL, never formatted again.
    with_sql = [form for form in forms if form.sql]
    ctes = sql.SQL("").join(sql.SQL(", r{} AS (").format(sql.SQL(str(n))) + sql.SQL(form.sql) + sql.SQL(")")
                            for n, form in enumerate(with_sql))
    # The target list is evaluated left to right: outbox and alert marks are locked in the same
    # order as the general path's reactions take them.
    arrays = sql.SQL("").join(sql.SQL(", ARRAY(SELECT * FROM r{})").format(sql.SQL(str(n)))
                              for n in range(len(with_sql)))
    params: dict[str, Any] = {}
    for form in forms:
        params.update(form.params)
    return Reactions(forms=forms, ctes=ctes, arrays=arrays, params=params)


def compact(statement: str) -> str:
    """The statement without its `--` comments and runs of whitespace: psycopg converts a query's
    placeholders once per process only for texts up to 4,096 bytes and re-parses longer ones on
    every call (8 % of a reservation's CPU at 4,551 bytes). Only for statements composed here,
    which hold no string literal with `--` or repeated spaces in it."""
    return re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", statement)).strip()


def statement_run(statement: str, params: dict[str, Any], *, generic_plan: bool = False) -> tuple | None:
    """Run a one-statement change: its row, or None when it answered none or its all-or-nothing
    guard refused (nothing was written either way). Other database errors propagate. Inside a
    caller's transaction it runs in a savepoint, so a refusal leaves that transaction usable.
    `generic_plan`: for a statement PostgreSQL would otherwise plan anew on every call
    (`generic_plan_wanted`); the sale's plan is reused without it, and the pipeline costs Python
    time (measured: web CPU per sale up, database CPU unchanged)."""
    try:
        if connection.in_atomic_block:
            with transaction.atomic():
                return _fetch(statement, params, generic_plan=False)
        return _fetch(statement, params, generic_plan=generic_plan)
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == ALL_OR_NOTHING_SQLSTATE:
            return None
        raise


def _fetch(statement: str, params: dict[str, Any], *, generic_plan: bool) -> tuple | None:
    if generic_plan and connection.get_autocommit() and generic_plan_wanted():  # never inside a transaction
        return _fetch_generic_plan(statement, params)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone()


def generic_plan_wanted() -> bool:
    """Whether to run the statement under `plan_cache_mode = force_generic_plan` (setting
    ONE_STATEMENT_GENERIC_PLAN; only where psycopg prepares statements). PostgreSQL's automatic
    choice keeps planning these statements anew on every call: planned for the array parameters
    it sees (one line, one row), a custom plan always looks cheaper than the generic one (which
    assumes 100 rows per array), so the prepared statement never reuses its plan. Planning the
    whole CTE chain was ~0.8 ms of a 1.7 ms reservation statement; the generic plan is the same
    index walk."""
    options = connection.settings_dict["OPTIONS"]
    # Client-side binding (DB_SERVER_SIDE_BINDING off) never prepares; nor does a threshold of None.
    prepared = options.get("server_side_binding") is True and options.get("prepare_threshold") is not None
    return settings.ONE_STATEMENT_GENERIC_PLAN and prepared


def _fetch_generic_plan(statement: str, params: dict[str, Any]) -> tuple | None:
    """Outside a transaction: BEGIN; SET LOCAL plan_cache_mode; the statement; COMMIT, sent in
    one pipeline (one round trip, the row locks still held only while the server runs the
    statement and commits). The setting ends with the transaction, so nothing else on the
    connection is planned differently; on an error the transaction is rolled back."""
    with connection.wrap_database_errors, connection.cursor() as cursor:
        raw = connection.connection  # open now: the cursor connected
        # The transaction commands are never prepared: a COMMIT that psycopg prepares in a
        # pipeline the statement's refusal aborted was left in its cache but not on the server
        # ("prepared statement does not exist" on the next call).
        control = raw.cursor()
        try:
            with raw.pipeline():
                control.execute(b"BEGIN", prepare=False)
                control.execute(b"SET LOCAL plan_cache_mode = force_generic_plan", prepare=False)
                cursor.execute(statement, params)
                control.execute(b"COMMIT", prepare=False)
            return cursor.fetchone()
        except Exception:
            # ROLLBACK through libpq itself: psycopg's rollback() would also forget every statement
            # prepared on this connection (DEALLOCATE ALL), and a refusal (a line to split, an
            # unknown SKU) is an everyday answer. Prepared statements survive a rollback in PostgreSQL.
            if (not raw.closed and raw.info.transaction_status != TransactionStatus.IDLE
                    and raw.pgconn.exec_(b"ROLLBACK").status != ExecStatus.COMMAND_OK):
                raw.rollback()
            raise
        finally:
            control.close()

