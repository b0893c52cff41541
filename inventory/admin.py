"""Admin for merchandisers and operations. Stock numbers are never edited as fields: the
"Adjust stock" form calls inventory.services, which locks, validates and writes the ledger."""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceAdmin
from core.errors import DomainError
from inventory import selectors, services
from inventory.catalog import sku_components_check
from inventory.models import BundleComponent, Location, Sku, StockMovement, StockPosition, StockSnapshot


class PositionInline(ReadOnlyInline):
    model = StockPosition
    fields = ("location", "on_hand", "reserved", "available", "version", "updated_at")
    readonly_fields = fields

    def get_queryset(self, request):
        # Each row is labelled "TEE-M at Warehouse" (StockPosition.__str__): one query, not two per row.
        return super().get_queryset(request).select_related("sku", "location")


class LatestMovementInline(ReadOnlyInline):
    model = StockMovement
    fields = ("id", "location", "type", "on_hand_delta", "reserved_delta", "on_hand_after", "reserved_after",
              "source", "reference", "recorded_at")
    readonly_fields = fields
    ordering = ("-id",)
    verbose_name_plural = "Latest movements (25)"
    template = "admin/inventory/movement_inline.html"  # rows labelled "receipt of SKU-1 at Warehouse"

    def get_queryset(self, request):
        qs = super().get_queryset(request).select_related("sku", "location").order_by("-id")
        # A sliced queryset cannot be filtered further by the admin; keep the newest 25 by id.
        ids = list(qs.values_list("id", flat=True)[:25])
        return qs.filter(id__in=ids)


class CatalogAdmin(ServiceAdmin):
    """Locations and SKUs are written by inventory.services, as through the API: `active` (and
    safety stock) are announced to channels and the waitlist, which a plain save() would skip.
    The code is the public identifier (API paths, channel payloads) and stays once created.
    Nothing is deleted here (the API has no delete either): deactivate instead, so channels and
    reservations hear of it; stock history refers to these rows."""

    def get_readonly_fields(self, request, obj=None):
        return ("code",) if obj is not None else ()

    actions = ["deactivate_selected", "activate_selected"]

    def has_delete_permission(self, request, obj=None):
        # No delete button, with or without history (ledger rows, snapshots, listings, events refer
        # to these rows, and the API has no delete): "Deactivate selected" instead, announced.
        return False

    def _set_active(self, request, queryset, active: bool) -> None:
        raise NotImplementedError

    @admin.action(description="Deactivate selected (channels stop selling them)")
    def deactivate_selected(self, request, queryset):
        self._set_active(request, queryset, False)

    @admin.action(description="Activate selected")
    def activate_selected(self, request, queryset):
        self._set_active(request, queryset, True)

    def _changed(self, form) -> dict:
        return {name: form.cleaned_data[name] for name in form.changed_data if name != "code"}

    def _adopt(self, obj, saved) -> None:
        """The admin logs and redirects with `obj`: make it the row the service wrote."""
        obj.pk = saved.pk
        obj._state.adding, obj._state.db = False, saved._state.db


