"""Ingestion writes, one import away: accept webhooks and canonical events durably
(ingestion.intake), fetch what thin webhooks leave out (ingestion.fetch), drain events into stock
(ingestion.drain), and when each runs (ingestion.scheduling). Callers import from here."""

from ingestion.drain import (
    DrainResult,
    inbound_events_drain,
    inbound_events_reprocess,
    inbound_events_sweep,
    oversell_incidents_resolve,
)
from ingestion.fetch import FetchResult, inbound_events_fetch
from ingestion.intake import MAX_WEBHOOK_BYTES, BatchAccepted, WebhookAccepted, events_accept, webhook_accept
from ingestion.scheduling import (
    DRAIN_FLAG,
    batch_size,
    channels_awaiting_fetch,
    drain_enqueue,
    drain_kick,
    fetch_enqueue,
    fetch_flag,
    fetch_kick,
    max_attempts,
    retry_delay,
    worker_name,
)

__all__ = [
    "DRAIN_FLAG", "MAX_WEBHOOK_BYTES", "BatchAccepted", "DrainResult", "FetchResult", "WebhookAccepted",
    "batch_size", "channels_awaiting_fetch", "drain_enqueue", "drain_kick", "events_accept", "fetch_enqueue",
    "fetch_flag", "fetch_kick", "inbound_events_drain", "inbound_events_fetch", "inbound_events_reprocess",
    "inbound_events_sweep", "max_attempts", "oversell_incidents_resolve", "retry_delay", "webhook_accept",
    "worker_name",
]
