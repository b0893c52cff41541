"""Bundles (kits) through the public API: contract section 4, "SKU fields" and "Bundles".

A bundle holds no stock: its availability per location is derived from its components, and every
sale or reservation of it acts on the components, all or nothing.
"""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import Conflict, InsufficientStock
from inventory import selectors
from inventory import services as stock
from inventory.models import BundleComponent, Sku, StockMovement, StockPosition
from reservations import services as reservations
from reservations.models import Reservation, WaitlistEntry
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db

_keys = iter(range(10**9))


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json",
                       HTTP_IDEMPOTENCY_KEY=f"b-{next(_keys)}")


def stock_state():
    return (list(StockPosition.objects.order_by("pk").values_list("on_hand", "reserved", "version")),
            StockMovement.objects.count(), Reservation.objects.count())


@pytest.fixture
def kit(db):
    """GIFT = 2 x MUG + 1 x TEA, stocked at two locations."""
    LocationFactory(code="wh", priority=10)
    LocationFactory(code="store", priority=20)
    SkuFactory(code="MUG")
    SkuFactory(code="TEA")
    stock.stock_receive(sku="MUG", location="wh", quantity=7)
    stock.stock_receive(sku="TEA", location="wh", quantity=10)
    stock.stock_receive(sku="MUG", location="store", quantity=4)
    stock.stock_receive(sku="TEA", location="store", quantity=1)
    return stock.sku_create(code="GIFT", name="Gift set", components=[{"sku": "MUG", "quantity": 2},
                                                                      {"sku": "TEA", "quantity": 1}])


# ------------------------------------------------------------------------------ catalog


def test_creating_a_bundle_answers_its_components(api, kit):
    response = post(api, "/api/v1/skus/", {"code": "DUO", "name": "Duo", "components": [
        {"sku": "TEA", "quantity": 2}, {"sku": "MUG", "quantity": 1}]})

    assert response.status_code == 201, response.content
    assert response.json()["components"] == [{"sku": "TEA", "quantity": 2}, {"sku": "MUG", "quantity": 1}] or \
        sorted(response.json()["components"], key=lambda c: c["sku"]) == [{"sku": "MUG", "quantity": 1},
                                                                         {"sku": "TEA", "quantity": 2}]
    assert Sku.objects.get(code="DUO").is_bundle
    plain = api.get("/api/v1/skus/MUG/").json()
    assert plain["components"] == []


@pytest.mark.parametrize(("components", "status", "code"), [
    ([{"sku": "NOPE", "quantity": 1}], 404, "sku_not_found"),
    ([{"sku": "SELF", "quantity": 1}], 400, "invalid_components"),
    ([{"sku": "GIFT", "quantity": 1}], 400, "invalid_components"),  # a bundle cannot be a component
    ([{"sku": "MUG", "quantity": 0}], 400, "validation_error"),
    ([{"sku": "MUG"}], 400, "validation_error"),
    ([{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}], 400, "invalid_components"),
])
def test_invalid_components_are_refused_and_change_nothing(api, kit, components, status, code):
    before = Sku.objects.count(), BundleComponent.objects.count()

    response = post(api, "/api/v1/skus/", {"code": "SELF", "name": "x", "components": components})

    assert response.status_code == status, response.content
    assert response.json()["error"] == code
    assert (Sku.objects.count(), BundleComponent.objects.count()) == before


