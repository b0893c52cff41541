"""Channel and listing shapes (CONTRACT.md "Channels"). Secrets are write-only: the output shows
only whether they are set. On output `circuit` is the breaker *state* (health); its settings
read back as `circuit_config`."""

from django.core.validators import RegexValidator
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from channels.models import Channel, ChannelListing, DeadLetter
from core.schema import PY_WHITESPACE
from inventory.models import Location
from inventory.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSlugField,
    StrictSlugRelatedField,
)
from inventory.services import MAX_QUANTITY


class BufferSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=Channel.BufferType.choices)
    value = StrictIntegerField(min_value=0, max_value=1_000_000)

    def validate(self, attrs):
        # A PATCH makes nested fields optional, but a buffer only means something whole.
        missing = [name for name in ("type", "value") if name not in attrs]
        if missing:
            raise serializers.ValidationError({name: "This field is required." for name in missing})
        if attrs["type"] == Channel.BufferType.PERCENT and attrs["value"] > 100:
            raise serializers.ValidationError({"value": "A percent buffer is between 0 and 100."})
        return attrs


class UnitsBufferSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=[Channel.BufferType.UNITS])
    value = StrictIntegerField(min_value=0, max_value=1_000_000, help_text="Units held back from the channel.")


class PercentBufferSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=[Channel.BufferType.PERCENT])
    value = StrictIntegerField(min_value=0, max_value=100, help_text="Percent held back from the channel.")


# The request schema of `buffer` (validation is BufferSerializer's, below): its limit depends on its type.
@extend_schema_field(PolymorphicProxySerializer(
    component_name="Buffer", resource_type_field_name="type",
    serializers={"units": UnitsBufferSerializer, "percent": PercentBufferSerializer}))
class _BufferField(BufferSerializer):
    pass


class RetrySerializer(serializers.Serializer):
    max_attempts = StrictIntegerField(min_value=1, max_value=100, required=False)
    base_delay = StrictFloatField(min_value=0.01, max_value=3600, required=False)
    max_delay = StrictFloatField(min_value=0.01, max_value=86400, required=False)


class CircuitSerializer(serializers.Serializer):
    failure_threshold = StrictIntegerField(min_value=1, max_value=1000, required=False)
    cooldown_seconds = StrictFloatField(min_value=0.1, max_value=86400, required=False)


# An http(s) URL with a host name, IPv4 address or localhost, a port and a path: a part of what
# Django's URLValidator takes, so that the API takes exactly what its OpenAPI document states.
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?"
_OCTET = "(0|25[0-5]|2[0-4][0-9]|1[0-9]?[0-9]?|[1-9][0-9]?)"
_HOST = f"({_LABEL}(\\.{_LABEL}){{0,3}}\\.[A-Za-z]{{2,20}}|{_OCTET}(\\.{_OCTET}){{3}}|localhost)"
_PATH = "/([A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2}){0,200}"  # RFC 3986 path characters
HTTP_URL = f"[hH][tT][tT][pP][sS]?://{_HOST}(:[0-9]{{1,5}})?({_PATH})?"


class HttpUrlField(serializers.URLField):
    """A marketplace's base URL (blank: none). The OpenAPI document states HTTP_URL, not `format: uri`,
    which would promise URLs (ftp://, 300-character hosts) that are refused."""

    schema_pattern = f"^[{PY_WHITESPACE}]*({HTTP_URL})?[{PY_WHITESPACE}]*$"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators.append(RegexValidator(f"^({HTTP_URL})\\Z", message="Enter an http(s) URL."))


