"""Bearer API keys: `Authorization: Bearer <key>`, key = "sk_<prefix>_<secret>".

API requests authenticate through a small in-process cache (`api_key_authenticate`): a key seen
in the last `API_KEY_CACHE_SECONDS` (default 5) is not read again, so a hot path does not pay a
query per request for it. Hence a revoked key (or changed scopes) takes effect within that many
seconds in every web process, not at once (docs/performance.md). Only keys that authenticated are
cached, by the SHA-256 of the whole token: a wrong secret with a right prefix never hits. Code
that must see a revocation at once (live streams re-checking a key) calls `api_key_from_token`,
which always reads the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from core.models import SCOPES, ApiKey

LAST_USED_RESOLUTION = timedelta(minutes=1)  # avoid a write per request on hot paths
CACHE_MAX_KEYS = 1024  # far more keys than a deployment authenticates within a few seconds


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key; return it with the plaintext, which is never stored nor shown again."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    prefix = secrets.token_hex(6)
    plaintext = f"sk_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(name=name, prefix=prefix, key_hash=_hash(plaintext), scopes=list(scopes))
    return key, plaintext


def _lookup(token: str, digest: str) -> ApiKey | None:
    parts = token.split("_")
    if len(parts) < 3 or parts[0] != "sk":
        return None
    key = ApiKey.objects.filter(prefix=parts[1], active=True).only(
        "id", "name", "prefix", "key_hash", "scopes", "active", "last_used_at").first()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key


def _touch(key: ApiKey) -> None:
    """Record use, at most once a minute per key (per process)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)


def api_key_from_token(token: str) -> ApiKey | None:
    """The active key this token names, read from the database now (revocations count at once)."""
    key = _lookup(token, _hash(token))
    if key is not None:
        _touch(key)
    return key


_cache: dict[str, tuple[float, ApiKey]] = {}
_cache_lock = threading.Lock()


def cache_seconds() -> float:
    return float(getattr(settings, "API_KEY_CACHE_SECONDS", 5.0))


def api_key_authenticate(token: str) -> ApiKey | None:
    """`api_key_from_token` behind the in-process cache (module docstring): a key authenticated
    less than `API_KEY_CACHE_SECONDS` ago is returned without a query. The returned instance is
    shared between requests: read it, never change it."""
    digest = _hash(token)
    ttl = cache_seconds()
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is not None and now - hit[0] < ttl:
        key = hit[1]
    else:
        key = _lookup(token, digest)
        if key is None:
            _cache.pop(digest, None)
            return None
        if ttl > 0:
            with _cache_lock:
                if len(_cache) >= CACHE_MAX_KEYS:
                    _cache.clear()
                _cache[digest] = (now, key)
    _touch(key)
    return key


def api_key_cache_clear() -> None:
    """Forget every cached key in this process (tests; an operator shell after a revocation)."""
    with _cache_lock:
        _cache.clear()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <api key>'.")
        key = api_key_authenticate(token.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return key, key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
