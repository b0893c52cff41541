"""Amazon (Selling Partner API, Listings Items 2021-08-01), as the simulator imitates it.

- PATCH .../listings/2021-08-01/items/{seller}/{sku}?marketplaceIds= {"productType", "patches":
  [{"op": "replace", "path": "/attributes/fulfillment_availability", "value":
  [{"fulfillment_channel_code": "DEFAULT", "quantity"}]}]}: a 200 whose `status` is ACCEPTED, or
  INVALID with `issues` (a bad patch, no productType or marketplaceIds, the `item_errors` fault).
- GET .../listings/2021-08-01/items/{seller}/{sku}?includedData=fulfillmentAvailability reads the
  level back (404 for a SKU never set).
- Authenticated by `x-amz-access-token`. No order webhooks (orders are polled).
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote

from devtools.simulator.core import Marketplace, Route, register


def listings_item_patch(req, store, match, body):
    sku = unquote(match["sku"])
    patches = (body or {}).get("patches") if isinstance(body, dict) else None
    quantity = None
    for patch in patches or []:
        if patch.get("path") == "/attributes/fulfillment_availability":
            for value in patch.get("value") or []:
                if value.get("fulfillment_channel_code") == "DEFAULT":
                    quantity = value.get("quantity")
    submission = uuid.uuid4().hex
    if not isinstance(quantity, int) or not (body or {}).get("productType") or req.item_error(store, sku) \
            or not req.query.get("marketplaceIds"):
        req.answer(200, {"sku": sku, "status": "INVALID", "submissionId": submission, "issues": [
            {"code": "90220", "message": "The listing or attribute is invalid.", "severity": "ERROR"}]})
        return 1
    req.state.set_level(store, "amazon", sku, quantity)
    req.answer(200, {"sku": sku, "status": "ACCEPTED", "submissionId": submission, "issues": []})
    return 1


def listings_item_get(req, store, match, body):
    sku = unquote(match["sku"])
    s = req.state.store(store, "amazon")
    with req.state.lock:
        if sku not in s.levels:
            req.answer(404, {"errors": [{"code": "NOT_FOUND", "message": "Listing not found"}]})
            return 0
        quantity = s.levels[sku]
    req.answer(200, {"sku": sku, "fulfillmentAvailability": [
        {"fulfillmentChannelCode": "DEFAULT", "quantity": quantity}]})
    return 1


ITEM = re.compile(r"^/listings/2021-08-01/items/(?P<seller>[^/]+)/(?P<sku>[^/]+)$")
AMAZON = register(Marketplace(
    kind="amazon",
    routes=(Route("PATCH", ITEM, listings_item_patch), Route("GET", ITEM, listings_item_get)),
    authorized=lambda headers: bool(headers.get("x-amz-access-token")),
))
