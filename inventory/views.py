"""HTTP for catalog and stock. Views parse, call a service or selector, and shape the answer."""

from __future__ import annotations

import hashlib
import json

from django.utils.dateparse import parse_datetime
from django.utils.http import quote_etag
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ValidationFailed
from core.idempotency import IdempotencyMixin
from core.pagination import NewestFirstCursorPagination
from core.parsing import ascii_int
from inventory import selectors, services
from inventory.models import Location, Sku
from inventory.serializers import (
    AdjustmentResultSerializer,
    AdjustmentSerializer,
    LocationSerializer,
    MovementSerializer,
    SkuSerializer,
    StockSerializer,
)
from inventory.services import MovementContext

CATALOG_SCOPES = {"GET": "stock:read", "POST": "catalog:write", "PATCH": "catalog:write", "PUT": "catalog:write"}
BULK_STOCK_MAX = 500


def _actor(request) -> str:
    return f"api:{request.auth.name}" if request.auth else "api"


# ------------------------------------------------------------------------------ catalog


class LocationListCreate(IdempotencyMixin, generics.ListCreateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = LocationSerializer
    queryset = Location.objects.all()
    pagination_class = None  # a seller has tens of locations, not thousands

    def perform_create(self, serializer):
        serializer.instance = services.location_create(**serializer.validated_data)


class LocationDetail(IdempotencyMixin, generics.RetrieveUpdateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = LocationSerializer
    queryset = Location.objects.all()
    lookup_field = "code"
    http_method_names = ["get", "patch", "head", "options"]

    def perform_update(self, serializer):
        data = {k: v for k, v in serializer.validated_data.items() if k != "code"}
        serializer.instance = services.location_update(location=serializer.instance, **data)


class SkuListCreate(IdempotencyMixin, generics.ListCreateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = SkuSerializer
    queryset = Sku.objects.all()

    def perform_create(self, serializer):
        serializer.instance = services.sku_create(**serializer.validated_data)


class SkuDetail(IdempotencyMixin, generics.RetrieveUpdateAPIView):
    required_scopes = CATALOG_SCOPES
    serializer_class = SkuSerializer
    queryset = Sku.objects.all()
    lookup_field = "code"
    http_method_names = ["get", "patch", "head", "options"]

    def perform_update(self, serializer):
        data = {k: v for k, v in serializer.validated_data.items() if k != "code"}
        serializer.instance = services.sku_update(sku=serializer.instance, **data)


# ------------------------------------------------------------------------------ stock


def _etag(body: dict) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    return quote_etag(digest)


class StockDetail(APIView):
    required_scopes = {"GET": "stock:read"}

    @extend_schema(
        responses=StockSerializer,
        parameters=[OpenApiParameter("as_of", OpenApiTypes.DATETIME, description="ISO 8601 instant")],
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
        parameters=[OpenApiParameter("sku", OpenApiTypes.STR, many=True, description="repeat up to 500 times")],
        responses=StockSerializer(many=True),
    )
    def get(self, request):
        codes = [c for c in request.query_params.getlist("sku") if c]
        if not codes:
            raise ValidationFailed("Give at least one ?sku= parameter.", code="sku_required")
        if len(codes) > BULK_STOCK_MAX:
            raise ValidationFailed(f"At most {BULK_STOCK_MAX} SKUs per request.", code="too_many_skus")
        return Response({"results": selectors.stock_get_many(sku_codes=codes)})


class AdjustmentCreate(IdempotencyMixin, APIView):
    required_scopes = {"POST": "stock:write"}

    @extend_schema(request=AdjustmentSerializer, responses={201: AdjustmentResultSerializer})
    def post(self, request):
        serializer = AdjustmentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        expected_version = data.get("expected_version")
        if_match = request.headers.get("If-Match", "").strip().strip('"')
        if expected_version is None and if_match:
            expected_version = ascii_int(if_match)  # not isdigit(): "²" passes it and int() refuses it
            if expected_version is None:
                raise ValidationFailed("If-Match must be a position version number.", code="invalid_if_match")
        result = services.stock_adjust(
            sku=data["sku"],
            location=data["location"],
            type=data["type"],
            quantity=data["quantity"],
            to_location=data.get("to_location") or None,
            expected_version=expected_version,
            context=MovementContext(source="api", reference=data.get("reference", ""), actor=_actor(request)),
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

    @extend_schema(parameters=[
        OpenApiParameter("location", OpenApiTypes.STR),
        OpenApiParameter("limit", OpenApiTypes.INT),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.movements_for_sku(
            sku_code=self.kwargs["sku"], location_code=self.request.query_params.get("location"))
