"""eBay, as the simulator imitates it.

- POST .../sell/inventory/v1/bulk_update_price_quantity {"requests": [{"sku",
  "shipToLocationAvailability": {"quantity"}, "offers": [{"offerId", "availableQuantity"}]}]}
  (1 to 25): a per-item `statusCode` in `responses`, and the call answers 207 when some failed.
- POST .../sell/inventory/v1/bulk_get_inventory_item {"requests": [{"sku"}]} reads levels back.
- Authenticated with an OAuth `Bearer` token. No order webhooks (orders are polled).
"""

from __future__ import annotations

import re

from devtools.simulator.core import Marketplace, Route, register


def bulk_update_price_quantity(req, store, match, body):
    reqs = (body or {}).get("requests") if isinstance(body, dict) else None
    if not isinstance(reqs, list) or not reqs or len(reqs) > 25:
        req.answer(400, {"errors": [{"errorId": 25709, "message": "requests must hold 1 to 25 items"}]})
        return 0
    responses, all_ok = [], True
    for entry in reqs:
        sku = entry.get("sku")
        offers = entry.get("offers") or []
        offer_id = offers[0].get("offerId") if offers else None
        quantity = (entry.get("shipToLocationAvailability") or {}).get("quantity")
        if not sku or not isinstance(quantity, int) or req.item_error(store, offer_id or sku):
            all_ok = False
            responses.append({"statusCode": 400, "sku": sku, "offerId": offer_id, "errors": [
                {"errorId": 25702, "message": "The SKU or offer does not exist."}]})
            continue
        req.state.set_level(store, "ebay", offer_id or sku, quantity)
        with req.state.lock:
            req.state.store(store).details.setdefault("skus", {})[sku] = quantity
        responses.append({"statusCode": 200, "sku": sku, "offerId": offer_id})
    req.answer(200 if all_ok else 207, {"responses": responses})
    return len(reqs)


def bulk_get_inventory_item(req, store, match, body):
    reqs = (body or {}).get("requests") if isinstance(body, dict) else []
    s = req.state.store(store, "ebay")
    out = []
    with req.state.lock:
        skus = s.details.get("skus", {})
        for entry in reqs or []:
            sku = entry.get("sku")
            if sku in skus:
                out.append({"statusCode": 200, "sku": sku, "inventoryItem": {
                    "sku": sku, "availability": {"shipToLocationAvailability": {"quantity": skus[sku]}}}})
            else:
                out.append({"statusCode": 404, "sku": sku, "errors": [{"errorId": 25710, "message": "Not found"}]})
    req.answer(200, {"responses": out})
    return len(out)


EBAY = register(Marketplace(
    kind="ebay",
    routes=(
        Route("POST", re.compile(r"^/sell/inventory/v1/bulk_update_price_quantity$"), bulk_update_price_quantity),
        Route("POST", re.compile(r"^/sell/inventory/v1/bulk_get_inventory_item$"), bulk_get_inventory_item),
    ),
    authorized=lambda headers: (headers.get("Authorization") or "").startswith("Bearer "),
))
