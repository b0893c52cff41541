"""Amazon (Selling Partner API, Listings Items 2021-08-01), as the simulator imitates it.

- PATCH .../listings/2021-08-01/items/{seller}/{sku}?marketplaceIds= {"productType", "patches":
  [{"op": "replace", "path": "/attributes/fulfillment_availability", "value":
  [{"fulfillment_channel_code": "DEFAULT", "quantity"}]}]} (op replace or merge): a 200 whose `status` is ACCEPTED, or
  INVALID with `issues` (a bad patch, no productType or marketplaceIds, the `item_errors` fault).
- GET .../listings/2021-08-01/items/{seller}/{sku}?includedData=fulfillmentAvailability reads the
  level back (404 for a SKU never set).
- Feeds API 2021-06-30, JSON_LISTINGS_FEED only: POST .../feeds/2021-06-30/documents
  {"contentType"} -> 201 {"feedDocumentId", "url"}: the url is the simulator's own "presigned"
  URL (.../amazon-documents/{id}?X-Amz-Signature=...), which takes a PUT of the document with the
  same Content-Type and no SP-API token (else 403 SignatureDoesNotMatch, as S3 answers);
  POST .../feeds/2021-06-30/feeds {"feedType", "marketplaceIds", "inputFeedDocumentId"} -> 202
  {"feedId"} (400 InvalidInput for a document never uploaded); GET .../feeds/2021-06-30/feeds/{id}
  moves the feed on with each call: IN_QUEUE, IN_PROGRESS, then it is processed (valid messages
  applied) and DONE, with `resultFeedDocumentId`; GET .../feeds/2021-06-30/documents/{id} gives
  the report's URL (`compressionAlgorithm: GZIP` when so configured). The processing report
  follows listings-feed-processing-report-schema-v2: an ERROR issue (code 90220) per refused
  message (no DEFAULT quantity, not a PATCH, a SKU named by the `item_errors` fault or by the
  feed settings), a summary with the counts. A document that is not a listings feed (or over
  10,000 messages) is FATAL. POST /_sim/amazon {"store", "feeds": {"in_queue_polls",
  "in_progress_polls", "fatal_next", "errors": {sku: message}, "gzip"}} sets how the next feeds go.
- Authenticated by `x-amz-access-token`. No order webhooks (orders are polled).
- GET .../orders/v0/orders?MarketplaceIds=&LastUpdatedAfter=|CreatedAfter=[&LastUpdatedBefore=]
  [&MaxResultsPerPage=1-100][&NextToken=] (Orders API v0 getOrders) serves the store's order
  book: {"payload": {"Orders", "NextToken"?, "LastUpdatedBefore"}} (now minus the book's
  `lag_seconds`), oldest purchase first; the book's `page_size` caps a page to test paging; a
  NextToken the store never issued, a missing MarketplaceIds or date filter is a 400
  InvalidInput. With the book's `token` set, any other x-amz-access-token is a 403.
- GET .../orders/v0/orders/{id}/orderItems[?NextToken=] (getOrderItems): {"payload":
  {"AmazonOrderId", "OrderItems": [{"OrderItemId", "SellerSKU", "ASIN", "QuantityOrdered",
  "QuantityShipped"}], "NextToken"?}} (the book's `page_size` pages them as well); 404 for an
  unknown order.
- Order book (core.order_book_apply, POST /_sim/order-book): "create" {"lines": [{"sku",
  "quantity"}], "order_id"?, "status"? (default Unshipped), "fulfillment_channel"? (MFN/AFN),
  "at"?}; "cancel" (Canceled), "ship" (Shipped), "status" {"status"}; each sets LastUpdateDate
  (whole seconds, as Amazon shows it) to "at" or now. "refund" is refused: the Orders API has no
  refunds.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from devtools.simulator.core import (
    Marketplace,
    Route,
    order_book,
    order_book_page_served,
    order_book_time,
    register,
)


def _quantity(patches) -> int | None:
    """The DEFAULT fulfillment channel's quantity a list of JSON patches sets (op replace, or merge:
    https://developer-docs.amazon.com/sp-api/docs/merge-a-listing), else None."""
    quantity = None
    for patch in patches if isinstance(patches, list) else []:
        if isinstance(patch, dict) and patch.get("path") == "/attributes/fulfillment_availability" \
                and patch.get("op") in ("add", "replace", "merge"):
            for value in patch.get("value") or []:
                if isinstance(value, dict) and value.get("fulfillment_channel_code") == "DEFAULT":
                    quantity = value.get("quantity")
    return quantity if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity >= 0 else None


