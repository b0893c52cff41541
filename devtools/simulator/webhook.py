"""The `webhook` kind: a receiver of Standard Webhooks (https://www.standardwebhooks.com/).

- Any other POST carrying `webhook-id` is a stock push {"sku", "available", "at"}: 204, verified
  (401 on a bad signature) when the store was given a secret (POST /_sim/stores), 400 when the
  body is not that shape.
- Order webhooks: canonical events {"events": [{"event_id", "type", "sku", "location", "quantity",
  "occurred_at", "source", "reference"}]}, signed as Standard Webhooks with the channel's secret
  (`whsec_` base64 or UTF-8); every line needs a location.
"""

from __future__ import annotations

import json
import uuid

from channels.adapters.signing import standard_webhooks_verify
from devtools.simulator.core import Marketplace, Route, register, standard_webhooks_headers


def stock_push(req, store, match, body):
    s = req.state.store(store, "webhook")
    if s.secret and not standard_webhooks_verify(s.secret, req.headers.get("webhook-id"),
                                                 req.headers.get("webhook-timestamp"),
                                                 req.headers.get("webhook-signature"), req.raw_body):
        req.answer(401, {"error": "bad signature"})
        return 0
    if not isinstance(body, dict) or "sku" not in body or not isinstance(body.get("available"), int):
        req.answer(400, {"error": "expected {sku, available, at}"})
        return 0
    req.state.set_level(store, "webhook", body["sku"], body["available"])
    req.answer(204)
    return 1


def order_webhook(state, *, store, order_id, lines, now, topic, secret):
    if not all(line["location"] for line in lines):
        raise ValueError("Canonical events need a location: pass `location` (or a line's `location`).")
    stamp = now.isoformat()
    events = [{"event_id": f"{store}:order:{order_id}:{n}", "type": line.get("type", "sale"),
               "sku": line.get("sku"), "location": line.get("location"), "quantity": int(line["quantity"]),
               "occurred_at": stamp, "source": f"sim:{store}", "reference": str(order_id)}
              for n, line in enumerate(lines, 1)]
    raw = json.dumps({"events": events}).encode()
    return raw, standard_webhooks_headers(f"msg_{uuid.uuid4().hex}", secret, now, raw)


WEBHOOK = register(Marketplace(
    kind="webhook",
    # No path of its own (the channel's target_url is anything): the fallback for a signed POST.
    routes=(Route("POST", None, stock_push, header="webhook-id"),),
    order_webhook=order_webhook,
))
