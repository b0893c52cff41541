"""HTTP for analytics (contract §4 "Analytics"; docs/analytics.md). Views parse the query, call a
selector and answer its dict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import alerts, selectors
from analytics.serializers import (
    AlertSerializer,
    AlertSubscriptionSerializer,
    FastMoverListSerializer,
    SafetyStockHistorySerializer,
    SkuAnalyticsListSerializer,
    SkuAnalyticsSerializer,
    StockHistorySerializer,
)
from core.errors import NotFound, ValidationFailed
from core.idempotency import IdempotencyMixin
from core.pagination import PageNumberPagination
from core.parsing import ascii_int
from core.schema import error_responses

READ = {"GET": "stock:read"}
SKU_NOT_FOUND = "`sku_not_found`."
# An instant as `as_of` takes it (ISO 8601 with an offset), or empty for the default.
INSTANT = {"type": "string", "anyOf": [{"format": "date-time"}, {"maxLength": 0}]}


def _instant(request, name: str) -> datetime | None:
    """The query parameter as an aware UTC datetime, None when absent or empty; 400 `invalid_<name>`
    when it is not an ISO 8601 date-time with an offset (ASCII digits only, as for `as_of`)."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:  # ASCII only: Django's parser reads other scripts' digits as numbers
        at = parse_datetime(raw) if raw.isascii() else None
    except ValueError:  # well-formed but impossible, e.g. month 13
        at = None
    if at is None:
        raise ValidationFailed(f"{name} must be an ISO 8601 date-time.", code=f"invalid_{name}")
    if at.tzinfo is None:
        raise ValidationFailed(f"{name} must include a time zone (e.g. Z).", code=f"invalid_{name}")
    try:
        return at.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00: past the last representable instant
        return datetime.max.replace(tzinfo=UTC) if at.year > 1 else datetime.min.replace(tzinfo=UTC)


