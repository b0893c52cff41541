"""Sales channels (marketplaces, storefronts, partner systems) and how our SKUs map onto them.

Secrets (`credentials`, `webhook_secret`) are stored server-side and never returned by the API,
shown in the admin, or logged. Health fields are written by channels.services (propagation).
"""

from django.db import models
from django.db.models import F
from django.db.models.fields.json import KeyTextTransform

from inventory.models import Location, Sku


class Channel(models.Model):
    class Kind(models.TextChoices):
        SHOPIFY = "shopify"
        WOOCOMMERCE = "woocommerce"
        BIGCOMMERCE = "bigcommerce"
        EBAY = "ebay"
        AMAZON = "amazon"
        WEBHOOK = "webhook"

    class BufferType(models.TextChoices):
        UNITS = "units"
        PERCENT = "percent"

    class Circuit(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_url = models.URLField(max_length=500, blank=True, default="")
    credentials = models.JSONField(default=dict, blank=True)  # write-only
    webhook_secret = models.CharField(max_length=500, blank=True, default="")  # write-only
    default_location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.PROTECT,
                                         related_name="default_for_channels")
    # Where this channel's sellable quantity comes from, and where its reservations may draw.
    locations = models.ManyToManyField(Location, blank=True, related_name="channels")
    # Locations whose absolute levels this channel owns (its inventory_levels/update is applied
    # as a count); for all others such a level is recorded as drift, never applied.
    authoritative_locations = models.ManyToManyField(Location, blank=True, related_name="authoritative_channels")
    push_enabled = models.BooleanField(default=True)
    buffer_type = models.CharField(max_length=8, choices=BufferType.choices, default=BufferType.UNITS)
    buffer_value = models.PositiveIntegerField(default=0)
    # Channel rules, applied after safety stock and buffer (docs/propagation.md "Channel rules").
    # Push 0 once what is left drops below this: a listing showing the last one or two units
    # invites orders that race each other for them.
    zero_below = models.PositiveIntegerField(default=0)
    # Never push more than this (null: no cap): a marketplace shows, and sells into, at most this
    # many, e.g. to limit exposure on a channel with slow order sync.
    max_quantity = models.PositiveIntegerField(null=True, blank=True)
    rate_limit_per_second = models.FloatField(default=5.0)
    rate_limit_burst = models.PositiveIntegerField(default=10)
    retry_max_attempts = models.PositiveIntegerField(default=8)
    retry_base_delay = models.FloatField(default=1.0)
    retry_max_delay = models.FloatField(default=30.0)
    circuit_failure_threshold = models.PositiveIntegerField(default=5)
    circuit_cooldown_seconds = models.FloatField(default=60.0)
    settings = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Health, maintained by propagation.
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(default=0)
    circuit_state = models.CharField(max_length=16, choices=Circuit.choices, default=Circuit.CLOSED)
    circuit_opened_at = models.DateTimeField(null=True, blank=True)
    # Fencing token of the newest push-lock holder (propagation): a holder whose token is no
    # longer the newest may not record its result, however late it wakes up.
    push_fence = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


# The channel ids a listing's `attributes` may hold that incoming order lines are matched by
# (ingestion.processing.plan); each has an index on (channel, attributes->>key), so a batch's
# lookup reads index entries instead of every listing of the channel.
LISTING_ID_ATTRIBUTES = ("variant_id", "product_id", "variation_id", "inventory_item_id", "offer_id")


class ChannelListing(models.Model):
    """A SKU as the channel knows it. `external_id` is the id pushes address (Shopify
    inventory_item_id, WooCommerce product/variation id, BigCommerce variant_id, eBay offerId,
    Amazon seller SKU); `attributes` keeps the channel's other ids (product_id, variant_id, ...)
    so incoming order lines can be matched by any of them."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="listings")
    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="listings")
    external_id = models.CharField(max_length=200)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "sku"], name="listing_unique_channel_sku"),
            models.UniqueConstraint(fields=["channel", "external_id"], name="listing_unique_channel_external_id"),
        ]
        indexes = [models.Index(F("channel"), KeyTextTransform(key, "attributes"), name=f"listing_attr_{key}")
                   for key in LISTING_ID_ATTRIBUTES]

    def __str__(self) -> str:
        return f"{self.channel_id}:{self.external_id}"


# ------------------------------------------------------------------------------ propagation


class DirtyPair(models.Model):
    """The outbox: a (channel, SKU) pair whose sellable quantity may have changed since the last
    successful push. Written in the same transaction as the stock change (so a crash after commit
    loses nothing) and deleted only after the channel acknowledged a push that is at least as new
    as the last change (`generation` compare-and-delete). Retry waits live in `next_attempt_at`."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="dirty_pairs")
    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="+")
    # Bumped by every mark; a push deletes the row only if it is unchanged since it was read.
    generation = models.BigIntegerField(default=1)
    # True when the pair must be sent even if the quantity equals the last pushed value
    # (reconciliation found drift, an operator asked for a re-push).
    force = models.BooleanField(default=False)
    marked_at = models.DateTimeField()  # first mark since the last successful push
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)  # failed attempts so far
    first_error = models.TextField(blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    first_failed_at = models.DateTimeField(null=True, blank=True)
    # Held back by a marketplace quota (eBay's daily revisions per listing, see RevisionBudget) until
    # `next_attempt_at`; a new mark makes it due at once, so the new quantity is judged again (a
    # change that nears zero may spend the reserve). A database default, so raw INSERTs need not name it.
    budget_held = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "sku"], name="dirtypair_unique_channel_sku")]
        indexes = [models.Index(fields=["channel", "next_attempt_at"], name="dirtypair_channel_due")]
        verbose_name = "backlog entry"
        verbose_name_plural = "backlog (dirty pairs)"


