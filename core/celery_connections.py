"""Database connections in Celery workers, when kept across tasks (CELERY_DB_REUSE_MAX=N).

Celery's Django fixup closes every database connection before and after each task unless
CELERY_DB_REUSE_MAX is set (Celery 5.6 went back to that; CONN_MAX_AGE is not consulted). Under a
webhook stream that means a new PostgreSQL connection, a backend process forked and warmed up, for
every drain batch (docs/performance.md, session 7). With the setting, the fixup keeps them, and
here each task starts and ends as Django starts and ends a request (close_old_connections: a
connection that errored or outlived CONN_MAX_AGE is dropped) and starts with a usability check
(one `SELECT 1`), so a connection the database dropped meanwhile (a restart) is replaced before
the task uses it rather than failing the task. Without the setting nothing is connected: the
fixup closes every connection itself.
"""

from __future__ import annotations

from celery import signals
from django.conf import settings
from django.db import close_old_connections, connections


def _task_start(sender=None, **kwargs) -> None:
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # run inline by the caller (tests, eager mode): its connections are the caller's
    close_old_connections()
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
            conn.close()


def _task_end(sender=None, **kwargs) -> None:
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()


def celery_connections_connect() -> None:
    if not getattr(settings, "CELERY_DB_REUSE_MAX", None):
        return  # the fixup closes the connections around every task: nothing to check
    signals.task_prerun.connect(_task_start, weak=False, dispatch_uid="stockline.db.task_start")
    signals.task_postrun.connect(_task_end, weak=False, dispatch_uid="stockline.db.task_end")
