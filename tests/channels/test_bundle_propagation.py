"""Bundles on channels, over real HTTP against the channel simulator: a bundle's listing is pushed
its derived quantity (after safety stock and buffer), and a change to any component re-pushes
every bundle made of it, coalesced like any push."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels.models import DirtyPair
from channels.propagation import channel_push, channel_quantities
from inventory import services as stock
from tests.channels.conftest import external_id
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db


def levels(simulator, store: str) -> dict:
    return simulator.state.levels(store)["levels"]


@pytest.fixture
def kit(db):
    LocationFactory(code="wh")
    LocationFactory(code="store")
    SkuFactory(code="MUG")
    SkuFactory(code="TEA")
    stock.stock_receive(sku="MUG", location="wh", quantity=9)   # 4 sets at wh
    stock.stock_receive(sku="TEA", location="wh", quantity=10)
    stock.stock_receive(sku="MUG", location="store", quantity=2)  # 1 set at store
    stock.stock_receive(sku="TEA", location="store", quantity=5)
    return stock.sku_create(code="GIFT", name="Gift", safety_stock=1,
                            components=[{"sku": "MUG", "quantity": 2}, {"sku": "TEA", "quantity": 1}])


@pytest.mark.parametrize("kind", ["shopify", "woocommerce", "webhook"])
def test_a_bundle_listing_is_pushed_its_derived_quantity_and_follows_its_components(kind, simulator, make_channel,
                                                                                     list_sku, kit):
    channel = make_channel(kind, buffer={"type": "units", "value": 1})
    list_sku(channel, kit)
    # sum over locations of whole sets (4 + 1), minus safety stock 1, minus buffer 1
    assert channel_quantities(channel=channel, sku_ids=[kit.pk]) == {kit.pk: 3}
    channel_push(channel_id=channel.pk)
    assert levels(simulator, channel.slug) == {external_id(kind, 1, "GIFT"): 3}

    # a component sale marks the bundle's listing in the same transaction
    stock.stock_sell(sku="MUG", location="wh", quantity=3)  # wh: 6 mugs -> 3 sets
    assert DirtyPair.objects.filter(channel=channel, sku=kit).exists()
    channel_push(channel_id=channel.pk)
    assert levels(simulator, channel.slug) == {external_id(kind, 1, "GIFT"): 2}

    # selling the bundle itself moves it too
    stock.stock_sell(sku="GIFT", location="store", quantity=1)
    channel_push(channel_id=channel.pk)
    assert levels(simulator, channel.slug) == {external_id(kind, 1, "GIFT"): 1}


def test_a_channel_fed_by_one_location_derives_the_bundle_there_only(simulator, make_channel, list_sku, kit):
    from inventory.models import Location

    channel = make_channel("webhook", slug="store-only")
    channel.locations.set([Location.objects.get(code="store")])
    assert channel_quantities(channel=channel, sku_ids=[kit.pk]) == {kit.pk: 0}  # 1 set - safety 1


def test_an_inactive_component_shows_its_bundles_as_zero(make_channel, list_sku, kit):
    channel = make_channel("webhook")
    stock.sku_update(sku=stock.sku_resolve(sku="TEA"), active=False)
    assert channel_quantities(channel=channel, sku_ids=[kit.pk]) == {kit.pk: 0}


def test_a_component_in_many_bundles_marks_them_in_one_statement_and_pushes_only_what_moved(
        simulator, make_channel, list_sku, kit):
    channel = make_channel("woocommerce")
    SkuFactory(code="SPOON")
    stock.stock_receive(sku="SPOON", location="wh", quantity=1000)
    bundles = [stock.sku_create(code=f"SET-{n}", name=f"Set {n}", components=[
        {"sku": "SPOON", "quantity": 1}, {"sku": "TEA", "quantity": 1 + n % 3}]) for n in range(30)]
    for n, bundle in enumerate(bundles, start=1):
        list_sku(channel, bundle, n=n)
    channel_push(channel_id=channel.pk)
    before = len(simulator.state.requests_for(channel.slug))

    with CaptureQueriesContext(connection) as queries:
        stock.stock_sell(sku="SPOON", location="wh", quantity=1)  # teas limit every set: nothing moves
    marking = [q for q in queries.captured_queries if "channels_dirtypair" in q["sql"]]
    assert len(marking) == 1
    assert DirtyPair.objects.filter(channel=channel).count() == 30

    report = channel_push(channel_id=channel.pk)
    assert report.requests == 0 and len(simulator.state.requests_for(channel.slug)) == before
    assert not DirtyPair.objects.filter(channel=channel).exists()

    stock.stock_sell(sku="TEA", location="wh", quantity=1)  # 9 teas left at wh
    report = channel_push(channel_id=channel.pk)
    # one batched request carries the sets whose quantity moved (those of 1 or 2 teas per set)
    teas = {n: 1 + (n - 1) % 3 for n in range(1, 31)}
    moved = {n for n, per_set in teas.items() if 10 // per_set != 9 // per_set}
    assert report.requests == 1 and report.pushed == len(moved) == 20
    shown = levels(simulator, channel.slug)
    assert all(shown[external_id("woocommerce", n, "")] == 9 // teas[n] for n in teas)
