"""eBay's revisions per listing per calendar day, budgeted so the quantity stays right all day.

eBay revises a listing at most ~250 times per calendar day and then refuses until the next day
(https://developer.ebay.com/api-docs/sell/inventory/resources/inventory_item/methods/bulkUpdatePriceQuantity).
A busy SKU (a sale a minute) would spend that by mid-afternoon and then show a stale quantity
until midnight, most dangerously when it nears zero. So, per listing and eBay day:

- `per_day` revisions (channel `settings.revisions_per_day`, default `EBAY_REVISIONS_PER_DAY`
  = 250, never above the marketplace's limit), of which `reserve` (`settings.revision_reserve`,
  default `EBAY_REVISION_RESERVE` = 25) are kept for **critical** changes: the new quantity is at
  or below `low_stock` (`settings.revision_low_stock`, default `EBAY_REVISION_LOW_STOCK` = 3),
  zero included, or the listing was last told such a quantity (coming back from sold out), or it
  was never pushed. Critical changes may spend the whole day's budget.
- A non-critical change is sent while the normal budget (`per_day - reserve`) lasts. When less
  than `tight` revisions of it are left (`settings.revision_tight`, default `EBAY_REVISION_TIGHT`
  = 50) it is coalesced harder: at most one revision per `time left in the day / revisions left`
  seconds, so the remainder is spread over the rest of the day, each push carrying the latest
  quantity. When the normal budget is spent it waits for the next day (or for a critical change).
- A held pair stays in the outbox with `budget_held` and `next_attempt_at` at its release time
  (no attempt charged); any new stock change makes it due at once, so it is judged again with the
  new quantity (a change that reaches the low-stock zone goes out on the reserve). Held pairs are
  the "held back" count of the channel's health.
- Spending is counted before the request (a request whose answer is lost may have revised the
  listing) and refunded for items eBay answered with a refusal (nothing was revised). When eBay
  itself refuses an item for its daily limit (revisions made outside Stockline count too), the
  listing is marked exhausted for the day and the item waits for the next day, like a held one.

The eBay day is a calendar day in `EBAY_REVISION_DAY_TIMEZONE` (default America/Los_Angeles:
eBay does not say which calendar; its official time is US Pacific). Budgets are per listing:
`key` is the listing attribute `listing_id` when set (variations of one multi-variation listing
share eBay's count), else the SKU.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.adapters import adapter_for
from channels.models import Channel, DirtyPair, RevisionBudget
from channels.propagation.base import PushReport, _Claimed, _Result
from channels.propagation.outbox import _lock_pairs
from core.sql import sql_compose

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BudgetPolicy:
    """One channel's revision budget per listing per marketplace day."""

    per_day: int
    reserve: int
    low_stock: int
    tight: int
    tz: ZoneInfo

    @property
    def normal(self) -> int:
        """Revisions a non-critical change may spend per day."""
        return max(self.per_day - self.reserve, 0)

    def day(self, now: datetime) -> date:
        return now.astimezone(self.tz).date()

    def day_end(self, now: datetime) -> datetime:
        """When the marketplace's next calendar day begins (the budget renews)."""
        return datetime.combine(self.day(now) + timedelta(days=1), time(0), tzinfo=self.tz)

    def critical(self, c: _Claimed) -> bool:
        """Where accuracy matters most: near zero (overselling), back from it (a listing that shows
        sold out sells nothing) or never pushed."""
        return c.last_pushed is None or c.quantity <= self.low_stock or c.last_pushed <= self.low_stock


