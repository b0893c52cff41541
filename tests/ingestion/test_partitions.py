"""Drain partitions (docs/ingestion.md, "Partitions and scale-out"): events hash onto partitions
by SKU, or by order for marketplace orders; one drain at a time per partition."""

import json
import threading
import time
from contextlib import contextmanager

import pytest
from django.core.cache import cache
from django.db import connection, transaction

from ingestion.drain import _partition_lock
from ingestion.models import InboundEvent
from ingestion.services import (
    drain_flag,
    events_accept,
    inbound_events_drain,
    inbound_events_drain_partition,
    partition_for,
)
from ingestion.tasks import inbound_drain_task
from inventory.services import stock_receive
from tests.ingestion.conftest import post_webhook, shopify_headers


def canonical(event_id: str, sku: str, quantity: int = 1) -> dict:
    return {"event_id": event_id, "type": "receipt", "sku": sku, "location": "wh", "quantity": quantity,
            "occurred_at": "2024-05-01T10:00:00Z"}


@pytest.mark.django_db
def test_an_orders_sale_cancellation_and_refund_share_one_partition(client, shopify, tee, wh, settings):
    settings.INGESTION_PARTITIONS = 16
    stock_receive(sku=tee, location=wh, quantity=10)
    deliveries = [("orders/create", {"id": 42, "line_items": [{"id": 1, "sku": "TEE-M", "quantity": 1}]}),
                  ("orders/cancelled", {"id": 42, "line_items": [{"id": 1, "sku": "TEE-M", "quantity": 1}]}),
                  ("refunds/create", {"id": 9001, "order_id": 42, "refund_line_items": []})]
    for topic, payload in deliveries:
        body = json.dumps(payload).encode()
        assert post_webhook(client, "shop", None, shopify_headers(body, topic=topic), raw=body).status_code == 200

    assert InboundEvent.objects.filter(channel=shopify).values("partition").distinct().count() == 1


@pytest.mark.django_db
def test_canonical_events_hash_by_sku_onto_every_partition(wh, settings):
    settings.INGESTION_PARTITIONS = 4
    skus = [f"SKU-{i}" for i in range(40)]
    events_accept(events=[canonical(f"e-{sku}-{n}", sku) for sku in skus for n in range(2)])

    by_sku = {}
    for event in InboundEvent.objects.all():
        by_sku.setdefault(event.payload["sku"], set()).add(event.partition)
    assert all(len(partitions) == 1 for partitions in by_sku.values())  # one SKU, one partition
    assert set().union(*by_sku.values()) == {0, 1, 2, 3}
    assert partition_for(source="api", channel_id=None, payload={"sku": "SKU-1"}, delivery_id="x") == \
        by_sku["SKU-1"].pop()  # stable: the same key, the same partition


@pytest.mark.django_db
def test_a_partition_drain_takes_only_its_own_events(tee, wh, settings):
    settings.INGESTION_PARTITIONS = 4
    events_accept(events=[canonical(f"e{i}", f"SKU-{i}") for i in range(20)])
    partition = InboundEvent.objects.order_by("id").first().partition
    mine = InboundEvent.objects.filter(partition=partition).count()

    result = inbound_events_drain(partition=partition)

    assert result.claimed == mine
    assert set(InboundEvent.objects.exclude(status="pending").values_list("partition", flat=True)) == {partition}


@contextmanager
def _held_elsewhere(partition: int):
    """The partition's drain lock held by another connection (a drain on another worker) meanwhile."""
    held, release = threading.Event(), threading.Event()

    def holder():
        try:
            with transaction.atomic():
                assert _partition_lock(partition)
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


@pytest.mark.django_db(transaction=True)
def test_one_drain_at_a_time_per_partition(tee, wh, settings):
    """A drain that finds its partition held claims nothing (its events stay for the holder, in
    order); once the holder commits, the partition drains. Fails if the advisory lock is removed."""
    settings.INGESTION_PARTITIONS = 2
    events_accept(events=[canonical("held-1", "TEE-M")])
    partition = InboundEvent.objects.get().partition
    with _held_elsewhere(partition):
        busy = inbound_events_drain(partition=partition)

    assert busy.busy and busy.claimed == 0
    assert InboundEvent.objects.get().status == "pending"
    assert inbound_events_drain(partition=partition).claimed == 1


@pytest.mark.django_db(transaction=True)
def test_a_drain_that_finds_its_partition_held_leaves_the_wake_up_flag_set(tee, wh, settings):
    """The flag is cleared only by a drain that holds the partition, before it claims: while the
    holder runs, events find the flag set and queue no more drains (each busy retry used to clear
    it and let the next event start another chain of retries). Fails if the busy task clears it."""
    settings.INGESTION_PARTITIONS = 2
    events_accept(events=[canonical("flag-1", "TEE-M")])
    partition = InboundEvent.objects.get().partition
    assert cache.get(drain_flag(partition))  # set by the intake's wake-up
    with _held_elsewhere(partition):
        assert inbound_drain_task(partition) == 0  # busy: retries in 0.2 s
        assert cache.get(drain_flag(partition))

    assert inbound_drain_task(partition) == 1
    assert cache.get(drain_flag(partition)) is None
    assert InboundEvent.objects.get().status == "done"


