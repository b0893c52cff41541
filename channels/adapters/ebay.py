"""Ebay adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class EbayAdapter(ChannelAdapter):
    kind = "ebay"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # POST {base}/sell/inventory/v1/bulk_update_price_quantity, up to 25 inventory items per call
    # (eBay Sell Inventory API bulkUpdatePriceQuantity). The quantity is set both on the inventory
    # item (shipToLocationAvailability) and on its live offer, as eBay's bulk-update guide asks.
    # Each item's result is in `responses[].statusCode` (the call itself answers 200 or 207).
    max_batch = 25
    fetch_batch = 25  # bulk_get_inventory_item takes up to 25 SKUs

    def _out_auth(self, channel) -> dict:
        return {"Authorization": f"Bearer {channel.credentials.get('access_token', '')}",
                "Content-Language": channel.settings.get("content_language", "en-US")}

    def _out_ebay_sku(self, item) -> str:
        return str(item.attributes.get("sku") or item.sku)

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
                errors = entry.get("errors") or [{}]
                message = "; ".join(f"{e.get('errorId', '')} {e.get('message', '')}".strip() for e in errors)
                outcomes.append(PushOutcome(sku=item.sku, ok=False, status=response.status_code,
                                            error=f"statusCode {entry.get('statusCode')}: {message}"))
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
