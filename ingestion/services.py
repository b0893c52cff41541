"""Ingestion writes, one import away: accept webhooks and canonical events durably
(ingestion.intake), fetch what thin webhooks leave out (ingestion.fetch), drain events into stock
(ingestion.drain), and when each runs (ingestion.scheduling). Callers import from here."""

from ingestion.drain import (
    DrainResult,
    inbound_events_drain,
    inbound_events_drain_partition,
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
    drain_flag,
    drain_kick,
    fetch_enqueue,
    fetch_flag,
    fetch_kick,
    max_attempts,
    partition_for,
    partitions,
    retry_delay,
    worker_name,
)

__all__ = [
    "BatchAccepted", "DRAIN_FLAG", "DrainResult", "FetchResult", "MAX_WEBHOOK_BYTES", "WebhookAccepted", "batch_size",
    "channels_awaiting_fetch", "drain_enqueue", "drain_flag", "drain_kick", "events_accept", "fetch_enqueue",
    "fetch_flag", "fetch_kick", "inbound_events_drain", "inbound_events_drain_partition", "inbound_events_fetch",
    "inbound_events_reprocess", "inbound_events_sweep", "max_attempts", "oversell_incidents_resolve", "partition_for",
    "partitions", "retry_delay", "webhook_accept", "worker_name",
]
