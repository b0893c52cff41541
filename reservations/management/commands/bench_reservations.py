"""Benchmark: concurrent checkout reservations over real HTTP, against a plain-UPDATE baseline.

    ./dev manage bench_reservations [--requests 2000] [--concurrency 50] [--url URL --key KEY]

Without --url a gunicorn server (same settings as `./dev up`) is started on a free port against
the current database and stopped at the end. Two scenarios, N requests each, C client threads:
- hot: every client reserves 1 unit of one SKU stocked with N/2 units (half must be refused);
- spread: every client reserves 1 unit of a random SKU among 10,000.
Printed per scenario: reservations/s, p50/p99 latency, status counts and oversells (must be 0:
checked from the answers *and* from the database: reserved vs. on_hand, ledger sums). Then the
same count of single conditional `UPDATE ... WHERE on_hand - reserved >= 1` statements, each
its own transaction, sent straight to PostgreSQL from C threads against a scratch table of the
same shape (never the real positions, whose every change must have a ledger row), as the
lower bound the API is compared with.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import F

from core.auth import api_key_create
from inventory.locking import positions_lock
from inventory.models import Location, Sku, StockPosition
from inventory.selectors import ledger_drift
from inventory.services import MovementContext, location_create, movement_apply, sku_create

SPREAD_SKUS = 10_000
SPREAD_PREFIX = "BENCH-SPREAD-"
SPREAD_STOCK = 1_000_000  # plenty: the spread scenario measures throughput, not refusals
LOCATION = "bench-wh"
ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


class Command(BaseCommand):
    help = "Benchmark concurrent reservations over HTTP (hot SKU and 10,000 spread SKUs) vs plain UPDATEs."

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=int, default=2000, help="requests per scenario (default 2000)")
        parser.add_argument("--concurrency", type=int, default=50, help="client threads (default 50)")
        parser.add_argument("--url", help="a running server's base URL (same database); default: start gunicorn")
        parser.add_argument("--key", help="API key with reservations:write (default: create one)")
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers when started here")
        parser.add_argument("--threads", type=int, default=16, help="gunicorn threads per worker")

    def handle(self, *args, **opts):
        n, c = opts["requests"], opts["concurrency"]
        if n < 1 or c < 1:
            raise CommandError("--requests and --concurrency must be positive")
        run = uuid.uuid4().hex[:8]
        self.stdout.write(f"bench {run}: {n} requests per scenario, {c} concurrent clients")
        self._catalog()
        hot_code = f"BENCH-HOT-{run}"
        hot_stock = n // 2
        self._hot_sku(hot_code, hot_stock)
        key = opts["key"] or api_key_create(name=f"bench-{run}", scopes=["reservations:write"])[1]
        server = None
        url = opts["url"]
        try:
            if not url:
                server, url = self._start_server(opts["workers"], opts["threads"])
            url = url.rstrip("/")
            results = []
            hot = self._http(url, key, [hot_code] * n, c)
            results.append(("API hot (1 SKU)", hot, self._oversells(hot, [hot_code], hot_stock)))
            codes = [f"{SPREAD_PREFIX}{random.randrange(SPREAD_SKUS):05d}" for _ in range(n)]
            spread = self._http(url, key, codes, c)
            results.append(("API spread (10k SKUs)", spread, self._oversells(spread, sorted(set(codes)), None)))
            base_hot = self._baseline(n, c, rows=1, stock=hot_stock)
            base_spread = self._baseline(n, c, rows=SPREAD_SKUS, stock=SPREAD_STOCK)
            self._report(results, [("UPDATE hot (1 row)", base_hot), ("UPDATE spread (10k rows)", base_spread)])
            self._cleanup(url, key, hot["ids"] + spread["ids"], c)
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()

    # ------------------------------------------------------------------ setup

    def _catalog(self) -> None:
        """10,000 SKUs with plenty of stock at one location, created once and reused by later runs.

        Stock goes in through the inventory primitives (locked positions + ledger rows)."""
        if not Location.objects.filter(code=LOCATION).exists():
            location_create(code=LOCATION, name="Benchmark warehouse", priority=10_000)
        existing = Sku.objects.filter(code__startswith=SPREAD_PREFIX).count()
        if existing >= SPREAD_SKUS:
            return
        started = time.monotonic()
        self.stdout.write(f"creating {SPREAD_SKUS} SKUs (first run only)...")
        Sku.objects.bulk_create(
            [Sku(code=f"{SPREAD_PREFIX}{i:05d}", name=f"Benchmark {i}") for i in range(SPREAD_SKUS)],
            ignore_conflicts=True, batch_size=2000)
        location = Location.objects.get(code=LOCATION)
        sku_ids = list(Sku.objects.filter(code__startswith=SPREAD_PREFIX).values_list("pk", flat=True))
        context = MovementContext(source="bench", reference="bench stock")
        for start in range(0, len(sku_ids), 1000):
            with transaction.atomic():
                locked = positions_lock([(s, location.pk) for s in sku_ids[start:start + 1000]])
                for position in locked.values():
                    if position.on_hand == 0:
                        movement_apply(position=position, type="receipt", on_hand_delta=SPREAD_STOCK, context=context)
        self.stdout.write(f"  done in {time.monotonic() - started:.1f}s")

    def _hot_sku(self, code: str, quantity: int) -> None:
        sku = sku_create(code=code, name="Benchmark hot SKU")
        location = Location.objects.get(code=LOCATION)
        with transaction.atomic():
            position = positions_lock([(sku.pk, location.pk)])[(sku.pk, location.pk)]
            movement_apply(position=position, type="receipt", on_hand_delta=quantity,
                           context=MovementContext(source="bench", reference="bench stock"))

    def _start_server(self, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
        port = _free_port()
        env = dict(os.environ)
        env["DATABASE_URL"] = self._database_url()
        log = Path(settings.DATA_DIR) / f"bench-gunicorn-{port}.log"
        out = open(log, "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
             "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads),
             "--backlog", "2048", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise CommandError(f"gunicorn exited; see {log}")
                try:
                    requests.get(f"{url}/api/v1/reservations/", timeout=10)
                    self.stdout.write(f"gunicorn on {url} ({workers} workers x {threads} threads, log {log})")
                    return proc, url
                except requests.RequestException:
                    time.sleep(0.2)
            raise CommandError("gunicorn did not start within 60 s")
        except BaseException:  # never leave our server behind (Ctrl-C included)
            proc.terminate()
            proc.wait(timeout=15)
            raise

    @staticmethod
    def _database_url() -> str:
        s = connection.settings_dict
        return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT']}/{s['NAME']}"

    # ------------------------------------------------------------------ scenarios

    def _http(self, url: str, key: str, sku_codes: list[str], concurrency: int) -> dict:
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return local.session

        def reserve(code: str):
            began = time.perf_counter()
            try:
                response = session().post(
                    f"{url}/api/v1/reservations/", json={"lines": [{"sku": code, "quantity": 1}], "ttl_seconds": 3600},
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}, timeout=120)
                status = response.status_code
                rid = response.json().get("id") if status == 201 else None
            except requests.RequestException:
                status, rid = 0, None
            return status, time.perf_counter() - began, rid

        def warm(_):  # unmeasured: connections, server threads and their DB connections exist
            session().get(f"{url}/api/v1/reservations/", params={"page_size": 1}, timeout=120,
                          headers={"Authorization": f"Bearer {key}"})

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(warm, range(concurrency * 2)))
            began = time.perf_counter()
            outcomes = list(pool.map(reserve, sku_codes))
            elapsed = time.perf_counter() - began
        statuses: dict[int, int] = {}
        for status, _, _ in outcomes:
            statuses[status] = statuses.get(status, 0) + 1
        return {"elapsed": elapsed, "latencies": [lat for _, lat, _ in outcomes], "statuses": statuses,
                "ids": [rid for _, _, rid in outcomes if rid], "count": len(outcomes)}

    def _oversells(self, result: dict, sku_codes: list[str], stock: int | None) -> int:
        """Units promised beyond stock: from the answers (hot) and from the database (both)."""
        oversold = max(0, len(result["ids"]) - stock) if stock is not None else 0
        positions = StockPosition.objects.filter(sku__code__in=sku_codes, location__code=LOCATION)
        oversold += sum(p.reserved - p.on_hand for p in positions.filter(reserved__gt=F("on_hand")))
        wanted = set(sku_codes)
        drift = [row for row in ledger_drift() if row["sku"] in wanted]
        if drift:
            raise CommandError(f"ledger drift on {drift[:3]}: the benchmark found a bug")
        if stock is not None and sum(p.reserved for p in positions) != len(result["ids"]):
            raise CommandError("reserved differs from the number of 201 answers")
        return oversold

    def _baseline(self, n: int, concurrency: int, *, rows: int, stock: int) -> dict:
        """N single-statement transactions `UPDATE ... SET reserved = reserved + 1 WHERE id = %s
        AND on_hand - reserved >= 1` from `concurrency` connections, on a scratch table."""
        import psycopg

        table = f"bench_baseline_{uuid.uuid4().hex[:8]}"
        dsn = self._database_url()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, on_hand bigint NOT NULL, "  # noqa: S608
                          "reserved bigint NOT NULL, version bigint NOT NULL DEFAULT 0, CHECK (reserved >= 0))")
            admin.execute(f"INSERT INTO {table} (id, on_hand, reserved) "  # noqa: S608
                          "SELECT g, %s, 0 FROM generate_series(1, %s) g", [stock, rows])
        try:
            targets = [random.randrange(1, rows + 1) for _ in range(n)]
            local = threading.local()
            conns = []
            lock = threading.Lock()
            sql = (f"UPDATE {table} SET reserved = reserved + 1, version = version + 1 "  # noqa: S608
                   "WHERE id = %s AND on_hand - reserved >= 1")

            def update(row_id: int):
                if not hasattr(local, "conn"):
                    local.conn = psycopg.connect(dsn, autocommit=True)
                    with lock:
                        conns.append(local.conn)
                began = time.perf_counter()
                ok = local.conn.execute(sql, [row_id]).rowcount == 1
                return ok, time.perf_counter() - began

            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                began = time.perf_counter()
                outcomes = list(pool.map(update, targets))
                elapsed = time.perf_counter() - began
            for conn in conns:
                conn.close()
            won = sum(1 for ok, _ in outcomes if ok)
            return {"elapsed": elapsed, "latencies": [lat for _, lat in outcomes], "count": n,
                    "statuses": {"ok": won, "refused": n - won}}
        finally:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f"DROP TABLE IF EXISTS {table}")

    # ------------------------------------------------------------------ output

    def _report(self, api: list, baseline: list) -> None:
        def line(name, r, extra):
            lat = [x * 1000 for x in r["latencies"]]
            rate = r["count"] / r["elapsed"]
            self.stdout.write(f"{name:<26} {r['count']:>6} {rate:>10.0f}/s {statistics.median(lat):>8.1f} "
                              f"{_percentile(lat, 99):>8.1f}  {extra}")
            return rate

        self.stdout.write(f"\n{'scenario':<26} {'reqs':>6} {'throughput':>12} {'p50 ms':>8} {'p99 ms':>8}  outcome")
        rates = {}
        for name, r, oversold in api:
            statuses = " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()))
            rates[name] = line(name, r, f"{statuses}  oversells={oversold}")
        base_rates = {}
        for name, r in baseline:
            base_rates[name] = line(name, r, f"ok:{r['statuses']['ok']} refused:{r['statuses']['refused']}")
        (api_hot, api_spread), (b_hot, b_spread) = rates.values(), base_rates.values()
        self.stdout.write(f"\nAPI / plain UPDATE throughput: hot {api_hot / b_hot:.2f}x, "
                          f"spread {api_spread / b_spread:.2f}x")
        if any(o for _, _, o in api):
            raise CommandError("OVERSOLD: reservations beyond stock; this is a bug")

    def _cleanup(self, url: str, key: str, ids: list[str], concurrency: int) -> None:
        """Release what the benchmark reserved (through the API), so stock is free again."""
        def release(rid):
            requests.post(f"{url}/api/v1/reservations/{rid}/release/", headers={"Authorization": f"Bearer {key}"},
                          timeout=120)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(release, ids))
        self.stdout.write(f"released the {len(ids)} benchmark reservations")
