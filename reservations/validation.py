"""Reservation input: settings-driven limits, and request lines validated and resolved (codes to
ids, duplicates merged) before any lock is taken."""

from __future__ import annotations

import logging

from django.conf import settings

from channels.models import Channel
from core.errors import Conflict, InsufficientStock, NotFound, ValidationFailed
from inventory.bundles import bundle_components
from inventory.models import Location, Sku
from inventory.services import MAX_QUANTITY
from reservations.allocation import (
    Allocation,
    LineRequest,
    eligible_locations,
    lines_merge,
)
from reservations.models import Reservation
from reservations.waitlist import (  # noqa: F401 - re-exported: inventory and tasks call these
    reservations_waitlist_activate,
    reservations_waitlist_activate_for,
    reservations_waitlist_sweep,
    waitlist_max_seconds,
)

logger = logging.getLogger(__name__)

Status = Reservation.Status


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def default_ttl_seconds() -> int:
    return _setting("RESERVATION_DEFAULT_TTL_SECONDS", 900)


def max_ttl_seconds() -> int:
    return _setting("RESERVATION_MAX_TTL_SECONDS", 86400)


def max_lines() -> int:
    return _setting("RESERVATION_MAX_LINES", 100)


# ------------------------------------------------------------------------------ input


def _ttl(ttl_seconds: int | None) -> int:
    if ttl_seconds is None:
        return default_ttl_seconds()
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds <= max_ttl_seconds():
        raise ValidationFailed(f"ttl_seconds must be an integer from 1 to {max_ttl_seconds()}.", code="invalid_ttl")
    return ttl_seconds


def _channel_resolve(channel: Channel | str | int | None) -> Channel | None:
    if channel is None or channel == "" or isinstance(channel, Channel):
        return channel if isinstance(channel, Channel) else None
    found = (Channel.objects.filter(pk=channel) if isinstance(channel, int)
             else Channel.objects.filter(slug=channel)).first()
    if found is None:
        raise NotFound(f"Unknown channel '{channel}'.", code="channel_not_found")
    return found


def _lines_resolve(lines: list[dict], channel: Channel | None) -> tuple[list[LineRequest], dict[int, Sku],
                                                                         list[Location], dict[int, Location]]:
    """Validate and resolve request lines (codes -> ids), merge duplicates. Two or three queries.

    Returns the merged requests, {sku_id: Sku}, the eligible locations in priority order, and
    {location_id: Location} for every location the lines may name or draw from."""
    if not isinstance(lines, list) or not lines:
        raise ValidationFailed("A reservation needs at least one line.", code="lines_required")
    if len(lines) > max_lines():
        raise ValidationFailed(f"At most {max_lines()} lines per reservation.", code="too_many_lines")
    for i, line in enumerate(lines):
        quantity = line.get("quantity") if isinstance(line, dict) else None
        if not isinstance(line, dict) or not isinstance(line.get("sku"), str) or not line["sku"]:
            raise ValidationFailed(f"lines.{i}: each line needs a SKU code.", code="validation_error")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
            raise ValidationFailed(f"lines.{i}.quantity must be an integer from 1 to {MAX_QUANTITY}.",
                                   code="invalid_quantity")
        if line.get("location") is not None and not isinstance(line["location"], str):
            raise ValidationFailed(f"lines.{i}.location must be a location code.", code="validation_error")
    sku_codes = {line["sku"] for line in lines}
    skus = {s.code: s for s in Sku.objects.filter(code__in=sku_codes)}
    for code in sku_codes:
        if code not in skus:
            raise NotFound(f"Unknown SKU '{code}'.", code="sku_not_found")
        if not skus[code].active:
            raise Conflict(f"SKU '{code}' is not active and cannot be reserved.", code="sku_inactive")
    # A bundle's lines draw its components: they are loaded (and must be active) too.
    components = bundle_components([s.pk for s in skus.values() if s.is_bundle]) if any(
        s.is_bundle for s in skus.values()) else {}
    parts = Sku.objects.in_bulk({c for found in components.values() for c, _ in found})
    for part in parts.values():
        if not part.active:
            raise Conflict(f"SKU '{part.code}' (a bundle component) is not active and cannot be reserved.",
                           code="sku_inactive")
    eligible = eligible_locations(channel.pk if channel else None)
    location_codes = {line["location"] for line in lines if line.get("location")}
    named: dict[str, Location] = {}
    if location_codes:
        named = {loc.code: loc for loc in Location.objects.filter(code__in=location_codes)}
        eligible_ids = {loc.pk for loc in eligible}
        for code in location_codes:
            if code not in named:
                raise NotFound(f"Unknown location '{code}'.", code="location_not_found")
            if not named[code].active:
                raise Conflict(f"Location '{code}' is not active.", code="location_inactive")
            if named[code].pk not in eligible_ids:
                raise ValidationFailed(f"Location '{code}' does not supply channel '{channel}'.",
                                       code="location_not_eligible")
    requests = lines_merge([
        LineRequest(sku_id=skus[line["sku"]].pk, quantity=line["quantity"],
                    location_id=named[line["location"]].pk if line.get("location") else None,
                    components=components.get(skus[line["sku"]].pk, ()))
        for line in lines
    ])
    for request in requests:
        if request.quantity > MAX_QUANTITY:
            raise ValidationFailed(f"At most {MAX_QUANTITY} units of a SKU per reservation.", code="invalid_quantity")
    locations = {loc.pk: loc for loc in [*eligible, *named.values()]}
    return requests, {**parts, **{s.pk: s for s in skus.values()}}, eligible, locations


def _refusal(plan: Allocation, skus: dict[int, Sku]) -> InsufficientStock:
    short = ", ".join(f"{skus[s].code} (requested {plan.requested[s]}, available {plan.available[s]})"
                      for s in plan.short)
    return InsufficientStock(
        f"Not enough stock for {short}; nothing was reserved.",
        lines=[{"sku": skus[s].code, "requested": plan.requested[s], "available": plan.available[s]}
               for s in plan.requested],
    )
