from django.db import models

SCOPES = (
    "stock:read",
    "stock:write",
    "catalog:write",
    "reservations:write",
    "events:write",
    "channels:write",
    "ops",
)


class ApiKey(models.Model):
    """A client credential. Only a SHA-256 of the secret is stored; the key is shown once.

    Keys are 32 random bytes, so a fast hash is enough (nothing to brute-force); `prefix` is the
    public part used to find the row without scanning.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    # DRF treats request.user as a user; these make an ApiKey usable there.
    is_authenticated = True
    is_anonymous = False


class IdempotencyRecord(models.Model):
    """The first response to a mutating request carrying an Idempotency-Key (per API key)."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight"
        DONE = "done"

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, db_index=False)  # idempotency_unique_key
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.BinaryField(null=True)
    response_headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_unique_key")]
