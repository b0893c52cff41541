from django import forms
from django.contrib import admin

from channels.models import Channel, ChannelListing


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
                  "push_enabled", "buffer_type", "buffer_value", "rate_limit_per_second", "rate_limit_burst",
                  "retry_max_attempts", "retry_base_delay", "retry_max_delay", "circuit_failure_threshold",
                  "circuit_cooldown_seconds", "settings", "active")

    def save(self, commit=True):
        if self.cleaned_data.get("new_webhook_secret"):
            self.instance.webhook_secret = self.cleaned_data["new_webhook_secret"]
        if self.cleaned_data.get("new_credentials"):
            self.instance.credentials = self.cleaned_data["new_credentials"]
        return super().save(commit)


class ListingInline(admin.TabularInline):
    model = ChannelListing
    extra = 0
    autocomplete_fields = ("sku",)
    fields = ("sku", "external_id", "attributes")


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelAdminForm
    list_display = ("slug", "name", "kind", "push_enabled", "active", "circuit_state", "consecutive_failures",
                    "last_success_at")
    list_filter = ("kind", "active", "circuit_state")
    search_fields = ("slug", "name")
    readonly_fields = ("last_success_at", "last_failure_at", "last_error", "consecutive_failures", "circuit_state",
                       "circuit_opened_at", "created_at", "updated_at")
    filter_horizontal = ("locations", "authoritative_locations")
    inlines = [ListingInline]


@admin.register(ChannelListing)
class ChannelListingAdmin(admin.ModelAdmin):
    list_display = ("channel", "sku", "external_id", "updated_at")
    list_filter = ("channel",)
    search_fields = ("sku__code", "external_id")
    autocomplete_fields = ("sku",)
    list_select_related = ("channel", "sku")
