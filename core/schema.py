"""How the OpenAPI document (/api/schema/, drf-spectacular) is made to say what the code does.

Views declare their success shapes and the refusals only they make (`error_responses(...)` in
`@extend_schema(responses=...)`). What every view shares is added here, from the same classes
that produce those answers, so the two cannot drift apart:

- the bearer API key (`core.auth.ApiKeyAuthentication`) as a security scheme; 401 and 403 (scopes,
  `core.permissions.HasScope`) on every operation;
- 400 on every operation (a NUL in the URL is refused by middleware; bodies by the strict parser),
  plus 413/415 where a body is read;
- the `Idempotency-Key` request header and `Idempotent-Replayed` response header where
  `core.idempotency.IdempotencyMixin` honours them (required where the view requires it), with its
  409 `idempotency_key_in_flight` and 422 `idempotency_key_reused`;
- 503 `retry_later` (a deadlock victim, `core.errors.exception_handler`) on every write;
- 404 on paginated lists (an invalid `?page=` or `?cursor=`);
- request text as DRF reads it: trimmed first, then checked for blank and max_length, which
  minLength/maxLength cannot say (`trimmed_text_pattern`); a field may state its own pattern
  (`schema_pattern`, `schema_forbidden_characters`, `schema_not_pattern`);
- `many=True` bodies with their allow_empty/min_length/max_length (minItems/maxItems).

tests/core/test_openapi_schemathesis.py runs schemathesis with every check against the document.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.drainage import has_override
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import get_doc, is_list_serializer
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers

# What str.strip() removes, as a regex character class body. DRF's CharField (and the
# Idempotency-Key header) trim with it before checking blank and max_length.
PY_WHITESPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def trimmed_text_pattern(*, max_length: int | None = None, allow_blank: bool = False, forbidden: str = "") -> str:
    """A JSON Schema pattern for text that is trimmed before it is checked: surrounding whitespace
    is free, the text between it is not blank (unless allowed), at most `max_length` characters, and
    holds none of the `forbidden` characters (a regex class body). minLength/maxLength cannot say
    this, as they count the whitespace that DRF removes first."""
    edge = f"[^{PY_WHITESPACE}{forbidden}]"
    inner = f"[^{forbidden}]" if forbidden else "[\\s\\S]"
    if max_length is None:
        text = f"{edge}({inner}*{edge})?"
    elif max_length >= 2:
        text = f"{edge}({inner}{{0,{max_length - 2}}}{edge})?"
    else:
        text = edge
    if allow_blank:
        text = f"({text})?"
    return f"^[{PY_WHITESPACE}]*{text}[{PY_WHITESPACE}]*$"


def _is_trimmed_text(field) -> bool:
    return (isinstance(field, serializers.CharField) and field.trim_whitespace
            and not has_override(field, "field")
            and not any(isinstance(v, RegexValidator) for v in field.validators))


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "core.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "sk_<prefix>_<secret>",
            "description": "An API key made with `manage.py create_api_key NAME --scopes ...`.",
        }


class InsufficientLineSerializer(serializers.Serializer):
    sku = serializers.CharField()
    location = serializers.CharField(required=False)
    requested = serializers.IntegerField()
    available = serializers.IntegerField()


class ErrorSerializer(serializers.Serializer):
    """Every refusal: a machine code, a sentence, and for some codes more fields (CONTRACT.md §2)."""

    error = serializers.CharField(help_text="Machine-readable code, e.g. `validation_error`, `insufficient_stock`.")
    detail = serializers.CharField(help_text="A sentence for people.")
    fields = serializers.DictField(
        required=False, help_text="`validation_error` only: the messages per field (nested like the body).")
    available = serializers.IntegerField(required=False, help_text="`insufficient_stock` on an adjustment.")
    current_version = serializers.IntegerField(required=False, help_text="`version_conflict`: the position's version.")
    lines = InsufficientLineSerializer(
        many=True, required=False, help_text="`insufficient_stock` on a reservation: each SKU asked for.")


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


def error_responses(**by_status: str) -> dict[int, OpenApiResponse]:
    """`error_responses(e404="sku_not_found: ...", e409="...")` for `@extend_schema(responses=...)`."""
    return {int(key.removeprefix("e")): error_response(text) for key, text in by_status.items()}


# What describes a property rather than constrains its value (kept when a pattern replaces the rest).
_OUTER_KEYS = ("readOnly", "writeOnly", "nullable", "deprecated", "description", "title", "default")

_COMMON_ERRORS = {
    "400": "`validation_error` (with `fields`), `malformed_json`, `bad_request` or `invalid_input`. Text never "
           "holds a NUL character (U+0000), in the URL or the body: PostgreSQL cannot store it.",
    "401": "`not_authenticated` or `authentication_failed`: no, malformed or revoked API key "
           "(`WWW-Authenticate: Bearer`).",
    "403": "`permission_denied`: the API key lacks the scope this operation needs.",
}
_BODY_ERRORS = {
    "413": "`payload_too_large`: the body is over the size limit.",
    "415": "`unsupported_media_type`: bodies are JSON (`Content-Type: application/json`).",
}
_IDEMPOTENCY_ERRORS = {
    "409": "`idempotency_key_in_flight`: a request with this Idempotency-Key is still running.",
    "422": "`idempotency_key_reused`: this Idempotency-Key was used with a different body.",
}
_WRITE_ERRORS = {
    "503": "`retry_later` (`Retry-After: 1`): a concurrent update conflicted; nothing was applied, retry "
           "(with the same Idempotency-Key).",
}
_PAGINATED_ERRORS = {"404": "`not_found`: no such page or cursor."}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema plus the answers every API view shares (module docstring)."""

    def _idempotency(self) -> tuple[bool, bool]:
        """(honoured, required) for this operation's Idempotency-Key."""
        from core.idempotency import IdempotencyMixin

        if not isinstance(self.view, IdempotencyMixin):
            return False, False
        return self.method in self.view.idempotency_methods, self.method in self.view.idempotency_required

    def get_description(self) -> str:
        # Mixins from core (IdempotencyMixin) document how to use them, not the operation.
        from core.idempotency import IdempotencyMixin

        description = super().get_description()
        return "" if description == get_doc(IdempotencyMixin) else description

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        honoured, required = self._idempotency()
        if honoured:
            parameters += [
                OpenApiParameter(
                    # Trimmed like a CharField; blank is no key, which only `required` refuses.
                    "Idempotency-Key",
                    {"type": "string", "pattern": trimmed_text_pattern(max_length=255, allow_blank=not required)},
                    OpenApiParameter.HEADER, required=required,
                    description=(
                        "Same key and same body: the first answer again, byte for byte, with no second effect. "
                        "Scoped to the API key, kept at least 24 hours. At most 255 characters."
                        + (" Required here." if required else " Blank is the same as no key.")),
                ),
                OpenApiParameter(
                    "Idempotent-Replayed", OpenApiTypes.STR, OpenApiParameter.HEADER, response=True, enum=["true"],
                    description="Present when this is the stored answer to an earlier request with the same key.",
                ),
            ]
        return parameters

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        if isinstance(serializer, PolymorphicProxySerializer):
            required = True  # each variant requires its discriminator: no body is a 400
        return schema, required

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction != "request":
            return schema
        for name, field in serializer.fields.items():
            prop = schema.get("properties", {}).get(name)
            if not isinstance(prop, dict):
                continue
            # A field may state its own pattern (`schema_pattern`); other text fields are trimmed by
            # DRF first, so "  " is blank and max_length counts what is left (trimmed_text_pattern).
            pattern = getattr(field, "schema_pattern", None)
            if pattern is None and prop.get("type") == "string" and _is_trimmed_text(field):
                pattern = trimmed_text_pattern(max_length=field.max_length, allow_blank=field.allow_blank,
                                               forbidden=getattr(field, "schema_forbidden_characters", ""))
            if pattern is None:
                continue
            kept = {key: prop[key] for key in _OUTER_KEYS if key in prop}
            prop.clear()
            prop.update({"type": "string", "pattern": pattern, **kept})
            if not_pattern := getattr(field, "schema_not_pattern", None):
                prop["not"] = {"pattern": not_pattern}
        return schema

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if schema and is_list_serializer(field) and schema.get("type") == "array":
            # `many=True` serializers: DRF enforces allow_empty, min_length and max_length.
            if not field.allow_empty:
                schema["minItems"] = max(1, field.min_length or 0)
            elif field.min_length is not None:
                schema["minItems"] = field.min_length
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        extra = dict(_COMMON_ERRORS)
        if self._get_request_body():
            extra.update(_BODY_ERRORS)
        honoured, _required = self._idempotency()
        if honoured:
            extra.update(_IDEMPOTENCY_ERRORS)
        if self.method in WRITE_METHODS:
            extra.update(_WRITE_ERRORS)
        if self.method == "GET" and self._is_list_view() and self._get_paginator():
            extra.update(_PAGINATED_ERRORS)
        for status, description in extra.items():
            if status in responses:
                declared = responses[status].get("description", "")
                if description not in declared:
                    responses[status]["description"] = f"{declared} {description}".strip()
                continue
            responses[status] = self._get_response_for_code(error_response(description), status, direction=direction)
        return dict(sorted(responses.items()))


# Request bodies whose serializers refuse unknown fields (400), so the document says so too.
STRICT_REQUEST_COMPONENTS = {"AlertSubscriptionRequest"}


def strict_request_bodies(result, generator, request, public):
    """drf-spectacular postprocessing hook: `additionalProperties: false` on STRICT_REQUEST_COMPONENTS."""
    schemas = result.get("components", {}).get("schemas", {})
    for name in STRICT_REQUEST_COMPONENTS & set(schemas):
        schemas[name]["additionalProperties"] = False
    return result
