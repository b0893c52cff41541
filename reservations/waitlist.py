"""The backorder queue: waiting reservations become active when stock becomes available.

Order: first come, first served per SKU (WaitlistEntry.id). A waiting reservation that is
short of a SKU blocks every later one on *that* SKU, so a small late request never jumps ahead
of a large early one. It does not block SKUs it is not short of: units nobody ahead can use are
not left idle. Activation is all-or-nothing and never holds more than is available, because it
allocates over locked positions with the same rules as creation (reservations.allocation).

When: the stock-change hook (inventory.hooks, `waitlist_on_stock_change`) runs it inside the
transaction that raised availability (receipt, return, count, release, expiry...).
That transaction already holds some position locks, so taking more locks *in order* is no
longer possible: everything else (waiting reservations, positions at other locations or of
other SKUs) is taken with SKIP LOCKED, never waiting. What could not be locked is handed to a
task after commit (`reservations.activate_waitlist`), which starts with no locks and takes the
positions in primary-key order. The expiry beat also sweeps the queue as a safety net.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import DomainError
from core.oncommit import enqueue_on_commit
from inventory.bundles import bundle_components
from inventory.hooks import ReactionStatement, StockChange, statement_form
from inventory.locking import positions_lock_for_skus, positions_lock_nowait
from inventory.models import StockPosition
from reservations.allocation import LineRequest, allocate, eligible_locations, location_ids_for, stock_sku_ids
from reservations.holds import holds_apply
from reservations.models import Reservation, ReservationLine, WaitlistEntry

logger = logging.getLogger(__name__)

BATCH = 50  # waiting reservations examined per query
MAX_DEFERRALS = 5  # task retries on lock contention before leaving it to the periodic sweep


def waitlist_max_seconds() -> int:
    """How long a waiting reservation waits for stock before it expires (a backorder nobody
    filled in a week is not one the buyer still expects)."""
    return int(getattr(settings, "RESERVATION_WAITLIST_MAX_SECONDS", 7 * 86400))


# Statement forms are asked only for changes that raise no availability: nothing to activate.
@statement_form(ReactionStatement)
def waitlist_on_stock_change(change: StockChange) -> list[StockPosition]:
    """Stock-change reaction (settings.STOCK_CHANGE_REACTIONS, first): when availability rose,
    activate waiting reservations in this transaction. Returns the positions it changed, so the
    reactions after it (the channel outbox) see them too."""
    if not change.availability_rose:
        return []
    _activated, touched = _activate_for(change.positions)
    return touched


def reservations_waitlist_activate_for(*, positions: Iterable[StockPosition], now: datetime | None = None) -> int:
    """Activate waiting reservations for the SKUs of `positions`, whose availability just rose,
    inside the caller's transaction (which holds the locks on `positions`), and announce what it
    changed. Returns how many were activated."""
    from inventory.hooks import positions_changed

    activated, touched = _activate_for(positions, now=now)
    positions_changed(touched, availability_rose=False)
    return activated


def _activate_for(positions: Iterable[StockPosition], *,
                  now: datetime | None = None) -> tuple[int, list[StockPosition]]:
    """One indexed query when nobody waits. Inside a savepoint: a failure here is logged and
    retried by a task, it never undoes the stock change that triggered it."""
    positions = list(positions)
    sku_ids = {p.sku_id for p in positions}
    if not sku_ids or not WaitlistEntry.objects.filter(sku_id__in=sku_ids).exists():
        return 0, []
    try:
        with transaction.atomic():
            return _activate(sku_ids, {p.pk: p for p in positions}, now=now or timezone.now(), attempt=0)
    except (DatabaseError, DomainError):
        logger.exception("waitlist activation failed for SKUs %s; a task will retry", sorted(sku_ids))
        for p in positions:  # our changes to them were rolled back with the savepoint
            p.refresh_from_db(fields=["on_hand", "reserved", "version"])
        _defer(sku_ids, attempt=0)
        return 0, []


def reservations_waitlist_activate(*, sku_ids: Iterable[int], attempt: int = 0) -> int:
    """Top-level activation (task and sweep): no locks held on entry, so the positions of the
    SKUs involved in the first waiting reservations are locked up front, in primary-key order."""
    from inventory.hooks import positions_changed

    sku_ids = set(sku_ids)
    with transaction.atomic(durable=True):
        head = WaitlistEntry.objects.filter(sku_id__in=sku_ids).order_by("id").values("reservation_id")[:BATCH]
        involved = sku_ids | set(WaitlistEntry.objects.filter(reservation_id__in=head).values_list("sku_id", flat=True))
        held = {p.pk: p for p in positions_lock_for_skus(involved)}
        activated, touched = _activate(sku_ids, held, now=timezone.now(), attempt=attempt)
        positions_changed(touched, availability_rose=False)
        return activated


def reservations_waitlist_sweep(*, limit: int = 200) -> int:
    """Safety net (expiry beat): activate for every waited-for SKU that has available stock.

    Covers what the in-transaction path cannot see: a waiting reservation that committed just
    after a receipt at a brand-new position, or a deferral task lost with a broker outage.
    """
    waited = WaitlistEntry.objects.order_by().values("sku_id").distinct()
    sku_ids = sorted(set(
        StockPosition.objects.filter(sku_id__in=waited, location__active=True, on_hand__gt=F("reserved"))
        .values_list("sku_id", flat=True)[:limit]
    ))
    activated = 0
    for start in range(0, len(sku_ids), 20):
        activated += reservations_waitlist_activate(sku_ids=sku_ids[start:start + 20])
    return activated


# ------------------------------------------------------------------------------ internals


def _defer(sku_ids: set[int], *, attempt: int) -> None:
    if attempt >= MAX_DEFERRALS:
        logger.warning("waitlist for SKUs %s still contended; the periodic sweep will retry", sorted(sku_ids))
        return
    from reservations.tasks import waitlist_activate_task

    enqueue_on_commit(waitlist_activate_task, sorted(sku_ids), attempt + 1)


class _Positions:
    """Positions this transaction holds, taking more only with SKIP LOCKED (never waiting)."""

    def __init__(self, held: dict[int, StockPosition]):
        self.held = held
        self.confirmed: set[int] = set()  # pks re-locked here (the caller's are locked, but check)

    def get(self, sku_ids: set[int], location_ids: list[int]) -> dict[tuple[int, int], StockPosition] | None:
        """{(sku, location): locked position}, or None when another transaction holds one."""
        existing = list(StockPosition.objects.filter(sku_id__in=sku_ids, location_id__in=location_ids)
                        .values_list("pk", flat=True))
        need = [pk for pk in existing if pk not in self.confirmed]
        if need:
            for fresh in positions_lock_nowait(need):
                self.confirmed.add(fresh.pk)
                if fresh.pk in self.held:  # decide on the numbers read under the lock, never older ones
                    held = self.held[fresh.pk]
                    held.on_hand, held.reserved, held.version = fresh.on_hand, fresh.reserved, fresh.version
                else:
                    self.held[fresh.pk] = fresh
            if any(pk not in self.confirmed for pk in need):
                return None
        found = (self.held[pk] for pk in existing)
        return {(p.sku_id, p.location_id): p for p in found}


def _activate(sku_ids: set[int], held: dict[int, StockPosition], *, now: datetime,
              attempt: int) -> tuple[int, list[StockPosition]]:
    """Activate what can be, in queue order. Returns (how many, positions changed); the caller
    announces the changed positions (once per transaction)."""
    from inventory.services import MovementContext

    positions = _Positions(held)
    blocked: set[int] = set()  # SKUs on which someone earlier in the queue is short (or unlockable)
    processed: set = set()
    touched: dict[int, StockPosition] = {}
    eligible_cache: dict = {}
    activated, contended, after_id = 0, False, 0
    given_up = now - timedelta(seconds=waitlist_max_seconds())

    while not sku_ids <= blocked:
        entries = list(WaitlistEntry.objects.filter(sku_id__in=sku_ids - blocked, id__gt=after_id)
                       .order_by("id").values_list("id", "reservation_id")[:BATCH])
        if not entries:
            break
        after_id = entries[-1][0]
        queue = [rid for rid in dict.fromkeys(rid for _, rid in entries) if rid not in processed]
        processed.update(queue)
        locked = {r.pk: r for r in Reservation.objects.select_for_update(skip_locked=True, of=("self",))
                  .filter(pk__in=queue, status=Reservation.Status.WAITING)}
        lines_by: dict = defaultdict(list)
        for line in ReservationLine.objects.filter(reservation_id__in=queue).order_by("id"):
            lines_by[line.reservation_id].append(line)
        # A waiting line naming a bundle draws (and waits on) its components.
        components = bundle_components({ln.sku_id for lines in lines_by.values() for ln in lines})

        for rid in queue:
            lines = lines_by[rid]
            requests = [LineRequest(sku_id=ln.sku_id, quantity=ln.quantity, location_id=ln.location_id,
                                    components=components.get(ln.sku_id, ())) for ln in lines]
            needs = stock_sku_ids(requests)
            reservation = locked.get(rid)
            if reservation is None:
                # Being released or activated by another transaction right now: keep its place.
                blocked |= needs
                contended = True
                continue
            if needs & blocked:
                continue
            if reservation.created_at <= given_up:
                continue  # waited past its longest wait: the expiry sweep closes it, it gets no stock
            eligible = eligible_locations(reservation.channel_id, cache=eligible_cache)
            available = positions.get(needs, location_ids_for(requests, eligible))
            if available is None:
                blocked |= needs
                contended = True
                continue
            plan = allocate(requests, available, [loc.pk for loc in eligible])
            if not plan.ok:
                blocked |= stock_sku_ids([r for r in requests if r.sku_id in plan.short])
                continue
            ReservationLine.objects.filter(reservation=reservation).delete()  # the request, now allocations
            WaitlistEntry.objects.filter(reservation=reservation).delete()
            context = MovementContext(source="waitlist", actor="system")
            changed, _lines = holds_apply(reservation=reservation, plan=plan, context=context,
                                          order=[r.sku_id for r in requests])
            for position in changed:
                touched[position.pk] = position
            reservation.status = Reservation.Status.ACTIVE
            reservation.activated_at = now
            reservation.expires_at = now + timedelta(seconds=reservation.ttl_seconds)
            reservation.save(update_fields=["status", "activated_at", "expires_at", "updated_at"])
            activated += 1
            logger.info("waitlist: reservation %s activated", reservation.pk)

    if contended:
        _defer(sku_ids, attempt=attempt)
    return activated, list(touched.values())
