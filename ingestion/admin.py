"""Admin: inbound events (read-only, raw body viewable, reprocess), incidents, drift, order
poll cursors (read-only).

Nothing here changes stock: reprocessing queues events for the drain, which applies them
through the stock services.
"""

from django.contrib import admin, messages
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin
from ingestion import services
from ingestion.models import ChannelPollCursor, InboundEvent, LevelDrift, OversellIncident


@admin.register(InboundEvent)
class InboundEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "channel", "source", "topic", "status", "attempts", "error_code", "received_at",
                    "processed_at")
    list_filter = ("status", "source", "channel", "topic", "error_code")
    search_fields = ("delivery_id", "dedup_key")
    list_select_related = ("channel",)
    date_hierarchy = "received_at"
    exclude = ("body",)
    readonly_fields = ("channel", "source", "dedup_key", "delivery_id", "topic", "status", "attempts",
                       "next_attempt_at", "error_code", "last_error", "received_at", "processed_at", "processed_by",
                       "headers", "raw_body", "payload", "fetched", "outcome")
    actions = ("reprocess",)

    @admin.display(description="raw body")
    def raw_body(self, obj):
        if obj.body is None:
            return "—"
        return format_html('<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>',
                           bytes(obj.body).decode("utf-8", "replace"))

    @admin.action(description="Reprocess selected events")
    def reprocess(self, request, queryset):
        queued = services.inbound_events_reprocess(ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{queued} event(s) queued for processing.", messages.SUCCESS)


@admin.register(OversellIncident)
class OversellIncidentAdmin(ReadOnlyAdmin):
    list_display = ("id", "channel", "sku", "location", "order_ref", "requested", "available_before", "applied",
                    "shortfall", "created_at", "resolved_at")
    list_filter = ("channel", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("order_ref", "sku__code")
    list_select_related = ("channel", "sku", "location")
    readonly_fields = [f.name for f in OversellIncident._meta.fields]
    actions = ("mark_resolved",)

    @admin.action(description="Mark selected incidents resolved")
    def mark_resolved(self, request, queryset):
        count = services.oversell_incidents_resolve(ids=list(queryset.values_list("pk", flat=True)),
                                                    note=f"resolved in admin by {request.user}")
        self.message_user(request, f"{count} incident(s) marked resolved.", messages.SUCCESS)


@admin.register(LevelDrift)
class LevelDriftAdmin(ReadOnlyAdmin):
    list_display = ("id", "channel", "sku", "location", "reported", "on_hand", "available", "reported_at",
                    "created_at")
    list_filter = ("channel",)
    search_fields = ("sku__code",)
    list_select_related = ("channel", "sku", "location")
    readonly_fields = [f.name for f in LevelDrift._meta.fields]


@admin.register(ChannelPollCursor)
class ChannelPollCursorAdmin(ReadOnlyAdmin):
    """Where each eBay/Amazon channel's order polling stands: cursor, window in progress, next
    due time, the last error and how many failures in a row (written only by ingestion.polling)."""

    list_display = ("channel", "cursor_at", "next_due_at", "last_run_at", "last_success_at", "consecutive_failures",
                    "last_error_short", "busy", "last_pages", "last_orders", "last_stored", "claimed_until")
    list_filter = ("busy", "channel__kind")
    list_select_related = ("channel",)
    search_fields = ("channel__slug",)
    readonly_fields = [f.name for f in ChannelPollCursor._meta.fields]

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else (obj.last_error or "—")
