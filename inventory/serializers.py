"""Input/output shapes only; no business rules here (those live in services)."""

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers
from rest_framework.relations import MANY_RELATION_KWARGS

from core.schema import PY_WHITESPACE
from inventory.catalog import MAX_COMPONENTS
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


class StrictSlugField(serializers.SlugField):
    """A slug given as a JSON string (DRF would take the number 12 as "12")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true/false only: "yes", 1 or "false" (a truthy string) are client bugs, not booleans."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictManyRelatedField(serializers.ManyRelatedField):
    """A JSON array of references (DRF iterates any iterable: {} would be read as no locations)."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        return super().to_internal_value(data)


class StrictSlugRelatedField(serializers.SlugRelatedField):
    """A reference by code given as a JSON string (the lookup would otherwise find code "0" for 0).
    No reference is null, not "" (which DRF would quietly read as null)."""

    def run_validation(self, data=serializers.empty):
        if data == "":
            self.fail("invalid")
        return super().run_validation(data)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)

    @classmethod
    def many_init(cls, *args, **kwargs):
        list_kwargs = {"child_relation": cls(*args, **kwargs)}
        list_kwargs.update({key: value for key, value in kwargs.items() if key in MANY_RELATION_KWARGS})
        return StrictManyRelatedField(**list_kwargs)


# A century: longer lead times are typing errors (and would overflow nothing, but mean nothing).
MAX_LEAD_TIME_DAYS = 36500

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


class CodeField(StrictCharField):
    """A code (validate_code) in the OpenAPI document: no '/', no control character, not 'adjustments'."""

    schema_forbidden_characters = "/\\x00-\\x1f\\x7f"
    schema_not_pattern = f"^[{PY_WHITESPACE}]*[aA][dD][jJ][uU][sS][tT][mM][eE][nN][tT][sS][{PY_WHITESPACE}]*$"


class LocationSerializer(serializers.ModelSerializer):
    code = CodeField(max_length=64, validators=[validate_code])
    name = StrictCharField(max_length=200)
    # A JSON integer within PostgreSQL's integer (the model field's plain IntegerField takes "٣").
    priority = StrictIntegerField(min_value=-(2**31), max_value=2**31 - 1, required=False)
    active = StrictBooleanField(required=False)

    class Meta:
        model = Location
        fields = ["code", "name", "kind", "active", "priority", "created_at"]
        read_only_fields = ["created_at"]


class ComponentSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=100, help_text="The component's SKU code (not itself a bundle).")
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY, help_text="Units of it in one bundle.")


class _ComponentsField(serializers.ListField):
    """Write: [{"sku", "quantity"}]; read: the bundle's components (empty for a plain SKU)."""

    def to_representation(self, value):
        return [{"sku": part.component.code, "quantity": part.quantity} for part in value.all()]


class SkuSerializer(serializers.ModelSerializer):
    # Duplicate codes answer 409 from the service, not a 400 from a uniqueness validator.
    code = CodeField(max_length=100, validators=[validate_code])
    name = StrictCharField(max_length=300)
    safety_stock = StrictIntegerField(min_value=0, max_value=MAX_QUANTITY, required=False)
    active = StrictBooleanField(required=False)
    lead_time_days = StrictIntegerField(min_value=0, max_value=MAX_LEAD_TIME_DAYS, required=False,
                                        help_text="Days from reorder to stock on the shelf (default 7).")
    reorder_point = StrictIntegerField(min_value=0, max_value=MAX_QUANTITY, required=False, allow_null=True,
                                       help_text="Low-stock threshold; null: computed from velocity (analytics).")
    dynamic_safety_stock = StrictBooleanField(required=False,
                                              help_text="Recompute safety_stock daily from demand (default false).")
    components = _ComponentsField(
        child=ComponentSerializer(), required=False, max_length=MAX_COMPONENTS,
        help_text="A non-empty list makes the SKU a bundle (kit) holding no stock of its own; set at creation "
                  "only. A bundle cannot be a component.")

    class Meta:
        model = Sku
        fields = ["code", "name", "safety_stock", "active", "lead_time_days", "reorder_point", "dynamic_safety_stock",
                  "components", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class AdjustmentSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=100)
    location = StrictCharField(max_length=64)
    type = serializers.ChoiceField(choices=ADJUSTMENT_TYPES)
    quantity = StrictIntegerField(min_value=-MAX_QUANTITY, max_value=MAX_QUANTITY)
    to_location = StrictCharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    reference = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    expected_version = StrictIntegerField(min_value=0, required=False, allow_null=True)


