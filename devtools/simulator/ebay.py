"""eBay, as the simulator imitates it.

- POST .../sell/inventory/v1/bulk_update_price_quantity {"requests": [{"sku",
  "shipToLocationAvailability": {"quantity"}, "offers": [{"offerId", "availableQuantity"}]}]}
  (1 to 25; more is a 400): a per-item `statusCode` in `responses`, and the call answers 207 when
  some failed. A listing (offerId) takes at most 250 revisions per day ("Each listing can be
  revised up to 250 times in one calendar day"); beyond, its item answers statusCode 400 with an
  error saying so. eBay documents the rule but not that error: the simulator's errorId (25002) is
  its own choice, and its message names the limit (which is what the adapter recognises). POST /_sim/ebay {"store",
  "revision_limit": n, "next_day": true} lowers the limit (tests exhaust it) and starts the next day.
- POST .../sell/inventory/v1/bulk_get_inventory_item {"requests": [{"sku"}]} reads levels back.
- Authenticated with an OAuth `Bearer` token. No order webhooks (orders are polled).
- GET .../sell/fulfillment/v1/order?filter=lastmodifieddate:[<from>..<to>?]&limit=&offset= (Fulfillment
  API getOrders) serves the store's order book: orders oldest-created first, `limit` 1-200
  (default 50; the book's `page_size` caps it to test paging), `total`, `href`, `next`/`prev`
  while there are pages; `creationdate:[..]` filters too (and wins over lastmodifieddate, as
  documented); 400 for a malformed filter or limit. With the book's `token` set, any other
  Bearer token is a 401. Orders are Order objects with the fields the adapter reads (orderId,
  creationDate, lastModifiedDate, orderFulfillmentStatus, orderPaymentStatus, cancelStatus,
  paymentSummary.refunds, lineItems[] with lineItemId, sku, quantity, lineItemFulfillmentStatus,
  refunds).
- Order book (core.order_book_apply, POST /_sim/order-book): "create" {"lines": [{"sku",
  "quantity"}], "order_id"?, "at"?}; "cancel" (CANCELED, FULLY_REFUNDED with a refund), "refund"
  {"partial"?: true} (FULLY_REFUNDED, or PARTIALLY_REFUNDED with a line refund), "ship"
  (FULFILLED); each sets lastModifiedDate to "at" or now.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from urllib.parse import urlencode

from devtools.simulator.core import (
    Marketplace,
    Route,
    order_book,
    order_book_page_served,
    order_book_time,
    register,
)

REVISIONS_PER_DAY = 250  # "Each listing can be revised up to 250 times in one calendar day"


def _revisions(state, store: str) -> dict:
    """The store's revision counts per listing for the current simulated day (call under
    state.lock). The day is the UTC date plus `day_offset` (POST /_sim/ebay {"next_day": true})."""
    book = state.store(store).details.setdefault("revisions", {"limit": REVISIONS_PER_DAY, "day_offset": 0,
                                                                 "day": None, "counts": {}})
    day = f"{datetime.now(UTC).date()}+{book['day_offset']}"
    if book["day"] != day:
        book["day"], book["counts"] = day, {}
    return book


def bulk_update_price_quantity(req, store, match, body):
    reqs = (body or {}).get("requests") if isinstance(body, dict) else None
    if not isinstance(reqs, list) or not reqs or len(reqs) > 25:
        req.answer(400, {"errors": [{"errorId": 25709, "domain": "API_INVENTORY", "category": "REQUEST",
                                     "message": "requests must hold 1 to 25 items"}]})
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
        listing = str(offer_id or sku)
        with req.state.lock:
            revisions = _revisions(req.state, store)
            refused = revisions["limit"] is not None and revisions["counts"].get(listing, 0) >= revisions["limit"]
            if not refused:
                revisions["counts"][listing] = revisions["counts"].get(listing, 0) + 1
        if refused:  # eBay documents the rule, not this error: see the module docstring
            all_ok = False
            responses.append({"statusCode": 400, "sku": sku, "offerId": offer_id, "errors": [
                {"errorId": 25002, "domain": "API_INVENTORY", "category": "REQUEST",
                 "message": f"This listing has been revised the maximum number of times ({revisions['limit']}) "
                            "allowed in one calendar day. It can be revised again on the next calendar day."}]})
            continue
        req.state.set_level(store, "ebay", offer_id or sku, quantity)
        with req.state.lock:
            req.state.store(store).details.setdefault("skus", {})[sku] = quantity
        responses.append({"statusCode": 200, "sku": sku, "offerId": offer_id})
    req.answer(200 if all_ok else 207, {"responses": responses})
    return len(reqs)


def control(state, body):
    """POST /_sim/ebay {"store", "revision_limit"?: n | null, "next_day"?: true}: the revisions a
    listing takes per day (null: unlimited) and moving to the next day (counts start again).
    Answers the limit, the day and the revisions counted per listing (offerId) today."""
    store = body.get("store") or "default"
    state.store(store, "ebay")
    with state.lock:
        revisions = _revisions(state, store)
        if "revision_limit" in body:
            limit = body["revision_limit"]
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise ValueError("revision_limit must be a non-negative integer or null")
            revisions["limit"] = limit
        if body.get("next_day"):
            revisions["day_offset"] += 1
            revisions = _revisions(state, store)
        return {"store": store, "revision_limit": revisions["limit"], "day": revisions["day"],
                "revisions": dict(revisions["counts"])}


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


# ---------------------------------------------------------------------- orders (Fulfillment API)


def _stamp(when: datetime) -> str:
    """eBay's timestamp format: [YYYY]-[MM]-[DD]T[hh]:[mm]:[ss].[sss]Z, UTC."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _error(req, status: int, message: str) -> int:
    req.answer(status, {"errors": [{"errorId": 30500, "domain": "API_FULFILLMENT", "category": "REQUEST",
                                    "message": message}]})
    return 0


