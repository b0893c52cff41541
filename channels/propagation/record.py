"""Recording one request's outcome: fencing, audit, last pushed value, outbox rows, retries with
backoff, dead letters, health; one transaction (one statement on the all-acknowledged path)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.models import (
    Channel,
    ChannelDrift,
    ChannelSkuState,
    DeadLetter,
    DirtyPair,
    PendingFeed,
    PushAttempt,
)
from channels.propagation.base import (
    FEED_POLL_SCHEDULE,
    PushReport,
    _Claimed,
    _Result,
)
from channels.propagation.breaker import _health
from channels.propagation.budget import budget_exhausted
from channels.propagation.outbox import (
    _lock_pairs,
    _settle_without_sending,
    channels_wake_on_commit,
    pairs_mark_dirty,
)
from channels.ratelimit import ratelimit_block
from core.backoff import backoff_delay
from core.sql import sql_compose

logger = logging.getLogger(__name__)


def _fence_issue(channel_id: int) -> int:
    """A fencing token for the push lock just acquired: strictly increasing per channel, issued by
    the database that will check it. The Redis lock can expire under a stalled holder; the token
    makes sure only the newest holder records results (see `_record`)."""
    with connection.cursor() as cursor:
        cursor.execute(sql_compose("UPDATE {channel} SET push_fence = push_fence + 1 WHERE id = %s "
                                   "RETURNING push_fence", channel=Channel._meta.db_table), [channel_id])
        row = cursor.fetchone()
    return row[0] if row else 0


def _fence_holds(channel_id: int, fence: int) -> bool:
    """Inside the recording transaction: lock the channel row and check our token is the newest."""
    return Channel.objects.select_for_update(of=("self",)).filter(pk=channel_id, push_fence=fence).exists()


def _fenced_out(channel: Channel, batch: list[_Claimed], result: _Result) -> None:
    """A newer holder took the channel while our request was in flight: what we delivered may be
    older than what it delivered. Record nothing as pushed; re-mark the pairs (forced) so the
    current quantity is sent again after ours."""
    PushAttempt.objects.create(
        channel=channel, purpose=PushAttempt.Purpose.PUSH, started_at=result.started_at,
        latency_ms=round(result.latency_ms, 2), http_status=result.http_status, outcome=PushAttempt.Outcome.FAILED,
        sku_count=len(batch), error="fenced: a newer push took over this channel; re-queued",
        items=[{"sku": c.sku_code, "quantity": c.quantity, "ok": result.outcomes[c.sku_code].ok} for c in batch])
    marked = pairs_mark_dirty(sku_ids=[c.sku_id for c in batch], channel_ids=[channel.pk], force=True)
    channels_wake_on_commit(marked)
    logger.warning("push to channel %s fenced out (lock lost mid-request); %s pair(s) re-queued",
                   channel.slug, len(batch))



def _record(channel: Channel, batch: list[_Claimed], result: _Result, report: PushReport, *, probe: bool,
            fence: int) -> bool:
    """Write the outcome of one request: audit row, last-pushed state, outbox rows, retries,
    dead letters and channel health, in one transaction. Returns False when fenced out (a newer
    push-lock holder exists): then nothing is recorded as pushed and the drain must stop."""
    now = timezone.now()
    _record_seen(channel, batch, result, now)
    ok = [c for c in batch if result.outcomes[c.sku_code].ok]
    # Accepted into an asynchronous feed (results later) or refused for a used-up daily quota
    # (waits for it to renew): neither acknowledged nor failed, no attempt charged.
    pending = [c for c in batch if not result.outcomes[c.sku_code].ok and result.outcomes[c.sku_code].pending]
    held = [c for c in batch if not result.outcomes[c.sku_code].ok and not result.outcomes[c.sku_code].pending
            and result.outcomes[c.sku_code].limit_reached]
    waiting = {c.pair_id for c in pending} | {c.pair_id for c in held}
    failed = [c for c in batch if not result.outcomes[c.sku_code].ok and c.pair_id not in waiting]
    if result.rate_limited:
        outcome = PushAttempt.Outcome.RATE_LIMITED
    elif not failed and not held:
        outcome = PushAttempt.Outcome.PENDING if pending else PushAttempt.Outcome.SUCCESS
    elif ok or pending:
        outcome = PushAttempt.Outcome.PARTIAL
    else:
        outcome = PushAttempt.Outcome.FAILED
    report.requests += 1
    report.pushed += len(ok)
    report.submitted += len(pending)
    report.held += len(held)
    if not failed and not pending and not held:
        if _record_success(channel, batch, result, now, probe=probe, fence=fence):
            return True
        with transaction.atomic():
            _fenced_out(channel, batch, result)
        return False
    with transaction.atomic():
        if not _fence_holds(channel.pk, fence):
            _fenced_out(channel, batch, result)
            return False
        _lock_pairs([c.pair_id for c in batch])
        PushAttempt.objects.create(
            channel=channel, purpose=PushAttempt.Purpose.PROBE if probe else PushAttempt.Purpose.PUSH,
            started_at=result.started_at, latency_ms=round(result.latency_ms, 2), http_status=result.http_status,
            outcome=outcome, sku_count=len(batch), error=result.error[:2000],
            items=[{"sku": c.sku_code, "quantity": c.quantity, "ok": result.outcomes[c.sku_code].ok,
                    **({"pending": result.outcomes[c.sku_code].pending} if result.outcomes[c.sku_code].pending else {}),
                    **({"held": True} if result.outcomes[c.sku_code].limit_reached else {}),
                    **({"error": result.outcomes[c.sku_code].error[:300]}
                       if not result.outcomes[c.sku_code].ok and not result.outcomes[c.sku_code].pending else {})}
                   for c in batch],
        )
        if ok:
            _acknowledged(channel, ok, now)
        if pending:
            _feeds_submitted(channel, pending, result, now)
        if held:
            budget_exhausted(channel, held, now)
        if result.rate_limited:
            # The marketplace said "slow down": not the items' fault, no attempt is charged.
            wait = result.retry_after or backoff_delay(attempt=1, base=channel.retry_base_delay,
                                                       cap=channel.retry_max_delay)
            ratelimit_block(channel_id=channel.pk, seconds=wait)
            DirtyPair.objects.filter(id__in=[c.pair_id for c in failed]).update(
                next_attempt_at=now + timedelta(seconds=wait), last_error=f"rate limited: {result.error}"[:2000])
            result.retry_after = wait
            Channel.objects.filter(pk=channel.pk).update(last_error=f"rate limited: {result.error}"[:2000])
        elif failed:
            if probe and result.channel_failed:
                # The channel is still down: the probe's pairs wait again, attempts intact.
                DirtyPair.objects.filter(id__in=[c.pair_id for c in failed]).update(last_error=result.error[:2000])
            else:
                report.dead_lettered += _charge_attempts(channel, failed, result, now)
            report.failed += len(failed)
        _health(channel, result, now, probe=probe)
    return True


_SUCCESS_SQL = """
    WITH fence AS (
        SELECT id FROM {channel} WHERE id = %(channel)s AND push_fence = %(fence)s FOR UPDATE
    ), locked AS (
        SELECT d.id FROM {pair} d WHERE d.id = ANY(%(pairs)s::bigint[]) AND EXISTS (SELECT 1 FROM fence)
        ORDER BY d.channel_id, d.sku_id FOR UPDATE
    ), attempt AS (
        INSERT INTO {attempt} (channel_id, purpose, started_at, latency_ms, http_status, outcome, items, sku_count,
                               error)
        VALUES (%(channel)s, %(purpose)s, %(started)s, %(latency)s, %(status)s, 'success', %(items)s::jsonb,
                %(count)s, '')
        RETURNING id
    ), state AS (
        INSERT INTO {state} (channel_id, sku_id, last_pushed, last_pushed_at)
        SELECT %(channel)s, u.sku_id, u.qty, %(now)s
        FROM unnest(%(skus)s::bigint[], %(qtys)s::bigint[]) AS u(sku_id, qty)
        WHERE EXISTS (SELECT 1 FROM fence)
        ON CONFLICT (channel_id, sku_id) DO UPDATE
            SET last_pushed = EXCLUDED.last_pushed, last_pushed_at = EXCLUDED.last_pushed_at
        RETURNING 1
    ), settled AS (
        DELETE FROM {pair} d USING unnest(%(pairs)s::bigint[], %(gens)s::bigint[]) AS g(id, gen)
        WHERE d.id = g.id AND d.generation = g.gen AND d.id IN (SELECT id FROM locked)
        RETURNING d.id
    ), remarked AS (
        UPDATE {pair} d SET attempts = 0, force = false, first_error = '', last_error = '', first_failed_at = NULL
        WHERE d.id IN (SELECT id FROM locked) AND d.id NOT IN (SELECT id FROM settled)
        RETURNING d.id
    ), superseded AS (
        UPDATE {dead} SET status = 'superseded', resolved_at = %(now)s, resolved_by = 'propagation',
                          resolution_note = 'a later push of this SKU succeeded'
        WHERE channel_id = %(channel)s AND sku_id = ANY(%(skus)s::bigint[]) AND status = 'open'
          AND EXISTS (SELECT 1 FROM fence)
        RETURNING id
    )
    UPDATE {channel} SET last_success_at = %(now)s, consecutive_failures = 0, circuit_state = 'closed',
                         circuit_opened_at = NULL, last_error = ''
    WHERE id IN (SELECT id FROM fence)
    RETURNING id
