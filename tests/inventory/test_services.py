from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.utils import timezone

from core.errors import InsufficientStock, NotFound, ValidationFailed, VersionConflict
from inventory import selectors, services
from inventory.models import StockMovement, StockPosition
from inventory.services import MovementContext

pytestmark = pytest.mark.django_db


def adjust(sku, location, type, quantity, **kw):
    return services.stock_adjust(sku=sku.code, location=location.code, type=type, quantity=quantity, **kw)


def position(sku, location) -> StockPosition:
    return StockPosition.objects.get(sku=sku, location=location)


def test_receipt_sale_return_adjustment_and_count_move_on_hand_and_write_ledger(sku, location):
    # given / when
    adjust(sku, location, "receipt", 10)
    adjust(sku, location, "sale", 3)
    adjust(sku, location, "return", 1)
    adjust(sku, location, "adjustment", -2)
    result = adjust(sku, location, "count", 20)
    # then
    pos = position(sku, location)
    assert (pos.on_hand, pos.reserved, pos.version) == (20, 0, 5)
    deltas = list(StockMovement.objects.filter(position=pos).order_by("id").values_list("type", "on_hand_delta",
                                                                                          "on_hand_after"))
    assert deltas == [("receipt", 10, 10), ("sale", -3, 7), ("return", 1, 8), ("adjustment", -2, 6),
                      ("count", 14, 20)]
    assert result.positions[0].on_hand == 20
    assert selectors.ledger_drift() == []


def test_sale_beyond_available_is_refused_and_changes_nothing(sku, location):
    adjust(sku, location, "receipt", 2)
    with pytest.raises(InsufficientStock) as exc:
        adjust(sku, location, "sale", 3)
    assert exc.value.extra["available"] == 2
    assert position(sku, location).on_hand == 2
    assert StockMovement.objects.count() == 1


def test_negative_adjustment_below_zero_is_refused(sku, location):
    adjust(sku, location, "receipt", 2)
    with pytest.raises(InsufficientStock):
        adjust(sku, location, "adjustment", -3)
    assert position(sku, location).on_hand == 2


def test_transfer_moves_stock_in_one_transaction(sku, location, other_location):
    adjust(sku, location, "receipt", 5)
    result = services.stock_adjust(sku=sku.code, location=location.code, to_location=other_location.code,
                                   type="transfer", quantity=4)
    assert [m.type for m in result.movements] == ["transfer_out", "transfer_in"]
    assert position(sku, location).on_hand == 1
    assert position(sku, other_location).on_hand == 4


@pytest.mark.parametrize(
    ("type", "quantity", "to_location", "code"),
    [
        ("receipt", 0, None, "invalid_quantity"),
        ("sale", -1, None, "invalid_quantity"),
        ("adjustment", 0, None, "invalid_quantity"),
        ("count", -1, None, "invalid_quantity"),
        ("transfer", 1, None, "to_location_required"),
        ("teleport", 1, None, "invalid_type"),
        ("receipt", 10**12, None, "invalid_quantity"),
    ],
)
def test_invalid_adjustments_are_refused(sku, location, type, quantity, to_location, code):
    with pytest.raises(ValidationFailed) as exc:
        adjust(sku, location, type, quantity, to_location=to_location)
    assert exc.value.code == code
    assert StockMovement.objects.count() == 0


def test_unknown_sku_or_location_is_not_found(sku, location):
    with pytest.raises(NotFound):
        services.stock_adjust(sku="nope", location=location.code, type="receipt", quantity=1)
    with pytest.raises(NotFound):
        services.stock_adjust(sku=sku.code, location="nowhere", type="receipt", quantity=1)


def test_event_key_makes_a_change_idempotent(sku, location):
    ctx = MovementContext(event_key="evt-1")
    first = adjust(sku, location, "receipt", 7, context=ctx)
    again = adjust(sku, location, "receipt", 7, context=ctx)
    assert again.replayed
    assert [m.pk for m in again.movements] == [m.pk for m in first.movements]
    assert again.positions[0].on_hand == 7 and again.positions[0].version == 1
    assert position(sku, location).on_hand == 7
    assert StockMovement.objects.count() == 1


