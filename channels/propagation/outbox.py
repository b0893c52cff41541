"""The outbox: (channel, SKU) pairs marked dirty in the stock transaction, woken on commit, settled
after a push. Every statement that changes several rows takes them in (channel, sku) order."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import cache

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg import sql

from channels.models import (
    Channel,
    ChannelListing,
    DirtyPair,
)
from channels.propagation.base import (
    _Claimed,
)
from channels.ratelimit import wake_claim
from core.sql import sql_compose
from inventory.hooks import ReactionStatement, StockChange, statement_form
from inventory.models import BundleComponent

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ marking (the outbox)


def pairs_mark_dirty(*, sku_ids: Iterable[int], location_ids: Iterable[int] | None = None,
                     channel_ids: Iterable[int] | None = None, force: bool = False) -> list[int]:
    """Mark (channel, SKU) pairs dirty for every push-enabled channel listing these SKUs or a
    bundle made of them, in the caller's transaction, in one statement. With `location_ids`, channels whose eligible
    locations exclude all of them are skipped (their quantity cannot have changed).
    `force` sends the pair even if its quantity equals the last pushed value. Rows are upserted in
    (channel, sku) order so concurrent markers never deadlock. Returns the channel ids marked."""
    sku_ids = sorted(set(sku_ids))
    if not sku_ids:
        return []
    params = {"skus": sku_ids, "force": force,
              "locs": sorted(set(location_ids)) if location_ids is not None else None,
              "channels": sorted(set(channel_ids)) if channel_ids is not None else None}
    with connection.cursor() as cursor:
        cursor.execute(_mark_params_sql(), params)
        return sorted({row[0] for row in cursor.fetchall()})


@cache
def _mark_params_sql() -> str:
    return _mark_sql(skus=sql.SQL("%(skus)s::bigint[]"), locs=sql.SQL("%(locs)s::bigint[]"),
                     channels=sql.SQL("%(channels)s::bigint[]"), force=sql.SQL("%(force)s"))


def _mark_sql(*, skus: sql.Composable, locs: sql.Composable, channels: sql.Composable, force: sql.Composable) -> str:
    """The marking upsert, its inputs given as SQL (parameters, or a statement form's `changed`)."""
    return sql_compose("""
        INSERT INTO {pair}
            (channel_id, sku_id, generation, force, marked_at, next_attempt_at, attempts,
             first_error, last_error)
        SELECT l.channel_id, l.sku_id, 1, {force}, clock_timestamp(), clock_timestamp(), 0, '', ''
        -- The SKUs, and every bundle made of them (its derived quantity moves with them): a
        -- UNION, so each side uses its index (an OR here made the listings a sequential scan).
        FROM (SELECT unnest({skus}) AS sku_id
              UNION SELECT bc.bundle_id FROM {component} bc WHERE bc.component_id = ANY({skus})) w
        JOIN {listing} l ON l.sku_id = w.sku_id
        JOIN {channel} c ON c.id = l.channel_id
        WHERE c.active AND c.push_enabled
          AND ({channels} IS NULL OR l.channel_id = ANY({channels}))
          AND ({locs} IS NULL
               OR NOT EXISTS (SELECT 1 FROM {through} cl WHERE cl.channel_id = c.id)
               OR EXISTS (SELECT 1 FROM {through} cl
                          WHERE cl.channel_id = c.id AND cl.location_id = ANY({locs})))
        ORDER BY l.channel_id, l.sku_id
        ON CONFLICT (channel_id, sku_id) DO UPDATE SET
            generation = {pair}.generation + 1,
            force = {pair}.force OR EXCLUDED.force,
            -- A pair held back by a daily quota (eBay revisions) is judged again with the new
            -- quantity at once (one nearing zero may spend the reserve); retry waits stand.
            next_attempt_at = CASE WHEN EXCLUDED.force OR {pair}.budget_held
                THEN LEAST({pair}.next_attempt_at, EXCLUDED.next_attempt_at)
                ELSE {pair}.next_attempt_at END,
            budget_held = false
        RETURNING channel_id
    """, pair=DirtyPair._meta.db_table, listing=ChannelListing._meta.db_table, channel=Channel._meta.db_table,
                      through=Channel.locations.through._meta.db_table, component=BundleComponent._meta.db_table,
                      skus=skus, locs=locs, channels=channels, force=force)


class _ChannelWake:
    """What `enqueue_on_commit` sends after commit: a push task for each channel that has none
    queued yet (`wake_claim` debounces a burst of commits into a handful of tasks)."""

    name = "channels.push_channel"

    def apply_async(self, args=(), kwargs=None):
        from channels.tasks import channel_push_task

        (channel_ids,) = args
        for channel_id, wanted in zip(channel_ids, wake_claim(channel_ids), strict=True):
            if wanted:
                channel_push_task.apply_async(args=[channel_id])


_CHANNEL_WAKE = _ChannelWake()


def channels_wake_on_commit(channel_ids: Iterable[int]) -> None:
    """Wake the channels' push tasks once the transaction commits (nothing leaves before commit).
    Losing this message loses nothing: the outbox rows are committed and the sweeper finds them."""
    from core.oncommit import enqueue_on_commit

    channel_ids = sorted(set(channel_ids))
    if channel_ids:
        enqueue_on_commit(_CHANNEL_WAKE, channel_ids)


def _outbox_statement() -> ReactionStatement:
    """The statement form (inventory.hooks): the same marking over the changed rows, and the
    channels woken on commit."""
    return ReactionStatement(
        sql=_mark_sql(skus=sql.SQL("(SELECT array_agg(sku_id) FROM changed)::bigint[]"),
                      locs=sql.SQL("(SELECT array_agg(location_id) FROM changed)::bigint[]"),
                      channels=sql.SQL("NULL::bigint[]"), force=sql.SQL("false")),
        after_commit=lambda _change, channel_ids: channels_wake_on_commit(channel_ids))


@statement_form(_outbox_statement)
def outbox_on_stock_change(change: StockChange) -> None:
    """Stock-change reaction (settings.STOCK_CHANGE_REACTIONS, last): mark the affected pairs
    dirty in the stock transaction (one ordered statement) and wake their channels' push tasks
    on commit."""
    positions = change.positions
    if not positions:
        return
    channel_ids = pairs_mark_dirty(sku_ids={p.sku_id for p in positions},
                                   location_ids={p.location_id for p in positions})
    channels_wake_on_commit(channel_ids)


def channel_mark_all(*, channel: Channel, force: bool = False) -> int:
    """Mark every listing of the channel dirty (config change, reconnect, operator re-push)."""
    sku_ids = list(ChannelListing.objects.filter(channel=channel).values_list("sku_id", flat=True))
    marked = pairs_mark_dirty(sku_ids=sku_ids, channel_ids=[channel.pk], force=force)
    channels_wake_on_commit(marked)
    return len(sku_ids) if marked else 0



def _settle_without_sending(pairs: list[_Claimed]) -> int:
    """The channel shows this quantity now (or the listing is gone): delete the outbox rows,
    except those re-marked since we read them. Returns how many were deleted."""
    if not pairs:
        return 0
    condition = Q()
    for c in pairs:
        condition |= Q(id=c.pair_id, generation=c.generation)
    with transaction.atomic():
        _lock_pairs([c.pair_id for c in pairs])
        deleted, _ = DirtyPair.objects.filter(condition).delete()
    return deleted



def _lock_pairs(pair_ids: list[int]) -> None:
    """Lock outbox rows in (channel, sku) order, the order stock transactions mark them in, before
    a push-side statement changes several (one unordered DELETE could deadlock with a marker)."""
    if not pair_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(sql_compose("SELECT id FROM {pair} WHERE id = ANY(%s) ORDER BY channel_id, sku_id FOR UPDATE",
                                   pair=DirtyPair._meta.db_table), [sorted(pair_ids)])


# ------------------------------------------------------------------------------ sweeping


def channels_due() -> list[int]:
    """Channels with due dirty pairs whose circuit is not cooling down (the sweeper wakes them:
    retries whose wake-up hint was lost, outbox rows whose enqueue was lost)."""
    now = timezone.now()
    due = set(DirtyPair.objects.filter(next_attempt_at__lte=now, channel__active=True, channel__push_enabled=True)
              .values_list("channel_id", flat=True).distinct())
    if not due:
        return []
    cooling = set()
    for pk, opened, cooldown in Channel.objects.filter(pk__in=due, circuit_state=Channel.Circuit.OPEN).values_list(
            "pk", "circuit_opened_at", "circuit_cooldown_seconds"):
        if opened and opened + timedelta(seconds=cooldown) > now:
            cooling.add(pk)
    return sorted(due - cooling)