def test_components_cannot_be_changed_after_creation(api, kit):
    response = api.patch("/api/v1/skus/GIFT/", data=json.dumps({"components": [{"sku": "MUG", "quantity": 1}]}),
                         content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "components_immutable"

    same = api.patch("/api/v1/skus/GIFT/", data=json.dumps({"name": "Gift", "components": [
        {"sku": "MUG", "quantity": 2}, {"sku": "TEA", "quantity": 1}]}), content_type="application/json")
    assert same.status_code == 200, same.content
    assert same.json()["name"] == "Gift"


# ------------------------------------------------------------------------------ reads


def test_bundle_stock_is_derived_per_location_and_summed(api, kit):
    stock.stock_sell(sku="TEA", location="wh", quantity=1)  # wh: MUG 7 -> 3 sets, TEA 9 -> 9: 3
    reservations.reservation_create(lines=[{"sku": "MUG", "quantity": 2, "location": "wh"}])  # MUG avail 5 -> 2

    response = api.get("/api/v1/stock/GIFT/")

    assert response.status_code == 200
    body = response.json()
    assert body["bundle"] is True
    by_location = {row["location"]: row for row in body["locations"]}
    # wh: on_hand min(7//2, 9) = 3; available min(5//2, 9) = 2; store: min(4//2, 1) = 1 both
    assert (by_location["wh"]["on_hand"], by_location["wh"]["available"], by_location["wh"]["reserved"]) == (3, 2, 1)
    assert (by_location["store"]["on_hand"], by_location["store"]["available"]) == (1, 1)
    assert (body["on_hand"], body["reserved"], body["available"]) == (4, 1, 3)
    assert response.headers["ETag"]
    assert "bundle" not in api.get("/api/v1/stock/MUG/").json()


def test_bundle_etag_changes_when_a_component_changes(api, kit):
    etag = api.get("/api/v1/stock/GIFT/").headers["ETag"]
    assert api.get("/api/v1/stock/GIFT/", HTTP_IF_NONE_MATCH=etag).status_code == 304

    stock.stock_receive(sku="TEA", location="store", quantity=1)

    assert api.get("/api/v1/stock/GIFT/", HTTP_IF_NONE_MATCH=etag).status_code == 200


def test_bulk_read_and_as_of_derive_bundles_too(api, kit):
    before = timezone.now()
    stock.stock_sell(sku="MUG", location="wh", quantity=5)  # wh: 2 mugs -> 1 set

    bulk = api.get("/api/v1/stock/?sku=GIFT&sku=MUG").json()["results"]
    past = api.get("/api/v1/stock/GIFT/", {"as_of": (before + timedelta(microseconds=1)).isoformat()}).json()

    assert [r["sku"] for r in bulk] == ["GIFT", "MUG"]
    assert bulk[0]["available"] == 1 + 1 and bulk[0]["bundle"] is True
    assert past["bundle"] is True and past["available"] == 3 + 1


def test_a_bundle_with_a_component_missing_at_a_location_shows_zero_there(api, kit):
    LocationFactory(code="popup")
    stock.stock_receive(sku="MUG", location="popup", quantity=10)

    body = api.get("/api/v1/stock/GIFT/").json()

    assert {r["location"]: r["available"] for r in body["locations"]}["popup"] == 0


# ------------------------------------------------------------------------------ adjustments


def test_selling_a_bundle_sells_its_components_in_one_transaction(api, kit):
    response = post(api, "/api/v1/stock/adjustments/", {"sku": "GIFT", "location": "wh", "type": "sale",
                                                         "quantity": 3})

    assert response.status_code == 201, response.content
    positions = {p["sku"]: p for p in response.json()["positions"]}
    assert (positions["MUG"]["on_hand"], positions["TEA"]["on_hand"]) == (1, 7)
    rows = StockMovement.objects.filter(type="sale").order_by("id")
    assert [(r.sku.code, r.on_hand_delta, r.metadata.get("bundle"), r.metadata.get("bundle_units"))
            for r in rows] == [("MUG", -6, "GIFT", 3), ("TEA", -3, "GIFT", 3)]
    assert selectors.ledger_drift() == []


def test_selling_more_bundles_than_the_scarcest_component_allows_changes_nothing(api, kit):
    before = stock_state()

    response = post(api, "/api/v1/stock/adjustments/", {"sku": "GIFT", "location": "store", "type": "sale",
                                                         "quantity": 2})

    assert response.status_code == 409
    assert response.json()["error"] == "insufficient_stock" and response.json()["available"] == 1
    assert stock_state() == before


def test_a_repeated_bundle_sale_request_applies_once(api, kit):
    body = {"sku": "GIFT", "location": "wh", "type": "sale", "quantity": 1}
    first = api.post("/api/v1/stock/adjustments/", data=json.dumps(body), content_type="application/json",
                     HTTP_IDEMPOTENCY_KEY="same")
    second = api.post("/api/v1/stock/adjustments/", data=json.dumps(body), content_type="application/json",
                      HTTP_IDEMPOTENCY_KEY="same")

    assert (first.status_code, second.status_code) == (201, 201)
    assert StockPosition.objects.get(sku__code="MUG", location__code="wh").on_hand == 5


@pytest.mark.parametrize("kind", ["receipt", "return", "count", "adjustment", "transfer"])
def test_other_adjustments_of_a_bundle_answer_409_bundle_has_no_stock(api, kit, kind):
    before = stock_state()
    body = {"sku": "GIFT", "location": "wh", "type": kind, "quantity": 1}
    if kind == "transfer":
        body["to_location"] = "store"

    response = post(api, "/api/v1/stock/adjustments/", body)

    assert response.status_code == 409, response.content
    assert response.json()["error"] == "bundle_has_no_stock"
    assert stock_state() == before


def test_a_version_check_on_a_bundle_uses_its_derived_version(api, kit):
    version = {r["location"]: r["version"] for r in api.get("/api/v1/stock/GIFT/").json()["locations"]}["wh"]

    stale = post(api, "/api/v1/stock/adjustments/", {"sku": "GIFT", "location": "wh", "type": "sale", "quantity": 1,
                                                      "expected_version": version - 1})
    fresh = post(api, "/api/v1/stock/adjustments/", {"sku": "GIFT", "location": "wh", "type": "sale", "quantity": 1,
                                                      "expected_version": version})

    assert stale.status_code == 412 and stale.json()["current_version"] == version
    assert fresh.status_code == 201


# ------------------------------------------------------------------------------ reservations


def test_reserving_a_bundle_holds_its_components_at_one_location_each(api, kit):
    # wh makes 3 sets, store 1: 4 sets need both, each set from one place.
    response = post(api, "/api/v1/reservations/", {"lines": [{"sku": "GIFT", "quantity": 4}]})

    assert response.status_code == 201, response.content
    lines = sorted((ln["sku"], ln["location"], ln["quantity"], ln.get("bundle")) for ln in response.json()["lines"])
    assert lines == [("MUG", "store", 2, "GIFT"), ("MUG", "wh", 6, "GIFT"),
                     ("TEA", "store", 1, "GIFT"), ("TEA", "wh", 3, "GIFT")]
    assert api.get("/api/v1/stock/GIFT/").json()["available"] == 0
    assert selectors.ledger_drift() == []


def test_a_bundle_reservation_is_all_or_nothing(api, kit):
    before = stock_state()

    response = post(api, "/api/v1/reservations/", {"lines": [{"sku": "MUG", "quantity": 1},
                                                             {"sku": "GIFT", "quantity": 5}]})

    assert response.status_code == 409, response.content
    assert {"sku": "GIFT", "requested": 5, "available": 4} in response.json()["lines"]
    assert stock_state() == before


def test_a_bundle_and_its_component_in_one_reservation_share_the_component(api, kit):
    # 11 mugs: 4 sets take 8 (6 at wh, 2 at store), 3 mugs are left for the plain line.
    ok = post(api, "/api/v1/reservations/", {"lines": [{"sku": "GIFT", "quantity": 4}, {"sku": "MUG", "quantity": 3}]})
    assert ok.status_code == 201, ok.content
    assert StockPosition.objects.get(sku__code="MUG", location__code="wh").available == 0

    too_many = post(api, "/api/v1/reservations/", {"lines": [{"sku": "MUG", "quantity": 1}]})
    assert too_many.status_code == 409


def test_committing_and_releasing_a_bundle_reservation(api, kit):
    held = reservations.reservation_create(lines=[{"sku": "GIFT", "quantity": 2, "location": "wh"}])
    released = reservations.reservation_create(lines=[{"sku": "GIFT", "quantity": 1, "location": "wh"}])

    reservations.reservation_commit(reservation_id=held.pk)
    reservations.reservation_release(reservation_id=released.pk)

    mug = StockPosition.objects.get(sku__code="MUG", location__code="wh")
    tea = StockPosition.objects.get(sku__code="TEA", location__code="wh")
    assert (mug.on_hand, mug.reserved, tea.on_hand, tea.reserved) == (3, 0, 8, 0)
    body = api.get(f"/api/v1/reservations/{held.pk}/").json()
    assert body["status"] == "committed" and {ln["bundle"] for ln in body["lines"]} == {"GIFT"}
    assert selectors.ledger_drift() == []


def test_a_waiting_bundle_reservation_is_filled_when_a_component_arrives(kit):
    # store makes 1 set (4 mugs, 1 tea): 2 sets wait for a second tea.
    waiting = reservations.reservation_create(lines=[{"sku": "GIFT", "quantity": 2, "location": "store"}],
                                              waitlist=True)
    assert waiting.status == "waiting"
    assert set(WaitlistEntry.objects.filter(reservation=waiting).values_list("sku__code", flat=True)) == {"MUG", "TEA"}

    stock.stock_receive(sku="TEA", location="store", quantity=1)

    waiting.refresh_from_db()
    assert waiting.status == "active"
    assert {(ln.sku.code, ln.quantity, ln.bundle.code) for ln in waiting.lines.all()} == {
        ("MUG", 4, "GIFT"), ("TEA", 2, "GIFT")}
    assert selectors.ledger_drift() == []


def test_service_refusals_for_bundles_carry_their_codes(kit):
    with pytest.raises(Conflict) as refused:
        stock.stock_receive(sku="GIFT", location="wh", quantity=1)
    assert refused.value.code == "bundle_has_no_stock"
    with pytest.raises(InsufficientStock):
        stock.stock_sell(sku="GIFT", location="wh", quantity=4)


def test_a_commit_short_at_a_position_two_lines_share_is_refused_whole_with_its_lines(kit):
    # one mug alone and a set (two mugs) held at wh; then a count leaves only 2 mugs there
    held = reservations.reservation_create(lines=[{"sku": "MUG", "quantity": 1, "location": "wh"},
                                                  {"sku": "GIFT", "quantity": 1, "location": "wh"}])
    stock.stock_count(sku="MUG", location="wh", quantity=2)
    before = stock_state()

    with pytest.raises(InsufficientStock) as refused:
        reservations.reservation_commit(reservation_id=held.pk)

    assert refused.value.extra["lines"] and {line["sku"] for line in refused.value.extra["lines"]} == {"MUG"}
    assert stock_state() == before
