from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.template.response import TemplateResponse
from django.utils import timezone

from channels.models import (
    Channel,
    ChannelDrift,
    ChannelListing,
    ChannelSkuState,
    DeadLetter,
    DirtyPair,
    PendingFeed,
    PushAttempt,
    RevisionBudget,
)
from channels.services import channel_create, channel_update, listing_delete, listing_update, listing_upsert
from core.admin import ReadOnlyAdmin, ServiceAdmin


class ChannelAdminForm(forms.ModelForm):
    """Secrets are write-only here too: the form never renders the stored value; leaving the
    field empty keeps it."""

    new_webhook_secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                                         help_text="Leave empty to keep the current secret.")
    new_credentials = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                      help_text="JSON object; leave empty to keep the current credentials.")

    class Meta:
        model = Channel
        fields = ("slug", "name", "kind", "base_url", "default_location", "locations", "authoritative_locations",
                  "push_enabled", "buffer_type", "buffer_value", "zero_below", "max_quantity",
                  "rate_limit_per_second", "rate_limit_burst", "retry_max_attempts", "retry_base_delay",
                  "retry_max_delay", "circuit_failure_threshold", "circuit_cooldown_seconds", "settings", "active")

    def save(self, commit=True):
        if self.cleaned_data.get("new_webhook_secret"):
            self.instance.webhook_secret = self.cleaned_data["new_webhook_secret"]
        if self.cleaned_data.get("new_credentials"):
            self.instance.credentials = self.cleaned_data["new_credentials"]
        return super().save(commit)


# Admin form fields -> the API's shape that channels.services takes. The nested objects matter:
# channel_update decides from them what to re-push (a buffer change re-pushes, a name does not).
_NESTED_FIELDS = {
    "buffer_type": ("buffer", "type"), "buffer_value": ("buffer", "value"),
    "retry_max_attempts": ("retry", "max_attempts"), "retry_base_delay": ("retry", "base_delay"),
    "retry_max_delay": ("retry", "max_delay"),
    "circuit_failure_threshold": ("circuit", "failure_threshold"),
    "circuit_cooldown_seconds": ("circuit", "cooldown_seconds"),
}
_SECRET_FIELDS = {"new_webhook_secret": "webhook_secret", "new_credentials": "credentials"}
_LISTING_FIELDS = ("sku", "external_id", "attributes")


def _channel_data(form, names) -> dict:
    """The service's keyword arguments for the form fields `names`; an empty secret field keeps
    the stored secret (it is never shown, so empty means "unchanged")."""
    data: dict = {}
    for name in names:
        value = form.cleaned_data.get(name)
        if name in _SECRET_FIELDS:
            if value:
                data[_SECRET_FIELDS[name]] = value
        elif name in _NESTED_FIELDS:
            key, sub = _NESTED_FIELDS[name]
            data.setdefault(key, {})[sub] = value
        elif name != "slug" or not form.instance.pk:
            data[name] = value
    return data


def _listing_changes(form) -> dict:
    return {name: form.cleaned_data[name] for name in form.changed_data if name in _LISTING_FIELDS}


class ListingInline(admin.TabularInline):
    model = ChannelListing
    extra = 0
    autocomplete_fields = ("sku",)
    fields = ("sku", "external_id", "attributes")


