"""Amazon adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter
from core.parsing import json_int


class AmazonAdapter(ChannelAdapter):
    kind = "amazon"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # Amazon sends no order webhooks we use (no verify_webhook here: /webhooks/{slug}/ answers
    # 404): ingestion polls the Orders API v0 instead (model: github.com/amzn/selling-partner-
    # api-models models/orders-api-model/ordersV0.json;
    # https://developer-docs.amazon.com/sp-api/reference/getorders and .../getorderitems):
    # - GET {base}/orders/v0/orders?MarketplaceIds=&LastUpdatedAfter=&MaxResultsPerPage= (1-100)
    #   [&NextToken=]: {"payload": {"Orders": [...], "NextToken"?, "LastUpdatedBefore"?}}. An
    #   update is "any change in order status, including the creation of a new order". Usage
    #   plan 0.0167 requests/s, burst 20: one call a minute on average.
    # - GET {base}/orders/v0/orders/{AmazonOrderId}/orderItems[?NextToken=]: {"payload":
    #   {"AmazonOrderId", "OrderItems": [{"OrderItemId", "SellerSKU", "ASIN", "QuantityOrdered",
    #   "QuantityShipped"}], "NextToken"?}}. 0.5 requests/s, burst 30.
    # Authenticated by `x-amz-access-token` (the channel's access token), as for pushes. Each
    # polled order is stored as one inbound event, topic "order", payload
    # {"Order": <getOrders' Order>, "OrderItems": [<getOrderItems' OrderItem>, ...]}.
    # Amazon marks Orders v0 deprecated (removal 2027-03-27, successor searchOrders 2026-01-01):
    # https://developer-docs.amazon.com/sp-api/docs/orders-api-migration-guide
    order_topic = "order"
    order_page_max = 100  # MaxResultsPerPage: 1 - 100
    order_document_calls = True  # order_document asks getOrderItems: the poller budgets each call
    # OrderStatus (ordersV0.json): stock has left for the buyer from Pending on (Amazon reserves the
    # unit when the order is placed); PendingAvailability (a pre-order whose release date is in
    # the future) becomes Pending later, Unfulfillable applies to Amazon-fulfilled orders only.
    selling_statuses = ("Pending", "Unshipped", "PartiallyShipped", "Shipped", "InvoiceUnconfirmed")

    def _in_auth(self, channel) -> dict:
        return {"x-amz-access-token": (channel.credentials or {}).get("access_token", ""),
                "Accept": "application/json"}

    @staticmethod
    def _in_payload(response) -> dict:
        response.raise_for_status()
        body = response.json()
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, dict):
            raise ValueError("the Orders API answered without a payload object")
        return payload

    def poll_orders_page(self, channel, session, *, since, page_token: str, page_size: int):
        """One page of orders updated at or after `since` (an aware datetime): returns (orders,
        NextToken or "", Amazon's LastUpdatedBefore as an aware datetime or None). The filters are
        sent with every page ("NextToken doesn't affect any filters that you include").
        Raises requests exceptions (HTTPError carries the status) and ValueError for an answer
        without a payload."""
        from datetime import UTC

        from django.utils.dateparse import parse_datetime

        from channels.adapters.http import root

        marketplace = (channel.settings or {}).get("marketplace_id")
        if not marketplace:
            raise ValueError("Amazon channel needs settings.marketplace_id to poll orders")
        params = {"MarketplaceIds": str(marketplace),
                  "LastUpdatedAfter": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "MaxResultsPerPage": max(1, min(page_size, self.order_page_max))}
        if page_token:
            params["NextToken"] = page_token
        payload = self._in_payload(session.get(f"{root(channel)}/orders/v0/orders", params=params,
                                               headers=self._in_auth(channel)))
        orders = payload.get("Orders") or []
        if not isinstance(orders, list):
            raise ValueError("the Orders API answered Orders that is not a list")
        until = payload.get("LastUpdatedBefore")
        until = parse_datetime(until) if isinstance(until, str) and until.isascii() else None
        token = payload.get("NextToken")
        return ([o for o in orders if isinstance(o, dict)], token if isinstance(token, str) and orders else "",
                until if until is not None and until.tzinfo is not None else None)

    def order_version(self, order) -> str:
        """The delivery id of one version of an order: id, LastUpdateDate and OrderStatus.
        LastUpdateDate has whole seconds: the status tells two changes in one second apart."""
        import hashlib
        import json

        if not isinstance(order, dict) or not order.get("AmazonOrderId"):
            return "sha256:" + hashlib.sha256(json.dumps(order, sort_keys=True).encode()).hexdigest()
        return ":".join(str(part) for part in ("order", order["AmazonOrderId"], order.get("LastUpdateDate") or "",
                                               order.get("OrderStatus") or ""))[:255]

    def _moves_stock(self, order) -> bool:
        return (order.get("FulfillmentChannel") != "AFN"
                and (order.get("OrderStatus") in self.selling_statuses or order.get("OrderStatus") == "Canceled"))

    def order_document(self, channel, session, order) -> dict:
        """What is stored for a polled order: the Order and, when it moves our stock, its items
        (getOrderItems, all pages). Amazon-fulfilled (AFN) orders ship from Amazon's stock, not
        ours, and other statuses move nothing: no items call is spent on them."""
        from urllib.parse import quote

        from channels.adapters.http import root

        items: list = []
        if isinstance(order, dict) and self._moves_stock(order) and order.get("AmazonOrderId"):
            url = f"{root(channel)}/orders/v0/orders/{quote(str(order['AmazonOrderId']), safe='')}/orderItems"
            token = ""
            for _page in range(100):  # a runaway NextToken never loops forever
                payload = self._in_payload(session.get(url, params={"NextToken": token} if token else None,
                                                       headers=self._in_auth(channel)))
                items += [i for i in payload.get("OrderItems") or [] if isinstance(i, dict)]
                token = payload.get("NextToken") or ""
                if not token:
                    break
        return {"Order": order, "OrderItems": items}

    def parse_webhook(self, channel, delivery, payload):
        """Canonical events for one polled Amazon order (topic "order"):
        - a selling status (Pending ... InvoiceUnconfirmed): a `sale` per item (QuantityOrdered);
        - Canceled: a `cancellation` per item of everything the line took (a canceled order
          shipped nothing; the restock is capped by what the sale took, so the quantity Amazon
          shows on a canceled item is not relied on);
        - AFN (fulfilled by Amazon) orders and other statuses: nothing.
        Refunds are not part of the Orders API (no refund status or quantity): returned units
        come back as receipts/returns from the warehouse, not from this adapter."""
        from django.utils.dateparse import parse_datetime

        from channels.adapters.base import CanonicalEvent
        from channels.adapters.canonical import MAX_QUANTITY

        if delivery.topic != self.order_topic:
            return []
        if not isinstance(payload, dict) or not isinstance(payload.get("Order"), dict):
            raise ValueError("Amazon order event must be {\"Order\": {...}, \"OrderItems\": [...]}.")
        order = payload["Order"]
        status = order.get("OrderStatus")
        if not self._moves_stock(order):
            return []
        order_id = str(order["AmazonOrderId"])
        selling = status in self.selling_statuses

        def when(value):
            return parse_datetime(value) if isinstance(value, str) and value.isascii() else None

        occurred = when(order.get("PurchaseDate") if selling else order.get("LastUpdateDate"))
        events = []
        for item in payload.get("OrderItems") or []:
            ordered = json_int(item.get("QuantityOrdered") or 0)
            if selling and ordered <= 0:
                continue
            line_id = str(item["OrderItemId"])
            seller_sku = item.get("SellerSKU") or None
            events.append(CanonicalEvent(
                event_id=f"{channel.slug}:order:{order_id}:line:{line_id}:{'sale' if selling else 'restock'}",
                type="sale" if selling else "cancellation",
                quantity=ordered if selling else MAX_QUANTITY,
                occurred_at=occurred,
                external_id=str(seller_sku) if seller_sku else None,
                sku=str(seller_sku) if seller_sku else None,
                source=f"amazon:{channel.slug}",
                reference=order_id,
                metadata={"order_id": order_id, "line_id": line_id, "restock": not selling, "order_status": status,
                          "asin": str(item.get("ASIN") or ""), "quantity_ordered": ordered},
            ))
        return events
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # Few changed SKUs: Listings Items API patchListingsItem, one call per seller SKU
    # (https://developer-docs.amazon.com/sp-api/docs/listings-items-api-v2021-08-01-model; rates:
    # https://developer-docs.amazon.com/sp-api/docs/listings-items-api-rate-limits):
    # PATCH {base}/listings/2021-08-01/items/{sellerId}/{sku}?marketplaceIds= {"productType",
    # "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability", "value":
    # [{"fulfillment_channel_code": "DEFAULT", "quantity"}]}]}. `merge` changes the quantity only
    # and keeps the seller's lead_time_to_ship_max_days / restock_date, which `replace` would drop
    # (https://developer-docs.amazon.com/sp-api/docs/merge-a-listing). The answer's `status` is
    # ACCEPTED or INVALID (with `issues`), so a 200 can still be a refusal. Usage plan: 5 requests/s,
    # burst 5 per selling partner and application: the channel's token bucket never exceeds it.
    # Many changed SKUs at once (at least `settings.feed_threshold`, default AMAZON_FEED_THRESHOLD):
    # one JSON_LISTINGS_FEED (Feeds API 2021-06-30,
    # github.com/amzn/selling-partner-api-models models/feeds-api-model/feeds_2021-06-30.json;
    # https://developer-docs.amazon.com/sp-api/docs/listings-feed-type-values): createFeedDocument
    # (POST /feeds/2021-06-30/documents {"contentType"} -> {"feedDocumentId", "url"}), upload the
    # JSON document with a PUT to that presigned URL (same Content-Type, no SP-API token), createFeed
    # (POST /feeds/2021-06-30/feeds {"feedType": "JSON_LISTINGS_FEED", "marketplaceIds",
    # "inputFeedDocumentId"} -> 202 {"feedId"}). The messages are the same patches
    # (schemas/feeds/listings-feed-schema-v2.json: header {sellerId, version "2.0"}, messages
    # [{messageId, sku, operationType "PATCH", productType, patches}], at most 10,000). The push
    # answers `pending` with the feed id; `feed_result` later reads getFeed until DONE, then the
    # processing report (getFeedDocument + download, GZIP when `compressionAlgorithm` says so;
    # schemas/feeds/listings-feed-processing-report-schema-v2.json): an ERROR issue naming a
    # message fails that SKU, the others were accepted.
    max_batch = 1
    submits_feeds = True
    feed_max_messages = 10_000  # listings feed schema v2: messages maxItems
    feed_content_type = "application/json; charset=UTF-8"
    patch_rate, patch_burst = 5.0, 5  # patchListingsItem usage plan

    def batch_size(self, channel, pending: int) -> int:
        return min(pending, self.feed_max_messages) if pending >= self._out_feed_threshold(channel) else 1

    def rate_limit(self, channel) -> tuple[float, int]:
        return min(channel.rate_limit_per_second, self.patch_rate), min(channel.rate_limit_burst, self.patch_burst)

    def _out_feed_threshold(self, channel) -> int:
        from django.conf import settings

        wanted = (channel.settings or {}).get("feed_threshold")
        threshold = wanted if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0 \
            else settings.AMAZON_FEED_THRESHOLD
        return max(threshold, 2)  # one SKU is always a patch (a dead-letter retry, for one)

    def _out_seller(self, channel) -> str:
        seller = channel.settings.get("seller_id")
        if not seller:
            raise ValueError("Amazon channel needs settings.seller_id")
        return str(seller)

    def _out_item_url(self, channel, item) -> str:
        from urllib.parse import quote

        from channels.adapters.http import root

        sku = quote(str(item.external_id), safe="")
        return f"{root(channel)}/listings/2021-08-01/items/{quote(self._out_seller(channel), safe='')}/{sku}"

    def _out_params(self, channel) -> dict:
        return {"marketplaceIds": channel.settings.get("marketplace_id", "")}

    def _out_auth(self, channel) -> dict:
        return {"x-amz-access-token": channel.credentials.get("access_token", "")}

    @staticmethod
    def _out_patches(quantity: int) -> list:
        return [{"op": "merge", "path": "/attributes/fulfillment_availability",
                 "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}]}]

    @staticmethod
    def _out_issues(issues) -> str:
        return "; ".join(f"{i.get('code', '')} {i.get('message', '')}".strip()
                         for i in issues or [] if isinstance(i, dict))

    def push(self, channel, session, items):
        if len(items) >= self._out_feed_threshold(channel):
            return self._out_feed(channel, session, items)
        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        outcomes = []
        for item in items:
            body = {"productType": item.attributes.get("product_type", "PRODUCT"),
                    "patches": self._out_patches(item.quantity)}
            response = session.patch(self._out_item_url(channel, item), params=self._out_params(channel), json=body,
                                     headers=self._out_auth(channel))
            if not 200 <= response.status_code < 300:
                outcomes.extend(http.failed([item], response))
                continue
            payload = http.json_body(response) or {}
            if payload.get("status") == "ACCEPTED":
                outcomes.append(PushOutcome(sku=item.sku, ok=True, status=response.status_code))
            else:
                issues = self._out_issues(payload.get("issues"))
                outcomes.append(PushOutcome(sku=item.sku, ok=False, status=response.status_code,
                                            error=f"status {payload.get('status')}: {issues}"))
        return outcomes

    def _out_feed(self, channel, session, items):
        """createFeedDocument, upload, createFeed: the items are pending under the feed id."""
        import json

        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        marketplace = channel.settings.get("marketplace_id")
        if not marketplace:
            raise ValueError("Amazon channel needs settings.marketplace_id")
        document = {"header": {"sellerId": self._out_seller(channel), "version": "2.0", "issueLocale": "en_US"},
                    "messages": [{"messageId": n, "sku": str(item.external_id), "operationType": "PATCH",
                                  "productType": item.attributes.get("product_type", "PRODUCT"),
                                  "patches": self._out_patches(item.quantity)} for n, item in enumerate(items, 1)]}
        base = f"{http.root(channel)}/feeds/2021-06-30"
        response = session.post(f"{base}/documents", json={"contentType": self.feed_content_type},
                                headers=self._out_auth(channel))
        created = http.json_body(response) if 200 <= response.status_code < 300 else None
        if not isinstance(created, dict) or not created.get("url") or not created.get("feedDocumentId"):
            return http.failed(items, response, None if response.status_code >= 300 else
                               "createFeedDocument answered without a url and feedDocumentId")
        # The presigned URL is signed for this Content-Type; it takes no SP-API token.
        upload = session.put(created["url"], data=json.dumps(document).encode(),
                             headers={"Content-Type": self.feed_content_type})
        if not 200 <= upload.status_code < 300:
            return http.failed(items, upload, f"feed document upload refused: {http.describe(upload)}")
        response = session.post(f"{base}/feeds", headers=self._out_auth(channel), json={
            "feedType": "JSON_LISTINGS_FEED", "marketplaceIds": [str(marketplace)],
            "inputFeedDocumentId": str(created["feedDocumentId"])})
        feed_id = (http.json_body(response) or {}).get("feedId") if 200 <= response.status_code < 300 else None
        if not feed_id:
            return http.failed(items, response, None if response.status_code >= 300 else
                               "createFeed answered without a feedId")
        return [PushOutcome(sku=item.sku, ok=False, status=response.status_code, pending=str(feed_id))
                for item in items]

    def feed_result(self, channel, session, reference, items):
        """getFeed; once DONE (or FATAL/CANCELLED), the processing report's verdict per item."""
        import gzip
        import json
        from urllib.parse import quote

        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        base = f"{http.root(channel)}/feeds/2021-06-30"
        response = session.get(f"{base}/feeds/{quote(str(reference), safe='')}", headers=self._out_auth(channel))
        response.raise_for_status()
        feed = response.json()
        status = str(feed.get("processingStatus") or "")
        if status in ("IN_QUEUE", "IN_PROGRESS", ""):
            return status or "UNKNOWN", None

        def every(error: str):
            return [PushOutcome(sku=i.sku, ok=False, status=response.status_code, error=error[:500]) for i in items]

        document_id = feed.get("resultFeedDocumentId")
        if not document_id:
            return status, every(f"feed {reference} {status} without a processing report")
        located = session.get(f"{base}/documents/{quote(str(document_id), safe='')}", headers=self._out_auth(channel))
        located.raise_for_status()
        where = located.json()
        download = session.get(where["url"])  # presigned: no SP-API token
        download.raise_for_status()
        raw = gzip.decompress(download.content) if where.get("compressionAlgorithm") == "GZIP" else download.content
        report = json.loads(raw)
        issues = [i for i in report.get("issues") or [] if isinstance(i, dict) and i.get("severity") == "ERROR"]
        if status != "DONE":
            return status, every(f"feed {reference} {status}: {self._out_issues(issues) or 'no details'}")
        by_message = {n: item for n, item in enumerate(items, 1)}
        by_seller_sku = {str(item.external_id): item for item in items}
        errors: dict[str, list[dict]] = {}
        for issue in issues:
            item = by_message.get(issue.get("messageId")) or by_seller_sku.get(str(issue.get("sku")))
            if item is None:  # about the feed itself (formatting): nothing in it was applied
                return status, every(f"feed {reference}: {self._out_issues([issue])}")
            errors.setdefault(item.sku, []).append(issue)
        return status, [PushOutcome(sku=i.sku, ok=i.sku not in errors, status=download.status_code,
                                    error=f"feed {reference}: {self._out_issues(errors[i.sku])}" if i.sku in errors
                                    else "") for i in items]

    def fetch_levels(self, channel, session, items):
        levels = {}
        for item in items:
            response = session.get(self._out_item_url(channel, item), headers=self._out_auth(channel),
                                   params={**self._out_params(channel), "includedData": "fulfillmentAvailability"})
            response.raise_for_status()
            for availability in response.json().get("fulfillmentAvailability") or []:
                if availability.get("fulfillmentChannelCode") == "DEFAULT" and availability.get("quantity") is not None:
                    levels[item.sku] = int(availability["quantity"])
        return levels
    # ------------------------------------------------------------ outbound (propagation) — END
