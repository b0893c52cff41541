"""A drain settling two orders' reservations while an API client commits the second.
(Found by review: the drain used to commit reservations before locking its positions, so it could
deadlock with the API commit, answered 503.) Now the drain takes reservation rows, then every
position, in the one global order: the API commit waits its turn and answers 200, and nothing is
applied twice."""

import threading
import time

import pytest
from django.db import connections

from ingestion.processing import apply as processing
from ingestion.services import events_accept, inbound_events_drain
from inventory.models import StockPosition
from inventory.selectors import ledger_drift
from inventory.services import stock_receive

pytestmark = pytest.mark.django_db(transaction=True)


def sale(event_id: str, order_ref: str) -> dict:
    return {"event_id": event_id, "type": "sale", "sku": "TEE-M", "location": "wh", "quantity": 1,
            "occurred_at": "2024-05-01T10:00:00Z", "reference": order_ref}


def test_api_commit_racing_a_drain_is_never_a_500(make_key, tee, wh, monkeypatch):
    from rest_framework.test import APIClient

    from reservations.models import Reservation
    from reservations.services import reservation_create

    stock_receive(sku=tee, location=wh, quantity=10)
    reservation_create(lines=[{"sku": "TEE-M", "quantity": 1, "location": "wh"}], order_ref="ORD-A")
    rb = reservation_create(lines=[{"sku": "TEE-M", "quantity": 1, "location": "wh"}], order_ref="ORD-B")
    events_accept(events=[sale("sa", "ORD-A"), sale("sb", "ORD-B")])

    original = processing.BatchProcessor._settle_one

    def slow(self, *args, **kwargs):  # timing only: widen the gap between the two orders
        result = original(self, *args, **kwargs)
        time.sleep(0.5)
        return result

    monkeypatch.setattr(processing.BatchProcessor, "_settle_one", slow)

    def drain():
        try:
            inbound_events_drain()
        finally:
            connections.close_all()

    drainer = threading.Thread(target=drain)
    drainer.start()
    time.sleep(0.2)  # the drain has committed ORD-A and holds its position
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key('reservations:write')}")
    response = client.post(f"/api/v1/reservations/{rb.pk}/commit/", HTTP_IDEMPOTENCY_KEY="c1")
    drainer.join()

    assert response.status_code == 200, response.content  # no deadlock victim, no 503
    assert Reservation.objects.get(pk=rb.pk).status == "committed"
    # Two orders of one unit each, both covered by their reservations: 2 units left, none twice.
    position = StockPosition.objects.get(sku=tee, location=wh)
    assert (position.on_hand, position.reserved) == (8, 0)
    assert ledger_drift() == []
