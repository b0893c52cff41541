"""Reservations: create, commit, release, extend, expire, and commit-for-order. Writes only.

Invariants kept here:
- a reservation holds stock only while `active`: its lines' quantities are counted in
  `reserved` on exactly those positions, and each change writes ledger rows linked to it
  (StockMovement.reservation), so the ledger explains every unit of `reserved`;
- it leaves `active` exactly once (committed, released or expired), under its row lock, so a
  commit racing the expiry sweep ends in one outcome, never both;
- all lines or none: a refused request changes nothing.

Lock order, everywhere: the reservation row(s) first, then positions through inventory.locking
(primary-key order). Creation locks only positions (its row is new). Waitlist activation runs
inside transactions that already hold positions, so it never waits for a lock at all (see
reservations.waitlist).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from channels.models import Channel
from core.errors import Conflict, DomainError, InsufficientStock, NotFound, ValidationFailed
from core.idempotency import PendingClaim
from core.models import ApiKey
from core.sql import sql_compose
from inventory.locking import positions_lock, positions_lock_for_skus
from inventory.models import Location, MovementType, Sku, StockPosition
from inventory.services import MAX_QUANTITY, MovementContext, movement_apply, positions_changed
from reservations.allocation import (
    LineRequest,
    allocate,
    eligible_locations_sql,
    location_ids_for,
    stock_sku_ids,
)
from reservations.create_statement import reservation_create_in_one_statement
from reservations.expiry import reservations_expire  # noqa: F401 - re-exported: the beat task calls it
from reservations.group_commit import Request as CombinedRequest
from reservations.group_commit import reservation_create_combined
from reservations.holds import held_at as _held_at
from reservations.holds import holds_write, reservation_context, reservation_insert
from reservations.models import Reservation, ReservationLine, WaitlistEntry
from reservations.validation import (  # noqa: F401 - settings helpers re-exported for callers
    _channel_resolve,
    _lines_resolve,
    _refusal,
    _ttl,
    default_ttl_seconds,
    max_lines,
    max_ttl_seconds,
    waitlist_max_seconds,
)
from reservations.waitlist import (  # noqa: F401 - re-exported: inventory and tasks call these
    reservations_waitlist_activate,
    reservations_waitlist_activate_for,
    reservations_waitlist_sweep,
)

logger = logging.getLogger(__name__)

Status = Reservation.Status


class ReservationExpired(DomainError):
    status = 410
    code = "reservation_expired"




# ------------------------------------------------------------------------------ shared steps


def _lines_positions(reservation: Reservation) -> list[tuple[ReservationLine, StockPosition]]:
    """The reservation's lines with their positions, locked in primary-key order."""
    lines = list(reservation.lines.all())
    locked = positions_lock([_held_at(line) for line in lines])
    return [(line, locked[_held_at(line)]) for line in lines]


def _stock_release(reservation: Reservation, *, status: str, context: MovementContext | None,
                   closed_by: str, now: datetime) -> None:
    """Active -> released/expired on a locked reservation: reserved drops by every line."""
    ctx = reservation_context(reservation=reservation, context=context)
    pairs = _lines_positions(reservation)
    for line, position in pairs:
        movement_apply(position=position, type=MovementType.RESERVATION_RELEASE, reserved_delta=-line.quantity,
                       context=ctx, metadata={"reason": status})
    _close(reservation, status=status, closed_by=closed_by, now=now)
    positions_changed([p for _, p in pairs], availability_rose=True)


def _stock_commit(reservation: Reservation, *, context: MovementContext | None, closed_by: str,
                  now: datetime) -> None:
    """Active -> committed on a locked reservation: on_hand and reserved both drop by every line."""
    pairs = _lines_positions(reservation)
    # Per position: a bundle's line and a plain line may hold at the same one.
    held: dict[int, int] = {}
    for line, p in pairs:
        held[p.pk] = held.get(p.pk, 0) + line.quantity
    missing = [(line, p) for line, p in pairs if p.on_hand < held[p.pk]]
    if missing:
        # Only possible when a count or adjustment removed units that were reserved.
        raise InsufficientStock(
            "On hand fell below the reserved quantity (a count or adjustment removed reserved units); "
            "the reservation is still active.",
            lines=[{"sku": p.sku.code, "location": p.location.code, "requested": line.quantity,
                    "available": p.on_hand} for line, p in missing],
        )
    ctx = reservation_context(reservation=reservation, context=context)
    for line, position in pairs:
        movement_apply(position=position, type=MovementType.RESERVATION_COMMIT, on_hand_delta=-line.quantity,
                       reserved_delta=-line.quantity, context=ctx,
                       metadata={"bundle_id": line.bundle_id} if line.bundle_id is not None else None)
        line.committed = line.quantity
    ReservationLine.objects.bulk_update([line for line, _ in pairs], ["committed"])
    _close(reservation, status=Status.COMMITTED, closed_by=closed_by, now=now)
    positions_changed([p for _, p in pairs], availability_rose=False)


