"""Raw SQL composed safely: identifiers quoted by psycopg.sql, never pasted in with str.format.

Hot paths use a few hand-written statements (one upsert instead of N ORM round trips). Their
table and column names come from model metadata; values are always query parameters (%s or
%(name)s). `sql_compose` fills `{name}` placeholders of a template with `psycopg.sql.Identifier`s
(a name, or a list of names joined by commas) or with given `psycopg.sql.Composable` fragments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

from django.db import connection
from django.db.models import Model
from psycopg import sql

# Composed statements, per process: hot paths (webhook intake, drain, reservation create) compose
# the same few statements on every call; quoting their identifiers again each time cost more
# than sending them. Bounded: statements whose text grows with their row count are still made.
_COMPOSED: dict[tuple[object, ...], str] = {}
_COMPOSED_MAX = 512


def sql_compose(template: str, **parts: str | Sequence[str] | sql.Composable) -> str:
    """The template with its `{name}` placeholders filled, as a string for `cursor.execute`
    (remembered per process: the same template and parts give the same text)."""
    key = (template, *sorted((name, _key_part(value)) for name, value in parts.items()))
    found = _COMPOSED.get(key)
    if found is not None:
        return found
    if len(_COMPOSED) >= _COMPOSED_MAX:
        _COMPOSED.clear()
    _COMPOSED[key] = composed = _compose(template, parts)
    return composed


def _key_part(value: str | Sequence[str] | sql.Composable) -> object:
    if isinstance(value, str):
        return value
    if isinstance(value, sql.Composable):
        return repr(value)  # psycopg's repr spells out the whole fragment
    return tuple(value)


def _compose(template: str, parts: dict[str, str | Sequence[str] | sql.Composable]) -> str:
    fragments: dict[str, sql.Composable] = {}
    for name, value in parts.items():
        if isinstance(value, sql.Composable):
            fragments[name] = value
        elif isinstance(value, str):
            fragments[name] = sql.Identifier(value)
        else:
            fragments[name] = sql.SQL(", ").join(sql.Identifier(v) for v in value)
    connection.ensure_connection()
    return sql.SQL(template).format(**fragments).as_string(connection.connection)  # type: ignore[arg-type]


def sql_placeholders(rows: int, row: str) -> sql.Composable:
    """`rows` copies of a parenthesised row of placeholders, for a multi-row VALUES list. `row`
    holds only placeholders and casts (e.g. "%s::bigint, %s"), never data."""
    one = sql.SQL("(" + row + ")")  # noqa: S608 - placeholders only, see docstring
    return sql.SQL(", ").join([one] * rows)


def sql_unnest(types: Sequence[str]) -> sql.Composable:
    """`unnest(%s::t1[], %s::t2[], ...)`: a set of rows passed as one array per column, so a
    statement's text is the same for 1 row or 1,000 (psycopg parses and caches it once, instead
    of converting thousands of placeholders per call). `types` are SQL type names written in
    code (bigint, text, jsonb, ...), never data."""
    return sql.SQL("unnest(" + ", ".join(f"%s::{t}[]" for t in types) + ")")  # noqa: S608 - see docstring


def sql_columns(rows: Sequence[Sequence[object]]) -> list[list[object]]:
    """Rows turned into one list per column, the parameters of `sql_unnest`."""
    return [list(column) for column in zip(*rows, strict=True)]


def sql_json_rows(types: Sequence[str], *, null_json_as_null: bool = False) -> sql.Composable:
    """`(SELECT (r->>0)::t1, (r->>1)::t2, ... FROM jsonb_array_elements(%s::jsonb) AS e(r))`: a set
    of rows passed as ONE parameter, a JSON array of arrays (`sql_json_param`). For statements
    that write hundreds of rows: psycopg dumps a list parameter element by element in Python
    (`sql_unnest`'s arrays were a fifth of the ingestion drain's CPU), while the json module's
    encoder is C and PostgreSQL parses the document once. A `jsonb` column takes its element as
    it is (with `null_json_as_null`, a JSON null, i.e. Python's None, becomes SQL NULL). Use it
    with an alias: `FROM {rows} AS v(a, b, ...)`. `types` are SQL type names written in code,
    never data."""
    jsonb = "NULLIF(r->{i}, 'null'::jsonb)" if null_json_as_null else "r->{i}"
    columns = ", ".join(jsonb.format(i=i) if kind == "jsonb" else f"(r->>{i})::{kind}" for i, kind in enumerate(types))
    return sql.SQL(f"(SELECT {columns} FROM jsonb_array_elements(%s::jsonb) AS e(r))")  # noqa: S608 - see docstring


def sql_json_param(rows: Sequence[Sequence[object]]) -> str:
    """The rows of `sql_json_rows` as its one parameter (datetimes as ISO 8601, UUIDs as text,
    bytes in bytea's hex format)."""
    return json.dumps(rows, separators=(",", ":"), default=_json_default)


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input format, for a `::bytea` column
    raise TypeError(f"{type(value).__name__} is not a JSON row value")


def sql_models(model: type[Model], where: str, params: Sequence[object] | dict[str, object],
               **parts: str | Sequence[str] | sql.Composable) -> list:
    """Instances of `model` from `SELECT <its columns> FROM <its table> <where>` (`where` a
    template for sql_compose, with `parts`; values only as parameters). For per-batch lookups on
    hot paths: the ORM spends a millisecond or more compiling a filtered queryset (the drain's
    reservation lock was a sixth of a small batch's time), where this composes its text once per
    process and builds each instance positionally, as the ORM does."""
    fields = model._meta.concrete_fields
    names = [f.attname for f in fields]
    statement = sql_compose("SELECT {columns} FROM {table} " + where,  # noqa: S608 - a template in code, see docstring
                            columns=[f.column for f in fields], table=model._meta.db_table, **parts)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    converters = _converters(model)
    if converters:  # as the ORM reads them (a JSONField's text decoded, ...); none for the hot models
        rows = [_converted(row, converters) for row in rows]
    db = connection.alias
    return [model.from_db(db, names, row) for row in rows]


_CONVERTERS: dict[type[Model], list[tuple[int, list, object]]] = {}


def _converters(model: type[Model]) -> list[tuple[int, list, object]]:
    """(column index, the database's and the field's value converters, the column expression) of
    each of the model's concrete fields that has any."""
    found = _CONVERTERS.get(model)
    if found is None:
        found = []
        for index, field in enumerate(model._meta.concrete_fields):
            column = field.get_col(model._meta.db_table)
            functions = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            if functions:
                found.append((index, functions, column))
        _CONVERTERS[model] = found
    return found


def _converted(row: Sequence[object], converters: list[tuple[int, list, object]]) -> tuple:
    values = list(row)
    for index, functions, column in converters:
        for convert in functions:
            values[index] = convert(values[index], column, connection)
    return tuple(values)
