"""Soak ingestion, reservations and adjustments under load while Celery workers are SIGKILLed.

    ./dev manage soak --events 10000              # starts gunicorn + 2 workers on the ./dev database
    ./dev manage soak --events 2000 --kill-web 2  # also SIGKILL the web server twice mid-run
    ./dev manage soak --url http://127.0.0.1:8000  # a running service on this same database

Client threads send signed Shopify orders (some redelivered with the same delivery id), Standard
Webhooks batches to a `webhook`-kind channel, canonical batches (some replayed event ids),
reservations (create, then commit, release, or a Shopify order with its order_ref) and stock
adjustments, plus a few malformed events, retrying as real senders do (same delivery id, same
Idempotency-Key). Meanwhile a random worker's process group is SIGKILLed and restarted. Then the
killing stops, the backlog settles, and the database is held to every 2xx the clients received
(soak.audit). Exit status 1 when an acknowledged event or adjustment was lost, a pending event
got stuck, the ledger drifted or stock went negative.
"""

from __future__ import annotations

import base64
import contextlib
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Max

from channels.models import Channel, ChannelListing
from core.auth import api_key_create
from core.models import ApiKey
from ingestion.management.soak.audit import Audit, expected_keys, pending_count
from ingestion.management.soak.fleet import Fleet, chaos_loop
from ingestion.management.soak.traffic import Client, Namespace, Record
from ingestion.models import InboundEvent
from ingestion.services import inbound_events_sweep
from inventory.models import Location, Sku, StockPosition
from inventory.services import stock_count
from reservations.models import Reservation
from reservations.services import reservation_release

PREFIX = "soak-"
SHOPIFY_SECRET = "soak-shopify-secret"  # noqa: S105 - a throwaway soak channel
POS_SECRET = "whsec_" + base64.b64encode(b"soak-pos-secret-0123456789abcdef").decode()
VARIANT_BASE = 7_700_000
LEVELS = {"soak-wh": 100_000, "soak-store": 10_000}  # far above what a run sells: no 409s by design
SWEEP_INTERVAL = 2.0  # seconds; stands in for beat's ingestion-sweep (10 s), which the soak does not run


