"""The publishing side of live stock: after a stock change commits, announce which SKUs changed.

`stock_change_publish` is a stock-change reaction (settings.STOCK_CHANGE_REACTIONS, last): inside
the stock transaction it only queues, with core.oncommit, a call that runs after the commit. That
call is one Redis script: it numbers the change, records the number as each SKU's latest change
(the resume index, see live.keys) and publishes the SKU ids, atomically, so numbers reach every
subscriber in the order they were given.

A change of a bundle's component announces the bundle as well (inventory.bundles).

The message carries ids, not stock: each web process reads the current stock of the SKUs its
clients watch once per batch of notifications (live.hub), so a change nobody watches costs one
Redis call and no query, and a reader can never be handed an older state than the commit that
woke it (a state built by the publisher could be overtaken by a later commit's publisher).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterable

import redis
from django.conf import settings
from psycopg import sql

from inventory.bundles import bundles_containing, bundles_containing_sql
from inventory.hooks import ReactionStatement, StockChange, statement_form
from live.keys import live_keys

logger = logging.getLogger(__name__)

# KEYS: seq, last, epoch, channel. ARGV: a fresh epoch token (used only if none exists), sku ids.
_PUBLISH_LUA = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[3], epoch)
end
local seq = redis.call('INCR', KEYS[1])
for i = 2, #ARGV do
    redis.call('HSET', KEYS[2], ARGV[i], seq)
end
redis.call('PUBLISH', KEYS[4], epoch .. ' ' .. seq .. ' ' .. table.concat(ARGV, ',', 2))
return seq
"""

_client_lock = threading.Lock()
_client: tuple[int, redis.Redis, object] | None = None


def _redis() -> tuple[redis.Redis, object]:
    """One client and registered script per process (a forked Celery child makes its own)."""
    global _client
    with _client_lock:
        if _client is None or _client[0] != os.getpid():
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            _client = (os.getpid(), client, client.register_script(_PUBLISH_LUA))
        return _client[1], _client[2]


def stock_changes_publish(*, sku_ids: Iterable[int]) -> int | None:
    """Number the change of these SKUs and tell every web process (after commit only).
    Returns the change's number, or None when there was nothing to publish."""
    ids = sorted(set(sku_ids))
    if not ids:
        return None
    _client, script = _redis()
    keys = live_keys()
    return int(script(keys=[keys.seq, keys.last, keys.epoch, keys.channel],  # type: ignore[operator]
                      args=[secrets.token_hex(4), *ids]))


class _LivePublish:
    """What `enqueue_on_commit` calls after commit (the same interface as a Celery task, but it
    runs in the committing process: one Redis call, no worker hop on the way to the browser).
    A Redis outage is logged by core.oncommit; streams resynchronise when their own Redis
    connection comes back (live.hub), so a lost announcement is repaired for connected clients."""

    name = "live.publish_stock_changes"

    def __init__(self, *, bundles_known: bool = False):
        self.bundles_known = bundles_known

    def apply_async(self, args: tuple = (), kwargs: dict | None = None) -> None:
        (sku_ids,) = args
        # Bundles made of these SKUs changed too (their stock is derived): one indexed read,
        # after commit, outside the stock transaction's locks (unless the statement read them).
        stock_changes_publish(sku_ids=sku_ids if self.bundles_known else [*sku_ids, *bundles_containing(sku_ids)])


_LIVE_PUBLISH = _LivePublish()
_LIVE_PUBLISH_BUNDLES_KNOWN = _LivePublish(bundles_known=True)


def _publish_statement() -> ReactionStatement:
    """The statement form (inventory.hooks): the statement reads the bundles made of the changed
    SKUs (a round trip less after commit); the announcement is queued on commit."""
    from core.oncommit import enqueue_on_commit

    def after_commit(change: StockChange, bundle_ids: list) -> None:
        enqueue_on_commit(_LIVE_PUBLISH_BUNDLES_KNOWN,
                          sorted({p.sku_id for p in change.positions} | set(bundle_ids)))

    return ReactionStatement(sql=bundles_containing_sql(sql.SQL("(SELECT array_agg(sku_id) FROM changed)::bigint[]")),
                             after_commit=after_commit)


@statement_form(_publish_statement)
def stock_change_publish(change: StockChange) -> None:
    """Stock-change reaction: announce the changed SKUs once the transaction commits (last in
    STOCK_CHANGE_REACTIONS, so positions the waitlist changed are included)."""
    from core.oncommit import enqueue_on_commit

    sku_ids = sorted({p.sku_id for p in change.positions})
    if sku_ids:
        enqueue_on_commit(_LIVE_PUBLISH, sku_ids)
