"""The tables every stock change, checkout or webhook writes carry no index that only costs
writes: none whose columns lead another index of the same table (that one serves its lookups),
and no LIKE (`varchar_pattern_ops`) index (no query filters them by prefix). Each index is
maintained on every insert: the ledger's three redundant ones were ~25 % of a batch's ledger
insert (docs/performance.md, session 7)."""

import pytest
from django.db import connection

HOT_WRITE_TABLES = ("inventory_stockmovement", "ingestion_inboundevent", "reservations_reservation",
                    "reservations_reservationline", "core_idempotencyrecord")


def _indexes(table: str) -> list[tuple[str, list[str], bool, bool, str]]:
    """(name, key columns, unique, partial, definition) of each index of `table`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, array(SELECT a.attname FROM unnest(i.indkey[0:i.indnkeyatts - 1]) "
            "WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n "
            "ORDER BY k.o), "
            "i.indisunique, i.indpred IS NOT NULL, pg_get_indexdef(i.indexrelid) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass", [table])
        return [(name, list(columns), unique, partial, definition)
                for name, columns, unique, partial, definition in cursor.fetchall()]


@pytest.mark.django_db
@pytest.mark.parametrize("table", HOT_WRITE_TABLES)
def test_no_index_only_costs_writes(table):
    indexes = _indexes(table)
    assert indexes, f"{table} not found"
    for name, columns, unique, partial, definition in indexes:
        assert "pattern_ops" not in definition, f"{name}: a LIKE index ({definition})"
        if unique or partial or not columns:
            continue  # a constraint, or an index narrower than the table
        for other, other_columns, _u, other_partial, _d in indexes:
            led = other != name and not other_partial and other_columns[:len(columns)] == columns
            assert not led, f"{name} ({', '.join(columns)}) is led by {other} ({', '.join(other_columns)})"
