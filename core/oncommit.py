"""The one helper for side effects that must wait for the transaction to commit.

Nothing leaves the process (a Celery task, an HTTP call, a pub/sub message) before the data it
describes is committed, or a worker could act on rows it cannot see yet, or on a rolled-back
change. Arguments are bound with functools.partial (never a lambda in a loop: late binding).
"""

from __future__ import annotations

import functools
import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task, *args, using: str | None = None, **kwargs) -> None:
    """`task.delay(*args, **kwargs)` once the current transaction commits (now, in autocommit).

    A broker outage is logged, not raised: callers that cannot afford to lose the message
    write an outbox row in the same transaction and a sweeper re-enqueues it.
    """
    transaction.on_commit(functools.partial(_send, task, args, kwargs), using=using, robust=True)


def _send(task, args, kwargs) -> None:
    try:
        task.apply_async(args=args, kwargs=kwargs)
    except Exception:  # broker down: the outbox/sweeper path recovers
        logger.exception("could not enqueue %s; the periodic sweeper will pick it up", task.name)
