"""Catalog writes: locations and SKUs. A change that alters what channels may sell (a location
switched on or off, safety stock, a SKU deactivated) is announced like a stock change."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from core.errors import Conflict
from inventory.hooks import positions_changed
from inventory.locking import positions_lock_for_location
from inventory.models import Location, Sku, StockPosition


def location_create(*, code: str, name: str, kind: str = Location.Kind.WAREHOUSE, active: bool = True,
                    priority: int = 100) -> Location:
    """Create a location; 409 `duplicate_location` when the code exists."""
    try:
        with transaction.atomic():
            return Location.objects.create(code=code, name=name, kind=kind, active=active, priority=priority)
    except IntegrityError:
        raise Conflict(f"Location '{code}' already exists.", code="duplicate_location") from None


def location_update(*, location: Location, name: str | None = None, kind: str | None = None,
                    active: bool | None = None, priority: int | None = None) -> Location:
    """Change name, kind, active or priority (the code is the public identifier and stays).
    None leaves a field as it is; only the fields given are saved.

    Channels sell only from active locations, so switching `active` is announced like a stock
    change of every position there (re-activating one may also fill the waitlist)."""
    with transaction.atomic():
        was_active = location.active
        given: list[str] = []
        if name is not None:
            location.name = name
            given.append("name")
        if kind is not None:
            location.kind = kind
            given.append("kind")
        if active is not None:
            location.active = active
            given.append("active")
        if priority is not None:
            location.priority = priority
            given.append("priority")
        location.save(update_fields=given or None)
        if active is not None and location.active != was_active:
            # Locked (pk order) and read under the lock: the waitlist decides on these numbers.
            positions_changed(positions_lock_for_location(location.pk), availability_rose=location.active)
    return location


def sku_create(*, code: str, name: str, safety_stock: int = 0, active: bool = True) -> Sku:
    """Create a SKU; 409 `duplicate_sku` when the code exists."""
    try:
        with transaction.atomic():
            return Sku.objects.create(code=code, name=name, safety_stock=safety_stock, active=active)
    except IntegrityError:
        raise Conflict(f"SKU '{code}' already exists.", code="duplicate_sku") from None


def sku_update(*, sku: Sku, name: str | None = None, safety_stock: int | None = None,
               active: bool | None = None) -> Sku:
    """Change name, safety stock or active; None leaves a field as it is and only the fields given
    are saved. Safety stock changes what channels may sell, so the change is announced like a
    stock change."""
    with transaction.atomic():
        given: list[str] = []
        if name is not None:
            sku.name = name
            given.append("name")
        if safety_stock is not None:
            sku.safety_stock = safety_stock
            given.append("safety_stock")
        if active is not None:
            sku.active = active
            given.append("active")
        sku.save(update_fields=[*given, "updated_at"] if given else None)
        if safety_stock is not None or active is not None:
            positions_changed(StockPosition.objects.filter(sku=sku), availability_rose=False)
    return sku