"""


def _record_success(channel: Channel, batch: list[_Claimed], result: _Result, now, *, probe: bool,
                    fence: int) -> bool:
    """The common case, every item acknowledged, in one atomic statement (the hot path of a
    fan-out: fence check, audit row, last-pushed state, compare-and-delete of the outbox rows in
    (channel, sku) lock order, superseded dead letters, channel health). Same effects as the
    general path in `_record`. Returns False, having recorded only the audit row, when fenced out."""
    sql = sql_compose(_SUCCESS_SQL, attempt=PushAttempt._meta.db_table, state=ChannelSkuState._meta.db_table,
                              pair=DirtyPair._meta.db_table, dead=DeadLetter._meta.db_table,
                              channel=Channel._meta.db_table)
    params = {
        "channel": channel.pk, "purpose": PushAttempt.Purpose.PROBE if probe else PushAttempt.Purpose.PUSH,
        "started": result.started_at, "latency": round(result.latency_ms, 2), "status": result.http_status,
        "items": json.dumps([{"sku": c.sku_code, "quantity": c.quantity, "ok": True} for c in batch]),
        "count": len(batch), "now": now, "skus": [c.sku_id for c in batch], "qtys": [c.quantity for c in batch],
        "pairs": [c.pair_id for c in batch], "gens": [c.generation for c in batch], "fence": fence,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def _record_seen(channel: Channel, batch: list[_Claimed], result: _Result, now) -> None:
    """A marketplace that refused our compare-and-set (Shopify CHANGE_FROM_QUANTITY_STALE) was read
    back before we pushed again: what it held differs from what we believed. That is drift (a sale
    in flight there, or an edit on the marketplace): record it, and keep the level read as
    `last_seen`. Observations stand whether or not our push lock is still ours (no fence check);
    the pushed value itself is recorded afterwards with the same `now`, so a later compare-and-set
    starts from what we pushed."""
    seen = sorted(((c, result.outcomes[c.sku_code].seen) for c in batch
                   if result.outcomes[c.sku_code].seen is not None), key=lambda pair: pair[0].sku_id)
    if not seen:
        return
    with transaction.atomic():
        ChannelDrift.objects.bulk_create([ChannelDrift(channel=channel, sku_id=c.sku_id, expected=c.change_from,
                                                       actual=level)
                                          for c, level in seen if c.change_from is not None and level != c.change_from])
        ChannelSkuState.objects.bulk_create(
            [ChannelSkuState(channel=channel, sku_id=c.sku_id, last_seen=level, last_seen_at=now) for c, level in seen],
            update_conflicts=True, unique_fields=["channel", "sku"], update_fields=["last_seen", "last_seen_at"])
    logger.warning("channel %s held other levels than we last pushed (compare-and-set refused): %s", channel.slug,
                   ", ".join(f"{c.sku_code} {c.change_from}->{level}" for c, level in seen))


def _feeds_submitted(channel: Channel, pending: list[_Claimed], result: _Result, now) -> None:
    """Inside the recording transaction (fence held, pairs locked): remember each feed the
    marketplace accepted, with what it carries, and hold its pairs back until it is resolved
    (`channels.propagation.feeds`), so no newer push of those SKUs can land before it."""
    by_feed: dict[str, list[_Claimed]] = {}
    for c in pending:
        by_feed.setdefault(result.outcomes[c.sku_code].pending, []).append(c)
    timeout = timedelta(seconds=settings.AMAZON_FEED_TIMEOUT_SECONDS)
    for reference, claimed in by_feed.items():
        PendingFeed.objects.create(
            channel=channel, reference=reference[:200], sku_count=len(claimed), submitted_at=now,
            next_poll_at=now + timedelta(seconds=FEED_POLL_SCHEDULE[0]),
            items=[{"pair": c.pair_id, "sku_id": c.sku_id, "sku": c.sku_code, "external_id": c.external_id,
                    "attributes": c.attributes or {}, "generation": c.generation, "quantity": c.quantity}
                   for c in claimed])
        DirtyPair.objects.filter(id__in=[c.pair_id for c in claimed]).update(
            next_attempt_at=now + timeout, last_error=f"in feed {reference}: waiting for its result"[:2000])
    logger.info("channel %s: %s SKU(s) submitted in %s feed(s)", channel.slug, len(pending), len(by_feed))


def _acknowledged(channel: Channel, ok: list[_Claimed], now) -> None:
    ChannelSkuState.objects.bulk_create(
        [ChannelSkuState(channel=channel, sku_id=c.sku_id, last_pushed=c.quantity, last_pushed_at=now) for c in ok],
        update_conflicts=True, unique_fields=["channel", "sku"], update_fields=["last_pushed", "last_pushed_at"],
    )
    if _settle_without_sending(ok) < len(ok):
        # Still present = re-marked while in flight: push again soon, with a clean slate.
        DirtyPair.objects.filter(id__in=[c.pair_id for c in ok]).update(
            attempts=0, force=False, first_error="", last_error="", first_failed_at=None)
    DeadLetter.objects.filter(channel=channel, sku_id__in=[c.sku_id for c in ok],
                              status=DeadLetter.Status.OPEN).update(
        status=DeadLetter.Status.SUPERSEDED, resolved_at=now, resolved_by="propagation",
        resolution_note="a later push of this SKU succeeded")


def _charge_attempts(channel: Channel, failed: list[_Claimed], result: _Result, now) -> int:
    """One more failed attempt for each pair: schedule its retry, or dead-letter it after the
    channel's last attempt. Returns how many were dead-lettered."""
    dead = 0
    updates = []
    for c in failed:
        error = result.outcomes[c.sku_code].error or result.error
        attempts = c.attempts + 1
        if attempts >= channel.retry_max_attempts:
            _dead_letter(channel, c, attempts, error, now)
            dead += 1
            continue
        delay = backoff_delay(attempt=attempts, base=channel.retry_base_delay, cap=channel.retry_max_delay)
        updates.append(DirtyPair(id=c.pair_id, attempts=attempts, next_attempt_at=now + timedelta(seconds=delay),
                                 last_error=error[:2000], first_error=(c.first_error or error)[:2000],
                                 first_failed_at=c.first_failed_at or now))
    if updates:
        DirtyPair.objects.bulk_update(updates, ["attempts", "next_attempt_at", "last_error", "first_error",
                                                "first_failed_at"])
    return dead


