"""Analytics tasks: thin wrappers (no arguments, a service call, nothing else). Both jobs are
idempotent per time bucket (docs/analytics.md, "Schedules"), so at-least-once delivery and a
duplicate beat are harmless."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="analytics.refresh_sales", acks_late=True, soft_time_limit=240, time_limit=270)
def sales_refresh_task() -> int:
    """Every 5 minutes: bring the daily-sales table up to the ledger (SKU-day pairs touched since)."""
    from analytics.services import daily_sales_refresh

    return daily_sales_refresh()


# The recompute stops itself well before the soft limit; the day stays unmarked and the next
# hourly beat goes on from there.
DAILY_BUDGET_SECONDS = 200.0


@shared_task(name="analytics.daily", acks_late=True, soft_time_limit=240, time_limit=270)
def analytics_daily_task() -> dict:
    """Daily (beat hourly; a no-op once the day is done): recompute dynamic safety stock,
    re-pushing channels on change, and prune old daily sales."""
    from analytics.services import analytics_daily

    return analytics_daily(budget_seconds=DAILY_BUDGET_SECONDS)


@shared_task(name="analytics.alerts_evaluate", acks_late=True, soft_time_limit=60, time_limit=90)
def alerts_evaluate_task() -> dict:
    """Every 30 s: open/resolve alerts of the SKUs marked by stock changes (and oversells)."""
    from analytics.alerts import alerts_evaluate

    return alerts_evaluate()


@shared_task(name="analytics.alert_deliveries_drain", acks_late=True, soft_time_limit=240, time_limit=270)
def alert_deliveries_drain_task() -> dict:
    """After an evaluation that wrote deliveries, and every 30 s for retries: send due deliveries."""
    from analytics.alerts import alert_deliveries_drain

    return alert_deliveries_drain()
