"""HTTP helpers shared by the outbound (propagation) sections of the adapters.

`TimeoutSession` is the `requests.Session` every adapter gets: connect and read timeouts are
always set, so a marketplace that stops answering can never hold a push (and the channel's push
lock) for longer than those timeouts.
"""

from __future__ import annotations

import email.utils
import time

import requests

from channels.adapters.base import PushItem, PushOutcome
from core.parsing import ascii_int

CONNECT_TIMEOUT = 3.05  # seconds; just over a TCP retransmit window
READ_TIMEOUT = 10.0  # seconds; the slowest marketplace batch endpoints answer well within this
USER_AGENT = "stockline-propagation/1.0"


class TimeoutSession(requests.Session):
    """A Session whose every request has (connect, read) timeouts unless the caller sets them."""

    def __init__(self, timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)):
        super().__init__()
        self.timeout = timeout
        self.headers["User-Agent"] = USER_AGENT

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


def root(channel) -> str:
    """The channel's base_url without a trailing slash (paths are appended to it)."""
    return (channel.base_url or "").rstrip("/")


def num(value):
    """Marketplace ids that are numbers travel as JSON numbers; anything else as a string."""
    text = str(value)
    number = ascii_int(text, maximum=None)  # not isdigit(): "²" passes it and int() refuses it
    return number if number is not None else text


def retry_after_seconds(response: requests.Response) -> float | None:
    """How long the marketplace asked us to wait, from any header it uses for that:
    `Retry-After` (seconds, float for Shopify, or an HTTP date), BigCommerce's
    `X-Rate-Limit-Time-Reset-Ms`."""
    reset_ms = response.headers.get("X-Rate-Limit-Time-Reset-Ms")
    if reset_ms:
        try:
            return max(float(reset_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def describe(response: requests.Response) -> str:
    text = (response.text or "").strip().replace("\n", " ")
    return f"HTTP {response.status_code}: {text[:300]}" if text else f"HTTP {response.status_code}"


def failed(items: list[PushItem], response: requests.Response, error: str | None = None) -> list[PushOutcome]:
    """The same failure for every item of a request the marketplace refused as a whole."""
    retry_after = retry_after_seconds(response) if response.status_code in (429, 503) else None
    message = error or describe(response)
    return [PushOutcome(sku=i.sku, ok=False, status=response.status_code, error=message, retry_after=retry_after)
            for i in items]


def json_body(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None
