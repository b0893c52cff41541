"""When ingestion work runs: the retry policy, and debounced wake-ups of the drain and of the
per-channel fetch runs, queued on commit (a lost wake-up is found by the beat sweep)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from channels.adapters import ADAPTERS
from core.backoff import backoff_delay
from ingestion.models import InboundEvent

logger = logging.getLogger(__name__)

DRAIN_FLAG = "ingestion:drain-queued"
DRAIN_FLAG_TTL = 30  # seconds; bounds the wait if a queued drain message is lost


def batch_size() -> int:
    return getattr(settings, "INGESTION_BATCH_SIZE", 100)


def max_attempts() -> int:
    return getattr(settings, "INGESTION_MAX_ATTEMPTS", 8)


def retry_delay(*, attempts: int) -> timedelta:
    """The shared backoff (core.backoff): up to 2 s, 4 s, 8 s ... capped at 10 minutes, never
    sooner than 1 s (so the next drain does not claim the event straight back)."""
    return timedelta(seconds=backoff_delay(attempt=attempts, base=2.0, cap=600.0, floor=1.0))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------------------------ scheduling


def drain_kick() -> None:
    """Ask for a drain once the current transaction commits, at most one queued at a time.

    The flag is cleared by the drain task *before* it claims, so an event committed after a
    drain's claim always finds the flag clear and queues a new drain (no lost wake-up).
    """
    transaction.on_commit(_kick, robust=True)


def _kick() -> None:
    try:
        if cache.add(DRAIN_FLAG, 1, timeout=DRAIN_FLAG_TTL):
            drain_enqueue()
    except Exception:  # Redis or broker down: the sweeper re-enqueues pending events
        logger.exception("could not queue an ingestion drain; the sweeper will")


def drain_enqueue() -> None:
    from ingestion.tasks import inbound_drain_task

    inbound_drain_task.apply_async()


# ------------------------------------------------------------------------------ fetch (thin webhooks)

FETCH_FLAG_TTL = 30  # seconds; bounds the wait if a queued fetch message is lost (the sweep also finds it)
# A refusal that says the channel itself is failing (counts toward its circuit), not this order.
FETCH_CHANNEL_FAILURES = {401, 403, 408}


def fetch_budget() -> float:
    return float(getattr(settings, "INGESTION_FETCH_BUDGET_SECONDS", 10.0))


def fetch_timeout() -> float:
    return float(getattr(settings, "INGESTION_FETCH_TIMEOUT_SECONDS", 5.0))


def awaiting_fetch() -> Q:
    """Webhook events of channels whose payloads are thin (BigCommerce) whose data is not fetched yet."""
    kinds = sorted(kind for kind, adapter in ADAPTERS.items() if hasattr(adapter, "needs_fetch"))
    return Q(source=InboundEvent.Source.WEBHOOK, fetched__isnull=True, channel__kind__in=kinds)


def awaiting_fetch_due(*, now: datetime | None = None) -> QuerySet[InboundEvent]:
    return InboundEvent.objects.filter(awaiting_fetch(), status=InboundEvent.Status.PENDING,
                                       next_attempt_at__lte=now or timezone.now())


def channels_awaiting_fetch() -> list[int]:
    """Channels with due events waiting for their data (the sweep wakes a fetch for each)."""
    return sorted(set(awaiting_fetch_due().order_by().values_list("channel_id", flat=True).distinct()))


def fetch_flag(*, channel_id: int) -> str:
    return f"ingestion:fetch-queued:{channel_id}"


def fetch_kick(*, channel_ids: Iterable[int]) -> None:
    """Ask for a fetch run per channel once the current transaction commits, at most one queued
    per channel (the task clears its flag before it selects events: no lost wake-up)."""
    transaction.on_commit(partial(fetch_kick_now, channel_ids=sorted(set(channel_ids))), robust=True)


def fetch_kick_now(*, channel_ids: list[int]) -> None:
    for channel_id in channel_ids:
        try:
            if cache.add(fetch_flag(channel_id=channel_id), 1, timeout=FETCH_FLAG_TTL):
                fetch_enqueue(channel_id=channel_id)
        except Exception:  # Redis or broker down: the sweeper re-enqueues
            logger.exception("could not queue an ingestion fetch for channel %s; the sweeper will", channel_id)


def fetch_enqueue(*, channel_id: int) -> None:
    from ingestion.tasks import inbound_fetch_task

    inbound_fetch_task.apply_async(args=[channel_id])
