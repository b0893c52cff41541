"""POST /api/v1/events/ and the processing rules for canonical events."""

import pytest

from ingestion.models import InboundEvent, OversellIncident
from inventory.models import StockMovement, StockPosition
from inventory.services import stock_receive
from tests.factories import LocationFactory, SkuFactory
from tests.ingestion.conftest import drain_all

pytestmark = pytest.mark.django_db


def ev(event_id, type="receipt", quantity=1, sku="TEE-M", location="wh", **extra):
    return {"event_id": event_id, "type": type, "sku": sku, "location": location, "quantity": quantity,
            "occurred_at": extra.pop("occurred_at", "2024-05-01T10:00:00Z"), **extra}


def on_hand(code, location="wh") -> int:
    position = StockPosition.objects.filter(sku__code=code, location__code=location).first()
    return position.on_hand if position else 0


def test_batch_accepts_dedups_forever_and_rejects_per_item(client_with, tee, wh):
    api = client_with("events:write")
    body = {"events": [ev("e1", quantity=5), ev("e2", type="sale", quantity=2), ev("e1", quantity=5),
                       {"event_id": "bad", "type": "teleport"}, ev("e3", quantity=0),
                       ev("e4", occurred_at="2024-05-01T10:00:00")]}

    response = api.post("/api/v1/events/", body, format="json")

    assert response.status_code == 202
    data = response.json()
    assert (data["accepted"], data["duplicates"]) == (2, 1)
    assert [(r["index"], r["error"]) for r in data["rejected"]] == [
        (3, "invalid_type"), (4, "invalid_quantity"), (5, "invalid_occurred_at")]
    assert all(r["detail"] for r in data["rejected"])

    again = api.post("/api/v1/events/", {"events": [ev("e1", quantity=5), ev("e5", quantity=1)]}, format="json")
    assert again.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    drain_all()
    assert on_hand("TEE-M") == 5 - 2 + 1


@pytest.mark.parametrize("body", [{}, {"events": []}, {"events": "x"}, [1, 2],
                                  {"events": [ev(f"x{i}") for i in range(1001)]}])
def test_batch_shape_errors_are_400(client_with, body):
    response = client_with("events:write").post("/api/v1/events/", body, format="json")
    assert response.status_code == 400 and response.json()["error"] == "validation_error"
    assert InboundEvent.objects.count() == 0


def test_events_need_the_events_write_scope(client_with):
    response = client_with("stock:write").post("/api/v1/events/", {"events": [ev("e1")]}, format="json")
    assert response.status_code == 403
    assert client_with("events:write").get("/api/v1/events/").status_code == 403  # listing is ops


def test_every_type_applies_through_the_ledger(tee, wh, api):
    LocationFactory(code="store")
    api.post("/api/v1/events/", {"events": [
        ev("r", "receipt", 10), ev("s", "sale", 3), ev("ret", "return", 1), ev("adj", "adjustment", -2),
        ev("t", "transfer", 4, to_location="store"), ev("c", "cancellation", 1),
    ]}, format="json")
    drain_all()
    assert (on_hand("TEE-M"), on_hand("TEE-M", "store")) == (10 - 3 + 1 - 2 - 4 + 1, 4)
    keys = set(StockMovement.objects.values_list("event_key", flat=True))
    assert {"api:r", "api:s", "api:ret", "api:adj", "api:t", "api:t#in", "api:c"} <= keys


def test_counts_older_than_the_newest_applied_are_stale(api, tee, wh):
    api.post("/api/v1/events/", {"events": [ev("c-new", "count", 7, occurred_at="2024-05-01T12:00:00Z")]},
             format="json")
    drain_all()
    api.post("/api/v1/events/", {"events": [ev("c-old", "count", 2, occurred_at="2024-05-01T11:00:00Z")]},
             format="json")
    drain_all()
    assert on_hand("TEE-M") == 7
    stale = InboundEvent.objects.get(delivery_id="c-old")
    assert stale.status == "done" and "stale" in stale.outcome["api:c-old"]


def test_unknown_sku_fails_and_bulk_reprocess_applies_it_later(api, wh):
    api.post("/api/v1/events/", {"events": [ev("later", "receipt", 3, sku="NEW-SKU")]}, format="json")
    drain_all()
    event = InboundEvent.objects.get()
    assert (event.status, event.error_code) == ("failed", "unknown_sku")
    listed = api.get("/api/v1/events/?status=failed").json()
    assert [e["id"] for e in listed["results"]] == [event.pk]

    SkuFactory(code="NEW-SKU")
    assert api.post("/api/v1/events/reprocess/", {"error": "unknown_sku"}, format="json").json() == {"requeued": 1}
    drain_all()
    assert on_hand("NEW-SKU") == 3
    assert api.get(f"/api/v1/events/{event.pk}/").json()["status"] == "done"


