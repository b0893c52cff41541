"""Edits made in the Django admin have the effects the same edit has through the API, because
both call the same services: channels are re-pushed through the outbox (DirtyPair rows), and a
reactivated location fills waiting reservations. Posted to the real admin as a superuser, the
channel shows the result over real HTTP (the simulator)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from channels.models import Channel, ChannelListing, DirtyPair
from channels.propagation import channel_push
from channels.services import channel_update
from inventory import services as stock
from tests.admin_forms import admin_post
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db


def pairs(channel: Channel) -> set[tuple[str, bool]]:
    """The channel's outbox as (SKU code, forced)."""
    return set(DirtyPair.objects.filter(channel=channel).values_list("sku__code", "force"))


def shown(simulator, channel: Channel) -> dict:
    """What the marketplace shows, by external id, after the channel's outbox is drained."""
    channel_push(channel_id=channel.pk)
    return simulator.state.levels(channel.slug)["levels"]


@pytest.fixture
def listed(make_channel, list_sku, location, other_location):
    """A BigCommerce channel listing ADM-1 (external id 801), 5 at wh and 3 at store, pushed:
    the channel shows 8 and the outbox is empty."""
    sku = SkuFactory(code="ADM-1")
    stock.stock_receive(sku=sku, location=location, quantity=5)
    stock.stock_receive(sku=sku, location=other_location, quantity=3)
    channel = make_channel("bigcommerce")
    list_sku(channel, sku)
    channel_push(channel_id=channel.pk)
    assert not DirtyPair.objects.exists()
    return channel, sku


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


# ------------------------------------------------------------------------------ locations and SKUs


def test_deactivating_a_location_in_admin_stops_its_stock_counting_for_channels(admin_client, simulator, listed,
                                                                                other_location):
    channel, sku = listed
    assert shown(simulator, channel) == {"801": 8}

    response = admin_post(admin_client, change_url(other_location), {"active": False})

    assert response.status_code == 302
    other_location.refresh_from_db()
    assert other_location.active is False
    assert pairs(channel) == {("ADM-1", False)}
    assert shown(simulator, channel) == {"801": 5}


def test_reactivating_a_location_in_admin_fills_a_waiting_reservation(admin_client, api, other_location):
    sku = SkuFactory(code="WAIT-1")
    stock.stock_receive(sku=sku, location=other_location, quantity=3)
    stock.location_update(location=other_location, active=False)
    created = api.post("/api/v1/reservations/", data=json.dumps(
        {"lines": [{"sku": "WAIT-1", "quantity": 2}], "waitlist": True}), content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="wait-1")
    assert created.status_code == 202 and created.json()["status"] == "waiting"

    response = admin_post(admin_client, change_url(other_location), {"active": True})

    assert response.status_code == 302
    reservation = api.get(f"/api/v1/reservations/{created.json()['id']}/").json()
    assert reservation["status"] == "active"
    assert reservation["lines"] == [{"sku": "WAIT-1", "location": other_location.code, "quantity": 2}]


def test_a_location_priority_change_in_admin_pushes_nothing(admin_client, listed, other_location):
    channel, _sku = listed
    assert admin_post(admin_client, change_url(other_location), {"priority": "7"}).status_code == 302
    other_location.refresh_from_db()
    assert other_location.priority == 7
    assert pairs(channel) == set()


def test_the_code_of_a_location_or_sku_is_not_edited_in_admin(admin_client, listed, other_location):
    _channel, sku = listed
    admin_post(admin_client, change_url(other_location), {"code": "renamed"})
    admin_post(admin_client, change_url(sku), {"code": "RENAMED"})
    other_location.refresh_from_db()
    sku.refresh_from_db()
    assert (other_location.code, sku.code) == ("store", "ADM-1")  # public identifiers, as in the API


def test_locations_skus_and_channels_are_deactivated_not_deleted_in_admin(admin_client, listed, other_location):
    channel, sku = listed
    for obj in (other_location, sku, channel):
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_delete", args=[obj.pk])
        assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert ChannelListing.objects.filter(sku=sku).exists()


def test_sku_safety_stock_changed_in_admin_is_pushed(admin_client, simulator, listed):
    channel, sku = listed

    response = admin_post(admin_client, change_url(sku), {"safety_stock": "2"})

    assert response.status_code == 302
    assert pairs(channel) == {("ADM-1", False)}
    assert shown(simulator, channel) == {"801": 6}


