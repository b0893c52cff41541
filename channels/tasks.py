"""Propagation tasks: thin wrappers (JSON ids in, a service call, nothing else).

At-least-once delivery is fine everywhere here: `channel_push` is single-flight per channel and
idempotent (it sends what is dirty now), and the outbox rows are the truth, not the messages.
"""

from __future__ import annotations

from celery import shared_task

# A wake-up hint never waits longer than this in the broker (far below the visibility timeout);
# anything later is found by the sweeper from `next_attempt_at` in the database.
MAX_WAKE_COUNTDOWN = 30.0


@shared_task(name="channels.push_channel", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=150)
def channel_push_task(channel_id: int) -> dict:
    """Drain one channel's due dirty pairs; schedule a short wake-up when it asked for one."""
    from channels.propagation import channel_push
    from channels.ratelimit import wake_clear

    wake_clear(channel_id)  # before draining: a commit after this point queues another task
    report = channel_push(channel_id=channel_id)
    if report.wake_in is not None and report.wake_in <= MAX_WAKE_COUNTDOWN:
        channel_push_task.apply_async(args=[channel_id], countdown=max(report.wake_in, 0.0))
    return {"requests": report.requests, "pushed": report.pushed, "skipped": report.skipped,
            "failed": report.failed, "busy": report.busy, "held": report.held, "submitted": report.submitted}


@shared_task(name="channels.poll_feeds", acks_late=True, soft_time_limit=50, time_limit=60)
def feeds_poll_task() -> dict:
    """Ask marketplaces about due asynchronous feeds (Amazon) and record the finished ones."""
    from channels.propagation import feeds_poll

    report = feeds_poll()
    return {"polled": report.polled, "processing": report.processing, "resolved": report.resolved,
            "acknowledged": report.acknowledged, "failed": report.failed, "errors": report.errors}


@shared_task(name="channels.sweep_pushes", acks_late=True, soft_time_limit=50, time_limit=60)
def channel_sweep_task() -> int:
    """Wake every channel with due dirty pairs (lost wake-ups, retries past their countdown hint)."""
    from channels.propagation import channels_due

    due = channels_due()
    for channel_id in due:
        channel_push_task.delay(channel_id)
    return len(due)


@shared_task(name="channels.reconcile_all", acks_late=True, soft_time_limit=50, time_limit=60)
def channels_reconcile_all_task() -> int:
    """Fan out one reconciliation task per active channel."""
    from channels.propagation import channels_for_reconciliation

    ids = channels_for_reconciliation()
    for channel_id in ids:
        channel_reconcile_task.delay(channel_id)
    return len(ids)


@shared_task(name="channels.reconcile_channel", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=240, time_limit=270)
def channel_reconcile_task(channel_id: int) -> dict:
    """Compare what one channel shows with what it should show; re-push the drift."""
    from channels.propagation import channel_reconcile

    report = channel_reconcile(channel_id=channel_id)
    return {"supported": report.supported, "checked": report.checked, "drifted": report.drifted,
            "errors": report.errors}


@shared_task(name="channels.prune_push_attempts", acks_late=True)
def push_attempts_prune_task() -> int:
    """Drop push audit rows past their retention."""
    from channels.propagation import push_attempts_prune

    return push_attempts_prune()
