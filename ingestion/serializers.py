"""Shapes of the ingestion API (CONTRACT.md "Events and webhooks")."""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from channels.adapters.canonical import EVENT_TYPES, MAX_BATCH
from core.parsing import MAX_BIGINT
from ingestion.models import InboundEvent, OversellIncident
from inventory.serializers import StrictCharField, StrictIntegerField, StrictSlugField


class CanonicalEventSerializer(serializers.Serializer):
    """Documentation of one canonical event; validation is per item in channels.adapters.canonical."""

    event_id = serializers.CharField(max_length=200, help_text="Deduplicates forever: a repeat is a duplicate.")
    type = serializers.ChoiceField(choices=list(EVENT_TYPES))
    sku = serializers.CharField(max_length=100)
    location = serializers.CharField(max_length=64)
    quantity = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    to_location = serializers.CharField(max_length=64, required=False)
    source = serializers.CharField(max_length=100, required=False)
    reference = serializers.CharField(max_length=200, required=False)


class BatchItemField(serializers.JSONField):
    """One item of a batch. Items are checked one by one, so any JSON value is taken: one that is not
    a valid canonical event is answered in `rejected` and the rest of the batch is still stored."""


class BatchItemFieldExtension(OpenApiSerializerFieldExtension):
    target_class = BatchItemField

    def map_serializer_field(self, auto_schema, direction):
        event = auto_schema.resolve_serializer(CanonicalEventSerializer, direction).ref
        return {"anyOf": [event, {"description": "Anything else: reported in `rejected` with its index."}]}


class EventBatchSerializer(serializers.Serializer):
    events = serializers.ListField(child=BatchItemField(), min_length=1, max_length=MAX_BATCH)


class RejectedSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the event in `events`.")
    error = serializers.CharField(help_text="e.g. `invalid_quantity`, `sku_required`.")
    detail = serializers.CharField()


class RequeuedSerializer(serializers.Serializer):
    requeued = serializers.IntegerField(help_text="Events put back in the queue.")


class EventBatchResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = RejectedSerializer(many=True)


class InboundEventSerializer(serializers.ModelSerializer):
    channel = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)

    class Meta:
        model = InboundEvent
        fields = ("id", "channel", "source", "delivery_id", "topic", "status", "attempts", "next_attempt_at",
                  "error_code", "last_error", "received_at", "processed_at", "processed_by", "outcome")


class InboundEventDetailSerializer(InboundEventSerializer):
    body = serializers.SerializerMethodField()

    class Meta(InboundEventSerializer.Meta):
        fields = InboundEventSerializer.Meta.fields + ("headers", "payload", "fetched", "body")

    def get_body(self, obj) -> str | None:
        return bytes(obj.body).decode("utf-8", "replace") if obj.body is not None else None


class ReprocessSerializer(serializers.Serializer):
    # JSON integers only: a plain IntegerField reads the string "٣" as event 3.
    ids = serializers.ListField(child=StrictIntegerField(min_value=1, max_value=MAX_BIGINT), required=False,
                                max_length=10000)
    channel = StrictSlugField(required=False)
    status = serializers.ChoiceField(choices=["failed", "ignored", "done"], required=False)
    error = StrictCharField(max_length=64, required=False)


class OversellIncidentSerializer(serializers.ModelSerializer):
    channel = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    sku = serializers.SlugRelatedField(slug_field="code", read_only=True)
    location = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = OversellIncident
        fields = ("id", "channel", "sku", "location", "order_ref", "requested", "available_before", "applied",
                  "shortfall", "created_at", "resolved_at", "resolution_note", "inbound_event")
