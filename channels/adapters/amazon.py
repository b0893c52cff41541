"""Amazon adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class AmazonAdapter(ChannelAdapter):
    kind = "amazon"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # PATCH {base}/listings/2021-08-01/items/{sellerId}/{sku}?marketplaceIds=... with a JSON Patch
    # replacing /attributes/fulfillment_availability (SP-API Listings Items "Partially update a
    # listing"): one seller SKU per call. The answer's `status` is ACCEPTED or INVALID (with
    # `issues`), so a 200 can still be a refusal.
    max_batch = 1

    def _out_item_url(self, channel, item) -> str:
        from urllib.parse import quote

        from channels.adapters.http import root

        seller = channel.settings.get("seller_id")
        if not seller:
            raise ValueError("Amazon channel needs settings.seller_id")
        sku = quote(str(item.external_id), safe="")
        return f"{root(channel)}/listings/2021-08-01/items/{quote(str(seller), safe='')}/{sku}"

    def _out_params(self, channel) -> dict:
        return {"marketplaceIds": channel.settings.get("marketplace_id", "")}

    def _out_auth(self, channel) -> dict:
        return {"x-amz-access-token": channel.credentials.get("access_token", "")}

    def push(self, channel, session, items):
        from channels.adapters import http
        from channels.adapters.base import PushOutcome

        outcomes = []
        for item in items:
            body = {"productType": item.attributes.get("product_type", "PRODUCT"),
                    "patches": [{"op": "replace", "path": "/attributes/fulfillment_availability",
                                 "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": item.quantity}]}]}
            response = session.patch(self._out_item_url(channel, item), params=self._out_params(channel), json=body,
                                     headers=self._out_auth(channel))
            if not 200 <= response.status_code < 300:
                outcomes.extend(http.failed([item], response))
                continue
            payload = http.json_body(response) or {}
            if payload.get("status") == "ACCEPTED":
                outcomes.append(PushOutcome(sku=item.sku, ok=True, status=response.status_code))
            else:
                issues = "; ".join(f"{i.get('code', '')} {i.get('message', '')}".strip()
                                   for i in payload.get("issues") or [])
                outcomes.append(PushOutcome(sku=item.sku, ok=False, status=response.status_code,
                                            error=f"status {payload.get('status')}: {issues}"))
        return outcomes

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
