"""Benchmark: the hot HTTP paths against a bare Django view on the same server (docs/performance.md).

    ./dev manage bench_http [--duration 10] [--rounds 3] [--connections 32] [--threads 2]
                            [--only NAME,...] [--profile NAME] [--no-worker] [--compare ENV=VALUE,...]

Starts the web server exactly as `./dev up` does (gunicorn, the ASGI app on the uvicorn worker
class, 2 processes, its output piped through this process as `./dev up` pipes it, a
PROMETHEUS_MULTIPROC_DIR), a Celery worker like `./dev up`'s, and mounts a bare Django JSON view
at /_bench/bare/ (env STOCKLINE_BENCH_BARE_VIEW, read by config/urls.py; the same middleware as
every other route). Then, in rounds, each path for --duration seconds with `wrk` (2 threads, 32
connections; a Lua script makes every POST unique: Idempotency-Keys, pre-signed Shopify
deliveries) or, when wrk is not installed, a Python client (slower: its figures are not
comparable with wrk's, only its ratios within one run are). Paths:

  bare             GET  /_bench/bare/                 the ceiling: the framework and middleware only
  stock_read       GET  /api/v1/stock/{sku}/          one of 1,000 SKUs at random
  stock_bulk       GET  /api/v1/stock/?sku=..x10      10 of 1,000 SKUs at random
  webhook_ack      POST /webhooks/{slug}/             signed Shopify orders/create, each a new delivery
  sale_hot         POST /api/v1/stock/adjustments/    sale of 1 unit, one SKU
  reserve_hot      POST /api/v1/reservations/         1 unit, one SKU
  reserve_spread   POST /api/v1/reservations/         1 unit of one of 1,000 SKUs

Printed per path: median req/s over the rounds, p50/p99 (median over rounds), the ratio to the
bare view measured right before the path (--bare-each seconds, after a warm-up; median of the
rounds' ratios), non-2xx answers and socket errors. Then exactness from the database: oversells
(positions with reserved > on_hand, and the hot SKU's reserved versus its active reservations)
must be 0 and the ledger must have no drift
(inventory.selectors.ledger_drift, as `verify_ledger`); either fails the command. With
webhook_ack (and the worker), also what the drain made of each round's deliveries: processed
(applied, ignored or failed) per second and receipt -> processed p50/p99 (the signed-webhook
measurement of docs/ingestion.md).

--compare ENV=VALUE,... starts a second web server ("B") with those environment variables (a
setting read at start, e.g. ASGI_ONE_CALL=0) beside the first ("A"), and drives every path on
both in turn, A then B in odd rounds, B then A in even ones: this machine's speed drifts by 2x
over minutes, so only figures taken back to back compare. Then it prints, per path, B's req/s and
web CPU per request over A's in each round.

Every run makes fresh hot SKUs; the 1,000 spread SKUs and the webhook channel are created once
and reused. Reservations are made with a 120 s TTL: the expiry sweep of `./dev up` frees them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import F, Sum

from channels.adapters.signing import hmac_sha256_base64
from channels.models import Channel, ChannelListing
from core.auth import api_key_create
from inventory.locking import positions_lock
from inventory.models import Location, Sku, StockPosition
from inventory.selectors import ledger_drift
from inventory.services import MovementContext, location_create, movement_apply, sku_create
from reservations.models import Reservation, ReservationLine

ROOT = Path(__file__).resolve().parents[3]
LOCATION = "bench-wh"
SPREAD_PREFIX = "BENCH-HTTP-"
SPREAD_SKUS = 1000
WEBHOOK_SKUS = 100
STOCK = 100_000_000  # plenty: the paths measure throughput, not refusals
CHANNEL = "bench-http-shopify"
SHOPIFY_SECRET = "bench-http-shopify-secret"  # noqa: S105 - a throwaway benchmark channel
BULK_SKUS = 10
RESERVATION_TTL = 120

PATHS = ("bare", "stock_read", "stock_bulk", "webhook_ack", "sale_hot", "reserve_hot", "reserve_spread")


SERVERS = ("asgi", "wsgi", "granian")


def web_command(port: int, server: str = "asgi") -> list[str]:
    """The web server as devtools/__main__.py `cmd_up` starts it (keep the two in step); `wsgi`:
    the gthread layout `./dev up` used before the live streams (2 processes x 8 threads), for
    comparison; `granian`: the same ASGI application on granian (a Rust HTTP server), 2 processes."""
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "2", "--http", "1", "--no-ws", "--loop", "asyncio", "--runtime-mode", "st",
                "--log-level", "warning", os.environ.get("BENCH_HTTP_ASGI_APP", "config.asgi:application")]
    if server == "wsgi":
        return [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--worker-class",
                "gthread", "--workers", "2", "--threads", "8", "--access-logfile", "-", "--graceful-timeout", "10",
                "--limit-request-line", "0"]
    return [sys.executable, "-m", "gunicorn", os.environ.get("BENCH_HTTP_ASGI_APP", "config.asgi:application"),
            "--bind", f"127.0.0.1:{port}",
            "--worker-class", "live.worker.StocklineUvicornWorker", "--workers", "2",
            "--access-logfile", "-", "--graceful-timeout", "10", "--limit-request-line", "0"]


def worker_command(port: int) -> list[str]:
    """The Celery worker as `./dev up` starts it."""
    return [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--concurrency", "2",
            "--hostname", f"bench-http-{port}@%h"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ms(text: str) -> float:
    """A wrk duration ("812.00us", "1.20ms", "2.01s", "1.00m") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


