"""Celery entry points for ingestion: thin wrappers around ingestion.services."""

from celery import shared_task
from django.core.cache import cache

from ingestion import polling, services


@shared_task(name="ingestion.drain")
def inbound_drain_task(partition: int | None = None) -> int:
    """Drain one partition's due events, batch after batch (one drain per partition at a time;
    partitions drain in parallel on any workers). A message queued before partitions existed
    (no argument) wakes every partition."""
    if partition is None:
        services.drain_enqueue()
        return 0
    # The wake-up flag stays set while this drain runs (events arriving meanwhile queue no further
    # drains) and is cleared when a claim first finds nothing, followed by more claims until the
    # web processes' quiet period after the clear is over (ingestion.scheduling._kick): an event
    # committed after that queues a new drain (no lost wake-up). A drain that finds the
    # partition held leaves the flag set and retries shortly. A drain that fails clears it, so
    # the next event queues a drain at once rather than after the flag's TTL (one committed
    # within a quiet period of it is found by the sweep, within 10 s).
    flag = services.drain_flag(partition)
    try:
        return services.inbound_events_drain_partition(partition=partition, on_idle=lambda: cache.delete(flag)).claimed
    except Exception:
        cache.delete(flag)
        raise


@shared_task(name="ingestion.fetch")
def inbound_fetch_task(channel_id: int) -> int:
    """Fetch what one channel's thin webhooks leave out (BigCommerce order products) within the
    fetch budget, then queue a drain for what was fetched. Its own task, never inside the drain:
    a slow marketplace holds one worker slot for a bounded time and delays no other events."""
    # Cleared before selecting: an event committed after our select queues another run.
    cache.delete(services.fetch_flag(channel_id=channel_id))
    return services.inbound_events_fetch(channel_id=channel_id).fetched


@shared_task(name="ingestion.sweep")
def inbound_sweep_task() -> int:
    """Beat: queue a drain when due pending events exist (lost wake-ups, finished backoffs), and a
    fetch per channel whose due events wait for their data (also: circuits whose cool-down ended)."""
    return services.inbound_events_sweep()


@shared_task(name="ingestion.poll_orders")
def channels_poll_dispatch_task() -> int:
    """Beat: queue an order poll for every eBay/Amazon channel whose poll is due (each channel
    has its own interval and backoff on its cursor row; the claim makes a duplicate harmless)."""
    return len(polling.channels_poll_dispatch())


@shared_task(name="ingestion.poll_channel")
def channel_poll_task(channel_id: int) -> int:
    """Poll one channel's orders once (claim, read pages within the fetch budget, store each new
    order version as an inbound event for the drain, move the cursor or back off)."""
    # Cleared before claiming: a dispatch after this point queues another run (no lost wake-up).
    cache.delete(polling.poll_flag(channel_id=channel_id))
    return polling.channel_orders_poll(channel_id=channel_id).stored
