"""The hot paths' Idempotency-Key claim, inserted by the one statement that makes the change
(core.idempotency, IDEMPOTENCY_IN_STATEMENT): the same answers as claiming first.

The statement only changes stock if its claim CTE inserted the key. Without that gate, a key
already used with another body (a different request_key, so no ledger or reservation key
stops it) would sell or hold a second time: the reused-key tests below fail.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels.models import Channel
from core.models import IdempotencyRecord
from inventory.models import StockMovement, StockPosition
from inventory.services import stock_receive
from reservations.models import Reservation

pytestmark = pytest.mark.django_db

SALE = "/api/v1/stock/adjustments/"
RESERVE = "/api/v1/reservations/"


def post(client, url, body, key):
    return client.post(url, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.fixture
def stocked(sku, location):
    stock_receive(sku=sku, location=location, quantity=10)
    return sku


def _bodies(kind: str, sku, location) -> tuple[str, dict, dict]:
    if kind == "sale":
        return (SALE, {"sku": sku.code, "location": location.code, "type": "sale", "quantity": 1},
                {"sku": sku.code, "location": location.code, "type": "sale", "quantity": 2})
    return (RESERVE, {"lines": [{"sku": sku.code, "quantity": 1}]}, {"lines": [{"sku": sku.code, "quantity": 2}]})


def _state(sku, location) -> tuple:
    position = StockPosition.objects.get(sku=sku, location=location)
    return (position.on_hand, position.reserved, StockMovement.objects.filter(sku=sku).count(),
            Reservation.objects.count())


@pytest.mark.parametrize("kind", ["sale", "reservation"])
def test_a_key_reused_with_another_body_changes_nothing(api, stocked, location, kind):
    url, first_body, other_body = _bodies(kind, stocked, location)
    first = post(api, url, first_body, "k-1")
    assert first.status_code == 201, first.content
    before = _state(stocked, location)

    reused = post(api, url, other_body, "k-1")

    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
    assert _state(stocked, location) == before


@pytest.mark.parametrize("kind", ["sale", "reservation"])
def test_a_key_still_in_flight_changes_nothing(api, stocked, location, kind):
    url, body, _other = _bodies(kind, stocked, location)
    first = post(api, url, body, "k-2")
    assert first.status_code == 201
    IdempotencyRecord.objects.filter(key="k-2").update(state="in_flight", response_status=None)  # as if running
    before = _state(stocked, location)

    twin = post(api, url, body, "k-2")

    assert twin.status_code == 409 and twin.json()["error"] == "idempotency_key_in_flight"
    assert _state(stocked, location) == before


@pytest.mark.parametrize("kind", ["sale", "reservation"])
def test_a_made_change_is_replayed_byte_for_byte(api, stocked, location, kind):
    url, body, _other = _bodies(kind, stocked, location)
    first = post(api, url, body, "k-3")
    assert first.status_code == 201
    before = _state(stocked, location)

    again = post(api, url, body, "k-3")

    assert again.status_code == 201 and again.content == first.content
    assert again["Idempotent-Replayed"] == "true"
    assert _state(stocked, location) == before
    record = IdempotencyRecord.objects.get(key="k-3")
    assert (record.state, record.response_status) == ("done", 201)


@pytest.mark.parametrize("kind", ["sale", "reservation"])
def test_a_refusal_by_the_general_path_is_stored_and_replayed(api, stocked, location, kind):
    url, _body, _other = _bodies(kind, stocked, location)
    body = ({"sku": stocked.code, "location": location.code, "type": "sale", "quantity": 11} if kind == "sale"
            else {"lines": [{"sku": stocked.code, "quantity": 11}]})
    refused = post(api, url, body, "k-4")
    assert refused.status_code == 409 and refused.json()["error"] == "insufficient_stock"
    stock_receive(sku=stocked, location=location, quantity=10)  # now it would fit
    before = _state(stocked, location)

    again = post(api, url, body, "k-4")

    assert again.status_code == 409 and again.content == refused.content
    assert again["Idempotent-Replayed"] == "true"
    assert _state(stocked, location) == before


def test_an_error_raised_before_the_statement_is_stored_and_replayed(api, stocked, location):
    # The channel is resolved before the one statement runs: no claim exists yet when the 404 is
    # raised, so the view claims then and stores it, as a claim made first would have.
    body = {"lines": [{"sku": stocked.code, "quantity": 1}], "channel": "later"}
    missing = post(api, RESERVE, body, "k-5")
    assert missing.status_code == 404 and missing.json()["error"] == "channel_not_found"
    Channel.objects.create(slug="later", name="Later", kind="shopify", push_enabled=False)

    again = post(api, RESERVE, body, "k-5")

    assert again.status_code == 404 and again.content == missing.content
    assert again["Idempotent-Replayed"] == "true"
    assert Reservation.objects.count() == 0


def test_a_refused_body_is_stored_before_the_serializer_answers(api, stocked, location):
    body = {"sku": stocked.code, "location": location.code, "type": "sale", "quantity": "1"}  # the serializer's case
    first = post(api, SALE, body, "k-6")
    again = post(api, SALE, body, "k-6")
    assert first.status_code == again.status_code
    assert again.content == first.content and again["Idempotent-Replayed"] == "true"


def test_with_the_setting_off_the_claim_comes_first_on_its_own(api, stocked, location, settings):
    settings.IDEMPOTENCY_IN_STATEMENT = False
    url, body, _other = _bodies("sale", stocked, location)
    with CaptureQueriesContext(connection) as captured:
        response = post(api, url, body, "k-7")
    assert response.status_code == 201
    statements = [q["sql"] for q in captured.captured_queries if "core_apikey" not in q["sql"]]  # the key's first use
    assert statements[0].startswith('INSERT INTO "core_idempotencyrecord"'), statements[0]
    assert "claim AS" not in statements[2]  # the sale's statement, after the SAVEPOINT


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_sales_with_one_key_and_two_bodies_sell_once(live_server, make_key):
    # Real threads and connections: a twin's claim waits on the first's uncommitted one (the unique
    # index), then finds it taken. Half the twins send another quantity (another request_key, so
    # only the claim stops them).
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.factories import LocationFactory, SkuFactory

    LocationFactory(code="wh")
    SkuFactory(code="HOT")
    stock_receive(sku="HOT", location="wh", quantity=50)
    headers = {"Authorization": f"Bearer {make_key('stock:write')}", "Idempotency-Key": "sale-42"}

    def sell(n):
        response = requests.post(f"{live_server.url}{SALE}", headers=headers, timeout=60,
                                 json={"sku": "HOT", "location": "wh", "type": "sale", "quantity": 1 + n % 2})
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(sell, range(20)))

    assert StockMovement.objects.filter(sku__code="HOT", type="sale").count() == 1
    sold = 50 - StockPosition.objects.get(sku__code="HOT").on_hand
    assert sold in (1, 2)
    statuses = {status for status, _body in outcomes}
    assert statuses <= {201, 409, 422} and 201 in statuses, outcomes
    assert all(body["error"] in ("idempotency_key_in_flight", "idempotency_key_reused")
               for status, body in outcomes if status != 201)


def test_a_claim_settled_first_is_not_inserted_again_by_the_statement(api, stocked, location):
    # A body the serializer decides is claimed first; the one-statement sale then runs without
    # the claim CTE (with it, the statement would meet its own claim and always undo itself).
    body = {"sku": f"{stocked.code} ", "location": location.code, "type": "sale", "quantity": 1}  # trimmed by it
    with CaptureQueriesContext(connection) as captured:
        response = post(api, SALE, body, "k-8")
    assert response.status_code == 201, response.content
    statements = [q["sql"] for q in captured.captured_queries if "core_apikey" not in q["sql"]]
    assert statements[0].startswith('INSERT INTO "core_idempotencyrecord"')
    assert statements[2].startswith("WITH target AS"), statements[2][:80]  # after the SAVEPOINT
    assert StockPosition.objects.get(sku=stocked, location=location).on_hand == 9
