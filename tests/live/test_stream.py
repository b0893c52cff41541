"""`GET /api/v1/stream/stock/` over real HTTP against the ASGI server (CONTRACT section 4)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
import redis
import requests
from django.conf import settings
from django.db import transaction

from core.errors import InsufficientStock
from inventory import services
from inventory.hooks import StockChange
from inventory.models import StockPosition
from live.keys import live_keys
from live.publish import stock_change_publish
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop(transactional_db):
    location = LocationFactory(code="live-wh")
    skus = [SkuFactory(code=f"LIVE-{n}") for n in range(3)]
    for sku in skus:
        services.stock_receive(sku=sku.code, location=location.code, quantity=50)
    return location, [s.code for s in skus]


def stream_url(base: str, *codes: str, **params) -> str:
    return f"{base}/api/v1/stream/stock/?" + urlencode([("sku", c) for c in codes] + list(params.items()))


def stock_json(base: str, key: str, code: str) -> dict:
    answer = requests.get(f"{base}/api/v1/stock/{code}/", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200
    return answer.json()


def test_a_committed_change_reaches_the_stream_within_a_second(asgi_server, sse, shop, make_key):
    # given: a stream on two SKUs, open
    location, (a, b, _c) = shop
    key = make_key("stock:read")
    stream = sse(stream_url(asgi_server, a, b), {"Authorization": f"Bearer {key}"})
    assert stream.headers["content-type"].startswith("text/event-stream")
    stream.opened()

    # when: B changes
    started = time.monotonic()
    services.stock_sell(sku=b, location=location.code, quantity=3)
    event = stream.next(timeout=1.0)
    elapsed = time.monotonic() - started

    # then: one `stock` event for B, within a second, whose data is exactly GET /api/v1/stock/B/
    assert elapsed < 1.0
    assert event.event == "stock" and event.id
    assert event.json() == stock_json(asgi_server, key, b)
    assert event.json()["available"] == 47
    assert json.dumps(event.json(), separators=(",", ":"), ensure_ascii=False) == event.data

    # and a later change of A follows, with a different cursor
    services.stock_receive(sku=a, location=location.code, quantity=1)
    later = stream.next(timeout=1.0)
    assert later.json()["sku"] == a and later.json()["on_hand"] == 51 and later.id != event.id


def test_a_rolled_back_change_is_not_announced(asgi_server, sse, shop, make_key):
    location, (a, _b, _c) = shop
    stream = sse(stream_url(asgi_server, a), {"Authorization": f"Bearer {make_key('stock:read')}"})
    stream.opened()

    class Abort(Exception):
        pass

    # a refused change commits nothing, and a transaction that rolls back announces nothing
    with pytest.raises(InsufficientStock):
        services.stock_sell(sku=a, location=location.code, quantity=1000)
    with pytest.raises(Abort), transaction.atomic():
        stock_change_publish(StockChange(positions=list(StockPosition.objects.filter(sku__code=a)),
                                         availability_rose=True))
        raise Abort
    with pytest.raises(TimeoutError):
        stream.next(timeout=0.8)
    services.stock_receive(sku=a, location=location.code, quantity=2)
    assert stream.next(timeout=1.0).json()["on_hand"] == 52


def test_last_event_id_resumes_with_the_changes_missed(asgi_server, sse, shop, make_key):
    # given: a client that saw a change to A, then went away
    location, (a, b, c) = shop
    key = make_key("stock:read")
    auth = {"Authorization": f"Bearer {key}"}
    first = sse(stream_url(asgi_server, a, b, c), auth)
    first.opened()
    services.stock_receive(sku=a, location=location.code, quantity=1)
    seen = first.next(timeout=2)
    first.close()

    # when: B changes twice and C once while it is away, and it comes back with Last-Event-ID
    services.stock_sell(sku=b, location=location.code, quantity=1)
    services.stock_sell(sku=b, location=location.code, quantity=1)
    services.stock_receive(sku=c, location=location.code, quantity=4)
    again = sse(stream_url(asgi_server, a, b, c), {**auth, "Last-Event-ID": seen.id})
    again.opened()
    missed = [again.next(timeout=2), again.next(timeout=2)]

    # then: the latest state of B and C first (not A: unchanged since), then live changes
    assert {e.json()["sku"]: e.json()["available"] for e in missed} == {b: 48, c: 54}
    assert [e.json() for e in missed] == [stock_json(asgi_server, key, e.json()["sku"]) for e in missed]
    with pytest.raises(TimeoutError):
        again.next(timeout=0.5)
    services.stock_receive(sku=a, location=location.code, quantity=1)
    live = again.next(timeout=1)
    assert live.json() == stock_json(asgi_server, key, a)

    # resuming from an id sends only what changed after it
    third = sse(stream_url(asgi_server, a, b, c), {**auth, "Last-Event-ID": missed[-1].id})
    third.opened()
    assert third.next(timeout=2).json()["sku"] == a
    with pytest.raises(TimeoutError):
        third.next(timeout=0.5)
    fourth = sse(stream_url(asgi_server, a, b, c), {**auth, "Last-Event-ID": live.id})
    fourth.opened()
    with pytest.raises(TimeoutError):
        fourth.next(timeout=0.5)


def test_an_unknown_or_foreign_last_event_id_sends_the_current_state_of_every_sku(asgi_server, sse, shop, make_key):
    location, (a, b, _c) = shop
    auth = {"Authorization": f"Bearer {make_key('stock:read')}"}
    stream = sse(stream_url(asgi_server, a, b), {**auth, "Last-Event-ID": "not-a-cursor-of-ours"})
    stream.opened()
    assert sorted(stream.next(timeout=2).json()["sku"] for _ in range(2)) == [a, b]

    # ?initial=1 does the same for a first connection (the storefront uses it)
    fresh = sse(stream_url(asgi_server, a, initial="1"), auth)
    fresh.opened()
    assert fresh.next(timeout=2).json()["available"] == 50


def test_key_in_the_url_only_when_its_only_scope_is_stock_read(asgi_server, sse, shop, make_key):
    _location, (a, _b, _c) = shop
    read_only = make_key("stock:read")
    broader = make_key("stock:read", "stock:write")

    allowed = sse(stream_url(asgi_server, a, key=read_only))
    allowed.opened()

    refused = sse(stream_url(asgi_server, a, key=broader))
    assert refused.status == 403
    assert json.loads(refused.text())["error"] == "key_not_allowed_in_url"

    as_header = sse(stream_url(asgi_server, a), {"Authorization": f"Bearer {broader}"})
    as_header.opened()

    anonymous = sse(stream_url(asgi_server, a))
    assert anonymous.status == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert json.loads(anonymous.text())["error"] == "not_authenticated"

    wrong = sse(stream_url(asgi_server, a, key="sk_nope_nope"))
    assert wrong.status == 401

    no_scope = sse(stream_url(asgi_server, a), {"Authorization": f"Bearer {make_key('reservations:write')}"})
    assert no_scope.status == 403 and json.loads(no_scope.text())["error"] == "permission_denied"


def test_idle_streams_get_a_comment_line_regularly(asgi_server, sse, shop, make_key):
    # the server under test beats every second (LIVE_HEARTBEAT_SECONDS=1; default 10, contract <= 15)
    _location, (a, _b, _c) = shop
    stream = sse(stream_url(asgi_server, a), {"Authorization": f"Bearer {make_key('stock:read')}"})
    stream.opened()
    started = time.monotonic()
    beats = []
    while len(beats) < 2:
        frame = stream.next(timeout=3, skip_comments=False)
        assert not frame.data
        beats += [c for c in frame.comments if c.strip()]
    assert time.monotonic() - started < 4


def test_refusals(asgi_server, sse, shop, make_key):
    _location, (a, _b, _c) = shop
    auth = {"Authorization": f"Bearer {make_key('stock:read')}"}

    def refusal(url, headers=auth):
        client = sse(url, headers)
        return client.status, json.loads(client.text())

    assert refusal(stream_url(asgi_server)) == (400, {"error": "sku_required",
                                                      "detail": "Give at least one ?sku= parameter."})
    status, body = refusal(stream_url(asgi_server, *[f"X-{n}" for n in range(101)]))
    assert (status, body["error"]) == (400, "too_many_skus")
    status, body = refusal(stream_url(asgi_server, a, "NO-SUCH-SKU"))
    assert (status, body["error"], body["skus"]) == (404, "sku_not_found", ["NO-SUCH-SKU"])
    posted = requests.post(stream_url(asgi_server, a), headers=auth, timeout=10)
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET"
    # 100 distinct SKUs are fine (repeats count once)
    ok = sse(stream_url(asgi_server, *([a] * 150)), auth)
    ok.opened()


def test_the_publish_happens_after_commit_and_names_the_sku_ids(shop):
    location, (a, _b, _c) = shop
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_keys().channel)
    try:
        with transaction.atomic():
            stock_change_publish(StockChange(positions=list(StockPosition.objects.filter(sku__code=a)),
                                             availability_rose=True))
            assert pubsub.get_message(timeout=0.3) is None  # nothing before the commit
        message = pubsub.get_message(timeout=2)
        epoch, seq, ids = message["data"].decode().split(" ")
        from inventory.models import Sku

        assert ids == str(Sku.objects.get(code=a).pk)
        assert int(client.hget(live_keys().last, ids)) == int(seq)
    finally:
        pubsub.close()


def test_a_watched_bundle_follows_a_change_of_its_component(asgi_server, sse, shop, make_key):
    # given: a bundle of two SKUs (2 x A + 1 x B: 25 sets from 50 and 50), its stream open
    location, (a, b, _c) = shop
    services.sku_create(code="LIVE-SET", name="Set", components=[{"sku": a, "quantity": 2}, {"sku": b, "quantity": 1}])
    key = make_key("stock:read")
    stream = sse(stream_url(asgi_server, "LIVE-SET"), {"Authorization": f"Bearer {key}"})
    stream.opened()

    # when: a component is sold alone
    services.stock_sell(sku=a, location=location.code, quantity=10)

    # then: the bundle's derived stock arrives, as GET /api/v1/stock/LIVE-SET/ answers it
    event = stream.next(timeout=2.0)
    assert event.json() == stock_json(asgi_server, key, "LIVE-SET")
    assert event.json()["bundle"] is True and event.json()["available"] == 20
