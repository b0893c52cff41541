"""Unicode digits are not numbers here. `"²".isdigit()` is True and `int("²")` raises (a 500
where the check was trusted); `int("٣")` is 3, so "٣" quietly named version, page or event 3.
Every place that reads a number from a client answers 4xx with the contract's error shape."""

import json
import time
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from channels.models import Channel, DeadLetter
from inventory.models import StockPosition
from inventory.services import stock_receive
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db

SUPERSCRIPT_TWO = "²"  # isdigit() True, int() refuses it


def arabic_indic(number: int | str) -> str:
    """The same number in Arabic-Indic digits, which int() accepts (int("٣") == 3)."""
    return str(number).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))


def error_of(response) -> str:
    return response.json()["error"]


def adjust(api, sku, location, version_header: str):
    return api.post("/api/v1/stock/adjustments/", data=json.dumps(
        {"sku": sku.code, "location": location.code, "type": "receipt", "quantity": 1}),
        content_type="application/json", HTTP_IF_MATCH=version_header)


@pytest.mark.parametrize("header", [SUPERSCRIPT_TWO, f'"{SUPERSCRIPT_TWO}"', "1" * 5000])
def test_if_match_that_is_not_an_ascii_number_is_a_400_not_a_500(api, sku, location, header):
    stock_receive(sku=sku, location=location, quantity=1)

    response = adjust(api, sku, location, header)

    assert response.status_code == 400, response.content
    assert error_of(response) == "invalid_if_match"
    assert StockPosition.objects.get().on_hand == 1


def test_if_match_in_other_digits_does_not_name_a_version(api, sku, location):
    stock_receive(sku=sku, location=location, quantity=1)  # version 1

    response = adjust(api, sku, location, arabic_indic(1))  # was read as version 1 and applied

    assert response.status_code == 400 and error_of(response) == "invalid_if_match"
    assert StockPosition.objects.get().on_hand == 1
    assert adjust(api, sku, location, '"1"').status_code == 201  # the ASCII version still works


@pytest.fixture
def dead_letter(sku):
    channel = Channel.objects.create(slug="shop", name="Shop", kind="webhook", push_enabled=False)
    now = timezone.now()
    return DeadLetter.objects.create(channel=channel, sku=sku, quantity=3, attempts=8, first_failed_at=now,
                                     last_failed_at=now)


@pytest.mark.parametrize("action", ["retry", "discard"])
def test_dead_letter_ids_are_ascii_digits(api, dead_letter, action):
    for pk in (SUPERSCRIPT_TWO, arabic_indic(dead_letter.pk), "9" * 30):
        response = api.post(f"/api/v1/dead-letters/{pk}/{action}/", data=json.dumps({"reason": "r"}),
                            content_type="application/json")
        assert response.status_code == 404, (pk, response.content)
        assert error_of(response) == "dead_letter_not_found"
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.OPEN  # "٥" did not retry or discard #5


def test_reprocess_ids_are_json_integers(api):
    from ingestion.models import InboundEvent

    now = timezone.now()
    event = InboundEvent.objects.create(source="api", dedup_key="api:e1", delivery_id="e1", status="failed",
                                        next_attempt_at=now, received_at=now, payload={})
    for ids in ([arabic_indic(event.pk)], [SUPERSCRIPT_TWO], [str(event.pk)], [2**63]):
        response = api.post("/api/v1/events/reprocess/", data=json.dumps({"ids": ids}),
                            content_type="application/json")
        assert response.status_code == 400, (ids, response.content)
        assert error_of(response) == "validation_error"
    assert InboundEvent.objects.get().status == "failed"  # "٣" did not requeue event 3


def test_location_priority_is_a_json_integer(api, location):
    for value in (arabic_indic(5), SUPERSCRIPT_TWO, "5", 2**31):
        response = api.patch(f"/api/v1/locations/{location.code}/", data=json.dumps({"priority": value}),
                             content_type="application/json")
        assert response.status_code == 400, (value, response.content)
        assert error_of(response) == "validation_error"
    location.refresh_from_db()
    assert location.priority == 100
    ok = api.patch(f"/api/v1/locations/{location.code}/", data=json.dumps({"priority": 5}),
                   content_type="application/json")
    assert ok.status_code == 200 and ok.json()["priority"] == 5


@pytest.mark.parametrize("patch", [
    {"rate_limit_per_second": arabic_indic(3)},
    {"retry": {"base_delay": arabic_indic(2)}},
    {"retry": {"max_delay": SUPERSCRIPT_TWO}},
    {"circuit": {"cooldown_seconds": arabic_indic(9)}},
])
def test_channel_numbers_are_json_numbers(api, patch):
    Channel.objects.create(slug="c1", name="C", kind="webhook")
    response = api.patch("/api/v1/channels/c1/", data=json.dumps(patch), content_type="application/json")
    assert response.status_code == 400, response.content
    assert error_of(response) == "validation_error"
    channel = Channel.objects.get()
    assert (channel.rate_limit_per_second, channel.retry_base_delay, channel.retry_max_delay,
            channel.circuit_cooldown_seconds) == (5.0, 1.0, 30.0, 60.0)


