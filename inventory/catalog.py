"""Catalog writes: locations and SKUs. A change that alters what channels may sell (a location
switched on or off, safety stock, a SKU deactivated) is announced like a stock change."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import Conflict, NotFound, ValidationFailed
from inventory.hooks import positions_changed
from inventory.locking import positions_lock_for_location
from inventory.models import BundleComponent, Location, Sku, StockPosition

MAX_COMPONENTS = 50  # components per bundle: far above real kits, bounds the work of every bundle change


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
               reorder_point: int | None = None, dynamic_safety_stock: bool = False,
               components: list[Mapping] | None = None) -> Sku:
    """Create a SKU; 409 `duplicate_sku` when the code exists.

    `components` ([{"sku": code, "quantity": n >= 1}], non-empty) makes it a bundle
    (inventory.bundles), with its components, in the same transaction; they never change after.
    Refused before anything is written: 404 `sku_not_found` for an unknown component, 400
    `invalid_components` for a bundle of itself, a component that is itself a bundle, a repeated
    component, a quantity below 1, or more than MAX_COMPONENTS."""
    parts = sku_components_check(code, components or [])
    try:
        with transaction.atomic():
            sku = Sku.objects.create(code=code, name=name, safety_stock=safety_stock, active=active,
                                     lead_time_days=lead_time_days, reorder_point=reorder_point,
                                     dynamic_safety_stock=dynamic_safety_stock, is_bundle=bool(parts))
            BundleComponent.objects.bulk_create(
                [BundleComponent(bundle=sku, component=component, quantity=quantity) for component, quantity in parts])
            return sku
    except IntegrityError:
        raise Conflict(f"SKU '{code}' already exists.", code="duplicate_sku") from None


def sku_components_check(code: str, components: list[Mapping]) -> list[tuple[Sku, int]]:
    """[(component SKU, units per bundle)] for a new bundle's components, or a 400/404 refusal
    (sku_create runs it; the admin's add form runs it first to show refusals as form errors)."""
    if len(components) > MAX_COMPONENTS:
        raise ValidationFailed(f"A bundle has at most {MAX_COMPONENTS} components.", code="invalid_components")
    wanted: dict[str, int] = {}
    for i, part in enumerate(components):
        component, quantity = part.get("sku"), part.get("quantity")
        if not isinstance(component, str) or not component:
            raise ValidationFailed(f"components.{i}: each component needs a SKU code.", code="invalid_components")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise ValidationFailed(f"components.{i}.quantity must be an integer >= 1.", code="invalid_components")
        if component == code:
            raise ValidationFailed(f"A bundle cannot contain itself ('{code}').", code="invalid_components")
        if component in wanted:
            raise ValidationFailed(f"Component '{component}' is listed twice; give its total quantity once.",
                                   code="invalid_components")
        wanted[component] = quantity
    found = {sku.code: sku for sku in Sku.objects.filter(code__in=list(wanted))}
    for component in wanted:
        if component not in found:
            raise NotFound(f"Unknown SKU '{component}'.", code="sku_not_found")
        if found[component].is_bundle:
            raise ValidationFailed(f"'{component}' is a bundle; a bundle cannot be a component.",
                                   code="invalid_components")
    return [(found[component], quantity) for component, quantity in wanted.items()]


def sku_components_unchanged(*, sku: Sku, components: list[Mapping]) -> None:
    """Components are set at creation: 400 `components_immutable` for a PATCH that names other
    ones (naming the same list again is accepted, so a client may send the whole resource back)."""
    current = {part.component.code: part.quantity for part in sku.components.select_related("component")}
    given = {part.get("sku"): part.get("quantity") for part in components}
    if given != current or len(given) != len(components):
        raise ValidationFailed("Components are set when a SKU is created and cannot be changed; create a new "
                               "bundle instead.", code="components_immutable")


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
            # A bundle has no positions: its components' stand for it (the outbox marks every
            # bundle made of a changed SKU, inventory.bundles).
            held_by = (StockPosition.objects.filter(sku__in_bundles__bundle=sku) if sku.is_bundle
                       else StockPosition.objects.filter(sku=sku))
            positions_changed(held_by.order_by("pk"), availability_rose=False)
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
            # A bundle has no positions: its components' stand for it (as in sku_update).
            held_by = Q(sku_id__in=list(previous)) | Q(sku__in_bundles__bundle_id__in=list(previous))
            positions_changed(StockPosition.objects.filter(held_by).distinct().order_by("pk"), availability_rose=False)
    return previous