def _dead_letter(channel: Channel, c: _Claimed, attempts: int, error: str, now) -> None:
    existing = DeadLetter.objects.select_for_update().filter(
        channel=channel, sku_id=c.sku_id, status=DeadLetter.Status.OPEN).first()
    if existing:
        existing.quantity, existing.last_error, existing.last_failed_at = c.quantity, error[:2000], now
        existing.attempts += attempts
        existing.save(update_fields=["quantity", "last_error", "last_failed_at", "attempts"])
    else:
        DeadLetter.objects.create(
            channel=channel, sku_id=c.sku_id, quantity=c.quantity, attempts=attempts,
            first_error=(c.first_error or error)[:2000], last_error=error[:2000],
            first_failed_at=c.first_failed_at or now, last_failed_at=now)
    # Compare-and-delete, as on success: a change marked during the last attempt keeps its pair,
    # with fresh attempts, so the newer quantity is still pushed (and supersedes this letter).
    deleted, _ = DirtyPair.objects.filter(id=c.pair_id, generation=c.generation).delete()
    if not deleted:
        DirtyPair.objects.filter(id=c.pair_id).update(attempts=0, force=False, first_error="", last_error="",
                                                     first_failed_at=None, next_attempt_at=now)
    logger.error("dead letter: channel %s sku %s after %s attempts: %s", channel.slug, c.sku_code, attempts, error)