@admin.register(Location)
class LocationAdmin(CatalogAdmin):
    list_display = ("code", "name", "kind", "priority", "active")
    list_filter = ("kind", "active")
    search_fields = ("code", "name")

    def _set_active(self, request, queryset, active: bool) -> None:
        rows = list(queryset.exclude(active=active).order_by("pk"))
        for location in rows:  # one transaction each, through the service (announced)
            services.location_update(location=location, active=active)
        self.message_user(request, f"{len(rows)} location(s) {'activated' if active else 'deactivated'}.",
                          messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        if change:
            # A fresh row: the form has already set the new values on `obj`, and location_update
            # compares `active` before and after to decide what to announce.
            services.location_update(location=Location.objects.get(pk=obj.pk), **self._changed(form))
        else:
            self._adopt(obj, services.location_create(code=obj.code, name=obj.name, kind=obj.kind,
                                                      active=obj.active, priority=obj.priority))


# One component as a merchandiser types it: "MUG x2", "MUG x 2", "MUG * 2", "MUG × 2", or "MUG"
# (one unit). An "x" needs a space before it, so a code that ends in x and digits ("BOX2",
# "FX2") is read as a code, never split.
_COMPONENT = re.compile(r"^(?P<code>\S.*?)(?:\s+[xX×*]\s*|\s*[*×]\s*)(?P<quantity>[0-9]+)$")


def components_parse(text: str) -> list[dict]:
    """The add form's "components" text as `sku_create` takes it: [{"sku", "quantity"}], in the
    order typed. Entries are separated by commas or new lines; empty ones are skipped. Raises
    forms.ValidationError for an entry that is no "CODE x N" (quantity 1..MAX_QUANTITY); every
    other refusal (unknown SKU, a bundle, the bundle itself, a repeat) is the service's."""
    parts: list[dict] = []
    for entry in re.split(r"[,\n]", text):
        entry = entry.strip()
        if not entry:
            continue
        match = _COMPONENT.match(entry)
        code, digits = (match["code"].strip(), match["quantity"]) if match else (entry, "1")
        quantity = int(digits) if len(digits) <= 10 else 0  # no int() of a thousand digits
        if not 1 <= quantity <= services.MAX_QUANTITY:
            raise forms.ValidationError(f"'{entry}': the quantity must be from 1 to {services.MAX_QUANTITY}.")
        parts.append({"sku": code, "quantity": quantity})
    return parts


class SkuAddForm(forms.ModelForm):
    """The SKU add form, with the bundle's components as one line of text ("MUG x2, TEA x1").
    Text rather than an inline formset: a merchandiser types codes they know, with no row per
    component to add, and components cannot be edited after creation anyway (there is no formset
    to show on the change page). Checked by the catalog service's own check before the admin
    saves, so its refusals are shown on this field and nothing is written."""

    components = forms.CharField(
        required=False, max_length=20_000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "placeholder": "MUG x2, TEA x1"}),
        help_text="Leave empty for a plain SKU. For a bundle (kit), its components: SKU code x units per bundle, "
                  "separated by commas or new lines (a code alone is one unit). Set once: components cannot be "
                  "changed after the bundle is created.")

    class Meta:
        model = Sku
        fields = ("code", "name", "components", "safety_stock", "active", "lead_time_days", "reorder_point",
                  "dynamic_safety_stock")

    def clean_components(self) -> list[dict]:
        return components_parse(self.cleaned_data.get("components") or "")

    def clean(self):
        cleaned = super().clean()
        components, code = cleaned.get("components"), cleaned.get("code")
        if components and code:
            try:
                # The very check sku_create runs first (read-only): unknown component (404),
                # itself, a bundle, a repeat, too many (400). Shown here, with what was typed kept,
                # instead of after the save as a message.
                sku_components_check(code, components)
            except DomainError as exc:
                self.add_error("components", f"{exc.code}: {exc.detail}")
        return cleaned


@admin.register(Sku)
class SkuAdmin(CatalogAdmin):
    """Plain SKUs and bundles. A bundle is created here with its components (add form) through
    `sku_create`; its page then shows them, read-only (they never change), and its availability
    per location, derived from the components as GET /api/v1/stock/{sku}/ answers it."""

    list_display = ("code", "name", "is_bundle", "safety_stock", "reorder_point", "lead_time_days", "active",
                    "updated_at")
    list_filter = ("active", "is_bundle")
    search_fields = ("code", "name")
    inlines = [PositionInline, LatestMovementInline]
    add_fields = SkuAddForm.Meta.fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = SkuAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(self.add_fields)
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("code", "components_display", "availability_display") if obj.is_bundle else ("code", "bundles_display")

    def get_inlines(self, request, obj):
        # A bundle has no positions and no ledger rows of its own (they are its components').
        return [] if obj is not None and obj.is_bundle else self.inlines

    @admin.display(description="components")
    def components_display(self, obj):
        parts = BundleComponent.objects.filter(bundle=obj).select_related("component").order_by("component_id")
        items = format_html_join(
            "", '<li>{} &times; <a href="{}">{}</a> <span class="quiet">{}</span></li>',
            ((part.quantity, reverse("admin:inventory_sku_change", args=[part.component_id]), part.component.code,
              part.component.name) for part in parts))
        return format_html('<ul id="bundle-components" class="bundle-components">{}</ul>'
                           '<div class="help">Units of each component in one bundle. Set when the bundle was '
                           'created; create a new bundle to change them.</div>', items)

    @admin.display(description="availability (from components)")
    def availability_display(self, obj):
        stock = selectors.stock_get(sku_code=obj.code)
        if not stock["locations"]:
            return format_html('<p id="bundle-availability">{}</p>', "No component is stocked anywhere yet: 0.")
        rows = format_html_join(
            "", '<tr data-location="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            ((row["location"], row["location"], row["on_hand"], row["reserved"], row["available"])
             for row in stock["locations"]))
        return format_html(
            '<table id="bundle-availability"><thead><tr><th>location</th><th>on hand</th><th>reserved</th>'
            '<th>available</th></tr></thead><tbody>{}</tbody><tfoot><tr data-location="total"><th>total</th>'
            '<th>{}</th><th>{}</th><th>{}</th></tr></tfoot></table>'
            '<div class="help">Whole bundles the components make at each location (the scarcest component, '
            'per unit of the bundle); reserved: bundles whose component units are held.</div>',
            rows, stock["on_hand"], stock["reserved"], stock["available"])

    @admin.display(description="in bundles")
    def bundles_display(self, obj):
        parts = BundleComponent.objects.filter(component=obj).select_related("bundle").order_by("bundle__code")
        links = format_html_join(", ", '<a href="{}">{}</a> ({} per bundle)',
                                 ((reverse("admin:inventory_sku_change", args=[part.bundle_id]), part.bundle.code,
                                   part.quantity) for part in parts))
        return links or "-"

    def save_model(self, request, obj, form, change):
        if change:
            services.sku_update(sku=Sku.objects.get(pk=obj.pk), **self._changed(form))
        else:
            self._adopt(obj, services.sku_create(
                code=obj.code, name=obj.name, safety_stock=obj.safety_stock, active=obj.active,
                lead_time_days=obj.lead_time_days, reorder_point=obj.reorder_point,
                dynamic_safety_stock=obj.dynamic_safety_stock, components=form.cleaned_data.get("components") or None))

    def _set_active(self, request, queryset, active: bool) -> None:
        rows = list(queryset.exclude(active=active).order_by("pk"))
        for sku in rows:  # one transaction each, through the service (re-pushes the channels)
            services.sku_update(sku=sku, active=active)
        self.message_user(request, f"{len(rows)} SKU(s) {'activated' if active else 'deactivated'}.",
                          messages.SUCCESS)


