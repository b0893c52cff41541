"""Reservation services against real PostgreSQL: stock numbers, ledger rows, states."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from channels.models import Channel
from core.errors import Conflict, InsufficientStock, NotFound, ValidationFailed
from inventory import selectors as stock_selectors
from inventory import services as stock
from inventory.models import MovementType, StockMovement, StockPosition
from reservations import services
from reservations.models import Reservation, WaitlistEntry
from reservations.services import ReservationExpired
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db


def level(sku_code: str, location_code: str) -> tuple[int, int]:
    p = StockPosition.objects.get(sku__code=sku_code, location__code=location_code)
    return p.on_hand, p.reserved


def lines_of(reservation) -> list[tuple[str, str | None, int]]:
    return [(ln.sku.code, ln.location.code if ln.location_id else None, ln.quantity)
            for ln in reservation.lines.select_related("sku", "location").order_by("id")]


@pytest.fixture
def stocked(db):
    """SKU A: 10 at wh (priority 10) and 5 at store (priority 20); SKU B: 3 at wh."""
    wh = LocationFactory(code="wh", priority=10)
    store = LocationFactory(code="store", priority=20)
    SkuFactory(code="A")
    SkuFactory(code="B")
    stock.stock_receive(sku="A", location=wh.code, quantity=10)
    stock.stock_receive(sku="A", location=store.code, quantity=5)
    stock.stock_receive(sku="B", location=wh.code, quantity=3)
    return wh, store


# ------------------------------------------------------------------------------ create


def test_create_reserves_in_priority_order_splitting_across_locations(stocked):
    reservation = services.reservation_create(lines=[{"sku": "A", "quantity": 12}], ttl_seconds=60)

    assert reservation.status == "active"
    assert lines_of(reservation) == [("A", "wh", 10), ("A", "store", 2)]
    assert level("A", "wh") == (10, 10)
    assert level("A", "store") == (5, 2)
    assert timezone.now() + timedelta(seconds=55) < reservation.expires_at <= timezone.now() + timedelta(seconds=60)
    rows = StockMovement.objects.filter(reservation=reservation).order_by("id")
    assert [(r.type, r.location.code, r.on_hand_delta, r.reserved_delta) for r in rows] == [
        ("reserve", "wh", 0, 10), ("reserve", "store", 0, 2)]
    assert stock_selectors.ledger_drift() == []


def test_lines_naming_the_same_sku_are_merged_before_checking(stocked):
    with pytest.raises(InsufficientStock) as refused:
        services.reservation_create(lines=[{"sku": "B", "quantity": 2}, {"sku": "B", "quantity": 2}])
    assert refused.value.extra["lines"] == [{"sku": "B", "requested": 4, "available": 3}]

    reservation = services.reservation_create(lines=[{"sku": "B", "quantity": 1}, {"sku": "B", "quantity": 2}])
    assert lines_of(reservation) == [("B", "wh", 3)]
    assert StockMovement.objects.filter(reservation=reservation).count() == 1


def test_all_or_nothing_refusal_changes_nothing_and_reports_every_line(stocked):
    before = list(StockPosition.objects.order_by("pk").values_list("on_hand", "reserved", "version"))
    movements = StockMovement.objects.count()

    with pytest.raises(InsufficientStock) as refused:
        services.reservation_create(lines=[{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 4}])

    body = refused.value.body()
    assert body["error"] == "insufficient_stock" and "B" in body["detail"]
    assert body["lines"] == [{"sku": "A", "requested": 2, "available": 15},
                             {"sku": "B", "requested": 4, "available": 3}]
    assert list(StockPosition.objects.order_by("pk").values_list("on_hand", "reserved", "version")) == before
    assert StockMovement.objects.count() == movements
    assert Reservation.objects.count() == 0


def test_explicit_location_draws_only_there(stocked):
    with pytest.raises(InsufficientStock):
        services.reservation_create(lines=[{"sku": "A", "quantity": 6, "location": "store"}])
    reservation = services.reservation_create(lines=[{"sku": "A", "quantity": 5, "location": "store"},
                                                     {"sku": "A", "quantity": 1}])
    assert sorted(lines_of(reservation)) == [("A", "store", 5), ("A", "wh", 1)]


def test_channel_locations_limit_where_stock_is_drawn(stocked):
    wh, store = stocked
    channel = Channel.objects.create(slug="shop", name="Shop", kind="webhook")
    channel.locations.set([store])

    with pytest.raises(InsufficientStock) as refused:
        services.reservation_create(lines=[{"sku": "A", "quantity": 6}], channel="shop")
    assert refused.value.extra["lines"] == [{"sku": "A", "requested": 6, "available": 5}]
    with pytest.raises(ValidationFailed) as not_eligible:
        services.reservation_create(lines=[{"sku": "A", "quantity": 1, "location": "wh"}], channel="shop")
    assert not_eligible.value.code == "location_not_eligible"

    reservation = services.reservation_create(lines=[{"sku": "A", "quantity": 5}], channel=channel)
    assert lines_of(reservation) == [("A", "store", 5)]
    assert reservation.channel == channel


def test_inactive_locations_are_not_drawn_from(stocked):
    wh, _store = stocked
    stock.location_update(location=wh, active=False)
    reservation = services.reservation_create(lines=[{"sku": "A", "quantity": 5}])
    assert lines_of(reservation) == [("A", "store", 5)]
    with pytest.raises(InsufficientStock):
        services.reservation_create(lines=[{"sku": "A", "quantity": 1}])


@pytest.mark.parametrize(("kwargs", "error", "code"), [
    ({"lines": []}, ValidationFailed, "lines_required"),
    ({"lines": [{"sku": "A", "quantity": 0}]}, ValidationFailed, "invalid_quantity"),
    ({"lines": [{"sku": "A", "quantity": True}]}, ValidationFailed, "invalid_quantity"),
    ({"lines": [{"sku": "NOPE", "quantity": 1}]}, NotFound, "sku_not_found"),
    ({"lines": [{"sku": "A", "quantity": 1, "location": "nowhere"}]}, NotFound, "location_not_found"),
    ({"lines": [{"sku": "A", "quantity": 1}], "channel": "ghost"}, NotFound, "channel_not_found"),
    ({"lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 0}, ValidationFailed, "invalid_ttl"),
    ({"lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 10**9}, ValidationFailed, "invalid_ttl"),
])
def test_bad_input_is_refused_before_any_change(stocked, kwargs, error, code):
    with pytest.raises(error) as refused:
        services.reservation_create(**kwargs)
    assert refused.value.code == code
    assert Reservation.objects.count() == 0
    assert level("A", "wh") == (10, 0)


def test_one_live_reservation_per_order_ref(stocked):
    services.reservation_create(lines=[{"sku": "A", "quantity": 1}], order_ref="o-1")
    with pytest.raises(Conflict) as duplicate:
        services.reservation_create(lines=[{"sku": "A", "quantity": 1}], order_ref="o-1")
    assert duplicate.value.code == "duplicate_order_ref"
    assert level("A", "wh") == (10, 1)


# ------------------------------------------------------------------------------ commit / release / extend


def test_commit_takes_stock_out_of_on_hand_and_reserved_and_is_idempotent(stocked):
    reservation = services.reservation_create(lines=[{"sku": "A", "quantity": 12}])

    committed = services.reservation_commit(reservation_id=reservation.pk)
    again = services.reservation_commit(reservation_id=str(reservation.pk))

    assert committed.status == again.status == "committed"
    assert level("A", "wh") == (0, 0)
    assert level("A", "store") == (3, 0)
    commits = StockMovement.objects.filter(reservation=reservation, type=MovementType.RESERVATION_COMMIT)
    assert sorted((m.on_hand_delta, m.reserved_delta) for m in commits) == [(-10, -10), (-2, -2)]
    assert stock_selectors.ledger_drift() == []
    with pytest.raises(Conflict) as refused:
        services.reservation_release(reservation_id=reservation.pk)
    assert refused.value.code == "reservation_committed"


def test_release_frees_stock_and_is_idempotent(stocked):
    reservation = services.reservation_create(lines=[{"sku": "B", "quantity": 3}])
    assert level("B", "wh") == (3, 3)

    services.reservation_release(reservation_id=reservation.pk)
    services.reservation_release(reservation_id=reservation.pk)

    reservation.refresh_from_db()
    assert reservation.status == "released"
    assert level("B", "wh") == (3, 0)
    assert StockMovement.objects.filter(reservation=reservation).count() == 2  # reserve + one release
    with pytest.raises(Conflict) as refused:
        services.reservation_commit(reservation_id=reservation.pk)
    assert refused.value.code == "reservation_released"


def test_extend_sets_a_new_deadline(stocked):
    reservation = services.reservation_create(lines=[{"sku": "B", "quantity": 1}], ttl_seconds=30)
    extended = services.reservation_extend(reservation_id=reservation.pk, ttl_seconds=3600)
    assert extended.expires_at > timezone.now() + timedelta(seconds=3500)
    services.reservation_commit(reservation_id=reservation.pk)
    with pytest.raises(Conflict) as refused:
        services.reservation_extend(reservation_id=reservation.pk, ttl_seconds=60)
    assert refused.value.code == "reservation_not_active"


def test_unknown_reservation_is_404(stocked):
    for call in (services.reservation_commit, services.reservation_release):
        with pytest.raises(NotFound):
            call(reservation_id="not-a-uuid")
        with pytest.raises(NotFound):
            call(reservation_id="00000000-0000-0000-0000-000000000000")


# ------------------------------------------------------------------------------ expiry


def test_expiry_releases_due_reservations_once(stocked):
    due = services.reservation_create(lines=[{"sku": "A", "quantity": 4}], ttl_seconds=60)
    fresh = services.reservation_create(lines=[{"sku": "A", "quantity": 1}], ttl_seconds=600)

    later = timezone.now() + timedelta(seconds=120)
    assert services.reservations_expire(now=later) == 1
    assert services.reservations_expire(now=later) == 0

    due.refresh_from_db()
    fresh.refresh_from_db()
    assert (due.status, fresh.status) == ("expired", "active")
    assert level("A", "wh") == (10, 1)
    release = StockMovement.objects.get(reservation=due, type=MovementType.RESERVATION_RELEASE)
    assert (release.reserved_delta, release.source, release.metadata["reason"]) == (-4, "expiry", "expired")


def test_commit_or_extend_of_an_expired_reservation_is_410_and_releases_it(stocked):
    reservation = services.reservation_create(lines=[{"sku": "A", "quantity": 4}], ttl_seconds=60)
    Reservation.objects.filter(pk=reservation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    with pytest.raises(ReservationExpired) as gone:
        services.reservation_commit(reservation_id=reservation.pk)
    assert (gone.value.status, gone.value.code) == (410, "reservation_expired")
    reservation.refresh_from_db()
    assert reservation.status == "expired"
    assert level("A", "wh") == (10, 0)
    with pytest.raises(ReservationExpired):
        services.reservation_extend(reservation_id=reservation.pk, ttl_seconds=60)
    # Release of an expired reservation is a no-op: the stock is already free.
    assert services.reservation_release(reservation_id=reservation.pk).status == "expired"
    assert level("A", "wh") == (10, 0)


def test_commit_or_extend_of_a_reservation_that_expired_waiting_is_410(stocked, settings):
    # Found by mypy: it expired without ever having a deadline, and building the 410 read
    # expires_at.isoformat() of None (a 500).
    settings.RESERVATION_WAITLIST_MAX_SECONDS = 3600
    waiting = services.reservation_create(lines=[{"sku": "B", "quantity": 9}], waitlist=True)
    assert services.reservations_expire(now=timezone.now() + timedelta(hours=2)) == 1

    with pytest.raises(ReservationExpired) as gone:
        services.reservation_commit(reservation_id=waiting.pk)
    assert (gone.value.status, gone.value.code) == (410, "reservation_expired")
    with pytest.raises(ReservationExpired):
        services.reservation_extend(reservation_id=waiting.pk, ttl_seconds=60)
    assert level("B", "wh") == (3, 0)


def test_expiry_task_runs_the_sweep(stocked):
    from reservations.tasks import reservations_expire_task

    reservation = services.reservation_create(lines=[{"sku": "B", "quantity": 2}], ttl_seconds=60)
    Reservation.objects.filter(pk=reservation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert reservations_expire_task() == 1
    assert level("B", "wh") == (3, 0)


# ------------------------------------------------------------------------------ waitlist


def test_waitlist_stores_unfillable_request_as_waiting_without_touching_stock(stocked):
    reservation = services.reservation_create(lines=[{"sku": "B", "quantity": 5}], waitlist=True)
    assert reservation.status == "waiting" and reservation.expires_at is None
    assert level("B", "wh") == (3, 0)
    assert lines_of(reservation) == [("B", None, 5)]
    assert list(WaitlistEntry.objects.values_list("reservation_id", flat=True)) == [reservation.pk]
    with pytest.raises(Conflict) as refused:
        services.reservation_commit(reservation_id=reservation.pk)
    assert refused.value.code == "reservation_not_active"


def test_waitlist_activates_in_order_on_receipt_never_beyond_available(stocked):
    SkuFactory(code="C")  # sold out: nothing anywhere
    first = services.reservation_create(lines=[{"sku": "C", "quantity": 4}], waitlist=True, ttl_seconds=120)
    second = services.reservation_create(lines=[{"sku": "C", "quantity": 1}], waitlist=True)
    third = services.reservation_create(lines=[{"sku": "C", "quantity": 2}], waitlist=True)
    assert {first.status, second.status, third.status} == {"waiting"}

    # 3 available: not enough for the head (4), and the smaller ones behind it must not jump ahead.
    stock.stock_receive(sku="C", location="wh", quantity=3)
    for r in (first, second, third):
        r.refresh_from_db()
    assert (first.status, second.status, third.status) == ("waiting", "waiting", "waiting")
    assert level("C", "wh") == (3, 0)

    stock.stock_receive(sku="C", location="store", quantity=1)  # 4 available: the head fits exactly
    for r in (first, second, third):
        r.refresh_from_db()
    assert (first.status, second.status, third.status) == ("active", "waiting", "waiting")
    assert timezone.now() + timedelta(seconds=100) < first.expires_at
    assert lines_of(first) == [("C", "wh", 3), ("C", "store", 1)]
    assert level("C", "wh") == (3, 3) and level("C", "store") == (1, 1)

    result = stock.stock_receive(sku="C", location="wh", quantity=2)  # second (1) fits, then third (2) not
    second.refresh_from_db()
    third.refresh_from_db()
    assert (second.status, third.status) == ("active", "waiting")
    assert level("C", "wh") == (5, 4)
    # The receipt's answer shows the position as it left the transaction, activation included.
    assert (result.positions[0].on_hand, result.positions[0].reserved) == (5, 4)
    assert stock_selectors.ledger_drift() == []
    assert list(WaitlistEntry.objects.values_list("reservation_id", flat=True)) == [third.pk]
    rows = StockMovement.objects.filter(reservation=second)
    assert [(r.type, r.source, r.reserved_delta) for r in rows] == [("reserve", "waitlist", 1)]


def test_new_requests_are_served_from_available_stock_even_while_others_wait(stocked):
    big = services.reservation_create(lines=[{"sku": "B", "quantity": 10}], waitlist=True)
    small = services.reservation_create(lines=[{"sku": "B", "quantity": 1}], waitlist=True)
    assert (big.status, small.status) == ("waiting", "active")


def test_release_and_expiry_activate_the_waitlist(stocked):
    holder = services.reservation_create(lines=[{"sku": "B", "quantity": 3}], ttl_seconds=60)
    waiting = services.reservation_create(lines=[{"sku": "B", "quantity": 2}], waitlist=True)
    services.reservation_release(reservation_id=holder.pk)
    waiting.refresh_from_db()
    assert waiting.status == "active"
    assert level("B", "wh") == (3, 2)

    other = services.reservation_create(lines=[{"sku": "B", "quantity": 2}], waitlist=True)
    services.reservations_expire(now=timezone.now() + timedelta(hours=1))
    other.refresh_from_db()
    waiting.refresh_from_db()
    assert (waiting.status, other.status) == ("expired", "active")
    assert level("B", "wh") == (3, 2)
    assert stock_selectors.ledger_drift() == []


def test_waiting_reservation_can_be_released_and_leaves_the_queue(stocked):
    waiting = services.reservation_create(lines=[{"sku": "B", "quantity": 9}], waitlist=True)
    released = services.reservation_release(reservation_id=waiting.pk)
    assert released.status == "released"
    assert not WaitlistEntry.objects.exists()
    stock.stock_receive(sku="B", location="wh", quantity=10)
    assert level("B", "wh") == (13, 0)


def test_multi_sku_waiting_reservation_activates_only_when_every_line_fits(stocked):
    waiting = services.reservation_create(
        lines=[{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 5}], waitlist=True)
    stock.stock_receive(sku="A", location="wh", quantity=100)
    waiting.refresh_from_db()
    assert waiting.status == "waiting"
    stock.stock_receive(sku="B", location="wh", quantity=2)
    waiting.refresh_from_db()
    assert waiting.status == "active"
    assert sorted(lines_of(waiting)) == [("A", "wh", 1), ("B", "wh", 5)]


def test_waitlist_sweep_catches_up(stocked):
    waiting = services.reservation_create(lines=[{"sku": "B", "quantity": 5}], waitlist=True)
    # Stock rises by a path that does not call positions_changed (simulating a missed activation).
    StockPosition.objects.filter(sku__code="B", location__code="wh").update(on_hand=5)
    StockMovement.objects.create(
        position=StockPosition.objects.get(sku__code="B", location__code="wh"), sku_id=waiting.lines.get().sku_id,
        location_id=StockPosition.objects.get(sku__code="B", location__code="wh").location_id, type="receipt",
        on_hand_delta=2, on_hand_after=5, reserved_after=0, occurred_at=timezone.now())
    StockPosition.objects.filter(sku__code="B", location__code="wh").update(version=2)
    assert services.reservations_waitlist_sweep() == 1
    waiting.refresh_from_db()
    assert waiting.status == "active"
    assert stock_selectors.ledger_drift() == []


# ------------------------------------------------------------------------------ marketplace orders


def test_commit_for_order_commits_the_matching_reservation_once(stocked):
    channel = Channel.objects.create(slug="ebay", name="eBay", kind="ebay")
    other = Channel.objects.create(slug="amz", name="Amazon", kind="amazon")
    reservation = services.reservation_create(lines=[{"sku": "A", "quantity": 2}], order_ref="ORD-9", channel=channel)

    with transaction.atomic():  # the ingestion caller's own transaction
        assert services.reservation_commit_for_order(order_ref="ORD-9", channel=other) is None
        found = services.reservation_commit_for_order(order_ref="ORD-9", channel=channel,
                                                      context=stock.MovementContext(source="order:ebay"))
    assert found.pk == reservation.pk and found.status == "committed"
    assert level("A", "wh") == (8, 0)
    assert StockMovement.objects.get(reservation=reservation, type="reservation_commit").source == "order:ebay"

    again = services.reservation_commit_for_order(order_ref="ORD-9", channel="ebay")
    assert again.pk == reservation.pk and again.status == "committed"
    assert level("A", "wh") == (8, 0)
    assert services.reservation_commit_for_order(order_ref="unknown", channel=channel) is None


def test_commit_for_order_matches_channelless_reservations_and_ignores_expired(stocked):
    channel = Channel.objects.create(slug="shop", name="Shop", kind="shopify")
    anywhere = services.reservation_create(lines=[{"sku": "B", "quantity": 1}], order_ref="W-1")
    assert services.reservation_commit_for_order(order_ref="W-1", channel=channel).pk == anywhere.pk

    gone = services.reservation_create(lines=[{"sku": "B", "quantity": 1}], order_ref="W-2", ttl_seconds=1)
    services.reservations_expire(now=timezone.now() + timedelta(seconds=5))
    assert services.reservation_commit_for_order(order_ref="W-2") is None
    gone.refresh_from_db()
    assert gone.status == "expired"


def test_hot_path_query_count_is_pinned(stocked, django_assert_max_num_queries):
    # skus + locations + savepoint/release + reservation row + one lock query + 2 per hold (update,
    # ledger row) x 3 holds + lines in one insert + the propagation hook: 8 + 2 x holds, never a
    # query per line or per location looked at.
    with django_assert_max_num_queries(14):
        services.reservation_create(lines=[{"sku": "A", "quantity": 12}, {"sku": "B", "quantity": 1}])
