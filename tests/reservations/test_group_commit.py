"""One-SKU checkouts combined into one statement (reservations.group_commit).

The combined statement against the real PostgreSQL: the prefix that fits is held in arrival
order, each request with its own ledger row, reservation, line and claim; the position's version
counts its ledger rows. Combined statements racing each other (two web processes) are exact
because the position is locked before the running sum is taken and the UPDATE re-checks it:
the race below oversells with both taken out.
"""

from __future__ import annotations

import pytest
from django.db.models import Sum

from core.auth import api_key_create
from core.idempotency import PendingClaim
from core.models import IdempotencyRecord
from core.observability.metrics import RESERVATION_GROUPS
from inventory import selectors as stock_selectors
from inventory import services as stock
from inventory.models import StockMovement, StockPosition
from inventory.services import MovementContext
from reservations.group_commit import Request, _run
from reservations.models import Reservation
from tests.conftest import run_concurrently
from tests.factories import LocationFactory, SkuFactory


def _request(code: str, quantity: int, *, claim: PendingClaim | None = None, order_ref: str = "") -> Request:
    return Request(code=code, quantity=quantity, channel=None, order_ref=order_ref, ttl=600, created_by=None,
                   context=MovementContext(source="api"), request_key=claim.request_key if claim else None,
                   claim=claim)


def _claim(key: str) -> PendingClaim:
    from django.utils import timezone

    from core.models import ApiKey

    api_key = ApiKey.objects.first() or api_key_create(name="group", scopes=["reservations:write"])[0]
    return PendingClaim(api_key=api_key, key=key, fingerprint=f"fp-{key}", now=timezone.now())


def _held(request: Request) -> bool:
    assert not isinstance(request.outcome, Exception), request.outcome
    return request.outcome is not None


@pytest.fixture
def hot(db):
    LocationFactory(code="wh", priority=10)
    LocationFactory(code="store", priority=20)
    SkuFactory(code="HOT")
    stock.stock_receive(sku="HOT", location="wh", quantity=10)
    stock.stock_receive(sku="HOT", location="store", quantity=10)
    return "HOT"


@pytest.mark.django_db
def test_the_prefix_that_fits_is_held_in_arrival_order(hot):
    batch = [_request(hot, q, claim=_claim(f"k{n}")) for n, q in enumerate([3, 4, 5, 2])]

    _run(batch)

    assert [_held(r) for r in batch] == [True, True, False, False]
    held = [r.outcome for r in batch]  # 3 + 4 fit in wh's 10; 3 + 4 + 5 does not
    assert [(line.location.code, line.quantity) for _, lines in held[:2] for line in lines] == [("wh", 3), ("wh", 4)]
    wh = StockPosition.objects.get(sku__code=hot, location__code="wh")
    assert (wh.reserved, wh.version) == (7, 3)  # one receipt + two holds: the version counts ledger rows
    rows = StockMovement.objects.filter(position=wh, type="reserve").order_by("id")
    assert [(m.reserved_delta, m.reserved_after) for m in rows] == [(3, 3), (4, 7)]
    assert [m.reservation_id for m in rows] == [held[0][0].pk, held[1][0].pk]
    assert Reservation.objects.filter(status="active").count() == 2
    # every claim was inserted and is its own request's, held or not (the others take their own path with it)
    assert all(r.claim.record_id is not None for r in batch)
    assert IdempotencyRecord.objects.filter(state="in_flight").count() == 4
    assert stock_selectors.ledger_drift() == []


@pytest.mark.django_db
def test_checkouts_of_different_skus_share_one_statement_each_sku_its_own_prefix(hot):
    SkuFactory(code="COLD")
    stock.stock_receive(sku="COLD", location="store", quantity=4)  # only at the second location
    asked = [(hot, 3), ("COLD", 2), (hot, 8), ("COLD", 1), (hot, 1), ("NOPE", 1), ("COLD", 2)]
    batch = [_request(code, q, claim=_claim(f"m{n}")) for n, (code, q) in enumerate(asked)]
    groups = RESERVATION_GROUPS.labels(result="committed")._value.get()

    _run(batch)

    assert RESERVATION_GROUPS.labels(result="committed")._value.get() == groups + 1  # one statement for all
    # Per SKU, the prefix that fits: HOT 3 fits wh's 10, 3 + 8 does not, nor does anything after it
    # for HOT; COLD 2 + 1 fit the store's 4, 2 + 1 + 2 does not. One after another, the same holds.
    assert [_held(r) for r in batch] == [True, True, False, True, False, False, False]
    lines = [(line.sku.code, line.location.code, line.quantity) for r in batch if _held(r) for line in r.outcome[1]]
    assert lines == [(hot, "wh", 3), ("COLD", "store", 2), ("COLD", "store", 1)]
    cold = StockPosition.objects.get(sku__code="COLD", location__code="store")
    wh = StockPosition.objects.get(sku__code=hot, location__code="wh")
    assert (wh.reserved, wh.version, cold.reserved, cold.version) == (3, 2, 3, 3)
    rows = StockMovement.objects.filter(type="reserve").order_by("id")
    assert [(m.sku.code, m.reserved_delta, m.reserved_after) for m in rows] == [
        (hot, 3, 3), ("COLD", 2, 2), ("COLD", 1, 3)]  # arrival order, each with the position after it
    assert all(r.claim.record_id is not None for r in batch)
    assert stock_selectors.ledger_drift() == []


