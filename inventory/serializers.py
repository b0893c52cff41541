"""Input/output shapes only; no business rules here (those live in services)."""

from rest_framework import serializers

from inventory.models import Location, Sku, StockMovement
from inventory.services import ADJUSTMENT_TYPES, MAX_QUANTITY


class StrictIntegerField(serializers.IntegerField):
    """An integer that refuses strings, floats and booleans: a client sending "5" or 5.0 has a bug."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number (integer or float), never a string: DRF's FloatField reads "٣" as 3.0."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string that refuses numbers and booleans instead of silently converting them."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# Codes are path segments in the API (/stock/{sku}/): no slashes, no control characters, no
# surrounding spaces, and not a word the routes use themselves.
RESERVED_CODES = {"adjustments"}


def validate_code(value: str) -> str:
    if value != value.strip() or not value:
        raise serializers.ValidationError("Codes may not be empty or start or end with spaces.")
    if "/" in value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise serializers.ValidationError("Codes may not contain '/' or control characters.")
    if value.lower() in RESERVED_CODES:
        raise serializers.ValidationError(f"'{value}' is reserved.")
    return value


class LocationSerializer(serializers.ModelSerializer):
    code = StrictCharField(max_length=64, validators=[validate_code])
    name = StrictCharField(max_length=200)
    # A JSON integer within PostgreSQL's integer (the model field's plain IntegerField takes "٣").
    priority = StrictIntegerField(min_value=-(2**31), max_value=2**31 - 1, required=False)

    class Meta:
        model = Location
        fields = ["code", "name", "kind", "active", "priority", "created_at"]
        read_only_fields = ["created_at"]


class SkuSerializer(serializers.ModelSerializer):
    # Duplicate codes answer 409 from the service, not a 400 from a uniqueness validator.
    code = StrictCharField(max_length=100, validators=[validate_code])
    name = StrictCharField(max_length=300)
    safety_stock = StrictIntegerField(min_value=0, max_value=MAX_QUANTITY, required=False)

    class Meta:
        model = Sku
        fields = ["code", "name", "safety_stock", "active", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class AdjustmentSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=100)
    location = StrictCharField(max_length=64)
    type = serializers.ChoiceField(choices=ADJUSTMENT_TYPES)
    quantity = StrictIntegerField(min_value=-MAX_QUANTITY, max_value=MAX_QUANTITY)
    to_location = StrictCharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    reference = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    expected_version = StrictIntegerField(min_value=0, required=False, allow_null=True)


class PositionOutSerializer(serializers.Serializer):
    sku = serializers.CharField()
    location = serializers.CharField()
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()
    available = serializers.IntegerField()
    version = serializers.IntegerField()


class AdjustmentResultSerializer(serializers.Serializer):
    movements = serializers.ListField(child=serializers.IntegerField())
    positions = PositionOutSerializer(many=True)


class LocationStockSerializer(serializers.Serializer):
    location = serializers.CharField()
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()
    available = serializers.IntegerField()
    version = serializers.IntegerField()


class StockSerializer(serializers.Serializer):
    sku = serializers.CharField()
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()
    available = serializers.IntegerField()
    locations = LocationStockSerializer(many=True)


class MovementSerializer(serializers.ModelSerializer):
    location = serializers.CharField(source="location.code")

    class Meta:
        model = StockMovement
        fields = ["id", "location", "type", "on_hand_delta", "reserved_delta", "on_hand_after",
                  "reserved_after", "source", "reference", "occurred_at", "recorded_at"]
