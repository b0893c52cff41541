"""Input PostgreSQL or Python's json would choke on (NUL, lone surrogates, NaN/Infinity, 1e400,
nesting bombs, bad UTF-8): never a 500, never a lost webhook (CONTRACT.md "Events and webhooks")."""

import io
import json

import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.test import override_settings

from channels.adapters.canonical import CanonicalError, canonical_event_parse
from ingestion import intake, selectors, views
from ingestion.models import InboundEvent
from ingestion.services import MAX_WEBHOOK_BYTES, inbound_events_reprocess
from inventory.models import StockPosition
from inventory.services import stock_receive
from tests.ingestion.conftest import (
    BC_SECRET,
    drain_all,
    post_webhook,
    shopify_headers,
    standard_headers,
    webhook_kind_key,
)

pytestmark = pytest.mark.django_db

NUL, SURROGATE = "\x00", "\ud800"
# The other engineer's core middleware refuses %00 in any URL; these tests check that the
# ingestion selectors refuse it themselves, so they run without it.
WITHOUT_NUL_MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != "core.middleware.RejectNulMiddleware"]


def ev(event_id, type="receipt", quantity=1, sku="TEE-M", location="wh", **extra):
    return {"event_id": event_id, "type": type, "sku": sku, "location": location, "quantity": quantity,
            "occurred_at": extra.pop("occurred_at", "2024-05-01T10:00:00Z"), **extra}


def post_events_raw(api, events):
    # json.dumps escapes "\x00" and "\ud800" (ensure_ascii), exactly as a client would send them.
    return api.post("/api/v1/events/", data=json.dumps({"events": events}), content_type="application/json")


def on_hand(sku, location) -> int:
    position = StockPosition.objects.filter(sku=sku, location=location).first()
    return position.on_hand if position else 0


# ------------------------------------------------------------------------------ 1. events API


@pytest.mark.parametrize("bad", [f"a{NUL}b", f"a{SURROGATE}b", NUL], ids=["nul", "surrogate", "only-nul"])
@pytest.mark.parametrize("field", ["event_id", "sku", "location", "reference", "source"])
def test_nul_or_lone_surrogate_in_a_text_field_rejects_that_event_only(client_with, tee, wh, field, bad):
    api = client_with("events:write")
    events = [ev("good-1"), {**ev("bad"), field: bad}, ev("good-2")]

    response = post_events_raw(api, events)

    assert response.status_code == 202
    data = response.json()
    assert data["accepted"] == 2 and data["duplicates"] == 0
    assert [(r["index"], r["error"]) for r in data["rejected"]] == [(1, f"invalid_{field}")]
    assert data["rejected"][0]["detail"]
    assert sorted(InboundEvent.objects.values_list("delivery_id", flat=True)) == ["good-1", "good-2"]


@pytest.mark.parametrize("bad", [f"2024-05-01T10:00:00Z{SURROGATE}", f"2024-05-01{NUL}T10:00:00Z"])
def test_bad_characters_in_occurred_at_or_to_location_are_rejected_per_item(client_with, tee, wh, bad):
    api = client_with("events:write")
    events = [ev("t1", occurred_at=bad), ev("t2", type="transfer", to_location=f"store{SURROGATE}"), ev("ok")]

    response = post_events_raw(api, events)

    assert response.status_code == 202  # the detail does not echo a surrogate (the renderer would fail)
    assert [(r["index"], r["error"]) for r in response.json()["rejected"]] == [
        (0, "invalid_occurred_at"), (1, "invalid_to_location")]
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                                  "9999-12-31T23:00:00-02:00", "0001-01-01T00:30:00+01:00"])
def test_occurred_at_postgresql_or_python_cannot_hold_is_rejected_at_intake(client_with, when):
    # Accepted before, it then failed in the drain with "time zone displacement out of range" and
    # was retried as a database error 8 times.
    response = post_events_raw(client_with("events:write"), [ev("far", occurred_at=when), ev("ok")])

    assert response.status_code == 202
    assert [(r["index"], r["error"]) for r in response.json()["rejected"]] == [(0, "invalid_occurred_at")]


@pytest.mark.parametrize("raw", [b'{"events": [{"quantity": NaN}]}', b'{"events": [{"quantity": 1e400}]}',
                                 b'{"events": ' + b"[" * 50_000, b'{"events": [1]}\xff'])