def test_transfer_event_key_is_idempotent_too(sku, location, other_location):
    adjust(sku, location, "receipt", 5)
    ctx = MovementContext(event_key="move-1")
    for _ in range(3):
        services.stock_adjust(sku=sku.code, location=location.code, to_location=other_location.code,
                              type="transfer", quantity=2, context=ctx)
    assert position(sku, location).on_hand == 3
    assert position(sku, other_location).on_hand == 2


def test_stale_expected_version_is_refused(sku, location):
    adjust(sku, location, "receipt", 5)
    with pytest.raises(VersionConflict) as exc:
        adjust(sku, location, "sale", 1, expected_version=0)
    assert exc.value.extra["current_version"] == 1
    adjust(sku, location, "sale", 1, expected_version=1)
    assert position(sku, location).on_hand == 4


def test_ledger_rejects_update_and_delete_even_in_raw_sql(sku, location):
    adjust(sku, location, "receipt", 5)
    movement = StockMovement.objects.get()
    for sql in ("UPDATE inventory_stockmovement SET on_hand_delta = 500 WHERE id = %s",
                "DELETE FROM inventory_stockmovement WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql, [movement.pk])
    assert StockMovement.objects.get().on_hand_delta == 5


def test_database_refuses_negative_stock_whatever_the_code(sku, location):
    from django.db import IntegrityError

    adjust(sku, location, "receipt", 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        StockPosition.objects.filter(sku=sku).update(on_hand=-1)


def test_verify_ledger_reports_drift_without_repairing(sku, location):
    adjust(sku, location, "receipt", 5)
    # Simulate a bug that bypassed the services.
    StockPosition.objects.filter(sku=sku).update(on_hand=9)
    drift = selectors.ledger_drift()
    assert [(d["sku"], d["on_hand"], d["ledger_on_hand"]) for d in drift] == [(sku.code, 9, 5)]
    assert position(sku, location).on_hand == 9  # reported, not repaired


def test_verify_ledger_command_exit_code(sku, location):
    from django.core.management import call_command

    adjust(sku, location, "receipt", 5)
    call_command("verify_ledger")  # no drift: returns normally
    StockPosition.objects.filter(sku=sku).update(reserved=1)
    with pytest.raises(SystemExit):
        call_command("verify_ledger")


def test_as_of_rebuilds_past_levels_from_the_ledger(sku, location, other_location):
    adjust(sku, location, "receipt", 10)
    adjust(sku, other_location, "receipt", 3)
    middle = timezone.now()
    adjust(sku, location, "sale", 4)
    then = selectors.stock_as_of(sku_code=sku.code, at=middle)
    now = selectors.stock_get(sku_code=sku.code)
    assert then["on_hand"] == 13 and now["on_hand"] == 9
    assert {r["location"]: (r["on_hand"], r["version"]) for r in then["locations"]} == {
        location.code: (10, 1), other_location.code: (3, 1)}
    before_anything = selectors.stock_as_of(sku_code=sku.code, at=middle - timedelta(days=1))
    assert before_anything["locations"] == [] and before_anything["on_hand"] == 0


def test_snapshot_copies_only_changed_positions(sku, location, other_location):
    adjust(sku, location, "receipt", 10)
    adjust(sku, other_location, "receipt", 3)
    assert services.snapshot_take() == 2
    assert services.snapshot_take() == 0
    adjust(sku, location, "sale", 1)
    assert services.snapshot_take() == 1


def test_conditional_update_refuses_a_decision_taken_on_stale_numbers(sku, location):
    """Second line of defence: a caller that decided on numbers read without the lock cannot
    write them. (The race test covers the lock; this covers the conditional UPDATE.)"""
    adjust(sku, location, "receipt", 1)
    stale = position(sku, location)  # read, not locked
    adjust(sku, location, "sale", 1)  # someone else sells the last unit
    with pytest.raises(InsufficientStock), transaction.atomic():
        services.movement_apply(position=stale, type="sale", on_hand_delta=-1, context=MovementContext())
    assert position(sku, location).on_hand == 0
    assert StockMovement.objects.count() == 2