@pytest.mark.django_db
def test_a_taken_key_holds_nothing_and_twins_are_not_combined(hot):
    taken = _claim("taken")
    IdempotencyRecord.objects.create(api_key=taken.api_key, key="taken", fingerprint="fp-taken", state="in_flight")
    twin_a, twin_b = _claim("twin"), _claim("twin")
    batch = [_request(hot, 1, claim=taken), _request(hot, 1, claim=twin_a), _request(hot, 1, claim=twin_b),
             _request(hot, 1)]

    _run(batch)

    assert not _held(batch[0]) and taken.record_id is None  # its own path settles: 409 / replay / 422
    assert _held(batch[1]) and twin_a.record_id is not None
    assert not _held(batch[2]) and twin_b.record_id is None  # ran alone after: the key was its twin's
    assert _held(batch[3])  # no key at all
    assert StockPosition.objects.get(sku__code=hot, location__code="wh").reserved == 2
    assert stock_selectors.ledger_drift() == []


@pytest.mark.django_db
def test_an_unknown_sku_or_no_units_holds_nothing(hot):
    unknown = [_request("NOPE", 1), _request("NOPE", 2)]
    _run(unknown)
    assert [r.outcome for r in unknown] == [None, None]
    stock.stock_adjust(sku=hot, location="wh", type="count", quantity=0)
    stock.stock_adjust(sku=hot, location="store", type="count", quantity=0)
    empty = [_request(hot, 1), _request(hot, 1)]
    _run(empty)
    assert [r.outcome for r in empty] == [None, None]
    assert Reservation.objects.count() == 0


@pytest.mark.django_db
def test_a_live_order_ref_taken_runs_each_alone(hot):
    first = [_request(hot, 1, order_ref="A-1"), _request(hot, 1, order_ref="A-2")]
    _run(first)
    again = [_request(hot, 1, order_ref="A-1"), _request(hot, 1, order_ref="A-3")]

    _run(again)  # the combined INSERT fails on A-1's live reservation: nothing of it stays

    assert isinstance(again[0].outcome, Exception)  # alone, it raises as the one statement does (409 upstream)
    assert _held(again[1])
    assert Reservation.objects.filter(status="active").count() == 3
    assert stock_selectors.ledger_drift() == []


@pytest.mark.django_db(transaction=True)
def test_combined_statements_racing_each_other_never_oversell():
    LocationFactory(code="wh")
    codes = ["RACE-A", "RACE-B", "RACE-C"]
    for code in codes:
        SkuFactory(code=code)
        stock.stock_receive(sku=code, location="wh", quantity=17)

    failed_before = RESERVATION_GROUPS.labels(result="failed")._value.get()
    # 12 combiners at once (as 12 web processes would), 8 checkouts each over three SKUs: 96 units
    # asked, 51 there; each batch locks its SKUs' positions in primary-key order, so none deadlock.
    outcomes = run_concurrently(
        lambda: _run(batch := [_request(codes[n % 3], 1) for n in range(8)]) or batch, [()] * 12)

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, errors
    # none failed as a whole (with the lock and the re-check out, the CHECK constraint refuses them)
    assert RESERVATION_GROUPS.labels(result="failed")._value.get() == failed_before
    held = [line.sku.code for batch in outcomes for r in batch
            if r.outcome is not None and not isinstance(r.outcome, Exception) for line in r.outcome[1]]
    for code in codes:
        position = StockPosition.objects.get(sku__code=code)
        assert position.reserved == held.count(code) <= 17
        assert held.count(code) == StockMovement.objects.filter(sku__code=code, type="reserve").aggregate(
            n=Sum("reserved_delta"))["n"]
    assert stock_selectors.ledger_drift() == []
