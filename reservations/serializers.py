"""Input/output shapes only; the rules (stock, states, limits that depend on data) are in services."""

from django.conf import settings
from rest_framework import serializers

from inventory.serializers import StrictCharField, StrictIntegerField
from inventory.services import MAX_QUANTITY


class StrictBooleanField(serializers.BooleanField):
    """true/false only: "yes", 1 or "false" (a truthy string) are client bugs, not booleans."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def _max_ttl() -> int:
    return int(getattr(settings, "RESERVATION_MAX_TTL_SECONDS", 86400))


class LineInSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=100)
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    location = StrictCharField(max_length=64, required=False, allow_null=True, allow_blank=True)


class ReservationCreateSerializer(serializers.Serializer):
    lines = LineInSerializer(many=True, allow_empty=False)
    channel = StrictCharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    order_ref = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    ttl_seconds = StrictIntegerField(min_value=1, required=False)
    waitlist = StrictBooleanField(required=False, default=False)

    def validate_ttl_seconds(self, value):
        if value > _max_ttl():
            raise serializers.ValidationError(f"Ensure this value is less than or equal to {_max_ttl()}.")
        return value

    def validate_lines(self, value):
        limit = int(getattr(settings, "RESERVATION_MAX_LINES", 100))
        if len(value) > limit:
            raise serializers.ValidationError(f"At most {limit} lines per reservation.")
        return value


class ReservationExtendSerializer(serializers.Serializer):
    ttl_seconds = StrictIntegerField(min_value=1)

    def validate_ttl_seconds(self, value):
        if value > _max_ttl():
            raise serializers.ValidationError(f"Ensure this value is less than or equal to {_max_ttl()}.")
        return value


class LineOutSerializer(serializers.Serializer):
    sku = serializers.CharField()
    location = serializers.CharField(allow_null=True)
    quantity = serializers.IntegerField()


class ReservationOutSerializer(serializers.Serializer):
    """Documentation of the response (built by reservations.selectors.reservation_to_dict)."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["active", "committed", "released", "expired", "waiting"])
    channel = serializers.CharField(allow_null=True)
    order_ref = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)
    ttl_seconds = serializers.IntegerField()
    lines = LineOutSerializer(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    activated_at = serializers.DateTimeField(allow_null=True)
    closed_at = serializers.DateTimeField(allow_null=True)
