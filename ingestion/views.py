"""HTTP entry points: marketplace webhooks (plain Django, signature-authenticated) and the
canonical events API (DRF, API keys)."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from channels.adapters import ADAPTERS
from channels.adapters.base import ChannelAdapter
from channels.models import Channel
from channels.selectors import channel_get
from core.errors import ValidationFailed, json_error
from core.idempotency import IdempotencyMixin
from core.jsonsafe import json_parse
from core.pagination import PageNumberPagination
from core.parsing import MAX_BIGINT, ascii_int
from core.schema import error_responses
from ingestion import selectors, services
from ingestion.kept_channels import KeptChannels
from ingestion.models import InboundEvent
from ingestion.serializers import (
    EventBatchResultSerializer,
    EventBatchSerializer,
    InboundEventDetailSerializer,
    InboundEventSerializer,
    OversellIncidentSerializer,
    ReprocessSerializer,
    RequeuedSerializer,
)

EVENT_ID = OpenApiParameter("id", {"type": "integer", "minimum": 0, "maximum": MAX_BIGINT}, OpenApiParameter.PATH)
EVENT_NOT_FOUND = error_responses(e404="`event_not_found`.")


def _filter(name: str, description: str = "") -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.STR, description=description)


def _status_filter(values: list[str]) -> OpenApiParameter:
    # An empty value is no filter, as for every other filter here.
    return OpenApiParameter("status", OpenApiTypes.STR, enum=["", *values], description="Empty: every status.")


def _receives_webhooks(adapter: ChannelAdapter | None) -> bool:
    return adapter is not None and type(adapter).verify_webhook is not ChannelAdapter.verify_webhook


DISCARD_CAP = 16 * 1024 * 1024  # a refused body up to this size is read (and dropped) before answering 413
READ_CHUNK = 64 * 1024


def _too_large(limit: int) -> JsonResponse:
    return json_error(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")


def webhook_body_read(request, limit: int) -> bytes | JsonResponse:
    """The webhook's body (at most `limit` bytes), or the error response to send instead.

    - Content-Length over the limit: 413 without keeping the body, but the declared bytes (up to
      DISCARD_CAP) are read and dropped first, so a keep-alive connection is not left with unread
      bytes that the next request on it would be parsed from.
    - No Content-Length and `Transfer-Encoding: chunked`: Django reads such a body as empty (its
      stream is limited to CONTENT_LENGTH, i.e. 0), which made a valid chunked webhook a 401 and a
      1.1 MiB one a 401 instead of a 413. The body is read from `wsgi.input` directly when the
      server de-chunks it and ends it (PEP 3333's `wsgi.input_terminated`, set by gunicorn),
      still at most limit + 1 bytes; a server that does not (Django's runserver) gets 411.
    - Otherwise at most limit + 1 bytes are read: more than `limit` is a 413 whatever
      Content-Length claimed.
    """
    meta = request.META
    declared = ascii_int(meta.get("CONTENT_LENGTH") or "0", maximum=None)  # not "٣", not "²"
    if declared is None:
        return json_error(400, "invalid_content_length", "Content-Length must be a number of bytes.")
    if declared > limit:
        remaining = declared if declared <= DISCARD_CAP else 0  # beyond: not worth reading
        while remaining > 0:  # request.read is bounded by CONTENT_LENGTH: never blocks past the body
            chunk = request.read(min(READ_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
        return _too_large(limit)
    chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and not meta.get("CONTENT_LENGTH"):
        if not meta.get("wsgi.input_terminated"):
            return json_error(411, "length_required",
                              "This server cannot read a chunked body here; send Content-Length.")
        body = _read_at_most(meta["wsgi.input"], limit + 1)
    else:
        body = request.read(limit + 1)
    if len(body) > limit:
        return _too_large(limit)
    return body


def _read_at_most(stream, size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        chunk = stream.read(min(READ_CHUNK, left))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


# The channel a webhook names, kept in the process for WEBHOOK_CHANNEL_CACHE_SECONDS (default 5):
# the lookup (a wide row: credentials, settings, health) was 40% of an ack's CPU. A change saved
# here (admin, API, services) forgets it at once; another process sees a changed secret or a
# deactivation within that window (docs/performance.md, ingestion.kept_channels).
_channels = KeptChannels("WEBHOOK_CHANNEL_CACHE_SECONDS")


def _channel_for_webhook(slug: str) -> Channel | None:
    channel = _channels.get(slug)
    if channel is None:
        channel = selectors.channel_for_webhook(slug=slug)
        if channel is not None:
            _channels.put(slug, channel)
    return channel


@csrf_exempt
def webhook_receive(request, slug: str):
    """POST /webhooks/{slug}/: verify with the channel's scheme, store, answer 200.

    No processing happens here (the drain does it), so the answer never waits on stock locks or
    on the marketplace's API. 401 stores nothing; 413 is decided on Content-Length when it says
    so, and again on the bytes actually read (webhook_body_read).
    """
    if request.method != "POST":
        return json_error(405, "method_not_allowed", "Webhooks are delivered with POST.")
    limit = services.MAX_WEBHOOK_BYTES
    body = webhook_body_read(request, limit)
    if not isinstance(body, bytes):
        return body
    channel = _channel_for_webhook(slug)
    if channel is None:
        return json_error(404, "channel_not_found", f"No active channel '{slug}'.")
    adapter = ADAPTERS.get(channel.kind)
    if not _receives_webhooks(adapter):
        return json_error(404, "webhooks_not_supported",
                          f"Channel kind '{channel.kind}' does not deliver webhooks here.")
    if getattr(adapter, "is_ping", None) and adapter.is_ping(channel, request.headers, body):
        return JsonResponse({"status": "ok"})  # WooCommerce's unsigned creation ping
    if not adapter.verify_webhook(channel, request.headers, body):
        return json_error(401, "invalid_signature", "Missing or invalid webhook signature.")
    accepted = services.webhook_accept(channel=channel, adapter=adapter, headers=request.headers, body=body)
    if accepted.duplicate:
        return JsonResponse({"status": "duplicate"})
    return JsonResponse({"status": "accepted", "id": accepted.event_id})


class EventsJSONParser(JSONParser):
    """Strict JSON (no NaN/Infinity, finite numbers, bounded nesting: a 400 for the request), but
    strings are left to per-item validation: a NUL or lone surrogate in one event rejects that
    event in "rejected" (channels.adapters.canonical), and the rest of the batch is accepted."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            return json_parse(raw, check_text=False)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class EventListCreate(IdempotencyMixin, APIView):
    required_scopes = {"POST": "events:write", "GET": "ops"}
    parser_classes = [EventsJSONParser]
    pagination_class = PageNumberPagination

    @extend_schema(
        request=EventBatchSerializer,
        responses={202: EventBatchResultSerializer,
                   **error_responses(e400='`validation_error`: the body is not `{"events": [1 to 1000 items]}`.')},
    )
    def post(self, request):
        data = request.data
        if not isinstance(data, dict) or "events" not in data:
            raise ValidationFailed("Body must be {\"events\": [...]}.", code="validation_error")
        result = services.events_accept(events=data["events"])
        return Response(result.as_dict(), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[_status_filter(list(InboundEvent.Status.values)), _filter("channel", "channel slug"),
                    _filter("source", "`webhook` or `api`"), _filter("topic"), _filter("error", "error code")],
        responses={200: InboundEventSerializer(many=True), **error_responses(e400="`invalid_status`.")})
    def get(self, request):
        params = request.query_params
        qs = selectors.inbound_events_list(status=params.get("status"), channel_slug=params.get("channel"),
                                           source=params.get("source"), topic=params.get("topic"),
                                           error_code=params.get("error"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(InboundEventSerializer(page, many=True).data)


class EventDetail(APIView):
    required_scopes = {"GET": "ops"}

    @extend_schema(parameters=[EVENT_ID], responses={200: InboundEventDetailSerializer, **EVENT_NOT_FOUND})
    def get(self, request, pk: int):
        return Response(InboundEventDetailSerializer(selectors.inbound_event_get(pk=pk)).data)


class EventReprocessOne(IdempotencyMixin, APIView):
    required_scopes = {"POST": "ops"}

    @extend_schema(request=None, parameters=[EVENT_ID], responses={202: RequeuedSerializer, **EVENT_NOT_FOUND})
    def post(self, request, pk: int):
        selectors.inbound_event_get(pk=pk)
        queued = services.inbound_events_reprocess(ids=[pk])
        return Response({"requeued": queued}, status=status.HTTP_202_ACCEPTED)


class EventReprocess(IdempotencyMixin, APIView):
    """Reprocess failed events in bulk, e.g. `{"error": "unknown_sku"}` after loading SKUs."""

    required_scopes = {"POST": "ops"}

    @extend_schema(request=ReprocessSerializer, operation_id="v1_events_reprocess_bulk_create",
                   responses={202: RequeuedSerializer, **error_responses(e404="`channel_not_found`.")})
    def post(self, request):
        serializer = ReprocessSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        channel = channel_get(slug=data["channel"]) if data.get("channel") else None
        queued = services.inbound_events_reprocess(
            ids=data.get("ids"), channel=channel, statuses=(data.get("status", "failed"),),
            error_code=data.get("error"))
        return Response({"requeued": queued}, status=status.HTTP_202_ACCEPTED)


class OversellIncidentList(APIView):
    required_scopes = {"GET": "ops"}
    pagination_class = PageNumberPagination

    @extend_schema(
        parameters=[_filter("channel", "channel slug"), _filter("sku", "SKU code"),
                    _filter("open", "`1` or `true`: only unresolved incidents; any other value: all.")],
        responses=OversellIncidentSerializer(many=True))
    def get(self, request):
        params = request.query_params
        qs = selectors.oversell_incidents_list(channel_slug=params.get("channel"), sku_code=params.get("sku"),
                                               open_only=params.get("open") in ("1", "true"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(OversellIncidentSerializer(page, many=True).data)
