"""The per-channel circuit breaker and channel health, written with each push outcome."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from channels.models import (
    Channel,
)
from channels.propagation.base import (
    PushReport,
    _Result,
    _Stop,
)

logger = logging.getLogger(__name__)


def _circuit_gate(channel: Channel, report: PushReport) -> bool:
    """Closed: go. Open and cooling down: stop (pairs wait, no attempt is burnt). Cool-down over:
    half-open, and the next request is the one probe that decides. Returns True for a probe."""
    if channel.circuit_state == Channel.Circuit.CLOSED:
        return False
    opened = channel.circuit_opened_at or timezone.now()
    reopen_at = opened + timedelta(seconds=channel.circuit_cooldown_seconds)
    now = timezone.now()
    if channel.circuit_state == Channel.Circuit.OPEN and now < reopen_at:
        report.wake_in = (reopen_at - now).total_seconds()
        raise _Stop
    if channel.circuit_state == Channel.Circuit.OPEN:
        Channel.objects.filter(pk=channel.pk, circuit_state=Channel.Circuit.OPEN).update(
            circuit_state=Channel.Circuit.HALF_OPEN)
        channel.circuit_state = Channel.Circuit.HALF_OPEN
    return True


def _circuit_open_now(channel_id: int) -> bool:
    return Channel.objects.filter(pk=channel_id, circuit_state=Channel.Circuit.OPEN).exists()



def _health(channel: Channel, result: _Result, now, *, probe: bool) -> None:
    """Channel health and the circuit breaker. A request the channel answered (even with per-item
    refusals) proves it is up; no answer, 5xx, 401/403 count toward opening the circuit."""
    if result.rate_limited:
        return
    if not result.channel_failed:
        Channel.objects.filter(pk=channel.pk).update(
            last_success_at=now, consecutive_failures=0, circuit_state=Channel.Circuit.CLOSED,
            circuit_opened_at=None, last_error=result.error[:2000])
        return
    Channel.objects.filter(pk=channel.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_failure_at=now, last_error=result.error[:2000])
    failures = Channel.objects.filter(pk=channel.pk).values_list("consecutive_failures", flat=True).first() or 0
    if probe or failures >= channel.circuit_failure_threshold:
        Channel.objects.filter(pk=channel.pk).update(circuit_state=Channel.Circuit.OPEN, circuit_opened_at=now)
        logger.warning("circuit open for channel %s after %s consecutive failures: %s", channel.slug, failures,
                       result.error)
