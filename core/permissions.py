"""Scope checks. A view declares `required_scopes = {"GET": "stock:read", "POST": "stock:write"}`
(or a plain string for every method); a tuple means any one of those scopes will do. A key
without the scope gets 403. A method the view does not implement is DRF's 405, whatever the key."""

from rest_framework import exceptions, permissions


class HasScope(permissions.BasePermission):
    def has_permission(self, request, view):
        key = request.auth
        if key is None:
            raise exceptions.NotAuthenticated("An API key is required: 'Authorization: Bearer <key>'.")
        if request.method.lower() not in view.http_method_names or not hasattr(view, request.method.lower()):
            return True  # no such operation: DRF answers 405 with `Allow`, not a scope refusal
        required = getattr(view, "required_scopes", None)
        if isinstance(required, dict):
            method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
            scope = required.get(method)
        else:
            scope = required
        if scope is None:
            raise exceptions.PermissionDenied("This operation is not available to API keys.")
        accepted = scope if isinstance(scope, tuple) else (scope,)
        if not any(s in key.scopes for s in accepted):
            names = "' or '".join(accepted)
            raise exceptions.PermissionDenied(f"This API key lacks the '{names}' scope.")
        return True
