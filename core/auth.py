"""Bearer API keys: `Authorization: Bearer <key>`, key = "sk_<prefix>_<secret>"."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from core.models import SCOPES, ApiKey

LAST_USED_RESOLUTION = timedelta(minutes=1)  # avoid a write per request on hot paths


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


def api_key_from_token(token: str) -> ApiKey | None:
    parts = token.split("_")
    if len(parts) < 3 or parts[0] != "sk":
        return None
    key = ApiKey.objects.filter(prefix=parts[1], active=True).first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash(token)):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <api key>'.")
        key = api_key_from_token(token.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return key, key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
