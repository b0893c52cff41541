"""Webhook signature helpers shared by the adapters (inbound verification, outbound signing).

Every comparison is constant-time (`hmac.compare_digest`) and every MAC is computed over the raw
body bytes exactly as received: re-serialising JSON would change the bytes and break signatures.

Standard Webhooks (https://www.standardwebhooks.com/, used by BigCommerce and our `webhook`
kind): headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
space-separated list of `v1,<base64 HMAC-SHA256>` over "{id}.{timestamp}.{body}"; a delivery is
authentic when any v1 entry matches and the timestamp is within 5 minutes of our clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from core.parsing import ascii_int

STANDARD_WEBHOOKS_TOLERANCE = 300  # seconds either side of our clock (the specification's default)
WHSEC_PREFIX = "whsec_"


def hmac_sha256_base64(key: bytes, message: bytes) -> str:
    """base64(HMAC-SHA256(key, message)), the digest Shopify, WooCommerce and Standard Webhooks send."""
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode("ascii")


def signature_matches(expected: str, received: str | None) -> bool:
    """Constant-time comparison of two base64 signatures; a missing one never matches."""
    if not received:
        return False
    return hmac.compare_digest(expected.encode("ascii"), received.strip().encode("ascii", "replace"))


def standard_webhooks_key(secret: str | bytes) -> bytes:
    """The HMAC key for a Standard Webhooks secret.

    bytes are used as they are; a `whsec_`-prefixed string is base64-decoded after the prefix, as
    the specification says; any other string is used as its UTF-8 bytes. Callers whose
    marketplace says "the secret as UTF-8" (BigCommerce) pass `secret.encode()`.
    """
    if isinstance(secret, bytes):
        return secret
    if secret.startswith(WHSEC_PREFIX):
        try:
            return base64.b64decode(secret[len(WHSEC_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            return secret.encode("utf-8")
    return secret.encode("utf-8")


def standard_webhooks_sign(secret: str | bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` header value ("v1,<base64>") for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + hmac_sha256_base64(standard_webhooks_key(secret), signed)


def standard_webhooks_verify(
    secret: str | bytes,
    msg_id: str | None,
    timestamp: str | int | None,
    signature_header: str | None,
    body: bytes,
    *,
    tolerance: int = STANDARD_WEBHOOKS_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when the headers are present, the timestamp is within `tolerance` seconds of now,
    and any `v1,` entry of the signature header matches. Never raises on malformed input."""
    if not secret or not msg_id or timestamp in (None, "") or not signature_header:
        return False
    ts = ascii_int(str(timestamp).strip())  # integer seconds in ASCII ("٣" is not a time)
    if ts is None:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    expected = standard_webhooks_sign(secret, msg_id, str(timestamp).strip(), body).split(",", 1)[1]
    matched = False
    for entry in signature_header.split():
        version, _, value = entry.partition(",")
        # Compare every entry (no early exit) so timing does not reveal which one matched.
        if version == "v1" and signature_matches(expected, value):
            matched = True
    return matched


def header(headers, name: str) -> str | None:
    """A request header, case-insensitively, from Django's `request.headers` or a plain dict."""
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value
