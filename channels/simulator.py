"""The channel simulator: a small threaded HTTP server that answers like the six marketplaces.

It is part of the product: `./dev up` runs it (`run_channel_simulator --port P`), `seed_demo`
points one channel of each kind at it, the tests and the benchmark start it in-process.

Stores. A channel whose base_url is `{simulator}/s/{store}` is a store of its own; paths are the
marketplace's own below that (`/s/demo-shopify/admin/api/2024-01/inventory_levels/set.json`).
Requests without `/s/{store}` belong to the store "default".

Answers (what propagation and reconciliation use):
- Shopify    POST .../admin/api/{v}/inventory_levels/set.json; GET .../inventory_levels.json
- WooCommerce POST .../wp-json/wc/v3/products[/{parent}/variations]/batch (per-item errors in a
  200 for ids that are not numbers or are listed in the `item_errors` fault); GET .../products
- BigCommerce PUT .../stores/{hash}/v3/inventory/adjustments/absolute; GET .../v3/inventory/items;
  GET .../stores/{hash}/v2/orders/{id}/products for orders the simulator sent
- eBay       POST .../sell/inventory/v1/bulk_update_price_quantity (per-item statusCode, 207 when
  some fail); POST .../bulk_get_inventory_item
- Amazon     PATCH/GET .../listings/2021-08-01/items/{seller}/{sku} (status ACCEPTED/INVALID)
- webhook    any other POST carrying `webhook-id`: {"sku", "available", "at"}, verified with
  Standard Webhooks when the store was given a secret

Control (JSON):
- GET  /_sim/levels[?store=]     levels kept per store (what each channel currently shows)
- GET  /_sim/requests[?store=]   the request log (bounded)
- POST /_sim/faults {"store"?, "error_rate", "error_status", "fail_next", "rate_limit_next",
       "rate_limit_rate", "retry_after", "latency_ms", "down", "item_errors": [ids], "clear"}
- POST /_sim/stores {"store", "kind"?, "webhook_url"?, "secret"?, "echo"?} (echo: Shopify sends
       inventory_levels/update back after each push, as the real one does)
- POST /_sim/orders {"store", "lines": [{"sku"?, "external_id"?, "quantity"}], "kind"?, "target"?,
       "secret"?, "order_id"?, "topic"?, "location"?} sends a signed order webhook as that
       marketplace would (`location` is needed by the canonical events of the `webhook` kind)
- POST /_sim/levels {"store", "levels": {id: qty}} sets levels by hand (drift for reconciliation)
- POST /_sim/reset
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

from channels.adapters.signing import standard_webhooks_sign, standard_webhooks_verify

logger = logging.getLogger(__name__)

STORE_PATH = re.compile(r"^/s/(?P<store>[^/]+)(?P<rest>/.*)?$")
MAX_LOG = 20_000


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


class _Drop(Exception):  # noqa: N818 - "down": close the connection without an answer
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs (requests.Session reuses it)
    # Headers and body are separate writes: without TCP_NODELAY, Nagle + the client's delayed ACK
    # add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "StocklineChannelSimulator/1.0"
    state: SimulatorState  # set on the subclass the server builds
    resolver = None  # optional callable(store) -> dict(kind, webhook_url, secret) for /_sim/orders

    def log_message(self, format, *args):  # noqa: A002 - signature from BaseHTTPRequestHandler
        logger.debug("sim %s " + format, self.address_string(), *args)

    # ------------------------------------------------------------------ plumbing
    def do_GET(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_PUT(self):  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self):  # noqa: N802
        self._handle("PATCH")

    def _send(self, status: int, body=None, headers: dict | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if raw:
            self.wfile.write(raw)
        self._status = status

    def _json(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        if not self._raw:
            return None
        try:
            return json.loads(self._raw)
        except ValueError:
            return None

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._json()
        self._status = 0
        if url.path.startswith("/_sim/"):
            self._control(method, url.path, body)
            return
        match = STORE_PATH.match(url.path)
        store, rest = (match["store"], match["rest"] or "/") if match else ("default", url.path)
        started = time.time()
        kind, items = None, 0
        try:
            kind, items = self._marketplace(method, store, rest, body)
        except _Drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self._status = None
        finally:
            self.state.log.append({"store": store, "kind": kind, "method": method, "path": rest,
                                   "status": self._status, "items": items, "at": started,
                                   "done": time.time()})

    # ------------------------------------------------------------------ faults
    def _faults(self, store: str, kind: str) -> bool:
        """Apply the store's faults; True when a fault already answered."""
        faults = self.state.faults_for(store)
        if faults is None:
            return False
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.down:
            raise _Drop
        with self.state.lock:
            fail = faults.fail_next > 0
            if fail:
                faults.fail_next -= 1
            limited = not fail and faults.rate_limit_next > 0
            if limited:
                faults.rate_limit_next -= 1
            roll = self.state.rng.random()
        limited = limited or (not fail and roll < faults.rate_limit_rate)
        if limited:
            self._send(429, {"errors": "Exceeded rate limit"}, self._rate_limit_headers(kind, faults.retry_after))
            return True
        if fail or (faults.error_rate and self.state.rng.random() < faults.error_rate):
            self._send(faults.error_status, {"errors": "simulated failure"})
            return True
        return False

    @staticmethod
    def _rate_limit_headers(kind: str, seconds: float) -> dict:
        if kind == "shopify":
            return {"Retry-After": f"{seconds:.1f}"}  # Shopify: float seconds
        if kind == "bigcommerce":
            return {"X-Rate-Limit-Time-Reset-Ms": str(int(seconds * 1000)), "X-Rate-Limit-Requests-Left": "0"}
        return {"Retry-After": str(max(int(round(seconds)), 0))}

    def _item_error(self, store: str, key) -> bool:
        faults = self.state.faults_for(store)
        return bool(faults and str(key) in faults.item_errors)

    # ------------------------------------------------------------------ marketplaces
    def _marketplace(self, method: str, store: str, rest: str, body) -> tuple[str | None, int]:
        routes = [
            ("POST", r"^/admin/api/[^/]+/inventory_levels/set\.json$", "shopify", self._shopify_set),
            ("GET", r"^/admin/api/[^/]+/inventory_levels\.json$", "shopify", self._shopify_get),
            ("POST", r"^/wp-json/wc/v3/products(?:/(?P<parent>\d+)/variations)?/batch$", "woocommerce",
             self._woo_batch),
            ("GET", r"^/wp-json/wc/v3/products(?:/(?P<parent>\d+)/variations)?$", "woocommerce", self._woo_get),
            ("PUT", r"^/stores/(?P<hash>[^/]+)/v3/inventory/adjustments/absolute$", "bigcommerce", self._bc_absolute),
            ("GET", r"^/stores/(?P<hash>[^/]+)/v3/inventory/items$", "bigcommerce", self._bc_items),
            ("GET", r"^/stores/(?P<hash>[^/]+)/v2/orders/(?P<order>\d+)/products$", "bigcommerce",
             self._bc_order_products),
            ("POST", r"^/sell/inventory/v1/bulk_update_price_quantity$", "ebay", self._ebay_update),
            ("POST", r"^/sell/inventory/v1/bulk_get_inventory_item$", "ebay", self._ebay_get),
            ("PATCH", r"^/listings/2021-08-01/items/(?P<seller>[^/]+)/(?P<sku>[^/]+)$", "amazon", self._amazon_patch),
            ("GET", r"^/listings/2021-08-01/items/(?P<seller>[^/]+)/(?P<sku>[^/]+)$", "amazon", self._amazon_get),
        ]
        for verb, pattern, kind, handler in routes:
            match = re.match(pattern, rest)
            if verb == method and match:
                if self._faults(store, kind):
                    return kind, 0
                if not self._authorized(kind):
                    self._send(401, {"errors": "[API] Invalid API key or access token"})
                    return kind, 0
                return kind, handler(store, match, body) or 0
        if method == "POST" and self.headers.get("webhook-id"):
            if self._faults(store, "webhook"):
                return "webhook", 0
            return "webhook", self._webhook(store, body)
        self._send(404, {"errors": "Not Found"})
        return None, 0

    def _authorized(self, kind: str) -> bool:
        h = self.headers
        return {
            "shopify": bool(h.get("X-Shopify-Access-Token")),
            "woocommerce": (h.get("Authorization") or "").startswith("Basic "),
            "bigcommerce": bool(h.get("X-Auth-Token")),
            "ebay": (h.get("Authorization") or "").startswith("Bearer "),
            "amazon": bool(h.get("x-amz-access-token")),
        }.get(kind, True)

    # Shopify
    def _shopify_set(self, store, match, body):
        if not isinstance(body, dict) or not isinstance(body.get("available"), int) or \
                body.get("inventory_item_id") is None or body.get("location_id") is None:
            self._send(422, {"errors": {"available": ["must be an integer"]}})
            return 1
        item, location = str(body["inventory_item_id"]), str(body["location_id"])
        if self._item_error(store, item):
            self._send(422, {"errors": ["Inventory item does not have inventory tracking enabled"]})
            return 1
        self.state.set_level(store, "shopify", item, body["available"])
        with self.state.lock:
            self.state.store(store).details.setdefault("locations", {})[item] = location
        updated = datetime.now(UTC).isoformat()
        level = {"inventory_item_id": body["inventory_item_id"], "location_id": body["location_id"],
                 "available": body["available"], "updated_at": updated}
        self._send(200, {"inventory_level": level})
        self._maybe_echo(store, level)
        return 1

    def _shopify_get(self, store, match, body):
        ids = [i for i in self.query.get("inventory_item_ids", "").split(",") if i]
        s = self.state.store(store, "shopify")
        with self.state.lock:
            rows = [{"inventory_item_id": int(i) if i.isdigit() else i,
                     "location_id": _num(s.details.get("locations", {}).get(i, self.query.get("location_ids", ""))),
                     "available": s.levels[i]} for i in ids if i in s.levels]
        self._send(200, {"inventory_levels": rows})
        return len(rows)

    def _maybe_echo(self, store: str, level: dict) -> None:
        s = self.state.store(store)
        if not (s.echo and s.webhook_url and s.secret):
            return
        body = json.dumps(level).encode()
        headers = {"Content-Type": "application/json", "X-Shopify-Topic": "inventory_levels/update",
                   "X-Shopify-Hmac-Sha256": _b64_hmac(s.secret.encode(), body),
                   "X-Shopify-Webhook-Id": str(uuid.uuid4()), "X-Shopify-Event-Id": str(uuid.uuid4()),
                   "X-Shopify-Shop-Domain": f"{store}.myshopify.com", "X-Shopify-API-Version": "2024-01",
                   "X-Shopify-Triggered-At": datetime.now(UTC).isoformat()}
        threading.Thread(target=_deliver, args=(s.webhook_url, body, headers), daemon=True).start()

    # WooCommerce
    def _woo_batch(self, store, match, body):
        updates = (body or {}).get("update") if isinstance(body, dict) else None
        if not isinstance(updates, list) or len(updates) > 100:
            self._send(400, {"code": "rest_invalid_param", "message": "update must be a list of at most 100 items"})
            return 0
        answered = []
        for entry in updates:
            pid = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(pid, int) or self._item_error(store, pid) or not isinstance(
                    entry.get("stock_quantity"), int):
                answered.append({"id": pid if isinstance(pid, int) else 0, "error": {
                    "code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.", "data": {"status": 400}}})
                continue
            self.state.set_level(store, "woocommerce", pid, entry["stock_quantity"])
            answered.append({"id": pid, "stock_quantity": entry["stock_quantity"], "manage_stock": True,
                             "parent_id": int(match["parent"]) if match["parent"] else 0})
        self._send(200, {"update": answered})
        return len(updates)

    def _woo_get(self, store, match, body):
        ids = [i for i in self.query.get("include", "").split(",") if i]
        s = self.state.store(store, "woocommerce")
        with self.state.lock:
            rows = [{"id": int(i), "stock_quantity": s.levels[i], "manage_stock": True} for i in ids if i in s.levels]
        self._send(200, rows)
        return len(rows)

    # BigCommerce
    def _bc_absolute(self, store, match, body):
        items = (body or {}).get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            self._send(422, {"status": 422, "title": "items are required"})
            return 0
        bad = [i for i in items if not isinstance(i, dict) or not isinstance(i.get("quantity"), int)
               or i.get("variant_id") is None or self._item_error(store, i.get("variant_id"))]
        if bad:
            self._send(422, {"status": 422, "title": "Invalid items", "errors": {"items": f"{len(bad)} invalid"}})
            return len(items)
        for item in items:
            self.state.set_level(store, "bigcommerce", item["variant_id"], item["quantity"])
        self._send(200, {"transaction_id": str(uuid.uuid4())})
        return len(items)

    def _bc_items(self, store, match, body):
        ids = [i for i in self.query.get("variant_id:in", "").split(",") if i]
        location = self.query.get("location_id:in", "1")
        s = self.state.store(store, "bigcommerce")
        with self.state.lock:
            data = [{"identity": {"variant_id": _num(i)},
                     "locations": [{"location_id": _num(location), "total_inventory_onhand": s.levels[i],
                                    "available_to_sell": s.levels[i]}]} for i in ids if i in s.levels]
        self._send(200, {"data": data, "meta": {}})
        return len(data)

    def _bc_order_products(self, store, match, body):
        with self.state.lock:
            products = self.state.orders.get((store, match["order"]))
        if products is None:
            self._send(404, [{"status": 404, "message": "The requested resource was not found."}])
            return 0
        limit = int(self.query.get("limit") or 50)
        page = int(self.query.get("page") or 1)
        rows = products[(page - 1) * limit: page * limit]
        if not rows:
            self._send(204)
            return 0
        self._send(200, rows)
        return len(rows)

    # eBay
    def _ebay_update(self, store, match, body):
        reqs = (body or {}).get("requests") if isinstance(body, dict) else None
        if not isinstance(reqs, list) or not reqs or len(reqs) > 25:
            self._send(400, {"errors": [{"errorId": 25709, "message": "requests must hold 1 to 25 items"}]})
            return 0
        responses, all_ok = [], True
        for entry in reqs:
            sku = entry.get("sku")
            offers = entry.get("offers") or []
            offer_id = offers[0].get("offerId") if offers else None
            quantity = (entry.get("shipToLocationAvailability") or {}).get("quantity")
            if not sku or not isinstance(quantity, int) or self._item_error(store, offer_id or sku):
                all_ok = False
                responses.append({"statusCode": 400, "sku": sku, "offerId": offer_id, "errors": [
                    {"errorId": 25702, "message": "The SKU or offer does not exist."}]})
                continue
            self.state.set_level(store, "ebay", offer_id or sku, quantity)
            with self.state.lock:
                self.state.store(store).details.setdefault("skus", {})[sku] = quantity
            responses.append({"statusCode": 200, "sku": sku, "offerId": offer_id})
        self._send(200 if all_ok else 207, {"responses": responses})
        return len(reqs)

    def _ebay_get(self, store, match, body):
        reqs = (body or {}).get("requests") if isinstance(body, dict) else []
        s = self.state.store(store, "ebay")
        out = []
        with self.state.lock:
            skus = s.details.get("skus", {})
            for entry in reqs or []:
                sku = entry.get("sku")
                if sku in skus:
                    out.append({"statusCode": 200, "sku": sku, "inventoryItem": {
                        "sku": sku, "availability": {"shipToLocationAvailability": {"quantity": skus[sku]}}}})
                else:
                    out.append({"statusCode": 404, "sku": sku, "errors": [{"errorId": 25710, "message": "Not found"}]})
        self._send(200, {"responses": out})
        return len(out)

    # Amazon
    def _amazon_patch(self, store, match, body):
        from urllib.parse import unquote

        sku = unquote(match["sku"])
        patches = (body or {}).get("patches") if isinstance(body, dict) else None
        quantity = None
        for patch in patches or []:
            if patch.get("path") == "/attributes/fulfillment_availability":
                for value in patch.get("value") or []:
                    if value.get("fulfillment_channel_code") == "DEFAULT":
                        quantity = value.get("quantity")
        submission = uuid.uuid4().hex
        if not isinstance(quantity, int) or not (body or {}).get("productType") or self._item_error(store, sku) \
                or not self.query.get("marketplaceIds"):
            self._send(200, {"sku": sku, "status": "INVALID", "submissionId": submission, "issues": [
                {"code": "90220", "message": "The listing or attribute is invalid.", "severity": "ERROR"}]})
            return 1
        self.state.set_level(store, "amazon", sku, quantity)
        self._send(200, {"sku": sku, "status": "ACCEPTED", "submissionId": submission, "issues": []})
        return 1

    def _amazon_get(self, store, match, body):
        from urllib.parse import unquote

        sku = unquote(match["sku"])
        s = self.state.store(store, "amazon")
        with self.state.lock:
            if sku not in s.levels:
                self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "Listing not found"}]})
                return 0
            quantity = s.levels[sku]
        self._send(200, {"sku": sku, "fulfillmentAvailability": [
            {"fulfillmentChannelCode": "DEFAULT", "quantity": quantity}]})
        return 1

    # Standard Webhooks receiver (the `webhook` kind)
    def _webhook(self, store, body):
        s = self.state.store(store, "webhook")
        if s.secret and not standard_webhooks_verify(s.secret, self.headers.get("webhook-id"),
                                                     self.headers.get("webhook-timestamp"),
                                                     self.headers.get("webhook-signature"), self._raw):
            self._send(401, {"error": "bad signature"})
            return 0
        if not isinstance(body, dict) or "sku" not in body or not isinstance(body.get("available"), int):
            self._send(400, {"error": "expected {sku, available, at}"})
            return 0
        self.state.set_level(store, "webhook", body["sku"], body["available"])
        self._send(204)
        return 1

    # ------------------------------------------------------------------ control
    def _control(self, method: str, path: str, body) -> None:
        state = self.state
        body = body if isinstance(body, dict) else {}
        if path == "/_sim/levels" and method == "GET":
            store = self.query.get("store")
            self._send(200, state.levels(store))
        elif path == "/_sim/levels" and method == "POST":
            for key, qty in (body.get("levels") or {}).items():
                state.set_level(body.get("store", "default"), body.get("kind") or "", key, int(qty))
            self._send(200, state.levels(body.get("store", "default")))
        elif path == "/_sim/requests" and method == "GET":
            self._send(200, {"requests": state.requests_for(self.query.get("store"))})
        elif path == "/_sim/faults" and method == "POST":
            self._send(200, {"faults": faults_set(state, body)})
        elif path == "/_sim/faults" and method == "GET":
            with state.lock:
                self._send(200, {"faults": {k: f.as_dict() for k, f in state.faults.items()}})
        elif path == "/_sim/stores" and method == "POST":
            store = state.store(body.get("store", "default"), body.get("kind"))
            with state.lock:
                for name in ("webhook_url", "secret", "echo"):
                    if name in body:
                        setattr(store, name, body[name])
            self._send(200, {"store": store.name, "kind": store.kind, "echo": store.echo})
        elif path == "/_sim/orders" and method == "POST":
            try:
                self._send(200, order_send(state, body, resolver=type(self).resolver))
            except ValueError as exc:
                self._send(400, {"error": "invalid_order", "detail": str(exc)})
        elif path == "/_sim/reset" and method == "POST":
            state.reset()
            self._send(200, {"reset": True})
        elif path == "/_sim/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not_found", "detail": "Unknown simulator control path."})


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


