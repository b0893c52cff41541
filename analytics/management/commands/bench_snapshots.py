"""`./dev manage bench_snapshots`: snapshots and analytics at catalog scale.

Migrates first (a fresh data dir works), then seeds --skus SKUs x --locations locations (default
100,000 x 3) with a receipt per position and --days of back-dated sales history, all in set-based
SQL that keeps the ledger invariant (every position equals the sums of its ledger rows, version
= its row count). This is a benchmark seed, not a path the product takes: stock changes go
through inventory.services everywhere else. The seed is kept (codes BSNAP-*, locations bsnap-*);
a second run reuses it.

Then it measures, and prints:
1. a full baseline snapshot (every position) and a 5-minute snapshot after --change-fraction of
   the positions moved (goal: under 10 s), and a duplicate run in the same bucket;
2. the hourly rollup of those buckets;
3. the daily-sales refresh (full, then incremental) and the analytics endpoints over HTTP
   (Django's test client: routing, auth, selectors, JSON; no network): one SKU, fast movers,
   stockout risk, stock history;
4. the dynamic safety-stock recompute of the SKUs flagged dynamic (1 in 50).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.utils import timezone

SKU_PREFIX = "BSNAP-"
LOCATION_PREFIX = "bsnap-"


class Command(BaseCommand):
    help = "Benchmark snapshots and analytics over a large catalog (seeds it the first time)."

    def add_arguments(self, parser):
        parser.add_argument("--skus", type=int, default=100_000)
        parser.add_argument("--locations", type=int, default=3)
        parser.add_argument("--days", type=int, default=28, help="days of back-dated sales history")
        parser.add_argument("--sale-probability", type=float, default=0.05,
                            help="chance that a position sold on a given day of the history")
        parser.add_argument("--change-fraction", type=float, default=0.02,
                            help="share of positions that move between two snapshots")
        parser.add_argument("--service-changes", type=int, default=200,
                            help="of those, sales made through inventory.services (the rest in bulk SQL)")
        parser.add_argument("--repeat", type=int, default=5, help="requests per endpoint")
        parser.add_argument("--no-migrate", action="store_true")

    # ------------------------------------------------------------------ helpers

    def say(self, label: str, value: str) -> None:
        self.stdout.write(f"{label:<58} {value}")

    def timed(self, label: str, fn: Callable[[], object], note: Callable[[object], str] = str) -> float:
        started = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - started
        self.say(label, f"{elapsed:8.3f} s   {note(result)}")
        return elapsed

    def handle(self, *args, **opts):
        if not opts["no_migrate"]:
            started = time.perf_counter()
            call_command("migrate", interactive=False, verbosity=0)
            self.say("migrate", f"{time.perf_counter() - started:8.3f} s")
        from inventory.snapshots import snapshot_bucket

        self._seed(opts)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # as autovacuum would have by now on a live system
        logging.disable(logging.INFO)  # per-request and per-change lines would bury the figures
        try:
            self._baseline()
            self._snapshots(opts, snapshot_bucket)
            self._analytics(opts)
        finally:
            logging.disable(logging.NOTSET)

    def _baseline(self) -> None:
        """What this machine does right now with plain statements: read the figures against these
        (the machine is shared; absolute numbers move with its load)."""
        from inventory.models import StockPosition

        with connection.cursor() as cursor:
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                cursor.execute("SELECT COUNT(*), SUM(on_hand) FROM inventory_stockposition")
                cursor.fetchall()
                timings.append(time.perf_counter() - started)
        self.say("baseline: full scan of the positions (median of 5)",
                 f"{statistics.median(timings) * 1000:8.1f} ms  ({StockPosition.objects.count()} rows)")

    # ------------------------------------------------------------------ seed

    def _seed(self, opts) -> None:
        from inventory.models import Location, Sku
        from inventory.services import location_create

        for i in range(1, opts["locations"] + 1):
            code = f"{LOCATION_PREFIX}{i}"
            if not Location.objects.filter(code=code).exists():
                location_create(code=code, name=f"Bench location {i}")
        have = Sku.objects.filter(code__startswith=SKU_PREFIX).count()
        if have >= opts["skus"]:
            self.say("seed", f"reused: {have} SKUs")
            return
        now = timezone.now()
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("""
                INSERT INTO inventory_sku (code, name, safety_stock, active, lead_time_days, reorder_point,
                                           dynamic_safety_stock, created_at, updated_at)
                SELECT %(prefix)s || lpad(g::text, 6, '0'), 'Bench product ' || g, 0, true, 3 + g %% 12, NULL,
                       g %% 50 = 0, %(created)s, %(created)s
                FROM generate_series(1, %(n)s) g
                ON CONFLICT (code) DO NOTHING
            """, {"prefix": SKU_PREFIX, "n": opts["skus"], "created": now - timedelta(days=60)})
            cursor.execute("""
                INSERT INTO inventory_stockposition (sku_id, location_id, on_hand, reserved, version, updated_at)
                SELECT s.id, l.id, 0, 0, 0, %(now)s
                FROM inventory_sku s CROSS JOIN inventory_location l
                WHERE s.code LIKE %(sku_like)s AND l.code LIKE %(location_like)s
                ON CONFLICT (sku_id, location_id) DO NOTHING
            """, {"now": now, "sku_like": SKU_PREFIX + "%", "location_like": LOCATION_PREFIX + "%"})
            positions = cursor.rowcount
            # A receipt 40 days ago, then sales on random days: on_hand_after is the running sum,
            # recorded_at = occurred_at (as if recorded when it happened).
            cursor.execute("""
                WITH p AS (
                    SELECT p.id, p.sku_id, p.location_id FROM inventory_stockposition p
                    JOIN inventory_sku s ON s.id = p.sku_id
                    WHERE p.version = 0 AND s.code LIKE %(sku_like)s
                ), events AS (
                    SELECT p.id AS position_id, p.sku_id, p.location_id, 'receipt' AS type, 500 AS delta,
                           %(start)s::timestamptz AS at
                    FROM p
                    UNION ALL
                    SELECT p.id, p.sku_id, p.location_id, 'sale', -(1 + floor(random() * 3))::int,
                           %(today)s::timestamptz - d * interval '1 day' + random() * interval '1 day'
                    FROM p CROSS JOIN generate_series(1, %(days)s) d
                    WHERE random() < %(probability)s
                )
                INSERT INTO inventory_stockmovement (position_id, sku_id, location_id, type, on_hand_delta,
                    reserved_delta, on_hand_after, reserved_after, source, reference, event_key, actor,
                    occurred_at, recorded_at, metadata, reservation_id)
                SELECT position_id, sku_id, location_id, type, delta, 0,
                       SUM(delta) OVER (PARTITION BY position_id ORDER BY at ROWS UNBOUNDED PRECEDING), 0,
                       'bench', '', NULL, 'bench_snapshots', at, at, '{}'::jsonb, NULL
                FROM events ORDER BY position_id, at
            """, {"sku_like": SKU_PREFIX + "%", "start": now - timedelta(days=40), "today": today,
                  "days": opts["days"], "probability": opts["sale_probability"]})
            movements = cursor.rowcount
            # One SKU in 20 was counted down to 0 or 1 unit per location an hour ago, so the
            # stockout-risk list has something to rank.
            cursor.execute("""
                INSERT INTO inventory_stockmovement (position_id, sku_id, location_id, type, on_hand_delta,
                    reserved_delta, on_hand_after, reserved_after, source, reference, event_key, actor,
                    occurred_at, recorded_at, metadata, reservation_id)
                SELECT m.position_id, m.sku_id, m.location_id, 'count', m.position_id %% 2 - SUM(m.on_hand_delta), 0,
                       m.position_id %% 2, 0, 'bench', '', NULL, 'bench_snapshots', %(at)s, %(at)s, '{}'::jsonb, NULL
                FROM inventory_stockmovement m
                JOIN inventory_stockposition p ON p.id = m.position_id
                WHERE p.version = 0 AND m.sku_id %% 20 = 0 AND m.source = 'bench'
                GROUP BY m.position_id, m.sku_id, m.location_id
            """, {"at": now - timedelta(hours=1)})
            movements += cursor.rowcount
            cursor.execute("""
                UPDATE inventory_stockposition p SET on_hand = m.total, version = m.rows
                FROM (SELECT m.position_id, SUM(m.on_hand_delta) AS total, COUNT(*) AS rows
                      FROM inventory_stockmovement m
                      WHERE m.position_id IN (SELECT p.id FROM inventory_stockposition p
                                              JOIN inventory_sku s ON s.id = p.sku_id
                                              WHERE p.version = 0 AND s.code LIKE %(sku_like)s)
                      GROUP BY m.position_id) m
                WHERE p.id = m.position_id
            """, {"sku_like": SKU_PREFIX + "%"})
        self.say("seed (SQL, ledger invariant kept)",
                 f"{time.perf_counter() - started:8.3f} s   {positions} positions, {movements} ledger rows")

    def _change(self, fraction: float, service_changes: int) -> tuple[int, int]:
        """Move `fraction` of the bench positions by one sale each: some through the service, the
        rest with one set-based statement writing ledger rows and counters together."""
        from inventory.models import StockPosition
        from inventory.services import MovementContext, stock_sell

        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM inventory_stockposition p JOIN inventory_location l "
                           "ON l.id = p.location_id WHERE l.code LIKE %s", [LOCATION_PREFIX + "%"])
            total = cursor.fetchone()[0]
        wanted = int(total * fraction)
        through_service = min(service_changes, wanted)
        chosen = list(StockPosition.objects.filter(location__code__startswith=LOCATION_PREFIX, on_hand__gt=5)
                      .select_related("sku", "location").order_by("?")[:through_service])
        started = time.perf_counter()
        for position in chosen:
            stock_sell(sku=position.sku, location=position.location, quantity=1,
                       context=MovementContext(source="bench", actor="bench_snapshots"))
        per_call = (time.perf_counter() - started) / max(len(chosen), 1)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("""
                WITH chosen AS (
                    SELECT p.id FROM inventory_stockposition p JOIN inventory_location l ON l.id = p.location_id
                    WHERE l.code LIKE %(location_like)s AND p.on_hand - p.reserved > 0
                    ORDER BY random() LIMIT %(n)s
                ), moved AS (
                    UPDATE inventory_stockposition p SET on_hand = p.on_hand - 1, version = p.version + 1,
                                                         updated_at = now()
                    FROM chosen c WHERE p.id = c.id
                    RETURNING p.id, p.sku_id, p.location_id, p.on_hand, p.reserved
                )
                INSERT INTO inventory_stockmovement (position_id, sku_id, location_id, type, on_hand_delta,
                    reserved_delta, on_hand_after, reserved_after, source, reference, event_key, actor,
                    occurred_at, recorded_at, metadata, reservation_id)
                SELECT id, sku_id, location_id, 'sale', -1, 0, on_hand, reserved, 'bench', '', NULL,
                       'bench_snapshots', now(), now(), '{}'::jsonb, NULL
                FROM moved
            """, {"location_like": LOCATION_PREFIX + "%", "n": wanted - len(chosen)})
        if chosen:
            self.say("  stock_sell through the service (per call)", f"{per_call * 1000:8.1f} ms  ({len(chosen)} calls)")
        return wanted, total

    # ------------------------------------------------------------------ snapshots

    def _snapshots(self, opts, snapshot_bucket) -> None:
        from inventory.models import SnapshotRun
        from inventory.services import snapshot_rollup, snapshot_take

        last = SnapshotRun.objects.order_by("-bucket").values_list("bucket", flat=True).first()
        base = snapshot_bucket(timezone.now())
        if last is not None and last >= base:
            base = last + timedelta(minutes=5)
        self.timed("snapshot: full baseline (every position)",
                   lambda: snapshot_take(now=base, baseline=True), lambda n: f"{n} rows")
        changed, total = self._change(opts["change_fraction"], opts["service_changes"])
        self.say("changed positions before the next bucket", f"{changed} of {total}")
        five = self.timed("snapshot: 5-minute run (changed positions only)",
                          lambda: snapshot_take(now=base + timedelta(minutes=5), baseline=False),
                          lambda n: f"{n} rows")
        self.say("  goal: under 10 s", "met" if five < 10 else "NOT MET")
        self.timed("snapshot: duplicate run in the same bucket",
                   lambda: snapshot_take(now=base + timedelta(minutes=5, seconds=30), baseline=False),
                   lambda n: f"{n} rows")
        self.timed("snapshot: 5-minute run, nothing moved",
                   lambda: snapshot_take(now=base + timedelta(minutes=10), baseline=False), lambda n: f"{n} rows")
        self.timed("rollup of those hours (baseline included)",
                   lambda: snapshot_rollup(now=base + timedelta(hours=2)), lambda n: f"{n} hourly rows")
        self._base = base

    # ------------------------------------------------------------------ analytics

    def _analytics(self, opts) -> None:
        from rest_framework.test import APIClient

        from analytics.models import JobMark
        from analytics.services import daily_sales_refresh, safety_stock_recompute
        from core.auth import api_key_create
        from inventory.models import Sku

        first = not JobMark.objects.filter(name="daily_sales").exists()
        self.timed(f"daily sales refresh ({'full, first run' if first else 'incremental'})",
                   daily_sales_refresh, lambda n: f"{n} SKU-days")
        self._change(0.002, 0)
        self.timed("daily sales refresh (incremental)",
                   lambda: daily_sales_refresh(now=timezone.now() + timedelta(minutes=11)),
                   lambda n: f"{n} SKU-days")

        key, plaintext = api_key_create(name="bench_snapshots", scopes=["stock:read"])
        client = APIClient(SERVER_NAME="localhost")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        codes = list(Sku.objects.filter(code__startswith=SKU_PREFIX).order_by("?").values_list("code", flat=True)[:20])
        base = self._base
        window = {"from": (base - timedelta(hours=1)).isoformat(), "to": (base + timedelta(hours=1)).isoformat()}
        try:
            for label, url, params in [
                ("GET /analytics/skus/{sku}/", "/api/v1/analytics/skus/{code}/", None),
                ("GET /analytics/fast-movers/?days=7&limit=20", "/api/v1/analytics/fast-movers/",
                 {"days": 7, "limit": 20}),
                ("GET /analytics/fast-movers/?days=28&limit=20", "/api/v1/analytics/fast-movers/",
                 {"days": 28, "limit": 20}),
                ("GET /analytics/stockout-risk/?limit=50", "/api/v1/analytics/stockout-risk/", {"limit": 50}),
                ("GET /stock/{sku}/history/ (the bench's 2 h)", "/api/v1/stock/{code}/history/", window),
                ("GET /stock/{sku}/history/ (default 24 h)", "/api/v1/stock/{code}/history/", None),
            ]:
                timings, sizes = [], []
                for i in range(opts["repeat"]):
                    started = time.perf_counter()
                    response = client.get(url.format(code=codes[i % len(codes)]), params)
                    timings.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.content[:500]
                    body = response.json()
                    sizes.append(len(body.get("results", body.get("points", [1]))))
                self.say(label, f"{statistics.median(timings) * 1000:8.1f} ms median, "
                                f"{max(timings) * 1000:.1f} ms max ({sizes[0]} items)")
        finally:
            key.delete()
        dynamic = Sku.objects.filter(code__startswith=SKU_PREFIX, dynamic_safety_stock=True).count()
        self.timed(f"dynamic safety stock recompute ({dynamic} SKUs)",
                   lambda: safety_stock_recompute(force=True), lambda n: f"{n} changed (re-pushed)")
