from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from channels import selectors, services
from channels.models import DeadLetter
from channels.serializers import (
    ChannelReadSerializer,
    ChannelResyncSerializer,
    ChannelStockSerializer,
    ChannelWriteSerializer,
    DeadLetterDiscardSerializer,
    DeadLetterRetriedSerializer,
    DeadLetterRetryResultSerializer,
    DeadLetterSerializer,
    ListingReadSerializer,
    ListingWriteSerializer,
)
from core.errors import NotFound, ValidationFailed
from core.idempotency import IdempotencyMixin
from core.pagination import PageNumberPagination
from core.parsing import ascii_int
from core.schema import error_responses

# Operations staff read channel health with an `ops` key; configuring needs `channels:write`.
CHANNEL_SCOPES = {"GET": ("channels:write", "ops"), "POST": "channels:write", "PATCH": "channels:write"}

CHANNEL_NOT_FOUND = error_responses(e404="`channel_not_found`.")
DEAD_LETTER_ID = OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                                  description="A dead letter's id (ASCII digits; anything else is 404).")
DEAD_LETTER_NOT_FOUND = error_responses(e404="`dead_letter_not_found`.")


class ChannelListCreate(IdempotencyMixin, APIView):
    required_scopes = CHANNEL_SCOPES

    @extend_schema(responses=ChannelReadSerializer(many=True))
    def get(self, request):
        channels = list(selectors.channels_with_health().prefetch_related(
            "locations", "authoritative_locations").select_related("default_location"))
        budgets = selectors.channels_revision_budgets(channels=channels)  # a few queries for all channels
        return Response(ChannelReadSerializer(channels, many=True, context={"revision_budgets": budgets}).data)

    @extend_schema(request=ChannelWriteSerializer, responses={
        201: ChannelReadSerializer,
        **error_responses(e400="`validation_error`, e.g. a location code that does not exist.",
                          e409="`duplicate_channel`: the slug is taken."),
    })
    def post(self, request):
        serializer = ChannelWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = services.channel_create(**serializer.validated_data)
        return Response(ChannelReadSerializer(channel).data, status=status.HTTP_201_CREATED)


class ChannelDetail(IdempotencyMixin, APIView):
    required_scopes = CHANNEL_SCOPES

    @extend_schema(responses={200: ChannelReadSerializer, **CHANNEL_NOT_FOUND})
    def get(self, request, slug):
        return Response(ChannelReadSerializer(selectors.channel_get(slug=slug)).data)

    @extend_schema(request=ChannelWriteSerializer, responses={
        200: ChannelReadSerializer, **CHANNEL_NOT_FOUND,
        **error_responses(e400="`validation_error`, e.g. a location code that does not exist.")})
    def patch(self, request, slug):
        channel = selectors.channel_get(slug=slug)
        serializer = ChannelWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        channel = services.channel_update(channel=channel, **serializer.validated_data)
        return Response(ChannelReadSerializer(channel).data)


class ListingListCreate(IdempotencyMixin, APIView):
    required_scopes = CHANNEL_SCOPES
    pagination_class = PageNumberPagination

    @extend_schema(responses={200: ListingReadSerializer(many=True), **CHANNEL_NOT_FOUND})
    def get(self, request, slug):
        channel = selectors.channel_get(slug=slug)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.listings_for_channel(channel=channel), request, view=self)
        return paginator.get_paginated_response(ListingReadSerializer(page, many=True).data)

    @extend_schema(request=ListingWriteSerializer, responses={
        201: ListingReadSerializer,
        **error_responses(e404="`channel_not_found` or `sku_not_found`.",
                          e409="`duplicate_external_id` or `duplicate_listing`.")})
    def post(self, request, slug):
        channel = selectors.channel_get(slug=slug)
        serializer = ListingWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        listing, _created = services.listing_upsert(channel=channel, **serializer.validated_data)
        return Response(ListingReadSerializer(listing).data,
                        status=status.HTTP_201_CREATED)  # created or re-mapped: the contract's 201


