"""HTTP for reservations. Views parse, call a service or selector, and shape the answer."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFound, ValidationFailed
from core.idempotency import IdempotencyMixin
from core.pagination import PageNumberPagination
from core.schema import error_responses
from inventory.services import MAX_QUANTITY, MovementContext
from reservations import selectors, services
from reservations.models import Reservation
from reservations.serializers import (
    ReservationCreateSerializer,
    ReservationExtendSerializer,
    ReservationOutSerializer,
)

# Reading a reservation is part of running a checkout, so the same scope covers it.
SCOPES = {"GET": "reservations:write", "POST": "reservations:write"}

ID_PARAMETER = OpenApiParameter("reservation_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
LOCATION_HEADER = OpenApiParameter("Location", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[201, 202],
                                   required=True, description="The new reservation's URL.")
NOT_FOUND = error_responses(e404="`reservation_not_found`.")


def _reservation_id(value: str) -> str:
    """Reservation ids are UUIDs in ASCII: uuid.UUID() reads "٣" as the hex digit 3, so an id in
    other digits would name an existing reservation."""
    if not value.isascii():
        raise NotFound(f"Unknown reservation '{value[:60]}'.", code="reservation_not_found")
    return value


def _text(value: object, max_length: int) -> bool:
    """A string DRF's CharField would return unchanged: printable ASCII, nothing to trim, not
    blank, within max_length (no NUL, no surrogate, no whitespace at either end)."""
    return (type(value) is str and 0 < len(value) <= max_length and value.isascii() and value.isprintable()
            and value[0] != " " and value[-1] != " ")


def _create_fast(data: object) -> dict | None:
    """ReservationCreateSerializer's validated_data for a plain, well-formed body, without
    building the serializer (its nested fields are deep-copied per request: a measurable share
    of a checkout's CPU). Returns None for anything it is not sure of (a string to trim, a
    blank, a missing or mistyped field...): the serializer then decides. Same rules, same
    limits (docs/performance.md), so both paths accept and produce exactly the same."""
    if type(data) is not dict:
        return None
    lines = data.get("lines")
    if type(lines) is not list or not 1 <= len(lines) <= services.max_lines():
        return None
    out: list[dict] = []
    for line in lines:
        if type(line) is not dict:
            return None
        sku, quantity = line.get("sku"), line.get("quantity")
        if not _text(sku, 100) or type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            return None
        item: dict = {"sku": sku, "quantity": quantity}
        if "location" in line:
            if line["location"] is not None and not _text(line["location"], 64):
                return None
            item["location"] = line["location"]
        out.append(item)
    result: dict = {"lines": out, "order_ref": "", "waitlist": False}
    if "channel" in data:
        if data["channel"] is not None and not _text(data["channel"], 64):
            return None
        result["channel"] = data["channel"]
    if "order_ref" in data:
        if data["order_ref"] != "" and not _text(data["order_ref"], 200):
            return None
        result["order_ref"] = data["order_ref"]
    if "ttl_seconds" in data:
        ttl = data["ttl_seconds"]
        if type(ttl) is not int or not 1 <= ttl <= services.max_ttl_seconds():
            return None
        result["ttl_seconds"] = ttl
    if "waitlist" in data:
        if type(data["waitlist"]) is not bool:
            return None
        result["waitlist"] = data["waitlist"]
    return result


def _context(request) -> MovementContext:
    return MovementContext(source="api", actor=f"api:{request.auth.name}" if request.auth else "api")


def _answer(reservation: Reservation, *, created: bool = False) -> Response:
    if not created:
        return Response(selectors.reservation_to_dict(selectors.reservation_get(reservation_id=reservation.pk)))
    body = selectors.reservation_to_dict(reservation)  # create hands its lines over, loaded
    code = status.HTTP_202_ACCEPTED if reservation.status == Reservation.Status.WAITING else status.HTTP_201_CREATED
    return Response(body, status=code, headers={"Location": f"/api/v1/reservations/{reservation.pk}/"})


class ReservationListCreate(IdempotencyMixin, APIView):
    required_scopes = SCOPES
    idempotency_methods = ("POST",)
    idempotency_required = ("POST",)  # contract: a retried checkout must never hold stock twice
    idempotency_deferred = ("POST",)  # the one-statement reservation inserts the claim (core.idempotency)
    pagination_class = PageNumberPagination

    @extend_schema(
        request=ReservationCreateSerializer,
        parameters=[LOCATION_HEADER],
        responses={
            201: ReservationOutSerializer,
            202: OpenApiResponse(ReservationOutSerializer,
                                 description='Not enough stock and `"waitlist": true`: `"status": "waiting"`.'),
            **error_responses(
                e400="`validation_error`, `idempotency_key_required`, `invalid_quantity` (over 10^9 units of one "
                     "SKU) or `location_not_eligible` (a named location the channel does not sell from).",
                e404="`sku_not_found`, `location_not_found` or `channel_not_found`.",
                e409="`insufficient_stock` with `lines` (nothing was reserved), `sku_inactive`, "
                     "`location_inactive`, `channel_inactive` or `duplicate_order_ref` (a live reservation for this "
                     "`order_ref` on the channel)."),
        },
    )
    def post(self, request):
        data = _create_fast(request.data)
        pending = request.idempotency_pending
        if data is None:  # anything unusual: the serializer decides, with its error messages
            if pending is not None:
                pending.settle()  # claimed first, as the other endpoints do
            serializer = ReservationCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        reservation = services.reservation_create(
            lines=[{"sku": ln["sku"], "quantity": ln["quantity"], "location": ln.get("location") or None}
                   for ln in data["lines"]],
            channel=data.get("channel") or None,
            order_ref=data.get("order_ref", ""),
            ttl_seconds=data.get("ttl_seconds"),
            waitlist=data["waitlist"],
            created_by=request.auth,
            context=_context(request),
            request_key=getattr(request, "idempotency_request_key", None),  # a re-run after a crash returns it
            claim=pending,
        )
        return _answer(reservation, created=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=["", *Reservation.Status.values],
                             description="Empty: every status."),
            OpenApiParameter("order_ref", OpenApiTypes.STR),
            OpenApiParameter("channel", OpenApiTypes.STR, description="channel slug"),
        ],
        responses={200: ReservationOutSerializer(many=True),
                   **error_responses(e400="`invalid_status`.")},
    )
    def get(self, request):
        status_filter = request.query_params.get("status")
        if status_filter and status_filter not in Reservation.Status.values:
            raise ValidationFailed(f"status must be one of: {', '.join(Reservation.Status.values)}.",
                                   code="invalid_status")
        qs = selectors.reservation_list(status=status_filter, order_ref=request.query_params.get("order_ref"),
                                        channel=request.query_params.get("channel"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response([selectors.reservation_to_dict(r) for r in page])


class ReservationDetail(APIView):
    required_scopes = SCOPES

    @extend_schema(parameters=[ID_PARAMETER], responses={200: ReservationOutSerializer, **NOT_FOUND})
    def get(self, request, reservation_id):
        reservation = selectors.reservation_get(reservation_id=_reservation_id(reservation_id))
        return Response(selectors.reservation_to_dict(reservation))


class ReservationCommit(IdempotencyMixin, APIView):
    required_scopes = SCOPES
    idempotency_methods = ("POST",)

    @extend_schema(request=None, parameters=[ID_PARAMETER], responses={
        200: ReservationOutSerializer,
        **NOT_FOUND,
        **error_responses(e409="`reservation_released`, or `reservation_not_active` (still waiting for stock).",
                          e410="`reservation_expired`: its stock was released."),
    })
    def post(self, request, reservation_id):
        return _answer(services.reservation_commit(reservation_id=_reservation_id(reservation_id),
                                                   context=_context(request)))


class ReservationRelease(IdempotencyMixin, APIView):
    required_scopes = SCOPES
    idempotency_methods = ("POST",)

    @extend_schema(request=None, parameters=[ID_PARAMETER], responses={
        200: ReservationOutSerializer,
        **NOT_FOUND,
        **error_responses(e409="`reservation_committed`."),
    })
    def post(self, request, reservation_id):
        return _answer(services.reservation_release(reservation_id=_reservation_id(reservation_id),
                                                    context=_context(request)))


class ReservationExtend(IdempotencyMixin, APIView):
    required_scopes = SCOPES
    idempotency_methods = ("POST",)

    @extend_schema(request=ReservationExtendSerializer, parameters=[ID_PARAMETER], responses={
        200: ReservationOutSerializer,
        **NOT_FOUND,
        **error_responses(e409="`reservation_not_active`: only an active reservation can be extended.",
                          e410="`reservation_expired`."),
    })
    def post(self, request, reservation_id):
        serializer = ReservationExtendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _answer(services.reservation_extend(reservation_id=_reservation_id(reservation_id),
                                                   ttl_seconds=serializer.validated_data["ttl_seconds"],
                                                   context=_context(request)))
