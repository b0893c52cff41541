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


@shared_task(name="inventory.snapshot_positions")
def snapshot_positions_task() -> int:
    """Every 5 minutes: copy every position that changed since its last snapshot."""
    from inventory.services import snapshot_take

    return snapshot_take()
