"""Reconciliation: read what channels show where their API allows, record drift, re-push it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from channels.adapters import adapter_for
from channels.adapters.base import ChannelAdapter, PushItem
from channels.models import (
    Channel,
    ChannelDrift,
    ChannelListing,
    ChannelSkuState,
    DirtyPair,
    PushAttempt,
)
from channels.propagation.base import (
    MAX_INLINE_WAIT,
    PushReport,
    _session,
    _Stop,
)
from channels.propagation.outbox import (
    channels_wake_on_commit,
    pairs_mark_dirty,
)
from channels.propagation.push import (
    _wait_for_token,
)
from channels.propagation.quantity import channel_quantities

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ reconciliation


@dataclass
class ReconcileReport:
    supported: bool = True
    checked: int = 0
    drifted: int = 0
    errors: int = 0


def channel_reconcile(*, channel_id: int) -> ReconcileReport:
    """Read what the channel shows (where its API allows), compare with what it should show,
    record drift and re-push those pairs (forced: their last pushed value no longer matters).
    Pairs already dirty are left to the regular push (their level is in flux)."""
    report = ReconcileReport()
    channel = Channel.objects.filter(pk=channel_id, active=True, push_enabled=True).first()
    if channel is None:
        return report
    adapter = adapter_for(channel)
    if type(adapter).fetch_levels is ChannelAdapter.fetch_levels:  # the API offers no read-back
        report.supported = False
        return report
    listings = list(ChannelListing.objects.filter(channel=channel).select_related("sku").order_by("id"))
    dirty = set(DirtyPair.objects.filter(channel=channel).values_list("sku_id", flat=True))
    listings = [lst for lst in listings if lst.sku_id not in dirty]
    size = getattr(adapter, "fetch_batch", adapter.max_batch)
    drifted: list[int] = []
    for i in range(0, len(listings), size):
        chunk = listings[i:i + size]
        expected = channel_quantities(channel=channel, sku_ids=[lst.sku_id for lst in chunk])
        items = [PushItem(sku=lst.sku.code, external_id=lst.external_id, quantity=expected[lst.sku_id],
                          attributes=lst.attributes or {}) for lst in chunk]
        report_stub = PushReport()
        try:
            _wait_for_token(channel, report_stub)
        except _Stop:
            time.sleep(min(report_stub.wake_in or 0, MAX_INLINE_WAIT))
        started, t0 = timezone.now(), time.perf_counter()
        try:
            levels = adapter.fetch_levels(channel, _session(), items) or {}
            error, status = "", 200
        except Exception as exc:
            levels, error = {}, f"{type(exc).__name__}: {exc}"[:500]
            status = getattr(getattr(exc, "response", None), "status_code", None)
            report.errors += 1
        now = timezone.now()
        PushAttempt.objects.create(
            channel=channel, purpose=PushAttempt.Purpose.RECONCILE, started_at=started,
            latency_ms=round((time.perf_counter() - t0) * 1000, 2), http_status=status,
            outcome=PushAttempt.Outcome.FAILED if error else PushAttempt.Outcome.SUCCESS, sku_count=len(chunk),
            error=error, items=[{"sku": it.sku, "expected": it.quantity, "seen": levels.get(it.sku)} for it in items])
        for lst in chunk:
            seen = levels.get(lst.sku.code)
            if seen is None:
                continue
            report.checked += 1
            ChannelSkuState.objects.update_or_create(channel=channel, sku_id=lst.sku_id,
                                                     defaults={"last_seen": seen, "last_seen_at": now})
            if seen != expected[lst.sku_id]:
                ChannelDrift.objects.create(channel=channel, sku_id=lst.sku_id, expected=expected[lst.sku_id],
                                            actual=seen)
                drifted.append(lst.sku_id)
    if drifted:
        report.drifted = len(drifted)
        logger.warning("reconciliation: channel %s shows %s SKU(s) off; re-pushing", channel.slug, len(drifted))
        with transaction.atomic():
            marked = pairs_mark_dirty(sku_ids=drifted, channel_ids=[channel.pk], force=True)
            channels_wake_on_commit(marked)
    return report


def channels_for_reconciliation() -> list[int]:
    return list(Channel.objects.filter(active=True, push_enabled=True).values_list("id", flat=True))


def push_attempts_prune(*, older_than_days: int = 30) -> int:
    """Drop audit rows past retention (the audit is for investigating recent incidents)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = PushAttempt.objects.filter(started_at__lt=cutoff).delete()
    return deleted
