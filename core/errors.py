"""One error shape for every client-facing failure: {"error": code, "detail": sentence, ...extra}.

Services raise `DomainError` subclasses (they know nothing of HTTP beyond a suggested status);
DRF's own exceptions (validation, auth, 404, parse errors) are mapped to the same shape.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig, SuspiciousOperation
from django.db import DataError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exc
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """A refusal a client can act on. `extra` fields are merged into the error body."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None, **extra):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        if status:
            self.status = status
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.code, "detail": self.detail, **self.extra}


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class InsufficientStock(DomainError):
    status = 409
    code = "insufficient_stock"


class VersionConflict(DomainError):
    status = 412
    code = "version_conflict"


class ValidationFailed(DomainError):
    status = 400
    code = "validation_error"


def _is_transient(exc: Exception) -> bool:
    """Deadlock victim, serialization failure or lock timeout: retrying the same request is safe."""
    from psycopg import errors as pg

    cause = exc.__cause__
    return isinstance(cause, pg.DeadlockDetected | pg.SerializationFailure | pg.LockNotAvailable)


def _flatten(detail, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            label = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{prefix}{label}." if label else prefix)
        return out
    if isinstance(detail, list):
        out = []
        for i, value in enumerate(detail):
            if isinstance(value, dict | list):
                out += _flatten(value, f"{prefix}{i}.")
            else:
                out += _flatten(value, prefix)
        return out
    return [f"{prefix.rstrip('.')}: {detail}" if prefix else str(detail)]


_DRF_CODES = {
    drf_exc.NotAuthenticated: "not_authenticated",
    drf_exc.AuthenticationFailed: "authentication_failed",
    drf_exc.PermissionDenied: "permission_denied",
    drf_exc.NotFound: "not_found",
    drf_exc.MethodNotAllowed: "method_not_allowed",
    drf_exc.NotAcceptable: "not_acceptable",
    drf_exc.UnsupportedMediaType: "unsupported_media_type",
    drf_exc.ParseError: "malformed_json",
    drf_exc.Throttled: "throttled",
}


def exception_handler(exc, context):
    """DRF EXCEPTION_HANDLER: every handled error answers the contract's shape."""
    if isinstance(exc, DomainError):
        return Response(exc.body(), status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response({"error": "payload_too_large", "detail": "The request body is too large."}, status=413)
    if isinstance(exc, OperationalError) and _is_transient(exc):
        # PostgreSQL chose this transaction as a deadlock victim (or a lock wait timed out): it was
        # rolled back whole, so the client may simply retry. 503, not 409, so an Idempotency-Key
        # claim is released rather than stored with this answer.
        logger.warning("transient database conflict answered 503: %s", exc)
        return Response({"error": "retry_later", "detail": "A concurrent update conflicted; retry the request."},
                        status=503, headers={"Retry-After": "1"})
    if isinstance(exc, DataError):
        # Safety net: input PostgreSQL refuses as data (out of range, bad characters) is the
        # client's, not a server fault. Validation should have caught it first; log to fix that.
        logger.warning("DataError reached the API error handler: %s", exc)
        return Response({"error": "invalid_input", "detail": "A value in the request cannot be stored."},
                        status=400)
    if isinstance(exc, SuspiciousOperation):
        return Response({"error": "bad_request", "detail": "The request was refused as malformed."}, status=400)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        return Response({"error": "not_found", "detail": str(exc) or "Not found."}, status=404)
    if isinstance(exc, drf_exc.ValidationError):
        messages = _flatten(exc.detail)
        return Response(
            {"error": "validation_error", "detail": "; ".join(messages), "fields": exc.detail},
            status=400,
        )
    if isinstance(exc, drf_exc.APIException):
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
        headers = {}
        if isinstance(exc, drf_exc.NotAuthenticated | drf_exc.AuthenticationFailed):
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
            status = 401
        else:
            status = exc.status_code
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response({"error": code, "detail": str(exc.detail)}, status=status, headers=headers)
    return None  # unexpected: let Django log it and answer 500


def json_error(status: int, code: str, detail: str, **extra) -> JsonResponse:
    """The same shape for plain Django views (webhooks, handlers)."""
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)


def handler400(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return json_error(413, "payload_too_large", "The request body is too large.")
    return json_error(400, "bad_request", "The request was refused as malformed.")


def handler403(request, exception=None):
    return json_error(403, "permission_denied", "You do not have permission for this.")


def handler404(request, exception=None):
    return json_error(404, "not_found", "No such resource.")


def handler500(request):
    return json_error(500, "server_error", "Internal error; it has been logged.")
