"""MovementBatch (inventory/batch.py): set-based writes keep the ledger's rules."""

import pytest
from django.db import transaction

from core.errors import InsufficientStock
from inventory.batch import MovementBatch
from inventory.locking import positions_lock
from inventory.models import StockMovement, StockPosition
from inventory.selectors import ledger_drift
from inventory.services import MovementContext, movement_apply, stock_receive
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair():
    sku, location = SkuFactory(code="TEE"), LocationFactory(code="wh")
    stock_receive(sku=sku, location=location, quantity=10)
    return sku.pk, location.pk


def test_a_flushed_batch_writes_what_movement_apply_would(pair):
    with transaction.atomic():
        position = positions_lock([pair])[pair]
        batch = MovementBatch()
        batch.apply(position=position, type="sale", on_hand_delta=-3, context=MovementContext(source="t"),
                    event_key="k1")
        batch.apply(position=position, type="receipt", on_hand_delta=5, context=MovementContext(source="t"),
                    event_key="k2", metadata={"note": "x"})
        batch.flush()

    position = StockPosition.objects.get(sku_id=pair[0], location_id=pair[1])
    assert (position.on_hand, position.reserved, position.version) == (12, 0, 3)
    rows = list(StockMovement.objects.filter(event_key__in=["k1", "k2"]).order_by("id")
                .values_list("type", "on_hand_delta", "on_hand_after", "metadata"))
    assert rows == [("sale", -3, 7, {}), ("receipt", 5, 12, {"note": "x"})]
    assert not ledger_drift()


def test_a_change_that_would_go_negative_is_refused_before_anything_is_written(pair):
    with transaction.atomic():
        position = positions_lock([pair])[pair]
        batch = MovementBatch()
        with pytest.raises(InsufficientStock):
            batch.apply(position=position, type="sale", on_hand_delta=-11, context=MovementContext())
        assert len(batch) == 0 and position.on_hand == 10


def test_a_position_written_behind_the_batch_refuses_the_whole_flush(pair):
    with pytest.raises(InsufficientStock), transaction.atomic():
        position = positions_lock([pair])[pair]
        batch = MovementBatch()
        batch.apply(position=position, type="sale", on_hand_delta=-1, context=MovementContext(), event_key="k3")
        # another write to the same row that the batch did not see (a caller forgot the lock)
        stale = StockPosition.objects.get(pk=position.pk)
        movement_apply(position=stale, type="receipt", on_hand_delta=1, context=MovementContext())
        batch.flush()

    assert StockPosition.objects.get(pk=position.pk).on_hand == 10
    assert not StockMovement.objects.filter(event_key="k3").exists()
