"""The simulator's HTTP server: request plumbing, fault injection, routing to the registered
marketplaces, and the control endpoints.

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
- POST /_sim/order-book {"store", "kind"?, "action", ...} creates/cancels/refunds/ships an order
       in the order book eBay's and Amazon's order APIs serve (polled; see ebay.py, amazon.py)
- POST /_sim/levels {"store", "levels": {id: qty}} sets levels by hand (drift for reconciliation)
- POST /_sim/{kind} {...} a marketplace's own settings (`Marketplace.control`), e.g. Shopify's
       cost bucket: POST /_sim/shopify {"store", "throttle": {"maximum", "restore_rate", "available"}}
- POST /_sim/reset
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from devtools.simulator.core import (
    MARKETPLACES,
    ROUTES,
    Marketplace,
    SimulatorState,
    faults_set,
    order_book_apply,
    order_send,
)

logger = logging.getLogger(__name__)

STORE_PATH = re.compile(r"^/s/(?P<store>[^/]+)(?P<rest>/.*)?$")


# ---------------------------------------------------------------------- the request handler


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

    def answer(self, status: int, body=None, headers: dict | None = None) -> None:
        """Send a JSON answer (no body when `body` is None)."""
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
        self.raw_body = self.rfile.read(length) if length else b""
        if not self.raw_body:
            return None
        try:
            return json.loads(self.raw_body)
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
    def _faults(self, store: str, marketplace: Marketplace) -> bool:
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
            self.answer(429, {"errors": "Exceeded rate limit"}, marketplace.rate_limit_headers(faults.retry_after))
            return True
        if fail or (faults.error_rate and self.state.rng.random() < faults.error_rate):
            self.answer(faults.error_status, {"errors": "simulated failure"})
            return True
        return False

    def item_error(self, store: str, key) -> bool:
        """The `item_errors` fault names this item: the marketplace rejects it."""
        faults = self.state.faults_for(store)
        return bool(faults and str(key) in faults.item_errors)

    # ------------------------------------------------------------------ routing
    def _marketplace(self, method: str, store: str, rest: str, body) -> tuple[str | None, int]:
        for route, marketplace in ROUTES:
            if route.method != method:
                continue
            if route.pattern is None:
                match = True if self.headers.get(route.header) else None
            else:
                match = route.pattern.match(rest)
            if not match:
                continue
            if self._faults(store, marketplace):
                return marketplace.kind, 0
            if not route.public and not marketplace.authorized(self.headers):
                self.answer(401, {"errors": "[API] Invalid API key or access token"})
                return marketplace.kind, 0
            return marketplace.kind, route.handler(self, store, match, body) or 0
        self.answer(404, {"errors": "Not Found"})
        return None, 0

    # ------------------------------------------------------------------ control
    def _control(self, method: str, path: str, body) -> None:
        state = self.state
        body = body if isinstance(body, dict) else {}
        if path == "/_sim/levels" and method == "GET":
            store = self.query.get("store")
            self.answer(200, state.levels(store))
        elif path == "/_sim/levels" and method == "POST":
            for key, qty in (body.get("levels") or {}).items():
                state.set_level(body.get("store", "default"), body.get("kind") or "", key, int(qty))
            self.answer(200, state.levels(body.get("store", "default")))
        elif path == "/_sim/requests" and method == "GET":
            self.answer(200, {"requests": state.requests_for(self.query.get("store"))})
        elif path == "/_sim/faults" and method == "POST":
            self.answer(200, {"faults": faults_set(state, body)})
        elif path == "/_sim/faults" and method == "GET":
            with state.lock:
                self.answer(200, {"faults": {k: f.as_dict() for k, f in state.faults.items()}})
        elif path == "/_sim/stores" and method == "POST":
            store = state.store(body.get("store", "default"), body.get("kind"))
            with state.lock:
                for name in ("webhook_url", "secret", "echo"):
                    if name in body:
                        setattr(store, name, body[name])
            self.answer(200, {"store": store.name, "kind": store.kind, "echo": store.echo})
        elif path == "/_sim/orders" and method == "POST":
            try:
                self.answer(200, order_send(state, body, resolver=type(self).resolver))
            except ValueError as exc:
                self.answer(400, {"error": "invalid_order", "detail": str(exc)})
        elif path == "/_sim/order-book" and method == "POST":
            try:
                self.answer(200, order_book_apply(state, body))
            except ValueError as exc:
                self.answer(400, {"error": "invalid_order", "detail": str(exc)})
        elif path == "/_sim/reset" and method == "POST":
            state.reset()
            self.answer(200, {"reset": True})
        elif path == "/_sim/health":
            self.answer(200, {"status": "ok"})
        elif method == "POST" and getattr(MARKETPLACES.get(path[len("/_sim/"):]), "control", None):
            try:  # a marketplace's own settings, e.g. POST /_sim/shopify {"store", "throttle": {...}}
                self.answer(200, MARKETPLACES[path[len("/_sim/"):]].control(state, body))
            except ValueError as exc:
                self.answer(400, {"error": "invalid_control", "detail": str(exc)})
        else:
            self.answer(404, {"error": "not_found", "detail": "Unknown simulator control path."})


# ---------------------------------------------------------------------- server


class Simulator:
    """The server, startable in-process (tests, benchmark) or as a command (`python -m devtools.simulator`)."""

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