@admin.register(Channel)
class ChannelAdmin(ServiceAdmin):
    """Every write calls channels.services, as the API does: a change of buffer, channel rules
    (`zero_below`, `max_quantity`), locations, enabling or connection re-pushes the listings
    through the outbox, and listings added, remapped or removed in the inline are pushed (or
    dropped) like listings posted to the API. Channels are deactivated, not deleted (the API has
    no delete; events and the push audit refer to them)."""

    form = ChannelAdminForm
    list_display = ("slug", "name", "kind", "push_enabled", "active", "circuit_state", "consecutive_failures",
                    "last_success_at", "backlog", "open_dead_letters", "last_error_short")
    list_filter = ("kind", "active", "circuit_state")
    search_fields = ("slug", "name")
    readonly_fields = ("last_success_at", "last_failure_at", "last_error", "consecutive_failures", "circuit_state",
                       "circuit_opened_at", "revision_budget", "created_at", "updated_at")
    filter_horizontal = ("locations", "authoritative_locations")
    inlines = [ListingInline]
    actions = ["resync_selected"]

    def get_queryset(self, request):
        # Health counts in the same query as the list (no query per row).
        from channels.selectors import channels_with_health

        return channels_with_health()

    @admin.display(description="backlog", ordering="backlog_count")
    def backlog(self, obj):
        return getattr(obj, "backlog_count", None)

    @admin.display(description="dead letters", ordering="dead_letter_count")
    def open_dead_letters(self, obj):
        return getattr(obj, "dead_letter_count", None)

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return (obj.last_error or "")[:80]

    @admin.display(description="revision budget (eBay, today)")
    def revision_budget(self, obj):
        """What is left of the day's revisions per listing and what waits for it (detail page only)."""
        from channels.selectors import channels_revision_budgets

        budget = channels_revision_budgets(channels=[obj]).get(obj.pk) if obj and obj.pk else None
        if budget is None:
            return "-"
        release = budget["next_release_at"]
        return (f"{budget['day']}: {budget['remaining']} of {budget['per_listing']} x {budget['listings']} listing(s) "
                f"left ({budget['used']} used, {budget['reserve_used']} from the reserve of {budget['reserve']}); "
                f"{budget['listings_on_reserve']} listing(s) on the reserve, {budget['listings_spent']} spent; "
                f"{budget['held_back']} push(es) held back" + (f", first due {release:%Y-%m-%d %H:%M} UTC" if release
                                                               else ""))

    def get_readonly_fields(self, request, obj=None):
        # The slug is the public identifier (API paths, webhook URLs): kept once created.
        return (*self.readonly_fields, "slug") if obj is not None else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            channel_update(channel=Channel.objects.get(pk=obj.pk), **_channel_data(form, form.changed_data))
        else:
            saved = channel_create(**_channel_data(form, form.fields))
            # The inline formsets were built around `obj`: make it the row the service wrote.
            obj.pk = saved.pk
            obj._state.adding, obj._state.db = False, saved._state.db

    def save_related(self, request, form, formsets, change):
        # No form.save_m2m(): `locations` and `authoritative_locations` were written by the
        # service (which re-pushes when they change); listings go through save_formset.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(self, request, form, formset, change):
        if formset.model is not ChannelListing:
            return super().save_formset(request, form, formset, change)
        listings_save(formset, channel=form.instance)
        return None

    @admin.action(description="Re-push every listing of the selected channels")
    def resync_selected(self, request, queryset):
        from channels.propagation import channel_mark_all

        with transaction.atomic():
            total = sum(channel_mark_all(channel=channel, force=True) for channel in queryset)
        self.message_user(request, f"{total} listing(s) queued for a push.", messages.SUCCESS)


def listings_save(formset, *, channel: Channel) -> None:
    """Apply a listing inline formset through channels.services (what formset.save() would write
    directly), and fill in what the admin's change message reads from a saved formset."""
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
    for form in formset.deleted_forms:
        if form.instance.pk is not None:
            listing_delete(listing=ChannelListing.objects.get(pk=form.instance.pk))
            formset.deleted_objects.append(form.instance)
    deleted = set(formset.deleted_forms)
    for form in formset.initial_forms:
        if form not in deleted and (changes := _listing_changes(form)):
            listing = listing_update(listing=ChannelListing.objects.get(pk=form.instance.pk), **changes)
            formset.changed_objects.append((listing, list(changes)))
    for form in formset.extra_forms:
        if form not in deleted and form.has_changed():
            data = form.cleaned_data
            listing, _created = listing_upsert(channel=channel, sku=data["sku"], external_id=data["external_id"],
                                               attributes=data.get("attributes") or {})
            form.instance = listing
            formset.new_objects.append(listing)


@admin.register(ChannelListing)
class ChannelListingAdmin(ServiceAdmin):
    """Listings are mapped, remapped and removed through channels.services, which pushes a new or
    remapped listing (forced) and drops the waiting push of a removed one."""

    list_display = ("channel", "sku", "external_id", "updated_at")
    list_filter = ("channel",)
    search_fields = ("sku__code", "external_id")
    autocomplete_fields = ("sku",)
    list_select_related = ("channel", "sku")

    def get_readonly_fields(self, request, obj=None):
        return ("channel",) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        if change:
            listing_update(listing=ChannelListing.objects.get(pk=obj.pk), **_listing_changes(form))
        else:
            saved, _created = listing_upsert(channel=obj.channel, sku=obj.sku, external_id=obj.external_id,
                                             attributes=obj.attributes or {})
            obj.pk = saved.pk
            obj._state.adding, obj._state.db = False, saved._state.db

    def delete_model(self, request, obj):
        listing_delete(listing=obj)

    def delete_queryset(self, request, queryset):
        for listing in queryset.order_by("pk"):
            listing_delete(listing=listing)


# ------------------------------------------------------------------------------ propagation


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    _choices = (("1h", "Last hour", timedelta(hours=1)), ("24h", "Last 24 hours", timedelta(days=1)),
                ("old", "Older than a day", None), ("week", "Older than a week", None))

    def lookups(self, request, model_admin):
        return [(key, label) for key, label, _ in self._choices]

    def queryset(self, request, queryset):
        now = timezone.now()
        value = self.value()
        if value == "1h":
            return queryset.filter(created_at__gte=now - timedelta(hours=1))
        if value == "24h":
            return queryset.filter(created_at__gte=now - timedelta(days=1))
        if value == "old":
            return queryset.filter(created_at__lt=now - timedelta(days=1))
        if value == "week":
            return queryset.filter(created_at__lt=now - timedelta(days=7))
        return queryset


class DiscardForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000,
                             help_text="Why these dead letters need no push (kept for the audit).")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("id", "channel", "sku", "quantity", "attempts", "status", "last_error_short", "first_failed_at",
                    "created_at", "resolved_by")
    list_filter = ("status", "channel", AgeFilter)
    list_select_related = ("channel", "sku")
    search_fields = ("sku__code", "channel__slug", "last_error")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ["retry_selected", "discard_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # dead letters are an audit trail: discard them with a reason instead

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return (obj.last_error or "")[:80]

    @admin.action(description="Retry selected")
    def retry_selected(self, request, queryset):
        """Push the quantity current now for each selected open dead letter."""
        from channels.propagation import dead_letter_retry

        done, failed, skipped = 0, [], 0
        for dead_letter in queryset.select_related("channel", "sku").order_by("channel_id", "id"):
            if dead_letter.status != DeadLetter.Status.OPEN:
                skipped += 1
                continue
            try:
                result = dead_letter_retry(dead_letter=dead_letter, actor=f"admin:{request.user.get_username()}")
            except Exception as exc:  # one bad row must not hide the others' results
                failed.append(f"#{dead_letter.pk} {dead_letter.sku.code}: {exc}")
                continue
            if result.ok or result.queued:
                done += 1
            else:
                failed.append(f"#{dead_letter.pk} {dead_letter.sku.code}: {result.error[:120]}")
        if done:
            self.message_user(request, f"{done} dead letter(s) retried with the current quantity.", messages.SUCCESS)
        if failed:
            self.message_user(request, f"{len(failed)} failed again: " + "; ".join(failed[:5]), messages.ERROR)
        if skipped:
            self.message_user(request, f"{skipped} were not open and were left alone.", messages.WARNING)

    @admin.action(description="Discard selected (with a reason)")
    def discard_selected(self, request, queryset):
        from channels.propagation import dead_letter_discard

        form = DiscardForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            count = 0
            for dead_letter in queryset.filter(status=DeadLetter.Status.OPEN):
                dead_letter_discard(dead_letter=dead_letter, reason=form.cleaned_data["reason"],
                                    actor=f"admin:{request.user.get_username()}")
                count += 1
            self.message_user(request, f"{count} dead letter(s) discarded.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/channels/deadletter/discard.html", {
            **self.admin_site.each_context(request), "title": "Discard dead letters", "form": form,
            "queryset": queryset, "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })


@admin.register(PushAttempt)
class PushAttemptAdmin(ReadOnlyAdmin):
    deletable = True
    list_display = ("id", "channel", "purpose", "started_at", "outcome", "http_status", "latency_ms", "sku_count",
                    "error_short")
    list_filter = ("outcome", "purpose", "channel")
    list_select_related = ("channel",)
    readonly_fields = [f.name for f in PushAttempt._meta.fields]
    date_hierarchy = "started_at"

    @admin.display(description="error")
    def error_short(self, obj):
        return (obj.error or "")[:80]


@admin.register(DirtyPair)
class DirtyPairAdmin(ReadOnlyAdmin):
    deletable = True
    list_display = ("channel", "sku", "marked_at", "next_attempt_at", "attempts", "force", "budget_held", "last_error")
    list_filter = ("channel",)
    list_select_related = ("channel", "sku")
    search_fields = ("sku__code",)
    readonly_fields = [f.name for f in DirtyPair._meta.fields]


@admin.register(ChannelSkuState)
class ChannelSkuStateAdmin(ReadOnlyAdmin):
    deletable = True
    list_display = ("channel", "sku", "last_pushed", "last_pushed_at", "last_seen", "last_seen_at")
    list_filter = ("channel",)
    list_select_related = ("channel", "sku")
    search_fields = ("sku__code",)
    readonly_fields = [f.name for f in ChannelSkuState._meta.fields]


@admin.register(ChannelDrift)
class ChannelDriftAdmin(ReadOnlyAdmin):
    deletable = True
    list_display = ("channel", "sku", "expected", "actual", "detected_at")
    list_filter = ("channel",)
    list_select_related = ("channel", "sku")
    readonly_fields = [f.name for f in ChannelDrift._meta.fields]


@admin.register(RevisionBudget)
class RevisionBudgetAdmin(ReadOnlyAdmin):
    """eBay revisions spent per listing and day (written by propagation; read-only)."""

    list_display = ("channel", "key", "day", "used", "reserve_used", "exhausted", "last_revision_at")
    list_filter = ("channel", "exhausted", "day")
    list_select_related = ("channel",)
    search_fields = ("key",)
    readonly_fields = [f.name for f in RevisionBudget._meta.fields]


@admin.register(PendingFeed)
class PendingFeedAdmin(ReadOnlyAdmin):
    """Amazon feeds submitted and their results (written by propagation; read-only)."""

    list_display = ("id", "channel", "reference", "status", "sku_count", "submitted_at", "polls", "last_status",
                    "resolved_at")
    list_filter = ("status", "channel")
    list_select_related = ("channel",)
    search_fields = ("reference",)
    readonly_fields = [f.name for f in PendingFeed._meta.fields]
    date_hierarchy = "submitted_at"