def _setting(channel: Channel, name: str, default: int) -> int:
    value = (channel.settings or {}).get(name) if isinstance(channel.settings, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def budget_policy(channel: Channel) -> BudgetPolicy | None:
    """The channel's revision budget, or None when its marketplace has no per-listing quota."""
    limit = adapter_for(channel).daily_revision_limit
    if not limit:
        return None
    per_day = min(_setting(channel, "revisions_per_day", settings.EBAY_REVISIONS_PER_DAY), limit)
    name = (channel.settings or {}).get("revision_day_timezone") if isinstance(channel.settings, dict) else None
    try:
        tz = ZoneInfo(name if isinstance(name, str) and name else settings.EBAY_REVISION_DAY_TIMEZONE)
    except (KeyError, ValueError):
        tz = ZoneInfo(settings.EBAY_REVISION_DAY_TIMEZONE)
    return BudgetPolicy(per_day=per_day,
                        reserve=min(_setting(channel, "revision_reserve", settings.EBAY_REVISION_RESERVE), per_day),
                        low_stock=_setting(channel, "revision_low_stock", settings.EBAY_REVISION_LOW_STOCK),
                        tight=_setting(channel, "revision_tight", settings.EBAY_REVISION_TIGHT), tz=tz)


def listing_key(sku_id: int, attributes: dict | None) -> str:
    """Which listing a SKU's revisions count against (see the module docstring)."""
    listing = (attributes or {}).get("listing_id")
    return f"listing:{listing}"[:220] if listing not in (None, "") else f"sku:{sku_id}"


@dataclass
class _Spent:
    used: int = 0
    exhausted: bool = False
    last_revision_at: datetime | None = None


def _spent_today(channel: Channel, policy: BudgetPolicy, keys: set[str], now: datetime) -> dict[str, _Spent]:
    today = policy.day(now)
    rows = RevisionBudget.objects.filter(channel=channel, key__in=keys).values_list(
        "key", "day", "used", "exhausted", "last_revision_at")
    return {key: _Spent(used, exhausted, last) if day == today else _Spent(last_revision_at=last)
            for key, day, used, exhausted, last in rows}


def budget_hold(channel: Channel, pairs: list[_Claimed], report: PushReport, *,
                now: datetime | None = None) -> list[_Claimed]:
    """The pairs that may be sent now under the channel's revision budget; the others are held
    back (see the module docstring for the rule). A channel without a budget sends everything."""
    policy = budget_policy(channel)
    if policy is None or not pairs:
        return pairs
    now = now or timezone.now()
    keys = {c.pair_id: listing_key(c.sku_id, c.attributes) for c in pairs}
    spent = _spent_today(channel, policy, set(keys.values()), now)
    end = policy.day_end(now)
    seconds_left = max((end - now).total_seconds(), 1.0)
    planned: Counter[str] = Counter()  # revisions this round already gives each listing
    send: list[_Claimed] = []
    holds: list[tuple[_Claimed, datetime, str]] = []
    for c in sorted(pairs, key=lambda p: (not policy.critical(p), p.pair_id)):  # critical ones first
        key = keys[c.pair_id]
        state = spent.get(key, _Spent())
        used = state.used + planned[key]
        if state.exhausted or used >= policy.per_day:
            holds.append((c, end, f"held: {used} of {policy.per_day} revisions spent on this listing today"
                                  f"{' (eBay refused more)' if state.exhausted else ''}; sent when the day ends"))
            continue
        if not policy.critical(c):
            left = policy.normal - used
            if left <= 0:
                holds.append((c, end, f"held: normal budget spent ({used} of {policy.per_day}, {policy.reserve} "
                                      "kept for near-zero quantities); sent when the day ends or the quantity nears 0"))
                continue
            if left < policy.tight and state.last_revision_at is not None:
                release = state.last_revision_at + timedelta(seconds=seconds_left / left)
                if release > now:
                    holds.append((c, min(release, end), f"held: {left} revisions left today, paced to one per "
                                                        f"{seconds_left / left:.0f} s"))
                    continue
        planned[key] += 1
        send.append(c)
    if holds:
        _hold(holds)
        report.held += len(holds)
        logger.info("channel %s: %s pair(s) held back by the revision budget", channel.slug, len(holds))
    released = sorted(c.pair_id for c in send)
    if released:  # released by time (not by a new mark, which clears the flag itself): no longer held
        with transaction.atomic():
            _lock_pairs(released)
            DirtyPair.objects.filter(id__in=released, budget_held=True).update(budget_held=False)
    return sorted(send, key=lambda c: c.pair_id)


_HOLD_SQL = """
    UPDATE {pair} d SET next_attempt_at = h.until, budget_held = true, last_error = h.reason
    FROM unnest(%(ids)s::bigint[], %(gens)s::bigint[], %(untils)s::timestamptz[], %(reasons)s::text[])
         AS h(id, gen, until, reason)
    WHERE d.id = h.id AND d.generation = h.gen
"""


def _hold(holds: list[tuple[_Claimed, datetime, str]]) -> None:
    """Hold pairs until their release, unless re-marked since they were read (then the newer
    quantity is judged on the next round: the mark made the pair due)."""
    holds = sorted(holds, key=lambda h: h[0].pair_id)
    with transaction.atomic():
        _lock_pairs([c.pair_id for c, _until, _reason in holds])
        with connection.cursor() as cursor:
            cursor.execute(sql_compose(_HOLD_SQL, pair=DirtyPair._meta.db_table), {
                "ids": [c.pair_id for c, _u, _r in holds], "gens": [c.generation for c, _u, _r in holds],
                "untils": [until for _c, until, _r in holds], "reasons": [reason[:2000] for _c, _u, reason in holds]})


_SPEND_SQL = """
    INSERT INTO {budget} AS b (channel_id, key, day, used, reserve_used, exhausted, last_revision_at)
    SELECT %(channel)s, u.key, %(day)s, u.n, GREATEST(u.n - %(normal)s, 0), false, %(now)s
    FROM unnest(%(keys)s::text[], %(counts)s::int[]) AS u(key, n)
    ORDER BY u.key
    ON CONFLICT (channel_id, key) DO UPDATE SET
        used = (CASE WHEN b.day = EXCLUDED.day THEN b.used ELSE 0 END) + EXCLUDED.used,
        reserve_used = (CASE WHEN b.day = EXCLUDED.day THEN b.reserve_used ELSE 0 END)
            + GREATEST((CASE WHEN b.day = EXCLUDED.day THEN b.used ELSE 0 END) + EXCLUDED.used - %(normal)s, 0)
            - GREATEST((CASE WHEN b.day = EXCLUDED.day THEN b.used ELSE 0 END) - %(normal)s, 0),
        exhausted = CASE WHEN b.day = EXCLUDED.day THEN b.exhausted ELSE false END,
        day = EXCLUDED.day, last_revision_at = EXCLUDED.last_revision_at
"""

_REFUND_SQL = """
    UPDATE {budget} b SET
        used = GREATEST(b.used - u.n, 0),
        reserve_used = GREATEST(b.reserve_used - GREATEST(b.used - %(normal)s, 0)
                                + GREATEST(b.used - u.n - %(normal)s, 0), 0)
    FROM unnest(%(keys)s::text[], %(counts)s::int[]) AS u(key, n)
    WHERE b.channel_id = %(channel)s AND b.key = u.key AND b.day = %(day)s
"""


def _counts(batch: list[_Claimed]) -> tuple[list[str], list[int]]:
    counts = Counter(listing_key(c.sku_id, c.attributes) for c in batch)
    keys = sorted(counts)
    return keys, [counts[k] for k in keys]


def budget_spend(channel: Channel, policy: BudgetPolicy, batch: list[_Claimed], now: datetime) -> None:
    """Count the batch's revisions before the request (one per item; rows in key order)."""
    keys, counts = _counts(batch)
    if not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute(sql_compose(_SPEND_SQL, budget=RevisionBudget._meta.db_table), {
            "channel": channel.pk, "day": policy.day(now), "normal": policy.normal, "now": now, "keys": keys,
            "counts": counts})


def budget_refund(channel: Channel, policy: BudgetPolicy, batch: list[_Claimed], result: _Result,
                  now: datetime) -> None:
    """Give back the revisions of items the marketplace answered with a refusal (nothing was
    revised); items without an answer (timeout, 5xx) stay counted: they may have been applied."""
    refused = [c for c in batch if not (o := result.outcomes[c.sku_code]).ok and not o.pending
               and o.status is not None and o.status < 500]
    keys, counts = _counts(refused)
    if not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute(sql_compose(_REFUND_SQL, budget=RevisionBudget._meta.db_table), {
            "channel": channel.pk, "day": policy.day(now), "normal": policy.normal, "keys": keys, "counts": counts})


def budget_exhausted(channel: Channel, held: list[_Claimed], now: datetime) -> None:
    """The marketplace refused these items for its daily limit: their listings take no more
    revisions today, and the items wait for the next day (no attempt charged)."""
    policy = budget_policy(channel)
    if policy is None or not held:
        return
    keys = sorted({listing_key(c.sku_id, c.attributes) for c in held})
    # Their rows exist: the revisions were counted before the request (and given back since).
    RevisionBudget.objects.filter(channel=channel, key__in=keys, day=policy.day(now)).update(exhausted=True)
    end = policy.day_end(now)
    _hold([(c, end, "held: eBay refused more revisions of this listing today; sent when the day ends") for c in held])
    logger.warning("channel %s: eBay's daily revision limit reached for %s listing(s)", channel.slug, len(keys))
