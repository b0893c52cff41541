"""Expiry: active holds past their deadline are released, waiting reservations past their longest
wait leave the queue (beat, every RESERVATION_EXPIRY_INTERVAL_SECONDS)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from inventory.locking import positions_lock
from inventory.models import MovementType
from inventory.services import MovementContext, movement_apply, positions_changed
from reservations.holds import held_at as _held_at
from reservations.holds import reservation_context
from reservations.models import Reservation, ReservationLine, WaitlistEntry
from reservations.validation import _setting, waitlist_max_seconds
from reservations.waitlist import (  # noqa: F401 - re-exported: inventory and tasks call these
    reservations_waitlist_activate,
    reservations_waitlist_activate_for,
    reservations_waitlist_sweep,
)

logger = logging.getLogger(__name__)

Status = Reservation.Status


def reservations_expire(*, now: datetime | None = None, batch_size: int | None = None,
                        max_batches: int = 50) -> int:
    """Expire waiting reservations past their longest wait, then release every active reservation
    past its deadline; returns how many (beat task).

    Each batch locks up to `batch_size` due reservations with SKIP LOCKED (so two sweepers, or a
    sweeper and a client committing, never wait on each other and never take the same row), then
    their positions by primary key, in one short transaction.
    """
    batch_size = batch_size or _setting("RESERVATION_EXPIRY_BATCH_SIZE", 200)
    total = 0
    # Waiting reservations past their longest wait leave the queue first: releasing a hold wakes
    # the waitlist, which must not hand the freed units to a customer who has already given up.
    for expire in (_expire_waiting_batch, _expire_batch):
        for _ in range(max_batches):
            done = expire(now or timezone.now(), batch_size)
            total += done
            if done < batch_size:
                break
    return total


@transaction.atomic(durable=True)
def _expire_waiting_batch(now: datetime, batch_size: int) -> int:
    """Waiting reservations that waited `waitlist_max_seconds()` since they were made leave the
    queue as expired. They hold no stock, so no position is locked and no ledger row is written.
    (`expires_at` stays null while waiting, as the API has always shown it.)"""
    due = list(
        Reservation.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(status=Status.WAITING, created_at__lte=now - timedelta(seconds=waitlist_max_seconds()))
        .order_by("created_at")[:batch_size]
    )
    if not due:
        return 0
    WaitlistEntry.objects.filter(reservation__in=due).delete()
    Reservation.objects.filter(pk__in=[r.pk for r in due]).update(
        status=Status.EXPIRED, closed_at=now, closed_by="expiry: waited too long", updated_at=timezone.now())
    return len(due)


@transaction.atomic(durable=True)
def _expire_batch(now: datetime, batch_size: int) -> int:
    due = list(
        Reservation.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(status=Status.ACTIVE, expires_at__lte=now)
        .order_by("expires_at")[:batch_size]
    )
    if not due:
        return 0
    lines = list(ReservationLine.objects.filter(reservation__in=due).order_by("id"))
    locked = positions_lock({_held_at(line) for line in lines})
    by_reservation: dict[uuid.UUID, list[ReservationLine]] = {}
    for line in lines:
        by_reservation.setdefault(line.reservation_id, []).append(line)
    for reservation in due:
        ctx = reservation_context(reservation=reservation, context=MovementContext(source="expiry", actor="system"))
        for line in by_reservation.get(reservation.pk, []):
            movement_apply(position=locked[_held_at(line)], type=MovementType.RESERVATION_RELEASE,
                           reserved_delta=-line.quantity, context=ctx, metadata={"reason": "expired"})
    Reservation.objects.filter(pk__in=[r.pk for r in due]).update(
        status=Status.EXPIRED, closed_at=now, closed_by="expiry", updated_at=timezone.now())
    positions_changed(list(locked.values()), availability_rose=True)
    return len(due)
