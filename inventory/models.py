"""Stock truth: where each SKU is, how much is reserved, and the immutable ledger of every change.

Invariant (checked by `verify_ledger`): for every position, on_hand and reserved equal the sums
of its ledger rows' deltas, and `version` equals the number of its ledger rows.
Numbers on StockPosition change only through inventory.services (and the services of other apps
that call its primitives), never with `.save()`.
"""

from django.db import models
from django.db.models import Q


class Location(models.Model):
    class Kind(models.TextChoices):
        WAREHOUSE = "warehouse"
        STORE = "store"
        THIRD_PARTY = "3pl", "3PL"
        MARKETPLACE = "marketplace"

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.WAREHOUSE)
    active = models.BooleanField(default=True)
    # Lower numbers are used first when a reservation line names no location.
    priority = models.IntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "code"]

    def __str__(self) -> str:
        return self.code


class Sku(models.Model):
    code = models.CharField(max_length=100, unique=True)
    name = models.CharField(max_length=300)
    safety_stock = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        verbose_name = "SKU"

    def __str__(self) -> str:
        return self.code


class StockPosition(models.Model):
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="positions")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="positions")
    on_hand = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    # Bumped by one with every ledger row; clients use it for optimistic checks (If-Match).
    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sku", "location"], name="position_unique_sku_location"),
            # The database itself refuses negative stock, whatever code runs.
            models.CheckConstraint(condition=Q(on_hand__gte=0), name="position_on_hand_non_negative"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="position_reserved_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.sku_id}@{self.location_id}"

    @property
    def available(self) -> int:
        return max(self.on_hand - self.reserved, 0)


class MovementType(models.TextChoices):
    RECEIPT = "receipt"
    RETURN = "return"
    SALE = "sale"
    ADJUSTMENT = "adjustment"
    COUNT = "count"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    CANCELLATION = "cancellation"
    RESERVE = "reserve"
    RESERVATION_RELEASE = "reservation_release"
    RESERVATION_COMMIT = "reservation_commit"


class StockMovement(models.Model):
    """One ledger row per change to one position. Append-only: a database trigger rejects
    UPDATE and DELETE (migration 0002), whatever the caller."""

    position = models.ForeignKey(StockPosition, on_delete=models.PROTECT, related_name="movements")
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="movements")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="movements")
    type = models.CharField(max_length=32, choices=MovementType.choices)
    on_hand_delta = models.BigIntegerField(default=0)
    reserved_delta = models.BigIntegerField(default=0)
    on_hand_after = models.BigIntegerField()
    reserved_after = models.BigIntegerField()
    source = models.CharField(max_length=100, blank=True, default="")
    reference = models.CharField(max_length=200, blank=True, default="")
    # Idempotency: a repeated event key returns the first result and changes nothing.
    event_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    actor = models.CharField(max_length=200, blank=True, default="")
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The checkout reservation that caused this row (reserve, release, commit, expiry).
    reservation = models.ForeignKey("reservations.Reservation", null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="movements")

    class Meta:
        indexes = [
            models.Index(fields=["position", "-id"], name="movement_position_newest"),
            models.Index(fields=["sku", "-id"], name="movement_sku_newest"),
            models.Index(fields=["recorded_at"], name="movement_recorded_at"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type} {self.sku_id}@{self.location_id} {self.on_hand_delta:+d}"


class StockSnapshot(models.Model):
    """Periodic copy of every position (beat, every 5 minutes) for audits and fast `as_of`."""

    taken_at = models.DateTimeField(db_index=True)
    position = models.ForeignKey(StockPosition, on_delete=models.PROTECT, related_name="snapshots")
    on_hand = models.BigIntegerField()
    reserved = models.BigIntegerField()
    version = models.BigIntegerField()
    last_movement_id = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["position", "-taken_at"], name="snapshot_position_newest")]
