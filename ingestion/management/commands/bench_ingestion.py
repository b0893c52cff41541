"""Benchmark ingestion end to end: signed webhooks and canonical batches posted over HTTP at a
running service, then measured from the database.

    ./dev manage bench_ingestion                 # starts gunicorn + a Celery worker itself
    ./dev manage bench_ingestion --duration 20 --concurrency 16
    ./dev manage bench_ingestion --url http://127.0.0.1:8000   # a service on this same database

Prints events/s accepted (stored and answered), events/s applied (drained into stock), p50/p99
from receipt to applied, and the HTTP answer time of webhooks as the sender sees it.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
from django.core.management.base import BaseCommand
from django.db.models import Max, Min

from channels.models import Channel, ChannelListing
from core.auth import api_key_create
from ingestion.management.loadtools import (
    free_port,
    percentile,
    shopify_headers,
    spawn,
    standard_webhook_headers,
    stop,
    wait_until_up,
    web_args,
    worker_args,
)
from ingestion.models import InboundEvent
from inventory.models import Location, Sku, StockMovement, StockPosition
from inventory.selectors import ledger_drift
from inventory.services import stock_receive

SHOPIFY_SECRET = "bench-shopify-secret"  # noqa: S105 - a throwaway benchmark channel
POS_SECRET = "whsec_" + base64.b64encode(b"bench-pos-secret-0123456789abcd").decode()
SKU_COUNT = 500


class Command(BaseCommand):
    help = "Post signed webhooks and canonical event batches; print accepted/applied rates and latencies."

    def add_arguments(self, parser):
        parser.add_argument("--url", help="Service base URL (same database). Default: start gunicorn + worker.")
        parser.add_argument("--duration", type=float, default=60.0, help="Seconds of sending (default 60).")
        parser.add_argument("--concurrency", type=int, default=8, help="Sender threads (default 8).")
        parser.add_argument("--batch", type=int, default=50, help="Events per canonical batch (default 50).")
        parser.add_argument("--webhook-share", type=float, default=0.7,
                            help="Share of requests that are signed webhooks (default 0.7).")
        parser.add_argument("--workers", type=int, default=2, help="Celery worker processes started (default 2).")
        parser.add_argument("--rate", type=float, default=20.0,
                            help="Requests per second over all threads (default 20; 0 = as fast as possible). "
                                 "Keep the offered events/s below the drain's rate to measure latency "
                                 "rather than queueing.")
        parser.add_argument("--drain-timeout", type=float, default=180.0)

    def handle(self, *args, **opts):
        api_key = self._setup()
        mark = InboundEvent.objects.aggregate(m=Max("id"))["m"] or 0
        self.movement_mark = StockMovement.objects.aggregate(m=Max("id"))["m"] or 0
        children: list[subprocess.Popen] = []
        try:
            url = opts["url"]
            if not url:
                url, children = self._start_service(opts["workers"])
            self.stdout.write(f"sending to {url} for {opts['duration']:.0f} s with {opts['concurrency']} threads")
            stats = self._send(url.rstrip("/"), api_key, opts)
            self.stdout.write("sending done; waiting for the drain")
            drained = self._wait_drained(mark, opts["drain_timeout"])
            self._report(mark, stats, opts, drained)
        finally:
            stop(children)

    # ---------------------------------------------------------------- setup

    def _setup(self) -> str:
        location, _ = Location.objects.get_or_create(code="bench-wh", defaults={"name": "Benchmark warehouse"})
        shopify, _ = Channel.objects.update_or_create(
            slug="bench-shopify", defaults={"name": "Bench Shopify", "kind": "shopify",
                                            "webhook_secret": SHOPIFY_SECRET, "default_location": location,
                                            "push_enabled": False})
        Channel.objects.update_or_create(
            slug="bench-pos", defaults={"name": "Bench POS", "kind": "webhook", "webhook_secret": POS_SECRET,
                                        "default_location": location, "push_enabled": False})
        for i in range(SKU_COUNT):
            sku, _ = Sku.objects.get_or_create(code=f"BENCH-{i}", defaults={"name": f"Bench {i}"})
            ChannelListing.objects.get_or_create(channel=shopify, sku=sku,
                                                 defaults={"external_id": f"bench-inv-{i}",
                                                           "attributes": {"variant_id": str(900000 + i)}})
            position = StockPosition.objects.filter(sku=sku, location=location).first()
            if position is None or position.on_hand < 10_000_000:
                stock_receive(sku=sku, location=location, quantity=100_000_000)  # sales never oversell
        _key, plaintext = api_key_create(name=f"bench-{uuid.uuid4().hex[:6]}", scopes=["events:write"])
        return plaintext

    def _start_service(self, workers: int) -> tuple[str, list[subprocess.Popen]]:
        port = free_port()
        logs = Path(tempfile.mkdtemp(prefix="bench-ingestion-"))
        children = [spawn(web_args(port), logs / "web.log"),
                    spawn(worker_args(f"bench-{port}@%h", workers), logs / "worker.log")]
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, [logs / "worker.log"], children, timeout=60, logs=logs)
        self.stdout.write(f"started gunicorn (2x8 threads) and a worker ({workers} processes); logs in {logs}")
        return url, children

    # ---------------------------------------------------------------- load

    def _send(self, url: str, api_key: str, opts) -> dict:
        deadline = time.monotonic() + opts["duration"]
        lock = threading.Lock()
        stats = {"webhook_latency": [], "batch_latency": [], "accepted_events": 0, "requests": 0, "errors": 0,
                 "lines": 0}

        interval = opts["concurrency"] / opts["rate"] if opts["rate"] else 0.0

        def worker(seed: int):
            rng = random.Random(seed)
            session = requests.Session()
            next_at = time.monotonic() + rng.random() * interval
            local = {"webhook_latency": [], "batch_latency": [], "accepted_events": 0, "requests": 0, "errors": 0,
                     "lines": 0}
            while time.monotonic() < deadline:
                if interval:
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += interval
                kind = "webhook" if rng.random() < opts["webhook_share"] else "batch"
                started = time.perf_counter()
                try:
                    if kind == "webhook":
                        lines, response = self._post_webhook(session, url, rng)
                    else:
                        lines, response = self._post_batch(session, url, api_key, rng, opts["batch"])
                except requests.RequestException:
                    local["errors"] += 1
                    continue
                elapsed = time.perf_counter() - started
                local["requests"] += 1
                if response.status_code not in (200, 202):
                    local["errors"] += 1
                    continue
                local["lines"] += lines
                if kind == "webhook":
                    local["webhook_latency"].append(elapsed)
                    local["accepted_events"] += 1
                else:
                    local["batch_latency"].append(elapsed)
                    local["accepted_events"] += response.json()["accepted"]
            with lock:
                for key, value in local.items():
                    stats[key] += value

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(opts["concurrency"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats["send_seconds"] = time.monotonic() - started
        return stats

    def _post_webhook(self, session, url: str, rng: random.Random):
        if rng.random() < 0.6:  # Shopify orders/create, 1-3 lines
            order_id = rng.getrandbits(48)
            lines = [{"id": order_id * 10 + n, "variant_id": 900000 + rng.randrange(SKU_COUNT), "quantity": 1,
                      "sku": "", "fulfillment_status": None} for n in range(rng.randint(1, 3))]
            body = json.dumps({"id": order_id, "name": f"#{order_id}", "created_at": "2024-05-01T10:00:00Z",
                               "line_items": lines}).encode()
            headers = shopify_headers(SHOPIFY_SECRET, body, topic="orders/create", delivery_id=str(uuid.uuid4()))
            return len(lines), session.post(f"{url}/webhooks/bench-shopify/", data=body, headers=headers, timeout=10)
        events = [self._canonical(rng) for _ in range(5)]  # a till flushing a few sales and returns
        body = json.dumps({"events": events}).encode()
        headers = standard_webhook_headers(POS_SECRET, f"msg_{uuid.uuid4().hex}", body)
        return len(events), session.post(f"{url}/webhooks/bench-pos/", data=body, headers=headers, timeout=10)

    def _post_batch(self, session, url: str, api_key: str, rng: random.Random, size: int):
        events = [self._canonical(rng) for _ in range(size)]
        response = session.post(f"{url}/api/v1/events/", json={"events": events}, timeout=30,
                                headers={"Authorization": f"Bearer {api_key}"})
        return len(events), response

    @staticmethod
    def _canonical(rng: random.Random) -> dict:
        type = rng.choice(["receipt", "sale", "sale", "return", "adjustment"])
        quantity = rng.randint(1, 5) * (-1 if type == "adjustment" and rng.random() < 0.5 else 1)
        return {"event_id": uuid.uuid4().hex, "type": type, "sku": f"BENCH-{rng.randrange(SKU_COUNT)}",
                "location": "bench-wh", "quantity": quantity, "occurred_at": "2024-05-01T10:00:00Z"}

    # ---------------------------------------------------------------- results

    def _wait_drained(self, mark: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while InboundEvent.objects.filter(id__gt=mark, status="pending").exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def _report(self, mark: int, stats: dict, opts, drained: bool) -> None:
        events = InboundEvent.objects.filter(id__gt=mark)
        finished = events.exclude(status="pending")
        bounds = finished.aggregate(first=Min("received_at"), last=Max("processed_at"))
        delays = [(p - r).total_seconds() for r, p in finished.values_list("received_at", "processed_at")]
        by_status = {s: events.filter(status=s).count() for s in InboundEvent.Status.values}
        span = (bounds["last"] - bounds["first"]).total_seconds() if bounds["first"] and bounds["last"] else 0
        ms = 1000.0
        out = self.stdout.write
        out("")
        out(f"requests sent           {stats['requests']} ({stats['errors']} errors) in {stats['send_seconds']:.1f} s")
        out(f"events accepted         {stats['accepted_events']} ({stats['lines']} stock lines)"
            f"  -> {stats['accepted_events'] / stats['send_seconds']:.0f} events/s")
        rate = len(delays) / span if span else 0
        out(f"events applied          {len(delays)} in {span:.1f} s  -> {rate:.0f} events/s"
            f"   statuses {by_status}{'' if drained else '  (drain timed out)'}")
        out(f"receipt -> applied      p50 {percentile(delays, 50) * ms:.0f} ms   "
            f"p99 {percentile(delays, 99) * ms:.0f} ms")
        out(f"webhook answer (HTTP)   p50 {percentile(stats['webhook_latency'], 50) * ms:.1f} ms   "
            f"p99 {percentile(stats['webhook_latency'], 99) * ms:.1f} ms   (n={len(stats['webhook_latency'])})")
        out(f"batch answer ({opts['batch']:>4} ev) p50 {percentile(stats['batch_latency'], 50) * ms:.1f} ms   "
            f"p99 {percentile(stats['batch_latency'], 99) * ms:.1f} ms   (n={len(stats['batch_latency'])})")
        # None lost, none applied twice: every stock line is one ledger row (the SKUs have stock
        # to spare), and positions still equal their ledger.
        rows = StockMovement.objects.filter(id__gt=self.movement_mark, actor__startswith="ingestion:").count()
        drift = ledger_drift()
        out(f"exactness               {rows} ledger rows for {stats['lines']} stock lines "
            f"({'each applied once' if rows == stats['lines'] else 'MISMATCH'}); "
            f"ledger drift: {'none' if not drift else f'{len(drift)} positions'}")
