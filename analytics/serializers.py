"""Answer shapes of the analytics endpoints, for the OpenAPI document (views answer plain dicts
built by analytics.selectors)."""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from analytics.models import Alert
from channels.serializers import HTTP_URL, PY_WHITESPACE, HttpUrlField
from inventory.serializers import StrictCharField

VelocitySerializer = inline_serializer(name="Velocity", fields={
    "1d": serializers.FloatField(help_text="Units sold in the last 24 h, rounded to 2 decimals."),
    "7d": serializers.FloatField(help_text="Units sold in the last 7 x 24 h / 7, rounded to 2 decimals."),
    "28d": serializers.FloatField(help_text="Units sold in the last 28 x 24 h / 28, rounded to 2 decimals."),
})



class RequiredHttpUrlField(HttpUrlField):
    """An http(s) URL that may not be blank: the OpenAPI pattern says so too."""

    schema_pattern = f"^[{PY_WHITESPACE}]*({HTTP_URL})[{PY_WHITESPACE}]*$"


class SkuAnalyticsSerializer(serializers.Serializer):
    sku = serializers.CharField()
    available = serializers.IntegerField(help_text="Sum over locations of max(on_hand - reserved, 0); for a bundle, "
                                                   "its derived availability (as GET /stock/{sku}/).")
    velocity = VelocitySerializer
    days_of_cover = serializers.FloatField(allow_null=True,
                                           help_text="available / velocity 7d (2 decimals); null without sales.")
    stockout_at = serializers.DateTimeField(allow_null=True, help_text="now + days_of_cover days; null likewise.")
    lead_time_days = serializers.IntegerField()
    safety_stock = serializers.IntegerField()
    reorder_point = serializers.IntegerField(
        help_text="The SKU's own, or when it has none ceil(velocity 7d x lead_time_days) + safety_stock.")
    at_risk = serializers.BooleanField(help_text="days_of_cover < lead_time_days.")


class SkuAnalyticsListSerializer(serializers.Serializer):
    results = SkuAnalyticsSerializer(many=True)


class FastMoverSerializer(serializers.Serializer):
    sku = serializers.CharField()
    units = serializers.IntegerField(help_text="Units sold in the last `days` x 24 h (a bundle: bundle units; a "
                                               "component: every unit, inside bundles too).")
    velocity = serializers.FloatField(help_text="units / days, rounded to 2 decimals.")


class FastMoverListSerializer(serializers.Serializer):
    results = FastMoverSerializer(many=True)


class HistoryPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="The snapshot's 5-minute bucket.")
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()
    available = serializers.IntegerField()


class StockHistorySerializer(serializers.Serializer):
    sku = serializers.CharField()
    points = HistoryPointSerializer(many=True, help_text="Oldest first; the SKU's totals over its locations.")
    truncated = serializers.BooleanField(help_text="More points than the limit were in the range.")
    next_from = serializers.DateTimeField(required=False,
                                          help_text="When truncated: `from` for the next page of points.")


class SafetyStockChangeSerializer(serializers.Serializer):
    computed_at = serializers.DateTimeField()
    day = serializers.DateField()
    old = serializers.IntegerField()
    new = serializers.IntegerField()
    sigma = serializers.FloatField(help_text="Sample standard deviation of daily units sold.")
    mean = serializers.FloatField()
    z = serializers.FloatField()
    lead_time_days = serializers.IntegerField()
    demand_days = serializers.IntegerField(help_text="Days in the demand series (at most 28).")


class SafetyStockHistorySerializer(serializers.Serializer):
    sku = serializers.CharField()
    dynamic_safety_stock = serializers.BooleanField()
    safety_stock = serializers.IntegerField()
    lead_time_days = serializers.IntegerField()
    changes = SafetyStockChangeSerializer(many=True, help_text="Newest first, at most 100.")


class AlertSerializer(serializers.Serializer):
    """The contract's alert object (also the `alert` of webhook bodies)."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Alert.KINDS)
    sku = serializers.CharField(source="sku.code")
    location = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=["open", "resolved"])
    opened_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    detail = serializers.DictField(help_text="low_stock: available, reorder_point; stockout: available; "
                                             "oversell: incidents, shortfall.")

    def get_location(self, obj) -> str | None:
        return obj.location.code if obj.location_id else None


class AlertSubscriptionSerializer(serializers.Serializer):
    """POST body and answer; the secret is write-only (never answered)."""

    id = serializers.IntegerField(read_only=True)
    # An http(s) URL as channels take it: the pattern the OpenAPI document states is what is accepted.
    url = RequiredHttpUrlField(max_length=2000)
    # Strict: a JSON string only (DRF's CharField would take 5 as "5").
    secret = StrictCharField(write_only=True, max_length=500, trim_whitespace=False)
    kinds = serializers.ListField(child=serializers.ChoiceField(choices=Alert.KINDS),
                                  allow_empty=False, min_length=1)
    created_at = serializers.DateTimeField(read_only=True)

    def to_internal_value(self, data):
        # A misspelt field is refused, not ignored: a subscription created without what its
        # author meant would deliver to the wrong place or for the wrong kinds.
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)
