"""The soak's clients: threads that send a mix of signed webhooks, canonical batches, reservations
and adjustments over HTTP, retry like real senders (same delivery id / Idempotency-Key) and record
every answer, so the audit can hold the server to what it acknowledged."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from ingestion.management.loadtools import shopify_headers, standard_webhook_headers

RETRY_FOR = 120.0  # default seconds a client keeps retrying one request (server restarting, 503, in flight)
RETRYABLE = {502, 503, 504}


@dataclass
class Namespace:
    """What the soak's setup created: names, secrets and the key the clients use."""

    run: str
    shopify: str
    pos: str
    skus: list[str]
    variants: dict[str, int]  # SKU code -> the Shopify variant id its listing maps
    warehouse: str
    store: str
    api_key: str
    shopify_secret: str
    pos_secret: str


@dataclass
class Record:
    """Everything sent and every answer, shared by the client threads (guarded by `lock`)."""

    budget: int
    retry_for: float = RETRY_FOR
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sent: Counter = field(default_factory=Counter)  # events by kind
    accepted: Counter = field(default_factory=Counter)  # events answered 2xx by kind
    answers: Counter = field(default_factory=Counter)  # (kind, HTTP status or "error") per request
    webhooks: dict = field(default_factory=dict)  # (channel slug, delivery id) -> {"acked", "expect"}
    api_events: dict = field(default_factory=dict)  # event_id -> {"acked", "expect"}
    adjustments: list = field(default_factory=list)  # {"key", "movements"} answered 201
    adjustment_rows: dict = field(default_factory=dict)  # reference -> ledger rows one application writes
    reservations: dict = field(default_factory=dict)  # id -> {"expect": active/committed/released, "via"}
    covered_orders: dict = field(default_factory=dict)  # (slug, delivery id) of an order -> the hold covering it
    duplicates_sent: int = 0
    duplicates_answered: int = 0
    server_errors: list = field(default_factory=list)  # 5xx other than 503 retry_later
    anomalies: list = field(default_factory=list)  # answers that break the contract (replay mismatch...)
    gave_up: list = field(default_factory=list)
    retries: int = 0
    claimed: int = 0  # events of the budget claimed by a client (sent or about to be)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, n: int, *, exact: bool = False) -> int:
        """Claim n events of the budget (the last claim may get fewer unless `exact`; 0 when spent)."""
        with self.lock:
            granted = max(0, min(n, self.budget - self.claimed))
            if exact and granted < n:
                return 0
            self.claimed += granted
            return granted

    def give_back(self, n: int) -> None:
        with self.lock:
            self.claimed -= n

    def done(self, kind: str, n: int, accepted: int) -> None:
        with self.lock:
            self.sent[kind] += n
            self.accepted[kind] += accepted

    def total_sent(self) -> int:
        with self.lock:
            return sum(self.sent.values())

    def spent(self) -> bool:
        with self.lock:
            return self.claimed >= self.budget


