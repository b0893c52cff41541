"""Input/output shapes only; the rules (stock, states, limits that depend on data) are in services."""

from django.conf import settings
from django.core.validators import MaxValueValidator
from rest_framework import serializers

from inventory.serializers import StrictBooleanField, StrictCharField, StrictIntegerField
from inventory.services import MAX_QUANTITY


def _max_ttl() -> int:
    return int(getattr(settings, "RESERVATION_MAX_TTL_SECONDS", 86400))


def _max_lines() -> int:
    return int(getattr(settings, "RESERVATION_MAX_LINES", 100))


class _SettingsLimitsMixin:
    """Limits read from settings when the serializer is built (not at import), so that both
    validation and the OpenAPI document (maximum, maxItems) follow the running configuration."""

    def get_fields(self):
        fields = super().get_fields()
        if "ttl_seconds" in fields:
            fields["ttl_seconds"].max_value = _max_ttl()
            fields["ttl_seconds"].validators.append(MaxValueValidator(_max_ttl()))
        if "lines" in fields:
            fields["lines"].max_length = _max_lines()
        return fields


class LineInSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=100)
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    location = StrictCharField(max_length=64, required=False, allow_null=True, allow_blank=True)


class ReservationCreateSerializer(_SettingsLimitsMixin, serializers.Serializer):
    """POST /api/v1/reservations/: hold every line or none (`waitlist`: wait for stock instead of 409)."""

    lines = LineInSerializer(many=True, allow_empty=False)
    channel = StrictCharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    order_ref = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    ttl_seconds = StrictIntegerField(min_value=1, required=False)
    waitlist = StrictBooleanField(required=False, default=False)


class ReservationExtendSerializer(_SettingsLimitsMixin, serializers.Serializer):
    """A new hold time, counted from now."""

    ttl_seconds = StrictIntegerField(min_value=1)


class LineOutSerializer(serializers.Serializer):
    sku = serializers.CharField()
    location = serializers.CharField(allow_null=True)
    quantity = serializers.IntegerField()
    bundle = serializers.CharField(required=False, help_text="Present when the line holds a component of this "
                                                             "bundle (the bundle's request line while waiting).")


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
