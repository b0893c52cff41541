"""A slow or silent marketplace delays no other channel's events.

BigCommerce webhooks are thin: the order's products are fetched from the store before the event
can be applied. That fetch runs in its own task (ingestion.fetch), per channel, within a time
budget and behind a per-channel circuit breaker; the drain never makes an HTTP call and never
gives an event that still waits for its data a slot in its batch. Proved over real HTTP: a
store that hangs (a local server that records each request as it arrives, then never answers)
and the channel simulator's fault injection (latency, connections closed without an answer).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.utils import timezone

from ingestion.models import InboundEvent
from inventory.models import StockPosition
from inventory.services import stock_receive
from tests.ingestion.conftest import (
    BC_SECRET,
    SHOPIFY_SECRET,
    drain_all,
    listing,
    post_webhook,
    shopify_headers,
    standard_headers,
)

try:
    from devtools.simulator import Simulator
except ImportError:  # the simulator's home before devtools/simulator/
    from channels.simulator import Simulator

TOKEN = "bc-token"
STORE_HASH = "abc123"


def on_hand(sku, location) -> int:
    position = StockPosition.objects.filter(sku=sku, location=location).first()
    return position.on_hand if position else 0


def bc_notify(client, slug: str, order_id: int):
    payload = {"scope": "store/order/created", "store_id": "1", "producer": f"stores/{STORE_HASH}",
               "created_at": int(time.time()), "data": {"type": "order", "id": order_id}}
    body = json.dumps(payload).encode()
    return post_webhook(client, slug, None, standard_headers(body, key=BC_SECRET.encode()), raw=body)


def shopify_order(client, order_id: int, sku: str, quantity: int = 1):
    body = json.dumps({"id": order_id, "name": f"#{order_id}", "created_at": "2024-05-01T10:00:00Z",
                       "line_items": [{"id": order_id * 10, "sku": sku, "quantity": quantity}]}).encode()
    return post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)


def canonical_receipt(event_id: str, sku: str, quantity: int) -> dict:
    return {"event_id": event_id, "type": "receipt", "sku": sku, "location": "wh", "quantity": quantity,
            "occurred_at": datetime.now(UTC).isoformat()}


class HangingStore:
    """A BigCommerce store that records each request when it arrives, then answers nothing until
    released (or for 60 s)."""

    def __init__(self):
        self.requests: list[str] = []
        self.release = threading.Event()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                store.requests.append(self.path)
                store.release.wait(60)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging_store():
    store = HangingStore()
    yield store
    store.close()


@pytest.fixture
def simulator():
    sim = Simulator(seed=3).start()
    yield sim
    sim.stop()


def sim_control(sim, path: str, body: dict) -> dict:
    response = requests.post(f"{sim.url}/_sim/{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def bc_channel(make_channel, slug: str, base_url: str, **fields):
    return make_channel("bigcommerce", slug, secret=BC_SECRET, base_url=base_url, credentials={"access_token": TOKEN},
                        settings={"store_hash": STORE_HASH}, **fields)


# ------------------------------------------------------------------------------ the drain makes no HTTP call


@pytest.mark.django_db
def test_the_drain_applies_other_channels_events_while_a_bigcommerce_store_hangs(
        client, api, make_channel, shopify, hanging_store, tee, mug, wh):
    # given a BigCommerce store that accepts connections and never answers, with an order pending
    bc = bc_channel(make_channel, "bc", hanging_store.url)
    listing(bc, tee, "501")
    stock_receive(sku=mug, location=wh, quantity=10)
    assert bc_notify(client, "bc", 250).status_code == 200
    # and, behind it, a Shopify order and a canonical receipt
    assert shopify_order(client, 1001, "MUG-1", 2).status_code == 200
    accepted = api.post("/api/v1/events/", {"events": [canonical_receipt("r-1", "MUG-1", 5)]}, format="json")
    assert accepted.status_code == 202

    # when a drain runs
    result = inbound_events_drain()

    # then the other events are applied by that drain, without a word to BigCommerce
    assert hanging_store.requests == []
    assert on_hand(mug, wh) == 10 - 2 + 5
    bc_event = InboundEvent.objects.get(channel=bc)
    assert (bc_event.status, bc_event.attempts, bc_event.fetched) == ("pending", 0, None)
    assert result.claimed == 2 and result.done == 2  # the BigCommerce event took no batch slot


@pytest.mark.django_db
def test_a_full_batch_of_events_waiting_for_a_fetch_does_not_hold_back_the_next_events(
        client, api, make_channel, hanging_store, tee, wh, settings):
    settings.INGESTION_BATCH_SIZE = 3
    bc = bc_channel(make_channel, "bc", hanging_store.url)
    listing(bc, tee, "501")
    for order_id in range(1, 5):  # more BigCommerce events than a batch holds, all older
        bc_notify(client, "bc", order_id)
    api.post("/api/v1/events/", {"events": [canonical_receipt("r-2", "TEE-M", 4)]}, format="json")

    inbound_events_drain()

    assert on_hand(tee, wh) == 4
    assert hanging_store.requests == []


# ------------------------------------------------------------------------------ the fetch task


def fetch_service():
    from ingestion.services import inbound_events_fetch

    return inbound_events_fetch


@pytest.mark.django_db
def test_a_fetch_run_stops_at_its_time_budget_and_charges_only_what_it_tried(
        client, make_channel, simulator, tee, wh, settings):
    settings.INGESTION_FETCH_BUDGET_SECONDS = 0.5
    settings.INGESTION_FETCH_TIMEOUT_SECONDS = 1.0
    bc = bc_channel(make_channel, "bc-slow", simulator.store_url("bc-slow"))
    for order_id in (1, 2, 3):
        bc_notify(client, "bc-slow", order_id)
    sim_control(simulator, "faults", {"store": "bc-slow", "latency_ms": 3000})  # answers after 3 s

    result = fetch_service()(channel_id=bc.pk)

    first, *rest = InboundEvent.objects.filter(channel=bc).order_by("id")
    assert (first.attempts, first.error_code) == (1, "fetch_failed") and "timed out" in first.last_error.lower()
    assert [(e.attempts, e.fetched) for e in rest] == [(0, None), (0, None)]  # not tried, not charged
    assert result.failed == 1 and result.remaining == 2


@pytest.mark.django_db
def test_after_repeated_failures_a_channels_fetches_wait_for_the_cooldown_without_burning_attempts(
        client, make_channel, simulator, tee, wh):
    # given a store that closes every connection without an answer; the circuit opens after 2
    bc = bc_channel(make_channel, "bc-down", simulator.store_url("bc-down"), circuit_failure_threshold=2,
                    circuit_cooldown_seconds=1.0)
    listing(bc, tee, "501")
    stock_receive(sku=tee, location=wh, quantity=10)
    sim_control(simulator, "orders", {"store": "bc-down", "kind": "bigcommerce", "target": "http://127.0.0.1:9/",
                                      "secret": BC_SECRET, "order_id": 77,
                                      "lines": [{"sku": "TEE-M", "external_id": "501", "quantity": 3}]})
    bc_notify(client, "bc-down", 77)
    sim_control(simulator, "faults", {"store": "bc-down", "down": True})
    fetch = fetch_service()
    event = InboundEvent.objects.get(channel=bc)

    def run_when_due():
        InboundEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
        return fetch(channel_id=bc.pk)

    # when fetches fail twice, the second opens the circuit
    assert run_when_due().failed == 1
    assert run_when_due().failed == 1
    event.refresh_from_db()
    assert event.attempts == 2
    asked = len(simulator.state.requests_for("bc-down"))

    # then, while it is open, runs skip the channel: no request, no attempt, retried after it
    skipped = run_when_due()
    event.refresh_from_db()
    assert (skipped.skipped, skipped.failed, event.attempts) == (1, 0, 2)
    assert len(simulator.state.requests_for("bc-down")) == asked
    assert event.next_attempt_at > timezone.now()

    # after the cool-down one probe goes; failing, it re-opens the circuit, still without a charge
    time.sleep(1.1)
    probe = run_when_due()
    event.refresh_from_db()
    assert (probe.failed, event.attempts) == (1, 2)
    assert len(simulator.state.requests_for("bc-down")) == asked + 1

    # and once the store answers again, the next probe fetches and the drain applies the order
    sim_control(simulator, "faults", {"store": "bc-down", "clear": True})
    time.sleep(1.1)
    assert run_when_due().fetched == 1
    drain_all()
    event.refresh_from_db()
    assert event.status == "done"
    assert on_hand(tee, wh) == 7


# ------------------------------------------------------------------------------ with real workers


@pytest.fixture
def short_fetch_worker(monkeypatch, request):
    """A real Celery worker (2 processes) whose fetches have a 2 s budget and 1 s timeouts."""
    monkeypatch.setenv("INGESTION_FETCH_BUDGET_SECONDS", "2")
    monkeypatch.setenv("INGESTION_FETCH_TIMEOUT_SECONDS", "1")
    return request.getfixturevalue("celery_worker_process")


@pytest.mark.slow
def test_with_real_workers_a_slow_store_delays_no_other_channels_events(
        short_fetch_worker, live_server, simulator, api, make_channel, shopify, tee, mug, wh):
    from django.core.cache import cache

    from ingestion.services import drain_flag, partitions
    from tests.channels.conftest import wait_for

    # a drain queued by an earlier test (no worker then) would debounce ours
    cache.delete_many([drain_flag(p) for p in range(partitions())])
    # given three orders from a BigCommerce store that now answers only after a minute
    bc = bc_channel(make_channel, "bc-slow", simulator.store_url("bc-slow"))
    listing(bc, tee, "501")
    stock_receive(sku=tee, location=wh, quantity=10)
    stock_receive(sku=mug, location=wh, quantity=10)
    sim_control(simulator, "faults", {"store": "bc-slow", "latency_ms": 60_000})  # its API, not its webhooks
    for order_id in (1, 2, 3):
        sent = sim_control(simulator, "orders", {"store": "bc-slow", "kind": "bigcommerce", "order_id": order_id,
                                                 "target": f"{live_server.url}/webhooks/bc-slow/",
                                                 "secret": BC_SECRET,
                                                 "lines": [{"sku": "TEE-M", "external_id": "501", "quantity": 1}]})
        assert sent["status"] == 200, sent
    assert InboundEvent.objects.filter(channel=bc).count() == 3

    # when a Shopify order and a canonical receipt arrive after them
    sent = sim_control(simulator, "orders", {"store": "shop", "kind": "shopify", "order_id": 900,
                                             "target": f"{live_server.url}/webhooks/shop/", "secret": SHOPIFY_SECRET,
                                             "lines": [{"sku": "MUG-1", "quantity": 2}]})
    assert sent["status"] == 200
    api.post("/api/v1/events/", {"events": [canonical_receipt("r-9", "MUG-1", 5)]}, format="json")

    # then both are applied promptly, while the BigCommerce fetches time out in their own task
    # (before, every drain first fetched the three orders, 10 s each, in every worker process)
    wait_for(lambda: on_hand(mug, wh) == 13, timeout=15, interval=0.1, message="mug 10 - 2 + 5")
    assert InboundEvent.objects.filter(channel=bc, status="done").count() == 0
    assert on_hand(tee, wh) == 10


def inbound_events_drain():
    from ingestion.services import inbound_events_drain as drain

    return drain()
