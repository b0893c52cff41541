"""StandardWebhook adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class StandardWebhookAdapter(ChannelAdapter):
    kind = "webhook"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # Standard Webhooks (https://www.standardwebhooks.com/) carrying {"events": [...]} in the
    # canonical shape of POST /api/v1/events/. A `whsec_` secret is base64-decoded after the
    # prefix; any other secret is used as UTF-8 bytes. Event ids are namespaced by channel in the
    # ledger, so two partners may both send "event 1".
    def verify_webhook(self, channel, headers, body: bytes) -> bool:
        from channels.adapters.signing import header, standard_webhooks_verify

        if not channel.webhook_secret:
            return False
        return standard_webhooks_verify(channel.webhook_secret, header(headers, "webhook-id"),
                                        header(headers, "webhook-timestamp"), header(headers, "webhook-signature"),
                                        body)

    def read_delivery(self, channel, headers, body: bytes):
        from channels.adapters.base import Delivery
        from channels.adapters.signing import header

        return Delivery(delivery_id=header(headers, "webhook-id") or "", topic="events",
                        extra_headers={"timestamp": header(headers, "webhook-timestamp") or ""})

    def parse_webhook(self, channel, delivery, payload):
        from channels.adapters.canonical import MAX_BATCH, CanonicalError, canonical_event_parse

        events = payload.get("events") if isinstance(payload, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_BATCH:
            raise ValueError(f"Body must be {{\"events\": [...]}} with 1 to {MAX_BATCH} canonical events.")
        parsed = []
        for index, raw in enumerate(events):
            try:
                event = canonical_event_parse(raw, default_source=f"webhook:{channel.slug}")
            except CanonicalError as exc:
                raise ValueError(f"events[{index}]: {exc.code}: {exc.detail}") from None
            event.event_id = f"{channel.slug}:{event.event_id}"
            parsed.append(event)
        return parsed
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # A POST of {"sku", "available", "at"} to settings.target_url (or base_url), signed with
    # Standard Webhooks (webhook-id / webhook-timestamp / webhook-signature) when the channel has
    # a webhook_secret. One SKU per delivery. Each delivery carries the quantity current when it
    # was sent, so every attempt is a new message with a new webhook-id; `at` lets a receiver
    # drop a delivery older than one it already applied.
    max_batch = 1

    def push(self, channel, session, items):
        import json
        import time
        import uuid

        from django.utils import timezone

        from channels.adapters import http
        from channels.adapters.base import PushOutcome
        from channels.adapters.signing import standard_webhooks_sign

        target = channel.settings.get("target_url") or channel.base_url
        if not target:
            raise ValueError("webhook channel needs settings.target_url or base_url")
        outcomes = []
        for item in items:
            body = json.dumps({"sku": item.sku, "available": item.quantity, "at": timezone.now().isoformat()},
                              separators=(",", ":")).encode()
            msg_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
            headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": timestamp}
            if channel.webhook_secret:
                headers["webhook-signature"] = standard_webhooks_sign(channel.webhook_secret, msg_id, timestamp, body)
            response = session.post(target, data=body, headers=headers)
            if 200 <= response.status_code < 300:
                outcomes.append(PushOutcome(sku=item.sku, ok=True, status=response.status_code))
            else:
                outcomes.extend(http.failed([item], response))
        return outcomes
    # ------------------------------------------------------------ outbound (propagation) — END
