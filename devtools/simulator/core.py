"""The simulator's core: per-store state, faults, the marketplace registry, shared helpers and
the sending of order webhooks.

Marketplace specifics (paths, payloads, authentication, 429 headers, order webhooks) live in one
module per marketplace, which registers a `Marketplace` here when the package is imported; the
HTTP server (`server.py`) routes each request to the registered routes. Neither knows a
marketplace by name.

Stores. A channel whose base_url is `{simulator}/s/{store}` is a store of its own; paths are the
marketplace's own below that (`/s/demo-shopify/admin/api/2024-01/inventory_levels/set.json`).
Requests without `/s/{store}` belong to the store "default".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from channels.adapters.signing import standard_webhooks_sign

logger = logging.getLogger(__name__)

MAX_LOG = 20_000


# ---------------------------------------------------------------------- state


@dataclass
class Faults:
    error_rate: float = 0.0
    error_status: int = 500
    fail_next: int = 0
    rate_limit_next: int = 0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    latency_ms: float = 0.0
    down: bool = False
    item_errors: set = field(default_factory=set)

    def as_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("error_rate", "error_status", "fail_next", "rate_limit_next",
                                                 "rate_limit_rate", "retry_after", "latency_ms", "down")},
                "item_errors": sorted(self.item_errors)}


@dataclass
class Store:
    name: str
    kind: str | None = None
    levels: dict = field(default_factory=dict)  # external id -> quantity
    level_at: dict = field(default_factory=dict)  # external id -> time.time() of the last set
    details: dict = field(default_factory=dict)  # kind-specific (locations, eBay SKU levels)
    webhook_url: str = ""
    secret: str = ""
    echo: bool = False


class SimulatorState:
    """Everything the simulator keeps, behind one lock (handlers run in many threads)."""

    def __init__(self, seed: int | None = None):
        self.lock = threading.RLock()
        self.stores: dict[str, Store] = {}
        self.faults: dict[str, Faults] = {}
        self.log: deque = deque(maxlen=MAX_LOG)
        self.orders: dict[tuple[str, str], list[dict]] = {}
        self.rng = random.Random(seed)
        self.order_seq = 1000

    def store(self, name: str, kind: str | None = None) -> Store:
        with self.lock:
            store = self.stores.get(name)
            if store is None:
                store = self.stores[name] = Store(name=name)
            if kind and not store.kind:
                store.kind = kind
            return store

    def set_level(self, store: str, kind: str, key, quantity: int) -> None:
        with self.lock:
            s = self.store(store, kind)
            s.levels[str(key)] = int(quantity)
            s.level_at[str(key)] = time.time()

    def levels(self, store: str | None = None) -> dict:
        with self.lock:
            if store is not None:
                s = self.stores.get(store)
                return {"kind": s.kind if s else None, "levels": dict(s.levels) if s else {}}
            return {"stores": {name: {"kind": s.kind, "levels": dict(s.levels)} for name, s in self.stores.items()}}

    def faults_for(self, store: str) -> Faults | None:
        with self.lock:
            return self.faults.get(store) or self.faults.get("*")

    def requests_for(self, store: str | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.log if store is None or r["store"] == store]

    def reset(self) -> None:
        with self.lock:
            self.stores.clear()
            self.faults.clear()
            self.log.clear()
            self.orders.clear()


def faults_set(state: SimulatorState, body: dict) -> dict:
    """Replace a store's faults ("*" = every store without its own); {"clear": true} removes them."""
    key = body.get("store", "*")
    with state.lock:
        if body.get("clear"):
            if "store" in body:
                state.faults.pop(key, None)
            else:
                state.faults.clear()
            return {k: f.as_dict() for k, f in state.faults.items()}
        faults = Faults(
            error_rate=float(body.get("error_rate", 0.0)), error_status=int(body.get("error_status", 500)),
            fail_next=int(body.get("fail_next", 0)), rate_limit_next=int(body.get("rate_limit_next", 0)),
            rate_limit_rate=float(body.get("rate_limit_rate", 0.0)), retry_after=float(body.get("retry_after", 1.0)),
            latency_ms=float(body.get("latency_ms", 0.0)), down=bool(body.get("down", False)),
            item_errors={str(i) for i in body.get("item_errors", [])})
        state.faults[key] = faults
        return {k: f.as_dict() for k, f in state.faults.items()}