class Command(BaseCommand):
    help = "Send a mix of webhooks, canonical events, reservations and adjustments while killing workers; audit."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=10_000, help="Events to send in total (default 10000).")
        parser.add_argument("--clients", type=int, default=8, help="Concurrent client threads (default 8).")
        parser.add_argument("--kill-every", type=float, default=3.0,
                            help="Mean seconds between SIGKILLs of a random worker (default 3; 0 = never).")
        parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2).")
        parser.add_argument("--kill-web", type=int, default=0,
                            help="Also SIGKILL and restart the web server this many times (default 0).")
        parser.add_argument("--skus", type=int, default=40, help="SKUs in the soak namespace (default 40).")
        parser.add_argument("--seed", type=int, help="Seed of the clients' and the killer's choices.")
        parser.add_argument("--timeout", type=float, default=180.0,
                            help="Seconds to wait for pending events to settle at the end (default 180).")
        parser.add_argument("--url", help="A running service on this database (its web server is not killed).")
        parser.add_argument("--retry-for", type=float, default=120.0,
                            help="Seconds a client retries one request (connection refused, 503, "
                                 "409 idempotency_key_in_flight) before giving up (default 120).")

    def handle(self, *args, **opts):
        seed = opts["seed"] if opts["seed"] is not None else random.randrange(1_000_000)
        rng = random.Random(seed)
        ns = self._setup(opts["skus"])
        since = InboundEvent.objects.aggregate(m=Max("id"))["m"] or 0
        logs = Path(tempfile.mkdtemp(prefix="soak-"))
        fleet = Fleet(logs=logs, worker_count=opts["workers"], url=opts["url"])
        record = Record(budget=opts["events"], retry_for=opts["retry_for"])
        stopping, settled = threading.Event(), threading.Event()
        try:
            url = fleet.start().rstrip("/")
            self.stdout.write(f"soak run {ns.run} (seed {seed}): {opts['events']} events from {opts['clients']} "
                              f"clients to {url}; {opts['workers']} workers, one SIGKILLed every "
                              f"~{opts['kill_every']} s; logs in {logs}")
            helpers = [threading.Thread(target=chaos_loop, args=(fleet,), daemon=True,
                                        kwargs={"mean_interval": opts["kill_every"], "rng": rng,
                                                "stop_event": stopping}),
                       threading.Thread(target=sweeper, args=(settled,), daemon=True)]
            if opts["kill_web"] and fleet.web is not None:
                helpers.append(threading.Thread(target=web_killer, args=(fleet, record, opts["kill_web"], stopping),
                                                daemon=True))
            for thread in helpers:
                thread.start()
            recent: list = []
            clients = [threading.Thread(target=Client(ns, record, url, seed * 1000 + i, recent).run,
                                        kwargs={"malformed": i == 0}) for i in range(opts["clients"])]
            started = time.monotonic()
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
            send_seconds = time.monotonic() - started
            stopping.set()
            if fleet.kills == 0 and opts["kill_every"] > 0:
                fleet.kill_random_worker(rng)  # a soak that killed nothing has proved nothing
            fleet.ensure_all_up()
            self.stdout.write(f"sent {record.total_sent()} events in {send_seconds:.1f} s; "
                              f"{fleet.kills} worker kills; settling")
            settle_seconds = self._settle(expected_keys(ns, record), opts["timeout"])
            settled.set()
            audit = Audit().run(ns, record, since=since)
            self._report(ns, seed, record, audit, fleet, send_seconds, settle_seconds)
        finally:
            stopping.set()
            settled.set()
            fleet.stop()
            ApiKey.objects.filter(name=f"{PREFIX}{ns.run}").delete()  # its idempotency records go with it
        if audit.failing:
            raise CommandError(f"soak failed: lost {len(audit.lost)}, applied twice {len(audit.applied_twice)}, "
                               f"drifted positions {len(audit.drift)}, negative positions {len(audit.negative)}")

    # ---------------------------------------------------------------- setup

    def _setup(self, sku_count: int) -> Namespace:
        """The soak's own namespace (prefix `soak-`), created or reused; nothing else is touched."""
        warehouse, _ = Location.objects.get_or_create(code="soak-wh", defaults={"name": "Soak warehouse",
                                                                                "priority": 10})
        store, _ = Location.objects.get_or_create(code="soak-store", defaults={"name": "Soak store",
                                                                               "kind": "store", "priority": 20})
        shopify, _ = Channel.objects.update_or_create(
            slug="soak-shopify", defaults={"name": "Soak Shopify", "kind": "shopify", "webhook_secret": SHOPIFY_SECRET,
                                           "default_location": warehouse, "push_enabled": False, "active": True})
        shopify.locations.set([warehouse])  # reservations made for this channel hold at the warehouse
        Channel.objects.update_or_create(
            slug="soak-pos", defaults={"name": "Soak POS", "kind": "webhook", "webhook_secret": POS_SECRET,
                                       "default_location": warehouse, "push_enabled": False, "active": True})
        skus = []
        for i in range(sku_count):
            sku, _ = Sku.objects.get_or_create(code=f"{PREFIX}{i}", defaults={"name": f"Soak {i}"})
            ChannelListing.objects.get_or_create(channel=shopify, sku=sku, defaults={
                "external_id": f"soak-inv-{i}", "attributes": {"variant_id": str(VARIANT_BASE + i)}})
            skus.append(sku.code)
        # Holds left by an interrupted run would pin stock: give them back.
        for pk in (Reservation.objects.filter(status__in=["active", "waiting"], lines__sku__code__in=skus)
                   .values_list("pk", flat=True).distinct()):
            reservation_release(reservation_id=pk)
        levels = {(p.sku.code, p.location.code): p.on_hand for p in StockPosition.objects.filter(
            sku__code__in=skus, location__code__in=LEVELS).select_related("sku", "location")}
        for code in skus:
            for location, level in LEVELS.items():
                if levels.get((code, location)) != level:
                    stock_count(sku=code, location=location, quantity=level)
        run = uuid.uuid4().hex[:8]
        _key, plaintext = api_key_create(name=f"{PREFIX}{run}", scopes=[
            "events:write", "stock:read", "stock:write", "reservations:write"])
        return Namespace(run=run, shopify=shopify.slug, pos="soak-pos", skus=skus,
                         variants={code: VARIANT_BASE + i for i, code in enumerate(skus)}, warehouse=warehouse.code,
                         store=store.code, api_key=plaintext, shopify_secret=SHOPIFY_SECRET, pos_secret=POS_SECRET)

    def _settle(self, keys: dict, timeout: float) -> float:
        """Wait until none of the run's stored events is pending (workers keep draining)."""
        started = time.monotonic()
        last_note = started
        while (pending := pending_count(list(keys))) and time.monotonic() - started < timeout:
            if time.monotonic() - last_note > 10:
                self.stdout.write(f"  {pending} events still pending")
                last_note = time.monotonic()
            time.sleep(1)
        return time.monotonic() - started

    # ---------------------------------------------------------------- report

    def _report(self, ns, seed, record: Record, audit: Audit, fleet: Fleet, send_seconds, settle_seconds) -> None:
        out = self.stdout.write

        def kinds(counter) -> str:
            return ", ".join(f"{kind} {n}" for kind, n in sorted(counter.items()))

        def row(name: str, value) -> None:
            out(f"{name:<26}{value}")

        answers = {}
        for (kind, status), n in sorted(record.answers.items(), key=str):
            answers.setdefault(kind, []).append(f"{status}: {n}")
        unavailable = sum(n for (_kind, status), n in record.answers.items() if status == 503)
        out("")
        out(f"== soak report: run {ns.run}, seed {seed} ==")
        row("events sent", f"{record.total_sent()} in {send_seconds:.1f} s ({kinds(record.sent)})")
        row("accepted (HTTP 2xx)", f"{sum(record.accepted.values())} ({kinds(record.accepted)})")
        row("answers", " | ".join(f"{kind} {', '.join(v)}" for kind, v in answers.items()))
        row("retried requests", f"{record.retries} (503 answers {unavailable}); gave up {len(record.gave_up)}")
        row("server errors (5xx)", f"{len(record.server_errors)} (503 retry_later and 502/504 are retried, above)")
        row("duplicates ignored", f"{record.duplicates_answered} (sent on purpose {record.duplicates_sent}; more "
                                  "means a retried request had been stored the first time)")
        row("inbound events stored", f"{sum(audit.statuses.values())} ({kinds(audit.statuses)}; "
                                     f"{audit.retried_by_drain} needed more than one drain attempt)")
        row("applied (done/ignored)", f"{audit.statuses['done'] + audit.statuses['ignored']} "
                                      f"({audit.lines_checked} applied lines looked up in the ledger by event key)")
        failed = ", ".join(f"{code or '?'} {n} ({how})" for (code, how), n in sorted(audit.failed.items()))
        row("failed with reason", failed or "none")
        row("lost", len(audit.lost))
        row("applied twice", len(audit.applied_twice))
        row("applied, never answered", len(audit.unacknowledged))
        drift = f"{len(audit.drift)} positions" if audit.drift else "none (every position matches its ledger)"
        row("ledger drift", drift)
        row("negative stock", f"{len(audit.negative)} positions" if audit.negative else "none")
        row("reservations", f"{sum(audit.reservations.values())} made ({kinds(audit.reservations)}); "
                            f"{audit.covered_checked} Shopify orders checked to be covered by their hold")
        row("reservations left active", audit.reservations_left_active)
        row("oversell incidents", audit.oversells)
        row("over-reserved positions", audit.over_reserved)
        row("worker kills", f"{fleet.kills} ({fleet.kills_busy} while a task was running)")
        if fleet.web is not None:
            row("web server kills", fleet.web_kills)
        row("settle", f"{settle_seconds:.1f} s")
        sections = [("LOST", audit.lost), ("APPLIED TWICE", audit.applied_twice), ("LEDGER DRIFT", audit.drift),
                    ("NEGATIVE STOCK", audit.negative), ("applied, never answered", audit.unacknowledged),
                    ("unexpected failures", audit.failed_samples), ("expected to fail, did not", audit.mismatched),
                    ("reservations not committed by their order", audit.not_committed_by_order),
                    ("contract anomalies", record.anomalies), ("server errors", record.server_errors),
                    ("gave up", record.gave_up), ("kills", fleet.log)]
        for title, items in sections:
            if items:
                out(f"-- {title} ({len(items)}):")
                for item in items[:20]:
                    out(f"   {item}")
        out(f"verdict: {'FAIL' if audit.failing else 'PASS'}")


def sweeper(stop_event: threading.Event) -> None:
    """What beat's ingestion-sweep does: queue a drain while due events are pending (a drain
    killed mid-batch leaves its events pending with no message left to wake a worker)."""
    try:
        while not stop_event.wait(SWEEP_INTERVAL):
            with contextlib.suppress(Exception):
                inbound_events_sweep()
    finally:
        connection.close()


def web_killer(fleet: Fleet, record: Record, times: int, stop_event: threading.Event) -> None:
    """SIGKILL the web server at evenly spaced points of the run (by events claimed)."""
    for i in range(1, times + 1):
        while record.claimed < record.budget * i / (times + 1):
            if stop_event.wait(0.2):
                return
        fleet.kill_web()
