"""Propagation: every channel learns its sellable quantity fast, in order, and no failure is silent.

Flow
1. A stock change marks the affected (channel, SKU) pairs dirty *in its own transaction*
   (`DirtyPair`, the outbox) and enqueues one push task per channel on commit. A crash between
   commit and enqueue loses nothing: the sweeper finds the due rows.
2. `channel_push` drains one channel under a per-channel single-flight lock (Redis). For each
   claimed pair it reads the pair's `generation`, *then* computes the quantity from committed
   stock, so what it sends is at least as new as the mark it read. Pairs whose quantity equals the
   last pushed value are settled without a request (a 1,000-sale burst collapses to a handful of
   pushes carrying the latest value). The rest go in the adapter's largest batch.
3. After the acknowledgement a pair is deleted only if its generation is unchanged; otherwise a
   newer change arrived meanwhile and the pair is pushed again. Because only one push per channel
   is ever in flight and quantities are computed at send time, an older quantity can never be
   delivered after a newer one.
4. Failures retry with exponential backoff and full jitter, scheduled in `next_attempt_at` (never a
   long Celery countdown); after the channel's last attempt the pair becomes a `DeadLetter`. A
   per-channel circuit breaker stops burning attempts while a channel is down. Every request is
   audited (`PushAttempt`).
5. Marketplace quotas and asynchronous feeds: eBay's daily revisions per listing are budgeted
   (`budget`: held-back pairs wait in the outbox, a reserve is kept for quantities near zero), and
   Amazon feeds are tracked as `PendingFeed` rows polled from beat (`feeds`), their SKUs held back
   until each SKU's result is recorded like a push's.
"""

from channels.propagation.budget import budget_policy
from channels.propagation.dead_letters import RetryResult, dead_letter_discard, dead_letter_retry
from channels.propagation.feeds import FeedPollReport, feeds_poll
from channels.propagation.outbox import (
    channel_mark_all,
    channels_due,
    channels_wake_on_commit,
    outbox_on_stock_change,
    pairs_mark_dirty,
)
from channels.propagation.push import PushReport, channel_push
from channels.propagation.quantity import buffered_quantity, channel_quantities
from channels.propagation.reconcile import (
    ReconcileReport,
    channel_reconcile,
    channels_for_reconciliation,
    push_attempts_prune,
)
from core.backoff import backoff_delay

__all__ = [
    "FeedPollReport", "PushReport", "ReconcileReport", "RetryResult", "backoff_delay", "budget_policy",
    "buffered_quantity", "channel_mark_all", "feeds_poll",
    "channel_push", "channel_quantities", "channel_reconcile", "channels_due", "channels_for_reconciliation",
    "channels_wake_on_commit", "dead_letter_discard", "dead_letter_retry", "outbox_on_stock_change",
    "pairs_mark_dirty", "push_attempts_prune",
]