class Client:
    """One sender thread's behaviour; `run` loops until the event budget is spent."""

    order_ids = itertools.count(int(time.time() * 1000) * 1000)  # unique across runs and threads
    serial = itertools.count(1)

    def __init__(self, ns: Namespace, record: Record, url: str, seed: int, recent: list):
        self.ns, self.record, self.url = ns, record, url
        self.rng = random.Random(seed)
        self.session = requests.Session()
        self.recent = recent  # recent deliveries and API events, shared, for redeliveries/replays
        self.auth = {"Authorization": f"Bearer {ns.api_key}"}
        # Shares of the event budget; each weight is share / events per action.
        self.actions = [(self.shopify_order, 0.28), (self.redeliver, 0.05), (self.pos_batch, 0.12),
                        (self.api_batch, 0.25 / 7), (self.reservation, 0.15 / 2), (self.adjustment, 0.15)]

    def run(self, *, malformed: bool = False) -> None:
        if malformed:
            self.malformed()
        functions, weights = zip(*self.actions, strict=True)
        while not self.record.spent():
            self.rng.choices(functions, weights)[0]()

    # ---------------------------------------------------------------- HTTP with sender-style retries

    def post(self, kind: str, path: str, *, body: bytes, headers=None, sign=None) -> requests.Response | None:
        """POST until a final answer: retries connection errors, 502-504 and 409 in-flight with the
        same body and key (`sign()` re-signs each attempt), for up to `record.retry_for` seconds."""
        deadline = time.monotonic() + self.record.retry_for
        delay = 0.2
        while True:
            hdrs = {**(headers or {}), **(sign() if sign else {})}
            try:
                response = self.session.post(self.url + path, data=body, headers=hdrs, timeout=(5, 30))
                status = response.status_code
            except requests.RequestException as exc:
                response, status = None, f"error:{type(exc).__name__}"
            with self.record.lock:
                self.record.answers[(kind, status)] += 1
            in_flight = status == 409 and "idempotency_key_in_flight" in response.text
            if status not in RETRYABLE and not in_flight and response is not None:
                if status >= 500:
                    with self.record.lock:
                        self.record.server_errors.append(f"{kind} POST {path} -> {status}: {response.text[:300]}")
                return response
            if time.monotonic() > deadline:
                with self.record.lock:
                    self.record.gave_up.append(f"{kind} POST {path}: last answer {status}")
                return None
            with self.record.lock:
                self.record.retries += 1
            time.sleep(delay * self.rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 3.0)

    def post_json(self, kind: str, path: str, payload: dict, key: str | None = None):
        headers = {**self.auth, "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        return self.post(kind, path, body=json.dumps(payload).encode(), headers=headers)

    # ---------------------------------------------------------------- helpers

    def sku(self) -> str:
        """Skewed: half the traffic hits four hot SKUs, so batches and requests contend for locks."""
        skus = self.ns.skus
        return self.rng.choice(skus[:4] if self.rng.random() < 0.5 else skus)

    def canonical(self, *, sku: str | None = None) -> dict:
        type = self.rng.choice(["receipt", "sale", "sale", "return", "adjustment", "count", "transfer",
                                "cancellation"])
        event = {"event_id": f"soak-{self.ns.run}-{next(self.serial)}", "type": type, "sku": sku or self.sku(),
                 "location": self.ns.warehouse, "quantity": self.rng.randint(1, 3),
                 "occurred_at": datetime.now(UTC).isoformat()}
        if type == "adjustment" and self.rng.random() < 0.5:
            event["quantity"] = -event["quantity"]
        elif type == "count":  # absolute levels at the store; far above anything reserved there
            event.update(location=self.ns.store, quantity=self.rng.randint(9_000, 11_000))
        elif type == "transfer":
            event["to_location"] = self.ns.store
        return event

    def remember(self, item) -> None:
        with self.record.lock:
            self.recent.append(item)
            del self.recent[:-300]

    # ---------------------------------------------------------------- webhooks

    def send_webhook(self, slug: str, delivery_id: str, body: bytes, *, topic: str = "orders/create",
                     expect: str = "ok", duplicate: bool = False) -> requests.Response | None:
        if slug == self.ns.shopify:
            headers = shopify_headers(self.ns.shopify_secret, body, topic=topic, delivery_id=delivery_id)
            response = self.post("webhook", f"/webhooks/{slug}/", body=body, headers=headers)
        else:  # Standard Webhooks: a retry is signed again with its own timestamp, same id
            response = self.post("webhook", f"/webhooks/{slug}/", body=body,
                                 sign=lambda: standard_webhook_headers(self.ns.pos_secret, delivery_id, body))
        ok = response is not None and response.status_code == 200
        with self.record.lock:
            entry = self.record.webhooks.setdefault((slug, delivery_id), {"acked": False, "expect": expect})
            entry["acked"] |= ok
            if duplicate:
                self.record.duplicates_sent += 1
            if ok and response.json().get("status") == "duplicate":
                self.record.duplicates_answered += 1
        self.record.done("webhook", 1, int(ok))
        return response

    def malformed(self) -> None:
        """One of each deliberately bad event, whatever the dice say; each must end failed with it."""
        for sabotage in ("invalid_json", "unknown_listing"):
            if self.record.take(1):
                self.shopify_order(sabotage=sabotage)
        if self.record.take(1):
            self.pos_batch(sabotage="unknown_sku")
        self.api_batch(sabotage="unknown_sku")

    def shopify_order(self, *, order_id: int | None = None, lines: list[tuple[str, int]] | None = None,
                      sabotage: str | None = None) -> str | None:
        """orders/create with 1-3 lines; a few are malformed on purpose (bad JSON, unknown variant),
        a few are sent again under a new delivery id (Shopify does that) or cancelled afterwards."""
        if order_id is None and sabotage is None:  # else: its event was claimed by the caller
            if not self.record.take(1):
                return None
            roll = self.rng.random()
            sabotage = "unknown_listing" if roll < 0.02 else "invalid_json" if roll < 0.04 else None
        order_id = order_id or next(self.order_ids)
        lines = lines or [(self.sku(), self.rng.randint(1, 2)) for _ in range(self.rng.randint(1, 3))]
        items = [{"id": order_id * 10 + n, "variant_id": self.ns.variants[sku], "sku": "", "quantity": quantity,
                  "fulfillment_status": None} for n, (sku, quantity) in enumerate(lines)]
        expect = sabotage or "ok"
        if sabotage == "unknown_listing":
            items[0]["variant_id"] = 1  # no listing maps it, and no SKU code to fall back on
        payload = {"id": order_id, "name": f"#{order_id}", "created_at": datetime.now(UTC).isoformat(),
                   "line_items": items}
        body = json.dumps(payload).encode()
        if sabotage == "invalid_json":
            body = body[: len(body) // 2]  # signed, but cut short
        delivery_id = str(uuid.uuid4())
        self.send_webhook(self.ns.shopify, delivery_id, body, expect=expect)
        self.remember(("webhook", self.ns.shopify, delivery_id, body, expect))
        if expect == "ok" and self.rng.random() < 0.08 and self.record.take(1):
            # The same order again under a new webhook id (or as a cancellation): one effect per line.
            if self.rng.random() < 0.5:
                self.send_webhook(self.ns.shopify, str(uuid.uuid4()), body)
            else:
                cancelled = {**payload, "cancelled_at": datetime.now(UTC).isoformat()}
                self.send_webhook(self.ns.shopify, str(uuid.uuid4()), json.dumps(cancelled).encode(),
                                  topic="orders/cancelled")
        return delivery_id

    def redeliver(self) -> None:
        """A sender that did not see our 200 (or did not trust it) delivers again, same id."""
        with self.record.lock:
            previous = [item for item in self.recent if item[0] == "webhook"]
        if not previous or not self.record.take(1):
            return
        _, slug, delivery_id, body, expect = self.rng.choice(previous)
        self.send_webhook(slug, delivery_id, body, expect=expect, duplicate=True)

    def pos_batch(self, *, sabotage: str | None = None) -> None:
        """A till flushing 2-5 canonical events as one Standard Webhooks delivery."""
        if sabotage is None and not self.record.take(1):
            return
        events = [self.canonical() for _ in range(self.rng.randint(2, 5))]
        expect = "ok"
        if sabotage or self.rng.random() < 0.02:
            events[-1]["sku"], expect = f"soak-unknown-{self.ns.run}", "unknown_sku"
        body = json.dumps({"events": events}).encode()
        delivery_id = f"msg_{uuid.uuid4().hex}"
        self.send_webhook(self.ns.pos, delivery_id, body, expect=expect)
        self.remember(("webhook", self.ns.pos, delivery_id, body, expect))

    # ---------------------------------------------------------------- API

    def api_batch(self, *, sabotage: str | None = None) -> None:
        """POST /api/v1/events/ with 3-12 items: mostly new, some replayed event ids (duplicates),
        an unknown SKU now and then (fails when processed), rarely a malformed item (rejected)."""
        size = self.record.take(self.rng.randint(3, 12))
        if not size:
            return
        events, expects, replays, invalid = [], [], 0, set()
        with self.record.lock:
            earlier = [item[1] for item in self.recent if item[0] == "api"]
        for index in range(size):
            roll = 0.09 if sabotage and index == 0 else self.rng.random()
            if roll < 0.08 and earlier:
                event, expect = self.rng.choice(earlier), "duplicate"
                replays += 1
            elif roll < 0.10:
                event, expect = {**self.canonical(), "sku": f"soak-unknown-{self.ns.run}"}, "unknown_sku"
            elif roll < 0.11:
                event, expect = {**self.canonical(), "type": "receipt", "quantity": 0}, "rejected"
                invalid.add(index)
            else:
                event, expect = self.canonical(), "ok"
            events.append(event)
            expects.append(expect)
        response = self.post_json("events", "/api/v1/events/", {"events": events}, key=str(uuid.uuid4()))
        ok = response is not None and response.status_code == 202
        with self.record.lock:
            self.record.duplicates_sent += replays
            for event, expect in zip(events, expects, strict=True):
                if expect != "duplicate":
                    entry = self.record.api_events.setdefault(event["event_id"], {"acked": False, "expect": expect})
                    entry["acked"] |= ok and expect != "rejected"
            if ok:
                answer = response.json()
                self.record.duplicates_answered += answer["duplicates"]
                rejected = {item["index"] for item in answer["rejected"]}
                if rejected != invalid or answer["accepted"] + answer["duplicates"] + len(rejected) != size:
                    self.record.anomalies.append(f"events batch answer {answer} for {size} items, "
                                                 f"expected rejections at {sorted(invalid)}")
        for event, expect in zip(events, expects, strict=True):
            if ok and expect == "ok":
                self.remember(("api", event))
        self.record.done("events", size, size - len(invalid) if ok else 0)

    def reservation(self) -> None:
        """Create a hold (Idempotency-Key), then commit or release it through the API, or let a
        Shopify order carrying its order_ref commit it through ingestion, or both (in either order,
        racing the drain): the order's lines must then be covered by the hold, not sold again."""
        mode = self.rng.choices(["commit", "release", "order", "both"], [0.40, 0.35, 0.13, 0.12])[0]
        events = 3 if mode == "both" else 2  # the hold and what ends it
        if not self.record.take(events, exact=True):
            if self.record.take(1):
                self.adjustment(claimed=True)  # one event left in the budget
            return
        lines = [(sku, self.rng.randint(1, 3)) for sku in {self.sku() for _ in range(self.rng.randint(1, 2))}]
        body = {"lines": [{"sku": sku, "quantity": q} for sku, q in lines], "ttl_seconds": 600}
        order_id = next(self.order_ids)
        if mode in ("order", "both") or self.rng.random() < 0.3:
            body.update(channel=self.ns.shopify, order_ref=str(order_id))
        key = str(uuid.uuid4())
        response = self.post_json("reservations", "/api/v1/reservations/", body, key=key)
        created = response is not None and response.status_code == 201
        self.record.done("reservations", 1, int(created))
        if not created:
            self.record.give_back(events - 1)  # no follow-up to send
            return
        reservation_id = response.json()["id"]
        with self.record.lock:
            self.record.reservations[reservation_id] = {"expect": "active", "via": mode}
        self._check_replay("reservations", "/api/v1/reservations/", body, key, response)
        time.sleep(self.rng.uniform(0, 0.2))  # a buyer at checkout
        steps = {"commit": ["commit"], "release": ["release"], "order": ["order"],
                 "both": self.rng.sample(["commit", "order"], 2)}[mode]
        expect = "active"
        for step in steps:
            if step == "order":
                delivery_id = self.shopify_order(order_id=order_id, lines=lines)
                with self.record.lock:
                    self.record.covered_orders[(self.ns.shopify, delivery_id)] = reservation_id
                expect = "committed"
            else:
                path = f"/api/v1/reservations/{reservation_id}/{step}/"
                answer = self.post_json("reservations", path, {}, key=str(uuid.uuid4()))
                ok = answer is not None and answer.status_code == 200
                self.record.done("reservations", 1, int(ok))
                if ok:
                    expect = "committed" if step == "commit" else "released"
        with self.record.lock:
            self.record.reservations[reservation_id]["expect"] = expect

    def adjustment(self, *, claimed: bool = False) -> None:
        """POST /api/v1/stock/adjustments/ with an Idempotency-Key (503 retried with the same key)."""
        if not claimed and not self.record.take(1):
            return
        type = self.rng.choices(["receipt", "sale", "adjustment", "count", "transfer"], [3, 2.5, 1.5, 1, 2])[0]
        body = {"sku": self.sku(), "location": self.ns.warehouse, "type": type,
                "quantity": self.rng.randint(1, 3), "reference": f"soak-{self.ns.run}-adj-{next(self.serial)}"}
        if type == "adjustment" and self.rng.random() < 0.5:
            body["quantity"] = -body["quantity"]
        elif type == "count":
            body.update(location=self.ns.store, quantity=self.rng.randint(9_000, 11_000))
        elif type == "transfer":
            body["to_location"] = self.ns.store
        with self.record.lock:
            self.record.adjustment_rows[body["reference"]] = 2 if type == "transfer" else 1
        key = str(uuid.uuid4())
        response = self.post_json("adjustments", "/api/v1/stock/adjustments/", body, key=key)
        ok = response is not None and response.status_code == 201
        if ok:
            with self.record.lock:
                self.record.adjustments.append({"key": key, "reference": body["reference"],
                                                "movements": response.json()["movements"]})
        self.record.done("adjustments", 1, int(ok))
        if ok:
            self._check_replay("adjustments", "/api/v1/stock/adjustments/", body, key, response)

    def _check_replay(self, kind: str, path: str, body: dict, key: str, first: requests.Response) -> None:
        """Now and then the client retries a request that had succeeded (same key, same body):
        the answer must be the first one again, marked replayed, with no second effect."""
        if self.rng.random() >= 0.05 or not self.record.take(1):
            return
        again = self.post_json(kind, path, body, key=key)
        ok = again is not None and again.status_code == first.status_code
        self.record.done(kind, 1, int(ok))
        if not ok or again.json() != first.json() or again.headers.get("Idempotent-Replayed") != "true":
            with self.record.lock:
                self.record.anomalies.append(
                    f"{kind} replay with the same Idempotency-Key answered "
                    f"{again.status_code if again is not None else 'nothing'} {again.text[:200] if again else ''}"
                    f" instead of the first answer {first.status_code} {first.text[:200]}")