def test_sku_deactivated_in_admin_shows_zero(admin_client, simulator, listed):
    channel, sku = listed

    assert admin_post(admin_client, change_url(sku), {"active": False}).status_code == 302

    assert pairs(channel) == {("ADM-1", False)}
    assert shown(simulator, channel) == {"801": 0}


def test_sku_created_in_admin(admin_client):
    response = admin_post(admin_client, reverse("admin:inventory_sku_add"),
                          {"code": "NEW-1", "name": "New", "safety_stock": "1", "active": True})
    assert response.status_code == 302
    assert admin_post(admin_client, reverse("admin:inventory_location_add"),
                      {"code": "new-loc", "name": "New", "kind": "store", "priority": "5",
                       "active": True}).status_code == 302


# ------------------------------------------------------------------------------ channels


def test_channel_buffer_changed_in_admin_is_pushed(admin_client, simulator, listed):
    channel, _sku = listed

    response = admin_post(admin_client, change_url(channel), {"buffer_type": "units", "buffer_value": "3"})

    assert response.status_code == 302, response.content
    assert pairs(channel) == {("ADM-1", False)}
    assert shown(simulator, channel) == {"801": 5}


def test_channel_locations_changed_in_admin_are_pushed(admin_client, simulator, listed, location):
    channel, _sku = listed

    response = admin_post(admin_client, change_url(channel), {"locations": [str(location.pk)]})

    assert response.status_code == 302
    assert list(channel.locations.values_list("code", flat=True)) == ["wh"]
    assert pairs(channel) == {("ADM-1", False)}
    assert shown(simulator, channel) == {"801": 5}


def test_channel_enabled_in_admin_is_pushed(admin_client, simulator, listed, location):
    channel, sku = listed
    channel_update(channel=channel, push_enabled=False)
    stock.stock_receive(sku=sku, location=location, quantity=10)  # not pushed while disabled
    assert pairs(channel) == set()

    assert admin_post(admin_client, change_url(channel), {"push_enabled": True}).status_code == 302

    assert pairs(channel) == {("ADM-1", False)}
    assert shown(simulator, channel) == {"801": 18}


def test_channel_settings_or_credentials_changed_in_admin_force_a_push(admin_client, listed):
    channel, _sku = listed
    settings_ = json.dumps({**channel.settings, "location_id": 2})

    assert admin_post(admin_client, change_url(channel), {"settings": settings_}).status_code == 302
    assert pairs(channel) == {("ADM-1", True)}  # sent even though the quantity did not change

    DirtyPair.objects.all().delete()
    assert admin_post(admin_client, change_url(channel),
                      {"new_credentials": json.dumps({"access_token": "bc_new"})}).status_code == 302
    assert pairs(channel) == {("ADM-1", True)}
    channel.refresh_from_db()
    assert channel.credentials == {"access_token": "bc_new"}


def test_channel_name_changed_in_admin_pushes_nothing(admin_client, listed):
    channel, _sku = listed
    assert admin_post(admin_client, change_url(channel), {"name": "Renamed"}).status_code == 302
    channel.refresh_from_db()
    assert channel.name == "Renamed"
    assert pairs(channel) == set()


# ------------------------------------------------------------------------------ listings


def test_listing_added_in_the_channel_inline_is_pushed(admin_client, simulator, listed, location):
    channel, _sku = listed
    other = SkuFactory(code="ADM-2")
    stock.stock_receive(sku=other, location=location, quantity=4)
    DirtyPair.objects.all().delete()  # the channel did not list ADM-2 when it was received

    response = admin_post(admin_client, change_url(channel), {
        "listings-TOTAL_FORMS": "2", "listings-1-sku": str(other.pk), "listings-1-external_id": "802",
        "listings-1-attributes": "{}"})

    assert response.status_code == 302
    assert ChannelListing.objects.filter(channel=channel, sku=other, external_id="802").exists()
    assert pairs(channel) == {("ADM-2", True)}
    assert shown(simulator, channel) == {"801": 8, "802": 4}


def test_listing_remapped_in_the_channel_inline_is_pushed_to_the_new_id(admin_client, simulator, listed):
    channel, _sku = listed

    response = admin_post(admin_client, change_url(channel), {"listings-0-external_id": "901"})

    assert response.status_code == 302
    assert pairs(channel) == {("ADM-1", True)}
    assert shown(simulator, channel)["901"] == 8


