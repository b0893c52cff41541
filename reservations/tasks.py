"""Celery entry points for reservations: thin, named, JSON arguments, call a service."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="reservations.expire")
def reservations_expire_task() -> int:
    """Beat (RESERVATION_EXPIRY_INTERVAL_SECONDS): release reservations past their deadline, then
    sweep the waitlist for SKUs that have stock again (safety net for missed activations)."""
    from reservations.services import reservations_expire, reservations_waitlist_sweep

    expired = reservations_expire()
    activated = reservations_waitlist_sweep()
    if expired or activated:
        logger.info("reservations: %d expired, %d waiting activated", expired, activated)
    return expired


@shared_task(name="reservations.activate_waitlist")
def waitlist_activate_task(sku_ids: list[int], attempt: int = 1) -> int:
    """Activate waiting reservations for these SKUs when the transaction that freed their stock
    could not lock everything it needed without waiting."""
    from reservations.services import reservations_waitlist_activate

    return reservations_waitlist_activate(sku_ids=sku_ids, attempt=attempt)
