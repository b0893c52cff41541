"""Reads of inbound events and incidents (no locks)."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from channels.models import Channel
from core.errors import NotFound, ValidationFailed
from core.jsonsafe import text_problem
from ingestion.models import InboundEvent, OversellIncident


def _filter_check(**filters: str | None) -> None:
    """Filters are compared with text columns: PostgreSQL refuses NUL there (a 500), so refuse it."""
    for name, value in filters.items():
        if value and (problem := text_problem(value)):
            raise ValidationFailed(f"The {name} filter {problem}.", code="validation_error")


def channel_for_webhook(*, slug: str) -> Channel | None:
    """The channel a webhook URL names, or None (unknown or inactive: 404)."""
    return Channel.objects.filter(slug=slug, active=True).first()


def inbound_events_list(*, status: str | None = None, channel_slug: str | None = None, source: str | None = None,
                        topic: str | None = None, error_code: str | None = None) -> QuerySet[InboundEvent]:
    """Inbound events, newest first, optionally filtered (the raw body is deferred)."""
    _filter_check(status=status, channel=channel_slug, source=source, topic=topic, error=error_code)
    qs = InboundEvent.objects.select_related("channel").defer("body").order_by("-id")
    if status:
        if status not in InboundEvent.Status.values:
            raise ValidationFailed(f"status must be one of: {', '.join(InboundEvent.Status.values)}.",
                                   code="invalid_status")
        qs = qs.filter(status=status)
    if channel_slug:
        qs = qs.filter(channel__slug=channel_slug)
    if source:
        qs = qs.filter(source=source)
    if topic:
        qs = qs.filter(topic=topic)
    if error_code:
        qs = qs.filter(error_code=error_code)
    return qs


def inbound_event_get(*, pk: int) -> InboundEvent:
    event = InboundEvent.objects.select_related("channel").filter(pk=pk).first()
    if event is None:
        raise NotFound(f"No inbound event {pk}.", code="event_not_found")
    return event


def inbound_event_counts() -> dict[str, int]:
    """Events by status (operations dashboards, the benchmark)."""
    counts = dict(InboundEvent.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {status: counts.get(status, 0) for status in InboundEvent.Status.values}


def oversell_incidents_list(*, channel_slug: str | None = None, sku_code: str | None = None,
                            open_only: bool = False) -> QuerySet[OversellIncident]:
    _filter_check(channel=channel_slug, sku=sku_code)
    qs = OversellIncident.objects.select_related("channel", "sku", "location").order_by("-id")
    if channel_slug:
        qs = qs.filter(channel__slug=channel_slug)
    if sku_code:
        qs = qs.filter(sku__code=sku_code)
    if open_only:
        qs = qs.filter(resolved_at__isnull=True)
    return qs
