"""BigCommerce adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter
from core.parsing import ascii_int, json_int


class BigCommerceAdapter(ChannelAdapter):
    kind = "bigcommerce"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # BigCommerce signs webhooks with Standard Webhooks (webhook-id / webhook-timestamp /
    # webhook-signature), the secret used as UTF-8 bytes. Payloads are thin:
    # {"scope": "store/order/created", "data": {"type": "order", "id": N}, ...}; the order's
    # lines come from GET /stores/{store_hash}/v2/orders/{id}/products (fetched before applying,
    # outside any database transaction). Order status ids: 4 Refunded, 5 Cancelled, 6 Declined.
    restock_status_ids = {4: "return", 5: "cancellation", 6: "cancellation"}
    products_page_size = 250

    def verify_webhook(self, channel, headers, body: bytes) -> bool:
        from channels.adapters.signing import header, standard_webhooks_verify

        if not channel.webhook_secret:
            return False
        return standard_webhooks_verify(channel.webhook_secret.encode("utf-8"), header(headers, "webhook-id"),
                                        header(headers, "webhook-timestamp"), header(headers, "webhook-signature"),
                                        body)

    def read_delivery(self, channel, headers, body: bytes):
        import json

        from channels.adapters.base import Delivery
        from channels.adapters.signing import header

        try:
            scope = str(json.loads(body).get("scope") or "")
        except (ValueError, AttributeError):
            scope = ""
        return Delivery(delivery_id=header(headers, "webhook-id") or "", topic=scope,
                        extra_headers={"timestamp": header(headers, "webhook-timestamp") or ""})

    def _order_action(self, payload) -> str | None:
        """'sale', a restock type, or None when this notification moves no stock."""
        scope = payload.get("scope")
        if scope == "store/order/created":
            return "sale"
        if scope == "store/order/statusUpdated":
            status = ((payload.get("data") or {}).get("status") or {}).get("new_status_id")
            return self.restock_status_ids.get(ascii_int(str(status)))  # "²".isdigit(), int("²") raises
        return None

    @staticmethod
    def _order_id(payload) -> int:
        """The order id as BigCommerce sends it (a number); ValueError for anything else, so the
        event fails as an invalid payload instead of being fetched for "٣" or retried for "²"."""
        return json_int(payload["data"]["id"])

    def needs_fetch(self, channel, delivery, payload) -> bool:
        if not isinstance(payload, dict) or self._order_action(payload) is None:
            return False
        try:
            self._order_id(payload)
        except (KeyError, TypeError, AttributeError, ValueError):
            return False  # nothing to fetch: parse_webhook reports the payload as invalid
        return True

    def fetch(self, channel, session, delivery, payload) -> dict:
        """The order's products from the v2 Orders API, all pages. Raises requests exceptions
        (network errors, HTTPError with the status); the caller decides retry vs fail."""
        order_id = self._order_id(payload)
        store_hash = (channel.settings or {}).get("store_hash", "")
        url = f"{channel.base_url.rstrip('/')}/stores/{store_hash}/v2/orders/{order_id}/products"
        headers = {"X-Auth-Token": (channel.credentials or {}).get("access_token", ""),
                   "Accept": "application/json"}
        products, page = [], 1
        while True:
            response = session.get(url, headers=headers,  # a TimeoutSession sets the timeouts
                                   params={"limit": self.products_page_size, "page": page})
            if response.status_code == 204:
                break  # v2 answers 204 past the last page
            response.raise_for_status()  # requests.HTTPError carries the status for retry decisions
            rows = response.json()
            products += rows
            if len(rows) < self.products_page_size:
                break
            page += 1
        return {"products": products}

    def parse_webhook(self, channel, delivery, payload):
        from datetime import UTC, datetime

        from channels.adapters.base import CanonicalEvent

        if not isinstance(payload, dict):
            raise ValueError("BigCommerce payload must be a JSON object.")
        action = self._order_action(payload)
        if action is None:
            return []
        order_id = str(self._order_id(payload))
        created = payload.get("created_at")
        occurred = datetime.fromtimestamp(created, tz=UTC) if isinstance(created, int | float) else None
        events = []
        for line in (payload.get("_fetched") or {}).get("products") or []:
            quantity = json_int(line.get("quantity") or 0)
            if quantity <= 0:
                continue
            ids = {k: str(line[k]) for k in ("variant_id", "product_id") if line.get(k)}
            direction = "sale" if action == "sale" else "restock"
            events.append(CanonicalEvent(
                event_id=f"{channel.slug}:order:{order_id}:line:{line['id']}:{direction}",
                type=action,
                quantity=quantity,
                occurred_at=occurred,
                external_id=ids.get("variant_id"),
                sku=line.get("sku") or None,
                source=f"bigcommerce:{channel.slug}",
                reference=order_id,
                metadata={"order_id": order_id, "line_id": str(line["id"]), "ids": ids,
                          "restock": action != "sale"},
            ))
        return events
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # PUT {base}/stores/{store_hash}/v3/inventory/adjustments/absolute
    # {"reason", "items": [{"location_id", "variant_id", "quantity"}]} sets absolute levels for many
    # variants in one request (Inventory API "Absolute Adjustment",
    # https://developer.bigcommerce.com/docs/rest-management/inventory/adjustments: "Use absolute
    # adjustments as the default method for updating inventory"; "Limit of 2000 items for payload
    # length"). It is the way BigCommerce recommends for writing inventory: the Catalog API's
    # variants batch (PUT /v3/catalog/variants, 50 per call,
    # https://developer.bigcommerce.com/docs/rest-catalog/product-variants/variants-batch) "now
    # itself use[s] the Inventory API under the hood"
    # (https://developer.bigcommerce.com/docs/store-operations/catalog/inventory-adjustments). The
    # request succeeds or fails as a whole (422 for an invalid item). A 429 says how long to wait
    # in `X-Rate-Limit-Time-Reset-Ms`.
    max_batch = 2000
    fetch_batch = 50

    def _out_store(self, channel) -> str:
        from channels.adapters.http import root

        store_hash = channel.settings.get("store_hash")
        if not store_hash:
            raise ValueError("BigCommerce channel needs settings.store_hash")
        return f"{root(channel)}/stores/{store_hash}"

    def _out_auth(self, channel) -> dict:
        return {"X-Auth-Token": channel.credentials.get("access_token", ""), "Accept": "application/json"}

    def _out_location(self, channel, item):
        return item.attributes.get("location_id") or channel.settings.get("location_id") or 1

    def push(self, channel, session, items):
        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        body = {"reason": "stockline channel sync",
                "items": [{"location_id": http.num(self._out_location(channel, i)),
                           "variant_id": http.num(i.external_id), "quantity": i.quantity} for i in items]}
        response = session.put(f"{self._out_store(channel)}/v3/inventory/adjustments/absolute", json=body,
                               headers=self._out_auth(channel))
        if not 200 <= response.status_code < 300:
            return http.failed(items, response)
        return [PushOutcome(sku=i.sku, ok=True, status=response.status_code) for i in items]

    def fetch_levels(self, channel, session, items):
        by_id = {str(i.external_id): i for i in items}
        location = str(self._out_location(channel, items[0]))
        response = session.get(f"{self._out_store(channel)}/v3/inventory/items", headers=self._out_auth(channel),
                               params={"variant_id:in": ",".join(by_id), "location_id:in": location})
        response.raise_for_status()
        levels = {}
        for row in response.json().get("data", []):
            item = by_id.get(str((row.get("identity") or {}).get("variant_id")))
            for loc in row.get("locations", []):
                if item and str(loc.get("location_id")) == location and loc.get("total_inventory_onhand") is not None:
                    levels[item.sku] = int(loc["total_inventory_onhand"])
        return levels
    # ------------------------------------------------------------ outbound (propagation) — END