class ChannelStock(APIView):
    """What a channel should show for one SKU, and what it was last told."""

    required_scopes = {"GET": "stock:read"}

    @extend_schema(responses={200: ChannelStockSerializer,
                              **error_responses(e404="`channel_not_found` or `sku_not_found`.")})
    def get(self, request, slug, sku):
        channel = selectors.channel_get(slug=slug)
        return Response(ChannelStockSerializer(selectors.channel_stock(channel=channel, sku_code=sku)).data)


class ChannelResync(IdempotencyMixin, APIView):
    """Re-push every listing of the channel, even those whose quantity looks unchanged."""

    required_scopes = {"POST": "channels:write"}

    @extend_schema(request=None, responses={202: ChannelResyncSerializer, **CHANNEL_NOT_FOUND})
    def post(self, request, slug):
        from channels.propagation import channel_mark_all

        channel = selectors.channel_get(slug=slug)
        with transaction.atomic():
            marked = channel_mark_all(channel=channel, force=True)
        return Response({"channel": channel.slug, "queued": marked}, status=status.HTTP_202_ACCEPTED)


class DeadLetterList(APIView):
    required_scopes = {"GET": "ops"}
    pagination_class = PageNumberPagination

    @extend_schema(
        responses={200: DeadLetterSerializer(many=True),
                   **error_responses(e400="`invalid_status`.", e404="`channel_not_found`.")},
        parameters=[
            OpenApiParameter("channel", str, description="channel slug"),
            OpenApiParameter("status", str, enum=["all", *DeadLetter.Status.values],
                             description="`open` when absent; `all` for every status."),
        ])
    def get(self, request):
        wanted = request.query_params.get("status", DeadLetter.Status.OPEN)
        if wanted != "all" and wanted not in DeadLetter.Status.values:
            raise ValidationFailed(f"status must be one of: all, {', '.join(DeadLetter.Status.values)}.",
                                   code="invalid_status")
        qs = selectors.dead_letters_list(channel_slug=request.query_params.get("channel") or None,
                                         status=None if wanted == "all" else wanted)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(DeadLetterSerializer(page, many=True).data)


def _dead_letter_id(value: str) -> int:
    # The path segment is any string; only ASCII digits name a dead letter ("²".isdigit() is True).
    pk = ascii_int(value)
    if pk is None:
        raise NotFound(f"Unknown dead letter {value[:40]}.", code="dead_letter_not_found")
    return pk


class DeadLetterRetry(IdempotencyMixin, APIView):
    """Push the quantity current now (not the stale one recorded) and close the dead letter."""

    required_scopes = {"POST": "ops"}

    @extend_schema(request=None, parameters=[DEAD_LETTER_ID], responses={
        200: DeadLetterRetriedSerializer, **DEAD_LETTER_NOT_FOUND,
        **error_responses(e400="`listing_not_found`: the SKU is no longer listed; discard the dead letter.",
                          e409="`dead_letter_closed`: already retried, discarded or superseded.")})
    def post(self, request, pk):
        from channels.propagation import dead_letter_retry

        dead_letter = selectors.dead_letter_get(pk=_dead_letter_id(pk))
        result = dead_letter_retry(dead_letter=dead_letter, actor=f"api:{request.auth.name}")
        dead_letter = selectors.dead_letter_get(pk=dead_letter.pk)
        return Response({**DeadLetterSerializer(dead_letter).data,
                         "retry": DeadLetterRetryResultSerializer(result).data})


class DeadLetterDiscard(IdempotencyMixin, APIView):
    required_scopes = {"POST": "ops"}

    @extend_schema(request=DeadLetterDiscardSerializer, parameters=[DEAD_LETTER_ID], responses={
        200: DeadLetterSerializer, **DEAD_LETTER_NOT_FOUND,
        **error_responses(e409="`dead_letter_closed`: already retried, discarded or superseded.")})
    def post(self, request, pk):
        from channels.propagation import dead_letter_discard

        dead_letter = selectors.dead_letter_get(pk=_dead_letter_id(pk))
        serializer = DeadLetterDiscardSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dead_letter = dead_letter_discard(dead_letter=dead_letter, reason=serializer.validated_data["reason"],
                                          actor=f"api:{request.auth.name}")
        return Response(DeadLetterSerializer(selectors.dead_letter_get(pk=dead_letter.pk)).data)
