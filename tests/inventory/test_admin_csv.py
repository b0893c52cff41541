"""CSV export (ledger, snapshots) and import (SKUs, counts) in the admin, and the admin polish:
no delete for catalog rows (deactivate instead, through the services), positions named as a
person would name them, SKU creation passing the planning fields."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from analytics.csvio import counts_import, skus_import
from inventory import services
from inventory.models import Location, Sku, StockMovement, StockPosition
from inventory.snapshots import snapshot_take

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456")
    client.force_login(user)
    return client


def read_csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


# ------------------------------------------------------------------------------------------ import


def test_sku_import_applies_good_rows_and_reports_bad_ones(sku):
    text = ("code,name,safety_stock,active,lead_time_days,reorder_point,dynamic_safety_stock\n"
            "NEW-1,New one,3,true,10,5,false\n"          # line 2: created
            "SKU-1,,7,,,computed,\n"                     # line 3: update of the existing one
            "BAD-1,Bad,-1,,,,\n"                         # line 4: negative safety stock
            "BAD-2,Bad,1,maybe,,,\n"                     # line 5: not a boolean
            "a/b,Slash,,,,,\n"                           # line 6: code with a slash
            "BAD-3,,,,,,\n"                              # line 7: a new SKU needs a name
            "NEW-2,Two,,,99999999,,\n")                  # line 8: lead time out of range
    report = skus_import(file_text=text)
    assert report.applied == 2
    assert [line for line, _ in report.errors] == [4, 5, 6, 7, 8]
    reasons = dict(report.errors)
    assert "safety_stock" in reasons[4] and "maybe" in reasons[5] and "/" in reasons[6]
    assert "name" in reasons[7] and "lead_time_days" in reasons[8]
    new = Sku.objects.get(code="NEW-1")
    assert (new.name, new.safety_stock, new.lead_time_days, new.reorder_point) == ("New one", 3, 10, 5)
    sku.refresh_from_db()
    assert sku.safety_stock == 7 and sku.reorder_point is None
    assert not Sku.objects.filter(code__in=["BAD-1", "BAD-2", "a/b", "BAD-3", "NEW-2"]).exists()


def test_count_import_goes_through_stock_adjust_and_refuses_bad_rows(sku, location):
    services.stock_receive(sku=sku.code, location=location.code, quantity=10)
    text = ("sku,location,quantity,reference\n"
            "SKU-1,wh,4,cycle count\n"      # applied: a count row in the ledger
            "SKU-1,wh,-2,\n"                # negative
            "NOPE,wh,3,\n"                  # unknown SKU
            "SKU-1,nowhere,3,\n"            # unknown location
            "SKU-1,wh,x,\n")
    report = counts_import(file_text=text, actor="admin:test")
    assert report.applied == 1
    assert [line for line, _ in report.errors] == [3, 4, 5, 6]
    assert "sku_not_found" in dict(report.errors)[4] and "location_not_found" in dict(report.errors)[5]
    position = StockPosition.objects.get(sku=sku, location=location)
    assert position.on_hand == 4
    count = StockMovement.objects.get(type="count")
    assert (count.source, count.actor, count.reference, count.on_hand_delta) == ("admin_csv", "admin:test",
                                                                                "cycle count", -6)


def test_import_missing_columns_is_one_error(db):
    report = counts_import(file_text="sku,qty\nA,1\n", actor="x")
    assert report.applied == 0 and report.errors == [(1, "missing column(s): location, quantity")]


def test_import_through_the_admin_page_shows_the_report(staff, sku):
    upload = SimpleUploadedFile("skus.csv", b"code,name\nOK-1,Fine\n,Nameless\n", content_type="text/csv")
    response = staff.post("/admin/csv/", {"what": "skus", "file": upload})
    assert response.status_code == 200
    html = response.content.decode()
    assert "1 applied, 1 refused" in html and Sku.objects.filter(code="OK-1").exists()


def test_exports_stream_the_date_range(staff, sku, location):
    services.stock_receive(sku=sku.code, location=location.code, quantity=5)
    services.stock_sell(sku=sku.code, location=location.code, quantity=2)
    snapshot_take()
    today = timezone.now().date()
    response = staff.get(f"/admin/csv/?what=ledger&start={today}&end={today}")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = read_csv(response)
    assert rows[0][:6] == ["id", "recorded_at", "occurred_at", "sku", "location", "type"]
    assert [(r[3], r[4], r[5], r[6]) for r in rows[1:]] == [("SKU-1", "wh", "receipt", "5"),
                                                             ("SKU-1", "wh", "sale", "-2")]
    snaps = read_csv(staff.get(f"/admin/csv/?what=snapshots&start={today}&end={today}"))
    assert snaps[0][2:7] == ["sku", "location", "on_hand", "reserved", "available"]
    assert snaps[1][2:7] == ["SKU-1", "wh", "3", "0", "3"]
    yesterday = today - timedelta(days=1)
    assert len(read_csv(staff.get(f"/admin/csv/?what=ledger&start={yesterday}&end={yesterday}"))) == 1


def test_csv_page_needs_staff_and_permissions(client, sku):
    assert client.get("/admin/csv/").status_code == 302  # to the login
    user = User.objects.create_user("merch", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Operations"))  # reads the ledger, imports nothing
    client.force_login(user)
    today = timezone.now().date()
    assert client.get(f"/admin/csv/?what=ledger&start={today}&end={today}").status_code == 200
    upload = SimpleUploadedFile("skus.csv", b"code,name\nX-1,X\n", content_type="text/csv")
    assert client.post("/admin/csv/", {"what": "skus", "file": upload}).status_code == 403
    assert not Sku.objects.filter(code="X-1").exists()


# ------------------------------------------------------------------------------------------ polish


def test_catalog_rows_offer_no_delete_and_deactivate_through_the_service(staff, sku, location):
    services.stock_receive(sku=sku.code, location=location.code, quantity=1)
    page = staff.get(f"/admin/inventory/sku/{sku.pk}/change/").content.decode()
    assert "deletelink" not in page
    assert staff.get(f"/admin/inventory/sku/{sku.pk}/delete/").status_code == 403
    assert staff.get(f"/admin/inventory/location/{location.pk}/delete/").status_code == 403
    response = staff.post("/admin/inventory/sku/", {"action": "deactivate_selected", "_selected_action": [sku.pk]})
    assert response.status_code == 302
    sku.refresh_from_db()
    assert sku.active is False
    staff.post("/admin/inventory/location/", {"action": "deactivate_selected", "_selected_action": [location.pk]})
    location.refresh_from_db()
    assert location.active is False


def test_positions_read_as_a_person_names_them(staff, sku):
    warehouse = Location.objects.create(code="wh-main", name="Warehouse")
    services.stock_receive(sku=sku.code, location=warehouse.code, quantity=1)
    position = StockPosition.objects.get(sku=sku)
    assert str(position) == "SKU-1 at Warehouse"
    page = staff.get(f"/admin/inventory/sku/{sku.pk}/change/").content.decode()
    assert "SKU-1 at Warehouse" in page and f"{sku.pk}@{warehouse.pk}" not in page


def test_sku_created_in_the_admin_keeps_its_planning_fields(staff):
    response = staff.post("/admin/inventory/sku/add/", {
        "code": "PLAN-1", "name": "Planned", "safety_stock": "2", "active": "on", "lead_time_days": "12",
        "reorder_point": "9", "dynamic_safety_stock": "on",
        **{f"{prefix}-{k}": "0" for prefix in ("positions", "movements") for k in ("TOTAL_FORMS", "INITIAL_FORMS")},
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    created = Sku.objects.get(code="PLAN-1")
    assert (created.lead_time_days, created.reorder_point, created.dynamic_safety_stock) == (12, 9, True)
