"""Catalog writes: locations and SKUs. A change that alters what channels may sell (a location
switched on or off, safety stock, a SKU deactivated) is announced like a stock change."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from django.db import IntegrityError, transaction
from django.utils import timezone

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


class _Unset(Enum):
    token = 0


# "Leave as it is" for fields where None is a value a caller may set (reorder_point: computed).
UNSET: Final = _Unset.token


def sku_create(*, code: str, name: str, safety_stock: int = 0, active: bool = True, lead_time_days: int = 7,
               reorder_point: int | None = None, dynamic_safety_stock: bool = False) -> Sku:
    """Create a SKU; 409 `duplicate_sku` when the code exists."""
    try:
        with transaction.atomic():
            return Sku.objects.create(code=code, name=name, safety_stock=safety_stock, active=active,
                                      lead_time_days=lead_time_days, reorder_point=reorder_point,
                                      dynamic_safety_stock=dynamic_safety_stock)
    except IntegrityError:
        raise Conflict(f"SKU '{code}' already exists.", code="duplicate_sku") from None


def sku_update(*, sku: Sku, name: str | None = None, safety_stock: int | None = None,
               active: bool | None = None, lead_time_days: int | None = None,
               reorder_point: int | None | _Unset = UNSET, dynamic_safety_stock: bool | None = None) -> Sku:
    """Change a SKU's fields; None (UNSET for `reorder_point`, where None means "computed") leaves a
    field as it is and only the fields given are saved. Safety stock and `active` change what
    channels may sell, so such a change is announced like a stock change (the channel outbox
    re-pushes the SKU); lead time, reorder point and dynamic safety stock only feed analytics."""
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
        if lead_time_days is not None:
            sku.lead_time_days = lead_time_days
            given.append("lead_time_days")
        if not isinstance(reorder_point, _Unset):
            sku.reorder_point = reorder_point
            given.append("reorder_point")
        if dynamic_safety_stock is not None:
            sku.dynamic_safety_stock = dynamic_safety_stock
            given.append("dynamic_safety_stock")
        sku.save(update_fields=[*given, "updated_at"] if given else None)
        if safety_stock is not None or active is not None:
            positions_changed(StockPosition.objects.filter(sku=sku), availability_rose=False)
    return sku


def sku_safety_stocks_set(*, safety_stocks: Mapping[int, int]) -> dict[int, int]:
    """Set the safety stock of several SKUs (by id) in one transaction: the daily dynamic
    recompute, where one `sku_update` per SKU would be a transaction each. Rows are locked in
    primary-key order; only SKUs whose value changes are saved, and the change is announced once,
    like `sku_update` announces one: every position of those SKUs, so the channel outbox marks
    their listings dirty in one ordered statement. Returns {sku id: previous safety stock} of the
    SKUs changed."""
    if not safety_stocks:
        return {}
    with transaction.atomic():
        skus = list(Sku.objects.select_for_update(of=("self",)).filter(pk__in=list(safety_stocks)).order_by("pk"))
        changed = [sku for sku in skus if sku.safety_stock != safety_stocks[sku.pk]]
        previous = {sku.pk: sku.safety_stock for sku in changed}
        now = timezone.now()
        for sku in changed:
            sku.safety_stock, sku.updated_at = safety_stocks[sku.pk], now
        Sku.objects.bulk_update(changed, ["safety_stock", "updated_at"])
        if changed:
            positions_changed(StockPosition.objects.filter(sku_id__in=list(previous)).order_by("pk"),
                              availability_rose=False)
    return previous
