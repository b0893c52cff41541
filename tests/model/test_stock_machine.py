"""Model-based test of stock, reservations, the waitlist and propagation, over the real services
and the real PostgreSQL (no mocks).

A `RuleBasedStateMachine` calls inventory.services and reservations.services in random order on
three SKUs, two bundles made of them and three locations, and keeps a tiny model beside them:
on_hand per position, every reservation's status, hold lines and deadline, which locations are
active. After every step the database must equal the model, and the ledger invariants must hold
(tests/model/checks.py). Waitlist activation is predicted with the documented
first-come-first-served rule; the periodic sweep is checked for safety (never holds more than was
available) and liveness (the first waiting reservation is not left waiting while it could be filled).

Bundles (contract section 4, "Bundles"; inventory.bundles) hold no stock: the model derives a
bundle's numbers at each location from its components (min over them of floor(units / units per
bundle)), predicts a bundle sale (all or nothing, components only), and allocates bundle request
lines as reservations.allocation does: whole bundles from one location at a time, held per
component and keyed by the bundle, competing with plain lines of the same component in merged
request order. The derived read (inventory.selectors.stock_get) must equal the model's derivation.

Channels (one Shopify-kind with no location list, one webhook-kind fed by one location) list every
SKU and bundle and point at the channel simulator; a rule pushes them and compares what each
channel was last told, what the service computes now, what the model computes, and what the
simulator stores (invariant 7).

Sales also come over HTTP with an Idempotency-Key from a small pool (`sell_over_http_with_a_key`):
a key used again with the same body must replay the first answer byte for byte, with another body
answer 422, and neither may change stock (the claim inside the one-statement sale gates it).

Each hypothesis example works in its own namespace (codes prefixed with a fresh random prefix),
so examples share one database without a flush and every check looks only at its own rows.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from core.errors import DomainError
from inventory.models import Location, StockMovement
from tests.model import checks
from tests.model.conftest import model_settings

N_SKUS = 3
# Bundles, by item index (after the SKUs): {component SKU index: units of it per bundle unit}.
# Items 0..N_SKUS-1 are plain SKUs, the rest bundles: request lines and channel listings name items.
BUNDLES: dict[int, dict[int, int]] = {N_SKUS: {0: 2, 1: 1}, N_SKUS + 1: {1: 1, 2: 3}}
N_LOCATIONS = 3  # location j has priority 10 * (j + 1): unlocated holds draw from l0, then l1, then l2
TTLS = [600, 3600, 7200]  # never shorter: nothing may expire in real time while an example runs

# The documented rule (docs/reservations.md, "Allocation"): a channel's eligible locations are its
# `locations` that are active; only a channel with *no* location list (or no channel) draws from
# every active location. So a channel whose listed locations are all inactive can reserve nothing
# (and channel_quantities shows it 0). Set to False to model the fallback the code has today
# (reservations.allocation.eligible_locations falls back to every active location).
LISTED_CHANNEL_WITHOUT_ACTIVE_LOCATION_RESERVES_NOTHING = True

# name -> (kind, listed locations (None = every active one), buffer type, buffer value)
CHANNELS = {
    "all": ("shopify", None, "units", 1),
    "one": ("webhook", [0], "percent", 10),
}
SAFETY_STOCK = {0: 1, N_SKUS + 1: 1}  # SKU 0 and the second bundle keep one unit back from channels


@dataclass
class Res:
    """The model of one reservation."""

    seq: int
    status: str  # active, waiting, committed, released, expired
    channel: str | None
    order_ref: str
    ttl: int
    request: list[tuple[int, int | None, int]]  # merged request lines (item, location or None, quantity)
    # While active (and after): {(SKU, location, bundle item or None): units}, one per reservation line.
    holds: dict[tuple[int, int, int | None], int] = field(default_factory=dict)
    expires_at: datetime | None = None
    created_at: datetime | None = None


def merge(lines) -> list[tuple[int, int | None, int]]:
    """reservations.allocation.lines_merge: same (item, location) summed, first-appearance order."""
    totals: dict = {}
    for sku, loc, qty in lines:
        totals[(sku, loc)] = totals.get((sku, loc), 0) + qty
    return [(sku, loc, qty) for (sku, loc), qty in totals.items()]


def stock_skus(items: Iterable[int]) -> set[int]:
    """reservations.allocation.stock_sku_ids: the SKUs holding the stock of these items (a
    bundle's components, any other SKU itself): what a waiting request is queued on."""
    return {sku for item in items for sku in BUNDLES.get(item, {item: 1})}


def bundle_units(item: int, units: Mapping[int, int]) -> int:
    """Whole bundles that `units` ({component: units at one location}) make (inventory.bundles)."""
    return min(max(units.get(sku, 0), 0) // per for sku, per in BUNDLES[item].items())


def per_position(holds: Mapping[tuple, int]) -> dict[tuple[int, int], int]:
    """{(SKU, location): units} from holds keyed (SKU, location, bundle)."""
    total: dict = {}
    for (sku, loc, *_), qty in holds.items():
        total[(sku, loc)] = total.get((sku, loc), 0) + qty
    return total


def allocate(request, available: dict, eligible: list[int]) -> tuple[dict, list[int]]:
    """The documented allocation (reservations.allocation.allocate): located lines first, then
    unlocated lines in eligible order, splitting; all or nothing. A bundle line draws whole bundles
    from one location at a time (min over its components of floor(units left / units per bundle))
    and holds each component's share there, apart from plain lines (keyed by the bundle); every line
    takes from what the lines before it (merged request order, located first) left.
    Returns (holds {(sku, loc, bundle or None): qty}, short items in the order they fell short)."""
    remaining = dict(available)
    holds: dict = {}
    short: list[int] = []

    def drawable(item: int, loc: int) -> int:
        if item in BUNDLES:
            return bundle_units(item, {sku: remaining.get((sku, loc), 0) for sku in BUNDLES[item]})
        return remaining.get((item, loc), 0)

    for item, loc, qty in sorted(request, key=lambda line: line[1] is None):
        need = qty
        bundle = item if item in BUNDLES else None
        for candidate in ([loc] if loc is not None else eligible):
            take = min(need, drawable(item, candidate))
            if take <= 0:
                continue
            for sku, per in BUNDLES.get(item, {item: 1}).items():
                holds[(sku, candidate, bundle)] = holds.get((sku, candidate, bundle), 0) + take * per
                remaining[(sku, candidate)] -= take * per
            need -= take
        if need > 0 and item not in short:
            short.append(item)
    return ({} if short else holds), short


def buffered(available: int, safety: int, buffer_type: str, value: int) -> int:
    base = max(available - safety, 0)
    held = math.ceil(base * value / 100) if buffer_type == "percent" else value
    return max(base - held, 0)


sku_index = st.integers(0, N_SKUS - 1)
bundle_index = st.sampled_from(sorted(BUNDLES))
location_index = st.integers(0, N_LOCATIONS - 1)
request_line = st.tuples(sku_index, st.one_of(st.none(), location_index), st.integers(1, 8))
# A bundle unit takes two or three units of a component: smaller quantities, so many succeed.
bundle_line = st.tuples(bundle_index, st.one_of(st.none(), location_index), st.integers(1, 2))
component_line = st.tuples(sku_index, st.one_of(st.none(), location_index), st.integers(1, 4))


@st.composite
def bundle_request(draw) -> list[tuple[int, int | None, int]]:
    """At least one bundle line, among up to two more lines of bundles or plain SKUs (every SKU
    is a component of some bundle), in any order."""
    lines = draw(st.lists(st.one_of(component_line, bundle_line), max_size=2))
    lines.insert(draw(st.integers(0, len(lines))), draw(bundle_line))
    return lines


class StockMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self, simulator=None):
        super().__init__()
        from channels.ratelimit import ratelimit_reset, redis_client
        from channels.services import channel_create, listing_upsert
        from inventory.services import location_create, sku_create

        self.simulator = simulator
        self.ns = f"m{uuid.uuid4().hex[:10]}"
        self.skus = [sku_create(code=f"{self.ns}-S{i}", name=f"SKU {i}", safety_stock=SAFETY_STOCK.get(i, 0))
                     for i in range(N_SKUS)]
        self.kits = [sku_create(code=f"{self.ns}-B{item}", name=f"Bundle {item}",
                                safety_stock=SAFETY_STOCK.get(item, 0),
                                components=[{"sku": self.skus[sku].code, "quantity": per}
                                            for sku, per in parts.items()])
                     for item, parts in BUNDLES.items()]
        self.items = self.skus + self.kits  # item index -> Sku (plain SKUs first, then bundles)
        self.locations = [location_create(code=f"{self.ns}-l{j}", name=f"Location {j}", priority=10 * (j + 1))
                          for j in range(N_LOCATIONS)]
        self.sku_ids = [s.pk for s in self.skus]  # the SKUs that hold stock (positions, ledger)
        self.bundle_ids = [s.pk for s in self.kits]
        self.sku_of = {s.pk: i for i, s in enumerate(self.items)}
        self.loc_of = {loc.pk: j for j, loc in enumerate(self.locations)}
        self.first_movement = StockMovement.objects.order_by("-id").values_list("id", flat=True).first() or 0
        # model
        self.on_hand: dict[tuple[int, int], int] = {}
        self.existing: set[tuple[int, int]] = set()  # positions created by a committed stock change
        self.active_location = [True] * N_LOCATIONS
        self.res: dict[str, Res] = {}
        self.seq = 0
        self.clean = True  # False while a step is running or after one failed
        from rest_framework.test import APIClient

        from core.auth import api_key_create

        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name=self.ns, scopes=['stock:write'])[1]}")
        self.keys: dict[str, tuple[dict, int, bytes]] = {}  # Idempotency-Key -> (body, status, answer)
        self.channels = {}
        if simulator is not None:
            for name, (kind, listed, buffer_type, buffer_value) in CHANNELS.items():
                slug = f"{self.ns}-{name}"
                settings_ = {"location_id": 7001, "api_version": "2024-01"} if kind == "shopify" else \
                    {"target_url": f"{simulator.store_url(slug)}/hooks/stock"}
                credentials = {"access_token": "shpat_x"} if kind == "shopify" else {}
                channel = channel_create(slug=slug, name=slug, kind=kind, base_url=simulator.store_url(slug),
                                         credentials=credentials, settings=settings_, push_enabled=True,
                                         rate_limit_per_second=1000.0, rate_limit_burst=1000,
                                         buffer={"type": buffer_type, "value": buffer_value},
                                         locations=[self.locations[j] for j in listed or []])
                ratelimit_reset(channel_id=channel.pk)
                redis_client().delete(f"stockline:push-lock:{channel.pk}")
                for i, sku in enumerate(self.items):  # bundles listed too: pushed their derived quantity
                    external = f"4400{i}" if kind == "shopify" else sku.code
                    listing_upsert(channel=channel, sku=sku.code, external_id=external)
                self.channels[name] = channel

    # ------------------------------------------------------------------ model helpers

    def reserved(self) -> dict[tuple[int, int], int]:
        held: dict = {}
        for r in self.res.values():
            if r.status == "active":
                for key, qty in per_position(r.holds).items():
                    held[key] = held.get(key, 0) + qty
        return held

    def available(self) -> dict[tuple[int, int], int]:
        reserved = self.reserved()
        return {key: max(self.on_hand.get(key, 0) - reserved.get(key, 0), 0)
                for key in self.existing}

    def eligible(self, channel: str | None) -> list[int]:
        listed = CHANNELS[channel][1] if channel else None
        active = [j for j in range(N_LOCATIONS) if self.active_location[j]]
        if listed is None:
            return active
        mine = [j for j in active if j in listed]
        if mine or LISTED_CHANNEL_WITHOUT_ACTIVE_LOCATION_RESERVES_NOTHING:
            return mine
        return active

    @staticmethod
    def listed_but_inactive_channel(channel, active_location) -> bool:
        listed = CHANNELS[channel][1] if channel else None
        return bool(listed) and not any(active_location[j] for j in listed)

    def listed_but_inactive(self, channel: str | None) -> bool:
        return self.listed_but_inactive_channel(channel, self.active_location)

    def live_order_refs(self) -> set[tuple[str | None, str]]:
        return {(r.channel, r.order_ref) for r in self.res.values()
                if r.status in ("active", "waiting") and r.order_ref}

    def waiting_in_order(self) -> list[str]:
        return [rid for rid, r in sorted(self.res.items(), key=lambda item: item[1].seq) if r.status == "waiting"]

    def activate_model(self, sku_ids: set[int]) -> list[str]:
        """The waitlist pass run inside a transaction that raised availability of `sku_ids`
        (reservations.waitlist._activate): first come, first served per SKU; a waiting
        reservation short of a SKU blocks later ones on that SKU only. A bundle line waits on (and
        blocks) its components. Returns activated ids."""
        blocked: set[int] = set()
        activated = []
        for rid in self.waiting_in_order():
            if sku_ids <= blocked:
                break
            r = self.res[rid]
            needs = stock_skus(item for item, _, _ in r.request)
            if not needs & (sku_ids - blocked) or needs & blocked:
                continue
            holds, short = allocate(r.request, self.available(), self.eligible(r.channel))
            if short:
                blocked |= stock_skus(short)
                continue
            r.status, r.holds = "active", holds
            activated.append(rid)
        return activated

    def feasible(self, r: Res) -> bool:
        """Could this waiting reservation be filled now (named locations must be active)?"""
        if any(loc is not None and not self.active_location[loc] for _, loc, _ in r.request):
            return False
        return not allocate(r.request, self.available(), self.eligible(r.channel))[1]

    def code(self, i: int, j: int | None, bundle: int | None = None) -> str:
        held_for = f" (for {self.items[bundle].code})" if bundle is not None else ""
        return f"{self.items[i].code}@{self.locations[j].code if j is not None else '*'}{held_for}"

    def lines_of(self, lines) -> dict[tuple[int, int | None, int | None], int]:
        """Reservation lines as {(item, location or None, bundle item or None): quantity}."""
        return {(self.sku_of[ln.sku_id], self.loc_of.get(ln.location_id), self.sku_of.get(ln.bundle_id)): ln.quantity
                for ln in lines}

    def units_by_item(self, holds: dict, rid: str) -> dict[tuple[int, int], int]:
        """{(item, location): units} a reservation's holds give; every bundle's units at a location
        must be held as whole bundles (each component in its proportion)."""
        drawn: dict = {}
        parts: dict = {}
        for (sku, loc, bundle), qty in holds.items():
            if bundle is None:
                drawn[(sku, loc)] = drawn.get((sku, loc), 0) + qty
            else:
                parts.setdefault((bundle, loc), {})[sku] = qty
        for (bundle, loc), held in parts.items():
            per_component = {sku: divmod(held.get(sku, 0), per) for sku, per in BUNDLES[bundle].items()}
            assert set(held) == set(BUNDLES[bundle]) and not any(rest for _, rest in per_component.values()) \
                and len({n for n, _ in per_component.values()}) == 1, (
                f"{self.describe(rid)} holds {self.show(holds)}: not whole bundles of {self.items[bundle].code} "
                f"at {self.locations[loc].code}")
            drawn[(bundle, loc)] = next(iter(per_component.values()))[0]
        return drawn

    # ------------------------------------------------------------------ step bookkeeping

    def begin(self):
        self.clean = False

    def sync_waitlist(self, expected: list[str], *, now: datetime | None = None):
        """Compare the reservations the model activated with those the database activated."""
        from reservations.models import Reservation

        watched = [rid for rid, r in self.res.items() if r.status == "waiting" or rid in expected]
        if not watched:
            return
        db = {str(r.pk): r for r in Reservation.objects.filter(pk__in=watched).prefetch_related("lines")}
        got = sorted(rid for rid in watched if db[rid].status != "waiting")
        wrong_status = {rid: db[rid].status for rid in got if db[rid].status != "active"}
        assert not wrong_status, f"waiting reservations left the queue as {wrong_status}, not 'active'"
        if any(self.listed_but_inactive(self.res[rid].channel) for rid in watched):
            assert got == sorted(expected), (  # the documented eligibility rule, reported on its own
                f"waitlist activation with a channel whose listed locations are all inactive: model activated "
                f"{[self.describe(rid) for rid in expected]}, database {[self.describe(rid) for rid in got]}")
        assert got == sorted(expected), (
            f"waitlist activation: model activated {[self.describe(rid) for rid in expected]}, "
            f"database activated {[self.describe(rid) for rid in got]}")
        for rid in expected:
            lines = self.lines_of(db[rid].lines.all())
            assert lines == self.res[rid].holds, (
                f"activated {self.describe(rid)} holds {self.show(lines)}, model {self.show(self.res[rid].holds)}")
            self.res[rid].expires_at = db[rid].expires_at

    def describe(self, rid: str) -> str:
        r = self.res[rid]
        request = ", ".join(f"{qty}x{self.code(sku, loc)}" for sku, loc, qty in r.request)
        return f"#{r.seq}[{request}; channel={r.channel}]"

    def show(self, holds: dict) -> dict:
        return {self.code(*key): qty for key, qty in sorted(holds.items(), key=str)}

    def stock_changed(self, rose: set[int]):
        """After a committed stock change that raised availability of the SKUs `rose`."""
        expected = self.activate_model(rose) if rose else []
        self.sync_waitlist(expected)

    # ------------------------------------------------------------------ stock rules

    @initialize(stock=st.lists(st.integers(0, 8), min_size=N_SKUS * N_LOCATIONS, max_size=N_SKUS * N_LOCATIONS))
    def initial_stock(self, stock):
        """Some stock everywhere to start with, so holds and sales succeed early."""
        self.begin()
        for n, quantity in enumerate(stock):
            if quantity:
                i, j = divmod(n, N_LOCATIONS)
                self._adjust(i, j, "receipt", quantity)
                self.on_hand[(i, j)] = quantity
                self.existing.add((i, j))

    def _adjust(self, i: int, j: int, type: str, quantity: int, *, to: int | None = None,
                expected_version: int | None = None):
        from inventory.services import stock_adjust

        return stock_adjust(sku=self.items[i].code, location=self.locations[j].code, type=type, quantity=quantity,
                            to_location=self.locations[to].code if to is not None else None,
                            expected_version=expected_version)

    @rule(i=sku_index, j=location_index, quantity=st.integers(1, 20), type=st.sampled_from(["receipt", "return"]))
    def receive(self, i, j, quantity, type):
        self.begin()
        self._adjust(i, j, type, quantity)
        self.on_hand[(i, j)] = self.on_hand.get((i, j), 0) + quantity
        self.existing.add((i, j))
        self.stock_changed({i})

    @rule(i=sku_index, j=location_index, quantity=st.integers(1, 10))
    def sell(self, i, j, quantity):
        self.begin()
        can = quantity <= self.available().get((i, j), 0)
        try:
            self._adjust(i, j, "sale", quantity)
        except DomainError as exc:
            assert not can and exc.code == "insufficient_stock", f"sale of {quantity} refused: {exc.code}"
            return self.stock_changed(set())
        assert can, f"sale of {quantity} at {self.code(i, j)} accepted beyond available {self.available()}"
        self.on_hand[(i, j)] -= quantity
        self.stock_changed(set())

    @rule(i=sku_index, j=location_index, quantity=st.integers(1, 10), slot=st.integers(0, 3))
    def sell_over_http_with_a_key(self, i, j, quantity, slot):
        """POST /api/v1/stock/adjustments/ with an Idempotency-Key from a small pool, so keys come
        back with the same body (a replay: the first answer byte for byte, nothing changed) or
        another one (422, nothing changed). A new key sells as `sell` does; its one statement
        inserts the claim (core.idempotency), its refusals take the general path."""
        self.begin()
        body = {"sku": self.items[i].code, "location": self.locations[j].code, "type": "sale", "quantity": quantity}
        key = f"{self.ns}-sale-{slot}"
        response = self.api.post("/api/v1/stock/adjustments/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        first = self.keys.get(key)
        if first is not None:
            if first[0] == body:
                assert (response.status_code, response.content) == first[1:], (
                    f"replay of {key}: {response.status_code} {response.content!r}, first {first[1:]}")
                assert response["Idempotent-Replayed"] == "true"
            else:
                assert response.status_code == 422 and response.json()["error"] == "idempotency_key_reused", (
                    f"{key} reused with another body: {response.status_code} {response.content!r}")
            return self.stock_changed(set())
        can = quantity <= self.available().get((i, j), 0)
        self.keys[key] = (body, response.status_code, response.content)
        if not can:
            assert response.status_code == 409 and response.json()["error"] == "insufficient_stock", (
                f"sale of {quantity} at {self.code(i, j)} over HTTP: {response.status_code} {response.content!r}")
            return self.stock_changed(set())
        assert response.status_code == 201, (
            f"sale of {quantity} at {self.code(i, j)} over HTTP refused: {response.status_code} {response.content!r}")
        self.on_hand[(i, j)] -= quantity
        self.stock_changed(set())

    @rule(i=sku_index, j=location_index, delta=st.integers(-10, 10).filter(bool),
          version=st.sampled_from([None, None, "current", "stale"]))
    def adjust(self, i, j, delta, version):
        from inventory.models import StockPosition

        self.begin()
        expected_version = None
        if version is not None:
            current = StockPosition.objects.filter(sku=self.skus[i], location=self.locations[j]).values_list(
                "version", flat=True).first() or 0
            expected_version = current if version == "current" else current + 1
        refusal = None
        if version == "stale":
            refusal = "version_conflict"
        elif self.on_hand.get((i, j), 0) + delta < 0:
            refusal = "insufficient_stock"
        try:
            self._adjust(i, j, "adjustment", delta, expected_version=expected_version)
        except DomainError as exc:
            assert exc.code == refusal, f"adjustment {delta:+d} at {self.code(i, j)} refused with {exc.code}"
            return self.stock_changed(set())
        assert refusal is None, f"adjustment {delta:+d} at {self.code(i, j)} accepted, expected {refusal}"
        self.on_hand[(i, j)] = self.on_hand.get((i, j), 0) + delta
        self.existing.add((i, j))
        self.stock_changed({i} if delta > 0 else set())

    @rule(i=sku_index, j=location_index, quantity=st.integers(0, 15))
    def count(self, i, j, quantity):
        self.begin()
        self._adjust(i, j, "count", quantity)
        before = self.on_hand.get((i, j), 0)
        self.on_hand[(i, j)] = quantity
        self.existing.add((i, j))
        self.stock_changed({i} if quantity > before else set())

    @rule(i=sku_index, j=location_index, to=location_index, quantity=st.integers(1, 10))
    def transfer(self, i, j, to, quantity):
        self.begin()
        refusal = "invalid_to_location" if to == j else (
            "insufficient_stock" if quantity > self.available().get((i, j), 0) else None)
        try:
            self._adjust(i, j, "transfer", quantity, to=to)
        except DomainError as exc:
            assert exc.code == refusal, f"transfer {quantity} {self.code(i, j)}->{to} refused with {exc.code}"
            return self.stock_changed(set())
        assert refusal is None, f"transfer {quantity} {self.code(i, j)}->{to} accepted, expected {refusal}"
        self.on_hand[(i, j)] -= quantity
        self.on_hand[(i, to)] = self.on_hand.get((i, to), 0) + quantity
        self.existing |= {(i, j), (i, to)}
        self.stock_changed({i})

    @rule(i=sku_index, j=location_index, type=st.sampled_from(["sale", "receipt", "count", "adjustment", "swap"]),
          quantity=st.sampled_from([0, -1, 10**9 + 1, 10**30]))
    def refused_adjustment(self, i, j, type, quantity):
        """Out-of-range quantities and unknown types are refused before anything changes."""
        from core.errors import ValidationFailed

        self.begin()
        if type == "count" and quantity == 0 or type == "adjustment" and quantity == -1:
            return self.stock_changed(set())  # valid, covered by the rules above
        with pytest.raises(ValidationFailed):
            self._adjust(i, j, type, quantity)
        self.stock_changed(set())

    # ------------------------------------------------------------------ bundle stock rules

    def bundle_available(self, item: int, j: int, available: dict | None = None) -> int:
        """Whole bundles `item` has available at location j: min over its components of
        floor(available / units per bundle) (contract section 4, "Bundles")."""
        available = self.available() if available is None else available
        return bundle_units(item, {sku: available.get((sku, j), 0) for sku in BUNDLES[item]})

    @rule(b=bundle_index, j=location_index, quantity=st.integers(1, 4),
          version=st.sampled_from([None, None, None, "current", "stale"]))
    def sell_bundle(self, b, j, quantity, version):
        """A sale of a bundle sells quantity x each component's units at one location, all or
        nothing; refused (409) beyond the bundle's derived availability there. Its version is the
        derived one (the sum of its components' versions there)."""
        from inventory.selectors import stock_get
        from inventory.services import stock_sell

        self.begin()
        expected_version = None
        if version is not None:
            rows = {row["location"]: row for row in stock_get(sku_code=self.items[b].code)["locations"]}
            current = rows[self.locations[j].code]["version"] if self.locations[j].code in rows else 0
            expected_version = current if version == "current" else current + 1
        can = self.bundle_available(b, j)
        refusal = "version_conflict" if version == "stale" else "insufficient_stock" if quantity > can else None
        try:
            if expected_version is None:
                stock_sell(sku=self.items[b].code, location=self.locations[j].code, quantity=quantity)
            else:
                self._adjust(b, j, "sale", quantity, expected_version=expected_version)
        except DomainError as exc:
            assert exc.code == refusal, (
                f"sale of {quantity} x {self.code(b, j)} (version {version}) refused with {exc.code}, expected "
                f"{refusal}; {can} available there; positions {self.show(self.available())}")
            return self.stock_changed(set())
        assert refusal is None, (
            f"sale of {quantity} x {self.code(b, j)} (version {version}) accepted, expected {refusal}; "
            f"{can} available there; positions {self.show(self.available())}")
        for sku, per in BUNDLES[b].items():
            self.on_hand[(sku, j)] -= quantity * per
        self.stock_changed(set())

    @rule(b=bundle_index, j=location_index, quantity=st.integers(1, 5),
          type=st.sampled_from(["receipt", "return", "count", "adjustment", "transfer"]))
    def bundle_stock_refused(self, b, j, quantity, type):
        """Any other adjustment of a bundle answers 409 `bundle_has_no_stock` and changes nothing."""
        self.begin()
        with pytest.raises(DomainError) as refused:
            self._adjust(b, j, type, quantity, to=(j + 1) % N_LOCATIONS if type == "transfer" else None)
        assert refused.value.code == "bundle_has_no_stock", f"{type} of {self.code(b, j)}: {refused.value.code}"
        self.stock_changed(set())

    @rule(j=location_index)
    def toggle_location(self, j):
        from inventory.services import location_update

        self.begin()
        location = Location.objects.get(pk=self.locations[j].pk)
        location_update(location=location, active=not self.active_location[j])
        self.active_location[j] = not self.active_location[j]
        rose = {i for (i, loc) in self.existing if loc == j} if self.active_location[j] else set()
        self.stock_changed(rose)

    # ------------------------------------------------------------------ reservation rules

    def _expected_refusal(self, request, channel, order_ref, named) -> set[str]:
        eligible = self.eligible(channel)
        problems = set()
        for j in named:  # the service checks named locations in set order: any of these may come first
            if not self.active_location[j]:
                problems.add("location_inactive")
            elif j not in eligible:
                problems.add("location_not_eligible")
        if problems:
            return problems
        if order_ref and (channel, order_ref) in self.live_order_refs():
            return {"duplicate_order_ref"}
        return set()

    @rule(target=reservations, lines=st.lists(request_line, min_size=1, max_size=3),
          channel=st.sampled_from([None, None, "all", "one"]), ttl=st.sampled_from(TTLS),
          waitlist=st.booleans(), order_ref=st.sampled_from(["", "", "", "o1", "o2"]))
    def reserve(self, lines, channel, ttl, waitlist, order_ref):
        return self._reserve(lines, channel, ttl, waitlist, order_ref)

    @rule(target=reservations, lines=bundle_request(), channel=st.sampled_from([None, None, "all", "one"]),
          ttl=st.sampled_from(TTLS), waitlist=st.booleans(), order_ref=st.sampled_from(["", "", "o1"]))
    def reserve_bundles(self, lines, channel, ttl, waitlist, order_ref):
        """Requests naming bundles (located or not), often with plain lines of their components."""
        return self._reserve(lines, channel, ttl, waitlist, order_ref)

    def refusal_lines(self, request, channel) -> list[dict]:
        """`insufficient_stock.lines` (docs/reservations.md): one entry per requested item, in
        request order, with the units requested and those available where its lines may draw (the
        locations they name, plus the eligible ones when one names none), before any line took
        some; a bundle's in bundle units (whole bundles per location, summed)."""
        available = self.available()
        detail = []
        for item in dict.fromkeys(i for i, _, _ in request):
            mine = [(loc, qty) for i, loc, qty in request if i == item]
            where = {loc for loc, _ in mine if loc is not None}
            if any(loc is None for loc, _ in mine):
                where |= set(self.eligible(channel))
            units = sum(self.bundle_available(item, j, available) if item in BUNDLES else available.get((item, j), 0)
                        for j in where)
            detail.append({"sku": self.items[item].code, "requested": sum(q for _, q in mine), "available": units})
        return detail

    def _reserve(self, lines, channel, ttl, waitlist, order_ref):
        from reservations.services import reservation_create

        self.begin()
        if channel and not self.channels:
            channel = None
        order_ref = f"{self.ns}-{order_ref}" if order_ref else ""
        request = merge(lines)
        named = {loc for _, loc, _ in lines if loc is not None}
        refusal = self._expected_refusal(request, channel, order_ref, named)
        holds, short = ({}, []) if refusal - {"duplicate_order_ref"} else allocate(
            request, self.available(), self.eligible(channel))
        if refusal == {"duplicate_order_ref"} and short and not waitlist:
            # Both are 409s and nothing documents which one a duplicate order_ref that is also short
            # of stock gets (the code reports the duplicate only when it writes the reservation).
            refusal = {"duplicate_order_ref", "insufficient_stock"}
        listed_but_inactive = self.listed_but_inactive(channel)
        try:
            reservation = reservation_create(
                lines=[{"sku": self.items[i].code, "quantity": q,
                        **({"location": self.locations[j].code} if j is not None else {})} for i, j, q in lines],
                channel=self.channels[channel] if channel else None, order_ref=order_ref, ttl_seconds=ttl,
                waitlist=waitlist)
        except DomainError as exc:
            outcome, reservation, refused = exc.code, None, exc
        else:
            outcome, refused = reservation.status, None
        expected = (refusal if refusal else {"insufficient_stock"} if short and not waitlist
                    else {"waiting"} if short else {"active"})
        if listed_but_inactive:
            # Its own assertion, so this documented rule is reported apart from everything else.
            assert outcome in expected, (
                f"channel {channel!r} lists only inactive locations, so it may reserve nothing "
                f"(docs/reservations.md, Allocation); reservation_create answered {outcome!r}, expected {expected}")
        assert outcome in expected, (
            f"reservation_create({[(self.code(i, j), q) for i, j, q in lines]}, channel={channel}, "
            f"waitlist={waitlist}) -> {outcome}, model expected {expected}; available {self.show(self.available())}")
        if refused is not None and outcome == "insufficient_stock":
            detail = self.refusal_lines(request, channel)
            assert refused.extra.get("lines") == detail, (
                f"insufficient_stock for {[(self.code(i, j), q) for i, j, q in lines]} (channel={channel}) "
                f"answered lines {refused.extra.get('lines')}, model {detail}")
        self.stock_changed(set())
        if reservation is None:
            return multiple()
        self.seq += 1
        rid = str(reservation.pk)
        r = Res(seq=self.seq, status=outcome, channel=channel, order_ref=order_ref, ttl=ttl, request=request,
                expires_at=reservation.expires_at, created_at=reservation.created_at)
        db_lines = self.lines_of(reservation.lines.all())
        if outcome == "active":
            r.holds = holds
            assert db_lines == holds, f"holds {self.show(db_lines)}, model allocated {self.show(holds)}"
        else:  # the merged request itself, a bundle's line naming the bundle
            assert db_lines == {(i, j, None): q for i, j, q in request}, (
                f"waiting lines {self.show(db_lines)} != request {request}")
        self.res[rid] = r
        return rid

    @rule(rid=reservations)
    def commit(self, rid):
        from reservations.services import reservation_commit

        self.begin()
        r = self.res[rid]
        expected = {"committed": "committed", "expired": "reservation_expired", "released": "reservation_released",
                    "waiting": "reservation_not_active"}.get(r.status)
        held = per_position(r.holds)  # a plain line and a bundle's line may hold at one position
        if r.status == "active":
            short = [key for key, qty in held.items() if self.on_hand.get(key, 0) < qty]
            expected = "insufficient_stock" if short else "committed"
        try:
            outcome = reservation_commit(reservation_id=rid).status
        except DomainError as exc:
            outcome = exc.code
        assert outcome == expected, f"commit of {self.describe(rid)} ({r.status}) -> {outcome}, expected {expected}"
        if r.status == "active" and outcome == "committed":
            for key, qty in held.items():
                self.on_hand[key] -= qty
            r.status = "committed"
        self.stock_changed(set())

    @rule(rid=reservations)
    def release(self, rid):
        from reservations.services import reservation_release

        self.begin()
        r = self.res[rid]
        expected = {"committed": "reservation_committed", "active": "released", "waiting": "released"}.get(
            r.status, r.status)
        try:
            outcome = reservation_release(reservation_id=rid).status
        except DomainError as exc:
            outcome = exc.code
        assert outcome == expected, f"release of {self.describe(rid)} ({r.status}) -> {outcome}, expected {expected}"
        rose = set()
        if r.status == "active":
            rose = {sku for sku, _, _ in r.holds}
        if r.status in ("active", "waiting"):
            r.status = "released"
        self.stock_changed(rose)

    @rule(rid=reservations, ttl=st.sampled_from(TTLS))
    def extend(self, rid, ttl):
        from reservations.services import reservation_extend

        self.begin()
        r = self.res[rid]
        expected = {"active": "active", "expired": "reservation_expired"}.get(r.status, "reservation_not_active")
        before = timezone.now()
        try:
            reservation = reservation_extend(reservation_id=rid, ttl_seconds=ttl)
            outcome = reservation.status
        except DomainError as exc:
            outcome, reservation = exc.code, None
        assert outcome == expected, f"extend of {self.describe(rid)} ({r.status}) -> {outcome}, expected {expected}"
        if reservation is not None:
            assert before + timedelta(seconds=ttl) <= reservation.expires_at <= timezone.now() + timedelta(seconds=ttl)
            r.expires_at = reservation.expires_at
        self.stock_changed(set())

    @rule(seconds=st.sampled_from([0, 700, 4000, 90000, 8 * 86400]))
    def expire(self, seconds):
        """The expiry sweep, run as if `seconds` had passed. Waiting reservations expire too
        after RESERVATION_WAITLIST_MAX_SECONDS, where that setting exists."""
        from django.conf import settings

        from reservations.services import reservations_expire

        self.begin()
        now = timezone.now() + timedelta(seconds=seconds)
        due = [rid for rid, r in self.res.items() if r.status == "active" and r.expires_at <= now]
        wait_max = getattr(settings, "RESERVATION_WAITLIST_MAX_SECONDS", None)
        stale = [rid for rid, r in self.res.items() if r.status == "waiting" and wait_max is not None
                 and r.created_at <= now - timedelta(seconds=wait_max)]
        reservations_expire(now=now)
        rose = set()
        for rid in due:
            self.res[rid].status = "expired"
            rose |= {sku for sku, _, _ in self.res[rid].holds}
        for rid in stale:
            self.res[rid].status = "expired"
        self.stock_changed(rose)

    @rule()
    def waitlist_sweep(self):
        """The beat's safety net: safe (never more than available) and live (the first waiting
        reservation is not left waiting when it could be filled)."""
        from reservations.models import Reservation
        from reservations.services import reservations_waitlist_sweep

        self.begin()
        available_before = self.available()
        waiting = self.waiting_in_order()
        reservations_waitlist_sweep()
        db = {str(r.pk): r for r in Reservation.objects.filter(pk__in=waiting).prefetch_related("lines")}
        taken: dict = {}
        for rid in waiting:
            if db[rid].status == "waiting":
                continue
            assert db[rid].status == "active", f"sweep left {self.describe(rid)} as {db[rid].status}"
            r = self.res[rid]
            holds = self.lines_of(db[rid].lines.all())
            drawn = self.units_by_item(holds, rid)  # {(item, location): units (whole bundles)}
            for item, loc, qty in r.request:
                if loc is not None:
                    assert drawn.get((item, loc), 0) >= qty, f"sweep ignored the named location of {self.describe(rid)}"
            by_item: dict = {}
            for (item, _), units in drawn.items():
                by_item[item] = by_item.get(item, 0) + units
            for key, qty in per_position(holds).items():
                taken[key] = taken.get(key, 0) + qty
            assert by_item == {item: sum(q for i, _, q in r.request if i == item) for item, _, _ in r.request}, (
                f"sweep activated {self.describe(rid)} with holds {self.show(holds)}")
            r.status, r.holds, r.expires_at = "active", holds, db[rid].expires_at
        over = {self.code(*key): (qty, available_before.get(key, 0)) for key, qty in taken.items()
                if qty > available_before.get(key, 0)}
        assert not over, f"waitlist sweep held more than was available (held, available): {over}"
        first = self.waiting_in_order()[:1]
        assert not (first and self.feasible(self.res[first[0]])), (
            f"after the sweep {self.describe(first[0])} still waits although it can be filled: "
            f"available {self.show(self.available())}")

    # ------------------------------------------------------------------ channels

    def channel_quantity(self, name: str, i: int) -> int:
        """Available at the channel's eligible locations (a bundle: the sum over them of its whole
        bundles there), minus safety stock, minus the buffer."""
        kind, listed, buffer_type, value = CHANNELS[name]
        available = self.available()
        eligible = [j for j in range(N_LOCATIONS) if self.active_location[j] and (listed is None or j in listed)]
        if i in BUNDLES:
            total = sum(self.bundle_available(i, j, available) for j in eligible)
        else:
            total = sum(available.get((i, j), 0) for j in eligible)
        return buffered(total, SAFETY_STOCK.get(i, 0), buffer_type, value)

    def push_and_compare(self):
        from channels.models import ChannelSkuState, DirtyPair
        from channels.propagation import channel_push, channel_quantities

        for name, channel in self.channels.items():
            channel_push(channel_id=channel.pk)
            computed = channel_quantities(channel=channel, sku_ids=[s.pk for s in self.items])
            pushed = dict(ChannelSkuState.objects.filter(channel=channel).values_list("sku_id", "last_pushed"))
            levels = self.simulator.state.levels(channel.slug)["levels"]
            for i, sku in enumerate(self.items):
                external = f"4400{i}" if channel.kind == "shopify" else sku.code
                seen = {"model": self.channel_quantity(name, i), "channel_quantities": computed.get(sku.pk),
                        "last_pushed": pushed.get(sku.pk), "simulator": levels.get(external)}
                assert len(set(seen.values())) == 1, f"channel {name} SKU {sku.code}: {seen}"
            left = DirtyPair.objects.filter(channel=channel).count()
            assert left == 0, f"channel {name}: {left} dirty pairs left after a push"

    @rule()
    def push_channels(self):
        self.begin()
        if self.channels:
            self.push_and_compare()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def database_matches_model_and_ledger(self):
        from reservations.models import Reservation

        problems = checks.stock_problems(self.sku_ids)
        assert not problems["ledger"], f"invariant 1 (ledger): {problems['ledger']}"
        assert not problems["negative"], f"invariant 2 (non-negative): {problems['negative']}"
        assert not problems["reserved"], f"invariant 3 (reserved = active lines): {problems['reserved']}"
        overdrawn = checks.overdrawn_reserve_rows(self.sku_ids, after_id=self.first_movement)
        assert not overdrawn, f"a hold took more than was available: {overdrawn}"
        rows = checks.positions(self.sku_ids + self.bundle_ids)
        own = sorted({r["sku__code"] for (s, _), r in rows.items() if s in self.bundle_ids})
        assert not own, f"bundles {own} have stock positions of their own (a bundle holds no stock)"
        reserved = self.reserved()
        db = {(self.sku_of[s], self.loc_of[loc]): (r["on_hand"], r["reserved"]) for (s, loc), r in rows.items()}
        model = {key: (self.on_hand.get(key, 0), reserved.get(key, 0)) for key in set(db) | self.existing}
        differ = {self.code(*key): {"db": db.get(key, (0, 0)), "model": value} for key, value in model.items()
                  if db.get(key, (0, 0)) != value}
        assert not differ, f"(on_hand, reserved) differ from the model: {differ}"
        statuses = dict(Reservation.objects.filter(pk__in=list(self.res)).values_list("id", "status"))
        differ = {self.describe(rid): (statuses[uuid.UUID(rid)], r.status) for rid, r in self.res.items()
                  if statuses[uuid.UUID(rid)] != r.status}
        assert not differ, f"reservation statuses (db, model) differ: {differ}"
        self.bundles_derived_from_components(rows)

    def bundles_derived_from_components(self, rows: dict):
        """Each bundle's read (inventory.selectors.stock_get_many, what stock_get answers) is the
        model's derivation from its components at every location where any of them has a
        position: on_hand and available min over components of floor(units / units per bundle),
        reserved the difference, version the sum of the components' versions there (from `rows`,
        the positions just checked against the model and the ledger); totals sum the locations;
        `"bundle": true`. Both bundles in one read, so the multi-bundle derivation is checked too."""
        from inventory.selectors import stock_get_many

        versions = {(self.sku_of[s], self.loc_of[loc]): r["version"] for (s, loc), r in rows.items()}
        available = self.available()
        reads = {read["sku"]: read for read in stock_get_many(sku_codes=[b.code for b in self.kits])}
        for item, parts in BUNDLES.items():
            expected = {}
            for j in range(N_LOCATIONS):
                if not any((sku, j) in versions for sku in parts):
                    continue  # no component has a position here: the read has no row for it
                on_hand = bundle_units(item, {sku: self.on_hand.get((sku, j), 0) for sku in parts})
                units = self.bundle_available(item, j, available)
                expected[self.locations[j].code] = {
                    "location": self.locations[j].code, "on_hand": on_hand, "reserved": on_hand - units,
                    "available": units, "version": sum(versions.get((sku, j), 0) for sku in parts)}
            read = reads[self.items[item].code]
            got = {row["location"]: row for row in read["locations"]}
            assert got == expected, (
                f"derived stock of bundle {self.items[item].code} per location: read {got}, model {expected}; "
                f"components {self.show({key: qty for key, qty in available.items() if key[0] in parts})} available")
            totals = {name: sum(row[name] for row in expected.values())
                      for name in ("on_hand", "reserved", "available")}
            assert {name: read[name] for name in totals} == totals and read.get("bundle") is True, (
                f"bundle {self.items[item].code} totals {read}, model {totals} and bundle=True")

    def check_invariants(self, settings, output, runtimes):
        self.clean = False
        super().check_invariants(settings, output, runtimes)
        self.clean = True

    def teardown(self):
        """Invariant 7 once more at the end of a clean run; then free this example's holds so the
        global sweeps of later examples do not work for it."""
        from reservations.services import reservation_release

        try:
            if self.clean and self.channels:
                self.push_and_compare()
        finally:
            for rid, r in self.res.items():
                if r.status in ("active", "waiting"):
                    with contextlib.suppress(DomainError):
                        reservation_release(reservation_id=rid)


def test_stock_reservations_waitlist_and_channels(transactional_db, sim):
    run_state_machine_as_test(lambda: StockMachine(sim), settings=model_settings())
