"""When ingestion work runs: the retry policy, and debounced wake-ups of the drain and of the
per-channel fetch runs, queued on commit (a lost wake-up is found by the beat sweep)."""

from __future__ import annotations

import logging
import os
import socket
import time
import zlib
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


def drain_linger() -> float:
    """Seconds between a running drain's claims while its batches are short (INGESTION_DRAIN_LINGER_MS)."""
    return max(0, int(getattr(settings, "INGESTION_DRAIN_LINGER_MS", 50))) / 1000


def max_attempts() -> int:
    return getattr(settings, "INGESTION_MAX_ATTEMPTS", 8)


def retry_delay(*, attempts: int) -> timedelta:
    """The shared backoff (core.backoff): up to 2 s, 4 s, 8 s ... capped at 10 minutes, never
    sooner than 1 s (so the next drain does not claim the event straight back)."""
    return timedelta(seconds=backoff_delay(attempt=attempts, base=2.0, cap=600.0, floor=1.0))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------------------------ scheduling


def partitions() -> int:
    """How many drain partitions (INGESTION_PARTITIONS): one drain at a time applies each, so this
    bounds how many drains run in parallel, on any number of worker hosts."""
    return max(1, int(getattr(settings, "INGESTION_PARTITIONS", 4)))


# Where a marketplace payload names its order (refunds name it as order_id, beside their own id).
_ORDER_KEYS = ("order_id", "orderId", "AmazonOrderId", "id")


def partition_for(*, source: str, channel_id: int | None, payload: object, delivery_id: str) -> int:
    """A stable hash onto the partitions: a canonical event by its SKU, a marketplace delivery by
    the order it is about (its sale, cancellation and refunds are then applied in the order they
    were received, by one drain), anything else by its delivery id."""
    count = partitions()
    if count == 1:
        return 0  # the default: no key to build (it was ~4 % of a webhook ack's own CPU)
    key = f"delivery:{delivery_id}"
    if isinstance(payload, dict):
        if source == InboundEvent.Source.API and isinstance(payload.get("sku"), str):
            key = f"sku:{payload['sku']}"
        else:
            for found in (payload, payload.get("Order"), payload.get("data")):
                ref = next((found[k] for k in _ORDER_KEYS if isinstance(found, dict) and found.get(k) is not None),
                           None)
                if ref is not None:
                    key = f"order:{channel_id}:{ref}"
                    break
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % count


def drain_flag(partition: int) -> str:
    return f"{DRAIN_FLAG}:{partition}"


def drain_kick(*, only: Iterable[int] | None = None) -> None:
    """Ask for a drain of each partition once the current transaction commits, at most one queued
    per partition (all partitions when none are named).

    A partition's flag is cleared by its drain task *before* it claims, so an event committed
    after a drain's claim always finds the flag clear and queues a new drain (no lost wake-up).
    """
    chosen = sorted(set(only)) if only is not None else list(range(partitions()))
    transaction.on_commit(partial(_kick, chosen), robust=True)


def kick_quiet() -> float:
    """Seconds a process asks Redis no more about a partition's flag after it last did
    (INGESTION_KICK_QUIET_MS); a drain that clears the flag claims once more after this long."""
    return max(0, int(getattr(settings, "INGESTION_KICK_QUIET_MS", 100))) / 1000


# Per partition, until when this process sends no wake-up (monotonic seconds). Why it loses none:
# the flag was set when Redis answered, after `asked`; the drain that clears it later claims once
# more at least kick_quiet() after its clear (inbound_events_drain_partition), so that claim starts
# after this window ends and sees every event committed before a wake-up was skipped in it. The
# Redis call was a fifth of a webhook ack's own CPU, one per ack.
_quiet_until: dict[int, float] = {}


def _kick(chosen: list[int]) -> None:
    quiet = kick_quiet()
    for partition in chosen:
        asked = time.monotonic()
        if asked < _quiet_until.get(partition, 0.0):
            continue
        try:
            if cache.add(drain_flag(partition), 1, timeout=DRAIN_FLAG_TTL):
                drain_enqueue(partition=partition)
            if quiet:
                _quiet_until[partition] = asked + quiet  # set now, by this add or another's
        except Exception:  # Redis or broker down: the sweeper re-enqueues pending events
            logger.exception("could not queue an ingestion drain; the sweeper will")


def drain_enqueue(*, partition: int | None = None, countdown: float | None = None) -> None:
    """Queue a drain of one partition (all partitions, one task each, when None). With
    INGESTION_PARTITION_QUEUES on, partition p goes to the Celery queue `ingestion-p` (workers
    subscribe with -Q); otherwise every drain shares the default queue and any worker takes it."""
    from ingestion.tasks import inbound_drain_task

    for p in ([partition] if partition is not None else range(partitions())):
        options: dict[str, object] = {"args": [p]}
        if countdown:
            options["countdown"] = countdown
        if getattr(settings, "INGESTION_PARTITION_QUEUES", False):
            options["queue"] = f"ingestion-{p}"
        inbound_drain_task.apply_async(**options)


# ------------------------------------------------------------------------------ fetch (thin webhooks)

FETCH_FLAG_TTL = 30  # seconds; bounds the wait if a queued fetch message is lost (the sweep also finds it)
# A refusal that says the channel itself is failing (counts toward its circuit), not this order.
FETCH_CHANNEL_FAILURES = {401, 403, 408}


def fetch_budget() -> float:
    return float(getattr(settings, "INGESTION_FETCH_BUDGET_SECONDS", 10.0))


def fetch_timeout() -> float:
    return float(getattr(settings, "INGESTION_FETCH_TIMEOUT_SECONDS", 5.0))


def thin_webhook_kinds() -> list[str]:
    """Channel kinds whose webhooks are thin: their data is fetched before the drain applies them."""
    return sorted(kind for kind, adapter in ADAPTERS.items() if hasattr(adapter, "needs_fetch"))


def awaiting_fetch() -> Q:
    """Webhook events of channels whose payloads are thin (BigCommerce) whose data is not fetched yet."""
    kinds = thin_webhook_kinds()
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
