"""Admin for operations: find reservations, see their lines and ledger rows, release or extend
them. Every change goes through reservations.services (locks, ledger, waitlist); nothing here
edits a status or a quantity as a field."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin, ReadOnlyInline
from core.errors import DomainError
from inventory.models import StockMovement
from inventory.services import MovementContext
from reservations import services
from reservations.models import Reservation, ReservationLine, WaitlistEntry


class ExpiringSoonFilter(admin.SimpleListFilter):
    title = "expiring"
    parameter_name = "expiring"

    def lookups(self, request, model_admin):
        return [("5m", "within 5 minutes"), ("overdue", "overdue (sweep pending)")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "5m":
            return queryset.filter(status=Reservation.Status.ACTIVE, expires_at__gt=now,
                                   expires_at__lte=now + timedelta(minutes=5))
        if self.value() == "overdue":
            return queryset.filter(status=Reservation.Status.ACTIVE, expires_at__lte=now)
        return queryset


class LineInline(ReadOnlyInline):
    model = ReservationLine
    fields = ("sku", "location", "quantity")
    readonly_fields = fields


class MovementInline(ReadOnlyInline):
    model = StockMovement
    fields = ("ledger_link", "type", "sku", "location", "on_hand_delta", "reserved_delta", "source", "actor",
              "recorded_at")
    readonly_fields = fields
    verbose_name_plural = "Ledger rows"

    @admin.display(description="id")
    def ledger_link(self, obj):
        return format_html('<a href="{}">#{}</a>', reverse("admin:inventory_stockmovement_change", args=[obj.pk]),
                           obj.pk)


class ExtendForm(forms.Form):
    ttl_seconds = forms.IntegerField(min_value=1, initial=900, help_text="New deadline: now + this many seconds.")


def _admin_context(request) -> MovementContext:
    return MovementContext(source="admin", actor=f"admin:{request.user.username}")


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "channel", "order_ref", "expires_at", "created_by", "created_at")
    list_filter = ("status", "channel", ExpiringSoonFilter)
    search_fields = ("=id", "order_ref", "lines__sku__code")
    list_select_related = ("channel", "created_by")
    date_hierarchy = "created_at"
    readonly_fields = ("id", "status", "channel", "order_ref", "ttl_seconds", "expires_at", "created_by",
                       "created_at", "updated_at", "activated_at", "closed_at", "closed_by")
    inlines = [LineInline, MovementInline]
    actions = ["release_selected", "extend_selected"]

    def has_add_permission(self, request):
        return False  # created by checkouts through the API (stock checks, idempotency)

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger points at reservations; history is kept

    @admin.action(description="Release selected reservations (stock becomes available)")
    def release_selected(self, request, queryset):
        done, failed = 0, []
        for reservation_id in queryset.values_list("pk", flat=True):
            try:
                services.reservation_release(reservation_id=reservation_id, context=_admin_context(request))
                done += 1
            except DomainError as exc:
                failed.append(f"{reservation_id}: {exc.detail}")
        self._report(request, "released", done, failed)

    @admin.action(description="Extend selected reservations")
    def extend_selected(self, request, queryset):
        form = ExtendForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, failed = 0, []
            for reservation_id in queryset.values_list("pk", flat=True):
                try:
                    services.reservation_extend(reservation_id=reservation_id,
                                                ttl_seconds=form.cleaned_data["ttl_seconds"],
                                                context=_admin_context(request))
                    done += 1
                except DomainError as exc:
                    failed.append(f"{reservation_id}: {exc.detail}")
            self._report(request, "extended", done, failed)
            return None
        context = {**self.admin_site.each_context(request), "title": "Extend reservations", "form": form,
                   "reservations": queryset, "opts": self.model._meta,
                   "action_checkbox_name": ACTION_CHECKBOX_NAME}
        return render(request, "admin/reservations/extend.html", context)

    def _report(self, request, verb: str, done: int, failed: list[str]) -> None:
        if done:
            self.message_user(request, f"{done} reservation(s) {verb}.", messages.SUCCESS)
        for line in failed:
            self.message_user(request, line, messages.ERROR)


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(ReadOnlyAdmin):
    """The backorder queue, read-only: leave it by releasing the reservation."""

    list_display = ("id", "sku", "reservation", "created_at")
    search_fields = ("sku__code", "=reservation__id")
    list_select_related = ("sku", "reservation")
