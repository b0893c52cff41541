"""The request id crosses the broker in a message header; task runs are counted and timed.

`before_task_publish` (in the process that queues: a web request, or a task queueing the next
one) writes the current request id into the message headers; `task_prerun` (in the worker
process that runs the task) puts it back into the context, so every log line of the task and
every task it queues in turn (a drain waking a channel push, a push scheduling its retry) carry
the id of the request or webhook that started it all. A task queued with no id (beat) gets a new
one, which then follows its own chain the same way. Connected by config/celery.py.
"""

from __future__ import annotations

import time

from celery import signals

from core.observability.context import request_id_new, request_id_sane, request_id_var, task_var
from core.observability.metrics import TASK_DURATION, TASKS

# Message header carrying the id (protocol 2 headers; a worker sees it in `task.request`).
HEADER = "stockline_request_id"

# task id -> what task_prerun set, undone by task_postrun (eager tasks may nest).
_running: dict[str, tuple] = {}


def _on_publish(sender=None, headers=None, **_kwargs) -> None:
    request_id = request_id_var.get()
    if request_id and headers is not None:
        headers.setdefault(HEADER, request_id)


def _incoming_request_id(task) -> str | None:
    request = task.request
    value = getattr(request, HEADER, None) or (getattr(request, "headers", None) or {}).get(HEADER)
    return request_id_sane(value) if isinstance(value, str) else None


def _on_prerun(task_id=None, task=None, **_kwargs) -> None:
    if task is None or task_id is None:
        return
    # An eager task (run in the caller's thread) keeps the caller's id; a message carries it.
    request_id = _incoming_request_id(task) or request_id_var.get() or request_id_new()
    _running[task_id] = (request_id_var.set(request_id), task_var.set((task.name, task_id)), time.perf_counter())


def _on_postrun(task_id=None, task=None, state=None, **_kwargs) -> None:
    entry = _running.pop(task_id, None) if task_id is not None else None
    if entry is None or task is None:
        return
    request_token, task_token, started = entry
    TASKS.labels(task.name, state or "UNKNOWN").inc()
    TASK_DURATION.labels(task.name).observe(time.perf_counter() - started)
    task_var.reset(task_token)
    request_id_var.reset(request_token)


def celery_signals_connect() -> None:
    """Idempotent: the dispatch uids make a second call a no-op."""
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="stockline.obs.publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="stockline.obs.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="stockline.obs.postrun")