def _close(reservation: Reservation, *, status: str, closed_by: str, now: datetime) -> None:
    reservation.status = status
    reservation.closed_at = now
    reservation.closed_by = closed_by[:200]
    reservation.save(update_fields=["status", "closed_at", "closed_by", "updated_at"])


def _lock(reservation_id: uuid.UUID | str) -> Reservation:
    try:
        rid = uuid.UUID(str(reservation_id))
    except ValueError:
        raise NotFound(f"Unknown reservation '{reservation_id}'.", code="reservation_not_found") from None
    found = Reservation.objects.select_for_update(of=("self",)).filter(pk=rid).first()
    if found is None:
        raise NotFound(f"Unknown reservation '{reservation_id}'.", code="reservation_not_found")
    return found


def _overdue(reservation: Reservation, now: datetime) -> bool:
    return reservation.status == Status.ACTIVE and reservation.expires_at is not None and reservation.expires_at <= now


def _expired_error(reservation: Reservation) -> ReservationExpired:
    if reservation.expires_at is None:  # it expired while waiting: it never had a deadline nor stock
        return ReservationExpired(f"Reservation {reservation.pk} expired while waiting for stock.")
    return ReservationExpired(f"Reservation {reservation.pk} expired at {reservation.expires_at.isoformat()}; "
                              "its stock was released.")


# ------------------------------------------------------------------------------ services


def reservation_create(
    *,
    lines: list[dict],
    channel: Channel | str | None = None,
    order_ref: str = "",
    ttl_seconds: int | None = None,
    waitlist: bool = False,
    created_by: ApiKey | None = None,
    context: MovementContext | None = None,
    request_key: str | None = None,
    claim: PendingClaim | None = None,
) -> Reservation:
    """Hold stock for every line, or for none.

    `request_key` identifies the client request (core.idempotency): a request re-run after its
    process died returns the reservation it created, never a second hold. `claim`: the request's
    Idempotency-Key claim, inserted by the one-statement reservation with it, or settled before
    any other path (it may raise the replay, 409 or 422 of core.idempotency).

    `lines`: [{"sku": code, "quantity": int, "location": code?}]. Lines without a location are
    filled from the channel's eligible locations in priority order. Lock order: positions of the
    requested SKUs at the eligible locations, by primary key. Refused with InsufficientStock (409,
    per-SKU `lines`), or stored as `waiting` when `waitlist` is true.
    Raises NotFound / ValidationFailed / Conflict (duplicate live order_ref) before any change.
    """
    ttl = _ttl(ttl_seconds)
    if not isinstance(order_ref, str) or len(order_ref) > 200:
        raise ValidationFailed("order_ref must be a string of at most 200 characters.", code="invalid_order_ref")
    channel_obj = _channel_resolve(channel)
    if channel_obj is not None and not channel_obj.active:
        raise Conflict(f"Channel '{channel_obj.slug}' is not active.", code="channel_inactive")
    context = context or MovementContext()
    plain = _plain_lines(lines)
    try:
        # The common checkout in one statement (reservations.create_statement): None, and the
        # general path decides (bundles, named locations, splits, refusals, the waitlist).
        made = None
        if plain is not None and settings.RESERVATION_ONE_STATEMENT:
            if len(plain) == 1 and settings.RESERVATION_GROUP_COMMIT and not connection.in_atomic_block:
                # A checkout of one SKU, run together with the others of it waiting in this process.
                made = reservation_create_combined(CombinedRequest(
                    code=plain[0][0], quantity=plain[0][1], channel=channel_obj, order_ref=order_ref, ttl=ttl,
                    created_by=created_by, context=context, request_key=request_key, claim=claim))
            else:
                made = reservation_create_in_one_statement(
                    lines=plain, channel=channel_obj, order_ref=order_ref, ttl=ttl, created_by=created_by,
                    context=context, request_key=request_key, claim=claim)
        if made is not None:
            reservation, written = made  # its lines carry their SKU and location objects
        else:
            if claim is not None:
                claim.settle()
            fast = _lines_resolve_fast(plain, channel_obj) if plain is not None else None
            requests, skus, eligible, locations = fast or _lines_resolve(lines, channel_obj)
            reservation, written = _reservation_create_atomic(
                requests, skus, eligible, channel_obj, order_ref, ttl, bool(waitlist), created_by, context,
                request_key)
            # The caller usually answers with the lines: hand them over with their SKU and location
            # objects (already loaded) instead of making it query them again (the checkout hot path).
            for line in written:
                line.sku = skus[line.sku_id]
                if line.bundle_id is not None:
                    line.bundle = skus[line.bundle_id]
                line.location = locations.get(line.location_id) if line.location_id is not None else None
    except IntegrityError as exc:
        if request_key and "request_key" in str(exc):  # this very request ran before: its answer
            if claim is not None:
                claim.settle()  # its first run's claim went stale (that run died): taken over here
            return Reservation.objects.prefetch_related("lines__sku", "lines__location", "lines__bundle").get(
                request_key=request_key)
        if "reservation_live_order_ref_unique" in str(exc):
            raise Conflict(f"A live reservation for order '{order_ref}' already exists on this channel.",
                           code="duplicate_order_ref") from None
        raise
    cached = reservation.lines.all()  # stored like prefetch_related stores it: an evaluated QuerySet
    cached._result_cache = written
    cached._prefetch_done = True  # type: ignore[attr-defined]  # a private QuerySet attribute the stubs omit
    reservation._prefetched_objects_cache = {"lines": cached}  # type: ignore[attr-defined]  # likewise on Model
    return reservation


