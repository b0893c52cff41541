"""Regressions from the exactness review (issue 8), reservations side. Each failed before its fix.

5. Waitlist activation could decide on stale position numbers (a location update handed it
   positions read without a lock), and a reserve increment was not conditional, so a stale
   decision was written.
10. Waiting reservations never expired.
"""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from core.errors import InsufficientStock
from inventory import services as stock
from inventory.models import StockPosition
from inventory.selectors import ledger_drift
from reservations import services
from reservations.models import Reservation, WaitlistEntry
from reservations.waitlist import reservations_waitlist_activate_for
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wh(db):
    return LocationFactory(code="wh")


@pytest.fixture
def tee(db):
    return SkuFactory(code="TEE")


def test_a_reserve_increment_beyond_available_is_refused_even_on_stale_numbers(wh, tee):
    stock.stock_receive(sku=tee, location=wh, quantity=5)
    stale = StockPosition.objects.get(sku=tee, location=wh)
    stale.on_hand = 50  # what a caller that forgot the lock might believe
    with pytest.raises(InsufficientStock), transaction.atomic():
        stock.movement_apply(position=stale, type="reserve", reserved_delta=8, context=stock.MovementContext())
    position = StockPosition.objects.get(sku=tee, location=wh)
    assert (position.on_hand, position.reserved) == (5, 0)


def test_waitlist_decides_on_numbers_read_under_its_lock(wh, tee):
    stock.stock_receive(sku=tee, location=wh, quantity=2)
    waiting = services.reservation_create(lines=[{"sku": "TEE", "quantity": 5}], waitlist=True)
    stale = StockPosition.objects.get(sku=tee, location=wh)
    stale.on_hand = 10  # e.g. read before a concurrent sale committed

    with transaction.atomic():
        activated = reservations_waitlist_activate_for(positions=[stale])

    assert activated == 0
    assert Reservation.objects.get(pk=waiting.pk).status == "waiting"
    position = StockPosition.objects.get(sku=tee, location=wh)
    assert (position.on_hand, position.reserved) == (2, 0)
    assert ledger_drift() == []


def test_reactivating_a_location_fills_the_waitlist_from_locked_positions(wh, tee):
    stock.stock_receive(sku=tee, location=wh, quantity=3)
    stock.location_update(location=wh, active=False)
    waiting = services.reservation_create(lines=[{"sku": "TEE", "quantity": 3}], waitlist=True)

    stock.location_update(location=wh, active=True)

    assert Reservation.objects.get(pk=waiting.pk).status == "active"
    position = StockPosition.objects.get(sku=tee, location=wh)
    assert (position.on_hand, position.reserved) == (3, 3)


def test_waiting_reservations_expire_after_their_longest_wait(wh, tee, settings):
    settings.RESERVATION_WAITLIST_MAX_SECONDS = 3600
    waiting = services.reservation_create(lines=[{"sku": "TEE", "quantity": 1}], waitlist=True)

    assert services.reservations_expire(now=timezone.now() + timedelta(minutes=30)) == 0
    assert services.reservations_expire(now=timezone.now() + timedelta(hours=2)) == 1

    waiting.refresh_from_db()
    assert waiting.status == "expired"
    assert not WaitlistEntry.objects.filter(reservation=waiting).exists()
    # stock arriving later does not revive it
    stock.stock_receive(sku=tee, location=wh, quantity=5)
    assert StockPosition.objects.get(sku=tee, location=wh).reserved == 0
