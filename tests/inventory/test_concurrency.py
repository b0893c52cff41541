"""Races with real threads, each on its own PostgreSQL connection.

These tests fail if the row lock, the conditional update or the one-statement sale's condition
(inventory.sale_statement) is removed: without the lock,
sellers decide on stale numbers and either oversell (CHECK violation instead of a clean 409) or
write ledger rows whose `on_hand_after` repeat; without pk-ordered locking, opposite transfers
deadlock.
"""

import pytest
from django.db import transaction

from core.errors import InsufficientStock
from core.observability.metrics import SALE_GROUPS
from inventory import selectors, services
from inventory.locking import positions_lock
from inventory.models import StockMovement, StockPosition
from tests.conftest import run_concurrently
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["one-statement", "general", "group-commit"])
def sale_path(request, settings):
    """Sales every way: the one-statement sale (its guard is the UPDATE's re-checked condition),
    the general path (its guard is the row lock), and sales of one position combined into one
    statement (inventory.sale_group: the running sum under the position's lock)."""
    settings.STOCK_SALE_ONE_STATEMENT = request.param != "general"
    settings.STOCK_SALE_GROUP_COMMIT = request.param == "group-commit"
    return request.param


def test_fifty_concurrent_sellers_of_twenty_units_sell_exactly_twenty(sale_path):
    # given
    sku = SkuFactory(code="HOT")
    location = LocationFactory(code="wh")
    services.stock_receive(sku=sku.code, location=location.code, quantity=20)
    groups_before = SALE_GROUPS.labels(result="committed")._value.get()

    # when
    def sell():
        return services.stock_sell(sku=sku.code, location=location.code, quantity=1)

    outcomes = run_concurrently(sell, [()] * 50)
    if sale_path == "group-commit":  # really combined: the threads share this process
        assert SALE_GROUPS.labels(result="committed")._value.get() > groups_before

    # then
    sold = [o for o in outcomes if isinstance(o, services.AdjustmentResult)]
    refused = [o for o in outcomes if isinstance(o, InsufficientStock)]
    unexpected = [o for o in outcomes if not isinstance(o, services.AdjustmentResult | InsufficientStock)]
    assert unexpected == []
    assert (len(sold), len(refused)) == (20, 30)
    position = StockPosition.objects.get(sku=sku, location=location)
    assert (position.on_hand, position.version) == (0, 21)
    # Serialized by the lock: each sale saw the previous one's result.
    afters = sorted(StockMovement.objects.filter(type="sale").values_list("on_hand_after", flat=True))
    assert afters == list(range(20))
    assert selectors.ledger_drift() == []


def test_concurrent_sellers_never_take_reserved_units(sale_path):
    # given: 20 on hand, 5 of them held by a checkout
    sku = SkuFactory(code="HELD")
    location = LocationFactory(code="wh")
    services.stock_receive(sku=sku.code, location=location.code, quantity=20)
    position = StockPosition.objects.get(sku=sku, location=location)
    with transaction.atomic():
        locked = positions_lock([(sku.pk, location.pk)])[(sku.pk, location.pk)]
        services.movement_apply(position=locked, type="reserve", reserved_delta=5,
                                context=services.MovementContext(source="test"))

    # when: 40 sellers of 1 unit, each with its own event key
    def sell(n):
        return services.stock_sell(sku=sku.code, location=location.code, quantity=1,
                                   context=services.MovementContext(event_key=f"held-{n}"))

    outcomes = run_concurrently(sell, [(n,) for n in range(40)])

    # then: exactly the 15 free units were sold; the held ones were not
    sold = [o for o in outcomes if isinstance(o, services.AdjustmentResult)]
    assert [o for o in outcomes if not isinstance(o, services.AdjustmentResult | InsufficientStock)] == []
    assert len(sold) == 15
    position.refresh_from_db()
    assert (position.on_hand, position.reserved, position.version) == (5, 5, 17)
    afters = sorted(StockMovement.objects.filter(type="sale").values_list("on_hand_after", flat=True))
    assert afters == list(range(5, 20))
    assert selectors.ledger_drift() == []


def test_opposite_transfers_do_not_deadlock_and_keep_totals():
    sku = SkuFactory(code="MOVER")
    a = LocationFactory(code="a")
    b = LocationFactory(code="b")
    services.stock_receive(sku=sku.code, location=a.code, quantity=100)
    services.stock_receive(sku=sku.code, location=b.code, quantity=100)

    def transfer(src, dst):
        return services.stock_transfer(sku=sku.code, location=src, to_location=dst, quantity=1)

    outcomes = run_concurrently(transfer, [("a", "b"), ("b", "a")] * 20)

    assert [o for o in outcomes if isinstance(o, Exception)] == []
    total = sum(StockPosition.objects.filter(sku=sku).values_list("on_hand", flat=True))
    assert total == 200
    assert StockPosition.objects.get(sku=sku, location=a).on_hand == 100
    assert selectors.ledger_drift() == []


def test_concurrent_replays_of_one_event_key_apply_once():
    sku = SkuFactory(code="ONCE")
    location = LocationFactory(code="wh")

    def receive():
        return services.stock_receive(sku=sku.code, location=location.code, quantity=5,
                                      context=services.MovementContext(event_key="wms-42"))

    outcomes = run_concurrently(receive, [()] * 10)

    assert [o for o in outcomes if isinstance(o, Exception)] == []
    assert StockPosition.objects.get(sku=sku).on_hand == 5
    assert StockMovement.objects.filter(event_key="wms-42").count() == 1
