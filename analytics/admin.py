"""Read-only admin for analytics: the safety-stock history a merchandiser reads (inputs and
result of each daily change), the daily sales behind velocities, and the jobs' marks."""

from __future__ import annotations

from django.contrib import admin, messages

from analytics.alerts import alert_deliveries_retry
from analytics.models import Alert, AlertDelivery, AlertSubscription, DailySales, JobMark, SafetyStockChange
from core.admin import ReadOnlyAdmin


@admin.register(SafetyStockChange)
class SafetyStockChangeAdmin(ReadOnlyAdmin):
    list_display = ("sku", "day", "old_safety_stock", "new_safety_stock", "sigma_display", "mean_display", "z",
                    "lead_time_days", "demand_days", "computed_at")
    list_filter = ("day",)
    search_fields = ("sku__code", "sku__name")
    list_select_related = ("sku",)
    date_hierarchy = "computed_at"

    @admin.display(description="sigma (units/day)")
    def sigma_display(self, obj):
        return f"{obj.sigma:.3f}"

    @admin.display(description="mean (units/day)")
    def mean_display(self, obj):
        return f"{obj.mean:.3f}"


@admin.register(DailySales)
class DailySalesAdmin(ReadOnlyAdmin):
    list_display = ("sku", "day", "units", "refreshed_at")
    search_fields = ("sku__code",)
    list_select_related = ("sku",)
    date_hierarchy = "day"


@admin.register(JobMark)
class JobMarkAdmin(ReadOnlyAdmin):
    list_display = ("name", "cutoff", "day", "ran_at", "detail")


# ------------------------------------------------------------------------------------------ alerts


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("kind", "sku", "location", "status", "opened_at", "resolved_at", "detail")
    list_filter = ("status", "kind")
    search_fields = ("sku__code",)
    list_select_related = ("sku", "location")
    date_hierarchy = "opened_at"


@admin.register(AlertSubscription)
class AlertSubscriptionAdmin(admin.ModelAdmin):
    """Subscriptions are made through the API (the secret is write-only); the admin lists and
    removes them, never showing the secret."""

    list_display = ("id", "url", "kinds", "created_at")
    exclude = ("secret",)
    readonly_fields = ("url", "kinds", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("msg_id", "target", "subscription", "alert", "status", "attempts", "next_attempt_at",
                    "last_error", "delivered_at")
    list_filter = ("status", "target")
    list_select_related = ("subscription", "alert__sku", "alert__location")
    actions = ["retry_selected"]

    @admin.action(description="Retry selected (dead letters and failing deliveries)")
    def retry_selected(self, request, queryset):
        count = alert_deliveries_retry(ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} deliveries queued again.", messages.SUCCESS)