# ---------------------------------------------------------------------- outgoing order webhooks


def _num(value):
    text = str(value)
    return int(text) if text.isdigit() else text


def _b64_hmac(key: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def _deliver(url: str, body: bytes, headers: dict) -> int | None:
    try:
        return requests.post(url, data=body, headers=headers, timeout=(3.05, 10)).status_code
    except requests.RequestException as exc:
        logger.warning("simulator could not deliver a webhook to %s: %s", url, exc)
        return None


def order_send(state: SimulatorState, body: dict, *, resolver=None) -> dict:
    """Send one order webhook to the service, signed as the marketplace signs it.

    The target URL and secret come from the request, else from the store's registration
    (/_sim/stores), else from `resolver(store)` (the management command reads the channel).
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
    if kind == "webhook" and not all(line["location"] for line in lines):
        raise ValueError("Canonical events need a location: pass `location` (or a line's `location`).")
    built = _order_payload(kind, store_name, order_id, lines, now, body.get("topic"))
    if built is None:
        raise ValueError(f"{kind} orders are not sent as webhooks.")
    payload, headers, key = built
    raw = json.dumps(payload).encode()
    if kind in ("shopify", "woocommerce"):
        name = "X-Shopify-Hmac-Sha256" if kind == "shopify" else "X-WC-Webhook-Signature"
        headers[name] = _b64_hmac(secret.encode(), raw)
    else:  # Standard Webhooks: BigCommerce (secret as UTF-8) and the webhook kind (whsec_ or UTF-8)
        msg_id, ts = headers["webhook-id"], str(int(now.timestamp()))
        headers["webhook-timestamp"] = ts
        headers["webhook-signature"] = standard_webhooks_sign(secret.encode() if kind == "bigcommerce" else secret,
                                                              msg_id, ts, raw)
    if kind == "bigcommerce":
        with state.lock:
            state.orders[(store_name, str(order_id))] = key
    headers["Content-Type"] = "application/json"
    status = _deliver(target, raw, headers)
    return {"order_id": order_id, "kind": kind, "target": target, "status": status}


def _order_payload(kind: str, store: str, order_id: int, lines: list[dict], now: datetime, topic: str | None):
    stamp = now.isoformat()
    if kind == "shopify":
        items = [{"id": order_id * 100 + n, "variant_id": _num(line.get("variant_id") or line.get("external_id") or n),
                  "product_id": _num(line.get("product_id") or n), "sku": line.get("sku") or "",
                  "quantity": int(line["quantity"]), "title": line.get("sku") or "item", "fulfillment_status": None,
                  "gift_card": False} for n, line in enumerate(lines, 1)]
        payload = {"id": order_id, "name": f"#{order_id}", "created_at": stamp, "line_items": items}
        headers = {"X-Shopify-Topic": topic or "orders/create", "X-Shopify-Webhook-Id": str(uuid.uuid4()),
                   "X-Shopify-Event-Id": str(uuid.uuid4()), "X-Shopify-Shop-Domain": f"{store}.myshopify.com",
                   "X-Shopify-API-Version": "2024-01", "X-Shopify-Triggered-At": stamp}
        return payload, headers, None
    if kind == "woocommerce":
        items = [{"id": order_id * 100 + n, "product_id": _num(line.get("product_id") or line.get("external_id") or n),
                  "variation_id": _num(line.get("variation_id") or 0), "sku": line.get("sku") or "",
                  "quantity": int(line["quantity"])} for n, line in enumerate(lines, 1)]
        payload = {"id": order_id, "number": str(order_id), "status": "processing",
                   "date_created_gmt": now.strftime("%Y-%m-%dT%H:%M:%S"), "line_items": items}
        headers = {"X-WC-Webhook-Topic": topic or "order.created", "X-WC-Webhook-Resource": "order",
                   "X-WC-Webhook-Event": "created", "X-WC-Webhook-ID": "1",
                   "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex, "X-WC-Webhook-Source": f"https://{store}.example/"}
        return payload, headers, None
    if kind == "bigcommerce":
        products = [{"id": order_id * 100 + n, "order_id": order_id,
                     "product_id": _num(line.get("product_id") or n),
                     "variant_id": _num(line.get("variant_id") or line.get("external_id") or n),
                     "sku": line.get("sku") or "", "name": line.get("sku") or "item",
                     "quantity": int(line["quantity"])} for n, line in enumerate(lines, 1)]
        payload = {"scope": topic or "store/order/created", "store_id": "1001", "created_at": int(now.timestamp()),
                   "producer": f"stores/{store}", "hash": uuid.uuid4().hex,
                   "data": {"type": "order", "id": order_id}}
        return payload, {"webhook-id": f"msg_{uuid.uuid4().hex}"}, products
    if kind == "webhook":
        events = [{"event_id": f"{store}:order:{order_id}:{n}", "type": line.get("type", "sale"),
                   "sku": line.get("sku"), "location": line.get("location"), "quantity": int(line["quantity"]),
                   "occurred_at": stamp, "source": f"sim:{store}", "reference": str(order_id)}
                  for n, line in enumerate(lines, 1)]
        return {"events": events}, {"webhook-id": f"msg_{uuid.uuid4().hex}"}, None
    return None


# ---------------------------------------------------------------------- server


class Simulator:
    """The server, startable in-process (tests, benchmark) or as a command."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int | None = None, resolver=None):
        self.state = SimulatorState(seed=seed)
        handler = type("BoundHandler", (Handler,), {"state": self.state,
                                                    "resolver": staticmethod(resolver) if resolver else None})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def store_url(self, store: str) -> str:
        return f"{self.url}/s/{store}"

    def start(self) -> Simulator:
        self.thread = threading.Thread(target=self.server.serve_forever, name="channel-simulator", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
