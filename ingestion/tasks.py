"""Celery entry points for ingestion: thin wrappers around ingestion.services."""

from celery import shared_task
from django.core.cache import cache

from ingestion import services


@shared_task(name="ingestion.drain")
def inbound_drain_task() -> int:
    """Drain one batch of pending inbound events; when the batch was full, queue a successor
    first so another worker drains the next batch in parallel (SKIP LOCKED keeps them apart)."""
    # Cleared before claiming: an event committed after our claim re-queues a drain (no lost wake-up).
    cache.delete(services.DRAIN_FLAG)
    result = services.inbound_events_drain(on_full_batch=services.drain_enqueue)
    return result.claimed


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
