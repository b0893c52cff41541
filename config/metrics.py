"""Gauges of database state for `GET /metrics`, computed when Prometheus scrapes.

Here, in the composition root, because they read the tables of every app and core (which serves
/metrics) may import none of them; core finds this collector through
`settings.METRICS_COLLECTORS`. Computing at scrape time keeps the hot paths free of metric
bookkeeping and makes every web process report the same truth. The cost per scrape is seven
aggregate queries, each on an index or a small table, in one transaction with a statement
timeout so a slow database delays a scrape, never piles scrapes up:

- inbound events per status (`COUNT ... GROUP BY status`, index `inbound_status_newest`) and the
  oldest pending one (partial index `inbound_pending`);
- channels (a few rows), their outbox rows (the backlog: only what is waiting) and open dead
  letters (partial unique index);
- reservations per status (one scan of the table: the only query that grows with history);
- oversell incidents (total and open);
- ledger drift: the result the nightly `inventory.verify_ledger` task recorded in the cache
  (`ledger_verify_record`, connected in config/celery.py), never a ledger scan per scrape.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LEDGER_VERIFY_KEY = "stockline:metrics:ledger-verify"
LEDGER_VERIFY_TASK = "inventory.verify_ledger"
# A scrape waits at most this long for one query (Prometheus' own scrape timeout is 10 s).
STATEMENT_TIMEOUT_MS = 3000


def ledger_verify_record(sender=None, result=None, **_kwargs) -> None:
    """`task_success` receiver: keep the drift count of the last `inventory.verify_ledger` run."""
    if getattr(sender, "name", None) != LEDGER_VERIFY_TASK or not isinstance(result, int):
        return
    try:
        cache.set(LEDGER_VERIFY_KEY, {"positions": result, "at": time.time()}, timeout=None)
    except Exception:  # the metric waits for the next run; the task's own log has the drift
        logger.warning("could not record the ledger verification result", exc_info=True)


class StockStateCollector(Collector):
    """The contract's state families (and the circuit breaker) from a few aggregate queries."""

    def collect(self):
        families = _families()
        try:
            # Its own transaction, so the timeout ends with it (SET LOCAL inside a caller's
            # transaction would outlive our savepoint: then the caller's timeout is kept).
            outer = connection.in_atomic_block
            with transaction.atomic(), connection.cursor() as cursor:
                if not outer:
                    cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS:d}")
                _fill(families)
            up = 1
        except Exception:  # a scrape reports what it could; the rest shows as missing samples
            logger.warning("metrics: database state unavailable", exc_info=True)
            families = _families()
            up = 0
        _fill_ledger(families)
        yield from families.values()
        yield GaugeMetricFamily("stockline_metrics_state_up",
                                "1 when the database state gauges of this scrape could be read.", value=up)


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    channel = ["channel"]
    return {
        "inbound": GaugeMetricFamily("stockline_inbound_events", "Inbound events by status.", labels=["status"]),
        "inbound_age": GaugeMetricFamily(
            "stockline_inbound_oldest_pending_age_seconds",
            "Age of the oldest pending inbound event (0 when none): the ingestion lag."),
        "backlog": GaugeMetricFamily("stockline_channel_backlog",
                                     "(channel, SKU) pairs waiting to be pushed, per channel.", labels=channel),
        "dirty_age": GaugeMetricFamily(
            "stockline_channel_oldest_dirty_age_seconds",
            "Age of the channel's oldest waiting (channel, SKU) pair (0 when none).", labels=channel),
        "dead": GaugeMetricFamily("stockline_dead_letters", "Open dead letters, per channel.", labels=channel),
        "circuit": GaugeMetricFamily(
            "stockline_channel_circuit_open",
            "1 while the channel's circuit breaker is open or half-open (pushes held), else 0.", labels=channel),
        "oversell": CounterMetricFamily("stockline_oversell_incidents",
                                        "Oversell incidents recorded since the start (resolved included)."),
        "oversell_open": GaugeMetricFamily("stockline_oversell_incidents_open", "Oversell incidents not resolved."),
        "reservations": GaugeMetricFamily("stockline_reservations", "Reservations by status.", labels=["status"]),
        "drift": GaugeMetricFamily(
            "stockline_ledger_drift_positions",
            "Positions whose counters differ from their ledger sums, at the last verify_ledger run "
            "(no sample before the first run)."),
        "verified": GaugeMetricFamily(
            "stockline_ledger_verified_timestamp_seconds",
            "Unix time of the last verify_ledger run (no sample before the first run)."),
    }


def _fill(families: dict) -> None:
    from channels.models import Channel, DeadLetter, DirtyPair
    from ingestion.models import InboundEvent, OversellIncident
    from reservations.models import Reservation

    now = timezone.now()

    def age(since) -> float:
        return max((now - since).total_seconds(), 0.0) if since else 0.0

    counts = dict(InboundEvent.objects.order_by().values_list("status").annotate(n=Count("id")))
    for status in InboundEvent.Status.values:
        families["inbound"].add_metric([status], counts.get(status, 0))
    oldest = InboundEvent.objects.filter(status=InboundEvent.Status.PENDING).aggregate(at=Min("received_at"))["at"]
    families["inbound_age"].add_metric([], age(oldest))

    backlog = {row["channel_id"]: row for row in
               DirtyPair.objects.order_by().values("channel_id").annotate(n=Count("id"), oldest=Min("marked_at"))}
    dead = dict(DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).order_by()
                .values_list("channel_id").annotate(n=Count("id")))
    for channel_id, slug, circuit in Channel.objects.order_by("slug").values_list("id", "slug", "circuit_state"):
        waiting = backlog.get(channel_id, {"n": 0, "oldest": None})
        families["backlog"].add_metric([slug], waiting["n"])
        families["dirty_age"].add_metric([slug], age(waiting["oldest"]))
        families["dead"].add_metric([slug], dead.get(channel_id, 0))
        families["circuit"].add_metric([slug], 0 if circuit == Channel.Circuit.CLOSED else 1)

    incidents = OversellIncident.objects.aggregate(total=Count("id"), open=Count("id", filter=Q(resolved_at=None)))
    families["oversell"].add_metric([], incidents["total"])
    families["oversell_open"].add_metric([], incidents["open"])

    reservations = dict(Reservation.objects.order_by().values_list("status").annotate(n=Count("id")))
    for status in Reservation.Status.values:
        families["reservations"].add_metric([status], reservations.get(status, 0))


def _fill_ledger(families: dict) -> None:
    try:
        last = cache.get(LEDGER_VERIFY_KEY)
    except Exception:
        logger.warning("metrics: ledger verification result unavailable", exc_info=True)
        return
    if isinstance(last, dict) and "positions" in last and "at" in last:
        families["drift"].add_metric([], last["positions"])
        families["verified"].add_metric([], last["at"])
