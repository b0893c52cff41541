"""WooCommerce adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter
from core.parsing import json_int


class WooCommerceAdapter(ChannelAdapter):
    kind = "woocommerce"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # https://developer.woocommerce.com/docs/apis/rest-api/v3/webhooks/ : X-WC-Webhook-Signature
    # is base64(HMAC-SHA256(secret, raw body)); X-WC-Webhook-Topic e.g. "order.updated";
    # X-WC-Webhook-Delivery-ID identifies a delivery. When a webhook is created WooCommerce sends
    # an unsigned ping whose form body is "webhook_id=N"; it must get a 200 or the hook is disabled.
    selling_statuses = ("processing", "on-hold", "completed")  # WooCommerce reduces stock here
    restock_statuses = {"cancelled": "cancellation", "refunded": "return", "failed": "cancellation"}

    def is_ping(self, channel, headers, body: bytes) -> bool:
        import re

        from channels.adapters.signing import header

        return (header(headers, "X-WC-Webhook-Signature") is None
                and re.fullmatch(rb"webhook_id=\d+", body.strip()) is not None)

    def verify_webhook(self, channel, headers, body: bytes) -> bool:
        from channels.adapters.signing import header, hmac_sha256_base64, signature_matches

        if not channel.webhook_secret:
            return False
        expected = hmac_sha256_base64(channel.webhook_secret.encode("utf-8"), body)
        return signature_matches(expected, header(headers, "X-WC-Webhook-Signature"))

    def read_delivery(self, channel, headers, body: bytes):
        from channels.adapters.base import Delivery
        from channels.adapters.signing import header

        extra = {name: header(headers, f"X-WC-Webhook-{name}") for name in ("ID", "Source", "Resource", "Event")}
        return Delivery(delivery_id=header(headers, "X-WC-Webhook-Delivery-ID") or "",
                        topic=header(headers, "X-WC-Webhook-Topic") or "",
                        extra_headers={k: v for k, v in extra.items() if v})

    def parse_webhook(self, channel, delivery, payload):
        from django.utils.dateparse import parse_datetime

        from channels.adapters.base import CanonicalEvent

        if delivery.topic not in ("order.created", "order.updated"):
            return []
        if not isinstance(payload, dict):
            raise ValueError("WooCommerce payload must be a JSON object.")
        status = payload.get("status")
        restock = self.restock_statuses.get(status)
        if status not in self.selling_statuses and restock is None:
            return []  # pending / draft: WooCommerce has not taken stock yet
        order_id = str(payload["id"])
        stamp = payload.get("date_modified_gmt") or payload.get("date_created_gmt")
        naive_utc = isinstance(stamp, str) and stamp.isascii() and stamp[-1:].isdigit()  # ASCII: not "٣"
        occurred = parse_datetime(stamp + "+00:00") if naive_utc else None
        events = []
        for line in payload.get("line_items") or []:
            quantity = json_int(line.get("quantity") or 0)
            if quantity <= 0:
                continue
            ids = {k: str(line[k]) for k in ("variation_id", "product_id") if line.get(k)}
            # One key per order line and direction: whichever topic or delivery carries the
            # status change, the sale (or the restock) is applied once.
            events.append(CanonicalEvent(
                event_id=f"{channel.slug}:order:{order_id}:line:{line['id']}:{'restock' if restock else 'sale'}",
                type=restock or "sale",
                quantity=quantity,
                occurred_at=occurred,
                external_id=ids.get("variation_id") or ids.get("product_id"),
                sku=line.get("sku") or None,
                source=f"woocommerce:{channel.slug}",
                reference=order_id,
                metadata={"order_id": order_id, "line_id": str(line["id"]), "ids": ids,
                          "restock": restock is not None, "order_status": status},
            ))
        return events
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # POST {base}/wp-json/wc/v3/products/batch {"update": [{"id", "stock_quantity"}]}, up to 100
    # objects per request (https://woocommerce.github.io/woocommerce-rest-api-docs/#batch-update-products:
    # "By default it's limited to up to 100 objects"; more is refused whole with 413
    # `woocommerce_rest_request_entity_too_large`, WC_REST_Controller::check_batch_limit). Variations
    # live under their parent: /products/{parent_id}/variations/batch (same limit,
    # #batch-update-product-variations), so items are batched per parent (listing attributes
    # `parent_id`). An invalid item does not fail the request: the 200 answer carries
    # {"id", "error": {"code", "message"}} in its place, a failure of that item only.
    # Authentication: HTTP Basic with the consumer key and secret (WooCommerce over HTTPS).
    max_batch = 100

    def batch_key(self, item) -> str:
        return str(item.attributes.get("parent_id") or "")

    def _out_endpoint(self, channel, parent: str) -> str:
        from channels.adapters.http import root

        base = f"{root(channel)}/wp-json/wc/v3/products"
        return f"{base}/{parent}/variations" if parent else base

    def _out_auth(self, channel) -> tuple[str, str]:
        return (channel.credentials.get("consumer_key", ""), channel.credentials.get("consumer_secret", ""))

    def push(self, channel, session, items):
        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        update = [{"id": http.num(i.external_id), "stock_quantity": i.quantity, "manage_stock": True} for i in items]
        response = session.post(f"{self._out_endpoint(channel, self.batch_key(items[0]))}/batch",
                                json={"update": update}, auth=self._out_auth(channel))
        if not 200 <= response.status_code < 300:
            return http.failed(items, response)
        answered = (http.json_body(response) or {}).get("update")
        if not isinstance(answered, list):
            return http.failed(items, response, "WooCommerce answered without an `update` list")
        by_id = {str(entry.get("id")): entry for entry in answered if isinstance(entry, dict)}
        outcomes = []
        for index, item in enumerate(items):
            entry = by_id.get(str(item.external_id))
            if entry is None and index < len(answered) and isinstance(answered[index], dict):
                entry = answered[index]  # an error entry may not echo the id: it keeps its position
            if entry is None:
                outcomes.append(PushOutcome(sku=item.sku, ok=False, status=response.status_code,
                                            error="item missing from WooCommerce's batch answer"))
            elif entry.get("error"):
                error = entry["error"]
                outcomes.append(PushOutcome(sku=item.sku, ok=False, status=response.status_code,
                                            error=f"{error.get('code', 'error')}: {error.get('message', '')}"))
            else:
                outcomes.append(PushOutcome(sku=item.sku, ok=True, status=response.status_code))
        return outcomes

    def fetch_levels(self, channel, session, items):
        by_id = {str(i.external_id): i for i in items}
        response = session.get(self._out_endpoint(channel, self.batch_key(items[0])), auth=self._out_auth(channel),
                               params={"include": ",".join(by_id), "per_page": 100})
        response.raise_for_status()
        levels = {}
        for product in response.json():
            item = by_id.get(str(product.get("id")))
            if item and product.get("stock_quantity") is not None:
                levels[item.sku] = int(product["stock_quantity"])
        return levels
    # ------------------------------------------------------------ outbound (propagation) — END