@cache
def _resolve_sql() -> str:
    # The SKUs asked for (kind 0) and the channel's eligible locations (kind 1) in one statement:
    # the locations it lists that are active, or every active location when it lists none (or
    # there is no channel), in priority order, as reservations.allocation.eligible_locations.
    return sql_compose(
        "SELECT 0, id, code, active AND NOT is_bundle, 0 FROM {sku} WHERE code = ANY(%(codes)s) "
        "UNION ALL SELECT 1, e.id, e.code, e.active, e.priority FROM ({eligible}) e "
        "ORDER BY 1, 5, 3",
        sku=Sku._meta.db_table, eligible=eligible_locations_sql())


def _plain_lines(lines: object) -> list[tuple[str, int]] | None:
    """The lines as (SKU code, quantity), merged by code in first-appearance order, when every line
    is well formed and names no location (the checkout hot path); otherwise None, and
    `_lines_resolve` decides, with its refusals, so there is one set of rules."""
    if not isinstance(lines, list) or not 1 <= len(lines) <= max_lines():
        return None
    merged: dict[str, int] = {}
    for line in lines:
        if not isinstance(line, dict) or line.get("location") is not None:
            return None
        code, quantity = line.get("sku"), line.get("quantity")
        if not isinstance(code, str) or not code or isinstance(quantity, bool) or not isinstance(quantity, int) \
                or not 1 <= quantity <= MAX_QUANTITY:
            return None
        merged[code] = merged.get(code, 0) + quantity
    if any(quantity > MAX_QUANTITY for quantity in merged.values()):
        return None
    return list(merged.items())


def _lines_resolve_fast(lines: list[tuple[str, int]], channel: Channel | None) -> tuple[
        list[LineRequest], dict[int, Sku], list[Location], dict[int, Location]] | None:
    """`_lines_resolve` for plain lines (`_plain_lines`), in one query instead of two ORM queries,
    when their SKUs exist and are active; otherwise None (`_lines_resolve` refuses or expands
    bundles). The answers are the same: merged requests, SKUs, eligible locations in priority
    order, and the locations by id."""
    with connection.cursor() as cursor:
        cursor.execute(_resolve_sql(), {"codes": [code for code, _ in lines],
                                        "channel": channel.pk if channel is not None else None})
        rows = cursor.fetchall()
    skus_by_code: dict[str, Sku] = {}
    eligible: list[Location] = []
    for kind, pk, code, active, priority in rows:
        if kind == 0:
            skus_by_code[code] = Sku(pk=pk, code=code, active=active)
        else:
            eligible.append(Location(pk=pk, code=code, active=active, priority=priority))
    if len(skus_by_code) != len(lines) or not all(sku.active for sku in skus_by_code.values()):
        return None  # an unknown or inactive SKU (`_lines_resolve` refuses it), or a bundle (it expands it)
    requests = [LineRequest(sku_id=skus_by_code[code].pk, quantity=quantity) for code, quantity in lines]
    return requests, {s.pk: s for s in skus_by_code.values()}, eligible, {loc.pk: loc for loc in eligible}