def listings_item_patch(req, store, match, body):
    sku = unquote(match["sku"])
    patches = (body or {}).get("patches") if isinstance(body, dict) else None
    quantity = _quantity(patches)
    submission = uuid.uuid4().hex
    with req.state.lock:  # what each patch asked for, for tests (store.details["patches"])
        req.state.store(store, "amazon").details.setdefault("patches", []).append(
            {"sku": sku, "ops": [p.get("op") for p in patches or [] if isinstance(p, dict)], "quantity": quantity})
    if quantity is None or not (body or {}).get("productType") or req.item_error(store, sku) \
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


# ---------------------------------------------------------------------- feeds (Feeds API 2021-06-30)

FEED_TYPE = "JSON_LISTINGS_FEED"
MAX_MESSAGES = 10_000  # listings feed schema v2: messages maxItems


def _feeds(state, store: str) -> dict:
    """The store's feed documents, feeds and feed settings (call under state.lock)."""
    return state.store(store, "amazon").details.setdefault("feeds", {
        "documents": {}, "feeds": {}, "seq": 50000,
        "settings": {"in_queue_polls": 1, "in_progress_polls": 1, "fatal_next": 0, "errors": {}, "gzip": False}})


def _raw(req, status: int, raw: bytes, content_type: str) -> None:
    req.send_response(status)
    req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(raw)))
    req.end_headers()
    if raw:
        req.wfile.write(raw)
    req._status = status


