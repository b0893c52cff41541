"""BigCommerce: Standard Webhooks signature with the secret as UTF-8, a thin payload, and the
order's products fetched over real HTTP from a local server that answers like BigCommerce's
v2 Orders API (GET /stores/{store_hash}/v2/orders/{id}/products, X-Auth-Token)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from ingestion.models import InboundEvent
from inventory.models import StockPosition
from inventory.services import stock_receive
from tests.ingestion.conftest import BC_SECRET, drain_all, listing, post_webhook, standard_headers

pytestmark = pytest.mark.django_db

STORE_HASH = "abc123"
TOKEN = "bc-access-token"


class FakeBigCommerce:
    """Orders by id -> list of product rows; `status_override` forces an error status."""

    def __init__(self):
        self.orders: dict[int, list[dict]] = {}
        self.status_override: int | None = None
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                fake.requests.append(self.path)
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if self.headers.get("X-Auth-Token") != TOKEN:
                    return self._send(401, {"status": 401, "title": "Unauthorized"})
                if fake.status_override:
                    return self._send(fake.status_override, [{"status": fake.status_override, "message": "err"}])
                if parts[:4] != ["stores", STORE_HASH, "v2", "orders"] or parts[5:] != ["products"]:
                    return self._send(404, [{"status": 404, "message": "not found"}])
                order_id = int(parts[4])
                if order_id not in fake.orders:
                    return self._send(404, [{"status": 404, "message": "The requested resource was not found."}])
                query = parse_qs(url.query)
                limit, page = int(query.get("limit", ["50"])[0]), int(query.get("page", ["1"])[0])
                rows = fake.orders[order_id][(page - 1) * limit: page * limit]
                if not rows:
                    self.send_response(204)
                    self.end_headers()
                    return None
                return self._send(200, rows)

            def _send(self, status, payload):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bigcommerce_api():
    fake = FakeBigCommerce()
    yield fake
    fake.close()


@pytest.fixture
def bc(make_channel, bigcommerce_api):
    return make_channel("bigcommerce", "bc", secret=BC_SECRET, base_url=bigcommerce_api.url,
                        credentials={"access_token": TOKEN}, settings={"store_hash": STORE_HASH})


def product_row(line_id, order_id, variant_id, quantity, sku="BC-SKU"):
    return {"id": line_id, "order_id": order_id, "product_id": 77, "variant_id": variant_id, "sku": sku,
            "name": "Tee", "quantity": quantity, "quantity_shipped": 0, "quantity_refunded": 0}


def notify(client, scope, order_id, **data):
    payload = {"scope": scope, "store_id": "1025646", "producer": f"stores/{STORE_HASH}",
               "hash": "352e4afc6dd3fc85ea26bfdf3f91852604d57528", "created_at": int(time.time()),
               "data": {"type": "order", "id": order_id, **data}}
    body = json.dumps(payload).encode()
    return post_webhook(client, "bc", None, standard_headers(body, key=BC_SECRET.encode()), raw=body)


def on_hand(sku, location):
    position = StockPosition.objects.filter(sku=sku, location=location).first()
    return position.on_hand if position else 0


def test_order_created_fetches_products_over_http_and_sells(client, bc, bigcommerce_api, tee, mug, wh):
    stock_receive(sku=tee, location=wh, quantity=10)
    stock_receive(sku=mug, location=wh, quantity=10)
    listing(bc, tee, "501")  # BigCommerce listings are keyed by variant_id
    listing(bc, mug, "502")
    bigcommerce_api.orders[250] = [product_row(1, 250, 501, 2), product_row(2, 250, 502, 1, sku="MUG-1")]

    response = notify(client, "store/order/created", 250)
    assert response.status_code == 200
    assert bigcommerce_api.requests == []  # the answer does not wait on BigCommerce
    drain_all()

    assert (on_hand(tee, wh), on_hand(mug, wh)) == (8, 9)
    assert bigcommerce_api.requests[0].startswith(f"/stores/{STORE_HASH}/v2/orders/250/products")
    event = InboundEvent.objects.get()
    assert event.status == "done" and len(event.fetched["products"]) == 2

    # Cancelled (status id 5): the lines go back, once, whatever the number of notifications.
    for _ in range(2):
        notify(client, "store/order/statusUpdated", 250, status={"previous_status_id": 11, "new_status_id": 5})
    drain_all()
    assert (on_hand(tee, wh), on_hand(mug, wh)) == (10, 10)


def test_products_are_paged(client, bc, bigcommerce_api, tee, wh, monkeypatch):
    from channels.adapters.bigcommerce import BigCommerceAdapter

    monkeypatch.setattr(BigCommerceAdapter, "products_page_size", 2)  # 3 pages, then a 204
    stock_receive(sku=tee, location=wh, quantity=1000)
    listing(bc, tee, "501")
    rows = [product_row(i, 9, 501, 1) for i in range(1, 6)]
    bigcommerce_api.orders[9] = rows
    notify(client, "store/order/created", 9)
    drain_all()
    assert on_hand(tee, wh) == 1000 - len(rows)
    assert len(bigcommerce_api.requests) == 3


def test_status_changes_that_move_no_stock_are_ignored_without_a_fetch(client, bc, bigcommerce_api):
    notify(client, "store/order/statusUpdated", 250, status={"previous_status_id": 1, "new_status_id": 11})
    drain_all()
    assert InboundEvent.objects.get().status == "ignored"
    assert bigcommerce_api.requests == []


def test_fetch_errors_retry_and_a_missing_order_fails(client, bc, bigcommerce_api):
    bigcommerce_api.status_override = 503
    notify(client, "store/order/created", 250)
    drain_all()
    event = InboundEvent.objects.get()
    assert (event.status, event.attempts, event.error_code) == ("pending", 1, "fetch_failed")
    assert event.next_attempt_at > event.received_at

    bigcommerce_api.status_override = None  # the order does not exist: 404 is final
    InboundEvent.objects.update(next_attempt_at=event.received_at)
    drain_all()
    event.refresh_from_db()
    assert (event.status, event.error_code) == ("failed", "fetch_failed")


def test_bigcommerce_signature_uses_the_secret_as_utf8_and_rejects_stale(client, bc):
    body = b'{"scope": "store/order/created", "data": {"type": "order", "id": 1}}'
    stale = standard_headers(body, key=BC_SECRET.encode(), timestamp=int(time.time()) - 400)
    assert post_webhook(client, "bc", None, stale, raw=body).status_code == 401
    wrong = standard_headers(body, key=b"other")
    assert post_webhook(client, "bc", None, wrong, raw=body).status_code == 401
    assert InboundEvent.objects.count() == 0
