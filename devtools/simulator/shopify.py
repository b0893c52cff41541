"""Shopify, as the simulator imitates it.

- POST .../admin/api/{version}/inventory_levels/set.json {"location_id", "inventory_item_id",
  "available"} sets a level; GET .../admin/api/{version}/inventory_levels.json?inventory_item_ids=
  reads levels back (reconciliation).
- Authenticated by `X-Shopify-Access-Token`; a simulated 429 carries `Retry-After` in float
  seconds, as Shopify's REST API does.
- A store registered with `echo` (POST /_sim/stores) sends `inventory_levels/update` back to its
  webhook URL after each set, as the real one notifies the app of the change it caused.
- Order webhooks: `orders/create`, signed with `X-Shopify-Hmac-Sha256` (base64 HMAC-SHA256 of the
  raw body with the app's secret).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime

from devtools.simulator.core import Marketplace, Route, b64_hmac, deliver, num, register


def inventory_levels_set(req, store, match, body):
    if not isinstance(body, dict) or not isinstance(body.get("available"), int) or \
            body.get("inventory_item_id") is None or body.get("location_id") is None:
        req.answer(422, {"errors": {"available": ["must be an integer"]}})
        return 1
    item, location = str(body["inventory_item_id"]), str(body["location_id"])
    if req.item_error(store, item):
        req.answer(422, {"errors": ["Inventory item does not have inventory tracking enabled"]})
        return 1
    req.state.set_level(store, "shopify", item, body["available"])
    with req.state.lock:
        req.state.store(store).details.setdefault("locations", {})[item] = location
    updated = datetime.now(UTC).isoformat()
    level = {"inventory_item_id": body["inventory_item_id"], "location_id": body["location_id"],
             "available": body["available"], "updated_at": updated}
    req.answer(200, {"inventory_level": level})
    _maybe_echo(req.state, store, level)
    return 1


def inventory_levels_get(req, store, match, body):
    ids = [i for i in req.query.get("inventory_item_ids", "").split(",") if i]
    s = req.state.store(store, "shopify")
    with req.state.lock:
        rows = [{"inventory_item_id": int(i) if i.isdigit() else i,
                 "location_id": num(s.details.get("locations", {}).get(i, req.query.get("location_ids", ""))),
                 "available": s.levels[i]} for i in ids if i in s.levels]
    req.answer(200, {"inventory_levels": rows})
    return len(rows)


def _maybe_echo(state, store: str, level: dict) -> None:
    s = state.store(store)
    if not (s.echo and s.webhook_url and s.secret):
        return
    body = json.dumps(level).encode()
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": "inventory_levels/update",
               "X-Shopify-Hmac-Sha256": b64_hmac(s.secret.encode(), body),
               "X-Shopify-Webhook-Id": str(uuid.uuid4()), "X-Shopify-Event-Id": str(uuid.uuid4()),
               "X-Shopify-Shop-Domain": f"{store}.myshopify.com", "X-Shopify-API-Version": "2024-01",
               "X-Shopify-Triggered-At": datetime.now(UTC).isoformat()}
    threading.Thread(target=deliver, args=(s.webhook_url, body, headers), daemon=True).start()


def order_webhook(state, *, store, order_id, lines, now, topic, secret):
    stamp = now.isoformat()
    items = [{"id": order_id * 100 + n, "variant_id": num(line.get("variant_id") or line.get("external_id") or n),
              "product_id": num(line.get("product_id") or n), "sku": line.get("sku") or "",
              "quantity": int(line["quantity"]), "title": line.get("sku") or "item", "fulfillment_status": None,
              "gift_card": False} for n, line in enumerate(lines, 1)]
    payload = {"id": order_id, "name": f"#{order_id}", "created_at": stamp, "line_items": items}
    headers = {"X-Shopify-Topic": topic or "orders/create", "X-Shopify-Webhook-Id": str(uuid.uuid4()),
               "X-Shopify-Event-Id": str(uuid.uuid4()), "X-Shopify-Shop-Domain": f"{store}.myshopify.com",
               "X-Shopify-API-Version": "2024-01", "X-Shopify-Triggered-At": stamp}
    raw = json.dumps(payload).encode()
    headers["X-Shopify-Hmac-Sha256"] = b64_hmac(secret.encode(), raw)
    return raw, headers


SHOPIFY = register(Marketplace(
    kind="shopify",
    routes=(
        Route("POST", re.compile(r"^/admin/api/[^/]+/inventory_levels/set\.json$"), inventory_levels_set),
        Route("GET", re.compile(r"^/admin/api/[^/]+/inventory_levels\.json$"), inventory_levels_get),
    ),
    authorized=lambda headers: bool(headers.get("X-Shopify-Access-Token")),
    rate_limit_headers=lambda seconds: {"Retry-After": f"{seconds:.1f}"},  # Shopify: float seconds
    order_webhook=order_webhook,
))