FILTER = re.compile(r"^(?P<field>creationdate|lastmodifieddate):\[(?P<start>[^.\]]+(?:\.\d+)?Z?)\.\.(?P<end>[^\]]*)\]$")


def get_orders(req, store, match, body):
    with req.state.lock:
        book = order_book(req.state, store)
        expected = book["token"]
        cap = book["page_size"]
    if expected and req.headers.get("Authorization") != f"Bearer {expected}":
        req.answer(401, {"errors": [{"errorId": 1001, "domain": "OAuth", "category": "REQUEST",
                                     "message": "Invalid access token"}]})
        return 0
    ranges = {}
    for criterion in filter(None, (req.query.get("filter") or "").split(",")):
        found = FILTER.match(criterion.strip())
        if not found:
            return _error(req, 400, f"Invalid filter: {criterion}")
        try:
            ranges[found["field"]] = (_parse(found["start"]), _parse(found["end"]) if found["end"] else None)
        except ValueError:
            return _error(req, 400, f"Invalid date in filter: {criterion}")
    try:
        limit = int(req.query.get("limit") or 50)
        offset = int(req.query.get("offset") or 0)
    except ValueError:
        return _error(req, 400, "limit and offset must be integers")
    if not 1 <= limit <= 200 or offset < 0:
        return _error(req, 400, "limit must be 1 to 200 and offset at least 0")
    limit = min(limit, int(cap)) if cap else limit
    # "If creationdate and lastmodifieddate are both included, only creationdate is used."
    field, (start, end) = next(((f, ranges[f]) for f in ("creationdate", "lastmodifieddate") if f in ranges),
                               (None, (None, None)))
    key = {"creationdate": "creationDate", "lastmodifieddate": "lastModifiedDate"}.get(field or "")
    with req.state.lock:
        orders = sorted(book["orders"].values(), key=lambda o: (o["creationDate"], o["orderId"]))
        if key:
            orders = [o for o in orders if _parse(o[key]) >= start and (end is None or _parse(o[key]) <= end)]
        page = copy.deepcopy(orders[offset:offset + limit])
    base = f"/sell/fulfillment/v1/order?{urlencode({'filter': req.query.get('filter') or ''})}" \
        if req.query.get("filter") else "/sell/fulfillment/v1/order?"
    answer = {"href": f"{base}&limit={limit}&offset={offset}", "limit": limit, "offset": offset,
              "total": len(orders), "orders": page, "warnings": []}
    if offset + limit < len(orders):
        answer["next"] = f"{base}&limit={limit}&offset={offset + limit}"
    if offset > 0:
        answer["prev"] = f"{base}&limit={limit}&offset={max(offset - limit, 0)}"
    order_book_page_served(req.state, store)
    req.answer(200, answer)
    return len(page)


