"""One reservation covers an order's lines once, whether they arrive in one drain or several.
(Found by review: in one batch, each line of the order was covered again, an oversell.)"""

import pytest

from inventory.models import StockPosition
from inventory.selectors import ledger_drift
from inventory.services import stock_receive
from tests.ingestion.conftest import drain_all

pytestmark = pytest.mark.django_db


def sale(event_id: str, quantity: int, order_ref: str) -> dict:
    return {"event_id": event_id, "type": "sale", "sku": "TEE-M", "location": "wh", "quantity": quantity,
            "occurred_at": "2024-05-01T10:00:00Z", "reference": order_ref}


@pytest.mark.parametrize("same_batch", [False, True])
def test_two_lines_of_an_order_use_its_reservation_once(api, tee, wh, same_batch):
    from reservations.models import Reservation
    from reservations.services import reservation_create

    # given: 10 on hand, 2 held for ORD-1
    stock_receive(sku=tee, location=wh, quantity=10)
    reservation = reservation_create(lines=[{"sku": "TEE-M", "quantity": 2, "location": "wh"}], order_ref="ORD-1")
    # when: the order arrives with two lines of 2 units: 4 sold, 2 of them held
    batches = [[sale("l1", 2, "ORD-1"), sale("l2", 2, "ORD-1")]] if same_batch else \
        [[sale("l1", 2, "ORD-1")], [sale("l2", 2, "ORD-1")]]
    for events in batches:
        assert api.post("/api/v1/events/", {"events": events}, format="json").status_code == 202
        drain_all()
    # then: all 4 units left, the hold is consumed, the ledger agrees
    position = StockPosition.objects.get(sku=tee, location=wh)
    assert (position.on_hand, position.reserved) == (6, 0)
    assert Reservation.objects.get(pk=reservation.pk).status == "committed"
    assert ledger_drift() == []