def test_events_body_that_is_not_storable_json_is_a_400_not_a_500(client_with, raw):
    response = client_with("events:write").post("/api/v1/events/", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert InboundEvent.objects.count() == 0


@pytest.mark.parametrize("field", ["event_id", "sku", "location", "to_location", "reference", "source"])
def test_canonical_parse_refuses_text_postgresql_cannot_store(field):
    raw = {**ev("e1", type="transfer", to_location="store"), field: f"x{NUL}"}
    with pytest.raises(CanonicalError) as exc:
        canonical_event_parse(raw)
    assert exc.value.code == f"invalid_{field}"


# ------------------------------------------------------------------------------ 2. webhooks

HOSTILE_BODIES = {
    "nan": b'{"id": 1, "total_price": NaN}',
    "infinity": b'{"id": 1, "total_price": Infinity}',
    "minus-infinity": b'{"id": 1, "total_price": -Infinity}',
    "overflow": b'{"id": 1, "total_price": 1e400}',
    "lone-surrogate": b'{"id": 1, "note": "\\ud800"}',
    "lone-surrogate-key": b'{"\\udfff": 1}',
    "surrogate-bytes": b'{"id": 1, "note": "\xed\xa0\x80"}',  # UTF-8-encoded surrogate: not UTF-8
    "bad-utf8": b'{"id": 1, "note": "\xff"}',
    "bomb-open": b"[" * 50_000,
    "bomb-closed": b"[" * 50_000 + b"]" * 50_000,
    "deep-but-under-recursion-limit": b"[" * 600 + b"]" * 600,
    "huge-int": b'{"id": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_signed_webhook_with_unstorable_json_is_200_and_stored_failed(client, shopify, body):
    headers = shopify_headers(body, topic="orders/create")

    response = post_webhook(client, "shop", None, headers, raw=body)

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    event = InboundEvent.objects.get()
    assert event.status == "failed" and event.error_code == "invalid_json"
    assert event.last_error.startswith("The body is not valid JSON: ")
    assert event.payload is None and bytes(event.body) == body  # the raw bytes are kept, whatever they are
    again = post_webhook(client, "shop", None, headers, raw=body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # The event can be looked at over the API, and neither the drain nor reprocess chokes on it.
    assert inbound_events_reprocess(ids=[event.pk]) == 0
    drain_all()
    event.refresh_from_db()
    assert event.status == "failed"


def test_webhook_detail_and_list_render_a_failed_hostile_event(client, client_with, shopify):
    body = HOSTILE_BODIES["surrogate-bytes"]
    post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    ops = client_with("ops")
    event = InboundEvent.objects.get()

    assert ops.get(f"/api/v1/events/{event.pk}/").status_code == 200
    assert ops.get("/api/v1/events/?error=invalid_json").json()["results"][0]["id"] == event.pk


def shopify_order(note: str, sku: str = "TEE-M") -> dict:
    return {"id": 4242, "name": "#1001", "created_at": "2024-05-01T10:00:00-04:00", "cancelled_at": None,
            "note": note, "line_items": [{"id": 1, "variant_id": 2, "product_id": 3, "sku": sku, "quantity": 2,
                                          "fulfillable_quantity": 2, "fulfillment_status": None,
                                          "gift_card": False}]}


def test_nul_inside_a_string_is_stored_as_u_fffd_and_the_order_still_applies(client, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    body = json.dumps(shopify_order(f"gift{NUL}wrap")).encode()  # "\u0000" in the JSON text
    assert b"\\u0000" in body

    response = post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    event = InboundEvent.objects.get()
    assert event.status == "pending" and bytes(event.body) == body
    assert event.payload["note"] == "gift\ufffdwrap"
    drain_all()
    event.refresh_from_db()
    assert event.status == "done" and on_hand(tee, wh) == 8


@pytest.mark.parametrize("number", ["1e-20000", "-1E-99999"])
def test_a_number_python_reads_and_jsonb_refuses_is_stored_from_the_parsed_payload(client, shopify, tee, wh, number):
    # given: a tiny exponent Python rounds to 0.0 but jsonb's numeric cannot hold (the payload is
    # normally stored from the body's own text, parsed by PostgreSQL)
    stock_receive(sku=tee, location=wh, quantity=10)
    body = json.dumps(shopify_order("ok")).replace('"note": "ok"', f'"note": "ok", "discount": {number}').encode()

    response = post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)

    # then: accepted and stored as Python read it; the order applies
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    event = InboundEvent.objects.get()
    assert event.payload["discount"] == 0.0 and bytes(event.body) == body
    drain_all()
    event.refresh_from_db()
    assert event.status == "done" and on_hand(tee, wh) == 8


@pytest.mark.parametrize("encode", [lambda text: text.encode("utf-16"), lambda text: b"\xef\xbb\xbf" + text.encode()],
                         ids=["utf-16", "utf-8-bom"])
def test_a_body_json_loads_decodes_but_jsonb_would_not_is_stored_from_the_parsed_payload(client, shopify, encode):
    body = encode(json.dumps(shopify_order("ok")))

    response = post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert InboundEvent.objects.get().payload == shopify_order("ok")


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_body_jsonb_refuses_is_stored_from_the_parsed_payload(client, shopify):
    # as in production: the webhook view runs in autocommit, so the failed INSERT has no savepoint
    body = json.dumps(shopify_order("ok")).replace('"note": "ok"', '"note": "ok", "discount": 1e-20000').encode()

    response = post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert InboundEvent.objects.get().payload["discount"] == 0.0


@pytest.mark.parametrize(("body", "text"), [
    (b'{"a": 1}', '{"a": 1}'),
    ('{"a": "\u00fc"}'.encode(), '{"a": "\u00fc"}'),
    ('{"a": 1}'.encode("utf-16"), None),  # json.loads reads UTF-16; jsonb would be sent garbage
    (b"\xef\xbb\xbf" + b'{"a": 1}', None),  # a byte-order mark: json.loads skips it, jsonb refuses it
])
def test_only_utf8_bodies_without_a_byte_order_mark_are_handed_to_jsonb_as_text(body, text):
    assert intake._json_text(body) == text


def test_nul_inside_a_sku_fails_visibly_when_processed_never_matches_another_sku(client, shopify, tee, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    body = json.dumps(shopify_order("", sku=f"TEE-M{NUL}")).encode()

    response = post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    drain_all()

    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert (event.status, event.error_code, on_hand(tee, wh)) == ("failed", "unknown_listing", 10)


def test_nul_in_a_canonical_webhook_event_fails_that_event_visibly(client, pos, tee, wh):
    body = json.dumps({"events": [ev("w1", sku=f"TEE{NUL}-M")]}).encode()

    response = post_webhook(client, "pos", None, standard_headers(body, key=webhook_kind_key()), raw=body)
    drain_all()

    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert (event.status, event.error_code, on_hand(tee, wh)) == ("failed", "unknown_sku", 0)


def test_nul_and_surrogates_in_headers_do_not_lose_the_delivery(client, shopify):
    body = json.dumps(shopify_order("")).encode()
    headers = {**shopify_headers(body, topic=f"orders/create{NUL}", webhook_id=f"id{NUL}1"),
               "HTTP_X_FORWARDED_NOTE": f"a{NUL}b{SURROGATE}"}

    response = post_webhook(client, "shop", None, headers, raw=body)

    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert event.delivery_id == "id\ufffd1" and event.topic == "orders/create\ufffd"
    assert event.headers["X-Forwarded-Note"] == "a\ufffdb?"


def test_bigcommerce_nesting_bomb_is_stored_failed_not_a_500(client, make_channel):
    make_channel("bigcommerce", "bc", secret=BC_SECRET)
    body = b"[" * 50_000  # BigCommerce's adapter reads `scope` from the body itself
    headers = standard_headers(body, key=BC_SECRET.encode(), msg_id="msg_bomb")

    response = post_webhook(client, "bc", None, headers, raw=body)

    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert event.status == "failed" and event.error_code == "invalid_json" and bytes(event.body) == body


def test_json_parse_accepts_what_postgresql_stores():
    from core.jsonsafe import json_parse

    assert json_parse(b'{"a": [1, 2.5, "\\u00e9", null, true, 1e308, -0.0]}')["a"][2] == "\u00e9"
    assert json_parse(b'{"a": "x\\u0000y"}', allow_nul=True) == {"a": "x\x00y"}
    with pytest.raises(ValueError):
        json_parse(b'{"a": "x\\u0000y"}')


# ------------------------------------------------------------------------------ 3. body size


def wsgi_request(body: bytes, *, content_length: int | None, chunked: bool = False, terminated: bool = False,
                 headers: dict | None = None, trailing: bytes = b"") -> tuple[WSGIRequest, io.BytesIO]:
    stream = io.BytesIO(body + trailing)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/shop/", "SCRIPT_NAME": "", "QUERY_STRING": "",
               "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.input": stream, "wsgi.url_scheme": "http", "CONTENT_TYPE": "application/json",
               **(headers or {})}
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(content_length)
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    if terminated:
        environ["wsgi.input_terminated"] = True
    return WSGIRequest(environ), stream


def test_413_from_content_length_reads_the_declared_body_before_answering(shopify):
    body = b"x" * (MAX_WEBHOOK_BYTES + 10)
    request, stream = wsgi_request(body, content_length=len(body), trailing=b"POST /next-request")

    response = views.webhook_receive(request, "shop")

    assert response.status_code == 413
    assert stream.read() == b"POST /next-request"  # the declared body was consumed, nothing more


def test_413_from_a_huge_content_length_does_not_read_gigabytes(shopify):
    request, stream = wsgi_request(b"x" * (16 * 1024 * 1024 + 1024), content_length=10 * 1024**3)

    response = views.webhook_receive(request, "shop")

    assert response.status_code == 413 and stream.tell() <= 16 * 1024 * 1024


def test_chunked_body_is_read_from_wsgi_input_when_the_server_dechunks(shopify):
    body = json.dumps(shopify_order("")).encode()
    request, _ = wsgi_request(body, content_length=None, chunked=True, terminated=True,
                              headers=shopify_headers(body, topic="orders/create"))

    response = views.webhook_receive(request, "shop")

    assert response.status_code == 200
    assert bytes(InboundEvent.objects.get().body) == body


def test_chunked_body_over_the_limit_is_413_and_read_no_further_than_limit_plus_one(shopify):
    body = b"x" * (MAX_WEBHOOK_BYTES + 100 * 1024)
    request, stream = wsgi_request(body, content_length=None, chunked=True, terminated=True)

    response = views.webhook_body_read(request, MAX_WEBHOOK_BYTES)

    assert response.status_code == 413 and stream.tell() == MAX_WEBHOOK_BYTES + 1


def test_chunked_body_on_a_server_that_does_not_dechunk_is_411_not_401(shopify):
    body = json.dumps(shopify_order("")).encode()
    request, stream = wsgi_request(body, content_length=None, chunked=True,
                                   headers=shopify_headers(body, topic="orders/create"))

    response = views.webhook_receive(request, "shop")

    assert response.status_code == 411 and stream.tell() == 0  # never block reading a raw socket
    assert InboundEvent.objects.count() == 0


# ------------------------------------------------------------------------------ 4. list filters


@override_settings(MIDDLEWARE=WITHOUT_NUL_MIDDLEWARE)
@pytest.mark.parametrize("param", ["channel", "source", "topic", "error", "status"])
def test_nul_in_an_event_list_filter_is_a_400_validation_error(client_with, param):
    response = client_with("ops").get("/api/v1/events/", {param: f"x{NUL}"})
    assert response.status_code == 400
    assert response.json()["error"] in ("validation_error", "invalid_status")


@override_settings(MIDDLEWARE=WITHOUT_NUL_MIDDLEWARE)
@pytest.mark.parametrize("param", ["channel", "sku"])
def test_nul_in_an_oversell_filter_is_a_400_validation_error(client_with, param):
    response = client_with("ops").get("/api/v1/oversell-incidents/", {param: NUL})
    assert response.status_code == 400 and response.json()["error"] == "validation_error"


def test_selectors_refuse_nul_themselves():
    from core.errors import ValidationFailed

    for call in (lambda: selectors.inbound_events_list(topic=NUL), lambda: selectors.inbound_events_list(source=NUL),
                 lambda: selectors.inbound_events_list(channel_slug=NUL),
                 lambda: selectors.inbound_events_list(error_code=NUL),
                 lambda: selectors.oversell_incidents_list(sku_code=NUL),
                 lambda: selectors.oversell_incidents_list(channel_slug=NUL)):
        with pytest.raises(ValidationFailed) as exc:
            list(call())
        assert exc.value.code == "validation_error"
