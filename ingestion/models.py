"""Inbound stock events, stored durably before anyone is told "200".

An `InboundEvent` is one delivery as received (a marketplace webhook with its raw body and
headers) or one canonical event from `POST /api/v1/events/`. It is written before the sender gets
its answer and then processed asynchronously by the drain (ingestion.services). Exactly-once in
effect comes from two unique keys: `dedup_key` (a delivery or event id is stored once) and the
ledger's `StockMovement.event_key` (a stock line is applied once, whichever delivery carried it).
"""

from django.db import models
from django.db.models import Q

from channels.models import Channel
from inventory.models import Location, Sku


class InboundEvent(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for the drain (or for its retry time)
        DONE = "done"  # applied (lines may individually be replays, stale, echoes, drift)
        IGNORED = "ignored"  # nothing to do: a topic we do not act on, an order that moves no stock
        FAILED = "failed"  # needs a person: bad payload, unknown SKU/listing, retries exhausted

    class Source(models.TextChoices):
        WEBHOOK = "webhook"
        API = "api"

    id = models.BigAutoField(primary_key=True)
    # No constraint in the database (db_constraint=False): its check at each intake's commit took
    # a KEY SHARE lock on the channel's row, and concurrent acks of one channel made PostgreSQL
    # build a multixact per ack (docs/ingestion.md). Channels are never deleted (deactivated
    # instead: no service, API or admin deletes one), and PROTECT still refuses an ORM delete.
    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.PROTECT, db_constraint=False,
                                related_name="inbound_events", db_index=False)  # inbound_channel_newest
    source = models.CharField(max_length=16, choices=Source.choices)
    # "wh:<channel id>:<delivery id>" or "api:<event_id>": a delivery/event is stored once, forever.
    dedup_key = models.CharField(max_length=300, unique=True)
    delivery_id = models.CharField(max_length=255)
    topic = models.CharField(max_length=100, blank=True, default="")
    headers = models.JSONField(default=dict, blank=True)  # as received, minus credentials/cookies
    body = models.BinaryField(null=True, blank=True)  # raw webhook bytes (what the signature covered)
    payload = models.JSONField(null=True, blank=True)  # parsed JSON (webhooks) or the canonical event (API)
    fetched = models.JSONField(null=True, blank=True)  # data fetched from the channel (BigCommerce products)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    error_code = models.CharField(max_length=64, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    outcome = models.JSONField(default=dict, blank=True)  # per line: applied / replayed / stale / ...
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    processed_by = models.CharField(max_length=200, blank=True, default="")
    # Which drain applies it (ingestion.scheduling.partition_for: a stable hash of the event's SKU,
    # or of its order for marketplace orders): one drain at a time per partition, in id order.
    partition = models.SmallIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The drain's claim: pending events due now, oldest first.
            models.Index(fields=["id"], condition=Q(status="pending"), name="inbound_pending"),
            models.Index(fields=["partition", "id"], condition=Q(status="pending"), name="inbound_pending_partition"),
            models.Index(fields=["status", "-id"], name="inbound_status_newest"),
            models.Index(fields=["channel", "-id"], name="inbound_channel_newest"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.source}:{self.topic or self.delivery_id} ({self.status})"


class IngestedOrderLine(models.Model):
    """What a marketplace order line took from stock, so restocks (cancellations, refunds) are
    capped by it and go back where it came from: a cancellation followed by a refund of the same
    line, or two cancellation notices, never put back more than was taken."""

    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    order_ref = models.CharField(max_length=200)
    line_id = models.CharField(max_length=200)
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="+")
    ordered = models.BigIntegerField(default=0)
    taken = models.BigIntegerField(default=0)  # left on_hand (free stock plus a committed reservation)
    covered = models.BigIntegerField(default=0)  # of `taken`, what a committed reservation supplied
    restocked = models.BigIntegerField(default=0)
    # Where `taken` came from, so restocks put each unit back where it left:
    # [{"location": id, "taken": n, "restocked": m}, ...] (held units first, then free stock).
    # Empty on rows written before it existed: then everything came from `location`.
    sources = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # NULLS NOT DISTINCT: canonical (API) sales have no channel and must be unique too.
            models.UniqueConstraint(fields=["order_ref", "line_id", "channel"], name="orderline_unique",
                                    nulls_distinct=False),
        ]


class OversellIncident(models.Model):
    """A sale that arrived as a fact for more than was available: what existed was applied, the
    rest is the shortfall someone must resolve (back-order, cancel, find stock)."""

    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="+")
    order_ref = models.CharField(max_length=200, blank=True, default="")
    event_key = models.CharField(max_length=255, unique=True)  # one incident per sale line
    inbound_event = models.ForeignKey(InboundEvent, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    requested = models.BigIntegerField()
    available_before = models.BigIntegerField()
    applied = models.BigIntegerField()  # taken from on_hand
    shortfall = models.BigIntegerField()  # requested - available_before
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]


class LevelWatermark(models.Model):
    """The time of the newest absolute level (count) applied to a position: an older one that
    arrives later is stale and is not applied."""

    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="+")
    observed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sku", "location"], name="watermark_unique_position")]


class LevelDrift(models.Model):
    """A channel reported an absolute level for a location it is not authoritative for: recorded
    for reconciliation, never applied."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="+")
    sku = models.ForeignKey(Sku, on_delete=models.CASCADE, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="+")
    reported = models.BigIntegerField()
    on_hand = models.BigIntegerField()
    available = models.BigIntegerField()
    reported_at = models.DateTimeField(null=True, blank=True)
    inbound_event = models.ForeignKey(InboundEvent, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]


class ChannelPollCursor(models.Model):
    """Where order polling of one marketplace channel (eBay, Amazon) stands (ingestion.polling).

    Every order modified before `cursor_at` has been stored as an inbound event. A poll reads the
    window from `cursor_at` minus an overlap, page by page; while a window is being read,
    `window_from`/`window_until`/`page_token` say where (so a run cut short by its budget or a
    failure resumes at the page that was not stored, never skipping one), and `cursor_at` moves
    to `window_until` only once the last page is stored. `claim_token`/`claimed_until` are the
    per-channel lease taken with one conditional UPDATE, so two workers never poll a channel at
    once. Written only by ingestion.polling; read-only in the admin."""

    channel = models.OneToOneField(Channel, primary_key=True, on_delete=models.CASCADE, related_name="poll_cursor")
    cursor_at = models.DateTimeField(null=True, blank=True)  # complete up to here (None: never polled)
    window_from = models.DateTimeField(null=True, blank=True)  # the window being read, if any
    window_until = models.DateTimeField(null=True, blank=True)  # ... becomes cursor_at when read to the end
    page_token = models.TextField(blank=True, default="")  # next page of that window (offset / NextToken)
    next_due_at = models.DateTimeField()
    claim_token = models.CharField(max_length=64, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_pages = models.PositiveIntegerField(default=0)  # pages read by the last run
    last_orders = models.PositiveIntegerField(default=0)  # order documents seen by the last run
    last_stored = models.PositiveIntegerField(default=0)  # ... of which new versions stored
    busy = models.BooleanField(default=False)  # the last run saw a full page: polled again sooner
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["channel_id"]
        indexes = [models.Index(fields=["next_due_at"], name="pollcursor_due")]

    def __str__(self) -> str:
        return f"poll cursor of channel {self.channel_id}"
