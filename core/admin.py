from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from core.errors import DomainError
from core.models import ApiKey


class ServiceAdmin(admin.ModelAdmin):
    """An admin whose writes call services (save_model, delete_model, ... overridden by the
    subclass). A refusal a service raises (e.g. 409 `duplicate_external_id` lost to a concurrent
    edit after the form validated) rolls the admin's transaction back and is shown as a message
    on the same page, instead of a 500."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:  # raised inside the admin's atomic block: nothing was saved
            self.message_user(request, f"Not saved: {exc.code}: {exc.detail}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services (ledger, audit, outbox, queues): viewable, never added or
    edited by hand. `deletable = True` lets operations staff remove a row (e.g. an outbox entry)."""

    deletable = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.deletable and super().has_delete_permission(request, obj)


class ReadOnlyInline(admin.TabularInline):
    """An inline that shows rows and never adds, changes or deletes them (ledger, lines)."""

    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created with `./dev manage create_api_key`; the admin can revoke or rename them.
    The hash is never shown."""

    list_display = ("name", "prefix", "scopes", "active", "created_at", "last_used_at")
    list_filter = ("active",)
    search_fields = ("name", "prefix")
    fields = ("name", "prefix", "scopes", "active", "created_at", "last_used_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False