# ---------------------------------------------------------------------- marketplaces (registry)


def retry_after_seconds(seconds: float) -> dict:
    """The 429 header most marketplaces send: whole seconds."""
    return {"Retry-After": str(max(int(round(seconds)), 0))}


@dataclass(frozen=True)
class Route:
    """`handler(request, store, match, body) -> items handled` for `method` on a path `pattern`.

    A route without a pattern is a fallback: it takes any path, only when the request carries
    `header`, and only after every route with a pattern failed to match.
    """

    method: str
    pattern: re.Pattern | None
    handler: Callable
    header: str | None = None
    public: bool = False  # needs no credentials (a presigned URL, e.g. Amazon's feed documents)


@dataclass(frozen=True)
class Marketplace:
    kind: str
    routes: tuple[Route, ...]
    authorized: Callable = lambda headers: True  # the request carries the credentials it needs
    rate_limit_headers: Callable = retry_after_seconds  # the headers of a simulated 429
    # order_webhook(state, *, store, order_id, lines, now, topic, secret) -> (raw body, headers):
    # the signed order notification, as the marketplace sends it; None: no order webhooks.
    order_webhook: Callable | None = None
    # control(state, body) -> dict: the marketplace's own simulator settings, reached at
    # POST /_sim/{kind} (e.g. Shopify's cost bucket); raise ValueError for a 400. None: none.
    control: Callable | None = None
    # order_book(state, *, store, body) -> dict: create/cancel/refund/ship an order in the order
    # book the marketplace's order API serves (polled marketplaces); None: no order API.
    order_book: Callable | None = None


MARKETPLACES: dict[str, Marketplace] = {}
ROUTES: list[tuple[Route, Marketplace]] = []  # routes with a path pattern first, fallbacks last


def register(marketplace: Marketplace) -> Marketplace:
    """Add a marketplace (each marketplace module calls this once, at import)."""
    MARKETPLACES[marketplace.kind] = marketplace
    for route in marketplace.routes:
        if route.pattern is None:
            ROUTES.append((route, marketplace))
        else:
            first_fallback = next((n for n, (r, _) in enumerate(ROUTES) if r.pattern is None), len(ROUTES))
            ROUTES.insert(first_fallback, (route, marketplace))
    return marketplace


# ---------------------------------------------------------------------- shared helpers


def num(value):
    """An id as the marketplace shows it: a number when it is all digits, else the text."""
    text = str(value)
    return int(text) if text.isdigit() else text


