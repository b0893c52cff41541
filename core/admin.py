from django.contrib import admin

from core.models import ApiKey


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
