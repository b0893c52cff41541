"""`./dev manage bench_stream`: what live stock streams cost one web process.

Starts one web process (gunicorn, one worker, as `./dev up` runs it but with a single worker so
every number belongs to one process) on a free port and measures, from this process:
1. API latency: sequential `GET /api/v1/stock/{sku}/` on a kept-alive connection, p50/p99;
2. change -> client: S streams on one SKU; each of K stock changes is made here (service call,
   the clock starts before the transaction) and timed until every stream has the event;
3. idle streams: C streams open at once (spread over 100 SKUs): the worker's resident memory,
   threads and database connections before and after, so the cost per client;
4. API latency and change -> client again while the C streams are open.

`--app plain` serves Django's own ASGI handler (no live.asgi thread routing) and `--app
gthread` the WSGI app under gthread (API latency only: streams need ASGI), to compare.
Bench rows (SKUs BENCHSTREAM-*, location bench-stream) stay: the ledger is append-only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

ROOT = Path(__file__).resolve().parents[3]
SKU_PREFIX = "BENCHSTREAM-"
LOCATION = "bench-stream"
SKU_COUNT = 100


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamClient:
    """One SSE connection on asyncio streams: records when each event id arrives."""

    def __init__(self, port: int, path: str, key: str):
        self.port, self.path, self.key = port, path, key
        self.events: dict[str, float] = {}  # "<id>" -> arrival time
        self.opened = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.error: str | None = None

    async def run(self) -> None:
        try:
            reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
            self.writer.write((f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.key}\r\n"
                               "Accept: text/event-stream\r\n\r\n").encode())
            status = await reader.readline()
            if b" 200 " not in status:
                self.error = status.decode(errors="replace").strip()
                self.opened.set()
                return
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            buffer = b""
            while True:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.strip() or b"0", 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                now = time.time()
                buffer += chunk[:-2]
                *frames, buffer = buffer.split(b"\n\n")
                for frame in frames:
                    if frame.startswith(b"retry:") or b": stream open" in frame:
                        self.opened.set()
                    elif frame.startswith(b"id: "):
                        self.events[frame[4:frame.index(b"\n")].decode()] = now
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            self.error = self.error or repr(exc)
            self.opened.set()

    def close(self) -> None:
        if self.task:
            self.task.cancel()
        if self.writer:
            self.writer.close()


class ClientLoop:
    """An event loop in a thread of its own, holding the stream clients."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self, clients: list[StreamClient]) -> list[float]:
        times = []

        async def one(client):
            t0 = time.perf_counter()
            client.task = asyncio.get_running_loop().create_task(client.run())
            await client.opened.wait()
            times.append((time.perf_counter() - t0) * 1000)

        # In waves of 100: a burst of 1,000 connects would measure the accept queue, not streams.
        for start in range(0, len(clients), 100):
            await asyncio.gather(*(one(c) for c in clients[start:start + 100]))
        return times

    def open(self, clients: list[StreamClient]) -> list[float]:
        return self.call(self._open(clients))

    async def _close(self, clients):
        for client in clients:
            client.close()
        await asyncio.sleep(0.1)

    def close(self, clients: list[StreamClient]) -> None:
        self.call(self._close(clients))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class Command(BaseCommand):
    help = "Benchmark live stock streams: idle clients per process, change -> client latency, API latency."

    def add_arguments(self, parser):
        parser.add_argument("--clients", type=int, default=1000, help="idle streams held open at once")
        parser.add_argument("--subscribers", type=int, default=100, help="streams on the SKU that changes")
        parser.add_argument("--changes", type=int, default=30, help="changes timed per latency run")
        parser.add_argument("--requests", type=int, default=300, help="GETs per API latency run")
        parser.add_argument("--app", choices=["live", "plain", "gthread"], default="live",
                            help="live: config.asgi (default); plain: Django's ASGI handler alone; "
                                 "gthread: the WSGI app (API latency only)")

    def handle(self, *args, **opts):
        key, skus, location = self._setup()
        port = _free_port()
        server = self._start_server(port, opts["app"])
        clients_loop = ClientLoop()
        clients: list[StreamClient] = []
        try:
            worker = self._worker(server)
            self.stdout.write(f"server: gunicorn, 1 worker ({opts['app']}), pid {worker.pid}; machine: "
                              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machine: "
                              "other work inflates every number)")
            base = f"http://127.0.0.1:{port}"
            self._api_latency(base, key, skus[0], opts["requests"], "no streams open")
            if opts["app"] == "gthread":
                return
            before = self._footprint(worker)
            subscribers = [StreamClient(port, f"/api/v1/stream/stock/?sku={skus[0]}", key)
                           for _ in range(opts["subscribers"])]
            clients += subscribers
            clients_loop.open(subscribers)
            self._check(subscribers)
            self._latency(subscribers, skus[0], location, opts["changes"], "no other streams")
            idle = [StreamClient(port, f"/api/v1/stream/stock/?sku={skus[1 + n % (SKU_COUNT - 1)]}", key)
                    for n in range(max(0, opts["clients"] - len(subscribers)))]
            clients += idle
            t0 = time.perf_counter()
            connect_ms = clients_loop.open(idle)
            elapsed = time.perf_counter() - t0
            self._check(idle)
            time.sleep(2)
            after = self._footprint(worker)
            total = len(clients)
            per_client = (after["rss"] - before["rss"]) / max(1, total)
            self.stdout.write(
                f"idle streams: {total} open on one process ({len(idle)} opened in {elapsed:.1f} s, connect p50 "
                f"{_pct(connect_ms, 50):.0f} ms p99 {_pct(connect_ms, 99):.0f} ms); worker RSS "
                f"{before['rss'] / 2**20:.1f} -> {after['rss'] / 2**20:.1f} MiB = {per_client / 1024:.1f} KiB per "
                f"stream; threads {before['threads']} -> {after['threads']}; database connections "
                f"{before['db']} -> {after['db']}; open files {before['fds']} -> {after['fds']}")
            self._api_latency(base, key, skus[0], opts["requests"], f"{total} streams open")
            self._latency(subscribers, skus[0], location, opts["changes"], f"{total} streams open")
        finally:
            clients_loop.close(clients)
            clients_loop.stop()
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()

    # ------------------------------------------------------------------ setup
    def _setup(self):
        from core.auth import api_key_create
        from inventory import services
        from inventory.models import Location, Sku

        location, _ = Location.objects.get_or_create(code=LOCATION, defaults={"name": "Bench stream"})
        codes = [f"{SKU_PREFIX}{n:03d}" for n in range(SKU_COUNT)]
        existing = set(Sku.objects.filter(code__in=codes).values_list("code", flat=True))
        for code in codes:
            if code not in existing:
                services.sku_create(code=code, name=f"Bench stream {code}")
            services.stock_receive(sku=code, location=LOCATION, quantity=1_000_000,
                                   context=services.MovementContext(source="bench", reference="bench_stream",
                                                                    event_key=f"bench-stream:{code}"))
        _key, plaintext = api_key_create(name="bench_stream", scopes=["stock:read"])
        return plaintext, codes, location

    def _start_server(self, port: int, app: str) -> subprocess.Popen:
        if app == "gthread":
            args = ["config.wsgi", "--worker-class", "gthread", "--threads", "8"]
        else:
            target = "config.asgi:application" if app == "live" else "config.asgi:django_application"
            args = [target, "--worker-class", "live.worker.StocklineUvicornWorker"]
        env = {**os.environ, "LOG_LEVEL": "WARNING"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [sys.executable, "-m", "gunicorn", *args, "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--graceful-timeout", "5", "--limit-request-line", "0"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CommandError("the web server did not start")
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/schema/", timeout=5).status_code == 200:
                    return proc
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise CommandError("the web server did not answer within 60 s")

    @staticmethod
    def _worker(server: subprocess.Popen) -> psutil.Process:
        children = psutil.Process(server.pid).children()
        if not children:
            raise CommandError("no gunicorn worker")
        return children[0]

    def _footprint(self, worker: psutil.Process) -> dict:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()")
            (db,) = cursor.fetchone()
        return {"rss": worker.memory_info().rss, "threads": worker.num_threads(), "fds": worker.num_fds(),
                "db": db}

    @staticmethod
    def _check(clients: list[StreamClient]) -> None:
        failed = [c.error for c in clients if c.error]
        if failed:
            raise CommandError(f"{len(failed)} streams failed to open, e.g. {failed[0]}")

    # ------------------------------------------------------------------ measurements
    def _api_latency(self, base: str, key: str, sku: str, count: int, label: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        for _ in range(10):
            session.get(f"{base}/api/v1/stock/{sku}/", timeout=10).raise_for_status()
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            session.get(f"{base}/api/v1/stock/{sku}/", timeout=10).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        self.stdout.write(f"API GET /api/v1/stock/{{sku}}/ ({label}): p50 {_pct(times, 50):.1f} ms, "
                          f"p99 {_pct(times, 99):.1f} ms, mean {statistics.mean(times):.1f} ms ({count} requests)")

    def _latency(self, subscribers: list[StreamClient], sku: str, location, changes: int, label: str) -> None:
        from inventory import services

        for client in subscribers:
            client.events.clear()
        samples, worst_per_change, missing = [], [], 0
        for _ in range(changes):
            seen = {id(c): set(c.events) for c in subscribers}
            t0 = time.time()
            services.stock_receive(sku=sku, location=location, quantity=1)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if all(set(c.events) - seen[id(c)] for c in subscribers):
                    break
                time.sleep(0.002)
            arrivals = []
            for client in subscribers:
                new = [client.events[i] for i in set(client.events) - seen[id(client)]]
                if new:
                    arrivals.append((min(new) - t0) * 1000)
                else:
                    missing += 1
            samples += arrivals
            if arrivals:
                worst_per_change.append(max(arrivals))
            time.sleep(0.1)
        if not samples:
            self.stdout.write(self.style.ERROR("change -> client: no event arrived"))
            return
        self.stdout.write(
            f"change -> client ({len(subscribers)} subscribers, {label}, {changes} changes): p50 "
            f"{_pct(samples, 50):.1f} ms, p99 {_pct(samples, 99):.1f} ms, max {max(samples):.1f} ms; "
            f"last subscriber per change p50 {_pct(worst_per_change, 50):.1f} ms"
            + (f"; {missing} deliveries missing after 5 s" if missing else ""))