@dataclass
class Result:
    rps: float
    p50: float
    p99: float
    requests: int
    non2xx: int
    errors: int
    statuses: dict[int, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU ms per answered request, per server process group
    sessions: int = 0  # PostgreSQL connections opened meanwhile (pg_stat_database.sessions)


def _proc_stat(pid: int) -> tuple[int, list[int]] | None:
    """(parent pid, [utime, stime, cutime, cstime]) in clock ticks, or None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), [int(x) for x in fields[11:15]]


def _cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) of each root's process tree, including children that exited
    (a parent's cutime/cstime): the server side's cost, whatever else the machine runs."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    tick = os.sysconf("SC_CLK_TCK")
    totals = {}
    for name, root in roots.items():
        if root not in stats:
            continue
        total, todo = sum(stats[root][1][2:]), [root]
        while todo:
            pid = todo.pop()
            total += sum(stats[pid][1][:2])
            todo += children.get(pid, [])
        totals[name] = total / tick
    return totals


def _db_sessions() -> int:
    """Connections ever opened to this database: a new one per request or per task is a fork of a
    PostgreSQL backend, costlier than most requests (each backend reports it within a second)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _children_of(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                pids.append(int(stat.parent.name))
    return sorted(pids)


@dataclass
class Scenario:
    """One path: a Lua body for wrk (functions `request`, maybe `init`) and the same requests for
    the Python client (`make(thread, n) -> (method, path, headers, body)`)."""

    name: str
    lua: Callable[[str], str]  # unique prefix -> script
    make: Callable[[str], Callable[[int, int], tuple[str, str, dict, bytes]]]
    prepare: Callable[[str, float], None] | None = None  # per run: write the data files the script reads


class _Pump:
    """Reads a child's output line by line and writes it, prefixed, to a log: what `./dev up`'s
    supervisor does with every line the web server prints (so its cost is measured too)."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path):
        self.name, self.proc, self.log = name, proc, log
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "a") as out:
            for line in self.proc.stdout:
                out.write(f"{self.name:<10}| {line.rstrip(chr(10))}\n")
                out.flush()


class Command(BaseCommand):
    help = "Benchmark the hot HTTP paths (wrk) against a bare Django view on the same server."

    def add_arguments(self, parser):
        parser.add_argument("--duration", type=float, default=10.0, help="seconds per path per round (default 10)")
        parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each path")
        parser.add_argument("--rounds", type=int, default=3, help="rounds over every path (default 3)")
        parser.add_argument("--connections", type=int, default=32)
        parser.add_argument("--threads", type=int, default=2, help="client threads (wrk -t)")
        parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(PATHS)}")
        parser.add_argument("--profile", default="",
                            help="after the rounds, record this path with py-spy on every web worker")
        parser.add_argument("--no-worker", action="store_true", help="do not start the Celery worker")
        parser.add_argument("--python-client", action="store_true", help="use the Python client even with wrk")
        parser.add_argument("--bare-each", type=float, default=4.0,
                            help="seconds of the bare view right before each path, its ratio's baseline (0: "
                                 "the round's one bare measurement)")
        parser.add_argument("--compare", default="",
                            help="ENV=VALUE,...: a second web server with these variables, driven in turn with "
                                 "the first on every path (A/B)")
        parser.add_argument("--server", choices=SERVERS, default="asgi",
                            help="asgi: as ./dev up (default); wsgi: gunicorn gthread; granian: the ASGI app on "
                                 "granian; for comparison (with --compare, SERVER=... picks B's)")

    # ------------------------------------------------------------------ main

    def handle(self, *args, **opts):
        only = [p.strip() for p in opts["only"].split(",") if p.strip()] or list(PATHS)
        unknown = set(only) - set(PATHS)
        if unknown:
            raise CommandError(f"unknown paths {sorted(unknown)}; known: {', '.join(PATHS)}")
        if "bare" not in only:
            only.insert(0, "bare")  # ratios need the ceiling of the same round
        compare = dict(pair.split("=", 1) for pair in opts["compare"].split(",") if pair.strip())
        if any(not key.strip() for key in compare):
            raise CommandError("--compare takes ENV=VALUE pairs, e.g. ASGI_ONE_CALL=0")
        self.wrk = None if opts["python_client"] else shutil.which("wrk")
        self.opts = opts
        run = uuid.uuid4().hex[:8]
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-http-{run}-", dir=settings.DATA_DIR))
        client = f"wrk ({self.wrk})" if self.wrk else (
            "Python (--python-client)" if opts["python_client"] else "Python (wrk not found: apt-get install wrk)")
        self.stdout.write(f"bench_http {run}: client {client}, "
                          f"{opts['threads']} threads, {opts['connections']} connections, "
                          f"{opts['duration']:.0f} s per path, {opts['rounds']} rounds; files in {self.work}")
        self._setup(run)
        scenarios = {s.name: s for s in self._scenarios()}
        children: list[subprocess.Popen] = []
        try:
            self.url, self.web = self._start(children, worker=not opts["no_worker"])
            targets = {"A": (self.url, self.web.pid)}
            if compare:
                url_b, web_b = self._start_web(children, compare)
                targets["B"] = (url_b, web_b.pid)
                self.stdout.write(f"B {url_b}: the same, with {' '.join(f'{k}={v}' for k, v in compare.items())}")
            rounds: list[dict[str, Result]] = []
            rounds_b: list[dict[str, Result]] = []
            for n in range(opts["rounds"]):
                measured: dict[str, dict[str, Result]] = {"A": {}, "B": {}}
                for name in only:
                    for side in sorted(targets, reverse=n % 2 == 1):
                        self.url, self.roots["web"] = targets[side]
                        letter = "r" if side == "A" else "b"
                        adjacent = ""
                        if name != "bare" and opts["bare_each"] > 0:  # the ceiling seconds before the path
                            self._drive(scenarios["bare"], f"{run}w{letter}{n}barefor{name}", opts["warmup"])
                            bare = measured[side][f"bare>{name}"] = self._drive(
                                scenarios["bare"], f"{run}{letter}{n}barefor{name}", opts["bare_each"])
                            adjacent = f"  (bare just before: {bare.rps:.0f} req/s)"
                        self._drive(scenarios[name], f"{run}w{letter}{n}{name}", opts["warmup"])
                        r = measured[side][name] = self._drive(scenarios[name], f"{run}{letter}{n}{name}",
                                                               opts["duration"])
                        self.stdout.write(f"  round {n + 1}{' ' + side if compare else ''} {name:<15} "
                                          f"{r.rps:>8.0f} req/s  p50 {r.p50:>7.1f} ms  p99 {r.p99:>7.1f} ms  "
                                          f"non-2xx {r.non2xx}  errors {r.errors}  db sessions {r.sessions}  "
                                          "CPU ms/req " + " ".join(f"{k} {v:.2f}" for k, v in r.cpu.items())
                                          + adjacent)
                rounds.append(measured["A"])
                rounds_b.append(measured["B"])
            self.url, self.roots["web"] = targets["A"]
            if "webhook_ack" in only and not opts["no_worker"]:
                for side in targets:
                    self._webhook_drain(run, "r" if side == "A" else "b", f" {side}" if compare else "")
            if opts["profile"]:
                self._profile(scenarios[opts["profile"]], run)
        finally:
            self._stop(children)
        self._report(only, rounds)
        if compare:
            self._report_compare(only, rounds, rounds_b, compare)
        self._exactness()

    # ------------------------------------------------------------------ data

    def _setup(self, run: str) -> None:
        """The catalog (created once), this run's hot SKUs, the Shopify channel, an API key."""
        location = Location.objects.filter(code=LOCATION).first() or location_create(
            code=LOCATION, name="Benchmark warehouse", priority=10_000)
        codes = [f"{SPREAD_PREFIX}{i:04d}" for i in range(SPREAD_SKUS)]
        wh_codes = [f"{SPREAD_PREFIX}WH-{i:03d}" for i in range(WEBHOOK_SKUS)]
        known = Sku.objects.filter(code__in=codes + wh_codes).values_list("code", flat=True)
        missing = set(codes + wh_codes) - set(known)
        if missing:
            self.stdout.write(f"creating {len(missing)} benchmark SKUs (first run only)...")
            Sku.objects.bulk_create([Sku(code=c, name=f"Benchmark {c}") for c in sorted(missing)],
                                    ignore_conflicts=True, batch_size=2000)
        self._stock(list(Sku.objects.filter(code__in=codes + wh_codes).values_list("pk", flat=True)), location)
        self.hot_reserve = f"{SPREAD_PREFIX}HOT-R-{run}"
        self.hot_sale = f"{SPREAD_PREFIX}HOT-S-{run}"
        for code in (self.hot_reserve, self.hot_sale):
            self._stock([sku_create(code=code, name="Benchmark hot SKU").pk], location)
        channel = Channel.objects.filter(slug=CHANNEL).first()
        if channel is None:
            from channels.services import channel_create

            channel = channel_create(slug=CHANNEL, name="Bench HTTP Shopify", kind="shopify",
                                     webhook_secret=SHOPIFY_SECRET, default_location=location, push_enabled=False)
        if ChannelListing.objects.filter(channel=channel).count() < WEBHOOK_SKUS:
            from channels.services import listing_upsert

            for i, code in enumerate(wh_codes):
                listing_upsert(channel=channel, sku=code, external_id=f"bench-http-inv-{i}",
                               attributes={"variant_id": str(700000 + i)})
        _key, self.key = api_key_create(name=f"bench-http-{run}",
                                        scopes=["stock:read", "stock:write", "reservations:write"])
        self.codes = codes
        self.location = location

    def _stock(self, sku_ids: list[int], location: Location) -> None:
        """Top every position up to at least STOCK/2 available, through the inventory primitives."""
        low = set(StockPosition.objects.filter(sku_id__in=sku_ids, location=location)
                  .filter(on_hand__gte=F("reserved") + STOCK // 2).values_list("sku_id", flat=True))
        todo = [s for s in sku_ids if s not in low]
        context = MovementContext(source="bench", reference="bench_http stock")
        for start in range(0, len(todo), 500):
            with transaction.atomic():
                locked = positions_lock([(s, location.pk) for s in todo[start:start + 500]])
                for position in locked.values():
                    movement_apply(position=position, type="receipt", on_hand_delta=STOCK, context=context)

    # ------------------------------------------------------------------ scenarios

    def _scenarios(self) -> list[Scenario]:
        key, codes, n = self.key, self.codes, len(self.codes)
        auth = f"Bearer {key}"
        lua_codes = f'local prefix, nskus = "{SPREAD_PREFIX}", {n}\n'
        # `tid` is a global: wrk's setup() sets it in each thread's Lua state (a local would hide it).
        lua_head = (f'local counter = 0\nlocal nthreads = {self.opts["threads"]}\nlocal tids = 0\n'
                    'function setup(thread) tids = tids + 1; thread:set("tid", tids) end\n'
                    'function init(args) math.randomseed(os.time() + tid * 7919) end\n')

        def post_lua(path: str, body_lua: str) -> Callable[[str], str]:
            def script(prefix: str) -> str:
                return (lua_head + lua_codes + f'local path, unique = "{path}", "{prefix}"\n'
                        'function request()\n  counter = counter + 1\n'
                        f'  local body = {body_lua}\n'
                        '  return wrk.format("POST", path, {["Authorization"] = "' + auth + '", '
                        '["Content-Type"] = "application/json", '
                        '["Idempotency-Key"] = unique .. "-" .. tid .. "-" .. counter}, body)\nend\n')
            return script

        def get_lua(path_lua: str) -> Callable[[str], str]:
            def script(prefix: str) -> str:
                return (lua_head + lua_codes + 'function request()\n'
                        f'  return wrk.format("GET", {path_lua}, {{["Authorization"] = "{auth}"}})\nend\n')
            return script

        rand_code = 'string.format(prefix .. "%04d", math.random(0, nskus - 1))'
        bulk = " .. '&sku=' .. ".join([rand_code] * BULK_SKUS)

        def py(method: str, path: Callable[[random.Random], str], body: Callable[[random.Random, str], bytes] | None,
               idem: bool = False) -> Callable[[str], Callable[[int, int], tuple[str, str, dict, bytes]]]:
            def factory(prefix: str):
                rng = random.Random(prefix)

                def make(thread: int, count: int):
                    headers = {"Authorization": auth}
                    data = b""
                    if body is not None:
                        headers["Content-Type"] = "application/json"
                        data = body(rng, self.hot_reserve)
                    if idem:
                        headers["Idempotency-Key"] = f"{prefix}-{thread}-{count}"
                    return method, path(rng), headers, data
                return make
            return factory

        def rcode(rng: random.Random) -> str:
            return codes[rng.randrange(n)]

        reserve_body = '\'{"lines":[{"sku":"%s","quantity":1}],"ttl_seconds":' + str(RESERVATION_TTL) + '}\''
        sale_body = ('{"sku":"%s","location":"' + LOCATION + '","type":"sale","quantity":1}')
        return [
            Scenario("bare", get_lua('"/_bench/bare/"'), py("GET", lambda r: "/_bench/bare/", None)),
            Scenario("stock_read", get_lua(f'"/api/v1/stock/" .. {rand_code} .. "/"'),
                     py("GET", lambda r: f"/api/v1/stock/{rcode(r)}/", None)),
            Scenario("stock_bulk", get_lua(f'"/api/v1/stock/?sku=" .. {bulk}'),
                     py("GET", lambda r: "/api/v1/stock/?" + "&".join(f"sku={rcode(r)}" for _ in range(BULK_SKUS)),
                        None)),
            Scenario("webhook_ack", self._webhook_lua, self._webhook_py, prepare=self._webhook_prepare),
            Scenario("sale_hot", post_lua("/api/v1/stock/adjustments/", "'" + sale_body % self.hot_sale + "'"),
                     py("POST", lambda r: "/api/v1/stock/adjustments/",
                        lambda r, hot: (sale_body % self.hot_sale).encode(), idem=True)),
            Scenario("reserve_hot",
                     post_lua("/api/v1/reservations/", f"string.format({reserve_body}, \"{self.hot_reserve}\")"),
                     py("POST", lambda r: "/api/v1/reservations/",
                        lambda r, hot: json.dumps({"lines": [{"sku": hot, "quantity": 1}],
                                                   "ttl_seconds": RESERVATION_TTL}).encode(), idem=True)),
            Scenario("reserve_spread", post_lua("/api/v1/reservations/", f"string.format({reserve_body}, {rand_code})"),
                     py("POST", lambda r: "/api/v1/reservations/",
                        lambda r, hot: json.dumps({"lines": [{"sku": rcode(r), "quantity": 1}],
                                                   "ttl_seconds": RESERVATION_TTL}).encode(), idem=True)),
        ]

    # Shopify deliveries are signed here (HMAC-SHA256 of the body with the channel's secret) and
    # written to a file the Lua script reads: wrk's Lua has no HMAC. Each delivery is new (its own
    # X-Shopify-Webhook-Id), so every request is stored, none answered as a duplicate.

    def _webhook_file(self, prefix: str) -> Path:
        return self.work / f"webhooks-{prefix}.tsv"

    def _webhook_prepare(self, prefix: str, duration: float) -> None:
        count = int(max(2000.0, duration * 4000))  # more than the fastest path ever served
        rng = random.Random(prefix)
        with open(self._webhook_file(prefix), "w") as out:
            for i in range(count):
                order_id = int(hashlib.sha256(f"{prefix}:{i}".encode()).hexdigest()[:12], 16)
                lines = [{"id": order_id * 10 + k, "variant_id": 700000 + rng.randrange(WEBHOOK_SKUS), "quantity": 1,
                          "sku": "", "fulfillment_status": None} for k in range(rng.randint(1, 3))]
                body = json.dumps({"id": order_id, "name": f"#{order_id}", "created_at": "2024-05-01T10:00:00Z",
                                   "line_items": lines}).encode()
                signature = hmac_sha256_base64(SHOPIFY_SECRET.encode(), body)
                out.write(f"{prefix}-{i}\t{signature}\t{body.decode()}\n")

    def _webhook_lua(self, prefix: str) -> str:
        return (f'local nthreads, tids = {self.opts["threads"]}, 0\n'
                'local rows, at = {}, 0\n'
                'function setup(thread) tids = tids + 1; thread:set("tid", tids) end\n'
                'function init(args)\n'
                '  local n = 0\n'
                f'  for line in io.lines("{self._webhook_file(prefix)}") do\n'
                '    if n % nthreads == tid - 1 then\n'
                '      local id, sig, body = line:match("^([^\\t]*)\\t([^\\t]*)\\t(.*)$")\n'
                '      rows[#rows + 1] = {id, sig, body}\n'
                '    end\n'
                '    n = n + 1\n'
                '  end\n'
                'end\n'
                'function request()\n'
                '  at = at % #rows + 1\n'
                '  local row = rows[at]\n'
                f'  return wrk.format("POST", "/webhooks/{CHANNEL}/", {{["Content-Type"] = "application/json", '
                '["X-Shopify-Topic"] = "orders/create", ["X-Shopify-Webhook-Id"] = row[1], '
                '["X-Shopify-Hmac-Sha256"] = row[2], ["X-Shopify-Shop-Domain"] = "bench.myshopify.com"}, row[3])\n'
                'end\n')

    def _webhook_py(self, prefix: str):
        rows = [line.rstrip("\n").split("\t", 2) for line in open(self._webhook_file(prefix))]  # noqa: SIM115
        lock, state = threading.Lock(), {"at": 0}

        def make(thread: int, count: int):
            with lock:
                row = rows[state["at"] % len(rows)]
                state["at"] += 1
            return "POST", f"/webhooks/{CHANNEL}/", {
                "Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                "X-Shopify-Webhook-Id": row[0], "X-Shopify-Hmac-Sha256": row[1],
                "X-Shopify-Shop-Domain": "bench.myshopify.com"}, row[2].encode()
        return make

    def _webhook_drain(self, run: str, letter: str = "r", label: str = "") -> None:
        """What the drain made of the measured webhook rounds (issue 12: signed webhooks driven by
        a C client): once nothing is pending, every delivery's receipt -> applied time, and the
        applied rate over each round's span. wrk is a closed loop, so the rate offered is what the
        acks allowed: the ceiling of this machine with the drain running beside them."""
        from ingestion.models import InboundEvent

        deadline = time.monotonic() + 120
        events = InboundEvent.objects.filter(channel__slug=CHANNEL, delivery_id__startswith=f"{run}{letter}")
        while events.filter(status=InboundEvent.Status.PENDING).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        for n in range(self.opts["rounds"]):
            mine = events.filter(delivery_id__startswith=f"{run}{letter}{n}webhook_ack-")
            rows = list(mine.values_list("status", "received_at", "processed_at"))
            if not rows:
                continue
            statuses = Counter(status for status, _, _ in rows)
            waits = sorted((done - received).total_seconds() * 1000 for _, received, done in rows if done)
            if not waits:  # nothing processed within the wait: say so, and still report the rest
                self.stdout.write(f"  round {n + 1}{label} webhook drain: {len(rows)} deliveries, {dict(statuses)}, "
                                  "none processed within 120 s")
                continue
            span = (max(done for _, _, done in rows if done) - min(received for _, received, _ in rows)).total_seconds()
            p50, p99 = waits[len(waits) // 2], waits[min(len(waits) - 1, int(len(waits) * 0.99))]
            self.stdout.write(f"  round {n + 1}{label} webhook drain: {len(rows)} deliveries, {dict(statuses)}, "
                              f"processed {len(waits) / max(span, 0.001):.0f}/s over {span:.1f} s, "
                              f"receipt -> processed p50 {p50:.0f} ms p99 {p99:.0f} ms")

    # ------------------------------------------------------------------ driving

    def _drive(self, scenario: Scenario, prefix: str, duration: float) -> Result:
        if scenario.prepare is not None:
            scenario.prepare(prefix, duration)
        sessions_before = _db_sessions()
        before, pump_before = _cpu_seconds(self.roots), time.process_time()
        result = self._wrk(scenario, prefix, duration) if self.wrk else self._python_client(scenario, prefix, duration)
        after, pump = _cpu_seconds(self.roots), time.process_time() - pump_before
        answered = max(1, result.requests)
        result.cpu = {name: 1000 * (after[name] - before[name]) / answered for name in after if name in before}
        if self.wrk:  # this process only pumps the server's output meanwhile (./dev up's supervisor)
            result.cpu["pump"] = 1000 * pump / answered
        self._worker_idle()
        result.sessions = _db_sessions() - sessions_before
        return result

    def _worker_idle(self, timeout: float = 180.0) -> None:
        """Wait until the Celery worker is idle: the drain of the webhooks just posted must not
        run during (and be charged to) the next path. Idle: under 5% of a core for a second."""
        if "worker" not in self.roots:
            return
        deadline = time.monotonic() + timeout
        last = _cpu_seconds({"worker": self.roots["worker"]}).get("worker", 0.0)
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = _cpu_seconds({"worker": self.roots["worker"]}).get("worker", 0.0)
            if now - last < 0.05:
                return
            last = now

    def _wrk(self, scenario: Scenario, prefix: str, duration: float) -> Result:
        script = self.work / f"{prefix}.lua"
        script.write_text(scenario.lua(prefix))
        out = subprocess.run(  # noqa: S603 - wrk with our own arguments
            [self.wrk, "-t", str(self.opts["threads"]), "-c", str(self.opts["connections"]),
             "-d", f"{max(1, round(duration))}s", "--timeout", "10s", "--latency", "-s", str(script), self.url],
            capture_output=True, text=True, timeout=duration + 60)
        text = out.stdout
        if out.returncode != 0 or "Requests/sec" not in text:
            raise CommandError(f"wrk failed ({out.returncode}): {out.stderr[-2000:]}{text[-2000:]}")
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
        total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
        pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.MULTILINE))
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        return Result(rps=rps, p50=_ms(pct.get("50", "nan")), p99=_ms(pct.get("99", "nan")), requests=total,
                      non2xx=int(non2xx.group(1)) if non2xx else 0,
                      errors=sum(int(g) for g in sock.groups()) if sock else 0)

    def _python_client(self, scenario: Scenario, prefix: str, duration: float) -> Result:
        """wrk's job, done by threads with keep-alive connections (http.client)."""
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        make = scenario.make(prefix)
        deadline = time.monotonic() + duration
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors = 0
        lock = threading.Lock()

        def client(thread: int) -> None:
            nonlocal errors
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            mine, codes, count, errs = [], Counter(), 0, 0
            while time.monotonic() < deadline:
                count += 1
                method, path, headers, body = make(thread, count)
                began = time.perf_counter()
                try:
                    conn.request(method, path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    codes[response.status] += 1
                    mine.append((time.perf_counter() - began) * 1000)
                except (OSError, http.client.HTTPException):
                    errs += 1
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            conn.close()
            with lock:
                latencies.extend(mine)
                statuses.update(codes)
                errors += errs

        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.opts["connections"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        ordered = sorted(latencies) or [float("nan")]
        return Result(rps=len(latencies) / elapsed, p50=ordered[len(ordered) // 2],
                      p99=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], requests=len(latencies),
                      non2xx=sum(v for k, v in statuses.items() if not 200 <= k < 400), errors=errors,
                      statuses=dict(statuses))

    # ------------------------------------------------------------------ the stack

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        s = connection.settings_dict
        env["DATABASE_URL"] = f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
        env["STOCKLINE_BENCH_BARE_VIEW"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        metrics_dir = self.work / "prometheus"
        metrics_dir.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        return env

    def _spawn(self, children: list[subprocess.Popen], command: list[str], env: dict[str, str], name: str,
               log: Path) -> subprocess.Popen:
        """A child in its own session, its output pumped into `log` as `./dev up` pumps it."""
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,  # noqa: S603
                                stderr=subprocess.STDOUT, start_new_session=True, text=True, bufsize=1)
        children.append(proc)
        _Pump(name, proc, log)
        return proc

    def _wait_ready(self, url: str, procs: list[subprocess.Popen], log: Path, *, worker: bool) -> None:
        """Until the bare view answers (and, with a worker, the worker says "ready.") within 90 s."""
        deadline = time.monotonic() + 90
        while True:
            if any(p.poll() is not None for p in procs):
                raise CommandError(f"the stack did not start; see {log}")
            with contextlib.suppress(requests.RequestException):
                if (requests.get(f"{url}/_bench/bare/", timeout=5).status_code == 200
                        and (not worker or "ready." in log.read_text(errors="replace"))):
                    return
            if time.monotonic() > deadline:
                raise CommandError(f"the stack did not start within 90 s; see {log}")
            time.sleep(0.3)

    def _start(self, children: list[subprocess.Popen], *, worker: bool) -> tuple[str, subprocess.Popen]:
        port = _free_port()
        env = self._env()
        log = self.work / "stack.log"
        web = self._spawn(children, web_command(port, self.opts["server"]), env, "web", log)
        self.roots = {"web": web.pid}
        if worker:
            self.roots["worker"] = self._spawn(children, worker_command(port), env, "worker", log).pid
        for name, pidfile in (("db", Path(settings.DATA_DIR) / "postgres" / "data" / "postmaster.pid"),
                              ("redis", Path(settings.DATA_DIR) / "redis" / "redis.pid")):
            with contextlib.suppress(OSError, ValueError, IndexError):  # external servers: not measured
                self.roots[name] = int(pidfile.read_text().split()[0])
        url = f"http://127.0.0.1:{port}"
        self._wait_ready(url, children, log, worker=worker)
        command = " ".join(web_command(port, self.opts["server"])[1:])
        self.stdout.write(f"web {url}: {command}" + ("; Celery worker x2" if worker else ""))
        return url, web

    def _start_web(self, children: list[subprocess.Popen], extra: dict[str, str]) -> tuple[str, subprocess.Popen]:
        """A second web server (--compare), its output in stack-b.log; no worker of its own."""
        port = _free_port()
        log = self.work / "stack-b.log"
        extra = dict(extra)
        server = extra.pop("SERVER", self.opts["server"])
        if server not in SERVERS:
            raise CommandError(f"SERVER={server}: one of {', '.join(SERVERS)}")
        web = self._spawn(children, web_command(port, server), {**self._env(), **extra}, "web-b", log)
        url = f"http://127.0.0.1:{port}"
        self._wait_ready(url, [web], log, worker=False)
        return url, web

    def _stop(self, children: list[subprocess.Popen]) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()

    def _web_workers(self) -> list[int]:
        """The gunicorn worker processes (children of the master)."""
        return _children_of(self.web.pid)

    # ------------------------------------------------------------------ profile

    def _profile(self, scenario: Scenario, run: str) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            raise CommandError("py-spy is not installed (pip install py-spy)")
        duration = self.opts["duration"]
        prefix = f"{run}p{scenario.name}"
        if scenario.prepare is not None:
            scenario.prepare(prefix, duration + 4)
        recorders = []
        # The web workers and, when it runs, the Celery worker's pool processes (the drain of the
        # webhooks a path posts), each group summarised on its own.
        worker = self.roots.get("worker")
        groups = {"web": self._web_workers(), "worker": [worker, *_children_of(worker)] if worker else []}
        for group, pids in groups.items():
            for pid in pids:
                out = self.work / f"profile-{scenario.name}-{group}-{pid}.txt"
                recorders.append((group, out, subprocess.Popen(  # noqa: S603
                    [spy, "record", "-p", str(pid), "-d", str(int(duration)), "-f", "raw", "-o", str(out),
                     "--nonblocking", "--gil"],  # only the thread holding the GIL: where the Python CPU goes
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        time.sleep(0.5)
        if self.wrk:
            result = self._wrk(scenario, prefix, duration + 2)
        else:
            result = self._python_client(scenario, prefix, duration)
        for _group, _out, proc in recorders:
            proc.wait(timeout=60)
        for group in groups:
            files = [out for g, out, _ in recorders if g == group and out.exists()]
            if files:
                self.stdout.write(f"\nprofile of {scenario.name}, {group} processes "
                                  f"({result.rps:.0f} req/s under py-spy):")
                self._profile_summary(files)

    def _profile_summary(self, files: list[Path], top: int = 40) -> None:
        """Inclusive share of samples per function (each function once per stack)."""
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        total = 0
        for path in files:
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():
                    continue
                n = int(count)
                total += n
                frames = [re.sub(r" \((.*?):\d+\)$", r" (\1)", f) for f in stack.split(";")]
                for frame in set(frames):
                    inclusive[frame] += n
                if frames:
                    own[frames[-1]] += n
        if not total:
            self.stdout.write("  no samples")
            return
        self.stdout.write(f"  {total} samples; files: {', '.join(str(f) for f in files)}")
        self.stdout.write("  inclusive:")
        for frame, n in inclusive.most_common(top):
            self.stdout.write(f"    {100 * n / total:5.1f}%  {frame[:150]}")
        self.stdout.write("  self:")
        for frame, n in own.most_common(top // 2):
            self.stdout.write(f"    {100 * n / total:5.1f}%  {frame[:150]}")

    # ------------------------------------------------------------------ output

    def _report(self, names: list[str], rounds: list[dict[str, Result]]) -> None:
        self.stdout.write(
            f"\n{'path':<16} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'x bare':>6} {'non-2xx':>7} {'errors':>6}"
            f" | {'CPU ms/req: web':>15} {'db':>5} {'other':>5} {'total':>5} {'x bare':>6}"
            f"   ({len(rounds)} rounds; medians; ratios per round)")
        med = statistics.median

        def cpu(r: Result, *groups: str) -> float:
            return sum(v for k, v in r.cpu.items() if k in groups or not groups)

        def bare(r: dict[str, Result], name: str) -> Result:
            return r.get(f"bare>{name}", r["bare"])  # measured right before the path, if it was

        for name in names:
            results = [r[name] for r in rounds]
            ratios = [r[name].rps / bare(r, name).rps for r in rounds if bare(r, name).rps]
            cpu_ratios = [cpu(bare(r, name)) / cpu(r[name]) for r in rounds if cpu(r[name])]
            self.stdout.write(
                f"{name:<16} {med(x.rps for x in results):>7.0f} {med(x.p50 for x in results):>7.1f} "
                f"{med(x.p99 for x in results):>7.1f} {med(ratios):>6.2f} {sum(x.non2xx for x in results):>7} "
                f"{sum(x.errors for x in results):>6} | {med(cpu(x, 'web') for x in results):>15.2f} "
                f"{med(cpu(x, 'db') for x in results):>5.2f} "
                f"{med(cpu(x, 'worker', 'redis', 'pump') for x in results):>5.2f} {med(cpu(x) for x in results):>5.2f} "
                f"{med(cpu_ratios) if cpu_ratios else float('nan'):>6.2f}   ratios "
                + " ".join(f"{x:.2f}" for x in ratios))
        self.stdout.write("x bare: req/s over the bare view's measured right before the path (--bare-each; else once "
                          "per round); CPU x bare: the bare view's CPU per request over this path's (server "
                          "processes only: web, database, worker, Redis, log pump).")

    def _report_compare(self, names: list[str], rounds_a: list[dict[str, Result]],
                        rounds_b: list[dict[str, Result]], compare: dict[str, str]) -> None:
        """B against A, round by round (each pair measured back to back)."""
        med = statistics.median
        self.stdout.write(f"\nB ({' '.join(f'{k}={v}' for k, v in compare.items())}) against A, per round:")
        self.stdout.write(f"{'path':<16} {'A req/s':>8} {'B req/s':>8} {'B/A':>5} | {'web CPU ms/req A':>16} "
                          f"{'B':>5} {'B/A':>5} | {'all CPU B/A':>11}   (medians; B/A per round)")
        for name in names:
            pairs = [(a[name], b[name]) for a, b in zip(rounds_a, rounds_b, strict=True)]
            rps = [b.rps / a.rps for a, b in pairs if a.rps]
            web = [b.cpu.get("web", 0) / a.cpu["web"] for a, b in pairs if a.cpu.get("web")]
            total = [sum(b.cpu.values()) / sum(a.cpu.values()) for a, b in pairs if sum(a.cpu.values())]
            self.stdout.write(
                f"{name:<16} {med(a.rps for a, _ in pairs):>8.0f} {med(b.rps for _, b in pairs):>8.0f} "
                f"{med(rps):>5.2f} | {med(a.cpu.get('web', 0) for a, _ in pairs):>16.2f} "
                f"{med(b.cpu.get('web', 0) for _, b in pairs):>5.2f} {med(web):>5.2f} | {med(total):>11.2f}   "
                f"req/s {' '.join(f'{x:.2f}' for x in rps)}; web CPU {' '.join(f'{x:.2f}' for x in web)}")

    def _exactness(self) -> None:
        """Oversells and ledger drift, from the database, after the load (the answers are not trusted)."""
        bench = Sku.objects.filter(code__startswith=SPREAD_PREFIX)
        oversold = list(StockPosition.objects.filter(sku__in=bench, reserved__gt=F("on_hand"))
                        .values_list("sku__code", "on_hand", "reserved"))
        explained = 0
        hot = StockPosition.objects.get(sku__code=self.hot_reserve, location=self.location)
        active = ReservationLine.objects.filter(sku__code=self.hot_reserve,
                                                reservation__status=Reservation.Status.ACTIVE)
        held = active.aggregate(n=Sum("quantity"))["n"] or 0
        if held != hot.reserved:
            explained = abs(held - hot.reserved)
        codes = set(bench.values_list("code", flat=True))
        drift = [row for row in ledger_drift() if row["sku"] in codes]
        self.stdout.write(f"\noversells: {len(oversold)} positions over-reserved; hot SKU reserved {hot.reserved} "
                          f"= active holds {held}; ledger drift: {'none' if not drift else drift[:3]}")
        if oversold or explained or drift:
            raise CommandError("EXACTNESS BROKEN: oversell or ledger drift; this is a bug")
        by_status: dict[str, int] = defaultdict(int)
        for status, n in Reservation.objects.filter(lines__sku__code=self.hot_reserve).values_list("status").annotate(
                n=Sum("lines__quantity")):
            by_status[status] += n
        self.stdout.write(f"hot SKU reservations by status: {dict(by_status)}")
