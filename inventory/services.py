"""Every change to stock numbers goes through here.

Invariants kept by every function in this module:
- on_hand >= 0 and reserved >= 0 (also CHECK constraints in the database);
- each change to a position writes exactly one ledger row in the same transaction and bumps the
  position's version by one, so on_hand/reserved always equal the sums of ledger deltas;
- positions are locked through `inventory.locking` (SELECT ... FOR UPDATE, primary-key order)
  before they are read for a decision, and counters change with F() in a conditional UPDATE, so
  a decision taken on stale numbers can never be written.

Other apps (reservations, ingestion) compose `positions_lock` + `movement_apply` inside their
own transactions; views, admin, tasks and commands call the top-level services.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.errors import Conflict, InsufficientStock, NotFound, ValidationFailed, VersionConflict
from core.idempotency import PendingClaim
from core.sql import sql_compose
from inventory.bundles import Components, bundle_components, bundle_units
from inventory.catalog import (  # noqa: F401 - re-exported
    location_create,
    location_update,
    sku_components_check,
    sku_components_unchanged,
    sku_create,
    sku_safety_stocks_set,
    sku_update,
)
from inventory.hooks import positions_changed  # noqa: F401 - the services' one exit, re-exported
from inventory.locking import positions_lock
from inventory.models import Location, MovementType, Sku, StockMovement, StockPosition
from inventory.one_statement import ledger_insert
from inventory.sale_group import Sale, sale_combined
from inventory.sale_statement import sale_in_one_statement
from inventory.snapshots import (  # noqa: F401 - re-exported: bucketed, changed-only, rolled up, pruned
    snapshot_maintain,
    snapshot_prune,
    snapshot_rollup,
    snapshot_take,
)

logger = logging.getLogger(__name__)

# Adjustment types a client may request (contract: POST /api/v1/stock/adjustments/).
ADJUSTMENT_TYPES = ("receipt", "return", "sale", "adjustment", "count", "transfer")
MAX_QUANTITY = 1_000_000_000  # far above any real stock level; refuses overflow-sized input
TRANSFER_IN_SUFFIX = "#in"


@dataclass
class AdjustmentResult:
    movements: list[StockMovement]
    positions: list[StockPosition]
    replayed: bool = False  # True when an event key had already been applied


@dataclass
class MovementContext:
    """Who and why, copied onto every ledger row a service writes."""

    source: str = "api"
    reference: str = ""
    actor: str = ""
    event_key: str | None = None
    occurred_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON, stored on the ledger row
    # Set by reservations.services so each ledger row links to the reservation that caused it.
    reservation_id: UUID | str | None = None


# ------------------------------------------------------------------------------ lookups


def sku_resolve(*, sku: Sku | str) -> Sku:
    if isinstance(sku, Sku):
        return sku
    found = Sku.objects.filter(code=sku).first()
    if found is None:
        raise NotFound(f"Unknown SKU '{sku}'.", code="sku_not_found")
    return found


@cache
def _codes_sql() -> str:
    return sql_compose("SELECT 0, id, code, is_bundle FROM {sku} WHERE code = %s "
                       "UNION ALL SELECT 1, id, code, false FROM {location} WHERE code = ANY(%s)",
                       sku=Sku._meta.db_table, location=Location._meta.db_table)


def _codes_resolve(sku: Sku | str, location: Location | str,
                   to_location: Location | str | None) -> tuple[Sku, Location, Location | None]:
    """`sku_resolve` and `location_resolve` for an adjustment, in one plain statement (the hot
    path of every sale). The objects carry what the services use: id, code, is_bundle."""
    wanted = [x for x in (location, to_location) if isinstance(x, str)]
    if not isinstance(sku, str) and not wanted:
        return sku, location, to_location  # type: ignore[return-value]  # all objects already
    found_skus: dict[str, Sku] = {}
    found_locations: dict[str, Location] = {}
    with connection.cursor() as cursor:
        cursor.execute(_codes_sql(), [sku if isinstance(sku, str) else None, wanted])
        for kind, pk, code, is_bundle in cursor.fetchall():
            if kind == 0:
                found_skus[code] = Sku(pk=pk, code=code, is_bundle=is_bundle)
            else:
                found_locations[code] = Location(pk=pk, code=code)

    def location_of(value: Location | str) -> Location:
        if isinstance(value, Location):
            return value
        if value not in found_locations:
            raise NotFound(f"Unknown location '{value}'.", code="location_not_found")
        return found_locations[value]

    if isinstance(sku, str) and sku not in found_skus:
        raise NotFound(f"Unknown SKU '{sku}'.", code="sku_not_found")
    sku_obj = found_skus[sku] if isinstance(sku, str) else sku
    return sku_obj, location_of(location), location_of(to_location) if to_location else None


def location_resolve(*, location: Location | str) -> Location:
    if isinstance(location, Location):
        return location
    found = Location.objects.filter(code=location).first()
    if found is None:
        raise NotFound(f"Unknown location '{location}'.", code="location_not_found")
    return found


# ------------------------------------------------------------------------------ primitive


def movement_apply(
    *,
    position: StockPosition,
    type: str,
    on_hand_delta: int = 0,
    reserved_delta: int = 0,
    context: MovementContext,
    event_key: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> StockMovement:
    """Change one *locked* position by the given deltas and write its ledger row.

    The caller holds the row lock (inventory.locking) inside a transaction and has already
    decided the change is allowed. The UPDATE is still conditional: if the decision was taken on
    stale numbers (a caller forgot the lock), it matches no row and we refuse instead of writing.
    One statement (the UPDATE and the ledger INSERT as one data-modifying CTE): a round trip
    less, and no ORM query building, on every checkout commit, release and sale.
    """
    from psycopg.types.json import Jsonb

    now = timezone.now()
    occurred_at = context.occurred_at or now
    merged = {**context.metadata, **(metadata or {})}
    with connection.cursor() as cursor:
        params: dict[str, Any] = {
            "id": position.pk, "on_hand_delta": on_hand_delta, "reserved_delta": reserved_delta, "now": now,
            "type": type, "source": context.source, "reference": context.reference, "event_key": event_key,
            "actor": context.actor, "occurred_at": occurred_at, "metadata": Jsonb(merged),
            "reservation_id": context.reservation_id}
        cursor.execute(_movement_sql(), params)
        row = cursor.fetchone()
    if row is None:
        raise InsufficientStock(
            "Stock changed underneath this operation; nothing was applied.",
            available=position.available,
        )
    movement_id, position.on_hand, position.reserved = row
    position.version += 1  # we hold the lock: exactly one ledger row since we read it
    movement = StockMovement(
        pk=movement_id, position=position, sku_id=position.sku_id, location_id=position.location_id, type=type,
        on_hand_delta=on_hand_delta, reserved_delta=reserved_delta, on_hand_after=position.on_hand,
        reserved_after=position.reserved, source=context.source, reference=context.reference, event_key=event_key,
        actor=context.actor, occurred_at=occurred_at, recorded_at=now, metadata=merged,
        reservation_id=context.reservation_id)
    movement._state.adding, movement._state.db = False, "default"  # saved, as objects.create() leaves it
    return movement


@cache
def _movement_sql() -> str:
    # The conditions movement_apply refuses on, in SQL: nothing below zero, and a hold only out of
    # what is available after the change (on_hand' >= reserved').
    return sql_compose(
        "WITH moved AS (UPDATE {position} SET on_hand = on_hand + %(on_hand_delta)s, "
        "reserved = reserved + %(reserved_delta)s, version = version + 1, updated_at = %(now)s "
        "WHERE id = %(id)s AND on_hand + %(on_hand_delta)s >= 0 AND reserved + %(reserved_delta)s >= 0 "
        "AND (%(reserved_delta)s <= 0 OR on_hand + %(on_hand_delta)s >= reserved + %(reserved_delta)s) "
        "RETURNING id, sku_id, location_id, on_hand, reserved), "
        "ledger AS ({ledger}) SELECT ledger.id, moved.on_hand, moved.reserved FROM moved, ledger",
        position=StockPosition._meta.db_table, ledger=ledger_insert())


# ------------------------------------------------------------------------------ validation


def _validate(type: str, quantity: object, to_location: Location | str | None) -> None:
    if type not in ADJUSTMENT_TYPES:
        raise ValidationFailed(
            f"Unknown type '{type}'; expected one of: {', '.join(ADJUSTMENT_TYPES)}.", code="invalid_type")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValidationFailed("quantity must be an integer.", code="invalid_quantity")
    if abs(quantity) > MAX_QUANTITY:
        raise ValidationFailed(f"quantity must be at most {MAX_QUANTITY} in size.", code="invalid_quantity")
    if type == "adjustment":
        if quantity == 0:
            raise ValidationFailed("An adjustment needs a non-zero quantity.", code="invalid_quantity")
    elif type == "count":
        if quantity < 0:
            raise ValidationFailed("A count is an absolute quantity >= 0.", code="invalid_quantity")
    elif quantity <= 0:
        raise ValidationFailed(f"A {type} needs a quantity > 0.", code="invalid_quantity")
    if type == "transfer" and not to_location:
        raise ValidationFailed("A transfer needs to_location.", code="to_location_required")
    if type != "transfer" and to_location:
        raise ValidationFailed("to_location is only for transfers.", code="invalid_to_location")


@cache
def _replay_sql() -> str:
    return sql_compose("SELECT 1 FROM {movement} WHERE event_key = ANY(%s) LIMIT 1",
                       movement=StockMovement._meta.db_table)


def _check_version(position: StockPosition, expected_version: int | None) -> None:
    if expected_version is not None and position.version != expected_version:
        raise VersionConflict(
            f"Position version is {position.version}, not {expected_version}.",
            current_version=position.version,
        )


def _replay(event_key: str) -> AdjustmentResult | None:
    """The first result for an event key already applied, or None (one plain statement when the
    key is new, the common case: a request checks it before doing anything)."""
    keys = [event_key, event_key + TRANSFER_IN_SUFFIX]
    with connection.cursor() as cursor:
        cursor.execute(_replay_sql(), [keys])
        if cursor.fetchone() is None:
            return None
    movements = list(
        StockMovement.objects.filter(event_key__in=keys)
        .select_related("sku", "location")
        .order_by("id")
    )
    if not movements:
        return None
    positions = []
    for m in movements:
        # The position as that movement left it: numbers from the row, version by counting.
        version = StockMovement.objects.filter(position_id=m.position_id, id__lte=m.id).count()
        positions.append(StockPosition(
            pk=m.position_id, sku=m.sku, location=m.location,
            on_hand=m.on_hand_after, reserved=m.reserved_after, version=version,
        ))
    return AdjustmentResult(movements=movements, positions=positions, replayed=True)


# ------------------------------------------------------------------------------ services


def stock_adjust(
    *,
    sku: Sku | str,
    location: Location | str,
    type: str,
    quantity: int,
    to_location: Location | str | None = None,
    expected_version: int | None = None,
    context: MovementContext | None = None,
    claim: PendingClaim | None = None,
) -> AdjustmentResult:
    """Apply one adjustment (receipt, return, sale, adjustment, count, transfer) atomically.
    `claim`: the request's Idempotency-Key claim, inserted by the one-statement sale with it or
    settled before any other path (it may raise core.idempotency's replay, 409 or 422).

    Lock order: the positions involved, by primary key (inventory.locking). Idempotent on
    `context.event_key`: a key already in the ledger returns the first result, changing nothing.
    Raises ValidationFailed, NotFound, InsufficientStock (409) or VersionConflict (412).
    """
    context = context or MovementContext()
    _validate(type, quantity, to_location)
    if (type == "sale" and settings.STOCK_SALE_ONE_STATEMENT and isinstance(sku, str)
            and isinstance(location, str)):
        # The common sale in one statement (inventory.sale_statement); None: this path decides.
        replay_keys = [context.event_key, context.event_key + TRANSFER_IN_SUFFIX] if context.event_key else []
        if settings.STOCK_SALE_GROUP_COMMIT and expected_version is None and not connection.in_atomic_block:
            # Run together with the other sales of this position waiting in this process.
            sold = sale_combined(Sale(sku=sku, location=location, quantity=quantity, context=context,
                                      replay_keys=replay_keys, claim=claim))
        else:
            sold = sale_in_one_statement(
                sku=sku, location=location, quantity=quantity, expected_version=expected_version, context=context,
                replay_keys=replay_keys, claim=claim)
        if sold is not None:
            return AdjustmentResult(movements=[sold[0]], positions=[sold[1]])
    if claim is not None:
        claim.settle()
    if context.event_key and (replayed := _replay(context.event_key)):
        return replayed
    sku_obj, location_obj, to_location_obj = _codes_resolve(sku, location, to_location)
    if sku_obj.is_bundle:
        return _bundle_adjust(sku_obj, location_obj, type, quantity, expected_version, context)
    if to_location_obj is not None and to_location_obj.pk == location_obj.pk:
        raise ValidationFailed("to_location must differ from location.", code="invalid_to_location")
    try:
        return _stock_adjust_atomic(sku_obj, location_obj, type, quantity, to_location_obj,
                                    expected_version, context)
    except IntegrityError:
        # A concurrent request with the same event key won the unique index.
        if context.event_key and (replayed := _replay(context.event_key)):
            return replayed
        raise


@transaction.atomic(durable=True)
def _stock_adjust_atomic(sku: Sku, location: Location, type: str, quantity: int, to_location: Location | None,
                         expected_version: int | None, context: MovementContext) -> AdjustmentResult:
    pairs = [(sku.pk, location.pk)] + ([(sku.pk, to_location.pk)] if to_location else [])
    locked = positions_lock(pairs)
    # Checked again under the lock: a concurrent twin may have committed while we waited.
    if context.event_key and (replayed := _replay(context.event_key)):
        return replayed
    position = locked[(sku.pk, location.pk)]
    _check_version(position, expected_version)
    key = context.event_key
    movements: list[StockMovement] = []
    if type in ("receipt", "return"):
        movements.append(movement_apply(position=position, type=type, on_hand_delta=quantity, context=context,
                                         event_key=key))
    elif type == "sale":
        if quantity > position.available:
            raise InsufficientStock(
                f"Only {position.available} of {sku.code} available at {location.code}.",
                available=position.available)
        movements.append(movement_apply(position=position, type=type, on_hand_delta=-quantity, context=context,
                                         event_key=key))
    elif type == "adjustment":
        if position.on_hand + quantity < 0:
            raise InsufficientStock(
                f"On hand is {position.on_hand}; an adjustment of {quantity} would go below zero.",
                available=position.available)
        movements.append(movement_apply(position=position, type=type, on_hand_delta=quantity, context=context,
                                         event_key=key))
    elif type == "count":
        movements.append(movement_apply(position=position, type=type, on_hand_delta=quantity - position.on_hand,
                                         context=context, event_key=key, metadata={"counted": quantity}))
    elif type == "transfer":
        assert to_location is not None  # _validate: a transfer always names to_location
        if quantity > position.available:
            raise InsufficientStock(
                f"Only {position.available} of {sku.code} available to transfer from {location.code}.",
                available=position.available)
        destination = locked[(sku.pk, to_location.pk)]
        movements.append(movement_apply(position=position, type=MovementType.TRANSFER_OUT, on_hand_delta=-quantity,
                                         context=context, event_key=key,
                                         metadata={"to_location": to_location.code}))
        movements.append(movement_apply(position=destination, type=MovementType.TRANSFER_IN, on_hand_delta=quantity,
                                         context=context,
                                         event_key=key + TRANSFER_IN_SUFFIX if key else None,
                                         metadata={"from_location": location.code}))
    changed = [locked[pair] for pair in pairs]
    positions_changed(changed, availability_rose=any(m.on_hand_delta > 0 for m in movements))
    for p in changed:
        p.sku, p.location = sku, (location if p.location_id == location.pk or to_location is None else to_location)
    return AdjustmentResult(movements=movements, positions=changed)


class BundleHasNoStock(Conflict):
    code = "bundle_has_no_stock"


def _bundle_adjust(bundle: Sku, location: Location, type: str, quantity: int, expected_version: int | None,
                   context: MovementContext) -> AdjustmentResult:
    """A sale of a bundle sells its components (quantity x each one's units), all or nothing; any
    other adjustment is refused: a bundle holds no stock of its own (contract, "Bundles")."""
    if type != "sale":
        raise BundleHasNoStock(f"'{bundle.code}' is a bundle and holds no stock of its own; a {type} applies to its "
                               "components.")
    components = bundle_components([bundle.pk])[bundle.pk]
    try:
        return _bundle_sell_atomic(bundle, location, components, quantity, expected_version, context)
    except IntegrityError:
        if context.event_key and (replayed := _replay_bundle(context.event_key, components)):
            return replayed
        raise


def _bundle_key(event_key: str | None, component_id: int) -> str | None:
    """Each component row of a bundle sale carries the event key plus its component (keys are unique)."""
    return f"{event_key}#{component_id}" if event_key else None


def _replay_bundle(event_key: str, components: Components) -> AdjustmentResult | None:
    results = [r for c, _ in components if (r := _replay(_bundle_key(event_key, c) or ""))]
    if not results:
        return None
    return AdjustmentResult(movements=[m for r in results for m in r.movements],
                            positions=[p for r in results for p in r.positions], replayed=True)


@transaction.atomic(durable=True)
def _bundle_sell_atomic(bundle: Sku, location: Location, components: Components, quantity: int,
                        expected_version: int | None, context: MovementContext) -> AdjustmentResult:
    # The components' positions at the location, locked in the one global order like any change.
    locked = positions_lock([(component_id, location.pk) for component_id, _ in components])
    if context.event_key and (replayed := _replay_bundle(context.event_key, components)):
        return replayed
    positions = [locked[(component_id, location.pk)] for component_id, _ in components]
    version = sum(p.version for p in positions)  # the bundle's derived version at this location
    if expected_version is not None and version != expected_version:
        raise VersionConflict(f"Position version is {version}, not {expected_version}.", current_version=version)
    can = bundle_units(components, {p.sku_id: p.available for p in positions})
    if quantity > can:
        raise InsufficientStock(f"Only {can} of {bundle.code} available at {location.code}.", available=can)
    movements = [
        movement_apply(position=position, type=MovementType.SALE, on_hand_delta=-quantity * per_bundle,
                       context=context, event_key=_bundle_key(context.event_key, component_id),
                       metadata={"bundle": bundle.code, "bundle_id": bundle.pk, "bundle_units": quantity})
        for position, (component_id, per_bundle) in zip(positions, components, strict=True)]
    positions_changed(positions, availability_rose=False)
    skus = Sku.objects.in_bulk([c for c, _ in components])
    for p in positions:
        p.sku, p.location = skus[p.sku_id], location
    return AdjustmentResult(movements=movements, positions=positions)


def stock_receive(*, sku: Sku | str, location: Location | str, quantity: int,
                  context: MovementContext | None = None) -> AdjustmentResult:
    """Goods arrived: on_hand += quantity."""
    return stock_adjust(sku=sku, location=location, type="receipt", quantity=quantity, context=context)


def stock_return(*, sku: Sku | str, location: Location | str, quantity: int,
                 context: MovementContext | None = None) -> AdjustmentResult:
    """A customer return put back into stock: on_hand += quantity."""
    return stock_adjust(sku=sku, location=location, type="return", quantity=quantity, context=context)


def stock_sell(*, sku: Sku | str, location: Location | str, quantity: int,
               context: MovementContext | None = None) -> AdjustmentResult:
    """A sale of unreserved stock; refused (409) beyond available."""
    return stock_adjust(sku=sku, location=location, type="sale", quantity=quantity, context=context)


def stock_count(*, sku: Sku | str, location: Location | str, quantity: int,
                context: MovementContext | None = None) -> AdjustmentResult:
    """A physical count: on_hand := quantity; the ledger records the delta."""
    return stock_adjust(sku=sku, location=location, type="count", quantity=quantity, context=context)


def stock_transfer(*, sku: Sku | str, location: Location | str, to_location: Location | str, quantity: int,
                   context: MovementContext | None = None) -> AdjustmentResult:
    """Move stock between locations in one transaction; both positions locked in pk order."""
    return stock_adjust(sku=sku, location=location, to_location=to_location, type="transfer",
                        quantity=quantity, context=context)