@transaction.atomic(durable=True)
def _reservation_create_atomic(requests: list[LineRequest], skus: dict[int, Sku], eligible: list[Location],
                               channel: Channel | None, order_ref: str, ttl: int, waitlist: bool,
                               created_by: ApiKey | None, context: MovementContext, request_key: str | None,
                               ) -> tuple[Reservation, list[ReservationLine]]:
    now = timezone.now()
    # Built in memory and written at the end with its lines in one statement: the transaction
    # is lock, decide, two set-based stock writes, one reservation INSERT, the outbox mark.
    reservation = Reservation(
        status=Status.ACTIVE, channel=channel, order_ref=order_ref, ttl_seconds=ttl,
        expires_at=now + timedelta(seconds=ttl), activated_at=now, created_by=created_by, request_key=request_key,
        created_at=now, updated_at=now,
    )
    location_ids = location_ids_for(requests, eligible)
    locked = positions_lock_for_skus(stock_sku_ids(requests), location_ids)
    plan = allocate(requests, {(p.sku_id, p.location_id): p for p in locked}, [loc.pk for loc in eligible])
    if not plan.ok:
        if not waitlist:
            raise _refusal(plan, skus)
        reservation.status, reservation.expires_at, reservation.activated_at = Status.WAITING, None, None
        written = [ReservationLine(reservation=reservation, sku_id=r.sku_id, location_id=r.location_id,
                                   quantity=r.quantity) for r in requests]
        reservation_insert(reservation=reservation, lines=written)
        # Queued on the SKUs that hold the stock (a bundle's components): their changes wake it.
        queued = dict.fromkeys(s for r in requests for s in ([c for c, _ in r.components] or [r.sku_id]))
        WaitlistEntry.objects.bulk_create([WaitlistEntry(reservation=reservation, sku_id=s) for s in queued])
        return reservation, written
    touched, written = holds_write(reservation=reservation, plan=plan, context=context,
                                   order=[r.sku_id for r in requests])
    reservation_insert(reservation=reservation, lines=written)
    positions_changed(touched, availability_rose=False)
    return reservation, written


def reservation_commit(*, reservation_id: uuid.UUID | str, context: MovementContext | None = None) -> Reservation:
    """Payment succeeded: the held units leave on_hand (and reserved). Idempotent when committed.

    Lock order: the reservation row, then its positions by primary key. An active reservation
    past its deadline is expired here (stock released) and the commit refused with 410, exactly as
    if the sweep had reached it first. Waiting or released reservations: 409.
    """
    reservation, expired = _reservation_commit_atomic(reservation_id, context)
    if expired:
        raise _expired_error(reservation)
    return reservation


@transaction.atomic(durable=True)
def _reservation_commit_atomic(reservation_id: uuid.UUID | str,
                               context: MovementContext | None) -> tuple[Reservation, bool]:
    now = timezone.now()
    reservation = _lock(reservation_id)
    if reservation.status == Status.COMMITTED:
        return reservation, False
    if reservation.status == Status.EXPIRED:
        return reservation, True
    if _overdue(reservation, now):
        _stock_release(reservation, status=Status.EXPIRED, context=context, closed_by="expiry", now=now)
        return reservation, True
    if reservation.status == Status.RELEASED:
        raise Conflict(f"Reservation {reservation.pk} was released; it cannot be committed.",
                       code="reservation_released")
    if reservation.status == Status.WAITING:
        raise Conflict(f"Reservation {reservation.pk} is still waiting for stock; it cannot be committed yet.",
                       code="reservation_not_active")
    _stock_commit(reservation, context=context, closed_by=(context.actor if context else "") or "api", now=now)
    return reservation, False


def reservation_release(*, reservation_id: uuid.UUID | str, context: MovementContext | None = None) -> Reservation:
    """The buyer left: reserved drops, the units are available again (and may activate the
    waitlist in this same transaction). Idempotent on released and expired reservations (the
    stock is already free; the answer shows which). A waiting reservation leaves the queue.
    Committed: 409. Lock order: the reservation row, then its positions by primary key."""
    return _reservation_release_atomic(reservation_id, context)


