"""Derived data for analytics (docs/analytics.md). Nothing here is stock truth: every row can be
rebuilt from the ledger (inventory.StockMovement) and the catalog."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Coalesce

from inventory.models import Location, Sku


class DailySales(models.Model):
    """Units sold per SKU and UTC day (by `occurred_at`), counting only ledger rows recorded before
    the refresh's cutoff (`JobMark` "daily_sales"): readers add the rows recorded since from the
    ledger, so an answer is exact whatever the refresh lag. Refreshed every 5 minutes by
    recomputing the (SKU, day) pairs that new ledger rows touched. A bundle's rows are bundle units
    (its first component's rows written for it / units per bundle: analytics.selectors); a
    component's count every unit it sold, inside bundles too."""

    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    units = models.BigIntegerField()
    refreshed_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "daily sales"
        constraints = [models.UniqueConstraint(fields=["sku", "day"], name="dailysales_unique_sku_day")]
        # Covering: window sums over all SKUs read the index alone.
        indexes = [models.Index(fields=["day"], include=["sku", "units"], name="dailysales_day")]

    def __str__(self) -> str:
        return f"{self.sku} {self.day}: {self.units}"


class SkuSalesWindow(models.Model):
    """Per SKU, the units of DailySales on the whole days of the 7- and 28-day windows ending
    yesterday (days D-6..D-1 and D-27..D-1), for the day D in JobMark "daily_sales".day. Kept in
    the refresh's transaction: rebuilt on the first refresh of a day, then only for the SKUs whose
    daily rows changed. Whole-catalog lists read one row per SKU here instead of summing 28 daily
    rows each; SKUs without sales on those days have no row."""

    sku = models.OneToOneField(Sku, on_delete=models.CASCADE, primary_key=True, related_name="+")
    whole_7 = models.BigIntegerField()
    whole_28 = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.sku}: {self.whole_7} / {self.whole_28}"


class JobMark(models.Model):
    """Where a periodic job got to: the ledger cutoff of the daily-sales refresh, the last day the
    safety-stock recompute finished. Read in the same statement as the data it describes."""

    name = models.CharField(max_length=64, primary_key=True)
    cutoff = models.DateTimeField(null=True, blank=True)
    day = models.DateField(null=True, blank=True)
    ran_at = models.DateTimeField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name


class SafetyStockChange(models.Model):
    """One change of a SKU's safety stock by the daily recompute, with the inputs that gave it:
    new = ceil(z x sigma x sqrt(lead_time_days)), sigma over `demand_days` days of units sold."""

    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="safety_stock_changes")
    day = models.DateField()  # the UTC day of the run; its demand series ends the day before
    computed_at = models.DateTimeField()
    demand_days = models.PositiveIntegerField()
    mean = models.FloatField()  # mean daily units over the series (for the reader)
    sigma = models.FloatField()  # sample standard deviation of daily units
    z = models.FloatField()
    lead_time_days = models.PositiveIntegerField()
    old_safety_stock = models.PositiveIntegerField()
    new_safety_stock = models.PositiveIntegerField()

    class Meta:
        ordering = ["-computed_at", "-id"]
        indexes = [models.Index(fields=["sku", "-computed_at"], name="safetystockchange_sku_newest")]

    def __str__(self) -> str:
        return f"{self.sku}: {self.old_safety_stock} -> {self.new_safety_stock} ({self.day})"


# ------------------------------------------------------------------------------------------ alerts


class AlertDirty(models.Model):
    """A SKU whose alerts must be evaluated: marked inside the stock transaction by the
    stock-change reaction (analytics.alerts.alerts_on_stock_change), removed by the evaluator in
    the transaction that writes the alerts, so a crash leaves the mark for the next run."""

    sku = models.OneToOneField(Sku, on_delete=models.CASCADE, primary_key=True, related_name="+")
    marked_at = models.DateTimeField()

    def __str__(self) -> str:
        return str(self.sku_id)


class Alert(models.Model):
    """One alert: open while its condition holds, resolved by the evaluator when it clears.
    low_stock and stockout are over the SKU's total (location null); oversell is per location
    (an incident names the location the sale was taken from)."""

    LOW_STOCK = "low_stock"
    STOCKOUT = "stockout"
    OVERSELL = "oversell"
    KINDS = [(LOW_STOCK, "Low stock"), (STOCKOUT, "Stockout"), (OVERSELL, "Oversell")]
    OPEN = "open"
    RESOLVED = "resolved"

    kind = models.CharField(max_length=20, choices=KINDS)
    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="alerts")
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=[(OPEN, "Open"), (RESOLVED, "Resolved")], default=OPEN)
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            # One open alert per kind, SKU and location; a null location is one key (COALESCE),
            # not "distinct from every other null" as a plain unique index would have it.
            models.UniqueConstraint(models.F("kind"), models.F("sku"), Coalesce("location", 0),
                                    condition=models.Q(status="open"), name="alert_one_open_per_key"),
        ]
        indexes = [models.Index(fields=["sku", "status"], name="alert_sku_status"),
                   models.Index(fields=["status", "kind", "-opened_at"], name="alert_status_kind")]

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location_id else ""
        return f"{self.get_kind_display()}: {self.sku}{where} ({self.status})"


class AlertSubscription(models.Model):
    """A URL that receives alert openings and resolvings as Standard Webhooks signed with `secret`
    (write-only in the API; never logged)."""

    url = models.URLField(max_length=2000)
    secret = models.CharField(max_length=500)
    kinds = models.JSONField(default=list)  # empty: every kind
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class AlertDelivery(models.Model):
    """Outbox row: one alert event to one subscription. Written in the evaluator's transaction,
    drained by `analytics.alert_deliveries_drain` with retries (core.backoff) and dead-lettered
    after ALERT_DELIVERY_MAX_ATTEMPTS; ops retry dead ones from the admin."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    STATUSES = [(PENDING, "Pending"), (DELIVERED, "Delivered"), (DEAD, "Dead letter")]

    WEBHOOK = "webhook"
    EMAIL = "email"

    # Null for an email (to settings.ALERT_EMAIL_RECIPIENTS as they are at send time).
    subscription = models.ForeignKey(AlertSubscription, null=True, blank=True, on_delete=models.CASCADE,
                                     related_name="deliveries")
    target = models.CharField(max_length=10, choices=[(WEBHOOK, "Webhook"), (EMAIL, "Email")], default=WEBHOOK)
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    msg_id = models.CharField(max_length=64, unique=True)  # webhook-id: the same on every retry
    body = models.TextField()  # the exact JSON sent (frozen at the event)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "alert deliveries"
        ordering = ["-id"]
        indexes = [models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"),
                                name="alertdelivery_due")]

    def __str__(self) -> str:
        return f"{self.msg_id} -> {self.subscription or 'email'}"