class ChannelWriteSerializer(serializers.Serializer):
    slug = StrictSlugField(max_length=64)
    name = StrictCharField(max_length=200)
    kind = serializers.ChoiceField(choices=Channel.Kind.choices)
    base_url = HttpUrlField(max_length=500, required=False, allow_blank=True)
    credentials = serializers.DictField(required=False)
    webhook_secret = StrictCharField(max_length=500, required=False, allow_blank=True, write_only=True)
    default_location = StrictSlugRelatedField(slug_field="code", queryset=Location.objects.all(),
                                              required=False, allow_null=True)
    locations = StrictSlugRelatedField(slug_field="code", queryset=Location.objects.all(), many=True,
                                       required=False)
    authoritative_locations = StrictSlugRelatedField(slug_field="code", queryset=Location.objects.all(),
                                                     many=True, required=False)
    push_enabled = StrictBooleanField(required=False)
    buffer = _BufferField(required=False)
    zero_below = StrictIntegerField(
        min_value=0, max_value=MAX_QUANTITY, required=False,
        help_text="Push 0 when the quantity after safety stock and buffer is below this (default 0: never).")
    max_quantity = StrictIntegerField(
        min_value=0, max_value=MAX_QUANTITY, required=False, allow_null=True,
        help_text="Never push more than this, applied after `zero_below` (default null: no cap).")
    rate_limit_per_second = StrictFloatField(min_value=0.01, max_value=10_000, required=False)
    rate_limit_burst = StrictIntegerField(min_value=1, max_value=10_000, required=False)
    retry = RetrySerializer(required=False)
    circuit = CircuitSerializer(required=False)
    settings = serializers.DictField(required=False)
    active = StrictBooleanField(required=False)


class BufferOutSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=Channel.BufferType.choices)
    value = serializers.IntegerField()


class RetryOutSerializer(serializers.Serializer):
    max_attempts = serializers.IntegerField()
    base_delay = serializers.FloatField()
    max_delay = serializers.FloatField()


class CircuitOutSerializer(serializers.Serializer):
    failure_threshold = serializers.IntegerField()
    cooldown_seconds = serializers.FloatField()


class RevisionBudgetSerializer(serializers.Serializer):
    """eBay's revisions per listing per day, as budgeted (docs/propagation.md#ebay-inventory-api)."""

    day = serializers.DateField(help_text="The marketplace's calendar day the counts belong to.")
    per_listing = serializers.IntegerField(help_text="Revisions budgeted per listing per day.")
    reserve = serializers.IntegerField(help_text="Of those, kept for quantities near zero.")
    low_stock = serializers.IntegerField(help_text="A quantity at or below this may spend the reserve.")
    listings = serializers.IntegerField(help_text="Listings budgeted (variations of one listing count once).")
    used = serializers.IntegerField(help_text="Revisions sent today over all listings.")
    reserve_used = serializers.IntegerField(help_text="Of those, spent from the reserve.")
    remaining = serializers.IntegerField(help_text="Revisions left today over all listings.")
    listings_on_reserve = serializers.IntegerField(help_text="Listings whose normal budget is spent (reserve only).")
    listings_spent = serializers.IntegerField(help_text="Listings with no revision left today.")
    held_back = serializers.IntegerField(help_text="Pushes held back by the budget, waiting in the backlog.")
    next_release_at = serializers.DateTimeField(allow_null=True, help_text="When the first held push is due.")


