"""SKU planning fields (contract §4 "SKU fields"): lead_time_days, reorder_point,
dynamic_safety_stock through POST/PATCH/GET /api/v1/skus/ and the catalog services."""

import pytest

from inventory import services
from inventory.models import Sku
from tests.analytics.conftest import assert_error, patch, post

pytestmark = pytest.mark.django_db


def test_defaults_when_absent(api):
    created = post(api, "/api/v1/skus/", {"code": "F-1", "name": "Thing"})
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["lead_time_days"], body["reorder_point"], body["dynamic_safety_stock"]) == (7, None, False)
    assert api.get("/api/v1/skus/F-1/").json()["lead_time_days"] == 7


def test_given_on_create_and_changed_by_patch(api):
    created = post(api, "/api/v1/skus/", {"code": "F-2", "name": "Thing", "lead_time_days": 0, "reorder_point": 12,
                                         "dynamic_safety_stock": True, "safety_stock": 3})
    assert created.status_code == 201, created.content
    got = api.get("/api/v1/skus/F-2/").json()
    assert (got["lead_time_days"], got["reorder_point"], got["dynamic_safety_stock"], got["safety_stock"]) == (
        0, 12, True, 3)

    changed = patch(api, "/api/v1/skus/F-2/", {"lead_time_days": 21})
    assert changed.status_code == 200 and changed.json()["lead_time_days"] == 21
    # a PATCH naming other fields leaves reorder_point as it is; null sets it back to "computed"
    assert changed.json()["reorder_point"] == 12
    cleared = patch(api, "/api/v1/skus/F-2/", {"reorder_point": None, "dynamic_safety_stock": False})
    assert cleared.status_code == 200
    assert (cleared.json()["reorder_point"], cleared.json()["dynamic_safety_stock"]) == (None, False)
    sku = Sku.objects.get(code="F-2")
    assert (sku.lead_time_days, sku.reorder_point, sku.dynamic_safety_stock, sku.safety_stock) == (21, None, False, 3)


@pytest.mark.parametrize("field,value", [
    ("lead_time_days", -1), ("lead_time_days", "7"), ("lead_time_days", 7.5), ("lead_time_days", True),
    ("lead_time_days", None), ("lead_time_days", 10**9),
    ("reorder_point", -1), ("reorder_point", "3"), ("reorder_point", 2.0), ("reorder_point", 10**10),
    ("dynamic_safety_stock", "yes"), ("dynamic_safety_stock", 1), ("dynamic_safety_stock", None),
])
def test_invalid_values_are_400_with_the_field_named(api, field, value):
    response = post(api, "/api/v1/skus/", {"code": "BAD", "name": "x", field: value})
    assert_error(response, 400, "validation_error")
    assert field in response.json()["fields"]
    assert not Sku.objects.filter(code="BAD").exists()
    services.sku_create(code="OK", name="ok")
    assert_error(patch(api, "/api/v1/skus/OK/", {field: value}), 400, "validation_error")


def test_planning_fields_are_saved_without_announcing_a_stock_change(sku, location, django_assert_num_queries):
    # lead time / reorder point / dynamic flag only feed analytics: one UPDATE, nothing announced
    with django_assert_num_queries(3):  # savepoint, UPDATE, release
        services.sku_update(sku=sku, lead_time_days=3, reorder_point=None, dynamic_safety_stock=True)
    sku.refresh_from_db()
    assert (sku.lead_time_days, sku.reorder_point, sku.dynamic_safety_stock) == (3, None, True)
