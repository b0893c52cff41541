"""Prometheus metrics: what each process counts, and the registry a scrape reads.

Two kinds of numbers:

- **Events counted in the process** (HTTP requests, Celery task runs): counters and histograms
  updated in memory, no I/O. Under gunicorn (several workers) and Celery (prefork children) each
  process counts its own, so `PROMETHEUS_MULTIPROC_DIR` switches prometheus-client to its
  multiprocess mode: every process writes its values to mmap'ed files in that directory and a
  scrape, served by any web worker, sums the files of all processes (web and worker alike when
  they share the directory). Without the variable (tests, `manage.py` commands) the ordinary
  in-process registry is used.
- **State of the database** (inbound backlog, channel backlog, dead letters, reservations,
  ledger drift): computed at scrape time by collectors named in `settings.METRICS_COLLECTORS`,
  with a few aggregate queries, so every process reports the same truth and nothing has to be
  kept in step on the hot paths.

Only counters and histograms are kept in the process: their multiprocess sums stay right when a
process exits (its files stay and keep counting in the totals), so no gunicorn `child_exit` hook
and no live-gauge bookkeeping is needed; stale files are wiped when `./dev up` starts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

from django.conf import settings
from django.utils.module_loading import import_string
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _multiprocess_dir() -> str | None:
    """The multiprocess directory if it is set and usable; otherwise in-process metrics.

    A directory that cannot be created or written must not turn every request into a 500 (the
    first `inc()` would raise): it is logged and the process falls back to its own registry.
    """
    path = os.environ.get(MULTIPROC_ENV, "").strip()
    if not path:
        return None
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as exc:
        logger.error("%s=%s unusable (%s); metrics of this process are its own only", MULTIPROC_ENV, path, exc)
        return None
    return path


def _process_identifier() -> str:
    # Host name and pid: containers sharing one directory (web and worker of the compose stack)
    # all have small pids, and two processes writing the same file would corrupt each other's
    # values. prometheus-client's rule holds: unique per live process, changes after fork.
    return f"{socket.gethostname().replace('_', '-')}-{os.getpid()}"


MULTIPROC_DIR = _multiprocess_dir()
# Chosen before the first metric is built (prometheus-client picks its value class then).
if MULTIPROC_DIR:
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)
else:
    values.ValueClass = values.MutexValue

# Finer at the low end than the defaults: the hot paths (flash-sale reservations, stock reads)
# answer in a few milliseconds, and their p99 is what operators watch.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 150.0, 300.0)

HTTP_REQUESTS = Counter(
    "stockline_http_requests", "HTTP requests answered, by method, URL pattern and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "stockline_http_request_duration_seconds", "Time to answer an HTTP request, by URL pattern.",
    ["route"], buckets=HTTP_BUCKETS,
)
TASKS = Counter(
    "stockline_celery_tasks", "Celery task runs finished, by task name and state (SUCCESS, FAILURE, RETRY, ...).",
    ["task", "state"],
)
RESERVATION_GROUPS = Counter(
    "stockline_reservation_group_commits",
    "Combined statements of one-line checkouts (reservations.group_commit), by result: committed, or failed as a "
    "whole (each checkout then ran alone).",
    ["result"],
)
RESERVATION_GROUPED = Counter(
    "stockline_reservation_group_commit_requests",
    "Checkouts run in a combined statement, by outcome: held, or left to their own path (did not fit, key taken).",
    ["outcome"],
)
SALE_GROUPS = Counter(
    "stockline_sale_group_commits",
    "Combined statements of sales of one position (inventory.sale_group), by result: committed, or failed as a "
    "whole (each sale then ran alone).",
    ["result"],
)
SALE_GROUPED = Counter(
    "stockline_sale_group_commit_requests",
    "Sales run in a combined statement, by outcome: sold, or left to their own path (replay, did not fit, key taken).",
    ["outcome"],
)
TASK_DURATION = Histogram(
    "stockline_celery_task_duration_seconds", "Run time of Celery tasks, by task name.",
    ["task"], buckets=TASK_BUCKETS,
)


class _Forward(Collector):
    """The process's default registry inside a per-scrape registry (in-process mode)."""

    def collect(self) -> Iterable:
        return REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    """A registry for one scrape: the counted metrics (summed over every process's files in
    multiprocess mode) plus the state collectors of `settings.METRICS_COLLECTORS`."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROC_DIR:
        MultiProcessCollector(registry, path=MULTIPROC_DIR)
    else:
        registry.register(_Forward())
    for path in getattr(settings, "METRICS_COLLECTORS", ()):
        registry.register(import_string(path)())
    return registry
