"""The reservations API: contract shapes, Idempotency-Key rules, every refusal path."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import services as stock
from inventory.models import StockMovement, StockPosition
from reservations.models import Reservation
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/reservations/"
_keys = iter(range(10**9))


def post(client, url, body=None, key: str | None = "auto", raw: str | None = None):
    headers = {}
    if key == "auto":
        key = f"k-{next(_keys)}"
    if key:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    data = raw if raw is not None else json.dumps(body if body is not None else {})
    return client.post(url, data=data, content_type="application/json", **headers)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def stock_state():
    return (list(StockPosition.objects.order_by("pk").values_list("on_hand", "reserved", "version")),
            StockMovement.objects.count(), Reservation.objects.count())


@pytest.fixture
def hot(db):
    LocationFactory(code="wh", priority=10)
    SkuFactory(code="HOT")
    SkuFactory(code="COLD")
    stock.stock_receive(sku="HOT", location="wh", quantity=5)
    stock.stock_receive(sku="COLD", location="wh", quantity=1)


def test_create_answers_the_contract_shape_and_get_returns_it(api, hot):
    response = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 2}], "order_ref": "o-1", "ttl_seconds": 120})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "active"
    assert body["lines"] == [{"sku": "HOT", "location": "wh", "quantity": 2}]
    assert body["order_ref"] == "o-1" and body["channel"] is None and body["ttl_seconds"] == 120
    assert body["expires_at"].endswith("Z")
    assert response["Location"] == f"{URL}{body['id']}/"
    assert api.get(f"{URL}{body['id']}/").json() == body
    assert StockPosition.objects.get(sku__code="HOT").reserved == 2


def test_default_ttl_is_900_seconds(api, hot):
    body = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}]}).json()
    assert body["ttl_seconds"] == 900


def test_idempotency_key_is_required_on_create(api, hot):
    before = stock_state()
    assert_error(post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}]}, key=None), 400,
                 "idempotency_key_required")
    assert stock_state() == before


def test_replay_returns_the_identical_body_and_reuse_with_another_body_is_422(api, hot):
    first = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}]}, key="checkout-1")
    again = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}]}, key="checkout-1")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again["Idempotent-Replayed"] == "true"
    assert Reservation.objects.count() == 1
    assert StockPosition.objects.get(sku__code="HOT").reserved == 1
    assert_error(post(api, URL, {"lines": [{"sku": "HOT", "quantity": 2}]}, key="checkout-1"), 422,
                 "idempotency_key_reused")


def test_insufficient_stock_is_409_with_lines_and_changes_nothing(api, hot):
    before = stock_state()
    body = assert_error(post(api, URL, {"lines": [{"sku": "HOT", "quantity": 3}, {"sku": "COLD", "quantity": 2}]}),
                        409, "insufficient_stock")
    assert body["lines"] == [{"sku": "HOT", "requested": 3, "available": 5},
                             {"sku": "COLD", "requested": 2, "available": 1}]
    assert stock_state() == before


def test_waitlist_answers_202_waiting(api, hot):
    response = post(api, URL, {"lines": [{"sku": "COLD", "quantity": 2}], "waitlist": True})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "waiting" and body["expires_at"] is None
    assert body["lines"] == [{"sku": "COLD", "location": None, "quantity": 2}]

    post(api, "/api/v1/stock/adjustments/", {"sku": "COLD", "location": "wh", "type": "receipt", "quantity": 1})
    activated = api.get(f"{URL}{body['id']}/").json()
    assert activated["status"] == "active" and activated["expires_at"]
    assert activated["lines"] == [{"sku": "COLD", "location": "wh", "quantity": 2}]


def test_commit_release_extend_and_their_idempotency(api, hot):
    rid = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 2}]}).json()["id"]
    extended = post(api, f"{URL}{rid}/extend/", {"ttl_seconds": 3600})
    assert extended.status_code == 200
    assert extended.json()["expires_at"] > (timezone.now() + timedelta(seconds=3500)).isoformat()[:19]

    first = post(api, f"{URL}{rid}/commit/", key="pay-1")
    replay = post(api, f"{URL}{rid}/commit/", key="pay-1")
    plain_again = post(api, f"{URL}{rid}/commit/", key=None)
    assert first.status_code == replay.status_code == plain_again.status_code == 200
    assert first.json()["status"] == "committed" and replay.content == first.content
    assert (StockPosition.objects.get(sku__code="HOT").on_hand, StockPosition.objects.get(sku__code="HOT").reserved) \
        == (3, 0)
    assert_error(post(api, f"{URL}{rid}/release/"), 409, "reservation_committed")
    assert_error(post(api, f"{URL}{rid}/extend/", {"ttl_seconds": 60}), 409, "reservation_not_active")

    other = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}]}).json()["id"]
    released = post(api, f"{URL}{other}/release/")
    assert released.status_code == 200 and released.json()["status"] == "released"
    assert post(api, f"{URL}{other}/release/").json()["status"] == "released"
    assert_error(post(api, f"{URL}{other}/commit/"), 409, "reservation_released")
    assert StockPosition.objects.get(sku__code="HOT").reserved == 0


def test_expired_reservation_commit_and_extend_are_410(api, hot):
    rid = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 2}], "ttl_seconds": 60}).json()["id"]
    Reservation.objects.filter(pk=rid).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert_error(post(api, f"{URL}{rid}/commit/"), 410, "reservation_expired")
    assert_error(post(api, f"{URL}{rid}/extend/", {"ttl_seconds": 60}), 410, "reservation_expired")
    assert api.get(f"{URL}{rid}/").json()["status"] == "expired"
    assert StockPosition.objects.get(sku__code="HOT").reserved == 0


@pytest.mark.parametrize(("body", "status", "code"), [
    ({}, 400, "validation_error"),
    ({"lines": []}, 400, "validation_error"),
    ({"lines": "HOT"}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT"}]}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": "1"}]}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": 1.0}]}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": 0}]}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": -1}]}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": 10**12}]}, 400, "validation_error"),
    ({"lines": [{"sku": 5, "quantity": 1}]}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": 1}], "ttl_seconds": 0}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": 1}], "ttl_seconds": 10**7}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": 1}], "waitlist": "yes"}, 400, "validation_error"),
    ({"lines": [{"sku": "HOT", "quantity": 1}] * 101}, 400, "validation_error"),
    ({"lines": [{"sku": "NOPE", "quantity": 1}]}, 404, "sku_not_found"),
    ({"lines": [{"sku": "HOT", "quantity": 1, "location": "mars"}]}, 404, "location_not_found"),
    ({"lines": [{"sku": "HOT", "quantity": 1}], "channel": "ghost"}, 404, "channel_not_found"),
    ([1, 2], 400, "validation_error"),
])
def test_bad_input_answers_the_error_shape_and_changes_nothing(api, hot, body, status, code):
    before = stock_state()
    assert_error(post(api, URL, body), status, code)
    assert stock_state() == before


def test_malformed_json_and_unknown_ids(api, hot):
    assert_error(post(api, URL, raw="{not json"), 400, "malformed_json")
    assert_error(api.get(f"{URL}not-a-uuid/"), 404, "reservation_not_found")
    assert_error(post(api, f"{URL}00000000-0000-0000-0000-000000000000/commit/"), 404, "reservation_not_found")
    rid = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}]}).json()["id"]
    assert_error(post(api, f"{URL}{rid}/extend/", {"ttl_seconds": "60"}), 400, "validation_error")
    assert_error(post(api, f"{URL}{rid}/extend/", {}), 400, "validation_error")
    assert StockPosition.objects.get(sku__code="HOT").reserved == 1


def test_auth_and_scope(client_with, hot):
    from rest_framework.test import APIClient

    assert_error(post(APIClient(), URL, {"lines": [{"sku": "HOT", "quantity": 1}]}), 401, "not_authenticated")
    reader = client_with("stock:read", "stock:write")
    assert_error(post(reader, URL, {"lines": [{"sku": "HOT", "quantity": 1}]}), 403, "permission_denied")
    assert StockPosition.objects.get(sku__code="HOT").reserved == 0


def test_list_filters_by_status_and_order_ref(api, hot):
    post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}], "order_ref": "A"})
    rid = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}], "order_ref": "B"}).json()["id"]
    post(api, f"{URL}{rid}/release/")
    active = api.get(URL, {"status": "active"}).json()
    assert [r["order_ref"] for r in active["results"]] == ["A"]
    assert [r["id"] for r in api.get(URL, {"order_ref": "B"}).json()["results"]] == [rid]
    assert_error(api.get(URL, {"status": "bogus"}), 400, "invalid_status")


def test_duplicate_live_order_ref_is_409(api, hot):
    post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}], "order_ref": "same"})
    before = stock_state()
    assert_error(post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}], "order_ref": "same"}), 409,
                 "duplicate_order_ref")
    assert stock_state() == before


def test_admin_lists_filters_and_releases_and_extends_through_services(admin_client, api, hot):
    rid = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 2}], "ttl_seconds": 120}).json()["id"]
    other = post(api, URL, {"lines": [{"sku": "HOT", "quantity": 1}], "ttl_seconds": 3600}).json()["id"]

    page = admin_client.get("/admin/reservations/reservation/", {"expiring": "5m"})
    assert page.status_code == 200
    assert rid in page.content.decode() and other not in page.content.decode()
    for term in ("not-a-uuid", "HOT", rid):
        assert admin_client.get("/admin/reservations/reservation/", {"q": term}).status_code == 200
    assert admin_client.get("/admin/reservations/waitlistentry/").status_code == 200
    detail = admin_client.get(f"/admin/reservations/reservation/{rid}/change/")
    assert detail.status_code == 200 and "reserve" in detail.content.decode()

    extend = admin_client.post("/admin/reservations/reservation/", {
        "action": "extend_selected", "_selected_action": [rid], "apply": "1", "ttl_seconds": 7200})
    assert extend.status_code == 302
    assert Reservation.objects.get(pk=rid).expires_at > timezone.now() + timedelta(seconds=7000)

    release = admin_client.post("/admin/reservations/reservation/", {
        "action": "release_selected", "_selected_action": [rid, other]})
    assert release.status_code == 302
    assert set(Reservation.objects.values_list("status", flat=True)) == {"released"}
    assert StockPosition.objects.get(sku__code="HOT").reserved == 0
    row = StockMovement.objects.filter(reservation_id=rid, type="reservation_release").get()
    assert row.actor == "admin:admin" and row.source == "admin"
    ledger = admin_client.get("/admin/inventory/stockmovement/")
    assert f"/admin/reservations/reservation/{rid}/change/" in ledger.content.decode()


def test_refusal_reports_availability_where_the_line_may_draw(api, sku, location, other_location):
    """A line naming a location is refused with that location's availability, not the total."""
    stock.stock_receive(sku=sku.code, location=location.code, quantity=10)
    response = post(api, URL, {"lines": [{"sku": sku.code, "quantity": 1, "location": other_location.code}]})
    assert_error(response, 409, "insufficient_stock")
    assert response.json()["lines"] == [{"sku": sku.code, "requested": 1, "available": 0}]
