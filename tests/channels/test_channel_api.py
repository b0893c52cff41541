import json

import pytest

pytestmark = pytest.mark.django_db


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_channel_create_read_patch_never_shows_secrets(api, location, sku):
    body = {
        "slug": "shop", "name": "Shop", "kind": "shopify", "base_url": "http://127.0.0.1:9/",
        "credentials": {"access_token": "shpat_SECRET_TOKEN"}, "webhook_secret": "whsec-SECRET",
        "default_location": "wh", "locations": ["wh"], "push_enabled": True,
        "buffer": {"type": "percent", "value": 10}, "rate_limit_per_second": 2,
        "settings": {"api_version": "2024-01", "location_id": 123},
    }
    created = post(api, "/api/v1/channels/", body)
    assert created.status_code == 201, created.content
    assert b"SECRET" not in created.content
    data = created.json()
    assert data["credentials_set"] == ["access_token"] and data["webhook_secret_set"] is True
    assert data["buffer"] == {"type": "percent", "value": 10}
    assert data["retry"] == {"max_attempts": 8, "base_delay": 1.0, "max_delay": 30.0}
    assert data["circuit_config"] == {"failure_threshold": 5, "cooldown_seconds": 60.0}
    for health in ("last_success_at", "consecutive_failures", "circuit", "backlog", "dead_letters"):
        assert health in data
    assert data["circuit"] == "closed"

    detail = api.get("/api/v1/channels/shop/")
    assert detail.status_code == 200 and b"SECRET" not in detail.content
    patched = api.patch("/api/v1/channels/shop/", {"push_enabled": False, "retry": {"max_attempts": 3}},
                        format="json").json()
    assert patched["push_enabled"] is False and patched["retry"]["max_attempts"] == 3
    assert post(api, "/api/v1/channels/", body).status_code == 409

    listing = post(api, "/api/v1/channels/shop/listings/", {"sku": sku.code, "external_id": "4455"})
    assert listing.status_code == 201 and listing.json()["external_id"] == "4455"
    assert post(api, "/api/v1/channels/shop/listings/", {"sku": "NOPE", "external_id": "1"}).status_code == 404
    assert post(api, "/api/v1/channels/nope/listings/", {"sku": sku.code, "external_id": "1"}).status_code == 404


@pytest.mark.parametrize("patch", [
    {"kind": "myspace"}, {"buffer": {"type": "percent", "value": 150}}, {"locations": ["nowhere"]},
    {"rate_limit_per_second": 0}, {"retry": {"max_attempts": 0}}, {"credentials": "token"},
])
def test_channel_validation(api, location, patch):
    body = {"slug": "c1", "name": "C", "kind": "webhook", **patch}
    response = post(api, "/api/v1/channels/", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"


def test_ops_key_reads_channel_health_but_cannot_configure(api, client_with, location):
    post(api, "/api/v1/channels/", {"slug": "c1", "name": "C", "kind": "webhook"})
    ops = client_with("ops")
    assert ops.get("/api/v1/channels/c1/").status_code == 200
    assert ops.patch("/api/v1/channels/c1/", {"push_enabled": False}, format="json").status_code == 403
    assert client_with("stock:read").get("/api/v1/channels/c1/").status_code == 403