@transaction.atomic(durable=True)
def _reservation_release_atomic(reservation_id: uuid.UUID | str, context: MovementContext | None) -> Reservation:
    now = timezone.now()
    reservation = _lock(reservation_id)
    closed_by = (context.actor if context else "") or "api"
    if reservation.status in (Status.RELEASED, Status.EXPIRED):
        return reservation
    if reservation.status == Status.COMMITTED:
        raise Conflict(f"Reservation {reservation.pk} is committed; return the goods instead.",
                       code="reservation_committed")
    if reservation.status == Status.WAITING:
        WaitlistEntry.objects.filter(reservation=reservation).delete()
        _close(reservation, status=Status.RELEASED, closed_by=closed_by, now=now)
        return reservation
    _stock_release(reservation, status=Status.RELEASED, context=context, closed_by=closed_by, now=now)
    return reservation


def reservation_extend(*, reservation_id: uuid.UUID | str, ttl_seconds: int,
                       context: MovementContext | None = None) -> Reservation:
    """Set a new deadline, now + ttl_seconds, on an active reservation (may shorten it).

    Expired (or past its deadline): 410, and the stock is released if the sweep had not yet.
    Waiting, committed or released: 409 `reservation_not_active`.
    """
    ttl = _ttl(ttl_seconds)
    reservation, expired = _reservation_extend_atomic(reservation_id, ttl, context)
    if expired:
        raise _expired_error(reservation)
    return reservation


@transaction.atomic(durable=True)
def _reservation_extend_atomic(reservation_id: uuid.UUID | str, ttl: int,
                               context: MovementContext | None) -> tuple[Reservation, bool]:
    now = timezone.now()
    reservation = _lock(reservation_id)
    if reservation.status == Status.EXPIRED:
        return reservation, True
    if _overdue(reservation, now):
        _stock_release(reservation, status=Status.EXPIRED, context=context, closed_by="expiry", now=now)
        return reservation, True
    if reservation.status != Status.ACTIVE:
        raise Conflict(f"Reservation {reservation.pk} is {reservation.status}; only an active one can be extended.",
                       code="reservation_not_active")
    reservation.expires_at = now + timedelta(seconds=ttl)
    reservation.ttl_seconds = ttl
    reservation.save(update_fields=["expires_at", "ttl_seconds", "updated_at"])
    return reservation, False


def reservation_commit_for_order(
    *, order_ref: str, channel: Channel | str | int | None = None, context: MovementContext | None = None,
) -> Reservation | None:
    """A marketplace order arrived: commit the reservation held for it instead of selling twice.

    Matches reservations with this `order_ref` whose channel is `channel` or that have no
    channel. Returns the committed reservation (already committed ones unchanged, so the caller
    knows the stock was taken), or None when there is none: then the caller sells normally.
    An active reservation is committed even past its deadline (the sale happened; the units are
    still held). A *waiting* one is released (the order is fulfilled from stock by the caller).

    Runs in the caller's transaction when there is one (a savepoint, not durable). Call it before
    locking positions yourself: it locks reservation rows, then positions in primary-key order.
    """
    if not order_ref:
        return None
    channel_id = None
    if channel is not None:
        try:
            resolved = _channel_resolve(channel)
            channel_id = resolved.pk if resolved is not None else None  # None for channel=""
        except NotFound:
            channel_id = None
    with transaction.atomic():
        matching = Q(channel__isnull=True) | Q(channel_id=channel_id) if channel_id else Q(channel__isnull=True)
        candidates = list(
            Reservation.objects.select_for_update(of=("self",))
            .filter(matching, order_ref=order_ref, status__in=[Status.ACTIVE, Status.COMMITTED, Status.WAITING])
            .order_by("pk")  # several rows: lock them in one consistent order
        )
        committed = sorted((r for r in candidates if r.status == Status.COMMITTED),
                           key=lambda r: r.closed_at or r.created_at, reverse=True)
        if committed:
            return committed[0]
        now = timezone.now()
        actor = (context.actor if context else "") or "order"
        for reservation in sorted(candidates, key=lambda r: (r.channel_id is None, r.created_at)):
            if reservation.status == Status.ACTIVE:
                _stock_commit(reservation, context=context, closed_by=actor, now=now)
                return reservation
        for reservation in candidates:  # only waiting ones left
            WaitlistEntry.objects.filter(reservation=reservation).delete()
            _close(reservation, status=Status.RELEASED, closed_by=f"{actor}: fulfilled by order", now=now)
    return None