@pytest.mark.django_db(transaction=True)
def test_an_event_received_when_the_flag_is_cleared_is_claimed_by_that_drain(tee, wh, settings):
    """The drain clears the wake-up flag when a claim first finds nothing, then claims once more:
    an event received at that moment finds the flag cleared too late to be woken for (its drain
    is this one), so that claim must take it. Fails if the claim after the clear is left out."""
    settings.INGESTION_PARTITIONS = 1

    def receive_one():  # as if a delivery committed just as the flag was cleared
        time.sleep(0.01)
        events_accept(events=[canonical("late-1", "TEE-M")])

    result = inbound_events_drain_partition(partition=0, on_idle=receive_one)

    assert result.claimed == 1
    assert InboundEvent.objects.get().status == "done"


@pytest.mark.django_db(transaction=True)
def test_the_wake_up_flag_stays_set_while_the_drain_finds_events(tee, wh, settings):
    """The flag is cleared only once a claim finds nothing: while a drain has events, deliveries
    find the flag set and queue no further drains (each would find the partition held and retry
    every 0.2 s). Fails if the flag is cleared when the drain starts."""
    settings.INGESTION_PARTITIONS = 1
    settings.INGESTION_BATCH_SIZE = 1
    events_accept(events=[canonical(f"run-{i}", "TEE-M") for i in range(3)])
    seen = []

    def idle():
        seen.append((cache.get(drain_flag(0)), InboundEvent.objects.filter(status="pending").count()))
        cache.delete(drain_flag(0))

    result = inbound_events_drain_partition(partition=0, on_idle=idle)

    assert result.claimed == 3
    assert seen == [(1, 0)]  # called once, after the last event, the flag still set until then


@pytest.mark.django_db(transaction=True)
def test_a_drain_that_fails_clears_its_wake_up_flag(tee, wh, settings, monkeypatch):
    """A drain that raises leaves its events pending; the flag is cleared so that the next
    delivery queues a drain at once instead of waiting out the flag's TTL."""
    from ingestion import services

    settings.INGESTION_PARTITIONS = 1
    events_accept(events=[canonical("fail-1", "TEE-M")])
    assert cache.get(drain_flag(0))

    def broken(**_kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "inbound_events_drain_partition", broken)
    with pytest.raises(RuntimeError):
        inbound_drain_task(0)

    assert cache.get(drain_flag(0)) is None
    assert InboundEvent.objects.get().status == "pending"


@pytest.mark.django_db(transaction=True)
def test_a_process_that_found_the_flag_set_asks_redis_again_only_after_its_quiet_period(tee, wh, settings):
    """One Redis call per commit was a fifth of a webhook ack's CPU: within INGESTION_KICK_QUIET_MS
    of finding the flag set, a process queues nothing (the flag's drain claims after that
    period); after it, it asks again."""
    settings.INGESTION_PARTITIONS = 1
    settings.INGESTION_KICK_QUIET_MS = 300
    events_accept(events=[canonical("quiet-1", "TEE-M")])
    assert cache.get(drain_flag(0))  # set by this wake-up
    cache.delete(drain_flag(0))  # as the drain does when it goes idle

    events_accept(events=[canonical("quiet-2", "TEE-M")])
    assert cache.get(drain_flag(0)) is None  # within the period: no Redis call, no drain queued

    time.sleep(0.35)
    events_accept(events=[canonical("quiet-3", "TEE-M")])
    assert cache.get(drain_flag(0))  # after it: asked again, a drain queued


@pytest.mark.django_db(transaction=True)
def test_an_event_whose_wake_up_was_skipped_is_claimed_by_the_drain_that_cleared_the_flag(
        tee, wh, settings, monkeypatch):
    """After clearing the flag, a drain claims at once and then once more after the quiet period:
    an event committed between those claims, by a process within its quiet period (no wake-up
    sent), is this drain's. Fails if the drain returns after the claim that follows the clear."""
    from ingestion import drain

    settings.INGESTION_PARTITIONS = 1
    settings.INGESTION_KICK_QUIET_MS = 200
    events_accept(events=[canonical("skip-1", "TEE-M")])  # this process now has a quiet period
    claims, real = [], drain.inbound_events_drain

    def claim(**kwargs):
        result = real(**kwargs)
        claims.append(result.claimed)
        if claims == [1, 0, 0]:  # the claim right after the clear found nothing: an event lands now
            events_accept(events=[canonical("skip-2", "TEE-M")])
            assert cache.get(drain_flag(0)) is None  # its wake-up was skipped: nothing else would drain it
        return result

    monkeypatch.setattr(drain, "inbound_events_drain", claim)
    started = time.monotonic()
    result = drain.inbound_events_drain_partition(partition=0, on_idle=lambda: cache.delete(drain_flag(0)))

    assert claims == [1, 0, 0, 1, 0] and result.claimed == 2
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"done"}
    assert time.monotonic() - started >= 0.2  # its last claim came after the quiet period
