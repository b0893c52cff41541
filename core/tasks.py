from celery import shared_task

from core.idempotency import idempotency_prune


@shared_task(name="core.prune_idempotency_keys")
def prune_idempotency_keys_task() -> int:
    """Drop Idempotency-Key records past their retention (IDEMPOTENCY_TTL_HOURS)."""
    return idempotency_prune()


@shared_task(name="core.ping")
def ping_task(value: str) -> str:
    """Round-trip check used by health tooling and the worker end-to-end test."""
    from django.core.cache import cache

    cache.set(f"ping:{value}", "pong", timeout=300)
    return value
