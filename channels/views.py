from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from channels import selectors, services
from channels.models import Channel
from channels.serializers import (
    ChannelReadSerializer,
    ChannelWriteSerializer,
    ListingReadSerializer,
    ListingWriteSerializer,
)
from core.idempotency import IdempotencyMixin
from core.pagination import PageNumberPagination

CHANNEL_SCOPES = {"GET": "channels:write", "POST": "channels:write", "PATCH": "channels:write"}


class ChannelListCreate(IdempotencyMixin, APIView):
    required_scopes = CHANNEL_SCOPES

    @extend_schema(responses=ChannelReadSerializer(many=True))
    def get(self, request):
        channels = Channel.objects.prefetch_related("locations", "authoritative_locations").select_related(
            "default_location")
        return Response(ChannelReadSerializer(channels, many=True).data)

    @extend_schema(request=ChannelWriteSerializer, responses={201: ChannelReadSerializer})
    def post(self, request):
        serializer = ChannelWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = services.channel_create(**serializer.validated_data)
        return Response(ChannelReadSerializer(channel).data, status=status.HTTP_201_CREATED)


class ChannelDetail(IdempotencyMixin, APIView):
    required_scopes = CHANNEL_SCOPES

    @extend_schema(responses=ChannelReadSerializer)
    def get(self, request, slug):
        return Response(ChannelReadSerializer(selectors.channel_get(slug=slug)).data)

    @extend_schema(request=ChannelWriteSerializer, responses=ChannelReadSerializer)
    def patch(self, request, slug):
        channel = selectors.channel_get(slug=slug)
        serializer = ChannelWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        channel = services.channel_update(channel=channel, **serializer.validated_data)
        return Response(ChannelReadSerializer(channel).data)


class ListingListCreate(IdempotencyMixin, APIView):
    required_scopes = CHANNEL_SCOPES

    @extend_schema(responses=ListingReadSerializer(many=True))
    def get(self, request, slug):
        channel = selectors.channel_get(slug=slug)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.listings_for_channel(channel=channel), request, view=self)
        return paginator.get_paginated_response(ListingReadSerializer(page, many=True).data)

    @extend_schema(request=ListingWriteSerializer, responses={201: ListingReadSerializer})
    def post(self, request, slug):
        channel = selectors.channel_get(slug=slug)
        serializer = ListingWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        listing, created = services.listing_upsert(channel=channel, **serializer.validated_data)
        return Response(ListingReadSerializer(listing).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
