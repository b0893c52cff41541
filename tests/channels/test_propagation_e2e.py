"""Propagation end to end: committed stock changes, a real Celery worker, a crash between commit
and send, and the marketplace's echo of our own push coming back through the webhook endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from channels.models import DirtyPair, PushAttempt
from channels.propagation import channel_push, channels_due
from inventory import services as stock
from inventory.models import StockMovement, StockPosition
from tests.channels.conftest import KINDS, external_id, wait_for
from tests.conftest import ROOT, database_url_for_subprocess
from tests.factories import LocationFactory, SkuFactory


@pytest.mark.slow
def test_every_channel_shows_the_change_through_a_real_worker(celery_worker_process, simulator,
                                                              make_channel, list_sku):
    location = LocationFactory(code="wh")
    sku = SkuFactory(code="E2E-1", safety_stock=0)
    channels = []
    for kind in sorted(KINDS):
        channel = make_channel(kind, slug=f"e2e-{kind}", rate_limit_per_second=5.0, rate_limit_burst=10)
        list_sku(channel, sku)
        channels.append(channel)

    def shown() -> set:
        return {simulator.state.levels(c.slug)["levels"].get(external_id(c.kind, 1, sku.code)) for c in channels}

    # one change, committed: every channel shows it soon (the worker pushes; nothing is called here)
    started = time.monotonic()
    stock.stock_receive(sku=sku, location=location, quantity=200)
    wait_for(lambda: shown() == {200}, timeout=90, message="all six channels to show 200")
    first_latency = time.monotonic() - started

    # a burst of 100 sales: the channels end on the final value with far fewer than 100 pushes each
    burst_started = time.monotonic()
    for _ in range(100):
        stock.stock_sell(sku=sku, location=location, quantity=1)
    wait_for(lambda: shown() == {100}, timeout=120, message="all six channels to show 100")
    elapsed = time.monotonic() - burst_started
    # One SKU: Shopify's request count is the number of pushes. Coalescing plus the channel's
    # limit (5/s, burst 10) bound it, whatever the machine's speed.
    shopify_requests = len(simulator.state.requests_for("e2e-shopify"))
    assert shopify_requests <= min(1 + 10 + 5 * elapsed + 1, 60), (shopify_requests, elapsed)
    # A channel shows 100 a moment before the worker records it (and settles a pair re-marked
    # while that push was in flight, without sending): the outbox empties right after.
    wait_for(lambda: not DirtyPair.objects.exists(), timeout=30, message="the outbox to drain")
    assert first_latency < 10  # generous: a shared CI machine; the benchmark measures the real number


@pytest.mark.slow
def test_outbox_survives_a_crash_between_commit_and_send(transactional_db, simulator, make_channel, list_sku):
    location = LocationFactory(code="wh")
    sku = SkuFactory(code="CRASH-1")
    channel = make_channel("woocommerce")
    list_sku(channel, sku)
    channel_push(channel_id=channel.pk)  # the listing's initial push (0)
    # a process commits a stock change and dies before any after-commit hook (the enqueue) runs
    script = textwrap.dedent(f"""
        import functools, os
        import django
        django.setup()
        from django.db import transaction
        from inventory.locking import positions_lock
        from inventory.services import MovementContext, movement_apply, positions_changed
        with transaction.atomic():
            transaction.on_commit(functools.partial(os._exit, 0))  # runs first: the crash
            position = positions_lock([({sku.pk}, {location.pk})])[({sku.pk}, {location.pk})]
            movement_apply(position=position, type="receipt", on_hand_delta=9,
                           context=MovementContext(source="crash-test"))
            positions_changed([position], availability_rose=True)
        raise SystemExit("not reached: the process exits inside on_commit")
    """)
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    # the change and its outbox row were committed together; nothing was pushed
    assert StockPosition.objects.get(sku=sku, location=location).on_hand == 9
    assert DirtyPair.objects.filter(channel=channel, sku=sku).exists()
    assert simulator.state.levels(channel.slug)["levels"] == {"501": 0}
    # the sweeper finds the channel and the push delivers the committed quantity
    assert channels_due() == [channel.pk]
    channel_push(channel_id=channel.pk)
    assert simulator.state.levels(channel.slug)["levels"] == {"501": 9}
    assert not DirtyPair.objects.exists()


@pytest.mark.slow
def test_the_marketplace_echo_of_our_push_is_not_applied_as_a_stock_change(live_server, simulator, make_channel,
                                                                           list_sku):
    from ingestion.models import InboundEvent
    from ingestion.services import inbound_events_drain

    location = LocationFactory(code="wh")
    sku = SkuFactory(code="ECHO-1", safety_stock=2)
    channel = make_channel("shopify", slug="echo-shop", webhook_secret="shpss_echo_secret",
                           default_location=location, authoritative_locations=[location])
    list_sku(channel, sku)
    store = simulator.state.store(channel.slug)
    store.echo, store.secret = True, "shpss_echo_secret"
    store.webhook_url = f"{live_server.url}/webhooks/{channel.slug}/"
    stock.stock_receive(sku=sku, location=location, quantity=10)
    movements = StockMovement.objects.count()
    # when we push 8 (10 - safety 2), Shopify answers with inventory_levels/update available=8
    channel_push(channel_id=channel.pk)
    event = wait_for(lambda: InboundEvent.objects.filter(channel=channel, topic="inventory_levels/update").first(),
                     timeout=60, message="the echo webhook")
    inbound_events_drain()
    event.refresh_from_db()
    # then it is recognised as our own echo: no count is applied
    assert "echo" in str(event.outcome), event.outcome
    assert StockMovement.objects.count() == movements
    assert StockPosition.objects.get(sku=sku, location=location).on_hand == 10
    assert PushAttempt.objects.filter(channel=channel, outcome="success").count() == 1
