"""Checkout reservations: stock held for a buyer between "checkout started" and "paid".

A reservation raises `reserved` on the positions it draws from (never `on_hand`), so the stock
stops being available to anyone else without leaving the shelf. It ends in exactly one of:
committed (paid: on_hand and reserved drop), released (buyer left) or expired (TTL passed).
A `waiting` reservation is a backorder: it holds no stock until availability rises and the
waitlist activates it, first come first served. Status changes only through
reservations.services, which lock the reservation row before its positions.
"""

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce

from channels.models import Channel
from core.models import ApiKey
from inventory.models import Location, Sku


class Reservation(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        COMMITTED = "committed"
        RELEASED = "released"
        EXPIRED = "expired"
        WAITING = "waiting"

    # A UUID, not a sequence: ids are handed to storefronts and must not be guessable or countable.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="reservations")
    order_ref = models.CharField(max_length=200, blank=True, default="")
    # Kept so a waiting reservation gets the TTL its client asked for when it is activated.
    ttl_seconds = models.PositiveIntegerField(default=900)
    # Null while waiting: a backorder holds no stock, so there is nothing to expire.
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="reservations")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)  # committed, released or expired
    # Who closed it and why (e.g. "api:storefront", "admin:alice", "order:<channel>", "expiry").
    closed_by = models.CharField(max_length=200, blank=True, default="")
    # The identity of the request that created it (core.idempotency: API key, Idempotency-Key and
    # body), so a request re-run after its process died returns this reservation, never a second.
    request_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The expiry sweep: active reservations by deadline.
            models.Index(fields=["expires_at"], condition=Q(status="active"), name="reservation_active_expiry"),
            models.Index(fields=["order_ref"], condition=~Q(order_ref=""), name="reservation_order_ref"),
        ]
        constraints = [
            # One live (active or waiting) reservation per order and channel, so a marketplace
            # order names exactly one reservation to commit.
            models.UniqueConstraint(
                Coalesce("channel_id", 0), "order_ref",
                condition=Q(status__in=["active", "waiting"]) & ~Q(order_ref=""),
                name="reservation_live_order_ref_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class ReservationLine(models.Model):
    """One (sku, location, quantity) hold. An active reservation's lines are its allocations
    (a request line without a location may become several lines, one per location drawn from).
    A waiting reservation's lines are its request, location null unless the client named one."""

    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="lines")
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="reservation_lines",
                            db_index=False)  # reservation_line_sku leads with it
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="reservation_lines")
    quantity = models.PositiveIntegerField()
    # Of `quantity`, what left on_hand when the reservation was committed: all of it for a
    # checkout commit, only what the order sold when a marketplace order settled the hold (the
    # rest went back to sale). Order lines draw their reservation cover from it.
    committed = models.PositiveIntegerField(default=0)
    # The bundle this line holds components for (inventory.bundles): a request line naming a
    # bundle becomes one line per component and location, each pointing at the bundle, so the
    # bundle's units can be told apart from the component sold alone. Null for a plain line.
    bundle = models.ForeignKey(Sku, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["sku", "reservation"], name="reservation_line_sku")]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku_id}@{self.location_id}"


class WaitlistEntry(models.Model):
    """The backorder queue: one row per (waiting reservation, SKU) while it waits.

    A separate small table, not a scan of ReservationLine, because every stock increase asks
    "is anyone waiting for these SKUs?" and must answer from an index in microseconds, however
    many reservations a SKU has had. The auto-increment id is the queue order (first come,
    first served per SKU). Rows are deleted when the reservation activates or is released.
    """

    id = models.BigAutoField(primary_key=True)
    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="waitlist_entries")
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="waitlist_entries")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["reservation", "sku"], name="waitlist_unique_reservation_sku"),
        ]
        indexes = [models.Index(fields=["sku", "id"], name="waitlist_sku_fifo")]
        verbose_name_plural = "waitlist entries"
