import json

import pytest

from ingestion.models import InboundEvent
from tests.ingestion.conftest import SHOPIFY_SECRET, post_webhook, shopify_headers

pytestmark = pytest.mark.django_db


def test_admin_lists_events_shows_the_raw_body_never_the_secret_and_reprocesses(admin_client, client, shopify):
    body = json.dumps({"id": 1, "line_items": [{"id": 2, "sku": "NOPE", "quantity": 1}]}).encode()
    post_webhook(client, "shop", None, shopify_headers(body, topic="orders/create"), raw=body)
    InboundEvent.objects.update(status="failed", error_code="unknown_sku")
    event = InboundEvent.objects.get()

    listing = admin_client.get("/admin/ingestion/inboundevent/?status__exact=failed")
    detail = admin_client.get(f"/admin/ingestion/inboundevent/{event.pk}/change/")
    channel_page = admin_client.get(f"/admin/channels/channel/{shopify.pk}/change/")

    assert listing.status_code == 200 and b"orders/create" in listing.content
    assert detail.status_code == 200 and b"NOPE" in detail.content
    assert SHOPIFY_SECRET.encode() not in detail.content + channel_page.content
    response = admin_client.post("/admin/ingestion/inboundevent/",
                                 {"action": "reprocess", "_selected_action": [event.pk]})
    assert response.status_code == 302
    assert InboundEvent.objects.get().status == "pending"
    assert admin_client.get("/admin/ingestion/oversellincident/").status_code == 200
    assert admin_client.get("/admin/ingestion/leveldrift/").status_code == 200
