"""A request whose process died after its stock transaction committed, before its answer was
stored, leaves its Idempotency-Key claim `in_flight`. Found by the soak (issue 8): once the claim
went stale the retry ran the request again, and the stock moved twice. Now a re-run is identified
by the request's key and replays the first effect; and the claim goes stale after a minute, not
five, so clients are not stalled for long."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import IdempotencyRecord
from inventory.models import StockMovement, StockPosition
from inventory.services import stock_receive
from reservations.models import Reservation

pytestmark = pytest.mark.django_db


def post(client, url, body, key):
    return client.post(url, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)


def crash_after_commit(key: str) -> None:
    """What a SIGKILL between the commit and the stored answer leaves behind, a minute later."""
    IdempotencyRecord.objects.filter(key=key).update(state="in_flight", response_status=None,
                                                     created_at=timezone.now() - timedelta(seconds=61))


def test_a_retried_adjustment_after_a_crash_is_applied_once(api, sku, location):
    body = {"sku": sku.code, "location": location.code, "type": "receipt", "quantity": 5, "reference": "PO-1"}
    first = post(api, "/api/v1/stock/adjustments/", body, "k-adjust")
    assert first.status_code == 201
    crash_after_commit("k-adjust")

    again = post(api, "/api/v1/stock/adjustments/", body, "k-adjust")

    assert again.status_code == 201
    assert again.json()["movements"] == first.json()["movements"]
    assert StockPosition.objects.get(sku=sku, location=location).on_hand == 5
    assert StockMovement.objects.filter(reference="PO-1").count() == 1


def test_a_retried_reservation_after_a_crash_holds_once(api, sku, location):
    stock_receive(sku=sku, location=location, quantity=10)
    body = {"lines": [{"sku": sku.code, "quantity": 3}], "ttl_seconds": 600}
    first = post(api, "/api/v1/reservations/", body, "k-hold")
    assert first.status_code == 201
    crash_after_commit("k-hold")

    again = post(api, "/api/v1/reservations/", body, "k-hold")

    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert Reservation.objects.count() == 1
    assert StockPosition.objects.get(sku=sku, location=location).reserved == 3


def test_a_claim_younger_than_a_minute_is_still_in_flight(api, sku, location):
    body = {"sku": sku.code, "location": location.code, "type": "receipt", "quantity": 1}
    assert post(api, "/api/v1/stock/adjustments/", body, "k-young").status_code == 201
    IdempotencyRecord.objects.filter(key="k-young").update(state="in_flight",
                                                           created_at=timezone.now() - timedelta(seconds=30))
    assert post(api, "/api/v1/stock/adjustments/", body, "k-young").status_code == 409