def test_page_numbers_and_sizes_are_ascii_digits(api):
    for n in range(3):
        SkuFactory(code=f"P-{n}")
    assert len(api.get("/api/v1/skus/?page_size=1").json()["results"]) == 1

    other_size = api.get(f"/api/v1/skus/?page_size={arabic_indic(1)}")  # not a size: the default
    other_page = api.get(f"/api/v1/skus/?page_size=1&page={arabic_indic(2)}")
    superscript_page = api.get(f"/api/v1/skus/?page={SUPERSCRIPT_TWO}")

    assert other_size.status_code == 200 and len(other_size.json()["results"]) == 3
    assert other_page.status_code == 404 and error_of(other_page) == "not_found"
    assert superscript_page.status_code == 404 and error_of(superscript_page) == "not_found"


def test_ledger_limit_is_ascii_digits(api, sku, location):
    for _ in range(3):
        stock_receive(sku=sku, location=location, quantity=1)
    assert len(api.get(f"/api/v1/stock/{sku.code}/movements/?limit=1").json()["results"]) == 1
    response = api.get(f"/api/v1/stock/{sku.code}/movements/?limit={arabic_indic(1)}")
    assert response.status_code == 200 and len(response.json()["results"]) == 3


def test_as_of_in_other_digits_is_a_400(api, sku, location):
    stock_receive(sku=sku, location=location, quantity=1)
    response = api.get(f"/api/v1/stock/{sku.code}/?as_of={arabic_indic(2030)}-01-01T00:00:00Z")
    assert response.status_code == 400 and error_of(response) == "invalid_as_of"


def test_canonical_occurred_at_in_other_digits_is_rejected(api):
    event = {"event_id": "e-1", "type": "receipt", "sku": "S", "location": "wh", "quantity": 1,
             "occurred_at": f"{arabic_indic(2024)}-01-01T00:00:00Z"}
    response = api.post("/api/v1/events/", data=json.dumps({"events": [event]}), content_type="application/json")
    assert response.status_code == 202
    assert response.json()["accepted"] == 0
    assert response.json()["rejected"][0]["error"] == "invalid_occurred_at"


@pytest.mark.parametrize("length", [SUPERSCRIPT_TWO, arabic_indic(2)])
def test_webhook_content_length_that_is_not_ascii_is_a_400(client, length):
    Channel.objects.create(slug="pos", name="POS", kind="webhook", webhook_secret="s")
    response = client.post("/webhooks/pos/", data=b"{}", content_type="application/json", CONTENT_LENGTH=length)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_content_length"


def test_standard_webhooks_timestamp_in_other_digits_is_refused(client):
    """Signed over the literal header, a timestamp of now in Arabic-Indic digits passed as now."""
    from channels.adapters.signing import standard_webhooks_sign

    Channel.objects.create(slug="pos", name="POS", kind="webhook", webhook_secret="plain-secret")
    body = json.dumps({"events": [{"event_id": "e1", "type": "receipt", "sku": "S", "location": "wh",
                                   "quantity": 1, "occurred_at": datetime.now(UTC).isoformat()}]}).encode()
    timestamp = arabic_indic(int(time.time()))
    signature = standard_webhooks_sign("plain-secret", "msg_1", timestamp, body)
    response = client.post("/webhooks/pos/", data=body, content_type="application/json", HTTP_WEBHOOK_ID="msg_1",
                           HTTP_WEBHOOK_TIMESTAMP=timestamp, HTTP_WEBHOOK_SIGNATURE=signature)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"


def test_admin_get_parameters_in_other_digits_never_answer_500(admin_client):
    """A guard (Django's admin already refuses these): page, ordering, filters and date
    hierarchy parameters, and object ids in the URL, of every registered model."""
    from django.contrib import admin
    from django.urls import reverse

    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        params = ["p=²", f"p={arabic_indic(2)}", "o=²", f"o={arabic_indic(1)}"]
        if model_admin.date_hierarchy:
            params += [f"{model_admin.date_hierarchy}__year=²",
                       f"{model_admin.date_hierarchy}__year={arabic_indic(2024)}&{model_admin.date_hierarchy}__month=²"]
        for list_filter in model_admin.list_filter:
            name = list_filter if isinstance(list_filter, str) else getattr(list_filter, "parameter_name", None)
            if name:
                params += [f"{name}=²", f"{name}__exact=²", f"{name}__id__exact={arabic_indic(1)}"]
        for query in params:
            assert admin_client.get(f"{url}?{query}").status_code < 500, (url, query)
        for pk in (SUPERSCRIPT_TWO, arabic_indic(1), "9" * 30):
            assert admin_client.get(f"{url}{pk}/change/").status_code < 500, (url, pk)


def test_reservation_ids_in_other_digits_name_no_reservation(api, sku, location):
    stock_receive(sku=sku, location=location, quantity=5)
    created = api.post("/api/v1/reservations/", data=json.dumps({"lines": [{"sku": sku.code, "quantity": 1}]}),
                       content_type="application/json", HTTP_IDEMPOTENCY_KEY="r-1").json()
    other_digits = arabic_indic(created["id"])  # uuid.UUID() reads these as the same hex digits

    for method, suffix in (("get", ""), ("post", "commit/"), ("post", "release/")):
        response = getattr(api, method)(f"/api/v1/reservations/{other_digits}/{suffix}")
        assert response.status_code == 404, (suffix, response.content)
        assert error_of(response) == "reservation_not_found"
    assert api.get(f"/api/v1/reservations/{created['id']}/").json()["status"] == "active"
