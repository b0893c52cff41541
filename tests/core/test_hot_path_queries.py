"""The SQL statements of every hot HTTP path, pinned (docs/performance.md, `./dev manage bench_http`).

A per-row loop, a new lookup or a second round trip where one did is a failure here, with the
statements listed. Inside a test the service transactions are savepoints (SAVEPOINT ... RELEASE
are counted); in production they are BEGIN ... COMMIT, which the database driver sends without
a Django cursor (not counted by Django, one round trip each). The API key is read once and then
served from the process's cache (core.auth), and there is no per-request health-check query
(CONN_HEALTH_CHECKS is off): neither appears below.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from channels.models import Channel, ChannelListing
from core.auth import api_key_cache_clear, api_key_create
from core.models import ApiKey
from inventory import services as inventory_services
from inventory.serializers import AdjustmentSerializer
from inventory.views import _adjustment_fast
from reservations.serializers import ReservationCreateSerializer
from reservations.views import _create_fast

pytestmark = pytest.mark.django_db

SHOPIFY_SECRET = "hot-path-secret"  # noqa: S105 - a test channel


def _statements(captured: CaptureQueriesContext) -> list[str]:
    """Each statement as its verb and first table, e.g. 'INSERT core_idempotencyrecord'."""
    out = []
    for query in captured.captured_queries:
        sql = query["sql"].strip()
        verb = sql.split(None, 1)[0].upper()
        if verb in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
            out.append(verb)
            continue
        if verb == "WITH":  # a data-modifying CTE: name what it writes first
            verb = "WITH INSERT"
        table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?([a-z_]+)"?', sql, re.IGNORECASE)
        out.append(f"{verb} {table.group(1) if table else '?'}")
    return out


@pytest.fixture
def key():
    return api_key_create(name="hot", scopes=["stock:read", "stock:write", "reservations:write"])[1]


@pytest.fixture
def api(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def stocked(sku, location, other_location):
    for loc in (location, other_location):
        inventory_services.stock_receive(sku=sku.code, location=loc.code, quantity=50)
    return sku


def _warm(api, sku):
    """First request of a key: its row is read (and last_used_at written) once, then cached."""
    assert api.get(f"/api/v1/stock/{sku.code}/").status_code == 200


def test_there_is_no_per_request_health_check():
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is False


def test_stock_reads_are_one_statement_whatever_the_locations(api, stocked):
    _warm(api, stocked)
    with CaptureQueriesContext(connection) as single:
        response = api.get(f"/api/v1/stock/{stocked.code}/")
    assert response.status_code == 200 and len(response.json()["locations"]) == 2
    assert _statements(single) == ["SELECT inventory_sku"]  # SKU, positions and location codes joined

    with CaptureQueriesContext(connection) as bulk:
        response = api.get(f"/api/v1/stock/?sku={stocked.code}&sku=NOPE&sku={stocked.code}")
    assert response.status_code == 200 and [r["sku"] for r in response.json()["results"]] == [stocked.code]
    assert _statements(bulk) == ["SELECT inventory_sku"]

    etag = response_etag = api.get(f"/api/v1/stock/{stocked.code}/")["ETag"]
    with CaptureQueriesContext(connection) as not_modified:
        response = api.get(f"/api/v1/stock/{stocked.code}/", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304 and response["ETag"] == response_etag
    assert _statements(not_modified) == ["SELECT inventory_sku"]


def test_a_reservation_is_a_fixed_set_of_statements(api, stocked):
    _warm(api, stocked)
    body = {"lines": [{"sku": stocked.code, "quantity": 60}], "ttl_seconds": 600}  # split over both locations
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/api/v1/reservations/", body, format="json", HTTP_IDEMPOTENCY_KEY="r-1")
    assert response.status_code == 201, response.content
    assert len(response.json()["lines"]) == 2
    assert _statements(captured) == [
        "SAVEPOINT",                          # the one-statement attempt, the Idempotency-Key claim its first
        "WITH INSERT core_idempotencyrecord",  # CTE: no location holds 60 whole, so it undoes itself and
        "ROLLBACK",                           # its claim (stockline_all_or_nothing)
        "RELEASE",
        "INSERT core_idempotencyrecord",      # the claim on its own (autocommit, ON CONFLICT DO NOTHING)
        "SELECT inventory_sku",               # the general path: SKUs and the eligible locations, one statement
        "SAVEPOINT",                          # BEGIN in production
        "SELECT inventory_stockposition",     # positions locked, pk order
        "UPDATE inventory_stockposition",     # every hold's `reserved`, one statement
        "INSERT inventory_stockmovement",     # every ledger row, one statement
        "WITH INSERT reservations_reservation",  # the reservation and its lines, one statement
        "INSERT channels_dirtypair",          # stock-change reactions: channel outbox,
        "INSERT analytics_alertdirty",        # and analytics alerts
        "RELEASE",                            # COMMIT in production
        "UPDATE core_idempotencyrecord",      # the answer stored for replays
    ]


def test_a_reservation_of_many_lines_costs_no_more_statements(api, stocked):
    others = [inventory_services.sku_create(code=f"MANY-{i}", name="many") for i in range(5)]
    for other in others:
        inventory_services.stock_receive(sku=other.code, location="wh", quantity=5)
    _warm(api, stocked)
    body = {"lines": [{"sku": s.code, "quantity": 1} for s in [stocked, *others]]}
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/api/v1/reservations/", body, format="json", HTTP_IDEMPOTENCY_KEY="r-many")
    assert response.status_code == 201, response.content
    assert len(captured.captured_queries) == 4  # as for one line (below)


def test_a_reservation_held_at_one_location_is_one_statement(api, stocked):
    _warm(api, stocked)
    body = {"lines": [{"sku": stocked.code, "quantity": 7}], "ttl_seconds": 600}
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/api/v1/reservations/", body, format="json", HTTP_IDEMPOTENCY_KEY="r-one")
    assert response.status_code == 201, response.content
    assert [(line["quantity"], line["location"]) for line in response.json()["lines"]] == [(7, "store")]
    assert _statements(captured) == [
        "SAVEPOINT",                          # none in production: the statement is its own transaction
        "WITH INSERT core_idempotencyrecord",  # the Idempotency-Key claim, SKUs, locations, lock, hold, ledger
        "RELEASE",                            # rows, reservation + lines, outbox and alert marks: one statement
        "UPDATE core_idempotencyrecord",      # the answer stored for replays
    ]


def test_a_sale_is_one_statement(api, stocked):
    _warm(api, stocked)
    body = {"sku": stocked.code, "location": "wh", "type": "sale", "quantity": 1}
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/api/v1/stock/adjustments/", body, format="json", HTTP_IDEMPOTENCY_KEY="s-1")
    assert response.status_code == 201, response.content
    assert _statements(captured) == [
        "SAVEPOINT",                          # none in production: the statement is its own transaction
        "WITH INSERT core_idempotencyrecord",  # the Idempotency-Key claim, codes, conditional UPDATE, ledger
        "RELEASE",                            # row, outbox and alert marks
        "UPDATE core_idempotencyrecord",
    ]
    position = response.json()["positions"][0]
    assert (position["on_hand"], position["version"]) == (49, 2)


def test_one_statement_texts_stay_within_what_psycopg_converts_once():
    # psycopg caches a query's placeholder conversion only up to 4,096 bytes (psycopg._queries);
    # a longer text is parsed again on every call (inventory.one_statement.compact). The
    # reservation's statement, which also resolves its SKUs and locations, is over it (about 4 % of
    # a reservation's CPU, less than the round trip it saves); it must not grow further unnoticed.
    from inventory.sale_statement import _sale_sql
    from reservations.create_statement import _create_sql

    assert len(_sale_sql(False)) <= 4096 and len(_sale_sql(True)) <= 4096
    assert len(_create_sql(False)) <= 5000 and len(_create_sql(True)) <= 5400


def test_a_refused_sale_takes_the_general_path(api, stocked):
    _warm(api, stocked)
    body = {"sku": stocked.code, "location": "wh", "type": "sale", "quantity": 51}
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/api/v1/stock/adjustments/", body, format="json", HTTP_IDEMPOTENCY_KEY="s-2")
    assert response.status_code == 409 and response.json()["available"] == 50
    # the one statement sold nothing and undid its claim; the claim alone, then the general path
    # locks, decides and refuses
    assert _statements(captured)[:6] == ["SAVEPOINT", "WITH INSERT core_idempotencyrecord", "ROLLBACK", "RELEASE",
                                         "INSERT core_idempotencyrecord", "SELECT inventory_stockmovement"]


def test_a_sale_on_the_general_path_is_a_fixed_set_of_statements(api, stocked, settings):
    settings.STOCK_SALE_ONE_STATEMENT = False
    _warm(api, stocked)
    body = {"sku": stocked.code, "location": "wh", "type": "sale", "quantity": 1}
    with CaptureQueriesContext(connection) as captured:
        response = api.post("/api/v1/stock/adjustments/", body, format="json", HTTP_IDEMPOTENCY_KEY="s-1")
    assert response.status_code == 201, response.content
    assert _statements(captured) == [
        "INSERT core_idempotencyrecord",      # the Idempotency-Key claim
        "SELECT inventory_stockmovement",     # replay check by ledger key (a re-run after a crash)
        "SELECT inventory_sku",               # the SKU and the location, one statement
        "SAVEPOINT",
        "INSERT inventory_stockposition",     # missing positions created (ON CONFLICT DO NOTHING)
        "SELECT inventory_stockposition",     # locked
        "SELECT inventory_stockmovement",     # replay check again, under the lock
        "WITH INSERT inventory_stockposition",  # the position UPDATE and its ledger row, one statement
        "INSERT channels_dirtypair",
        "INSERT analytics_alertdirty",
        "RELEASE",
        "UPDATE core_idempotencyrecord",
    ]


def _shopify_post(client, slug: str, secret: str = SHOPIFY_SECRET):
    order = {"id": random.getrandbits(40), "line_items": [{"id": 1, "variant_id": 7, "quantity": 1}]}
    body = json.dumps(order).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return client.post(f"/webhooks/{slug}/", data=body, content_type="application/json",
                       HTTP_X_SHOPIFY_HMAC_SHA256=signature, HTTP_X_SHOPIFY_TOPIC="orders/create",
                       HTTP_X_SHOPIFY_WEBHOOK_ID=uuid.uuid4().hex)


@pytest.fixture
def shopify(location, sku):
    channel = Channel.objects.create(slug="hot-shop", name="Hot shop", kind="shopify", webhook_secret=SHOPIFY_SECRET,
                                     default_location=location, push_enabled=False)
    ChannelListing.objects.create(channel=channel, sku=sku, external_id="7", attributes={"variant_id": "7"})
    return channel


def test_a_webhook_ack_is_one_insert_once_its_channel_is_known(client, shopify):
    with CaptureQueriesContext(connection) as first:
        assert _shopify_post(client, "hot-shop").json()["status"] == "accepted"
    # SAVEPOINT/RELEASE only inside a transaction (this test's): in production the INSERT runs alone.
    # It may fail (jsonb refusing a body Python parsed) and is then repeated with the parsed payload.
    stored = ["SAVEPOINT", "INSERT ingestion_inboundevent", "RELEASE"]
    assert _statements(first) == ["SELECT channels_channel", *stored]
    with CaptureQueriesContext(connection) as then:
        assert _shopify_post(client, "hot-shop").json()["status"] == "accepted"
    assert _statements(then) == stored  # verified, stored; the drain does the rest


def test_a_saved_channel_change_takes_effect_at_once_in_this_process(client, shopify):
    assert _shopify_post(client, "hot-shop").status_code == 200
    shopify.webhook_secret = "rotated"
    shopify.save()
    assert _shopify_post(client, "hot-shop").status_code == 401
    assert _shopify_post(client, "hot-shop", secret="rotated").status_code == 200
    shopify.active = False
    shopify.save()
    assert _shopify_post(client, "hot-shop", secret="rotated").status_code == 404


def test_a_revoked_key_stops_working_within_the_cache_window(settings, stocked):
    api_key_cache_clear()
    plaintext = api_key_create(name="revoked", scopes=["stock:read"])[1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get(f"/api/v1/stock/{stocked.code}/").status_code == 200
    ApiKey.objects.filter(name="revoked").update(active=False)

    # within the window the process still trusts it (documented); once it has passed, 401
    settings.API_KEY_CACHE_SECONDS = 60
    assert client.get(f"/api/v1/stock/{stocked.code}/").status_code == 200
    settings.API_KEY_CACHE_SECONDS = 0
    assert client.get(f"/api/v1/stock/{stocked.code}/").status_code == 401
    # a wrong secret with a right prefix is never served from the cache
    wrong = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {wrong}")
    settings.API_KEY_CACHE_SECONDS = 60
    assert client.get(f"/api/v1/stock/{stocked.code}/").status_code == 401


# ------------------------------------------------------------------------------ fast validation

# The views validate plain bodies without building their serializers; these bodies must come out
# exactly as the serializer gives them, and anything the fast path is unsure of goes to the
# serializer (None), which then accepts or refuses it with its own messages.

_GOOD_CODES = ["SKU-1", "a", "x" * 64, "ab cd", "Z.9_x"]
_CODES = [*_GOOD_CODES, "x" * 100, "x" * 101, " SKU", "SKU ", "", "ü", "a\x00b", "a\tb", 5, None, True]
_GOOD_INTS = [1, 5, 900, 10**9]
_INTS = [*_GOOD_INTS, 0, -1, 10**9 + 1, -(10**9), True, 5.0, "5", None, 86400, 86401]


def _pick(rng: random.Random, good: list, anything: list):
    """Mostly plain values (the fast path's case), sometimes anything at all."""
    return rng.choice(good if rng.random() < 0.8 else anything)


def _reservation_bodies(rng: random.Random):
    for _ in range(400):
        body: dict = {}
        if rng.random() < 0.95:
            lines = []
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                line: dict = {}
                if rng.random() < 0.97:
                    line["sku"] = _pick(rng, _GOOD_CODES, _CODES)
                if rng.random() < 0.97:
                    line["quantity"] = _pick(rng, _GOOD_INTS, _INTS)
                if rng.random() < 0.3:
                    line["location"] = _pick(rng, [*_GOOD_CODES, None], _CODES)
                if rng.random() < 0.1:
                    line["extra"] = 1
                lines.append(line if rng.random() < 0.97 else "not a line")
            body["lines"] = lines if rng.random() < 0.97 else {"sku": "x"}
        for name, good, values in (
            ("channel", [*_GOOD_CODES, None], _CODES), ("order_ref", ["", "o" * 200, "A-1"], [*_CODES, "o" * 201]),
            ("ttl_seconds", [1, 60, 86400], _INTS), ("waitlist", [True, False], [0, 1, "true", None]),
        ):
            if rng.random() < 0.3:
                body[name] = _pick(rng, good, values)
        yield body


def _adjustment_bodies(rng: random.Random):
    for _ in range(400):
        body: dict = {}
        for name, good, values, chance in (
            ("sku", _GOOD_CODES, _CODES, 0.97), ("location", _GOOD_CODES, _CODES, 0.97),
            ("type", ["sale", "receipt", "count", "transfer", "adjustment", "return"], ["nope", 1, None], 0.97),
            ("quantity", [*_GOOD_INTS, -5, -(10**9)], _INTS, 0.97),
            ("to_location", [*_GOOD_CODES, None], _CODES, 0.2),
            ("reference", ["", "r" * 200, "order 12"], [*_CODES, "r" * 201], 0.3),
            ("expected_version", [0, 3, None], [-1, True, "3", 2**63], 0.2),
        ):
            if rng.random() < chance:
                body[name] = _pick(rng, good, values)
        yield body


@pytest.mark.parametrize(("fast", "serializer", "bodies"), [
    (_create_fast, ReservationCreateSerializer, _reservation_bodies),
    (_adjustment_fast, AdjustmentSerializer, _adjustment_bodies),
])
def test_fast_validation_gives_exactly_what_the_serializer_gives(fast, serializer, bodies):
    rng = random.Random(11)
    accepted = 0
    for body in [*bodies(rng), "not an object", [1]]:
        result = fast(body)
        if result is None:
            continue
        checked = serializer(data=body)
        assert checked.is_valid(), (body, checked.errors)
        assert json.loads(json.dumps(checked.validated_data)) == result, body
        accepted += 1
    assert accepted > 20  # the fast path is really taken for plain bodies


def test_a_bulk_stock_read_reads_each_skus_positions_through_the_index(location):
    # The bulk read's generic plan (the prepared statement's, as psycopg runs it from its sixth
    # run on) on 1,100 positions: each asked SKU's positions through the (sku, location) index.
    # As a plain join of SKUs and positions, the plan hashed the ten SKUs and read every position
    # (a sequential scan: the benchmark's 1,112 rows per read of 10 SKUs).
    from inventory.models import Sku, StockPosition
    from inventory.selectors import _stock_sql

    skus = Sku.objects.bulk_create([Sku(code=f"PLAN-{n:04d}", name=f"plan {n}") for n in range(1100)])
    StockPosition.objects.bulk_create([StockPosition(sku=s, location=location, on_hand=5) for s in skus])
    codes = ",".join(f"PLAN-{n:04d}" for n in range(0, 1000, 100))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE inventory_sku; ANALYZE inventory_stockposition")
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute("PREPARE bulk_plan_test (text[]) AS " + _stock_sql(False).replace("%s", "$1"))
        try:
            cursor.execute(f"EXPLAIN (ANALYZE) EXECUTE bulk_plan_test('{{{codes}}}')")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE bulk_plan_test")
            cursor.execute("RESET plan_cache_mode")
    assert "Seq Scan on inventory_stockposition" not in plan, plan
    assert re.search(r"Index Scan using \w+ on inventory_stockposition", plan), plan


def test_a_single_stock_read_reuses_its_plan(api, stocked):
    # The one-SKU read compares a scalar: PostgreSQL reuses the prepared statement's generic plan
    # after its first five runs. With `code = ANY(array)` every read was planned anew (a custom
    # plan made for a one-element array always looks cheaper than the generic one). psycopg
    # prepares a statement on its sixth run (DB_PREPARE_THRESHOLD); PostgreSQL plans a prepared
    # statement five times before it weighs its generic plan.
    for _ in range(20):
        assert api.get(f"/api/v1/stock/{stocked.code}/").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                       "WHERE statement LIKE %s AND statement LIKE %s", ["SELECT s.code, x.code%", "%s.code = $1"])
        generic_plans, custom_plans = cursor.fetchone()
    assert generic_plans >= 5 and custom_plans <= 5
