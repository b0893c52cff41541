"""Reads of reservations. No locks."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Prefetch, QuerySet

from core.errors import NotFound
from reservations.models import Reservation, ReservationLine

_LINES = Prefetch("lines", queryset=ReservationLine.objects.select_related("sku", "location", "bundle")
                  .order_by("id"))


def reservation_get(*, reservation_id: uuid.UUID | str) -> Reservation:
    """One reservation with its lines (two queries); 404 `reservation_not_found`."""
    try:
        rid = uuid.UUID(str(reservation_id))
    except ValueError:
        raise NotFound(f"Unknown reservation '{reservation_id}'.", code="reservation_not_found") from None
    found = Reservation.objects.select_related("channel").prefetch_related(_LINES).filter(pk=rid).first()
    if found is None:
        raise NotFound(f"Unknown reservation '{reservation_id}'.", code="reservation_not_found")
    return found


def reservation_list(*, status: str | None = None, order_ref: str | None = None, channel: str | None = None,
                     expiring_before: datetime | None = None) -> QuerySet[Reservation]:
    """Reservations, newest first, with lines prefetched (for pagination)."""
    qs = Reservation.objects.select_related("channel").prefetch_related(_LINES).order_by("-created_at", "-id")
    if status:
        qs = qs.filter(status=status)
    if order_ref:
        qs = qs.filter(order_ref=order_ref)
    if channel:
        qs = qs.filter(channel__slug=channel)
    if expiring_before:
        qs = qs.filter(status=Reservation.Status.ACTIVE, expires_at__lte=expiring_before)
    return qs


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _line_dict(line: ReservationLine) -> dict:
    """A line as the API shows it; a line holding a bundle's component also names the bundle."""
    found = {"sku": line.sku.code, "location": line.location.code if line.location is not None else None,
             "quantity": line.quantity}
    bundle = line.bundle if line.bundle_id is not None else None  # no query for a plain line
    if bundle is not None:
        found["bundle"] = bundle.code
    return found


def reservation_to_dict(reservation: Reservation) -> dict:
    """The API shape. A waiting reservation's lines are its request (location null unless named)."""
    return {
        "id": str(reservation.pk),
        "status": reservation.status,
        "channel": reservation.channel.slug if reservation.channel is not None else None,
        "order_ref": reservation.order_ref,
        "expires_at": _iso(reservation.expires_at),
        "ttl_seconds": reservation.ttl_seconds,
        "lines": [_line_dict(line) for line in reservation.lines.all()],
        "created_at": _iso(reservation.created_at),
        "updated_at": _iso(reservation.updated_at),
        "activated_at": _iso(reservation.activated_at),
        "closed_at": _iso(reservation.closed_at),
    }