def order_book_change(state, *, store, body):
    action = body.get("action")
    when = order_book_time(body)
    stamp = _stamp(when)
    with state.lock:
        book = order_book(state, store)
        if action == "create":
            lines = body.get("lines") or []
            if not lines or not all(isinstance(line, dict) and int(line.get("quantity") or 0) > 0 for line in lines):
                raise ValueError("lines must be a non-empty list of {sku, quantity > 0}.")
            state.order_seq += 1
            seq = state.order_seq
            order_id = str(body.get("order_id") or f"{seq % 100:02d}-{seq:05d}-{seq * 7 % 100000:05d}")
            if order_id in book["orders"]:
                raise ValueError(f"order {order_id} exists")
            book["orders"][order_id] = {
                "orderId": order_id, "legacyOrderId": f"{seq}000-{seq}", "creationDate": stamp,
                "lastModifiedDate": stamp, "orderFulfillmentStatus": "NOT_STARTED", "orderPaymentStatus": "PAID",
                "sellerId": store, "buyer": {"username": "sim-buyer"},
                "cancelStatus": {"cancelState": "NONE_REQUESTED", "cancelRequests": []},
                "paymentSummary": {"payments": [{"paymentMethod": "EBAY", "paymentStatus": "PAID",
                                                 "paymentDate": stamp}], "refunds": []},
                "lineItems": [{"lineItemId": str(seq * 100 + n), "legacyItemId": str(110000000000 + seq),
                               "sku": str(line.get("sku") or ""), "title": str(line.get("sku") or "item"),
                               "quantity": int(line["quantity"]), "soldFormat": "FIXED_PRICE",
                               "lineItemFulfillmentStatus": "NOT_STARTED", "refunds": [],
                               "listingMarketplaceId": "EBAY_US", "purchaseMarketplaceId": "EBAY_US"}
                              for n, line in enumerate(lines, 1)],
            }
            return {"order_id": order_id, "order": copy.deepcopy(book["orders"][order_id])}
        order = book["orders"].get(str(body.get("order_id")))
        if order is None:
            raise ValueError(f"no order {body.get('order_id')}")
        refund = {"refundId": f"R{len(order['paymentSummary']['refunds']) + 1}-{order['orderId']}",
                  "refundStatus": "REFUNDED", "refundDate": stamp, "refundReferenceId": stamp,
                  "amount": {"value": "1.00", "currency": "USD"}}
        if action == "cancel":
            order["cancelStatus"] = {"cancelState": "CANCELED", "cancelledDate": stamp, "cancelRequests": []}
            order["orderPaymentStatus"] = "FULLY_REFUNDED"
            order["paymentSummary"]["refunds"].append(refund)
        elif action == "refund" and body.get("partial"):
            order["orderPaymentStatus"] = "PARTIALLY_REFUNDED"
            order["lineItems"][0]["refunds"].append({k: refund[k] for k in ("refundId", "refundDate", "amount")})
        elif action == "refund":
            order["orderPaymentStatus"] = "FULLY_REFUNDED"
            order["paymentSummary"]["refunds"].append(refund)
        elif action == "ship":
            order["orderFulfillmentStatus"] = "FULFILLED"
            for line in order["lineItems"]:
                line["lineItemFulfillmentStatus"] = "FULFILLED"
        else:
            raise ValueError(f"unknown action {action!r}")
        order["lastModifiedDate"] = stamp
        return {"order_id": order["orderId"], "order": copy.deepcopy(order)}


EBAY = register(Marketplace(
    kind="ebay",
    routes=(
        Route("POST", re.compile(r"^/sell/inventory/v1/bulk_update_price_quantity$"), bulk_update_price_quantity),
        Route("POST", re.compile(r"^/sell/inventory/v1/bulk_get_inventory_item$"), bulk_get_inventory_item),
        Route("GET", re.compile(r"^/sell/fulfillment/v1/order$"), get_orders),
    ),
    authorized=lambda headers: (headers.get("Authorization") or "").startswith("Bearer "),
    order_book=order_book_change,
    control=control,
))
