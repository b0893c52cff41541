"""Channel and listing shapes (CONTRACT.md "Channels"). Secrets are write-only: the output shows
only whether they are set. On output `circuit` is the breaker *state* (health); its settings
read back as `circuit_config`."""

from rest_framework import serializers

from channels.models import Channel, ChannelListing, DeadLetter
from inventory.models import Location
from inventory.serializers import StrictCharField, StrictFloatField, StrictIntegerField


class BufferSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=Channel.BufferType.choices)
    value = StrictIntegerField(min_value=0, max_value=1_000_000)

    def validate(self, attrs):
        if attrs["type"] == Channel.BufferType.PERCENT and attrs["value"] > 100:
            raise serializers.ValidationError({"value": "A percent buffer is between 0 and 100."})
        return attrs


class RetrySerializer(serializers.Serializer):
    max_attempts = StrictIntegerField(min_value=1, max_value=100, required=False)
    base_delay = StrictFloatField(min_value=0.01, max_value=3600, required=False)
    max_delay = StrictFloatField(min_value=0.01, max_value=86400, required=False)


class CircuitSerializer(serializers.Serializer):
    failure_threshold = StrictIntegerField(min_value=1, max_value=1000, required=False)
    cooldown_seconds = StrictFloatField(min_value=0.1, max_value=86400, required=False)


class ChannelWriteSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=64)
    name = StrictCharField(max_length=200)
    kind = serializers.ChoiceField(choices=Channel.Kind.choices)
    base_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    credentials = serializers.DictField(required=False)
    webhook_secret = StrictCharField(max_length=500, required=False, allow_blank=True, write_only=True)
    default_location = serializers.SlugRelatedField(slug_field="code", queryset=Location.objects.all(),
                                                    required=False, allow_null=True)
    locations = serializers.SlugRelatedField(slug_field="code", queryset=Location.objects.all(), many=True,
                                             required=False)
    authoritative_locations = serializers.SlugRelatedField(slug_field="code", queryset=Location.objects.all(),
                                                           many=True, required=False)
    push_enabled = serializers.BooleanField(required=False)
    buffer = BufferSerializer(required=False)
    rate_limit_per_second = StrictFloatField(min_value=0.01, max_value=10_000, required=False)
    rate_limit_burst = StrictIntegerField(min_value=1, max_value=10_000, required=False)
    retry = RetrySerializer(required=False)
    circuit = CircuitSerializer(required=False)
    settings = serializers.DictField(required=False)
    active = serializers.BooleanField(required=False)


class ChannelReadSerializer(serializers.ModelSerializer):
    default_location = serializers.SlugRelatedField(slug_field="code", read_only=True)
    locations = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)
    authoritative_locations = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)
    buffer = serializers.SerializerMethodField()
    retry = serializers.SerializerMethodField()
    circuit_config = serializers.SerializerMethodField()
    credentials_set = serializers.SerializerMethodField()
    webhook_secret_set = serializers.SerializerMethodField()
    circuit = serializers.CharField(source="circuit_state", read_only=True)
    backlog = serializers.SerializerMethodField()
    dead_letters = serializers.SerializerMethodField()

    class Meta:
        model = Channel
        fields = [
            "slug", "name", "kind", "base_url", "default_location", "locations", "authoritative_locations",
            "push_enabled", "buffer", "rate_limit_per_second", "rate_limit_burst", "retry", "circuit_config",
            "settings", "active", "credentials_set", "webhook_secret_set", "created_at", "updated_at",
            # health
            "last_success_at", "last_failure_at", "consecutive_failures", "circuit", "backlog", "dead_letters",
        ]

    def get_buffer(self, obj) -> dict:
        return {"type": obj.buffer_type, "value": obj.buffer_value}

    def get_retry(self, obj) -> dict:
        return {"max_attempts": obj.retry_max_attempts, "base_delay": obj.retry_base_delay,
                "max_delay": obj.retry_max_delay}

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


class DeadLetterDiscardSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=2000)
