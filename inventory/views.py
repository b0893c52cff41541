"""HTTP for catalog and stock. Views parse, call a service or selector, and shape the answer."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC

from django.utils.dateparse import parse_datetime
from django.utils.http import quote_etag
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ValidationFailed
from core.idempotency import IdempotencyMixin
from core.pagination import NewestFirstCursorPagination
from core.parsing import ascii_int
from core.schema import error_responses
from inventory import selectors, services
from inventory.models import Location, Sku
from inventory.serializers import (
    ADJUSTMENT_REQUEST,
    AdjustmentResultSerializer,
    AdjustmentSerializer,
    LocationSerializer,
    MovementSerializer,
    SkuSerializer,
    StockListSerializer,
    StockSerializer,
)
from inventory.services import MovementContext

CATALOG_SCOPES = {"GET": "stock:read", "POST": "catalog:write", "PATCH": "catalog:write", "PUT": "catalog:write"}
BULK_STOCK_MAX = 500


LOCATION_NOT_FOUND = error_responses(e404="`not_found`: no location with this code.")
SKU_NOT_FOUND = error_responses(e404="`not_found`: no SKU with this code.")


def _actor(request) -> str:
    return f"api:{request.auth.name}" if request.auth else "api"


# ------------------------------------------------------------------------------ catalog


@extend_schema_view(
    post=extend_schema(responses={201: LocationSerializer,
                                  **error_responses(e409="`duplicate_location`: the code is taken.")}),
)
class LocationListCreate(IdempotencyMixin, generics.ListCreateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = LocationSerializer
    queryset = Location.objects.all()
    pagination_class = None  # a seller has tens of locations, not thousands

    def perform_create(self, serializer):
        serializer.instance = services.location_create(**serializer.validated_data)


@extend_schema_view(
    get=extend_schema(responses={200: LocationSerializer, **LOCATION_NOT_FOUND}),
    patch=extend_schema(responses={200: LocationSerializer, **LOCATION_NOT_FOUND}),
)
class LocationDetail(IdempotencyMixin, generics.RetrieveUpdateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = LocationSerializer
    queryset = Location.objects.all()
    lookup_field = "code"
    http_method_names = ["get", "patch", "head", "options"]

    def perform_update(self, serializer):
        data = {k: v for k, v in serializer.validated_data.items() if k != "code"}
        serializer.instance = services.location_update(location=serializer.instance, **data)


@extend_schema_view(
    post=extend_schema(responses={201: SkuSerializer, **error_responses(
        e404="`sku_not_found`: a component is unknown.", e409="`duplicate_sku`: the code is taken.")}),
)
class SkuListCreate(IdempotencyMixin, generics.ListCreateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = SkuSerializer
    queryset = Sku.objects.prefetch_related("components__component")

    def perform_create(self, serializer):
        serializer.instance = services.sku_create(**serializer.validated_data)


@extend_schema_view(
    get=extend_schema(responses={200: SkuSerializer, **SKU_NOT_FOUND}),
    patch=extend_schema(responses={200: SkuSerializer, **SKU_NOT_FOUND}),
)
class SkuDetail(IdempotencyMixin, generics.RetrieveUpdateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = SkuSerializer
    queryset = Sku.objects.prefetch_related("components__component")
    lookup_field = "code"
    http_method_names = ["get", "patch", "head", "options"]

    def perform_update(self, serializer):
        data = {k: v for k, v in serializer.validated_data.items() if k != "code"}
        if "components" in data:
            services.sku_components_unchanged(sku=serializer.instance, components=data.pop("components"))
        serializer.instance = services.sku_update(sku=serializer.instance, **data)


# ------------------------------------------------------------------------------ stock


def _etag(body: dict) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    return quote_etag(digest)


class StockDetail(APIView):
    required_scopes = {"GET": "stock:read"}

    @extend_schema(
        responses={
            200: StockSerializer,
            304: OpenApiResponse(description="The ETag named in If-None-Match is still current (no body)."),
            **error_responses(e400="`invalid_as_of`: not an ISO 8601 date-time with a time zone.",
                              e404="`sku_not_found`."),
        },
        parameters=[
            OpenApiParameter("as_of", {"type": "string", "anyOf": [{"format": "date-time"}, {"maxLength": 0}]},
                             description="Answer as the ledger knew it at this instant (ISO 8601 with an offset, "
                                         "e.g. Z). Empty: now."),
            OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER,
                             description="ETags from earlier answers (weak comparison, or `*`): 304 if current."),
            OpenApiParameter("ETag", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[200, 304], required=True,
                             description="A hash of the JSON answer."),
        ],
    )
    def get(self, request, sku):
        as_of = request.query_params.get("as_of")
        if as_of:
            try:  # ASCII only: Django's parser reads other scripts' digits ("٢٠٢٤") as numbers
                at = parse_datetime(as_of) if as_of.isascii() else None
            except ValueError:  # well-formed but impossible, e.g. month 13
                at = None
            if at is None:
                raise ValidationFailed("as_of must be an ISO 8601 date-time.", code="invalid_as_of")
            if at.tzinfo is None:
                raise ValidationFailed("as_of must include a time zone (e.g. Z).", code="invalid_as_of")
            try:  # the same instant in UTC: PostgreSQL refuses offsets past ±15:59, ISO 8601 allows ±23:59
                at = at.astimezone(UTC)
            except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
                raise ValidationFailed("as_of is out of range.", code="invalid_as_of") from None
            body = selectors.stock_as_of(sku_code=sku, at=at)
        else:
            body = selectors.stock_get(sku_code=sku)
        etag = _etag(body)
        # Weak comparison (RFC 9110 §13.1.2): W/"x" matches "x".
        inm = request.headers.get("If-None-Match", "")
        tags = [tag.strip().removeprefix("W/") for tag in inm.split(",")]
        if etag in tags or inm.strip() == "*":
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(body, headers={"ETag": etag})


class StockBulk(APIView):
    required_scopes = {"GET": "stock:read"}

    @extend_schema(
        operation_id="v1_stock_list",
        parameters=[OpenApiParameter(
            "sku", {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                    "maxItems": BULK_STOCK_MAX},
            required=True, description=f"A SKU code, repeated for each SKU (1 to {BULK_STOCK_MAX}).")],
        responses={200: StockListSerializer,
                   **error_responses(e400="`sku_required` or `too_many_skus`.")},
    )
    def get(self, request):
        codes = [c for c in request.query_params.getlist("sku") if c]
        if not codes:
            raise ValidationFailed("Give at least one ?sku= parameter.", code="sku_required")
        if len(codes) > BULK_STOCK_MAX:
            raise ValidationFailed(f"At most {BULK_STOCK_MAX} SKUs per request.", code="too_many_skus")
        return Response({"results": selectors.stock_get_many(sku_codes=codes)})


def _text(value: object, max_length: int) -> bool:
    """A string DRF's CharField would return unchanged: printable ASCII, nothing to trim, not
    blank, within max_length (no NUL, no surrogate, no whitespace at either end)."""
    return (type(value) is str and 0 < len(value) <= max_length and value.isascii() and value.isprintable()
            and value[0] != " " and value[-1] != " ")


def _adjustment_fast(data: object) -> dict | None:
    """AdjustmentSerializer's validated_data for a plain, well-formed body, without building the
    serializer per request (docs/performance.md). None for anything it is not sure of (a string
    to trim, a mistyped or missing field...): the serializer then decides, with its messages."""
    if type(data) is not dict:
        return None
    kind, quantity = data.get("type"), data.get("quantity")
    if not (_text(data.get("sku"), 100) and _text(data.get("location"), 64) and type(kind) is str
            and kind in services.ADJUSTMENT_TYPES and type(quantity) is int
            and -services.MAX_QUANTITY <= quantity <= services.MAX_QUANTITY):
        return None
    result: dict = {"sku": data["sku"], "location": data["location"], "type": kind, "quantity": quantity,
                    "reference": ""}
    if "to_location" in data:
        if data["to_location"] is not None and not _text(data["to_location"], 64):
            return None
        result["to_location"] = data["to_location"]
    if "reference" in data:
        if data["reference"] != "" and not _text(data["reference"], 200):
            return None
        result["reference"] = data["reference"]
    if "expected_version" in data:
        version = data["expected_version"]
        if version is not None and (type(version) is not int or not 0 <= version < 2**63):
            return None
        result["expected_version"] = version
    return result


class AdjustmentCreate(IdempotencyMixin, APIView):
    required_scopes = {"POST": "stock:write"}
    idempotency_deferred = ("POST",)  # the one-statement sale inserts the claim (core.idempotency)

    @extend_schema(
        request=ADJUSTMENT_REQUEST,
        parameters=[OpenApiParameter(
            "If-Match", {"type": "string", "pattern": '^"*[0-9]{0,18}"*$'}, OpenApiParameter.HEADER,
            description="The expected position version (when the body has no `expected_version`): else 412.")],
        responses={
            201: AdjustmentResultSerializer,
            **error_responses(
                e400="`validation_error`, `invalid_quantity`, `invalid_to_location` (e.g. the same location) "
                     "or `invalid_if_match`.",
                e404="`sku_not_found` or `location_not_found`.",
                e409="`insufficient_stock`, with `available`.",
                e412="`version_conflict`, with `current_version`."),
        },
    )
    def post(self, request):
        data = _adjustment_fast(request.data)
        pending = request.idempotency_pending
        if data is None:  # anything unusual: the serializer decides, with its error messages
            if pending is not None:
                pending.settle()  # claimed first, as the other endpoints do
            serializer = AdjustmentSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        expected_version = data.get("expected_version")
        if_match = request.headers.get("If-Match", "").strip().strip('"')
        if if_match:  # checked even when the body names the version: a malformed header is the client's bug
            if_match_version = ascii_int(if_match)  # not isdigit(): "²" passes it and int() refuses it
            if if_match_version is None:
                raise ValidationFailed("If-Match must be a position version number.", code="invalid_if_match")
            if expected_version is None:
                expected_version = if_match_version
        result = services.stock_adjust(
            sku=data["sku"],
            location=data["location"],
            type=data["type"],
            quantity=data["quantity"],
            to_location=data.get("to_location") or None,
            expected_version=expected_version,
            # With an Idempotency-Key, the ledger key too: a re-run after a crash replays, never re-applies.
            context=MovementContext(source="api", reference=data.get("reference", ""), actor=_actor(request),
                                    event_key=getattr(request, "idempotency_request_key", None)),
            claim=pending,
        )
        body = {
            "movements": [m.pk for m in result.movements],
            "positions": [selectors.position_to_dict(p) for p in result.positions],
        }
        return Response(body, status=status.HTTP_201_CREATED)


class MovementList(generics.ListAPIView):
    required_scopes = {"GET": "stock:read"}
    serializer_class = MovementSerializer
    pagination_class = NewestFirstCursorPagination

    @extend_schema(
        parameters=[OpenApiParameter("location", OpenApiTypes.STR, description="Only this location's rows.")],
        responses={200: MovementSerializer(many=True),
                   **error_responses(e404="`sku_not_found`, `location_not_found`, or no such cursor.")},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.movements_for_sku(
            sku_code=self.kwargs["sku"], location_code=self.request.query_params.get("location"))
