"""A stampede on a bundle and its components at once, with real threads on their own connections.

Bundle sales, bundle reservations and plain sales of each component race for the same units. The
positions are locked (inventory.locking, one global order) before any decision, so every
component position's ledger is one unbroken chain (each row's `*_after` is the previous row's plus
its deltas) and no unit is sold twice. Remove the lock (the FOR UPDATE in positions_lock) and
the bundle sales decide on stale numbers: their rows repeat `on_hand_after` values and the chain
check fails (tried: see docs/exactness.md, "Bundles").
"""

import pytest

from core.errors import InsufficientStock
from inventory import selectors
from inventory import services as stock
from inventory.models import StockMovement, StockPosition
from reservations import services as reservations
from tests.conftest import run_concurrently
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _chain_breaks(position: StockPosition) -> list[int]:
    """Ledger row ids whose *_after do not follow from the row before them."""
    on_hand = reserved = 0
    broken = []
    for row in StockMovement.objects.filter(position=position).order_by("id"):
        on_hand, reserved = on_hand + row.on_hand_delta, reserved + row.reserved_delta
        if (row.on_hand_after, row.reserved_after) != (on_hand, reserved):
            broken.append(row.pk)
            on_hand, reserved = row.on_hand_after, row.reserved_after
    return broken


def test_a_stampede_on_a_bundle_and_its_components_never_sells_a_unit_twice():
    # given: GIFT = 2 x MUG + 1 x TEA; 30 mugs and 12 teas. Demand is 50 mugs and 30 teas, and
    # the plain sales alone (10 of each) cannot empty either, so bundles always get some.
    LocationFactory(code="wh")
    SkuFactory(code="MUG")
    SkuFactory(code="TEA")
    stock.stock_receive(sku="MUG", location="wh", quantity=30)
    stock.stock_receive(sku="TEA", location="wh", quantity=12)
    stock.sku_create(code="GIFT", name="Gift",
                     components=[{"sku": "MUG", "quantity": 2}, {"sku": "TEA", "quantity": 1}])

    # when: 40 buyers at once
    def act(kind: str):
        if kind == "gift":
            return stock.stock_sell(sku="GIFT", location="wh", quantity=1)
        if kind == "hold":
            return reservations.reservation_create(lines=[{"sku": "GIFT", "quantity": 1}])
        return stock.stock_sell(sku=kind, location="wh", quantity=1)

    kinds = ["gift", "MUG", "TEA", "hold"] * 10
    outcomes = run_concurrently(act, [(k,) for k in kinds])

    # then: only clean refusals, and the units add up exactly
    assert [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, InsufficientStock)] == []
    done = {kind: sum(1 for k, o in zip(kinds, outcomes, strict=True) if k == kind and not isinstance(o, Exception))
            for kind in ("gift", "MUG", "TEA", "hold")}
    mug = StockPosition.objects.get(sku__code="MUG")
    tea = StockPosition.objects.get(sku__code="TEA")
    assert (mug.on_hand, mug.reserved) == (30 - 2 * done["gift"] - done["MUG"], 2 * done["hold"])
    assert (tea.on_hand, tea.reserved) == (12 - done["gift"] - done["TEA"], done["hold"])
    assert mug.on_hand >= mug.reserved and tea.on_hand >= tea.reserved
    assert done["gift"] + done["hold"] > 0 and sum(done.values()) < len(kinds)  # both raced, some refused
    # serialized by the lock: every decision saw the one before it
    assert _chain_breaks(mug) == [] and _chain_breaks(tea) == []
    assert selectors.ledger_drift() == []
