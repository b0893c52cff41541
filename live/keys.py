"""Where live stock lives in Redis: one place for the names the publisher and the streams share.

- `<prefix>seq`: a counter; each committed stock change gets the next number (its cursor).
- `<prefix>last`: a hash, SKU id -> the number of the SKU's latest change. A stream resuming from
  cursor N sends every named SKU whose number is above N: exact however long the client was away.
- `<prefix>epoch`: a random token made when the counter starts. Cursors carry it: a cursor from
  another epoch (Redis lost its data, or another stack) cannot be compared, so the stream sends
  the current state of every named SKU instead.
- the pub/sub channel `<prefix>changes:<db>` carries "<epoch> <number> <sku id>,<sku id>...".
  Pub/sub channels are global to a Redis server (not per database), so the name carries the
  database number: two stacks sharing a server on different databases do not hear each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.conf import settings
from redis.connection import parse_url


@dataclass(frozen=True)
class LiveKeys:
    seq: str
    last: str
    epoch: str
    channel: str


@cache
def live_keys() -> LiveKeys:
    prefix = settings.LIVE_REDIS_PREFIX
    db = parse_url(settings.REDIS_URL).get("db", 0)
    return LiveKeys(seq=f"{prefix}seq", last=f"{prefix}last", epoch=f"{prefix}epoch",
                    channel=f"{prefix}changes:{db}")


def cursor_format(epoch: str, number: int) -> str:
    """The opaque event id sent to clients: `<epoch>-<number>`."""
    return f"{epoch}-{number}"


def cursor_parse(value: str | None) -> tuple[str, int] | None:
    """(epoch, number) from a Last-Event-ID, or None when it is not one of ours."""
    if not value:
        return None
    epoch, _, number = value.strip().rpartition("-")
    if not epoch or not number.isascii() or not number.isdigit() or len(number) > 18:
        return None
    return epoch, int(number)
