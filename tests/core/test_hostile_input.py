"""Whatever a client sends, the answer is a 4xx in the contract's shape, never a 500, and
nothing changes. (Found by a black-box review: each case here once answered 500.)"""

import json

import pytest

from inventory.models import Location, Sku, StockMovement

pytestmark = pytest.mark.django_db

HOSTILE_BODIES = [
    b'{"code": "A\\u0000B", "name": "x"}',
    b'{"code": "A", "name": "\\ud800"}',
    b'{"code": "A", "name": "x", "safety_stock": NaN}',
    b'{"code": "A", "name": "x", "safety_stock": Infinity}',
    b'{"code": "A", "name": "x", "safety_stock": 1e400}',
    b'{"code": "A", "name": "x", "extra": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b"[" * 100_000,
    b'{"code": "A", "name": "x", "settings": {"k\\u0000": 1}}',
]

ENDPOINTS = [
    "/api/v1/skus/",
    "/api/v1/locations/",
    "/api/v1/stock/adjustments/",
    "/api/v1/channels/",
    "/api/v1/reservations/",
    "/api/v1/events/",
]


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_json_bodies_answer_400(api, url, body):
    response = api.generic("POST", url, body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="h-1")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]
    assert Sku.objects.count() == 0 and StockMovement.objects.count() == 0


@pytest.mark.parametrize("url", [
    "/api/v1/stock/a%00b/", "/api/v1/skus/a%00b/", "/api/v1/locations/a%00/", "/api/v1/stock/?sku=a%00b",
    "/api/v1/events/?channel=%00", "/api/v1/dead-letters/?channel=a%00",
])
def test_nul_in_url_is_400(api, url):
    response = api.get(url)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_impossible_as_of_is_400(api, sku):
    response = api.get(f"/api/v1/stock/{sku.code}/", {"as_of": "2024-13-45T99:99:99Z"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_as_of"


def test_weak_etag_matches(api, sku, location):
    from inventory import services

    services.stock_receive(sku=sku.code, location=location.code, quantity=1)
    etag = api.get(f"/api/v1/stock/{sku.code}/")["ETag"]
    assert api.get(f"/api/v1/stock/{sku.code}/", HTTP_IF_NONE_MATCH=f"W/{etag}").status_code == 304


def test_healthz_refuses_other_methods_in_json(client, db):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_duplicate_location_is_409(api):
    body = {"code": "wh", "name": "Main", "kind": "warehouse"}
    assert api.post("/api/v1/locations/", body, format="json").status_code == 201
    again = api.post("/api/v1/locations/", body, format="json")
    assert again.status_code == 409 and again.json()["error"] == "duplicate_location"
    assert Location.objects.count() == 1


@pytest.mark.parametrize("code", ["A/B", "adjustments", "Adjustments", "A\tB", 123, ""])
def test_codes_that_could_not_be_routed_or_typed_are_refused(api, code):
    body = json.dumps({"code": code, "name": "x"})
    response = api.post("/api/v1/skus/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert Sku.objects.count() == 0
