"""A drain committing two orders' reservations can deadlock with an API commit of the second.
PostgreSQL picks a victim; the API client must get a retryable 503 (never a 500), the retry with
the same Idempotency-Key must succeed, and nothing may be applied twice.
(Found by review; the drain's lock order is a documented known limit, this is the safety net.)"""

import threading
import time

import pytest
from django.db import connections

from ingestion import processing
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

    original = processing.BatchProcessor._reservation_commit

    def slow(self, plan, line, order_ref):  # timing only: widen the gap between the two orders
        result = original(self, plan, line, order_ref)
        time.sleep(0.5)
        return result

    monkeypatch.setattr(processing.BatchProcessor, "_reservation_commit", slow)

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

    assert response.status_code in (200, 503), response.content
    if response.status_code == 503:
        assert response.json()["error"] == "retry_later" and response["Retry-After"] == "1"
        again = client.post(f"/api/v1/reservations/{rb.pk}/commit/", HTTP_IDEMPOTENCY_KEY="c1")
        assert again.status_code == 200, again.content  # the claim was released, not stored
    assert Reservation.objects.get(pk=rb.pk).status == "committed"
    # Two orders of one unit each, both covered by their reservations: 2 units left, none twice.
    position = StockPosition.objects.get(sku=tee, location=wh)
    assert (position.on_hand, position.reserved) == (8, 0)
    assert ledger_drift() == []
