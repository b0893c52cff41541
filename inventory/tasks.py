import logging

from celery import shared_task

from inventory.selectors import ledger_drift

logger = logging.getLogger(__name__)


@shared_task(name="inventory.verify_ledger")
def verify_ledger_task() -> int:
    """Nightly: report (never repair) positions whose numbers differ from their ledger sums."""
    drift = ledger_drift()
    for row in drift:
        logger.error("ledger drift: %s", row)
    if not drift:
        logger.info("ledger verified: no drift")
    return len(drift)


@shared_task(name="inventory.snapshot_positions", acks_late=True, soft_time_limit=240, time_limit=270)
def snapshot_positions_task() -> int:
    """Every 5 minutes: snapshot the positions that changed since their last snapshot (all of them
    on the day's first run). Idempotent per 5-minute bucket."""
    from inventory.services import snapshot_take

    return snapshot_take()


@shared_task(name="inventory.snapshot_maintain", acks_late=True, soft_time_limit=240, time_limit=270)
def snapshot_maintain_task() -> dict:
    """Hourly: roll finished hours up into hourly snapshots, then prune past retention."""
    from inventory.services import snapshot_maintain

    return snapshot_maintain()
