"""Model-based test of ingestion over the real services and the real PostgreSQL (no mocks).

A `RuleBasedStateMachine` mixes, in random order: receipts and stock events (direct and as
canonical events), checkout holds (some for a marketplace order, with or without a channel,
some waiting), their release and expiry, Shopify orders (webhook bodies through
`webhook_accept`) and canonical sales with a `reference`, for fewer, as many or more units than
held, on some or all of the held SKUs, split over lines and locations, redeliveries,
cancellations and refunds of those orders, location (de)activation, and malformed input (junk
bodies, wrong JSON types, huge numbers, unknown SKUs, ids and codes made of Unicode digits).
Every step that sends events drains them in-process until nothing is claimed.

The checks read the ledger (tests/model/checks.py and below), over this example's rows only:
1-3. positions equal their ledger; nothing negative; reserved equals what active holds hold;
4. per order and SKU, what left on_hand for it (sale rows + the commit rows of its hold) never
   exceeds what it ordered, its hold never commits more than the order sold, and it equals what
   ingestion recorded as taken;
5. restocks (cancellations, refunds) never put back more than was taken, at each position
   (each unit goes back where it came from), and each restock puts back what was asked, capped;
6. after a drain no event of ours is pending and due (one bad event never blocks the others),
   every failed one says why.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

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
WH, STORE = 0, 1  # the Shopify channel sells from WH (its default location); holds may draw from both
COUNT_TIMES = ["2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z", "2024-01-01T00:00:03Z"]  # all before restocks


@dataclass
class Order:
    ref: str
    source: str  # "shopify" or "api"
    lines: dict[str, tuple[int, int, int]]  # line id -> (sku index, quantity, location index)
    body: bytes = b""  # Shopify: the orders/create body (redelivered as is)
    events: list[dict] = field(default_factory=list)  # API: the canonical events (resent as is)
    restock_keys: dict[str, str] = field(default_factory=dict)  # ledger event key -> line id
    requested: dict[str, int] = field(default_factory=dict)  # line id -> units asked back
    cancelled: bool = False
    cancel_body: bytes = b""
    refunds: int = 0

    def ordered(self) -> dict[int, int]:
        totals: dict[int, int] = defaultdict(int)
        for sku, quantity, _ in self.lines.values():
            totals[sku] += quantity
        return dict(totals)


def shopify_headers(topic: str) -> dict:
    return {"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": timezone.now().isoformat(), "Content-Type": "application/json"}


sku_index = st.integers(0, N_SKUS - 1)
location_index = st.sampled_from([WH, STORE])
units = st.one_of(st.just(0), st.integers(1, 6))  # an order leaves a SKU out about half the time
hold_lines = st.lists(st.tuples(sku_index, st.sampled_from([None, None, WH, STORE]), st.integers(1, 5)),
                      min_size=1, max_size=3)


class IngestionMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    order_refs = Bundle("order_refs")

    def __init__(self):
        super().__init__()
        from channels.models import Channel
        from ingestion.models import InboundEvent
        from inventory.services import location_create, sku_create

        self.ns = f"g{uuid.uuid4().hex[:10]}"
        self.skus = [sku_create(code=f"{self.ns}-S{i}", name=f"SKU {i}") for i in range(N_SKUS)]
        self.locations = [location_create(code=f"{self.ns}-{name}", name=name, priority=10 * (j + 1))
                          for j, name in enumerate(["wh", "store"])]
        self.sku_ids = [s.pk for s in self.skus]
        self.sku_of = {s.pk: i for i, s in enumerate(self.skus)}
        self.loc_of = {loc.pk: j for j, loc in enumerate(self.locations)}
        self.shop = Channel.objects.create(
            slug=f"{self.ns}-shop", name="shop", kind="shopify", webhook_secret="unused-here",
            default_location=self.locations[WH], push_enabled=False, settings={"location_id": "905684977"})
        self.shop.locations.set(self.locations)
        self.pos = Channel.objects.create(slug=f"{self.ns}-pos", name="pos", kind="webhook",
                                          webhook_secret="unused-here", default_location=self.locations[WH],
                                          push_enabled=False)
        self.first_event = InboundEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        self.first_movement = StockMovement.objects.order_by("-id").values_list("id", flat=True).first() or 0
        self.active_location = [True, True]
        self.orders: dict[str, Order] = {}
        self.reservations: dict[str, tuple[str, str | None]] = {}  # id -> (order ref, channel)
        self.n = 0
        self.drain_errors: list[str] = []
        self.last_drain_at = timezone.now()

    # ------------------------------------------------------------------ helpers

    def next_id(self) -> int:
        self.n += 1
        return self.n

    def drain(self):
        from ingestion.services import inbound_events_drain

        for _ in range(50):
            started = timezone.now()
            try:
                result = inbound_events_drain()
            except Exception as exc:  # noqa: BLE001 - recorded: invariant 6 reports it
                self.drain_errors.append(f"{type(exc).__name__}: {exc}"[:500])
                return
            self.last_drain_at = started
            if result.claimed == 0:
                return

    def webhook(self, channel, topic: str | None, body: bytes, headers: dict | None = None):
        from channels.adapters import adapter_for
        from ingestion.services import webhook_accept

        if headers is None:
            headers = shopify_headers(topic) if channel.kind == "shopify" else {"webhook-id": f"msg_{uuid.uuid4().hex}"}
        return webhook_accept(channel=channel, adapter=adapter_for(channel), headers=headers, body=body)

    def canonical(self, events: list[dict]):
        from ingestion.services import events_accept

        return events_accept(events=events)

    def event(self, type: str, i, j, quantity, **extra) -> dict:
        return {"event_id": f"{self.ns}-e{self.next_id()}", "type": type,
                "sku": self.skus[i].code if isinstance(i, int) else i,
                "location": self.locations[j].code if isinstance(j, int) else j, "quantity": quantity,
                "occurred_at": extra.pop("occurred_at", timezone.now().isoformat()), **extra}

    def ledger_rows(self) -> int:
        """Ledger rows that moved on_hand (holds the waitlist fills along the way do not count)."""
        return StockMovement.objects.filter(sku_id__in=self.sku_ids).exclude(type="reserve").count()

    # ------------------------------------------------------------------ stock

    @initialize(stock=st.lists(st.integers(0, 8), min_size=2 * N_SKUS, max_size=2 * N_SKUS))
    def initial_stock(self, stock):
        """Some stock at both locations to start with, so holds and orders meet stock early."""
        from inventory.services import stock_adjust

        for n, quantity in enumerate(stock):
            if quantity:
                stock_adjust(sku=self.skus[n // 2].code, location=self.locations[n % 2].code, type="receipt",
                             quantity=quantity)

    @rule(i=sku_index, j=location_index, quantity=st.integers(1, 12))
    def receive(self, i, j, quantity):
        from inventory.services import stock_adjust

        stock_adjust(sku=self.skus[i].code, location=self.locations[j].code, type="receipt", quantity=quantity)

    @rule(events=st.lists(st.tuples(st.sampled_from(["receipt", "return", "adjustment", "count", "transfer", "sale",
                                                     "cancellation"]),
                                    sku_index, location_index, st.integers(-4, 10), st.sampled_from(COUNT_TIMES)),
                          min_size=1, max_size=4))
    def stock_events(self, events):
        """Canonical stock events (no order reference); invalid ones are refused at intake."""
        batch = []
        for type, i, j, quantity, when in events:
            extra = {"to_location": self.locations[1 - j].code} if type == "transfer" else {}
            if type == "count":
                extra["occurred_at"] = when
                quantity = abs(quantity)
            batch.append(self.event(type, i, j, quantity, **extra))
        self.canonical(batch)
        self.drain()

    @rule(j=location_index)
    def toggle_location(self, j):
        from inventory.services import location_update

        location_update(location=Location.objects.get(pk=self.locations[j].pk), active=not self.active_location[j])
        self.active_location[j] = not self.active_location[j]

    # ------------------------------------------------------------------ holds

    @rule(target=order_refs)
    def new_order_ref(self):
        """A marketplace order id: holds may name it before the order arrives (or, rarely, after)."""
        return f"{self.ns}-o{self.next_id()}"

    def _reserve(self, lines, ref, channel, waitlist, ttl):
        from reservations.services import reservation_create

        try:
            reservation = reservation_create(
                lines=[{"sku": self.skus[i].code, "quantity": q,
                        **({"location": self.locations[j].code} if j is not None else {})} for i, j, q in lines],
                channel=self.shop if channel else None, order_ref=ref, ttl_seconds=ttl, waitlist=waitlist)
        except DomainError:
            return multiple()
        rid = str(reservation.pk)
        self.reservations[rid] = (ref, channel)
        return rid

    @rule(target=holds, ref=order_refs, lines=hold_lines, channel=st.sampled_from([None, "shop"]),
          waitlist=st.booleans(), ttl=st.sampled_from([600, 3600]))
    def reserve_for_order(self, ref, lines, channel, waitlist, ttl):
        """A checkout hold for a marketplace order (usually still to come)."""
        return self._reserve(lines, ref, channel, waitlist, ttl)

    @rule(target=holds, lines=hold_lines, channel=st.sampled_from([None, "shop"]), waitlist=st.booleans(),
          ttl=st.sampled_from([600, 3600]))
    def reserve_checkout(self, lines, channel, waitlist, ttl):
        """A plain checkout hold (no order id)."""
        return self._reserve(lines, "", channel, waitlist, ttl)

    @rule(rid=holds)
    def release(self, rid):
        from reservations.services import reservation_release

        with contextlib.suppress(DomainError):
            reservation_release(reservation_id=rid)

    @rule(rid=holds)
    def checkout_commit(self, rid):
        """Payment of a plain checkout. (A hold made for a marketplace order is settled by the
        order; committing it by hand as well is outside what invariant 4 can account for.)"""
        from reservations.services import reservation_commit

        if self.reservations[rid][0]:
            return
        with contextlib.suppress(DomainError):
            reservation_commit(reservation_id=rid)

    @rule(seconds=st.sampled_from([0, 4000, 90000]))
    def expire(self, seconds):
        from reservations.services import reservations_expire

        reservations_expire(now=timezone.now() + timedelta(seconds=seconds))

    # ------------------------------------------------------------------ orders

    @rule(ref=order_refs, quantities=st.lists(units, min_size=N_SKUS, max_size=N_SKUS).filter(any),
          split=st.booleans(), unknown_line=st.booleans())
    def shopify_order(self, ref, quantities, split, unknown_line):
        """orders/create: one line per SKU ordered (the first one with >= 2 units split over two
        lines when `split`), sold from the channel's default location; maybe one more line whose
        SKU does not exist (that line fails, the others apply)."""
        if ref in self.orders:
            return  # each order id is used by one order
        lines: dict[str, tuple[int, int, int]] = {}
        for i, quantity in enumerate(quantities):
            if not quantity:
                continue
            if split and quantity >= 2:
                lines[str(len(lines) + 1)] = (i, 1, WH)
                quantity -= 1
                split = False
            lines[str(len(lines) + 1)] = (i, quantity, WH)
        items = [{"id": int(lid), "variant_id": 7000 + i, "product_id": 8000 + i, "sku": self.skus[i].code,
                  "quantity": q, "title": "item", "fulfillment_status": None, "gift_card": False}
                 for lid, (i, q, _) in lines.items()]
        if unknown_line:
            items.append({"id": 99, "variant_id": 7999, "sku": f"{self.ns}-missing", "quantity": 1,
                          "fulfillment_status": None, "gift_card": False})
        body = json.dumps({"id": ref, "name": f"#{ref}", "created_at": timezone.now().isoformat(),
                           "line_items": items}).encode()
        self.orders[ref] = Order(ref=ref, source="shopify", lines=lines, body=body)
        self.webhook(self.shop, "orders/create", body)
        self.drain()

    @rule(ref=order_refs, quantities=st.lists(st.tuples(units, st.one_of(st.just(0), st.integers(1, 3))),
                                              min_size=N_SKUS, max_size=N_SKUS).filter(lambda q: any(map(any, q))))
    def canonical_order(self, ref, quantities):
        """The same order as canonical `sale` events with `reference`, in one request, each SKU
        split over the two locations as (units at wh, units at store)."""
        if ref in self.orders:
            return
        lines, events = {}, []
        for i, per_location in enumerate(quantities):
            for j, quantity in zip((WH, STORE), per_location, strict=True):
                if quantity:
                    event = self.event("sale", i, j, quantity, reference=ref)
                    events.append(event)
                    lines[f"api:{event['event_id']}"] = (i, quantity, j)
        self.orders[ref] = Order(ref=ref, source="api", lines=lines, events=events)
        self.canonical(events)
        self.drain()

    @rule(ref=order_refs, i=sku_index, extra=st.integers(0, 3))
    def shopify_order_huge_quantity(self, ref, i, extra):
        """An order (maybe one that has a hold) with a line for 10^30 units of a real SKU, beyond
        any column: it may take what exists or fail, but never block other events, never take
        twice, and never take anything it does not record."""
        if ref in self.orders:
            return
        lines = {"1": (i, 10**30, WH)}
        if extra:
            lines["2"] = ((i + 1) % N_SKUS, extra, WH)
        items = [{"id": int(lid), "sku": self.skus[sku].code, "quantity": q, "fulfillment_status": None}
                 for lid, (sku, q, _) in lines.items()]
        body = json.dumps({"id": ref, "line_items": items, "created_at": timezone.now().isoformat()}).encode()
        self.orders[ref] = Order(ref=ref, source="shopify", lines=lines, body=body)
        self.webhook(self.shop, "orders/create", body)
        self.canonical([self.event("receipt", i, STORE, 1)])  # a good event in the same drain
        self.drain()

    def sent(self, ref: str, source: str | None = None) -> Order | None:
        order = self.orders.get(ref)
        return order if order is not None and source in (None, order.source) else None

    @rule(ref=order_refs)
    def redeliver(self, ref):
        """The same order again (Shopify: a new delivery id; API: the same event ids): no effect."""
        order = self.sent(ref)
        if order is None:
            return
        before = self.ledger_rows()
        if order.source == "shopify":
            self.webhook(self.shop, "orders/create", order.body)
            if order.cancel_body:
                self.webhook(self.shop, "orders/cancelled", order.cancel_body)
        else:
            accepted = self.canonical(order.events)
            assert accepted.accepted == 0 and accepted.duplicates == len(order.events), accepted
        self.drain()
        assert self.ledger_rows() == before, f"redelivering order {order.ref} changed the ledger"

    @rule(ref=order_refs, statuses=st.lists(st.sampled_from([None, None, "partial", "fulfilled"]),
                                            min_size=4, max_size=4), partial=st.integers(0, 6))
    def shopify_cancel(self, ref, statuses, partial):
        """orders/cancelled: unfulfilled units come back (partial: `fulfillable_quantity`)."""
        order = self.sent(ref, "shopify")
        if order is None or order.cancelled:
            return
        items = []
        for (lid, (i, quantity, _)), status in zip(order.lines.items(), statuses, strict=False):
            item = {"id": int(lid), "variant_id": 7000 + i, "sku": self.skus[i].code, "quantity": quantity,
                    "fulfillment_status": status, "gift_card": False}
            back = quantity
            if status == "fulfilled":
                back = 0
            elif status == "partial":
                back = item["fulfillable_quantity"] = min(partial, quantity)
            items.append(item)
            if back > 0:
                order.requested[lid] = order.requested.get(lid, 0) + back
                order.restock_keys[f"{self.shop.slug}:order:{order.ref}:line:{lid}:cancel"] = lid
        order.cancelled = True
        order.cancel_body = json.dumps({"id": order.ref, "cancelled_at": timezone.now().isoformat(),
                                        "line_items": items}).encode()
        self.webhook(self.shop, "orders/cancelled", order.cancel_body)
        self.drain()

    @rule(ref=order_refs, items=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 7),
                                                   st.sampled_from(["return", "cancel", "legacy_restock",
                                                                    "no_restock"])), min_size=1, max_size=3))
    def shopify_refund(self, ref, items):
        """refunds/create: restocks per refunded line item, by restock type."""
        order = self.sent(ref, "shopify")
        if order is None:
            return
        order.refunds += 1
        refund_id = f"{order.ref}-r{order.refunds}"
        refund_items = []
        for n, (line_no, quantity, restock_type) in enumerate(items, 1):
            lid = str(line_no)
            sku = self.skus[order.lines[lid][0]].code if lid in order.lines else f"{self.ns}-gone"
            refund_items.append({"id": n, "line_item_id": int(lid), "quantity": quantity,
                                 "restock_type": restock_type, "line_item": {"id": int(lid), "sku": sku}})
            if restock_type != "no_restock":
                order.requested[lid] = order.requested.get(lid, 0) + quantity
                order.restock_keys[f"{self.shop.slug}:refund:{refund_id}:{n}"] = lid
        body = json.dumps({"id": refund_id, "order_id": order.ref, "created_at": timezone.now().isoformat(),
                           "refund_line_items": refund_items}).encode()
        self.webhook(self.shop, "refunds/create", body)
        self.drain()

    # ------------------------------------------------------------------ hostile input

    def junk_inputs(self) -> dict:
        """name -> callable storing one malformed delivery or event."""
        nope = f"{self.ns}-nope"
        line = {"id": 1, "variant_id": 7100, "sku": nope, "quantity": 1, "fulfillment_status": None}

        def order(**changes):
            payload = {"id": f"{self.ns}-j{self.next_id()}", "line_items": [dict(line)],
                       "created_at": "2024-05-01T10:00:00Z"}
            for key, value in changes.items():
                if key.startswith("line_"):
                    payload["line_items"][0][key[5:]] = value
                elif value is None:
                    payload.pop(key)
                else:
                    payload[key] = value
            return lambda: self.webhook(self.shop, "orders/create", json.dumps(payload).encode())

        def raw(body: bytes, channel=None):
            return lambda: self.webhook(channel or self.shop, "orders/create", body)

        def events(*items):
            return lambda: self.canonical([item if "event_id" in item else self.event(**item) for item in items])

        def pos(*items):
            body = {"events": [{"event_id": f"{self.ns}-p{self.next_id()}", "occurred_at": "2024-05-01T10:00:00Z",
                                "location": self.locations[WH].code, "quantity": 1, "type": "receipt", **item}
                               for item in items]}
            return lambda: self.webhook(self.pos, None, json.dumps(body).encode())

        return {
            "not-json": raw(b"{not json"),
            "nan": raw(b'{"id": NaN, "line_items": []}'),
            "huge-float": raw(b'{"id": 1e400}'),
            "nesting-bomb": raw(b"[" * 300 + b"]" * 300),
            "bad-utf8": raw(b'{"id": "\xff\xfe"}'),
            "lone-surrogate": raw(b'{"id": "\\ud800", "line_items": []}'),
            "nul": raw(b'{"id": "a\\u0000b", "line_items": [{"id": 1, "sku": "x\\u0000", "quantity": 1}]}'),
            "array-body": raw(b"[1, 2, 3]"),
            "missing-id": order(id=None),
            "line-items-string": order(line_items="abc"),
            "line-items-object": order(line_items={"a": 1}),
            "quantity-string": order(line_quantity="abc"),
            "quantity-float": order(line_quantity=2.5),
            "quantity-bool": order(line_quantity=True),
            "quantity-huge": order(line_quantity=10**30),
            "quantity-negative": order(line_quantity=-3),
            "variant-superscript": order(line_variant_id="²"),
            "variant-arabic-digit": order(line_variant_id="٣"),
            "variant-huge": order(line_variant_id=10**30),
            "line-id-superscript": order(line_id="²"),
            "sku-superscript": order(line_sku="²"),
            "sku-arabic-digits": order(line_sku="٣٣"),
            "sku-number": order(line_sku=12),
            "order-id-superscript": order(id="²"),
            "refund-superscript": lambda: self.webhook(self.shop, "refunds/create", json.dumps(
                {"id": "²", "order_id": "٣", "refund_line_items": [{"id": "²", "line_item_id": "²", "quantity": 1,
                                                                    "restock_type": "return"}]}).encode()),
            "level-superscript": lambda: self.webhook(self.shop, "inventory_levels/update", json.dumps(
                {"inventory_item_id": "²", "location_id": "²", "available": 5}).encode()),
            "api-unknown-sku": events({"type": "receipt", "i": nope, "j": WH, "quantity": 1}),
            "api-sku-superscript": events({"type": "receipt", "i": "²", "j": WH, "quantity": 1}),
            "api-sku-arabic-digit": events({"type": "sale", "i": "٣", "j": WH, "quantity": 1, "reference": "٣"}),
            "api-unknown-location": events({"type": "receipt", "i": 0, "j": f"{self.ns}-nowhere", "quantity": 1}),
            "api-location-superscript": events({"type": "receipt", "i": 0, "j": "²", "quantity": 1}),
            "api-event-id-superscript": events({"event_id": "²" + self.ns, "type": "receipt", "sku": nope,
                                                "location": "wh", "quantity": 1,
                                                "occurred_at": "2024-05-01T10:00:00Z"}),
            "api-quantity-string": events({"event_id": f"{self.ns}-q1", "type": "receipt",
                                           "sku": self.skus[0].code, "location": self.locations[WH].code,
                                           "quantity": "5", "occurred_at": "2024-05-01T10:00:00Z"}),
            "api-quantity-float": events({"event_id": f"{self.ns}-q2", "type": "receipt",
                                          "sku": self.skus[0].code, "location": self.locations[WH].code,
                                          "quantity": 5.0, "occurred_at": "2024-05-01T10:00:00Z"}),
            "api-quantity-huge": events({"event_id": f"{self.ns}-q3", "type": "receipt", "sku": self.skus[0].code,
                                         "location": self.locations[WH].code, "quantity": 10**30,
                                         "occurred_at": "2024-05-01T10:00:00Z"}),
            "api-naive-time": events({"event_id": f"{self.ns}-q4", "type": "receipt", "sku": self.skus[0].code,
                                      "location": self.locations[WH].code, "quantity": 1,
                                      "occurred_at": "2024-05-01T10:00:00"}),
            "api-wrong-type": events({"event_id": f"{self.ns}-q5", "type": "teleport", "sku": self.skus[0].code,
                                      "location": self.locations[WH].code, "quantity": 1,
                                      "occurred_at": "2024-05-01T10:00:00Z"}),
            "pos-not-a-list": lambda: self.webhook(self.pos, None, b'{"events": "x"}'),
            "pos-sku-superscript": pos({"sku": "²"}),
            "pos-sku-arabic-digit": pos({"sku": "٣"}),
            "pos-unknown-sku": pos({"sku": nope}),
            "pos-quantity-huge": pos({"sku": nope, "quantity": 10**30}),
        }

    JUNK = ["not-json", "nan", "huge-float", "nesting-bomb", "bad-utf8", "lone-surrogate", "nul", "array-body",
            "missing-id", "line-items-string", "line-items-object", "quantity-string", "quantity-float",
            "quantity-bool", "quantity-huge", "quantity-negative", "variant-superscript", "variant-arabic-digit",
            "variant-huge", "line-id-superscript", "sku-superscript", "sku-arabic-digits", "sku-number",
            "order-id-superscript", "refund-superscript", "level-superscript", "api-unknown-sku",
            "api-sku-superscript", "api-sku-arabic-digit", "api-unknown-location", "api-location-superscript",
            "api-event-id-superscript", "api-quantity-string", "api-quantity-float", "api-quantity-huge",
            "api-naive-time", "api-wrong-type", "pos-not-a-list", "pos-sku-superscript", "pos-sku-arabic-digit",
            "pos-unknown-sku", "pos-quantity-huge"]

    @rule(kinds=st.lists(st.sampled_from(JUNK), min_size=1, max_size=3), i=sku_index)
    def hostile_input(self, kinds, i):
        """Malformed deliveries, then a good receipt in the same drain: the junk moves no stock
        and does not hold the receipt back."""
        from inventory.models import StockPosition

        junk = self.junk_inputs()
        for kind in kinds:
            with contextlib.suppress(DomainError):  # refused at intake: a batch with nothing valid in it
                junk[kind]()
        position = dict(location=self.locations[STORE], sku=self.skus[i])
        before_rows = self.ledger_rows()
        before = StockPosition.objects.filter(**position).values_list("on_hand", flat=True).first() or 0
        self.canonical([self.event("receipt", i, STORE, 3)])
        self.drain()
        after = StockPosition.objects.filter(**position).values_list("on_hand", flat=True).first() or 0
        assert after == before + 3, f"a good receipt after {kinds} was not applied (on_hand {before} -> {after})"
        moved = self.ledger_rows() - before_rows - 1
        assert moved == 0, f"malformed input {kinds} moved stock ({moved} more ledger rows than the receipt)"

    # ------------------------------------------------------------------ invariants

    @invariant()
    def ledger_and_holds(self):
        problems = checks.stock_problems(self.sku_ids)
        assert not problems["ledger"], f"invariant 1 (ledger): {problems['ledger']}"
        assert not problems["negative"], f"invariant 2 (non-negative): {problems['negative']}"
        assert not problems["reserved"], f"invariant 3 (reserved = active lines): {problems['reserved']}"
        overdrawn = checks.overdrawn_reserve_rows(self.sku_ids, after_id=self.first_movement)
        assert not overdrawn, f"a hold took more than was available: {overdrawn}"

    @invariant()
    def orders_take_what_they_sold(self):
        from ingestion.models import IngestedOrderLine, OversellIncident

        if not self.orders:
            return
        refs = list(self.orders)
        rows = list(StockMovement.objects.filter(sku_id__in=self.sku_ids, id__gt=self.first_movement).filter(
            type__in=["sale", "reservation_commit", "cancellation", "return"]).values(
            "type", "reference", "sku_id", "location_id", "on_hand_delta", "event_key", "reservation__order_ref"))
        out: dict = defaultdict(int)  # (ref, sku, loc) -> units that left on_hand for the order
        committed: dict = defaultdict(int)  # (ref, sku) -> of which its hold supplied
        back: dict = defaultdict(int)  # (ref, sku, loc) -> units its restocks put back
        back_line: dict = defaultdict(int)  # (ref, line id) -> units put back
        for r in rows:
            sku, loc = self.sku_of[r["sku_id"]], self.loc_of.get(r["location_id"])
            if r["type"] == "reservation_commit" and r["reservation__order_ref"] in self.orders:
                ref = r["reservation__order_ref"]
                out[(ref, sku, loc)] -= r["on_hand_delta"]
                committed[(ref, sku)] -= r["on_hand_delta"]
            elif r["type"] == "sale" and r["reference"] in self.orders:
                out[(r["reference"], sku, loc)] -= r["on_hand_delta"]
            elif r["type"] in ("cancellation", "return") and r["reference"] in self.orders:
                ref = r["reference"]
                back[(ref, sku, loc)] += r["on_hand_delta"]
                line = self._line_for_key(self.orders[ref], r["event_key"] or "")
                back_line[(ref, line)] += r["on_hand_delta"]
        recorded, recorded_ordered, not_applied = defaultdict(int), defaultdict(int), defaultdict(int)
        taken_line, restocked_line = {}, {}
        for line in IngestedOrderLine.objects.filter(order_ref__in=refs, sku_id__in=self.sku_ids).values(
                "order_ref", "line_id", "sku_id", "ordered", "taken", "restocked"):
            recorded[(line["order_ref"], self.sku_of[line["sku_id"]])] += line["taken"]
            recorded_ordered[(line["order_ref"], self.sku_of[line["sku_id"]])] += line["ordered"]
            taken_line[(line["order_ref"], line["line_id"])] = line["taken"]
            restocked_line[(line["order_ref"], line["line_id"])] = line["restocked"]
        for incident in OversellIncident.objects.filter(order_ref__in=refs, sku_id__in=self.sku_ids).values(
                "order_ref", "sku_id", "requested", "applied"):
            not_applied[(incident["order_ref"], self.sku_of[incident["sku_id"]])] += (
                incident["requested"] - incident["applied"])

        for ref, order in self.orders.items():
            ordered = order.ordered()
            for sku in range(N_SKUS):
                left = sum(out.get((ref, sku, loc), 0) for loc in (WH, STORE))
                name = f"order {ref} ({order.source}) SKU {sku}"
                assert committed.get((ref, sku), 0) <= ordered.get(sku, 0), (
                    f"invariant 4: {name}: its hold committed {committed[(ref, sku)]} units, the order sold "
                    f"{ordered.get(sku, 0)} (the rest of the hold must go back to sale)")
                assert left <= ordered.get(sku, 0), (
                    f"invariant 4: {name}: {left} units left on_hand for it, it ordered {ordered.get(sku, 0)}")
                assert left == recorded.get((ref, sku), 0), (
                    f"invariant 4: {name}: {left} units left on_hand for it, ingestion recorded "
                    f"{recorded.get((ref, sku), 0)} taken")
                if (ref, sku) in recorded_ordered:  # the order's lines of this SKU were applied
                    assert recorded_ordered[(ref, sku)] == ordered.get(sku, 0), (
                        f"invariant 4: {name}: it ordered {ordered.get(sku, 0)}, ingestion recorded "
                        f"{recorded_ordered[(ref, sku)]} ordered")
                    assert left + not_applied.get((ref, sku), 0) == ordered.get(sku, 0), (
                        f"invariant 4: {name}: ordered {ordered.get(sku, 0)}, {left} left on_hand and oversell "
                        f"incidents explain {not_applied.get((ref, sku), 0)} more: every unit sold must be "
                        "taken or reported as a shortfall")
                for loc in (WH, STORE):
                    assert back.get((ref, sku, loc), 0) <= out.get((ref, sku, loc), 0), (
                        f"invariant 5: {name} at {self.locations[loc].code}: restocks put back "
                        f"{back.get((ref, sku, loc), 0)}, only {out.get((ref, sku, loc), 0)} were taken there "
                        f"(taken per location: {[out.get((ref, sku, x), 0) for x in (WH, STORE)]}, "
                        f"put back: {[back.get((ref, sku, x), 0) for x in (WH, STORE)]})")
            for lid, requested in order.requested.items():
                got = back_line.get((ref, lid), 0)
                expected = min(requested, taken_line.get((ref, lid), 0))
                assert got == expected, (
                    f"invariant 5: order {ref} line {lid}: restocks asked {requested} back, the line took "
                    f"{taken_line.get((ref, lid), 0)}; {got} were put back (expected {expected})")
                assert restocked_line.get((ref, lid), 0) == got, (
                    f"invariant 5: order {ref} line {lid}: the ledger put {got} back, ingestion recorded "
                    f"{restocked_line.get((ref, lid), 0)} restocked")

    @staticmethod
    def _line_for_key(order: Order, key: str) -> str | None:
        for known, line in order.restock_keys.items():
            if key == known or (key.startswith(known) and not key[len(known)].isalnum()):
                return line
        return None

    @invariant()
    def no_event_blocks_another(self):
        from ingestion.models import InboundEvent

        assert not self.drain_errors, f"invariant 6: the drain raised: {self.drain_errors}"
        mine = InboundEvent.objects.filter(id__gt=self.first_event)
        stuck = list(mine.filter(status="pending", next_attempt_at__lte=self.last_drain_at).values_list(
            "id", "topic", "attempts"))
        assert not stuck, f"invariant 6: events left pending and due after draining: {stuck}"
        silent = list(mine.filter(status="failed").filter(error_code="").values_list("id", "topic")) + list(
            mine.filter(status="failed", last_error="").values_list("id", "topic"))
        assert not silent, f"invariant 6: failed events without an error code or reason: {silent}"

    def teardown(self):
        """Nothing of this example may linger for the next one: free its holds and close its
        pending events (those an escaping drain error left behind would otherwise be claimed
        first by every later drain)."""
        from ingestion.models import InboundEvent
        from reservations.services import reservation_release

        InboundEvent.objects.filter(id__gt=self.first_event, status="pending").update(
            status="failed", error_code="model_test_teardown", last_error="closed by the model test's teardown")
        for rid in self.reservations:
            with contextlib.suppress(DomainError):
                reservation_release(reservation_id=rid)


@pytest.fixture
def one_attempt(settings):
    """A transiently failing event fails at once (no backoff): the run does not depend on time."""
    settings.INGESTION_MAX_ATTEMPTS = 1


def test_orders_holds_restocks_and_hostile_input(transactional_db, one_attempt):
    run_state_machine_as_test(IngestionMachine, settings=model_settings())