def test_listing_deleted_in_the_channel_inline_leaves_nothing_to_push(admin_client, listed, location):
    channel, sku = listed
    stock.stock_receive(sku=sku, location=location, quantity=1)  # a push is pending
    assert pairs(channel) == {("ADM-1", False)}

    response = admin_post(admin_client, change_url(channel), {"listings-0-DELETE": "on"})

    assert response.status_code == 302
    assert not ChannelListing.objects.filter(channel=channel).exists()
    assert pairs(channel) == set()


def test_listing_admin_add_change_delete_go_through_the_services(admin_client, simulator, listed, location):
    channel, _sku = listed
    other = SkuFactory(code="ADM-3")
    stock.stock_receive(sku=other, location=location, quantity=2)

    added = admin_post(admin_client, reverse("admin:channels_channellisting_add"), {
        "channel": str(channel.pk), "sku": str(other.pk), "external_id": "803", "attributes": "{}"})
    assert added.status_code == 302
    assert pairs(channel) == {("ADM-3", True)}
    assert shown(simulator, channel) == {"801": 8, "803": 2}

    listing = ChannelListing.objects.get(sku=other)
    assert admin_post(admin_client, change_url(listing), {"external_id": "813"}).status_code == 302
    assert pairs(channel) == {("ADM-3", True)}
    assert shown(simulator, channel)["813"] == 2

    stock.stock_receive(sku=other, location=location, quantity=1)
    delete_url = reverse("admin:channels_channellisting_delete", args=[listing.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert pairs(channel) == set()

    first = ChannelListing.objects.get(channel=channel)
    stock.stock_receive(sku=first.sku, location=location, quantity=1)
    bulk = admin_client.post(reverse("admin:channels_channellisting_changelist"),
                             {"action": "delete_selected", "_selected_action": [first.pk], "post": "yes"})
    assert bulk.status_code == 302
    assert not ChannelListing.objects.exists()
    assert pairs(channel) == set()


def test_channel_created_in_admin_with_a_listing_pushes_it(admin_client, simulator, location):
    sku = SkuFactory(code="ADM-4")
    stock.stock_receive(sku=sku, location=location, quantity=6)

    response = admin_post(admin_client, reverse("admin:channels_channel_add"), {
        "slug": "new-bc", "name": "New BC", "kind": "bigcommerce", "base_url": simulator.store_url("new-bc"),
        "settings": json.dumps({"store_hash": "abc123", "location_id": 1}),
        "new_credentials": json.dumps({"access_token": "bc_x"}), "push_enabled": True, "active": True,
        "buffer_type": "units", "buffer_value": "1", "rate_limit_per_second": "1000", "rate_limit_burst": "1000",
        "retry_max_attempts": "8", "retry_base_delay": "1", "retry_max_delay": "30",
        "circuit_failure_threshold": "5", "circuit_cooldown_seconds": "60",
        "listings-TOTAL_FORMS": "1", "listings-INITIAL_FORMS": "0", "listings-0-sku": str(sku.pk),
        "listings-0-external_id": "804", "listings-0-attributes": "{}"})

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    channel = Channel.objects.get(slug="new-bc")
    assert pairs(channel) == {("ADM-4", True)}
    assert shown(simulator, channel) == {"804": 5}


def test_a_refusal_from_a_service_is_shown_and_nothing_is_saved(admin_client, listed, monkeypatch):
    """A service refusal after the form validated (e.g. a concurrent edit took the id) rolls the
    whole admin save back and is shown as a message instead of a 500."""
    from channels import admin as channels_admin
    from core.errors import Conflict

    channel, _sku = listed

    def refuse(**kwargs):
        raise Conflict("external_id '901' is already mapped to SKU 'OTHER'.", code="duplicate_external_id")

    monkeypatch.setattr(channels_admin, "listing_update", refuse)
    response = admin_post(admin_client, change_url(channel), {"name": "Renamed", "listings-0-external_id": "901"})

    assert response.status_code == 302
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("duplicate_external_id" in m for m in messages), messages
    channel.refresh_from_db()
    assert channel.name == "bigcommerce-ch"  # the channel change was rolled back with the listing's
    assert ChannelListing.objects.get(channel=channel).external_id == "801"
