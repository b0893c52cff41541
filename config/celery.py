"""Celery app and the one place where periodic schedules live."""

import os

from celery import Celery
from celery.schedules import crontab
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stockline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Every periodic task, with why it runs at that interval. django-celery-beat's DatabaseScheduler
# copies these into the database on start, where operations staff can pause or retune them.
app.conf.beat_schedule = {
    # The ledger invariant (positions == sums of ledger deltas) is the last line of defence;
    # nightly is enough because every service keeps it transactionally. Drift is reported only.
    "inventory-verify-ledger": {
        "task": "inventory.verify_ledger",
        "schedule": crontab(hour=3, minute=17),
    },
    # Snapshots make `as_of` reads and audits cheap; 5 minutes bounds the ledger rows to replay.
    "inventory-snapshot": {
        "task": "inventory.snapshot_positions",
        "schedule": 300.0,
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
    # Channel pushes are woken on commit and retries wake themselves with short countdowns; this
    # sweep catches what those miss (an enqueue lost between commit and broker, a worker killed
    # mid-drain, a circuit whose cool-down ended). 5 s keeps "within a second" the normal case
    # and bounds the rare one, for one indexed query per run.
    "channels-sweep-pushes": {
        "task": "channels.sweep_pushes",
        "schedule": 5.0,
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