def b64_hmac(key: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def standard_webhooks_headers(msg_id: str, key, now: datetime, raw: bytes) -> dict:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature` for a Standard Webhooks delivery."""
    ts = str(int(now.timestamp()))
    return {"webhook-id": msg_id, "webhook-timestamp": ts,
            "webhook-signature": standard_webhooks_sign(key, msg_id, ts, raw)}


def deliver(url: str, body: bytes, headers: dict) -> int | None:
    try:
        return requests.post(url, data=body, headers=headers, timeout=(3.05, 10)).status_code
    except requests.RequestException as exc:
        logger.warning("simulator could not deliver a webhook to %s: %s", url, exc)
        return None


# ---------------------------------------------------------------------- outgoing order webhooks


def order_send(state: SimulatorState, body: dict, *, resolver=None) -> dict:
    """Send one order webhook to the service, signed as the marketplace signs it.

    The target URL and secret come from the request, else from the store's registration
    (/_sim/stores), else from `resolver(store)` (`python -m devtools.simulator` reads the channel).
    """
    store_name = body.get("store") or "default"
    store = state.store(store_name)
    resolved = (resolver(store_name) if resolver and not (body.get("target") and body.get("secret")) else None) or {}
    kind = body.get("kind") or store.kind or resolved.get("kind")
    target = body.get("target") or store.webhook_url or resolved.get("webhook_url")
    secret = body.get("secret") or store.secret or resolved.get("secret") or ""
    lines = body.get("lines") or []
    if not kind or not target:
        raise ValueError("Need the store's kind and a target URL (register the store or pass them).")
    if not lines or not all(isinstance(line, dict) and int(line.get("quantity") or 0) > 0 for line in lines):
        raise ValueError("lines must be a non-empty list of {sku | external_id, quantity > 0}.")
    with state.lock:
        state.order_seq += 1
        order_id = int(body.get("order_id") or state.order_seq)
    now = datetime.now(UTC)
    location = body.get("location") or resolved.get("location")
    lines = [{**line, "location": line.get("location") or location} for line in lines]
    marketplace = MARKETPLACES.get(kind)
    if marketplace is None or marketplace.order_webhook is None:
        raise ValueError(f"{kind} orders are not sent as webhooks.")
    raw, headers = marketplace.order_webhook(state, store=store_name, order_id=order_id, lines=lines, now=now,
                                             topic=body.get("topic"), secret=secret)
    headers["Content-Type"] = "application/json"
    status = deliver(target, raw, headers)
    return {"order_id": order_id, "kind": kind, "target": target, "status": status}


# ---------------------------------------------------------------------- polled order books


def order_book(state: SimulatorState, store: str) -> dict:
    """The store's order book, served by a polled marketplace's order API (call under state.lock):
    orders by id in the marketplace's own shape, the page size cap (None: what the client asks),
    the access token it insists on (None: any), Amazon's LastUpdatedBefore lag, deferred changes."""
    return state.store(store).details.setdefault("order_book", {
        "orders": {}, "items": {}, "page_size": None, "token": None, "lag_seconds": 0.0, "deferred": [],
        "next_tokens": {}})


def order_book_apply(state: SimulatorState, body: dict) -> dict:
    """Change the order book a polled marketplace (eBay, Amazon) serves from its order API:
    {"store", "kind"?, "action", ...}. Actions: "configure" {"page_size"?, "token"?,
    "lag_seconds"?}; "create" {"lines": [{"sku", "quantity"}], "order_id"?, "at"?, ...},
    "cancel" / "refund" / "ship" {"order_id", "at"?} and what the marketplace module adds (see
    its docstring); "at" (ISO 8601) sets the modification time, e.g. to backdate a change.
    {"defer_pages": n} holds the change until the store has served n more order pages (a change
    that happens while a client is paging). ValueError for a bad request."""
    store_name = body.get("store") or "default"
    kind = body.get("kind") or state.store(store_name).kind
    marketplace = MARKETPLACES.get(kind or "")
    if marketplace is None or marketplace.order_book is None:
        raise ValueError(f"{kind} has no order book (its orders are sent as webhooks).")
    state.store(store_name, kind)
    defer = int(body.get("defer_pages") or 0)
    with state.lock:
        book = order_book(state, store_name)
        if defer > 0:
            book["deferred"].append([defer, {k: v for k, v in body.items() if k != "defer_pages"} | {"kind": kind}])
            return {"deferred": defer}
        if body.get("action") == "configure":
            for name in ("page_size", "token", "lag_seconds"):
                if name in body:
                    book[name] = body[name]
            return {name: book[name] for name in ("page_size", "token", "lag_seconds")}
    return marketplace.order_book(state, store=store_name, body=body)


def order_book_page_served(state: SimulatorState, store: str) -> None:
    """A marketplace's order list calls this after building a page: deferred changes whose page
    count ran out happen now, before the client asks for the next page."""
    with state.lock:
        book = order_book(state, store)
        due, keep = [], []
        for entry in book["deferred"]:
            entry[0] -= 1
            (due if entry[0] <= 0 else keep).append(entry)
        book["deferred"] = keep
    for _pages, body in due:
        order_book_apply(state, body)


def order_book_time(body: dict) -> datetime:
    """The time of an order book change: the request's "at" (ISO 8601) or now, in UTC."""
    at = body.get("at")
    if at:
        when = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return datetime.now(UTC)