def test_adjustment_below_zero_retries_with_backoff_then_fails(api, tee, wh, settings):
    settings.INGESTION_MAX_ATTEMPTS = 2
    api.post("/api/v1/events/", {"events": [ev("shrink", "adjustment", -5)]}, format="json")
    drain_all()
    event = InboundEvent.objects.get()
    assert (event.status, event.attempts, event.error_code) == ("pending", 1, "insufficient_stock")
    InboundEvent.objects.update(next_attempt_at=event.received_at)  # backoff elapsed
    drain_all()
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("failed", 2)
    assert on_hand("TEE-M") == 0


def test_sale_without_stock_is_an_oversell_incident_not_a_rejection(api, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=2)
    api.post("/api/v1/events/", {"events": [ev("pos-sale", "sale", 5, reference="till-42")]}, format="json")
    drain_all()
    assert on_hand("TEE-M") == 0
    incident = OversellIncident.objects.get()
    assert (incident.requested, incident.available_before, incident.applied, incident.shortfall,
            incident.order_ref) == (5, 2, 2, 3, "till-42")
    listed = api.get("/api/v1/oversell-incidents/?sku=TEE-M").json()["results"]
    assert listed[0]["shortfall"] == 3


def test_order_ref_commits_the_matching_reservation_instead_of_selling_twice(api, tee, wh):
    from reservations.models import Reservation
    from reservations.services import reservation_create

    stock_receive(sku=tee, location=wh, quantity=10)
    # API events carry no channel: they commit reservations made without one.
    reservation = reservation_create(lines=[{"sku": "TEE-M", "quantity": 3, "location": "wh"}], order_ref="ORD-77")
    position = StockPosition.objects.get(sku=tee, location=wh)
    assert (position.on_hand, position.reserved) == (10, 3)

    api.post("/api/v1/events/", {"events": [ev("oms-1", "sale", 3, reference="ORD-77")]}, format="json")
    drain_all()

    reservation = Reservation.objects.get(pk=reservation.pk)
    position.refresh_from_db()
    assert reservation.status == "committed"
    assert (position.on_hand, position.reserved) == (7, 0)
    assert not OversellIncident.objects.exists()


def test_idempotency_key_replays_the_batch_answer(api, tee, wh):
    body = {"events": [ev("k1", quantity=2)]}
    first = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    second = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert second.json() == first.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert second["Idempotent-Replayed"] == "true"


def test_one_failing_event_does_not_hold_back_the_rest_of_its_batch(api, tee, mug, wh):
    api.post("/api/v1/events/", {"events": [
        ev("ok-1", "receipt", 4), ev("bad", "adjustment", -9, sku="MUG-1"), ev("ok-2", "sale", 1),
        ev("unknown", "receipt", 1, sku="NOPE")]}, format="json")
    drain_all()
    statuses = dict(InboundEvent.objects.values_list("delivery_id", "status"))
    assert statuses == {"ok-1": "done", "bad": "pending", "ok-2": "done", "unknown": "failed"}
    assert (on_hand("TEE-M"), on_hand("MUG-1")) == (3, 0)


def test_a_multi_row_intake_keeps_bytes_and_stores_none_as_sql_null():
    """Several rows go in as one JSON parameter (ingestion.intake): raw bytes must come back
    byte for byte (a polled order's document, any byte), and None must be SQL NULL, not JSON
    null (the drain's claim reads `fetched IS NULL`; reprocessing skips `payload IS NULL`)."""
    from ingestion.intake import _insert_new, _row

    raw = bytes(range(256))
    ids = _insert_new([_row(source="webhook", dedup_key="multi:1", delivery_id="1", payload=None, body=raw,
                            partition=0),
                       _row(source="api", dedup_key="multi:2", delivery_id="2", payload={"sku": "é☃"}, partition=0)])

    first, second = InboundEvent.objects.filter(pk__in=ids).order_by("dedup_key")
    assert bytes(first.body) == raw and second.body is None
    assert second.payload == {"sku": "é☃"}
    stored = InboundEvent.objects.filter(pk__in=ids)
    assert set(stored.filter(fetched__isnull=True).values_list("pk", flat=True)) == set(ids)
    assert list(stored.filter(payload__isnull=True).values_list("pk", flat=True)) == [first.pk]