def _int(request, name: str, *, default: int, maximum: int) -> int:
    """A positive integer query parameter (ASCII digits, 1..maximum); 400 `invalid_<name>` else."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = ascii_int(raw, minimum=1, maximum=maximum)
    if value is None:
        raise ValidationFailed(f"{name} must be an integer from 1 to {maximum}.", code=f"invalid_{name}")
    return value


class StockHistory(APIView):
    required_scopes = READ

    @extend_schema(
        operation_id="v1_stock_history",
        parameters=[
            OpenApiParameter("from", INSTANT, description="First instant (ISO 8601 with an offset); default 24 h ago."),
            OpenApiParameter("to", INSTANT, description="Last instant; default now. Before `from`: no points."),
        ],
        responses={200: StockHistorySerializer,
                   **error_responses(e400="`invalid_from` or `invalid_to`: not an ISO 8601 date-time with an "
                                          "offset.", e404=SKU_NOT_FOUND)},
    )
    def get(self, request, sku):
        """The SKU's totals at each 5-minute snapshot in the range, oldest first (at most 10,000;
        hourly points past the 5-minute retention)."""
        now = timezone.now()
        start = _instant(request, "from")
        end = _instant(request, "to")
        body = selectors.stock_history_get(sku_code=sku, start=start or now - timedelta(hours=24), end=end or now,
                                           now=now)
        return Response(body)


class SkuAnalytics(APIView):
    required_scopes = READ

    @extend_schema(operation_id="v1_analytics_sku", responses={200: SkuAnalyticsSerializer,
                                                               **error_responses(e404=SKU_NOT_FOUND)})
    def get(self, request, sku):
        """Velocity, cover, stockout date, reorder point and risk of one SKU, live from the ledger."""
        return Response(selectors.sku_analytics_get(sku_code=sku))


class FastMovers(APIView):
    required_scopes = READ

    @extend_schema(
        operation_id="v1_analytics_fast_movers",
        parameters=[
            OpenApiParameter("days", {"type": "integer", "minimum": 1, "maximum": selectors.MAX_DAYS, "default": 7},
                             description="The window: the last `days` x 24 h."),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": selectors.MAX_LIMIT,
                                       "default": 20}),
        ],
        responses={200: FastMoverListSerializer,
                   **error_responses(e400="`invalid_days` or `invalid_limit`: not an integer in range.")},
    )
    def get(self, request):
        """SKUs by units sold in the window, most first; SKUs with no sales are left out."""
        days = _int(request, "days", default=7, maximum=selectors.MAX_DAYS)
        limit = _int(request, "limit", default=20, maximum=selectors.MAX_LIMIT)
        return Response({"results": selectors.fast_movers_list(days=days, limit=limit)})


class StockoutRisk(APIView):
    required_scopes = READ

    @extend_schema(
        operation_id="v1_analytics_stockout_risk",
        parameters=[OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": selectors.MAX_LIMIT,
                                               "default": 50})],
        responses={200: SkuAnalyticsListSerializer,
                   **error_responses(e400="`invalid_limit`: not an integer in range.")},
    )
    def get(self, request):
        """Active SKUs whose days of cover are under their lead time, fewest days of cover first."""
        limit = _int(request, "limit", default=50, maximum=selectors.MAX_LIMIT)
        return Response({"results": selectors.stockout_risk_list(limit=limit)})


class SafetyStockHistory(APIView):
    required_scopes = READ

    @extend_schema(operation_id="v1_analytics_sku_safety_stock",
                   responses={200: SafetyStockHistorySerializer, **error_responses(e404=SKU_NOT_FOUND)})
    def get(self, request, sku):
        """Changes the daily dynamic safety-stock recompute made to this SKU, with their inputs."""
        return Response(selectors.safety_stock_changes_list(sku_code=sku))


# ------------------------------------------------------------------------------------------ alerts


class AlertList(generics.ListAPIView):
    required_scopes = READ
    serializer_class = AlertSerializer
    pagination_class = PageNumberPagination

    @extend_schema(
        operation_id="v1_alerts_list",
        parameters=[OpenApiParameter("status", {"type": "string", "enum": ["open", "resolved", ""]}),
                    OpenApiParameter("kind", {"type": "string", "enum": ["low_stock", "stockout", "oversell", ""]}),
                    OpenApiParameter("sku", str, description="A SKU code.")],
        responses={200: AlertSerializer(many=True),
                   **error_responses(e400="`invalid_status` or `invalid_kind`.")},
    )
    def get(self, request, *args, **kwargs):
        """Alerts, newest first, filtered by status, kind and SKU code (an empty filter is none)."""
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        status_ = params.get("status") or None
        kind = params.get("kind") or None
        if status_ not in (None, "open", "resolved"):
            raise ValidationFailed("status must be open or resolved.", code="invalid_status")
        if kind not in (None, *alerts.KINDS):
            raise ValidationFailed("kind must be low_stock, stockout or oversell.", code="invalid_kind")
        return alerts.alerts_list(status=status_, kind=kind, sku=params.get("sku") or None)


OPS = {"POST": "ops", "DELETE": "ops"}


class AlertSubscriptionCreate(IdempotencyMixin, APIView):
    required_scopes = OPS

    @extend_schema(operation_id="v1_alert_subscriptions_create", request=AlertSubscriptionSerializer,
                   responses={201: AlertSubscriptionSerializer, **error_responses(e400="`validation_error`.")})
    def post(self, request):
        """Subscribe a URL to alert openings and resolvings (Standard Webhooks signed with `secret`)."""
        serializer = AlertSubscriptionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sub = alerts.alert_subscription_create(**serializer.validated_data)
        return Response(AlertSubscriptionSerializer(sub).data, status=status.HTTP_201_CREATED)


class AlertSubscriptionDetail(IdempotencyMixin, APIView):
    required_scopes = OPS

    @extend_schema(operation_id="v1_alert_subscriptions_delete",
                   parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH)],
                   responses={204: None, **error_responses(e404="`alert_subscription_not_found`.")})
    def delete(self, request, id):
        """Unsubscribe; pending deliveries to it are dropped."""
        pk = ascii_int(id)
        if pk is None:
            raise NotFound("Unknown alert subscription.", code="alert_subscription_not_found")
        alerts.alert_subscription_delete(subscription_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