class ChannelSkuState(models.Model):
    """What the channel was last told (and, after reconciliation, what it last showed)."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="sku_states")
    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="+")
    last_pushed = models.BigIntegerField(null=True, blank=True)
    last_pushed_at = models.DateTimeField(null=True, blank=True)
    last_seen = models.BigIntegerField(null=True, blank=True)  # read back by reconciliation
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "sku"], name="skustate_unique_channel_sku")]


class PushAttempt(models.Model):
    """Audit: one row per request sent to a channel (push, probe, dead-letter retry, reconcile)."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        PARTIAL = "partial"  # some items refused inside a 2xx (WooCommerce, eBay)
        FAILED = "failed"
        RATE_LIMITED = "rate_limited"
        PENDING = "pending"  # accepted for asynchronous processing (an Amazon feed); results recorded later

    class Purpose(models.TextChoices):
        PUSH = "push"
        PROBE = "probe"  # the one request a half-open circuit lets through
        RETRY = "retry"  # an operator's dead-letter retry
        RECONCILE = "reconcile"
        FEED = "feed"  # the results of an asynchronous submission, recorded when it finished

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="push_attempts")
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.PUSH)
    started_at = models.DateTimeField(db_index=True)
    latency_ms = models.FloatField()
    http_status = models.IntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    # [{"sku", "quantity", "ok", "error"}] — quantities as sent
    items = models.JSONField(default=list)
    sku_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["channel", "-id"], name="pushattempt_channel_newest")]


class DeadLetter(models.Model):
    """A (channel, SKU) push that failed every attempt. Kept until an operator retries (which
    pushes the quantity current at that moment) or discards it with a reason, or a later push of
    the same pair succeeds (resolved as superseded)."""

    class Status(models.TextChoices):
        OPEN = "open"
        RETRIED = "retried"
        DISCARDED = "discarded"
        SUPERSEDED = "superseded"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="dead_letters")
    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="+")
    quantity = models.BigIntegerField()  # what we wanted the channel to show at the last attempt
    attempts = models.PositiveIntegerField()
    first_error = models.TextField(blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True, default="")
    resolution_note = models.TextField(blank=True, default="")  # discard reason / retry result

    class Meta:
        ordering = ["-id"]
        constraints = [
            # At most one open dead letter per pair: a pair that fails again updates it.
            models.UniqueConstraint(fields=["channel", "sku"], condition=models.Q(status="open"),
                                    name="deadletter_one_open_per_pair"),
        ]

    def __str__(self) -> str:
        return f"dead letter #{self.pk} {self.channel_id}:{self.sku_id}"


class ChannelDrift(models.Model):
    """Reconciliation found the channel showing something other than what it should."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="drifts")
    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="+")
    expected = models.BigIntegerField()
    actual = models.BigIntegerField()
    detected_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]


class RevisionBudget(models.Model):
    """Revisions spent on one marketplace listing in one of its calendar days (eBay allows about 250
    per listing per day, then refuses until the next day). `key` names the listing: the listing
    attribute `listing_id` when several SKUs share one (variations), else `sku:<sku id>`. Written by
    propagation before each request (spent) and after it (refunded when the marketplace refused the
    item, so nothing was revised); see docs/propagation.md#ebay-inventory-api."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="revision_budgets")
    key = models.CharField(max_length=220)
    day = models.DateField()  # the marketplace's calendar day these counts belong to
    used = models.PositiveIntegerField(default=0)  # revisions sent that day
    reserve_used = models.PositiveIntegerField(default=0)  # of which beyond the normal budget (near zero)
    exhausted = models.BooleanField(default=False)  # the marketplace itself refused: none left that day
    last_revision_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "key"], name="revisionbudget_unique_channel_key")]

    def __str__(self) -> str:
        return f"{self.channel_id}:{self.key} {self.day} {self.used}"


class PendingFeed(models.Model):
    """An asynchronous submission a marketplace accepted and processes later (Amazon's
    JSON_LISTINGS_FEED): what was sent, per SKU, and when to ask for the result. Created in the
    same transaction that holds the submitted pairs back (so a crash loses nothing: without this
    row the pairs are simply sent again), polled by `channels.poll_feeds`, and resolved in the
    transaction that records each SKU's result like a push's (acknowledged, retried or dead-lettered)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"  # the marketplace reported per-SKU results (some may have failed)
        FAILED = "failed"  # FATAL/CANCELLED, or no report: every SKU failed (charged one attempt)
        EXPIRED = "expired"  # no result within the timeout: every SKU failed (charged one attempt)

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="pending_feeds")
    reference = models.CharField(max_length=200)  # the marketplace's id (Amazon feedId)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # [{"pair", "sku_id", "sku", "external_id", "attributes", "generation", "quantity"}]: what was sent
    items = models.JSONField(default=list)
    sku_count = models.PositiveIntegerField(default=0)
    submitted_at = models.DateTimeField()
    next_poll_at = models.DateTimeField()
    polls = models.PositiveIntegerField(default=0)
    last_status = models.CharField(max_length=40, blank=True, default="")  # e.g. IN_QUEUE, IN_PROGRESS
    resolved_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)  # counts and errors from the processing report
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "next_poll_at"], name="pendingfeed_due")]
        constraints = [models.UniqueConstraint(fields=["channel", "reference"], name="pendingfeed_unique_reference")]

    def __str__(self) -> str:
        return f"feed {self.reference} ({self.status})"
