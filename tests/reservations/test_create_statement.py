"""The one-statement reservation (reservations.create_statement): all lines or none, and the
general path whenever it cannot hold every line whole at one eligible location."""

from __future__ import annotations

import pytest
from django.db import connection
from psycopg.pq import TransactionStatus

from channels.models import DirtyPair
from inventory import selectors as stock_selectors
from inventory import services as stock
from inventory.models import StockMovement, StockPosition
from inventory.services import MovementContext
from reservations import services
from reservations.create_statement import reservation_create_in_one_statement
from reservations.models import Reservation, ReservationLine
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def wh():
    return LocationFactory(code="wh", priority=10)


@pytest.fixture
def store():
    return LocationFactory(code="store", priority=20)


def _create(lines):
    return reservation_create_in_one_statement(
        lines=lines, channel=None, order_ref="", ttl=600, created_by=None, context=MovementContext(source="test"),
        request_key=None)


def _state():
    return (list(StockPosition.objects.order_by("pk").values_list("on_hand", "reserved", "version")),
            StockMovement.objects.count(), Reservation.objects.count(), ReservationLine.objects.count(),
            DirtyPair.objects.count())


def test_a_line_that_cannot_be_held_undoes_the_lines_that_could(wh):
    # given: A has 10 units at wh; B has none anywhere, C is not a SKU at all
    SkuFactory(code="A")
    SkuFactory(code="B")
    stock.stock_receive(sku="A", location="wh", quantity=10)
    stock.stock_receive(sku="B", location="wh", quantity=3)
    stock.stock_sell(sku="B", location="wh", quantity=3)
    before = _state()

    # when / then: nothing at all is written (A's hold undone too); the general path decides
    assert _create([("A", 2), ("B", 1)]) is None
    assert _state() == before
    assert _create([("A", 2), ("C", 1)]) is None
    assert _state() == before
    assert _create([("A", 2)]) is not None  # alone, A is held


@pytest.mark.parametrize(("at_wh", "at_store", "quantity", "split"), [
    (5, 5, 8, [("store", 3), ("wh", 5)]),  # no single location holds the line
    # Found by the model-based stock machine: allocation fills a line in priority order, so
    # 2 at wh and 10 at store make a line of 5 wh 2 + store 3, never store 5.
    (2, 10, 5, [("store", 3), ("wh", 2)]),
], ids=["no-single-location", "first-location-in-part"])
def test_a_line_the_statement_cannot_hold_whole_is_split_by_the_general_path_in_priority_order(
        wh, store, at_wh, at_store, quantity, split):
    SkuFactory(code="SPLIT")
    stock.stock_receive(sku="SPLIT", location="wh", quantity=at_wh)
    stock.stock_receive(sku="SPLIT", location="store", quantity=at_store)
    before = _state()
    assert _create([("SPLIT", quantity)]) is None
    assert _state() == before
    # the service then splits it, as it always did
    reservation = services.reservation_create(lines=[{"sku": "SPLIT", "quantity": quantity}])
    assert sorted((line.location.code, line.quantity) for line in reservation.lines.all()) == split


def test_each_line_is_held_at_the_first_eligible_location_with_units(wh, store):
    a, b = SkuFactory(code="A"), SkuFactory(code="B")
    stock.stock_receive(sku="A", location="wh", quantity=1)
    stock.stock_sell(sku="A", location="wh", quantity=1)  # wh (first by priority) has none of A left
    stock.stock_receive(sku="A", location="store", quantity=9)
    stock.stock_receive(sku="B", location="wh", quantity=4)

    reservation = services.reservation_create(lines=[{"sku": "B", "quantity": 2}, {"sku": "A", "quantity": 3}],
                                              order_ref="o-1")

    assert reservation.status == "active"
    lines = [(line.sku.code, line.location.code, line.quantity) for line in reservation.lines.all()]
    assert lines == [("B", "wh", 2), ("A", "store", 3)]  # in the client's order
    stored = list(ReservationLine.objects.filter(reservation=reservation).order_by("pk")
                  .values_list("sku__code", "location__code", "quantity"))
    assert stored == lines
    moves = StockMovement.objects.filter(reservation=reservation)
    assert sorted(moves.values_list("sku__code", "reserved_delta", "reference")) == [("A", 3, "o-1"), ("B", 2, "o-1")]
    assert StockPosition.objects.get(sku=a, location=store).reserved == 3
    assert StockPosition.objects.get(sku=b, location=wh).reserved == 2
    assert stock_selectors.ledger_drift() == []
    # and it commits like any reservation
    services.reservation_commit(reservation_id=reservation.pk)
    assert StockPosition.objects.get(sku=a, location=store).on_hand == 6
    assert stock_selectors.ledger_drift() == []


def _plans():
    """(generic, custom) plan counts of this connection's prepared reservation statement."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %s",
                       ["%stockline_all_or_nothing%"])
        return cursor.fetchone() or (0, 0)


def _plan_cache_mode():
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("generic", [True, False])
def test_outside_a_transaction_the_statement_reuses_one_generic_plan(wh, settings, generic):
    # given: statements are prepared after 5 runs (DB_PREPARE_THRESHOLD); autocommit, as in a view
    settings.ONE_STATEMENT_GENERIC_PLAN = generic
    SkuFactory(code="A")
    stock.stock_receive(sku="A", location="wh", quantity=100)
    assert not connection.in_atomic_block

    # when: twelve reservations, then one refused (too few units), then one more
    for _ in range(12):
        assert _create([("A", 1)]) is not None
    generic_plans, custom_plans = _plans()
    assert _create([("A", 1000)]) is None

    # then: PostgreSQL planned it once and reused the plan (its own choice re-plans every call);
    # the setting ended with each statement's transaction, and a refusal left the connection idle
    if generic:
        assert generic_plans >= 6 and custom_plans == 0
    else:  # PostgreSQL's own choice plans the first five runs anew, always
        assert custom_plans >= 5
    assert _plan_cache_mode() == "auto"
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert _create([("A", 1)]) is not None
    if generic:  # the refusal's rollback kept the prepared statement and its plan (no DEALLOCATE ALL)
        assert _plans()[0] > generic_plans
    assert StockPosition.objects.get().reserved == 13
    assert ReservationLine.objects.count() == 13


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("refused_at", range(1, 8))
def test_a_refusal_at_any_point_of_the_prepare_count_leaves_the_connection_usable(wh, refused_at):
    # psycopg prepares a statement on its 5th run: a refusal whose pipeline aborted the commands
    # after the statement (COMMIT) must not leave psycopg believing one of them is prepared
    SkuFactory(code="A")
    stock.stock_receive(sku="A", location="wh", quantity=100)
    for run in range(1, 12):
        assert (_create([("A", 1000)]) is None) if run == refused_at else (_create([("A", 1)]) is not None)
    assert StockPosition.objects.get().reserved == 10
