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
    # Units held back from every channel (channels.propagation.quantity); a change re-pushes them.
    safety_stock = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)
    # Days from reorder to stock on the shelf: the computed reorder point and the at-risk flag
    # (docs/analytics.md), and the sqrt(lead time) of dynamic safety stock.
    lead_time_days = models.PositiveIntegerField(default=7)
    # Low-stock threshold; null means computed: ceil(velocity 7d x lead time) + safety stock.
    reorder_point = models.PositiveIntegerField(null=True, blank=True)
    # Safety stock recomputed daily from the variability of demand (analytics.services).
    dynamic_safety_stock = models.BooleanField(default=False)
    # A bundle (kit) holds no stock: its availability is derived from its components
    # (BundleComponent, inventory.bundles). Set at creation with the components, never changed,
    # so every hot path can tell a bundle from its row alone.
    is_bundle = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        verbose_name = "SKU"

    def __str__(self) -> str:
        return self.code


class BundleComponent(models.Model):
    """One component of a bundle: `quantity` units of `component` make one unit of `bundle`.

    Written with the bundle at creation and never changed (inventory.catalog.sku_create); a bundle
    is never a component (checked there), so expanding a bundle is one level deep."""

    bundle = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="components")
    component = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="in_bundles")
    quantity = models.PositiveIntegerField()

    class Meta:
        ordering = ["bundle", "id"]
        constraints = [
            models.UniqueConstraint(fields=["bundle", "component"], name="bundle_component_unique"),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="bundle_component_quantity_positive"),
            models.CheckConstraint(condition=~Q(bundle=models.F("component")), name="bundle_component_not_self"),
        ]
        # "Which bundles contain these SKUs" (re-pushing bundles when a component changes).
        indexes = [models.Index(fields=["component", "bundle"], name="bundle_component_by_component")]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.component.code} in {self.bundle.code}"


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
        # As a person names it ("TEE-M at Warehouse"); callers listing many select_related both.
        return f"{self.sku.code} at {self.location.name}"

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


# Ledger types whose rows count as units sold (contract, "Analytics"): stock leaving on_hand to a
# customer, directly or by committing a checkout hold.
SOLD_TYPES = (MovementType.SALE.value, MovementType.RESERVATION_COMMIT.value)


class StockMovement(models.Model):
    """One ledger row per change to one position. Append-only: a database trigger rejects
    UPDATE and DELETE (migration 0002), whatever the caller."""

    # No single-column indexes on position and sku: movement_position_newest and movement_sku_newest
    # lead with them (every ledger row paid for two redundant indexes; docs/performance.md).
    position = models.ForeignKey(StockPosition, on_delete=models.PROTECT, related_name="movements", db_index=False)
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="movements", db_index=False)
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
            # Units sold (analytics): one SKU's sales by time, and every SKU's sales in a time
            # range. Partial: only the two types that count as sold; covering, so sums are read
            # from the index alone (migration 0006, built CONCURRENTLY: the ledger keeps taking
            # writes meanwhile).
            models.Index(fields=["sku", "occurred_at"], name="movement_sold_sku_occurred",
                         include=["on_hand_delta", "recorded_at"], condition=Q(type__in=SOLD_TYPES)),
            models.Index(fields=["occurred_at"], name="movement_sold_occurred",
                         include=["sku", "on_hand_delta", "recorded_at"], condition=Q(type__in=SOLD_TYPES)),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type} {self.sku_id}@{self.location_id} {self.on_hand_delta:+d}"


class StockSnapshot(models.Model):
    """A position's numbers in one 5-minute bucket (inventory.snapshots, beat every 5 minutes).

    Only positions whose version moved since their previous snapshot are written, plus every
    position once a day (the baseline), so a SKU's level at any bucket is the last row of each of
    its positions at or before it (carried forward). One row per position and bucket: a second
    beat or a rerun in the same bucket refreshes that row, it never adds one. Kept
    SNAPSHOT_RETENTION_DAYS (14), then only the hourly rollups remain.
    """

    bucket = models.DateTimeField()  # start of the 5-minute bucket (UTC, aligned on the epoch)
    taken_at = models.DateTimeField()  # when the numbers were read
    baseline = models.BooleanField(default=False)  # written by the daily full copy
    # Indexed by the (position, bucket) unique index; no index of its own to maintain.
    position = models.ForeignKey(StockPosition, on_delete=models.PROTECT, related_name="snapshots", db_index=False)
    # Copies of the position's SKU and location, for per-SKU reads without a join. Not
    # constrained: the position is, and a position never changes SKU or location.
    sku = models.ForeignKey(Sku, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                 related_name="+")
    on_hand = models.BigIntegerField()
    reserved = models.BigIntegerField()
    version = models.BigIntegerField()
    last_movement_id = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["position", "bucket"], name="snapshot_unique_position_bucket"),
        ]
        indexes = [
            models.Index(fields=["sku", "bucket"], name="snapshot_sku_bucket"),
            models.Index(fields=["bucket"], name="snapshot_bucket"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} @ {self.location} at {self.bucket:%Y-%m-%d %H:%M}"


class SnapshotRun(models.Model):
    """One row per 5-minute bucket that was snapshotted: the claim that makes a bucket's work
    happen once, the points of the stock history, and what the hourly rollup still has to do."""

    bucket = models.DateTimeField(unique=True)
    taken_at = models.DateTimeField()  # the latest run in this bucket
    baseline = models.BooleanField(default=False)
    positions = models.PositiveIntegerField(default=0)  # rows written (all runs in the bucket)
    duration_ms = models.FloatField(default=0)  # the latest run's
    rolled_up = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["bucket"], name="snapshotrun_unrolled", condition=Q(rolled_up=False))]

    def __str__(self) -> str:
        return f"snapshot {self.bucket:%Y-%m-%d %H:%M}"


class SnapshotMark(models.Model):
    """Each position's version at its latest snapshot, and at its latest hourly rollup row:
    "changed since the previous snapshot" (or rollup) is a hash join with this table, not a
    look-up per position in the snapshot tables."""

    position = models.OneToOneField(StockPosition, on_delete=models.CASCADE, primary_key=True,
                                    related_name="+")
    version = models.BigIntegerField()
    bucket = models.DateTimeField()
    hourly_version = models.BigIntegerField(null=True)


class StockSnapshotHourly(models.Model):
    """Hourly rollup of the 5-minute snapshots, kept SNAPSHOT_ROLLUP_RETENTION_DAYS (365): per
    position and hour, the last snapshot of that hour, written only when the version differs from
    the position's previous hourly row (values carry forward, as in the 5-minute table). Each
    position's newest row is kept past the retention: it is the level carried forward."""

    hour = models.DateTimeField()
    bucket = models.DateTimeField()  # the 5-minute bucket the numbers come from
    position = models.ForeignKey(StockPosition, on_delete=models.PROTECT, related_name="+", db_index=False)
    sku = models.ForeignKey(Sku, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                 related_name="+")
    on_hand = models.BigIntegerField()
    reserved = models.BigIntegerField()
    version = models.BigIntegerField()

    class Meta:
        verbose_name = "hourly stock snapshot"
        constraints = [
            models.UniqueConstraint(fields=["position", "hour"], name="snapshothourly_unique_position_hour"),
        ]
        indexes = [
            models.Index(fields=["sku", "hour"], name="snapshothourly_sku_hour"),
            models.Index(fields=["hour"], name="snapshothourly_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} @ {self.location} at {self.hour:%Y-%m-%d %H:00}"
