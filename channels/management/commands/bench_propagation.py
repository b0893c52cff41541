"""`./dev manage bench_propagation`: how fast a stock change reaches every channel.

Starts the channel simulator (`devtools.simulator`, a development tool) in-process and a real
Celery worker (subprocess, same database and broker), creates N simulated channels (every kind in
turn, default rate limits), then measures:
1. baseline: one direct HTTP call to the simulator (what a push costs on the wire, nothing else);
2. fan-out: one committed change -> the moment the last of the N channels acknowledged it
   (simulator receive time), repeated, p50/p99;
3. burst: S one-unit sales in a row -> pushes sent and the time from the last commit until every
   channel shows the final value.
Bench rows (channels bench-*, SKU BENCH-1, location bench-wh) are removed at the end, except the
ledger rows, which are append-only by design.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

ROOT = Path(__file__).resolve().parents[3]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# Its own prefix: other benchmarks (bench_ingestion) keep channels named "bench-..." whose
# inbound events must not be deleted with ours.
SLUG_PREFIX = "benchprop-"

class Command(BaseCommand):
    help = "Benchmark propagation: fan-out of one change to N channels, and a burst of sales."

    def add_arguments(self, parser):
        parser.add_argument("--channels", type=int, default=40)
        parser.add_argument("--iterations", type=int, default=20, help="fan-out repetitions")
        parser.add_argument("--sales", type=int, default=1000, help="sales in the burst")
        parser.add_argument("--concurrency", type=int, default=4, help="Celery worker processes")
        parser.add_argument("--rate", type=float, default=5.0, help="per-channel requests/s (rate_limit_per_second)")
        parser.add_argument("--burst-limit", type=int, default=10, help="per-channel rate_limit_burst")

    def handle(self, *args, **opts):
        # The simulator is a development tool (devtools/, installed by ./dev, not in the image):
        # imported here, never at module level, so production code does not depend on it.
        try:
            from devtools.simulator import Simulator
        except ImportError as exc:
            raise CommandError("bench_propagation needs the channel simulator (devtools/, installed by ./dev; "
                               "it is not part of the production image).") from exc

        simulator = Simulator(seed=1).start()
        worker = None
        try:
            self._cleanup()
            channels, sku, location = self._setup(simulator, opts)
            worker = self._start_worker(opts["concurrency"])
            self._baseline(simulator)
            self._fanout(simulator, channels, sku, location, opts["iterations"])
            self._burst(simulator, channels, sku, location, opts["sales"])
        finally:
            if worker is not None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
            self._cleanup()
            simulator.stop()

    # ------------------------------------------------------------------ setup
    def _cleanup(self):
        from channels.models import Channel
        from channels.ratelimit import ratelimit_reset

        for channel in Channel.objects.filter(slug__startswith=SLUG_PREFIX):
            ratelimit_reset(channel_id=channel.pk)
            channel.delete()

    def _setup(self, simulator, opts):
        from channels.services import channel_create, listing_upsert
        from inventory import services
        from inventory.models import Location, Sku

        kinds = [
            ("shopify", {"api_version": settings.SHOPIFY_API_VERSION, "location_id": 1}, {"access_token": "t"}),
            ("woocommerce", {}, {"consumer_key": "k", "consumer_secret": "s"}),
            ("bigcommerce", {"store_hash": "bench", "location_id": 1}, {"access_token": "t"}),
            ("ebay", {}, {"access_token": "t"}),
            ("amazon", {"seller_id": "S", "marketplace_id": "M"}, {"access_token": "t"}),
            ("webhook", {}, {}),
        ]
        location, _ = Location.objects.get_or_create(code="bench-wh", defaults={"name": "Bench warehouse"})
        sku = Sku.objects.filter(code="BENCH-1").first() or services.sku_create(code="BENCH-1", name="Bench SKU")
        channels = []
        for n in range(opts["channels"]):
            kind, settings_, credentials = kinds[n % len(kinds)]
            slug = f"{SLUG_PREFIX}{n:02d}-{kind}"
            store = simulator.store_url(slug)
            if kind == "webhook":
                settings_ = {"target_url": f"{store}/hooks/stock"}
            channel = channel_create(slug=slug, name=slug, kind=kind, base_url=store, credentials=credentials,
                                     settings=settings_, rate_limit_per_second=opts["rate"],
                                     rate_limit_burst=opts["burst_limit"])
            channel.locations.set([location])
            external = "BENCH-1" if kind in ("amazon", "webhook") else str(9000 + n)
            listing_upsert(channel=channel, sku=sku.code, external_id=external)
            channels.append((channel, external))
        position = services.stock_count(sku=sku, location=location, quantity=100_000)
        self.stdout.write(f"setup: {len(channels)} channels ({', '.join(k for k, *_ in kinds)} in turn), "
                          f"rate limit {opts['rate']}/s burst {opts['burst_limit']}; "
                          f"stock {position.positions[0].on_hand}")
        return channels, sku, location

    def _start_worker(self, concurrency: int):
        connections.close_all()
        # BENCH_WORKER_LOG=<file> keeps the worker's INFO log (task timings) for a closer look.
        log_path = os.environ.get("BENCH_WORKER_LOG")
        log = open(log_path or os.devnull, "w")  # noqa: SIM115 - lives as long as the worker
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO" if log_path else "WARNING",
             "--concurrency", str(concurrency), "--hostname", f"bench-{os.getpid()}@%h", "--without-gossip",
             "--without-mingle"],
            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        from celery import current_app as app  # the project app, loaded by config at start-up

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5, destination=[f"bench-{os.getpid()}@{os.uname().nodename}"])
            if replies:
                break
        else:
            raise RuntimeError("the Celery worker did not start")
        self.stdout.write(f"worker: {concurrency} processes (prefork); machine: {os.cpu_count()} CPUs, "
                          f"load average {os.getloadavg()[0]:.1f} (other work on the box inflates every number)")
        return proc

    def _wait_all(self, simulator, channels, expected: int, timeout: float) -> float | None:
        """Poll the simulator until every channel shows `expected`; the latest ack time, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with simulator.state.lock:
                stores = simulator.state.stores
                done = all(c.slug in stores and stores[c.slug].levels.get(ext) == expected for c, ext in channels)
                if done:
                    return max(stores[c.slug].level_at[ext] for c, ext in channels)
            time.sleep(0.002)
        return None

    def _expected(self, channels, sku) -> int:
        from channels.propagation import channel_quantities

        return channel_quantities(channel=channels[0][0], sku_ids=[sku.pk])[sku.pk]

    # ------------------------------------------------------------------ measurements
    def _baseline(self, simulator):
        session = requests.Session()
        url = f"{simulator.store_url('bench-baseline')}/admin/api/2024-01/inventory_levels/set.json"
        times = []
        for n in range(50):
            t0 = time.perf_counter()
            session.post(url, json={"location_id": 1, "inventory_item_id": 1, "available": n},
                         headers={"X-Shopify-Access-Token": "t"}, timeout=5).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        self.stdout.write(f"baseline: one direct HTTP push to the simulator p50 {_pct(times, 50):.2f} ms, "
                          f"p99 {_pct(times, 99):.2f} ms (50 calls, keep-alive)")

    def _fanout(self, simulator, channels, sku, location, iterations: int):
        from inventory import services

        # warm-up: the listings' initial pushes
        self._wait_all(simulator, channels, self._expected(channels, sku), timeout=60)
        lasts, firsts = [], []
        for _ in range(iterations):
            time.sleep(0.25)  # let the buckets refill: measure latency, not the rate limit
            t0 = time.time()
            services.stock_receive(sku=sku, location=location, quantity=1)
            expected = self._expected(channels, sku)
            acked = self._wait_all(simulator, channels, expected, timeout=30)
            if acked is None:
                self.stdout.write(self.style.ERROR("fan-out: not every channel got the change within 30 s"))
                return
            lasts.append((acked - t0) * 1000)
            with simulator.state.lock:
                firsts.append((min(simulator.state.stores[c.slug].level_at[ext] for c, ext in channels) - t0) * 1000)
        self.stdout.write(
            f"fan-out to {len(channels)} channels, {iterations} changes: commit -> last channel's ack "
            f"p50 {_pct(lasts, 50):.0f} ms, p99 {_pct(lasts, 99):.0f} ms, max {max(lasts):.0f} ms; "
            f"first channel p50 {_pct(firsts, 50):.0f} ms")

    def _burst(self, simulator, channels, sku, location, sales: int):
        from inventory import services

        before = len(simulator.state.log)
        t_start = time.time()
        for _ in range(sales):
            services.stock_sell(sku=sku, location=location, quantity=1)
        t_last = time.time()
        expected = self._expected(channels, sku)
        acked = self._wait_all(simulator, channels, expected, timeout=120)
        time.sleep(0.5)  # let stragglers land so the count is complete
        pushes = len(simulator.state.log) - before
        if acked is None:
            self.stdout.write(self.style.ERROR("burst: channels did not converge within 120 s"))
            return
        per_channel = pushes / len(channels)
        self.stdout.write(
            f"burst: {sales} sales in {t_last - t_start:.2f} s ({sales / (t_last - t_start):.0f}/s) -> "
            f"{pushes} pushes to {len(channels)} channels ({per_channel:.1f} per channel, "
            f"{sales * len(channels)} without coalescing); last commit -> every channel on the final value "
            f"{(acked - t_last) * 1000:.0f} ms; first sale -> converged {(acked - t_start):.2f} s")
        durations = [r["done"] - r["at"] for r in list(simulator.state.log)[before:]]
        if durations:
            self.stdout.write(f"burst: simulator time per push p50 {statistics.median(durations) * 1000:.2f} ms")
