"""WooCommerce, as the simulator imitates it.

- POST .../wp-json/wc/v3/products/batch and .../products/{parent}/variations/batch
  {"update": [{"id", "stock_quantity", "manage_stock"}]} (at most 100 objects over create, update
  and delete; more is refused whole with 413 `woocommerce_rest_request_entity_too_large`, as
  WC_REST_Controller::check_batch_limit answers): an item whose id is not a
  number, or is named by the `item_errors` fault, gets a per-item `{"id", "error"}` inside the 200
  while the others are applied, as WooCommerce's batch endpoint answers.
- GET .../wp-json/wc/v3/products[/{parent}/variations]?include=ids reads levels back.
- Authenticated with HTTP Basic (consumer key and secret).
- Order webhooks: `order.created`, signed with `X-WC-Webhook-Signature` (base64 HMAC-SHA256 of the
  raw body with the webhook's secret).
"""

from __future__ import annotations

import json
import re
import uuid

from devtools.simulator.core import Marketplace, Route, b64_hmac, num, register

BATCH_LIMIT = 100  # woocommerce_rest_batch_items_limit's default


def products_batch(req, store, match, body):
    body = body if isinstance(body, dict) else {}
    updates = body.get("update")
    if not isinstance(updates, list):
        req.answer(400, {"code": "rest_invalid_param", "message": "Invalid parameter(s): update",
                         "data": {"status": 400, "params": {"update": "update is not of type array."}}})
        return 0
    total = sum(len(body.get(name) or []) for name in ("create", "update", "delete")
                if isinstance(body.get(name), list))
    if total > BATCH_LIMIT:  # WC_REST_Controller::check_batch_limit
        req.answer(413, {"code": "woocommerce_rest_request_entity_too_large",
                         "message": f"Unable to accept more than {BATCH_LIMIT} items for this request.",
                         "data": {"status": 413}})
        return 0
    answered = []
    for entry in updates:
        pid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(pid, int) or req.item_error(store, pid) or not isinstance(
                entry.get("stock_quantity"), int):
            answered.append({"id": pid if isinstance(pid, int) else 0, "error": {
                "code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.", "data": {"status": 400}}})
            continue
        req.state.set_level(store, "woocommerce", pid, entry["stock_quantity"])
        answered.append({"id": pid, "stock_quantity": entry["stock_quantity"], "manage_stock": True,
                         "parent_id": int(match["parent"]) if match["parent"] else 0})
    req.answer(200, {"update": answered})
    return len(updates)


def products_get(req, store, match, body):
    ids = [i for i in req.query.get("include", "").split(",") if i]
    s = req.state.store(store, "woocommerce")
    with req.state.lock:
        rows = [{"id": int(i), "stock_quantity": s.levels[i], "manage_stock": True} for i in ids if i in s.levels]
    req.answer(200, rows)
    return len(rows)


def order_webhook(state, *, store, order_id, lines, now, topic, secret):
    items = [{"id": order_id * 100 + n, "product_id": num(line.get("product_id") or line.get("external_id") or n),
              "variation_id": num(line.get("variation_id") or 0), "sku": line.get("sku") or "",
              "quantity": int(line["quantity"])} for n, line in enumerate(lines, 1)]
    payload = {"id": order_id, "number": str(order_id), "status": "processing",
               "date_created_gmt": now.strftime("%Y-%m-%dT%H:%M:%S"), "line_items": items}
    headers = {"X-WC-Webhook-Topic": topic or "order.created", "X-WC-Webhook-Resource": "order",
               "X-WC-Webhook-Event": "created", "X-WC-Webhook-ID": "1",
               "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex, "X-WC-Webhook-Source": f"https://{store}.example/"}
    raw = json.dumps(payload).encode()
    headers["X-WC-Webhook-Signature"] = b64_hmac(secret.encode(), raw)
    return raw, headers


WOOCOMMERCE = register(Marketplace(
    kind="woocommerce",
    routes=(
        Route("POST", re.compile(r"^/wp-json/wc/v3/products(?:/(?P<parent>\d+)/variations)?/batch$"), products_batch),
        Route("GET", re.compile(r"^/wp-json/wc/v3/products(?:/(?P<parent>\d+)/variations)?$"), products_get),
    ),
    authorized=lambda headers: (headers.get("Authorization") or "").startswith("Basic "),
    order_webhook=order_webhook,
))
