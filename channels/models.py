"""Sales channels (marketplaces, storefronts, partner systems) and how our SKUs map onto them.

Secrets (`credentials`, `webhook_secret`) are stored server-side and never returned by the API,
shown in the admin, or logged. Health fields are written by channels.services (propagation).
"""

from django.db import models

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

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


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

    def __str__(self) -> str:
        return f"{self.channel_id}:{self.external_id}"
