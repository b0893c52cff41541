"""`./dev manage simulate_flash_sale --orders N --rate R [--chaos]`: a flash sale on every demo
marketplace at once, then the numbers.

The channel simulator (devtools/, a development tool: imported inside `handle` only) places
orders as each marketplace does: Shopify, WooCommerce, BigCommerce and Standard Webhooks send
signed order webhooks to /webhooks/<slug>/; eBay and Amazon have no order webhooks, so orders go
into the simulator's order book (POST /_sim/order-book) and are polled from their order APIs
(ingestion.polling; this command polls every half second instead of waiting for beat).

What it uses: the running `./dev up` stack when its web server (PUBLIC_BASE_URL) and simulator
(SIMULATOR_URL) answer — open the storefront and the admin and watch the numbers move — or, when
they do not (or with --standalone), its own: a web server (gunicorn, ASGI), a Celery worker and an
in-process simulator, with the demo channels pointed at it. It seeds the demo first (idempotent)
and restocks the demo SKUs so stock suffices (--no-restock to sell into scarcity: marketplaces
then stop selling what they show as sold out).

`--chaos`: meanwhile Shopify answers 429 to some pushes, WooCommerce fails some with 500s, and
BigCommerce rejects two items every time: retries show in the admin, and those two end as dead
letters (after the channel's retry attempts, about a minute) to retry from the admin. Faults are
cleared at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection, connections

ROOT = Path(__file__).resolve().parents[3]
LOCATION = "wh-main"  # demo marketplace orders are taken from here (channels.demo)
POLLED = ("ebay", "amazon")


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    """Something answers HTTP there (a 503 from /healthz still means the server runs)."""
    try:
        requests.get(url, timeout=2)
        return True
    except requests.RequestException:
        return False


class Stack:
    """The web server, worker and simulator the sale runs against (started here when needed)."""

    def __init__(self, out):
        self.out = out
        self.procs: list[subprocess.Popen] = []
        self.simulator = None  # in-process Simulator we started
        self.web_url = settings.PUBLIC_BASE_URL.rstrip("/")
        self.sim_url = settings.SIMULATOR_URL.rstrip("/")
        self.own = False
        self.stop_ticker = threading.Event()

    def _env(self) -> dict:
        s = connection.settings_dict
        env = {**os.environ, "LOG_LEVEL": "WARNING",
               "DATABASE_URL": f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT']}/{s['NAME']}"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def start(self, *, standalone: bool, simulator_class) -> None:
        from channels.demo import demo_channels_repoint

        running = (not standalone and _answers(f"{self.web_url}/healthz")
                   and _answers(f"{self.sim_url}/_sim/health"))
        if running:
            self.out(f"using the running stack: web {self.web_url}, simulator {self.sim_url}")
            return
        self.own = True
        port = _free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        env = self._env()
        self.procs.append(subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            [sys.executable, "-m", "gunicorn", "config.asgi:application", "--bind", f"127.0.0.1:{port}",
             "--worker-class", "live.worker.StocklineUvicornWorker", "--workers", "1", "--graceful-timeout", "5"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self.procs.append(subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "WARNING", "--concurrency", "2",
             "--hostname", f"flashsale-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self.simulator = simulator_class(seed=7).start()
        self.sim_url = self.simulator.url
        connections.close_all()
        deadline = time.monotonic() + 60
        while not _answers(f"{self.web_url}/healthz"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise CommandError("the web server did not start")
            time.sleep(0.3)
        moved = demo_channels_repoint(simulator_url=self.sim_url)
        self.out(f"started a web server ({self.web_url}), a Celery worker and the channel simulator "
                 f"({self.sim_url}); {moved} demo channels pointed at it")
        # No beat here: wake retries and lost wake-ups as beat would.
        threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        from celery import current_app as app  # the project's app (config), without importing config

        while not self.stop_ticker.wait(2.0):
            try:
                app.send_task("channels.sweep_pushes")
                app.send_task("ingestion.sweep")
            except Exception:  # noqa: S112 - the broker is back at the next tick
                continue

    def stop(self) -> None:
        self.stop_ticker.set()
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.simulator is not None:
            self.simulator.stop()


class Command(BaseCommand):
    help = "A flash sale on every demo marketplace at once (channel simulator), then a summary."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=200)
        parser.add_argument("--rate", type=float, default=20.0, help="orders per second, all marketplaces together")
        parser.add_argument("--chaos", action="store_true", help="some channels fail meanwhile")
        parser.add_argument("--no-restock", dest="restock", action="store_false",
                            help="sell the stock there is (marketplaces stop at what they show as sold out)")
        parser.add_argument("--standalone", action="store_true",
                            help="start an own web server, worker and simulator even if ./dev up runs")
        parser.add_argument("--timeout", type=float, default=None,
                            help="seconds to wait for everything to settle (default 60, 180 with --chaos)")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")

    def handle(self, *args, **opts):
        try:  # a development tool: not in the production image
            from devtools.simulator import Simulator
        except ImportError as exc:
            raise CommandError("simulate_flash_sale needs the channel simulator (devtools/, installed by ./dev; "
                               "it is not part of the production image).") from exc
        from inventory.demo import demo_seed

        if opts["orders"] < 1 or opts["rate"] <= 0:
            raise CommandError("--orders must be at least 1 and --rate above 0.")
        self.rng = random.Random(opts["seed"])
        self.run = int(time.time() * 10) % 10**7
        self.chaos = opts["chaos"]
        timeout = opts["timeout"] or (180.0 if self.chaos else 60.0)
        demo_seed()
        stack = Stack(self.stdout.write)
        try:
            stack.start(standalone=opts["standalone"], simulator_class=Simulator)
            self.stack = stack
            self.session = requests.Session()
            channels, skus = self._demo()
            if opts["restock"]:
                self._restock(skus, opts["orders"])
            self._wait_levels(channels, skus)
            before = self._snapshot(skus)
            if self.chaos:
                self._chaos(channels, skus, on=True)
            orders = self._sell(channels, skus, opts["orders"], opts["rate"])
            settled = self._settle(channels, orders, before, timeout)
            if self.chaos:
                self._chaos(channels, skus, on=False)
            summary = self._summary(channels, skus, orders, before, settled)
        finally:
            stack.stop()
        self._print(summary)
        if opts["json"]:
            self.stdout.write(json.dumps(summary, default=str))
        if not summary["numbers_match"] and not self.chaos:
            raise CommandError("the numbers do not match (see above)")

    # ------------------------------------------------------------------ setup
    def _demo(self):
        from channels.demo import DEMO_CHANNELS
        from channels.models import Channel, ChannelListing
        from inventory.demo import SKUS

        slugs = [slug for slug, *_rest in DEMO_CHANNELS]
        channels = list(Channel.objects.filter(slug__in=slugs, active=True).select_related("default_location"))
        if not channels:
            raise CommandError("no demo channels: run ./dev manage seed_demo")
        codes = [code for code, *_rest in SKUS]
        listings = defaultdict(dict)  # channel id -> sku code -> listing
        for listing in ChannelListing.objects.filter(channel__in=channels).select_related("sku"):
            listings[listing.channel_id][listing.sku.code] = listing
        self.listings = listings
        return channels, codes

    def _restock(self, skus: list[str], orders: int) -> None:
        """Every demo SKU gets at least `orders` units available at the warehouse orders take from."""
        from inventory import services
        from inventory.models import StockPosition

        available = {p.sku.code: p.on_hand - p.reserved for p in
                     StockPosition.objects.filter(sku__code__in=skus, location__code=LOCATION).select_related("sku")}
        topped = 0
        for code in skus:
            missing = orders - available.get(code, 0)
            if missing > 0:
                services.stock_receive(sku=code, location=LOCATION, quantity=missing,
                                       context=services.MovementContext(source="flash-sale", reference="restock"))
                topped += 1
        if topped:
            self.stdout.write(f"restocked {topped} SKUs to {orders} units at {LOCATION} (so stock suffices)")

    def _levels(self) -> dict:
        try:
            return self.session.get(f"{self.stack.sim_url}/_sim/levels", timeout=5).json().get("stores", {})
        except (requests.RequestException, ValueError):
            return {}

    def _shown(self, levels: dict, channel, code: str) -> int | None:
        listing = self.listings[channel.pk].get(code)
        if listing is None:
            return None
        return levels.get(channel.slug, {}).get("levels", {}).get(str(listing.external_id))

    def _wait_levels(self, channels, skus, timeout: float = 30.0) -> None:
        """Marketplaces sell only what they show: wait until every channel shows every SKU."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            levels = self._levels()
            if all(self._shown(levels, c, code) is not None for c in channels for code in skus
                   if code in self.listings[c.pk]):
                return
            time.sleep(0.3)
        self.stdout.write("some channels show no quantity yet; selling anyway")

    def _snapshot(self, skus: list[str]) -> dict:
        from channels.models import PushAttempt
        from ingestion.models import InboundEvent, OversellIncident
        from inventory.models import StockMovement, StockPosition

        def last_id(model) -> int:
            return model.objects.order_by("-id").values_list("id", flat=True).first() or 0

        return {
            "movement": last_id(StockMovement), "inbound": last_id(InboundEvent),
            "attempt": last_id(PushAttempt), "oversell": last_id(OversellIncident),
            "on_hand": {p.sku.code: p.on_hand for p in StockPosition.objects.filter(
                sku__code__in=skus, location__code=LOCATION).select_related("sku")},
            "at": time.time(),
        }

    def _chaos(self, channels, skus, *, on: bool) -> None:
        url = f"{self.stack.sim_url}/_sim/faults"
        kinds = {c.kind: c for c in channels}
        if not on:
            self.session.post(url, json={"clear": True}, timeout=5)
            self.stdout.write("chaos: faults cleared")
            return
        plan = []
        if "shopify" in kinds:
            plan.append({"store": kinds["shopify"].slug, "rate_limit_rate": 0.3, "retry_after": 1})
        if "woocommerce" in kinds:
            plan.append({"store": kinds["woocommerce"].slug, "error_rate": 0.4, "error_status": 500})
        if "bigcommerce" in kinds:
            channel = kinds["bigcommerce"]
            rejected = [str(self.listings[channel.pk][code].external_id) for code in skus[:2]
                        if code in self.listings[channel.pk]]
            plan.append({"store": channel.slug, "item_errors": rejected})
        for body in plan:
            self.session.post(url, json=body, timeout=5).raise_for_status()
        self.stdout.write("chaos: " + "; ".join(
            f"{b['store']}: " + ", ".join(f"{k}={v}" for k, v in b.items() if k != "store") for b in plan))

    # ------------------------------------------------------------------ the sale
    def _order_id(self, kind: str, n: int):
        """Order ids unique across runs (a marketplace never reuses one; the simulator's own
        counter restarts with it, and a repeated id would be a replay, rightly not applied)."""
        run = self.run
        if kind == "ebay":
            return f"{run:07d}-{n:05d}"
        if kind == "amazon":
            return f"{run % 1000:03d}-{run:07d}-{n:07d}"
        return run * 1_000_000 + n

    def _order(self, channel, code: str, n: int) -> dict:
        listing = self.listings[channel.pk][code]
        line = {"sku": code, "quantity": 1}
        sent_at = time.time()
        try:
            if channel.kind in POLLED:
                answer = self.session.post(f"{self.stack.sim_url}/_sim/order-book", timeout=10, json={
                    "store": channel.slug, "kind": channel.kind, "action": "create", "lines": [line],
                    "order_id": self._order_id(channel.kind, n)})
                ok = answer.status_code == 200
            else:
                attributes = {k: v for k, v in (listing.attributes or {}).items() if k in ("variant_id", "product_id")}
                answer = self.session.post(f"{self.stack.sim_url}/_sim/orders", timeout=15, json={
                    "store": channel.slug, "kind": channel.kind, "secret": channel.webhook_secret,
                    "target": f"{self.stack.web_url}/webhooks/{channel.slug}/", "location": LOCATION,
                    "order_id": self._order_id(channel.kind, n),
                    "lines": [{**line, "external_id": listing.external_id, **attributes}]})
                ok = answer.status_code == 200 and answer.json().get("status") == 200
            outcome = "accepted" if ok else f"failed ({answer.status_code}: {answer.text[:120]})"
        except requests.RequestException as exc:
            outcome = f"failed ({exc.__class__.__name__})"
        return {"channel": channel.slug, "kind": channel.kind, "sku": code, "sent_at": sent_at, "outcome": outcome}

    def _sell(self, channels, skus, count: int, rate: float) -> list[dict]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        plan = []
        for n in range(count):
            channel = channels[n % len(channels)]
            sellable = [code for code in skus if code in self.listings[channel.pk]]
            plan.append((channel, self.rng.choice(sellable)))
        polled = [c for c in channels if c.kind in POLLED]
        stop_polling = threading.Event()
        poller = threading.Thread(target=self._poll, args=(polled, stop_polling), daemon=True)
        poller.start()
        orders: list[dict] = []
        levels, levels_at = {}, 0.0
        self.stdout.write(f"flash sale: {count} orders at {rate:g}/s over {len(channels)} marketplaces "
                          f"({', '.join(sorted({c.kind for c in channels}))})")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=False) as progress, ThreadPoolExecutor(max_workers=8) as pool:
            task = progress.add_task("orders", total=count)
            futures = []

            def advance(_future) -> None:
                progress.advance(task)

            started = time.monotonic()
            for n, (channel, code) in enumerate(plan):
                wait = started + n / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if time.monotonic() - levels_at > 0.2:
                    levels, levels_at = self._levels(), time.monotonic()
                shown = self._shown(levels, channel, code)
                if shown is not None and shown < 1:  # the marketplace shows it sold out: no order
                    orders.append({"channel": channel.slug, "kind": channel.kind, "sku": code,
                                   "sent_at": time.time(), "outcome": "sold out on the channel"})
                    progress.advance(task)
                    continue
                future = pool.submit(self._order, channel, code, n)
                future.add_done_callback(advance)
                futures.append(future)
            orders += [f.result() for f in futures]
        self.polling = (poller, stop_polling)
        return orders

    def _poll(self, channels, stop: threading.Event) -> None:
        """eBay and Amazon orders: poll their order APIs every half second (beat polls less often)."""
        from ingestion.polling import channel_orders_poll

        try:
            while not stop.wait(0.5):
                for channel in channels:
                    try:
                        channel_orders_poll(channel_id=channel.pk, force=True)
                    except Exception as exc:  # one failed poll is retried at the next tick
                        self.stderr.write(f"poll {channel.slug}: {exc}")
        finally:
            close_old_connections()
            connections.close_all()

    def _settle(self, channels, orders: list[dict], before: dict, timeout: float) -> bool:
        """Wait until every accepted order is applied and every channel pushed (or dead-lettered)."""
        from channels.models import DirtyPair
        from ingestion.models import InboundEvent

        accepted = Counter(o["channel"] for o in orders if o["outcome"] == "accepted")
        ids = {c.slug: c.pk for c in channels}
        deadline = time.monotonic() + timeout
        self.stdout.write("waiting for the orders to be applied and every channel to be pushed...")
        settled = False
        try:
            while time.monotonic() < deadline:
                events = Counter(InboundEvent.objects.filter(id__gt=before["inbound"], channel_id__in=ids.values())
                                 .exclude(status=InboundEvent.Status.PENDING).values_list("channel__slug", flat=True))
                applied = all(events.get(slug, 0) >= n for slug, n in accepted.items())
                waiting = DirtyPair.objects.filter(channel_id__in=ids.values()).count()
                if applied and waiting == 0:
                    settled = True
                    break
                time.sleep(0.3)
        finally:
            poller, stop = self.polling
            stop.set()
            poller.join(timeout=30)
        if not settled:
            self.stdout.write(self.style.WARNING(f"not everything settled within {timeout:.0f} s"))
        return settled

    # ------------------------------------------------------------------ the numbers
    def _summary(self, channels, skus, orders, before, settled: bool) -> dict:
        from channels.models import DeadLetter, PushAttempt
        from channels.propagation import channel_quantities
        from ingestion.models import InboundEvent, OversellIncident
        from inventory.models import Sku, StockMovement, StockPosition

        ids = [c.pk for c in channels]
        slug_of = {c.pk: c.slug for c in channels}
        accepted = [o for o in orders if o["outcome"] == "accepted"]
        events = list(InboundEvent.objects.filter(id__gt=before["inbound"], channel_id__in=ids)
                      .values("channel_id", "status", "received_at", "processed_at"))
        by_status = Counter(e["status"] for e in events)
        receipt = {"webhook": [], "polled": []}
        kind_of = {c.pk: c.kind for c in channels}
        for e in events:
            if e["status"] == InboundEvent.Status.DONE and e["processed_at"]:
                key = "polled" if kind_of[e["channel_id"]] in POLLED else "webhook"
                receipt[key].append((e["processed_at"] - e["received_at"]).total_seconds() * 1000)
        every = receipt["webhook"] + receipt["polled"]

        sku_ids = dict(Sku.objects.filter(code__in=skus).values_list("code", "id"))
        movements = list(StockMovement.objects.filter(id__gt=before["movement"], sku_id__in=sku_ids.values(),
                                                      location__code=LOCATION)
                         .values("sku__code", "on_hand_delta", "recorded_at"))
        units_sold = -sum(m["on_hand_delta"] for m in movements if m["on_hand_delta"] < 0)
        on_hand_after = {p.sku.code: p.on_hand for p in StockPosition.objects.filter(
            sku__code__in=skus, location__code=LOCATION).select_related("sku")}
        stock_matches = all(before["on_hand"].get(code, 0) - on_hand_after.get(code, 0)
                            == -sum(m["on_hand_delta"] for m in movements if m["sku__code"] == code)
                            for code in skus)

        attempts = list(PushAttempt.objects.filter(id__gt=before["attempt"], channel_id__in=ids)
                        .values("channel_id", "outcome", "started_at", "latency_ms", "items"))
        pushes = defaultdict(Counter)
        acks = defaultdict(list)  # (channel id, sku code) -> [(started, acknowledged)]
        for a in attempts:
            pushes[slug_of[a["channel_id"]]][a["outcome"]] += 1
            for item in a["items"] or []:
                if item.get("ok"):
                    acks[(a["channel_id"], item["sku"])].append(
                        (a["started_at"], a["started_at"] + timedelta(milliseconds=a["latency_ms"])))
        propagation = []
        for m in movements:
            latest = None
            for channel in channels:
                if m["sku__code"] not in self.listings[channel.pk]:
                    continue
                after = [ack for started, ack in acks.get((channel.pk, m["sku__code"]), ())
                         if started >= m["recorded_at"]]
                if after:
                    first = min(after)
                    latest = first if latest is None or first > latest else latest
            if latest is not None:
                propagation.append((latest - m["recorded_at"]).total_seconds() * 1000)

        levels = self._levels()
        off = []
        # A pair with an open dead letter is reported there (the channel gave up on it on purpose).
        dead_pairs = set(DeadLetter.objects.filter(channel_id__in=ids, status=DeadLetter.Status.OPEN)
                         .values_list("channel_id", "sku_id"))
        for channel in channels:
            expected = channel_quantities(channel=channel, sku_ids=list(sku_ids.values()))
            for code, sku_id in sku_ids.items():
                shown = self._shown(levels, channel, code)
                if (code in self.listings[channel.pk] and shown != expected.get(sku_id)
                        and (channel.pk, sku_id) not in dead_pairs):
                    off.append(f"{channel.slug}/{code}: shows {shown}, expected {expected.get(sku_id)}")
        since = datetime.fromtimestamp(before["at"], UTC)
        dead = Counter(slug_of[d] for d in DeadLetter.objects.filter(channel_id__in=ids, created_at__gte=since)
                       .values_list("channel_id", flat=True))
        oversells = OversellIncident.objects.filter(id__gt=before["oversell"]).count()
        outcomes = Counter(o["outcome"] if not o["outcome"].startswith("failed") else "failed" for o in orders)
        numbers_match = (settled and len(accepted) == by_status.get("done", 0) == units_sold and stock_matches
                         and not off and oversells == 0)
        return {
            "orders": len(orders), "accepted": len(accepted),
            "sold_out_on_channel": outcomes.get("sold out on the channel", 0), "failed": outcomes.get("failed", 0),
            "per_channel": dict(Counter(o["channel"] for o in accepted)),
            "inbound_events": dict(by_status), "units_sold": units_sold, "oversells": oversells,
            "receipt_to_applied_ms": {"p50": _pct(every, 50), "p99": _pct(every, 99),
                                      "webhook_p50": _pct(receipt["webhook"], 50),
                                      "webhook_p99": _pct(receipt["webhook"], 99),
                                      "polled_p50": _pct(receipt["polled"], 50),
                                      "polled_p99": _pct(receipt["polled"], 99)},
            "commit_to_every_channel_ms": {"p50": _pct(propagation, 50), "p99": _pct(propagation, 99),
                                           "samples": len(propagation)},
            "pushes": {slug: dict(counter) for slug, counter in sorted(pushes.items())},
            "dead_letters": dict(dead), "channels_off": off, "stock_matches": stock_matches,
            "settled": settled, "numbers_match": numbers_match,
        }

    def _print(self, s: dict) -> None:
        w = self.stdout.write
        r, p = s["receipt_to_applied_ms"], s["commit_to_every_channel_ms"]
        w("")
        w(f"orders          {s['orders']} placed: {s['accepted']} accepted by the marketplaces' webhooks/order APIs, "
          f"{s['sold_out_on_channel']} not sold (shown sold out), {s['failed']} failed to send")
        w("per channel     " + ", ".join(f"{k} {v}" for k, v in sorted(s["per_channel"].items())))
        w(f"applied         inbound events {s['inbound_events']}; units sold {s['units_sold']}")
        w(f"oversells       {s['oversells']}")
        w(f"receipt->applied p50 {_ms(r['p50'])}, p99 {_ms(r['p99'])} (webhooks p50 {_ms(r['webhook_p50'])} "
          f"p99 {_ms(r['webhook_p99'])}; polled eBay/Amazon p50 {_ms(r['polled_p50'])} p99 {_ms(r['polled_p99'])})")
        w(f"commit->every channel p50 {_ms(p['p50'])}, p99 {_ms(p['p99'])} ({p['samples']} stock changes; first "
          "successful push started after each change, slowest channel)")
        w("pushes          " + "; ".join(f"{slug}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
                                         for slug, c in s["pushes"].items()))
        w(f"dead letters    {sum(s['dead_letters'].values())}" + (
            " (" + ", ".join(f"{k} {v}" for k, v in s["dead_letters"].items()) + "; retry them in the admin: "
            "Channels > Dead letters)" if s["dead_letters"] else ""))
        if s["channels_off"]:
            w("channels off    " + "; ".join(s["channels_off"][:10]))
        w(("numbers match   yes" if s["numbers_match"] else "numbers match   NO")
          + f" (accepted = applied = units sold, stock = before - sold, every channel shows its quantity, "
            f"0 oversells{'' if s['settled'] else '; NOT SETTLED'})")
