"""BigCommerce, as the simulator imitates it.

- PUT .../stores/{hash}/v3/inventory/adjustments/absolute {"reason", "items": [{"location_id",
  "variant_id", "quantity"}]}: all or nothing, one invalid item fails the whole request (422); more
  than 2,000 items (the documented payload limit) is refused whole, also 422 (the docs name the
  limit, not the answer: 422 is the endpoint's documented refusal).
- GET .../stores/{hash}/v3/inventory/items?variant_id:in=&location_id:in= reads levels back.
- Authenticated by `X-Auth-Token`; a simulated 429 carries `X-Rate-Limit-Time-Reset-Ms`.
- Order webhooks are thin (`store/order/created` with the order id only), signed as Standard
  Webhooks with the secret's UTF-8 bytes as key; the receiver then fetches
  GET .../stores/{hash}/v2/orders/{id}/products (paged with `limit`/`page`, 204 past the end),
  which the simulator answers for the orders it sent.
"""

from __future__ import annotations

import json
import re
import uuid

from devtools.simulator.core import Marketplace, Route, num, register, standard_webhooks_headers

MAX_ADJUSTMENT_ITEMS = 2000  # "Limit of 2000 items for payload length"


def inventory_absolute(req, store, match, body):
    items = (body or {}).get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        req.answer(422, {"status": 422, "title": "items are required"})
        return 0
    if len(items) > MAX_ADJUSTMENT_ITEMS:  # the documented limit; the documented refusal status
        req.answer(422, {"status": 422, "title": f"Limit of {MAX_ADJUSTMENT_ITEMS} items for payload length",
                         "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes",
                         "errors": {}})
        return 0
    bad = [i for i in items if not isinstance(i, dict) or not isinstance(i.get("quantity"), int)
           or i.get("variant_id") is None or req.item_error(store, i.get("variant_id"))]
    if bad:
        req.answer(422, {"status": 422, "title": "Invalid items", "errors": {"items": f"{len(bad)} invalid"}})
        return len(items)
    for item in items:
        req.state.set_level(store, "bigcommerce", item["variant_id"], item["quantity"])
    req.answer(200, {"transaction_id": str(uuid.uuid4())})
    return len(items)


def inventory_items(req, store, match, body):
    ids = [i for i in req.query.get("variant_id:in", "").split(",") if i]
    location = req.query.get("location_id:in", "1")
    s = req.state.store(store, "bigcommerce")
    with req.state.lock:
        data = [{"identity": {"variant_id": num(i)},
                 "locations": [{"location_id": num(location), "total_inventory_onhand": s.levels[i],
                                "available_to_sell": s.levels[i]}]} for i in ids if i in s.levels]
    req.answer(200, {"data": data, "meta": {}})
    return len(data)


def order_products(req, store, match, body):
    with req.state.lock:
        products = req.state.orders.get((store, match["order"]))
    if products is None:
        req.answer(404, [{"status": 404, "message": "The requested resource was not found."}])
        return 0
    limit = int(req.query.get("limit") or 50)
    page = int(req.query.get("page") or 1)
    rows = products[(page - 1) * limit: page * limit]
    if not rows:
        req.answer(204)
        return 0
    req.answer(200, rows)
    return len(rows)


def order_webhook(state, *, store, order_id, lines, now, topic, secret):
    products = [{"id": order_id * 100 + n, "order_id": order_id,
                 "product_id": num(line.get("product_id") or n),
                 "variant_id": num(line.get("variant_id") or line.get("external_id") or n),
                 "sku": line.get("sku") or "", "name": line.get("sku") or "item",
                 "quantity": int(line["quantity"])} for n, line in enumerate(lines, 1)]
    payload = {"scope": topic or "store/order/created", "store_id": "1001", "created_at": int(now.timestamp()),
               "producer": f"stores/{store}", "hash": uuid.uuid4().hex,
               "data": {"type": "order", "id": order_id}}
    raw = json.dumps(payload).encode()
    headers = standard_webhooks_headers(f"msg_{uuid.uuid4().hex}", secret.encode(), now, raw)
    with state.lock:  # what GET .../v2/orders/{id}/products answers
        state.orders[(store, str(order_id))] = products
    return raw, headers


BIGCOMMERCE = register(Marketplace(
    kind="bigcommerce",
    routes=(
        Route("PUT", re.compile(r"^/stores/(?P<hash>[^/]+)/v3/inventory/adjustments/absolute$"), inventory_absolute),
        Route("GET", re.compile(r"^/stores/(?P<hash>[^/]+)/v3/inventory/items$"), inventory_items),
        Route("GET", re.compile(r"^/stores/(?P<hash>[^/]+)/v2/orders/(?P<order>\d+)/products$"), order_products),
    ),
    authorized=lambda headers: bool(headers.get("X-Auth-Token")),
    rate_limit_headers=lambda seconds: {"X-Rate-Limit-Time-Reset-Ms": str(int(seconds * 1000)),
                                        "X-Rate-Limit-Requests-Left": "0"},
    order_webhook=order_webhook,
))
