"""Sales of one position combined into one statement (inventory.sale_group).

The combined statement against the real PostgreSQL: the prefix that fits is sold in arrival
order, each sale with its own ledger row (its own on_hand_after) and answer (the position as its
own sale left it); replays and taken keys take their own path. Combined statements racing each
other (two web processes) oversell with the position's lock and the UPDATE's re-check taken out.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from core.auth import api_key_create
from core.idempotency import PendingClaim
from core.models import ApiKey, IdempotencyRecord
from core.observability.metrics import SALE_GROUPS
from inventory import selectors
from inventory import services as stock
from inventory.models import StockMovement, StockPosition
from inventory.sale_group import Sale, _run
from inventory.services import MovementContext
from tests.conftest import run_concurrently
from tests.factories import LocationFactory, SkuFactory


def _sale(quantity: int, *, sku: str = "HOT", event_key: str | None = None, claim: PendingClaim | None = None) -> Sale:
    key = claim.request_key if claim else event_key
    return Sale(sku=sku, location="wh", quantity=quantity, context=MovementContext(source="api", event_key=key),
                replay_keys=[key, key + stock.TRANSFER_IN_SUFFIX] if key else [], claim=claim)


def _claim(key: str) -> PendingClaim:
    api_key = ApiKey.objects.first() or api_key_create(name="group", scopes=["stock:write"])[0]
    return PendingClaim(api_key=api_key, key=key, fingerprint=f"fp-{key}", now=timezone.now())


def _sold(sale: Sale) -> bool:
    assert not isinstance(sale.outcome, Exception), sale.outcome
    return sale.outcome is not None


@pytest.fixture
def hot(db):
    LocationFactory(code="wh")
    SkuFactory(code="HOT")
    stock.stock_receive(sku="HOT", location="wh", quantity=10)


@pytest.mark.django_db
def test_the_prefix_that_fits_is_sold_in_arrival_order(hot):
    batch = [_sale(q, claim=_claim(f"k{n}")) for n, q in enumerate([3, 4, 5, 2])]

    _run(batch)

    assert [_sold(s) for s in batch] == [True, True, False, False]  # 3 + 4 of 10; 3 + 4 + 5 does not fit
    answers = [(m.on_hand_after, p.on_hand, p.version) for m, p in (s.outcome for s in batch[:2])]
    assert answers == [(7, 7, 2), (3, 3, 3)]  # each as its own sale left the position
    position = StockPosition.objects.get(sku__code="HOT")
    assert (position.on_hand, position.version) == (3, 3)
    rows = StockMovement.objects.filter(type="sale").order_by("id")
    assert [(m.pk, m.on_hand_delta, m.on_hand_after) for m in rows] == [
        (batch[0].outcome[0].pk, -3, 7), (batch[1].outcome[0].pk, -4, 3)]
    assert all(s.claim.record_id is not None for s in batch)  # inserted, each its own sale's
    assert IdempotencyRecord.objects.filter(state="in_flight").count() == 4
    assert selectors.ledger_drift() == []


@pytest.mark.django_db
def test_replays_taken_keys_and_twins_take_their_own_path(hot):
    stock.stock_sell(sku="HOT", location="wh", quantity=1, context=MovementContext(event_key="done-1"))
    taken = _claim("taken")
    IdempotencyRecord.objects.create(api_key=taken.api_key, key="taken", fingerprint="fp-taken", state="in_flight")
    batch = [_sale(1, event_key="done-1"), _sale(1, claim=taken), _sale(1, event_key="twin"),
             _sale(1, event_key="twin"), _sale(2)]

    _run(batch)

    assert [_sold(s) for s in batch] == [False, False, True, False, True]
    assert taken.record_id is None  # its own path settles: 409 / replay / 422
    assert StockPosition.objects.get(sku__code="HOT").on_hand == 10 - 1 - 1 - 2
    assert StockMovement.objects.filter(event_key="twin").count() == 1
    assert selectors.ledger_drift() == []


@pytest.mark.django_db
def test_an_unknown_sku_or_position_sells_nothing(hot):
    batch = [_sale(1, sku="NOPE"), _sale(1, sku="NOPE")]
    _run(batch)
    assert [s.outcome for s in batch] == [None, None]


@pytest.mark.django_db(transaction=True)
def test_combined_statements_racing_each_other_never_oversell():
    LocationFactory(code="wh")
    SkuFactory(code="RACE")
    stock.stock_receive(sku="RACE", location="wh", quantity=50)

    failed_before = SALE_GROUPS.labels(result="failed")._value.get()
    # 12 combiners at once (as 12 web processes would), 8 sales of one unit each: 96 asked, 50 there.
    outcomes = run_concurrently(lambda: _run(batch := [_sale(1, sku="RACE") for _ in range(8)]) or batch,
                                [()] * 12)

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, errors
    # none failed as a whole (with the lock and the re-check out, the CHECK constraint refuses them)
    assert SALE_GROUPS.labels(result="failed")._value.get() == failed_before
    sold = sum(1 for batch in outcomes for s in batch if _sold(s))
    position = StockPosition.objects.get(sku__code="RACE")
    assert position.on_hand == 50 - sold >= 0
    assert StockMovement.objects.filter(type="sale").count() == sold
    assert selectors.ledger_drift() == []
