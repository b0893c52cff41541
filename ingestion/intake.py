"""Receiving is deliberately thin (verify, one INSERT, answer): the sender gets its 200 as soon
as the raw event is committed, and processing happens in the drain. The only thing that leaves
the request after commit is a debounced "drain now" task; if that message is lost (broker down,
process killed between commit and enqueue) the beat sweeper finds the pending rows and
re-enqueues, so an accepted event is never lost."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import DataError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from psycopg import sql

from channels.adapters.base import ChannelAdapter, Delivery
from channels.adapters.canonical import MAX_BATCH, CanonicalError, canonical_event_parse, canonical_event_to_json
from channels.models import Channel
from core.errors import ValidationFailed
from core.jsonsafe import json_contains_nul, json_parse, json_replace_nul, text_clean
from core.sql import sql_compose, sql_json_param, sql_json_rows
from ingestion.models import InboundEvent
from ingestion.scheduling import drain_kick, fetch_kick, partition_for

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024  # contract: a body over 1 MiB is refused with 413
# Request headers never stored with an event (credentials of whoever relayed the request).
DROPPED_HEADERS = {"authorization", "cookie", "proxy-authorization", "x-api-key"}

# ------------------------------------------------------------------------------ intake

_COLUMNS = ("channel_id", "source", "dedup_key", "delivery_id", "topic", "headers", "body", "payload", "fetched",
            "status", "attempts", "next_attempt_at", "error_code", "last_error", "outcome", "received_at",
            "processed_at", "processed_by", "partition")
_JSON_COLUMNS = {"headers", "payload", "fetched", "outcome"}
_PAYLOAD = _COLUMNS.index("payload")
_TYPES = ("bigint", "text", "text", "text", "text", "jsonb", "bytea", "jsonb", "jsonb", "text", "integer",
          "timestamptz", "text", "text", "jsonb", "timestamptz", "timestamptz", "text", "smallint")  # of _COLUMNS


def _insert_new(rows: list[dict[str, object]]) -> list[int]:
    """INSERT the rows, skipping any whose dedup_key exists (ON CONFLICT DO NOTHING), in one
    statement; returns the ids actually inserted. Concurrent twins: exactly one wins."""
    if not rows:
        return []
    from psycopg.types.json import Jsonb

    for row in rows:
        if row.get("partition") is None:
            row["partition"] = partition_for(source=str(row["source"]), channel_id=row.get("channel_id"),  # type: ignore[arg-type]
                                             payload=row.get("payload"), delivery_id=str(row["delivery_id"]))
    with connection.cursor() as cursor:
        if len(rows) == 1:  # a webhook: plain parameters (psycopg dumps one-element arrays slowly, 15 % of an ack)
            values = [Jsonb(rows[0].get(c)) if c in _JSON_COLUMNS and rows[0].get(c) is not None else rows[0].get(c)
                      for c in _COLUMNS]
            return _insert_one(cursor, values, rows[0].get("payload_text"))
        # Many rows: one JSON parameter (core.sql.sql_json_rows). As one array per column, psycopg
        # escaped and dumped every element in Python: half of a canonical batch's intake CPU.
        cursor.execute(_insert_many_sql(), [sql_json_param([[row.get(c) for c in _COLUMNS] for row in rows])])
        return [row[0] for row in cursor.fetchall()]


def _insert_one(cursor: CursorWrapper, values: list[Any], payload_text: object) -> list[int]:
    """One row. `payload_text`: the body as text, already parsed by json_parse (so known to be
    JSON, without NUL): PostgreSQL then reads the payload from the body's own text instead of
    Python encoding the parsed payload again (the re-encoding was ~40 % of an ack's own CPU). The
    few bodies Python accepts and jsonb refuses (a number like 1e-20000, which Python rounds to
    0.0) are stored from the parsed payload, as before."""
    from psycopg.types.json import Jsonb

    if isinstance(payload_text, str):
        fast = list(values)
        fast[_PAYLOAD] = Jsonb(payload_text, dumps=str)  # sent as it is; jsonb parses it
        try:
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                cursor.execute(_insert_one_sql(), fast)
                return [row[0] for row in cursor.fetchall()]
        except DataError as exc:  # its message quotes the body: only the SQLSTATE is logged
            logger.info("jsonb refused a body Python parsed (SQLSTATE %s); storing the parsed payload",
                        getattr(exc.__cause__, "sqlstate", "?"))
    cursor.execute(_insert_one_sql(), values)
    return [row[0] for row in cursor.fetchall()]


@cache
def _insert_one_sql() -> str:
    return sql_compose("INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT (dedup_key) DO NOTHING "
                       "RETURNING id", table=InboundEvent._meta.db_table, columns=_COLUMNS,
                       values=sql.SQL(", ").join(sql.SQL(f"%s::{kind}") for kind in _TYPES))


@cache
def _insert_many_sql() -> str:
    return sql_compose("INSERT INTO {table} ({columns}) SELECT * FROM {rows} AS r ON CONFLICT (dedup_key) DO NOTHING "
                       "RETURNING id", table=InboundEvent._meta.db_table, columns=_COLUMNS,
                       rows=sql_json_rows(_TYPES, null_json_as_null=True))


def _row(**fields: object) -> dict[str, object]:
    now = timezone.now()
    row: dict[str, object] = {
        "headers": {}, "body": None, "payload": None, "fetched": None, "status": InboundEvent.Status.PENDING,
        "attempts": 0, "next_attempt_at": now, "error_code": "", "last_error": "", "outcome": {},
        "received_at": now, "processed_at": None, "processed_by": "", "topic": "", "channel_id": None}
    row.update(fields)
    return row


def _json_text(body: bytes) -> str | None:
    """The body as text jsonb can parse, or None: not UTF-8 (json.loads also reads UTF-16 and
    UTF-32) or starting with a byte-order mark (which json.loads skips and jsonb refuses)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if text.startswith("\ufeff") else text


@dataclass
class WebhookAccepted:
    event_id: int | None  # None when this delivery was already stored
    duplicate: bool


def webhook_accept(*, channel: Channel, adapter: ChannelAdapter, headers: Mapping[str, str],
                   body: bytes) -> WebhookAccepted:
    """Store one verified delivery (raw body, headers) and schedule the drain.

    The caller has verified the signature. Whatever the body is, the delivery is stored and the
    sender gets 200 (retrying the same bytes would not help): a body that is not JSON PostgreSQL
    can store (syntax, NaN/Infinity, 1e400, lone surrogates, a nesting bomb, bad UTF-8) is stored
    as failed `invalid_json` with the reason, the raw bytes kept (bytea holds any bytes). NUL
    characters inside strings are valid JSON that jsonb cannot hold: they are replaced with
    U+FFFD in the parsed payload (the raw body keeps them) and the event is processed.
    Dedup on the channel's delivery id; a delivery without one is identified by its body's hash.
    """
    try:
        delivery = adapter.read_delivery(channel, headers, body)
    except Exception:  # e.g. RecursionError from an adapter reading a nesting bomb: still store it
        logger.warning("%s could not read the delivery's id/topic; using the body hash", type(adapter).__name__,
                       exc_info=True)
        delivery = Delivery(delivery_id="", topic="")
    delivery_id = text_clean((delivery.delivery_id or "").strip()[:255]) or "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        payload, error = json_parse(body, allow_nul=True), ""
    except ValueError as exc:
        payload, error = None, f"The body is not valid JSON: {exc}"
    payload_text = None
    if payload is not None and json_contains_nul(payload):
        payload = json_replace_nul(payload)
    elif payload is not None:
        payload_text = _json_text(body)
    kept = {text_clean(str(name)): text_clean(str(value)) for name, value in headers.items()
            if str(name).lower() not in DROPPED_HEADERS}
    row = _row(channel_id=channel.pk, source=InboundEvent.Source.WEBHOOK, dedup_key=f"wh:{channel.pk}:{delivery_id}",
               delivery_id=delivery_id, topic=text_clean(str(delivery.topic or ""))[:100], headers=kept, body=body,
               payload=payload, payload_text=payload_text)
    if error:
        row.update(status=InboundEvent.Status.FAILED, error_code="invalid_json", last_error=error[:2000],
                   processed_at=row["received_at"])
    inserted = _insert_new([row])
    if inserted and not error:
        if hasattr(adapter, "needs_fetch"):
            fetch_kick(channel_ids=[channel.pk])  # thin payload (BigCommerce): its data first, then the drain
        else:
            drain_kick(only=[row["partition"]])  # type: ignore[list-item]
    return WebhookAccepted(event_id=inserted[0] if inserted else None, duplicate=not inserted)


@dataclass
class BatchAccepted:
    accepted: int
    duplicates: int
    rejected: list[dict]

    def as_dict(self) -> dict[str, object]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


def events_accept(*, events: object, source: str = "api") -> BatchAccepted:
    """Store a canonical batch (1 to 1000 events) in one INSERT; `event_id` dedups forever.

    Items are validated for shape only; a malformed one is rejected with its index and the rest
    are accepted. Whether the SKU/location exists is decided when processing (an unknown one
    fails visibly and is reprocessed once it exists), so intake never waits on lookups.
    """
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_BATCH:
        raise ValidationFailed(f"events must be a list of 1 to {MAX_BATCH} events.", code="validation_error")
    rejected, rows, seen = [], [], set()
    duplicates = 0
    for index, raw in enumerate(events):
        try:
            event = canonical_event_parse(raw, default_source=source)
        except CanonicalError as exc:
            rejected.append({"index": index, "error": exc.code, "detail": exc.detail})
            continue
        dedup_key = f"api:{event.event_id}"
        if dedup_key in seen:
            duplicates += 1  # the same event twice in one batch
            continue
        seen.add(dedup_key)
        rows.append(_row(source=InboundEvent.Source.API, dedup_key=dedup_key, delivery_id=event.event_id,
                         topic=event.type, payload=canonical_event_to_json(event)))
    inserted = _insert_new(rows)
    if inserted:
        drain_kick(only={row["partition"] for row in rows})  # type: ignore[misc]
    return BatchAccepted(accepted=len(inserted), duplicates=duplicates + len(rows) - len(inserted),
                         rejected=rejected)
