import pytest
from django.contrib import admin
from django.urls import reverse

from inventory import services
from inventory.models import StockMovement, StockPosition

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456")
    client.force_login(user)
    return client


def test_every_admin_changelist_renders(staff):
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = staff.get(url)
        assert response.status_code == 200, url


def test_adjust_stock_form_goes_through_the_service(staff, sku, location):
    services.stock_receive(sku=sku.code, location=location.code, quantity=5)
    position = StockPosition.objects.get()
    url = reverse("admin:inventory_stockposition_adjust", args=[position.pk])
    assert staff.get(url).status_code == 200
    response = staff.post(url, {"type": "sale", "quantity": 2, "reference": "shop floor"})
    assert response.status_code == 302
    position.refresh_from_db()
    assert position.on_hand == 3
    movement = StockMovement.objects.latest("id")
    assert (movement.type, movement.source, movement.actor) == ("sale", "admin", "admin:boss")
    # A refusal is shown on the form, nothing changes.
    refused = staff.post(url, {"type": "sale", "quantity": 99})
    assert refused.status_code == 200 and b"insufficient_stock" in refused.content
    position.refresh_from_db()
    assert position.on_hand == 3


def test_ledger_cannot_be_changed_in_admin(staff, sku, location):
    services.stock_receive(sku=sku.code, location=location.code, quantity=5)
    movement = StockMovement.objects.get()
    delete = staff.post(reverse("admin:inventory_stockmovement_delete", args=[movement.pk]), {"post": "yes"})
    assert delete.status_code == 403
    add = staff.get(reverse("admin:inventory_stockmovement_add"))
    assert add.status_code == 403
    assert StockMovement.objects.count() == 1


def test_groups_exist_with_permissions(db):
    from django.contrib.auth.models import Group

    merch = Group.objects.get(name="Merchandisers")
    ops = Group.objects.get(name="Operations")
    assert merch.permissions.filter(codename="change_sku").exists()
    assert not ops.permissions.filter(codename="change_sku").exists()
    assert not merch.permissions.filter(codename__in=["change_stockmovement", "delete_stockmovement"]).exists()