class AdjustStockForm(forms.Form):
    type = forms.ChoiceField(choices=[(t, t) for t in services.ADJUSTMENT_TYPES])
    quantity = forms.IntegerField(help_text="Signed for 'adjustment', absolute for 'count', > 0 otherwise.")
    to_location = forms.ModelChoiceField(Location.objects.filter(active=True), required=False,
                                         to_field_name="code", help_text="Transfers only.")
    reference = forms.CharField(max_length=200, required=False)


@admin.register(StockPosition)
class StockPositionAdmin(admin.ModelAdmin):
    list_display = ("sku", "location", "on_hand", "reserved", "available_display", "version", "updated_at",
                    "adjust_link")
    list_filter = ("location",)
    search_fields = ("sku__code", "sku__name")
    list_select_related = ("sku", "location")
    readonly_fields = ("sku", "location", "on_hand", "reserved", "version", "updated_at")

    @admin.display(description="available")
    def available_display(self, obj):
        return obj.available

    @admin.display(description="")
    def adjust_link(self, obj):
        url = reverse("admin:inventory_stockposition_adjust", args=[obj.pk])
        return format_html('<a href="{}">Adjust stock</a>', url)

    def has_add_permission(self, request):
        return False  # positions appear with their first movement

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        custom = [path("<int:pk>/adjust/", self.admin_site.admin_view(self.adjust_view),
                       name="inventory_stockposition_adjust")]
        return custom + super().get_urls()

    def adjust_view(self, request, pk):
        if not self.has_change_permission(request):
            raise PermissionDenied
        position = get_object_or_404(StockPosition.objects.select_related("sku", "location"), pk=pk)
        form = AdjustStockForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                services.stock_adjust(
                    sku=position.sku, location=position.location, type=data["type"],
                    quantity=data["quantity"], to_location=data["to_location"],
                    context=services.MovementContext(
                        source="admin", reference=data["reference"], actor=f"admin:{request.user.username}"),
                )
            except DomainError as exc:
                form.add_error(None, f"{exc.code}: {exc.detail}")
            else:
                self.message_user(request, f"{data['type']} of {data['quantity']} applied.", messages.SUCCESS)
                return redirect("admin:inventory_stockposition_changelist")
        context = {**self.admin_site.each_context(request), "title": f"Adjust stock: {position}",
                   "position": position, "form": form, "opts": self.model._meta}
        return render(request, "admin/inventory/adjust_stock.html", context)


@admin.register(StockMovement)
class StockMovementAdmin(ReadOnlyAdmin):
    """The ledger: readable by those allowed, never added, changed or deleted by anyone."""

    list_display = ("id", "sku", "location", "type", "on_hand_delta", "reserved_delta", "on_hand_after",
                    "reserved_after", "source", "reference", "reservation_link", "occurred_at", "recorded_at")
    list_filter = ("type", "source", "location")
    search_fields = ("sku__code", "reference", "event_key")
    list_select_related = ("sku", "location")
    date_hierarchy = "recorded_at"

    @admin.display(description="reservation")
    def reservation_link(self, obj):
        if not getattr(obj, "reservation_id", None):
            return "-"
        url = reverse("admin:reservations_reservation_change", args=[obj.reservation_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.reservation_id)[:8])


@admin.register(StockSnapshot)
class StockSnapshotAdmin(StockMovementAdmin):
    list_display = ("taken_at", "position", "on_hand", "reserved", "version", "last_movement_id")
    list_filter = ()
    search_fields = ("position__sku__code",)
    list_select_related = ("position__sku", "position__location")
    date_hierarchy = "taken_at"
