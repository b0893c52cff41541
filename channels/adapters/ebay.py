"""Ebay adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter
from core.parsing import json_int


class EbayAdapter(ChannelAdapter):
    kind = "ebay"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # eBay sends no order webhooks we use (no verify_webhook here: /webhooks/{slug}/ answers 404):
    # ingestion polls the Fulfillment API getOrders instead
    # (https://developer.ebay.com/api-docs/sell/fulfillment/resources/order/methods/getOrders):
    # GET {base}/sell/fulfillment/v1/order?filter=lastmodifieddate:[<from>..]&limit=&offset=,
    # with the channel's OAuth access token as a Bearer token. `limit` is at most 200; the
    # answer (OrderSearchPagedCollection) holds `orders`, `total` and, while a further page
    # exists, `next`. Orders come oldest-created first, so with an open-ended filter an order
    # changed while we page never moves to a page we already read (it can only repeat one).
    # Each polled Order object is stored as one inbound event, topic "order", and read here.
    # Fields (https://developer.ebay.com/api-docs/sell/fulfillment/types/sel:Order): `orderId`,
    # `lastModifiedDate`, `creationDate`, `orderFulfillmentStatus`, `orderPaymentStatus`
    # (sel:OrderPaymentStatusEnum: FULLY_REFUNDED "only applicable to return requests or order
    # cancellations"), `cancelStatus.cancelState` (sel:CancelStateEnum: CANCELED, IN_PROGRESS,
    # NONE_REQUESTED), `lineItems[]` (`lineItemId`, `sku`, `quantity`, `lineItemFulfillmentStatus`).
    order_topic = "order"
    order_page_max = 200  # getOrders refuses a limit over 200

    def _in_auth(self, channel) -> dict:
        return {"Authorization": f"Bearer {(channel.credentials or {}).get('access_token', '')}",
                "Accept": "application/json"}

    def poll_orders_page(self, channel, session, *, since, page_token: str, page_size: int):
        """One page of orders modified at or after `since` (an aware datetime): returns
        (orders, next page token or "", None). The token is the offset of the next page.
        Raises requests exceptions (HTTPError carries the status) and ValueError for an answer
        that is not a JSON object: the caller decides what a failure means."""
        from datetime import UTC

        from channels.adapters.http import root

        offset = int(page_token) if page_token.isascii() and page_token.isdigit() else 0
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{since.microsecond // 1000:03d}Z"
        response = session.get(f"{root(channel)}/sell/fulfillment/v1/order", headers=self._in_auth(channel),
                               params={"filter": f"lastmodifieddate:[{stamp}..]",
                                       "limit": max(1, min(page_size, self.order_page_max)), "offset": offset})
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("orders", []), list):
            raise ValueError("getOrders answered something that is not an order page")
        orders = [o for o in body.get("orders") or [] if isinstance(o, dict)]
        # `next` is only present when a further page exists. The next offset counts what this
        # page held, not the limit we asked for: a shorter page never makes us skip orders.
        more = bool(body.get("next")) and bool(orders)
        return orders, str(offset + len(body.get("orders") or [])) if more else "", None

    def order_version(self, order) -> str:
        """The delivery id of one version of an order: its id, modification time and statuses.
        The same version polled twice is stored once; any change (cancelled, refunded, shipped)
        is a new event. Statuses are included as well as the time, so two changes eBay stamps
        with the same millisecond are still told apart."""
        import hashlib
        import json

        if not isinstance(order, dict) or not order.get("orderId"):
            return "sha256:" + hashlib.sha256(json.dumps(order, sort_keys=True).encode()).hexdigest()
        cancel_status = order.get("cancelStatus")
        cancel = cancel_status.get("cancelState") if isinstance(cancel_status, dict) else ""
        return ":".join(str(part) for part in ("order", order["orderId"], order.get("lastModifiedDate") or "",
                                               order.get("orderFulfillmentStatus") or "", cancel or "",
                                               order.get("orderPaymentStatus") or ""))[:255]

    def order_document(self, channel, session, order) -> dict:
        """What is stored for a polled order: getOrders' Order object as it is (no more calls)."""
        return order

    def parse_webhook(self, channel, delivery, payload):
        """Canonical events for one polled eBay order (topic "order"):
        - cancelState CANCELED: `cancellation` of every line not yet FULFILLED;
        - orderPaymentStatus FULLY_REFUNDED (not cancelled): `return` of every line (eBay sets it
          only for completed return requests and cancellations);
        - anything else: a `sale` per line (getOrders only lists orders that completed checkout).
        Partial refunds restock nothing (the order does not say which units came back), as for
        WooCommerce. One key per line and direction, so a later version of the order (shipped,
        cancelled after a refund) never applies a line twice."""
        from django.utils.dateparse import parse_datetime

        from channels.adapters.base import CanonicalEvent

        if delivery.topic != self.order_topic:
            return []
        if not isinstance(payload, dict):
            raise ValueError("eBay order must be a JSON object.")
        order_id = str(payload["orderId"])
        cancel_status = payload.get("cancelStatus") or {}
        cancelled = cancel_status.get("cancelState") == "CANCELED"
        refunded = not cancelled and payload.get("orderPaymentStatus") == "FULLY_REFUNDED"

        def when(value):
            return parse_datetime(value) if isinstance(value, str) and value.isascii() else None

        if cancelled:
            restock, occurred = "cancellation", when(cancel_status.get("cancelledDate"))
        elif refunded:
            refunds = [r for r in (payload.get("paymentSummary") or {}).get("refunds") or [] if isinstance(r, dict)]
            restock, occurred = "return", when(refunds[-1].get("refundDate") if refunds else None)
        else:
            restock, occurred = None, when(payload.get("creationDate"))
        occurred = occurred or when(payload.get("lastModifiedDate"))
        events = []
        for line in payload.get("lineItems") or []:
            quantity = json_int(line.get("quantity") or 0)
            if quantity <= 0:
                continue
            if cancelled and line.get("lineItemFulfillmentStatus") == "FULFILLED":
                continue  # shipped before the cancellation: not back on our shelf
            line_id = str(line["lineItemId"])
            events.append(CanonicalEvent(
                event_id=f"{channel.slug}:order:{order_id}:line:{line_id}:{'restock' if restock else 'sale'}",
                type=restock or "sale",
                quantity=quantity,
                occurred_at=occurred,
                sku=line.get("sku") or None,
                source=f"ebay:{channel.slug}",
                reference=order_id,
                metadata={"order_id": order_id, "line_id": line_id, "restock": restock is not None,
                          "order_status": "/".join(str(s) for s in (
                              payload.get("orderFulfillmentStatus"), cancel_status.get("cancelState"),
                              payload.get("orderPaymentStatus"))),
                          "legacy_item_id": str(line.get("legacyItemId") or ""),
                          "legacy_variation_id": str(line.get("legacyVariationId") or "")},
            ))
        return events
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # Sell Inventory API bulkUpdatePriceQuantity
    # (https://developer.ebay.com/api-docs/sell/inventory/resources/inventory_item/methods/bulkUpdatePriceQuantity,
    # guide https://developer.ebay.com/api-docs/sell/static/inventory/bulk-updates.html):
    # POST {base}/sell/inventory/v1/bulk_update_price_quantity {"requests": [PriceQuantity]}, up to
    # 25 per call (BulkPriceQuantity: "one or more inventory items (up to 25)"; the method page also
    # says one SKU per call, which the request type and the guide contradict: we follow those two).
    # The quantity is set on the inventory item (shipToLocationAvailability) and on its live offer
    # (availableQuantity): "when updating the quantity of an item, it must be updated at both the
    # inventory item and offer level". The call answers 200 or 207; each item's result is in
    # `responses[]` (PriceQuantityResponse: statusCode, sku, offerId, errors[], warnings[]).
    # Each listing can be revised up to 250 times in one calendar day, then eBay refuses until the
    # next day: propagation budgets revisions per listing (channels.propagation.budget), and an
    # item eBay refuses for that limit waits for the next day instead of failing (the Inventory
    # API documents no error id for it: the refusal is recognised by its message).
    max_batch = 25
    fetch_batch = 25  # bulk_get_inventory_item takes up to 25 SKUs
    daily_revision_limit = 250

    def _out_auth(self, channel) -> dict:
        return {"Authorization": f"Bearer {channel.credentials.get('access_token', '')}",
                "Content-Language": channel.settings.get("content_language", "en-US")}

    def _out_ebay_sku(self, item) -> str:
        return str(item.attributes.get("sku") or item.sku)

    @staticmethod
    def _out_limit_reached(errors: list) -> bool:
        """An item refused because its listing was revised as often as eBay allows today."""
        import re

        text = " ".join(f"{e.get('message', '')} {e.get('longMessage', '')}" for e in errors if isinstance(e, dict))
        return re.search(r"revis\w*\b.*\b(limit|maximum|times|threshold)|(limit|maximum|threshold)\b.*\brevis",
                         text, re.IGNORECASE) is not None

    def push(self, channel, session, items):
        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        requests_ = [{"sku": self._out_ebay_sku(i), "shipToLocationAvailability": {"quantity": i.quantity},
                      "offers": [{"offerId": str(i.external_id), "availableQuantity": i.quantity}]} for i in items]
        response = session.post(f"{http.root(channel)}/sell/inventory/v1/bulk_update_price_quantity",
                                json={"requests": requests_}, headers=self._out_auth(channel))
        if not 200 <= response.status_code < 300:
            return http.failed(items, response)
        answered = (http.json_body(response) or {}).get("responses") or []
        by_offer = {str(r.get("offerId")): r for r in answered if isinstance(r, dict) and r.get("offerId")}
        by_sku = {str(r.get("sku")): r for r in answered if isinstance(r, dict) and r.get("sku")}
        outcomes = []
        for item in items:
            entry = by_offer.get(str(item.external_id)) or by_sku.get(self._out_ebay_sku(item))
            if entry is None:
                outcomes.append(PushOutcome(sku=item.sku, ok=False, status=response.status_code,
                                            error="item missing from eBay's responses"))
            elif entry.get("statusCode") == 200:
                outcomes.append(PushOutcome(sku=item.sku, ok=True, status=response.status_code))
            else:
                errors = [e for e in entry.get("errors") or [{}] if isinstance(e, dict)] or [{}]
                message = "; ".join(f"{e.get('errorId', '')} {e.get('message', '')}".strip() for e in errors)
                outcomes.append(PushOutcome(sku=item.sku, ok=False, status=response.status_code,
                                            error=f"statusCode {entry.get('statusCode')}: {message}",
                                            limit_reached=self._out_limit_reached(errors)))
        return outcomes

    def fetch_levels(self, channel, session, items):
        from channels.adapters import http

        by_sku = {self._out_ebay_sku(i): i for i in items}
        response = session.post(f"{http.root(channel)}/sell/inventory/v1/bulk_get_inventory_item",
                                json={"requests": [{"sku": s} for s in by_sku]}, headers=self._out_auth(channel))
        response.raise_for_status()
        levels = {}
        for entry in response.json().get("responses", []):
            item = by_sku.get(str(entry.get("sku")))
            availability = ((entry.get("inventoryItem") or {}).get("availability") or {})
            quantity = (availability.get("shipToLocationAvailability") or {}).get("quantity")
            if item and entry.get("statusCode") == 200 and quantity is not None:
                levels[item.sku] = int(quantity)
        return levels
    # ------------------------------------------------------------ outbound (propagation) — END