def _stamp_ms(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def create_feed_document(req, store, match, body):
    content_type = (body or {}).get("contentType") if isinstance(body, dict) else None
    if not isinstance(content_type, str) or not content_type:
        return _invalid(req, "contentType is required.")
    document_id = f"amzn1.tortuga.4.na.{uuid.uuid4()}"
    token = uuid.uuid4().hex
    with req.state.lock:
        _feeds(req.state, store)["documents"][document_id] = {
            "kind": "input", "content_type": content_type, "content": None, "token": token}
    url = f"http://{req.headers.get('Host')}/s/{store}/amazon-documents/{document_id}?X-Amz-Signature={token}"
    req.answer(201, {"feedDocumentId": document_id, "url": url})
    return 1


def document_upload(req, store, match, body):
    """The presigned upload URL: a PUT of the document, with the Content-Type it was signed for."""
    document_id = unquote(match["document"])
    with req.state.lock:
        document = _feeds(req.state, store)["documents"].get(document_id)
        signed = document is not None and document["kind"] == "input" \
            and req.query.get("X-Amz-Signature") == document["token"] \
            and (req.headers.get("Content-Type") or "").lower() == document["content_type"].lower()
        if signed:
            document["content"] = req.raw_body
    if not signed:
        _raw(req, 403, b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated "
                       b"does not match the signature you provided.</Message></Error>", "application/xml")
        return 0
    _raw(req, 200, b"", "application/xml")
    return 1


def document_download(req, store, match, body):
    """The presigned download URL of a processing report."""
    document_id = unquote(match["document"])
    with req.state.lock:
        document = _feeds(req.state, store)["documents"].get(document_id)
    if document is None or document["kind"] != "report" or req.query.get("X-Amz-Signature") != document["token"]:
        _raw(req, 403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>", "application/xml")
        return 0
    _raw(req, 200, document["content"], "application/json")
    return 1


def create_feed(req, store, match, body):
    body = body if isinstance(body, dict) else {}
    markets = body.get("marketplaceIds")
    with req.state.lock:
        feeds = _feeds(req.state, store)
        document = feeds["documents"].get(str(body.get("inputFeedDocumentId")))
        if body.get("feedType") != FEED_TYPE:
            return _invalid(req, f"The simulator takes only {FEED_TYPE} feeds.")
        if not isinstance(markets, list) or not 1 <= len(markets) <= 25:
            return _invalid(req, "marketplaceIds must hold 1 to 25 marketplace ids.")
        if document is None or document["kind"] != "input" or document["content"] is None:
            return _invalid(req, "Invalid inputFeedDocumentId: no uploaded feed document.")
        feeds["seq"] += 1
        feed_id = str(feeds["seq"])
        config = feeds["settings"]
        fatal = config["fatal_next"] > 0
        if fatal:
            config["fatal_next"] -= 1
        feeds["feeds"][feed_id] = {
            "feedId": feed_id, "feedType": FEED_TYPE, "marketplaceIds": [str(m) for m in markets],
            "createdTime": _stamp_ms(datetime.now(UTC)), "processingStatus": "IN_QUEUE", "polls": 0,
            "document": document["content"], "fatal": fatal, "in_queue": int(config["in_queue_polls"]),
            "in_progress": int(config["in_progress_polls"]), "errors": dict(config["errors"]),
            "gzip": bool(config["gzip"])}
    req.answer(202, {"feedId": feed_id})
    return 1


def get_feed(req, store, match, body):
    """Each getFeed moves the feed on: IN_QUEUE, IN_PROGRESS (as many polls as configured when it
    was created), then it is processed (valid messages applied) and DONE (or FATAL)."""
    feed_id = unquote(match["feed"])
    with req.state.lock:
        feed = _feeds(req.state, store)["feeds"].get(feed_id)
        if feed is None:
            return _invalid(req, f"Feed {feed_id} not found.", status=404)
        if feed["processingStatus"] in ("IN_QUEUE", "IN_PROGRESS"):
            feed["polls"] += 1
            if feed["polls"] > feed["in_queue"]:
                feed["processingStatus"] = "IN_PROGRESS"
                feed.setdefault("processingStartTime", _stamp_ms(datetime.now(UTC)))
            if feed["polls"] > feed["in_queue"] + feed["in_progress"]:
                _process(req, store, feed)
        answer = {k: v for k, v in feed.items() if k in ("feedId", "feedType", "marketplaceIds", "createdTime",
                                                           "processingStatus", "processingStartTime",
                                                           "processingEndTime", "resultFeedDocumentId")}
    req.answer(200, answer)
    return 1


def _process(req, store: str, feed: dict) -> None:
    """Apply a feed's valid messages and write its processing report (under state.lock)."""
    issues, accepted, invalid, messages, seller = [], 0, 0, [], ""
    try:
        document = json.loads(feed["document"])
        messages, seller = document["messages"], str(document["header"]["sellerId"])
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
            raise ValueError(f"messages must hold 1 to {MAX_MESSAGES} items")
    except (ValueError, KeyError, TypeError) as exc:
        feed["fatal"], issues = True, [{"code": "4000001", "severity": "ERROR",
                                        "message": f"The feed document is not a valid listings feed: {exc}"}]
        messages = []
    if feed["fatal"] and not issues:
        issues = [{"code": "4000002", "severity": "ERROR", "message": "Feed processing was aborted (simulated)."}]
    for message in [] if feed["fatal"] else messages:
        sku = message.get("sku") if isinstance(message, dict) else None
        message_id = message.get("messageId") if isinstance(message, dict) else None
        quantity = _quantity(message.get("patches")) if isinstance(message, dict) else None
        injected = feed["errors"].get(str(sku)) or ("The listing or attribute is invalid."
                                                    if req.item_error(store, sku) else None)
        problem = ("sku and messageId are required" if not sku or not isinstance(message_id, int) else
                   "operationType must be PATCH with a productType" if message.get("operationType") != "PATCH"
                   or not message.get("productType") else
                   "'[fulfillment_availability]' needs a DEFAULT quantity" if quantity is None else injected)
        if problem:
            invalid += 1
            issues.append({"messageId": message_id, "sku": sku, "code": "90220", "severity": "ERROR",
                           "message": problem, "attributeName": "fulfillment_availability"})
            continue
        accepted += 1
        req.state.set_level(store, "amazon", sku, quantity)
    report = {"header": {"sellerId": seller, "version": "2.0", "feedId": feed["feedId"]}, "issues": issues,
              "summary": {"errors": len(issues), "warnings": 0, "messagesProcessed": accepted + invalid,
                          "messagesAccepted": accepted, "messagesInvalid": invalid}}
    raw = json.dumps(report).encode()
    report_id = f"amzn1.tortuga.4.na.{uuid.uuid4()}"
    _feeds(req.state, store)["documents"][report_id] = {
        "kind": "report", "content_type": "application/json", "token": uuid.uuid4().hex,
        "content": gzip.compress(raw) if feed["gzip"] else raw, "gzip": feed["gzip"], "report": report}
    feed.update(processingStatus="FATAL" if feed["fatal"] else "DONE", resultFeedDocumentId=report_id,
                processingEndTime=_stamp_ms(datetime.now(UTC)))


def get_feed_document(req, store, match, body):
    document_id = unquote(match["document"])
    with req.state.lock:
        document = _feeds(req.state, store)["documents"].get(document_id)
    if document is None:
        return _invalid(req, f"Feed document {document_id} not found.", status=404)
    answer = {"feedDocumentId": document_id,
              "url": f"http://{req.headers.get('Host')}/s/{store}/amazon-documents/{document_id}"
                     f"?X-Amz-Signature={document['token']}"}
    if document.get("gzip"):
        answer["compressionAlgorithm"] = "GZIP"
    req.answer(200, answer)
    return 1


def control(state, body):
    """POST /_sim/amazon {"store", "feeds": {"in_queue_polls"?, "in_progress_polls"?, "fatal_next"?,
    "errors"?: {seller SKU: message}, "gzip"?}}: how the next feeds progress (getFeed calls spent
    IN_QUEUE, then IN_PROGRESS), how many are aborted FATAL, which SKUs their reports refuse, and
    whether reports are GZIP-compressed. Answers the settings and the feeds so far."""
    store = body.get("store") or "default"
    with state.lock:
        feeds = _feeds(state, store)
        wanted = body.get("feeds") or {}
        if not isinstance(wanted, dict):
            raise ValueError("feeds must be an object")
        for name in ("in_queue_polls", "in_progress_polls", "fatal_next"):
            if name in wanted:
                if not isinstance(wanted[name], int) or wanted[name] < 0:
                    raise ValueError(f"{name} must be a non-negative integer")
                feeds["settings"][name] = wanted[name]
        if "errors" in wanted:
            feeds["settings"]["errors"] = {str(k): str(v) for k, v in (wanted["errors"] or {}).items()}
        if "gzip" in wanted:
            feeds["settings"]["gzip"] = bool(wanted["gzip"])
        return {"store": store, "feeds": dict(feeds["settings"]),
                "submitted": [{"feedId": f["feedId"], "processingStatus": f["processingStatus"],
                               "messages": len(json.loads(f["document"]).get("messages") or [])
                               if f["document"] else 0} for f in feeds["feeds"].values()]}


# ---------------------------------------------------------------------- orders (Orders API v0)

STATUSES = ("Pending", "Unshipped", "PartiallyShipped", "Shipped", "Canceled", "Unfulfillable", "InvoiceUnconfirmed",
            "PendingAvailability")


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str) -> datetime:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _invalid(req, message: str, status: int = 400) -> int:
    req.answer(status, {"errors": [{"code": "InvalidInput" if status == 400 else "NotFound", "message": message}]})
    return 0


def _token_ok(req, book) -> bool:
    if book["token"] and req.headers.get("x-amz-access-token") != book["token"]:
        req.answer(403, {"errors": [{"code": "Unauthorized", "message": "Access to requested resource is denied.",
                                     "details": "The access token you provided is revoked, malformed or invalid."}]})
        return False
    return True


def get_orders(req, store, match, body):
    q = req.query
    with req.state.lock:
        book = order_book(req.state, store)
        if not _token_ok(req, book):
            return 0
        cap, lag = book["page_size"], float(book["lag_seconds"] or 0)
        token = q.get("NextToken")
        offset = 0
        if token:
            if token not in book["next_tokens"]:
                return _invalid(req, "Invalid NextToken.")
            offset = book["next_tokens"][token]
    if not q.get("MarketplaceIds"):
        return _invalid(req, "MarketplaceIds is required.")
    if not (q.get("LastUpdatedAfter") or q.get("CreatedAfter")):
        return _invalid(req, "Either CreatedAfter or LastUpdatedAfter must be specified.")
    try:
        size = int(q.get("MaxResultsPerPage") or 100)
        after = _parse(q.get("LastUpdatedAfter") or q["CreatedAfter"])
        before = _parse(q["LastUpdatedBefore"]) if q.get("LastUpdatedBefore") else None
    except ValueError:
        return _invalid(req, "Invalid date or MaxResultsPerPage.")
    if not 1 <= size <= 100:
        return _invalid(req, "MaxResultsPerPage must be 1 to 100.")
    size = min(size, int(cap)) if cap else size
    field = "LastUpdateDate" if q.get("LastUpdatedAfter") else "PurchaseDate"
    until = datetime.now(UTC) - timedelta(seconds=lag)
    markets = set(q["MarketplaceIds"].split(","))
    with req.state.lock:
        orders = sorted(book["orders"].values(), key=lambda o: (o["PurchaseDate"], o["AmazonOrderId"]))
        orders = [o for o in orders if o["MarketplaceId"] in markets and _parse(o[field]) >= after
                  and _parse(o[field]) <= (before or until)]
        page = copy.deepcopy(orders[offset:offset + size])
        payload = {"Orders": page, "LastUpdatedBefore": _stamp(until)}
        if offset + size < len(orders):
            next_token = uuid.uuid4().hex
            book["next_tokens"][next_token] = offset + size
            payload["NextToken"] = next_token
    order_book_page_served(req.state, store)
    req.answer(200, {"payload": payload})
    return len(page)


def get_order_items(req, store, match, body):
    order_id = unquote(match["order"])
    with req.state.lock:
        book = order_book(req.state, store)
        if not _token_ok(req, book):
            return 0
        items = book["items"].get(order_id)
        cap = int(book["page_size"] or 100)
        token = req.query.get("NextToken")
        if items is not None and token and token not in book["next_tokens"]:
            return _invalid(req, "Invalid NextToken.")
        offset = book["next_tokens"].get(token, 0) if token else 0
        if items is None:
            return _invalid(req, f"Order {order_id} not found.", status=404)
        payload = {"AmazonOrderId": order_id, "OrderItems": copy.deepcopy(items[offset:offset + cap])}
        if offset + cap < len(items):
            next_token = uuid.uuid4().hex
            book["next_tokens"][next_token] = offset + cap
            payload["NextToken"] = next_token
    req.answer(200, {"payload": payload})
    return len(payload["OrderItems"])


def order_book_change(state, *, store, body):
    action = body.get("action")
    stamp = _stamp(order_book_time(body))
    with state.lock:
        book = order_book(state, store)
        if action == "create":
            lines = body.get("lines") or []
            if not lines or not all(isinstance(line, dict) and int(line.get("quantity") or 0) > 0 for line in lines):
                raise ValueError("lines must be a non-empty list of {sku, quantity > 0}.")
            status = body.get("status") or "Unshipped"
            if status not in STATUSES:
                raise ValueError(f"unknown OrderStatus {status!r}")
            state.order_seq += 1
            seq = state.order_seq
            order_id = str(body.get("order_id") or f"{900 + seq % 100:03d}-{seq:07d}-{seq * 7919 % 10000000:07d}")
            if order_id in book["orders"]:
                raise ValueError(f"order {order_id} exists")
            items = [{"ASIN": f"B0{seq:04d}{n:04d}", "SellerSKU": str(line.get("sku") or ""),
                      "OrderItemId": f"{seq:07d}{n:07d}", "Title": str(line.get("sku") or "item"),
                      "QuantityOrdered": int(line["quantity"]), "QuantityShipped": 0}
                     for n, line in enumerate(lines, 1)]
            book["items"][order_id] = items
            book["orders"][order_id] = {
                "AmazonOrderId": order_id, "PurchaseDate": stamp, "LastUpdateDate": stamp, "OrderStatus": status,
                "FulfillmentChannel": body.get("fulfillment_channel") or "MFN", "SalesChannel": "Amazon.com",
                "MarketplaceId": body.get("marketplace_id") or "ATVPDKIKX0DER", "OrderType": "StandardOrder",
                "NumberOfItemsShipped": 0, "NumberOfItemsUnshipped": sum(i["QuantityOrdered"] for i in items),
                "IsBusinessOrder": False, "IsPrime": False, "IsPremiumOrder": False, "IsGlobalExpressEnabled": False,
                "IsSoldByAB": False, "IsISPU": False, "IsAccessPointOrder": False}
            return {"order_id": order_id, "order": copy.deepcopy(book["orders"][order_id]),
                    "items": copy.deepcopy(items)}
        order = book["orders"].get(str(body.get("order_id")))
        if order is None:
            raise ValueError(f"no order {body.get('order_id')}")
        if action == "cancel":
            order["OrderStatus"] = "Canceled"
        elif action == "ship":
            order["OrderStatus"] = "Shipped"
            for item in book["items"][order["AmazonOrderId"]]:
                item["QuantityShipped"] = item["QuantityOrdered"]
            order["NumberOfItemsShipped"], order["NumberOfItemsUnshipped"] = order["NumberOfItemsUnshipped"], 0
        elif action == "status" and body.get("status") in STATUSES:
            order["OrderStatus"] = body["status"]
        elif action == "refund":
            raise ValueError("Amazon's Orders API has no refunds (they are in the Finances API).")
        else:
            raise ValueError(f"unknown action {action!r} (or status)")
        order["LastUpdateDate"] = stamp
        return {"order_id": order["AmazonOrderId"], "order": copy.deepcopy(order)}


ITEM = re.compile(r"^/listings/2021-08-01/items/(?P<seller>[^/]+)/(?P<sku>[^/]+)$")
DOCUMENT = re.compile(r"^/amazon-documents/(?P<document>[^/]+)$")  # the presigned S3 URLs
AMAZON = register(Marketplace(
    kind="amazon",
    routes=(Route("PATCH", ITEM, listings_item_patch), Route("GET", ITEM, listings_item_get),
            Route("POST", re.compile(r"^/feeds/2021-06-30/documents$"), create_feed_document),
            Route("GET", re.compile(r"^/feeds/2021-06-30/documents/(?P<document>[^/]+)$"), get_feed_document),
            Route("POST", re.compile(r"^/feeds/2021-06-30/feeds$"), create_feed),
            Route("GET", re.compile(r"^/feeds/2021-06-30/feeds/(?P<feed>[^/]+)$"), get_feed),
            Route("PUT", DOCUMENT, document_upload, public=True),
            Route("GET", DOCUMENT, document_download, public=True),
            Route("GET", re.compile(r"^/orders/v0/orders$"), get_orders),
            Route("GET", re.compile(r"^/orders/v0/orders/(?P<order>[^/]+)/orderItems$"), get_order_items)),
    authorized=lambda headers: bool(headers.get("x-amz-access-token")),
    order_book=order_book_change,
    control=control,
))
