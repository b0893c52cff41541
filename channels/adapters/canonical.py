"""The canonical event: one internal shape for stock events from every source.

`POST /api/v1/events/` and the `webhook` channel kind (Standard Webhooks carrying
`{"events": [...]}`) both send this shape; marketplace adapters map their own payloads onto the
same `CanonicalEvent` dataclass (channels.adapters.base). Validation here is about shape only
(no database reads), so intake stays fast; whether the SKU or location exists is decided when the
event is processed, where an unknown one fails visibly and can be reprocessed later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils.dateparse import parse_datetime

from channels.adapters.base import CanonicalEvent
from core.jsonsafe import text_problem

EVENT_TYPES = ("sale", "return", "receipt", "adjustment", "count", "transfer", "cancellation")
MAX_QUANTITY = 1_000_000_000
MAX_BATCH = 1000
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)  # PostgreSQL's limit for a timestamptz literal


class CanonicalError(ValueError):
    """A malformed canonical event: `code` is the machine code a client sees per item."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _text(raw: dict, name: str, *, max_length: int, required: bool) -> str:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise CanonicalError(f"{name}_required", f"{name} is required.")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CanonicalError(f"invalid_{name}", f"{name} must be a string.")
    value = str(value)
    if problem := text_problem(value):  # PostgreSQL text refuses it: a 500 on INSERT otherwise
        raise CanonicalError(f"invalid_{name}", f"{name} {problem}.")
    value = value.strip()
    if not value and required:
        raise CanonicalError(f"{name}_required", f"{name} is required.")
    if len(value) > max_length:
        raise CanonicalError(f"invalid_{name}", f"{name} must be at most {max_length} characters.")
    return value


def occurred_at_parse(value) -> datetime:
    """An ISO 8601 instant with an explicit offset (a naive time is ambiguous across sites)."""
    if not isinstance(value, str) or not value:
        raise CanonicalError("invalid_occurred_at", "occurred_at must be an ISO 8601 date-time string.")
    if problem := text_problem(value):  # checked before the value is echoed in a detail
        raise CanonicalError("invalid_occurred_at", f"occurred_at {problem}.")
    try:  # ASCII only: Django's parser reads other scripts' digits ("٢٠٢٤") as numbers
        parsed = parse_datetime(value.strip()) if value.isascii() else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise CanonicalError("invalid_occurred_at", f"occurred_at '{value[:40]}' is not an ISO 8601 date-time.")
    if parsed.tzinfo is None:
        raise CanonicalError("invalid_occurred_at", "occurred_at needs a UTC offset (e.g. 'Z' or '+02:00').")
    if abs(parsed.utcoffset()) > MAX_UTC_OFFSET:  # PostgreSQL refuses it: the event would retry for nothing
        raise CanonicalError("invalid_occurred_at", "occurred_at's UTC offset must be within ±15:59.")
    try:
        parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-02:00 is in the year 10000
        raise CanonicalError("invalid_occurred_at", "occurred_at is out of range.") from None
    return parsed


def quantity_check(type: str, quantity) -> int:
    """Quantity rules per type, as for stock adjustments (cancellation puts stock back: > 0)."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise CanonicalError("invalid_quantity", "quantity must be an integer.")
    if abs(quantity) > MAX_QUANTITY:
        raise CanonicalError("invalid_quantity", f"quantity must be at most {MAX_QUANTITY} in size.")
    if type == "adjustment":
        if quantity == 0:
            raise CanonicalError("invalid_quantity", "An adjustment needs a non-zero quantity.")
    elif type == "count":
        if quantity < 0:
            raise CanonicalError("invalid_quantity", "A count is an absolute quantity >= 0.")
    elif quantity <= 0:
        raise CanonicalError("invalid_quantity", f"A {type} needs a quantity > 0.")
    return quantity


def canonical_event_parse(raw, *, default_source: str = "") -> CanonicalEvent:
    """Validate one canonical event dict and return it as a CanonicalEvent (raises CanonicalError)."""
    if not isinstance(raw, dict):
        raise CanonicalError("invalid_event", "Each event must be a JSON object.")
    event_id = _text(raw, "event_id", max_length=200, required=True)
    type = raw.get("type")
    if type not in EVENT_TYPES:
        raise CanonicalError("invalid_type", f"type must be one of: {', '.join(EVENT_TYPES)}.")
    sku = _text(raw, "sku", max_length=100, required=True)
    location = _text(raw, "location", max_length=64, required=True)
    quantity = quantity_check(type, raw.get("quantity"))
    occurred_at = occurred_at_parse(raw.get("occurred_at"))
    to_location = _text(raw, "to_location", max_length=64, required=False)
    if type == "transfer":
        if not to_location:
            raise CanonicalError("to_location_required", "A transfer needs to_location.")
        if to_location == location:
            raise CanonicalError("invalid_to_location", "to_location must differ from location.")
    elif to_location:
        raise CanonicalError("invalid_to_location", "to_location is only for transfers.")
    return CanonicalEvent(
        event_id=event_id,
        type=type,
        quantity=quantity,
        occurred_at=occurred_at,
        sku=sku,
        location=location,
        to_location=to_location or None,
        source=_text(raw, "source", max_length=100, required=False) or default_source,
        reference=_text(raw, "reference", max_length=200, required=False),
    )


def canonical_event_to_json(event: CanonicalEvent) -> dict:
    """The stored (JSON) form of a validated event; `canonical_event_parse` reads it back."""
    data = {
        "event_id": event.event_id,
        "type": event.type,
        "sku": event.sku,
        "location": event.location,
        "quantity": event.quantity,
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
        "source": event.source,
        "reference": event.reference,
    }
    if event.to_location:
        data["to_location"] = event.to_location
    return data
