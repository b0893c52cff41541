"""Celery app and the one place where periodic schedules live."""

import os

from celery import Celery, signals
from celery.schedules import crontab
from django.conf import settings

from config.metrics import ledger_verify_record
from core.celery_connections import celery_connections_connect
from core.observability.celery_signals import celery_signals_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stockline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The request id travels with every task (message header) and task runs are counted; the last
# ledger verification's drift count is kept for the metrics (docs/observability.md).
celery_signals_connect()
# With CELERY_DB_REUSE_MAX set, connections kept across tasks are checked at each task's start
# (core.celery_connections).
celery_connections_connect()
signals.task_success.connect(ledger_verify_record, weak=False, dispatch_uid="stockline.ledger_verify_record")

# Every periodic task, with why it runs at that interval. django-celery-beat's DatabaseScheduler
# copies these into the database on start, where operations staff can pause or retune them.
app.conf.beat_schedule = {
    # The ledger invariant (positions == sums of ledger deltas) is the last line of defence;
    # nightly is enough because every service keeps it transactionally. Drift is reported only.
    "inventory-verify-ledger": {
        "task": "inventory.verify_ledger",
        "schedule": crontab(hour=3, minute=17),
    },
    # Stock history (GET /stock/{sku}/history/) has one point per 5-minute bucket, so snapshots run
    # on the bucket boundaries (crontab, not an interval that drifts across them); each copies only
    # the positions that changed (all of them on the day's first run), and a second run in the same
    # bucket rewrites the same rows: duplicate beats are harmless.
    "inventory-snapshot": {
        "task": "inventory.snapshot_positions",
        "schedule": crontab(minute="*/5"),
    },
    # Hourly rollups need the hour finished; minute 7 leaves the hour's last snapshot time to land.
    # Pruning (5-minute rows past 14 days, rollups past a year) goes with it: an hour's worth each
    # time, never a day's in one statement. Runs already rolled up are skipped, so reruns are no-ops.
    "inventory-snapshot-maintain": {
        "task": "inventory.snapshot_maintain",
        "schedule": crontab(minute=7),
    },
    # The daily-sales table behind fast movers, stockout risk and dynamic safety stock: answers are
    # exact whatever its lag (readers add the younger ledger rows), so the interval only bounds how
    # many ledger rows a reader adds. Every 5 minutes, off the snapshot minutes (1, 6, 11, ...).
    # Sums are recomputed, never incremented, so a duplicate run changes nothing.
    "analytics-refresh-sales": {
        "task": "analytics.refresh_sales",
        "schedule": crontab(minute="1-59/5"),
    },
    # Dynamic safety stock is recomputed once per UTC day from the previous 28 whole days, then old
    # daily sales are pruned. Hourly at :45 (the day just ended is complete by 00:45), but only the
    # first run of a day that finishes does anything: a mark in the database records the day done,
    # so a second beat or a retry is a no-op, and a run that stopped on its time budget is carried
    # on by the next hour's.
    "analytics-daily": {
        "task": "analytics.daily",
        "schedule": crontab(minute=45),
    },
    # Alerts must open and resolve within 60 s of a stock change: stock transactions only mark
    # their SKUs (one upsert), and this evaluates the marked ones every 30 s (30 s + the run stays
    # under 60 s). Single-flight under an advisory lock; with nothing marked it is three indexed
    # reads. A per-commit task would cost a broker message per stock change on the hot path.
    "analytics-alerts-evaluate": {
        "task": "analytics.alerts_evaluate",
        "schedule": 30.0,
    },
    # Alert deliveries are drained on commit of the evaluation that wrote them; this catches
    # retries whose backoff ended and wake-ups lost between commit and enqueue.
    "analytics-alert-deliveries": {
        "task": "analytics.alert_deliveries_drain",
        "schedule": 30.0,
    },
    # Expired checkouts must give their units back quickly (a flash sale re-sells them within
    # the interval); commit/extend also expire a reservation on touch, so the sweep only bounds
    # how long an abandoned hold lingers. 30 s by default: cheap (an indexed query) when idle.
    "reservations-expire": {
        "task": "reservations.expire",
        "schedule": float(settings.RESERVATION_EXPIRY_INTERVAL_SECONDS),
    },
    # Inbound events are drained on commit (and BigCommerce-like thin events fetched by their own
    # `ingestion.fetch` task); this sweep only catches lost wake-ups (a process killed between
    # commit and enqueue), retries whose backoff ended and fetch circuits whose cool-down ended.
    # 10 s bounds that delay while costing one indexed COUNT and one DISTINCT per run.
    "ingestion-sweep": {
        "task": "ingestion.sweep",
        "schedule": 10.0,
    },
    # eBay and Amazon do not push orders to us: this dispatcher queues an order poll for each
    # channel whose own interval (settings.poll_seconds, default 60 s; 15 s while busy) or
    # backoff has run out, as recorded on its cursor row. 10 s is the finest interval a channel
    # can ask for (busy channels are polled every 15 s), for three small queries per run when
    # nothing is due.
    "ingestion-poll-orders": {
        "task": "ingestion.poll_orders",
        "schedule": 10.0,
    },
    # Channel pushes are woken on commit and retries wake themselves with short countdowns; this
    # sweep catches what those miss (an enqueue lost between commit and broker, a worker killed
    # mid-drain, a circuit whose cool-down ended). 5 s keeps "within a second" the normal case
    # and bounds the rare one, for one indexed query per run.
    "channels-sweep-pushes": {
        "task": "channels.sweep_pushes",
        "schedule": 5.0,
    },
    # Amazon feeds are processed by Amazon in minutes; each pending feed carries its own next poll
    # time (15 s, 30 s, then every 60 s), so a worker never waits on one. 10 s is the finest
    # step that schedule needs, for one indexed query per run when no feed is due.
    "channels-poll-feeds": {
        "task": "channels.poll_feeds",
        "schedule": 10.0,
    },
    # Reconciliation reads every listing's level back from the marketplace, which spends the
    # channel's API quota; hourly catches edits made on the marketplace itself without crowding
    # out pushes (the contract's default).
    "channels-reconcile": {
        "task": "channels.reconcile_all",
        "schedule": 3600.0,
    },
    # The push audit is for investigating recent incidents; daily pruning past 30 days.
    "channels-prune-push-attempts": {
        "task": "channels.prune_push_attempts",
        "schedule": crontab(hour=4, minute=41),
    },
    # Idempotency keys must live >= 24 h (contract); hourly pruning keeps the table small.
    "core-prune-idempotency": {
        "task": "core.prune_idempotency_keys",
        "schedule": 3600.0,
    },
}