class ChannelReadSerializer(serializers.ModelSerializer):
    default_location = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    locations = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)
    authoritative_locations = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)
    buffer = serializers.SerializerMethodField()
    zero_below = serializers.IntegerField(
        read_only=True, help_text="Push 0 when the quantity after safety stock and buffer is below this.")
    max_quantity = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Never push more than this (null: no cap).")
    retry = serializers.SerializerMethodField()
    circuit_config = serializers.SerializerMethodField()
    credentials_set = serializers.SerializerMethodField()
    webhook_secret_set = serializers.SerializerMethodField()
    circuit = serializers.ChoiceField(source="circuit_state", choices=Channel.Circuit.choices, read_only=True,
                                      help_text="The circuit breaker's state (its settings: `circuit_config`).")
    backlog = serializers.SerializerMethodField()
    dead_letters = serializers.SerializerMethodField()
    revision_budget = serializers.SerializerMethodField(
        help_text="eBay channels: the day's revision budget per listing, what is left and what is held back; "
                  "null for marketplaces without one.")

    class Meta:
        model = Channel
        fields = [
            "slug", "name", "kind", "base_url", "default_location", "locations", "authoritative_locations",
            "push_enabled", "buffer", "zero_below", "max_quantity", "rate_limit_per_second", "rate_limit_burst",
            "retry", "circuit_config", "settings", "active", "credentials_set", "webhook_secret_set", "created_at",
            "updated_at",
            # health
            "last_success_at", "last_failure_at", "consecutive_failures", "circuit", "backlog", "dead_letters",
            "revision_budget",
        ]

    @extend_schema_field(BufferOutSerializer)
    def get_buffer(self, obj) -> dict:
        return {"type": obj.buffer_type, "value": obj.buffer_value}

    @extend_schema_field(RetryOutSerializer)
    def get_retry(self, obj) -> dict:
        return {"max_attempts": obj.retry_max_attempts, "base_delay": obj.retry_base_delay,
                "max_delay": obj.retry_max_delay}

    @extend_schema_field(CircuitOutSerializer)
    def get_circuit_config(self, obj) -> dict:
        return {"failure_threshold": obj.circuit_failure_threshold, "cooldown_seconds": obj.circuit_cooldown_seconds}

    def get_credentials_set(self, obj) -> list[str]:
        return sorted(obj.credentials)  # the key names only, never the values

    def get_webhook_secret_set(self, obj) -> bool:
        return bool(obj.webhook_secret)

    def get_backlog(self, obj) -> int:
        from channels.selectors import channel_backlog

        annotated = getattr(obj, "backlog_count", None)  # channels_with_health() (list views)
        return annotated if annotated is not None else channel_backlog(channel=obj)

    def get_dead_letters(self, obj) -> int:
        from channels.selectors import channel_dead_letter_count

        annotated = getattr(obj, "dead_letter_count", None)
        return annotated if annotated is not None else channel_dead_letter_count(channel=obj)

    @extend_schema_field(RevisionBudgetSerializer(allow_null=True))
    def get_revision_budget(self, obj) -> dict | None:
        from channels.selectors import channels_revision_budgets

        budgets = self.context.get("revision_budgets")  # list views compute every channel's at once
        if budgets is None:
            budgets = channels_revision_budgets(channels=[obj])
        budget = budgets.get(obj.pk)
        return RevisionBudgetSerializer(budget).data if budget is not None else None


class ListingWriteSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=100)
    external_id = StrictCharField(max_length=200)
    attributes = serializers.DictField(required=False)


class ListingReadSerializer(serializers.ModelSerializer):
    sku = serializers.CharField(source="sku.code")
    channel = serializers.CharField(source="channel.slug")

    class Meta:
        model = ChannelListing
        fields = ["channel", "sku", "external_id", "attributes", "created_at", "updated_at"]


class ChannelStockSerializer(serializers.Serializer):
    """GET /api/v1/channels/{slug}/stock/{sku}/ (contract fields first, then extras)."""

    sku = serializers.CharField()
    available = serializers.IntegerField(help_text="What the channel should show now.")
    last_pushed = serializers.IntegerField(allow_null=True, help_text="What we last told the channel.")
    last_pushed_at = serializers.DateTimeField(allow_null=True)
    channel = serializers.CharField()
    listed = serializers.BooleanField()
    external_id = serializers.CharField(allow_null=True)
    pending = serializers.BooleanField(help_text="A push is waiting (dirty pair in the backlog).")
    last_seen = serializers.IntegerField(allow_null=True, help_text="What reconciliation last read back.")
    last_seen_at = serializers.DateTimeField(allow_null=True)


class DeadLetterSerializer(serializers.ModelSerializer):
    channel = serializers.CharField(source="channel.slug")
    sku = serializers.CharField(source="sku.code")

    class Meta:
        model = DeadLetter
        fields = ["id", "channel", "sku", "quantity", "attempts", "first_error", "last_error", "first_failed_at",
                  "last_failed_at", "created_at", "status", "resolved_at", "resolved_by", "resolution_note"]


class DeadLetterRetryResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    quantity = serializers.IntegerField(allow_null=True, help_text="The quantity pushed (current at retry time).")
    error = serializers.CharField(allow_blank=True)
    queued = serializers.BooleanField()


class DeadLetterRetriedSerializer(DeadLetterSerializer):
    """The dead letter after the retry, and what the retry did."""

    retry = DeadLetterRetryResultSerializer(read_only=True)

    class Meta(DeadLetterSerializer.Meta):
        fields = [*DeadLetterSerializer.Meta.fields, "retry"]


class ChannelResyncSerializer(serializers.Serializer):
    channel = serializers.CharField()
    queued = serializers.IntegerField(help_text="Listings marked to be pushed again.")


class DeadLetterDiscardSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=2000)
