"""Shopify adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter
from core.parsing import json_int


class ShopifyAdapter(ChannelAdapter):
    kind = "shopify"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # https://shopify.dev/docs/apps/build/webhooks/verify-deliveries : X-Shopify-Hmac-SHA256 is
    # base64(HMAC-SHA256(secret, raw body)); X-Shopify-Webhook-Id identifies the delivery,
    # X-Shopify-Event-Id the event (shared by duplicate deliveries of one event).
    restock_types = {"return": "return", "cancel": "cancellation", "legacy_restock": "return"}

    def verify_webhook(self, channel, headers, body: bytes) -> bool:
        from channels.adapters.signing import header, hmac_sha256_base64, signature_matches

        if not channel.webhook_secret:
            return False
        expected = hmac_sha256_base64(channel.webhook_secret.encode("utf-8"), body)
        return signature_matches(expected, header(headers, "X-Shopify-Hmac-Sha256"))

    def read_delivery(self, channel, headers, body: bytes):
        from channels.adapters.base import Delivery
        from channels.adapters.signing import header

        extra = {name: header(headers, f"X-Shopify-{name}") for name in
                 ("Event-Id", "Triggered-At", "Shop-Domain", "API-Version")}
        return Delivery(delivery_id=header(headers, "X-Shopify-Webhook-Id") or "",
                        topic=header(headers, "X-Shopify-Topic") or "",
                        extra_headers={k: v for k, v in extra.items() if v})

    def parse_webhook(self, channel, delivery, payload):
        from django.utils.dateparse import parse_datetime

        from channels.adapters.base import CanonicalEvent

        if not isinstance(payload, dict):
            raise ValueError("Shopify payload must be a JSON object.")
        slug, topic = channel.slug, delivery.topic

        def when(value):
            return parse_datetime(value) if isinstance(value, str) else None

        def ids(line):
            return {k: str(line[k]) for k in ("variant_id", "product_id") if line.get(k)}

        if topic in ("orders/create", "orders/cancelled"):
            order_id = str(payload["id"])
            events = []
            for line in payload.get("line_items") or []:
                if line.get("gift_card"):
                    continue  # no stock behind a gift card
                quantity = json_int(line.get("quantity") or 0)
                if topic == "orders/cancelled":
                    # Stock back only for what never shipped.
                    status = line.get("fulfillment_status")
                    if status == "fulfilled":
                        quantity = 0
                    elif status == "partial":
                        quantity = json_int(line.get("fulfillable_quantity") or 0)
                if quantity <= 0:
                    continue
                selling = topic == "orders/create"
                events.append(CanonicalEvent(
                    event_id=f"{slug}:order:{order_id}:line:{line['id']}:{'sale' if selling else 'cancel'}",
                    type="sale" if selling else "cancellation",
                    quantity=quantity,
                    occurred_at=when(payload.get("created_at" if selling else "cancelled_at")),
                    sku=line.get("sku") or None,
                    source=f"shopify:{slug}",
                    reference=order_id,
                    metadata={"order_id": order_id, "line_id": str(line["id"]), "ids": ids(line),
                              "restock": not selling, "order_name": payload.get("name") or ""},
                ))
            return events
        if topic == "refunds/create":
            order_id = str(payload["order_id"])
            events = []
            for item in payload.get("refund_line_items") or []:
                kind = self.restock_types.get(str(item.get("restock_type") or "").lower())
                quantity = json_int(item.get("quantity") or 0)
                if kind is None or quantity <= 0:
                    continue  # no_restock: money back, goods not back on the shelf
                line = item.get("line_item") or {}
                events.append(CanonicalEvent(
                    event_id=f"{slug}:refund:{payload['id']}:{item['id']}",
                    type=kind,
                    quantity=quantity,
                    occurred_at=when(payload.get("created_at")),
                    sku=line.get("sku") or None,
                    source=f"shopify:{slug}",
                    reference=order_id,
                    metadata={"order_id": order_id, "line_id": str(item.get("line_item_id") or line.get("id")),
                              "ids": ids(line), "restock": True, "refund_id": str(payload["id"])},
                ))
            return events
        if topic == "inventory_levels/update":
            if payload.get("available") is None:
                return []  # untracked item: no level to compare
            return [CanonicalEvent(
                event_id=f"{slug}:level:{delivery.delivery_id}",
                type="count",
                quantity=json_int(payload["available"]),  # may be negative (oversold)
                occurred_at=when(payload.get("updated_at")),
                external_id=str(payload["inventory_item_id"]),
                source=f"shopify:{slug}",
                metadata={"channel_level": True, "channel_location_id": str(payload.get("location_id") or "")},
            )]
        return []  # a topic we do not act on (stored, marked ignored)
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # POST {base}/admin/api/{version}/inventory_levels/set.json sets the `available` quantity of
    # one inventory item at one location (Shopify Admin REST, InventoryLevel "set"): one item per
    # call, hence one item per batch. A 429 carries `Retry-After` in (float) seconds.
    max_batch = 1
    fetch_batch = 50  # GET inventory_levels.json takes up to 50 inventory_item_ids

    def _out_api(self, channel) -> str:
        from channels.adapters.http import root

        return f"{root(channel)}/admin/api/{channel.settings.get('api_version') or '2024-01'}"

    def _out_auth(self, channel) -> dict:
        return {"X-Shopify-Access-Token": channel.credentials.get("access_token", "")}

    def _out_location(self, channel, item) -> str:
        location = item.attributes.get("location_id") or channel.settings.get("location_id")
        if not location:
            raise ValueError("Shopify channel needs settings.location_id")
        return location

    def push(self, channel, session, items):
        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        outcomes = []
        for item in items:
            body = {"location_id": http.num(self._out_location(channel, item)),
                    "inventory_item_id": http.num(item.external_id), "available": item.quantity}
            response = session.post(f"{self._out_api(channel)}/inventory_levels/set.json", json=body,
                                    headers=self._out_auth(channel))
            if 200 <= response.status_code < 300:
                outcomes.append(PushOutcome(sku=item.sku, ok=True, status=response.status_code))
            else:
                outcomes.extend(http.failed([item], response))
        return outcomes

    def fetch_levels(self, channel, session, items):
        by_id = {str(i.external_id): i for i in items}
        location = str(self._out_location(channel, items[0]))
        response = session.get(f"{self._out_api(channel)}/inventory_levels.json", headers=self._out_auth(channel),
                               params={"inventory_item_ids": ",".join(by_id), "location_ids": location})
        response.raise_for_status()
        levels = {}
        for level in response.json().get("inventory_levels", []):
            item = by_id.get(str(level.get("inventory_item_id")))
            if item and str(level.get("location_id")) == location and level.get("available") is not None:
                levels[item.sku] = int(level["available"])
        return levels
    # ------------------------------------------------------------ outbound (propagation) — END