# --- POST /stock/adjustments/ as the OpenAPI document shows it: one shape per type, with the rules
# inventory.services._validate applies (the view validates with AdjustmentSerializer above).


class _AdjustmentCommon(serializers.Serializer):
    sku = StrictCharField(max_length=100)
    location = StrictCharField(max_length=64)
    reference = StrictCharField(max_length=200, required=False, allow_blank=True)
    expected_version = StrictIntegerField(
        min_value=0, required=False, allow_null=True,
        help_text="The position version this change expects, else 412 (an If-Match header says the same).")


@extend_schema_field({"type": "string", "nullable": True, "pattern": f"^[{PY_WHITESPACE}]*$",
                      "description": "Only transfers name a destination: absent, null or blank."})
class _NoDestinationField(StrictCharField):
    pass


@extend_schema_field({"type": "integer", "minimum": -MAX_QUANTITY, "maximum": MAX_QUANTITY, "not": {"enum": [0]},
                      "description": "Signed, not 0: added to on_hand (refused below 0)."})
class _SignedQuantityField(StrictIntegerField):
    pass


class StockMoveSerializer(_AdjustmentCommon):
    """receipt, return (+ quantity) or sale (- quantity, at most what is available)."""

    type = serializers.ChoiceField(choices=["receipt", "return", "sale"])
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    to_location = _NoDestinationField(required=False, allow_null=True, allow_blank=True)


class StockAdjustmentSerializer(_AdjustmentCommon):
    """adjustment: a signed correction."""

    type = serializers.ChoiceField(choices=["adjustment"])
    quantity = _SignedQuantityField()
    to_location = _NoDestinationField(required=False, allow_null=True, allow_blank=True)


class StockCountSerializer(_AdjustmentCommon):
    """count: on_hand becomes quantity (the difference is written to the ledger)."""

    type = serializers.ChoiceField(choices=["count"])
    quantity = StrictIntegerField(min_value=0, max_value=MAX_QUANTITY)
    to_location = _NoDestinationField(required=False, allow_null=True, allow_blank=True)


class StockTransferSerializer(_AdjustmentCommon):
    """transfer: quantity leaves location and arrives at to_location (another location), one transaction."""

    type = serializers.ChoiceField(choices=["transfer"])
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    to_location = StrictCharField(max_length=64, help_text="Another location than `location`.")


ADJUSTMENT_REQUEST = PolymorphicProxySerializer(
    component_name="Adjustment",
    serializers={"receipt": StockMoveSerializer, "return": StockMoveSerializer, "sale": StockMoveSerializer,
                 "adjustment": StockAdjustmentSerializer, "count": StockCountSerializer,
                 "transfer": StockTransferSerializer},
    resource_type_field_name="type",
)


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
    bundle = serializers.BooleanField(required=False, help_text="Present (true) for a bundle: numbers derived "
                                                                "from its components.")


class StockListSerializer(serializers.Serializer):
    results = StockSerializer(many=True, help_text="In the order asked; unknown SKUs are left out.")


class MovementSerializer(serializers.ModelSerializer):
    location = serializers.CharField(source="location.code")

    class Meta:
        model = StockMovement
        fields = ["id", "location", "type", "on_hand_delta", "reserved_delta", "on_hand_after",
                  "reserved_after", "source", "reference", "occurred_at", "recorded_at"]
