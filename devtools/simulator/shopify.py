"""Shopify, as the simulator imitates it.

GraphQL Admin API (what the adapter speaks): POST .../admin/api/{version}/graphql.json, authenticated
by `X-Shopify-Access-Token`. The simulator parses just enough GraphQL: it recognises the operation
by its field (`inventorySetQuantities`, `nodes`/`inventoryItem` with `inventoryLevel`), takes the
data from the variables (and the `@idempotent(key: ...)` directive from the text), and answers a
fixed selection (more fields than asked is harmless to a client that reads what it asked for).

- `inventorySetQuantities` (name "available" only): `changeFromQuantity` checked against the stored
  level (CHANGE_FROM_QUANTITY_STALE), required on every quantity from 2026-04 (explicit null opts
  out); before 2026-01 `compareQuantity` / `ignoreCompareQuantity` (COMPARE_QUANTITY_REQUIRED,
  COMPARE_QUANTITY_STALE). A call with user errors changes nothing. `@idempotent(key:)` (required
  from 2026-04): the same key with the same variables answers the first answer again without
  applying anything; with other variables IDEMPOTENCY_KEY_PARAMETER_MISMATCH; after a failed call
  IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED. At most 250 quantities.
- Reads: `nodes(ids: [InventoryItem gids])` or `inventoryItem(id:)` with
  `inventoryLevel(locationId:) { quantities(names: ["available"]) }`; null where no level is kept.
- Cost: a leaky bucket per store (default 1,000 points, 100 restored per second); a mutation costs
  10, a read 1 + 2 per item (the simulator's numbers). Every answer carries
  `extensions.cost.throttleStatus`; a call the bucket cannot hold is answered
  `{"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}` (HTTP 200).
- `POST /_sim/shopify {"store", "throttle": {"maximum", "restore_rate", "available"},
  "lose_answer_next": n}` sets the bucket, or makes the next n mutations apply and then close the
  connection without answering (a lost answer); it answers the store's bucket, how many mutations
  were applied and how many were answered again from an idempotency key.

Levels are kept per inventory item (its legacy numeric id, as `/_sim/levels` shows them) at the
location it was first set at; the same item at another location is kept as "{item}@{location}".

Legacy REST (kept for the tools that still call it; the adapter does not): POST
.../inventory_levels/set.json and GET .../inventory_levels.json. A simulated 429 (faults) carries
`Retry-After` in float seconds. A store registered with `echo` (POST /_sim/stores) sends
`inventory_levels/update` back to its webhook URL after each change, as the real one notifies the
app of the change it caused. Order webhooks: `orders/create`, signed with `X-Shopify-Hmac-Sha256`
(base64 HMAC-SHA256 of the raw body with the app's secret).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from devtools.simulator.core import Marketplace, Route, b64_hmac, deliver, num, register

CHANGE_FROM_SINCE = "2026-01"  # changeFromQuantity and @idempotent exist
REQUIRED_SINCE = "2026-04"  # ... and are required
REASONS = {"correction", "cycle_count_available", "damaged", "movement_created", "movement_updated",
           "movement_received", "movement_canceled", "other", "promotion", "quality_control", "received",
           "reservation_created", "reservation_deleted", "reservation_updated", "restock", "safety_stock",
           "shrinkage"}
MUTATION_COST = 10
BUCKET = {"maximum": 1000.0, "restore_rate": 100.0}
MAX_INPUT = 250
_IDEMPOTENT = re.compile(r'@idempotent\s*\(\s*key\s*:\s*(?:"((?:[^"\\]|\\.)*)"|\$(\w+))\s*\)')


# ---------------------------------------------------------------------- GraphQL


def graphql(req, store, match, body):
    version = match["version"]
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        req.answer(400, {"errors": [{"message": "Bad Request: expected a JSON object with a query."}]})
        return 0
    query, variables = body["query"], body.get("variables") if isinstance(body.get("variables"), dict) else {}
    if "inventorySetQuantities" in query:
        payload_input = variables.get("input") if isinstance(variables.get("input"), dict) else {}
        quantities = payload_input.get("quantities")
        operation, units, cost = "set", len(quantities) if isinstance(quantities, list) else 0, MUTATION_COST
    elif "inventoryLevel" in query and ("nodes" in query or "inventoryItem" in query):
        ids = variables.get("ids") if isinstance(variables.get("ids"), list) else [variables.get("id")]
        operation, units, cost = "levels", len(ids), 1 + 2 * len(ids)
    else:
        req.answer(200, {"errors": [{"message": "The simulator answers inventorySetQuantities and inventory "
                                                "level reads only.", "extensions": {"code": "BAD_REQUEST"}}]})
        return 0
    s = req.state.store(store, "shopify")
    with req.state.lock:
        log = _log(s)
        call = {"operation": operation, "version": version, "variables": variables, "key": None,
                "outcome": "answered", "codes": [], "at": time.time()}
        log["calls"].append(call)
        if _spend(s, cost) is None:
            call["outcome"] = "throttled"
            req.answer(200, {"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": _cost(s, cost, None)}})
            return 0
        if operation == "set":
            data, lost = _set_quantities(req, s, version, query, variables, call)
        else:
            data, lost = _levels(s, variables), False
        answer = {"data": data, "extensions": {"cost": _cost(s, cost, cost)}} if isinstance(data, dict) else {
            "errors": data, "extensions": {"cost": _cost(s, cost, cost)}}
        if not isinstance(data, dict):
            call["outcome"], call["codes"] = "error", [e["extensions"]["code"] for e in data]
    if lost:  # applied, then the connection drops: the client never learns the outcome
        req.close_connection = True
        with contextlib.suppress(OSError):
            req.connection.shutdown(socket.SHUT_RDWR)
        req._status = None
        return units
    req.answer(200, answer)
    return units


def _log(s) -> dict:
    """What the store's GraphQL endpoint saw: every call (operation, version, variables, key,
    outcome: applied, user_errors, replayed, throttled, error, answered), the applied mutations,
    replays, and lost answers still to simulate."""
    return s.details.setdefault("graphql", {"calls": [], "applied": [], "replays": 0, "lose_answer_next": 0})


def _bucket(s) -> dict:
    bucket = s.details.setdefault("bucket", {**BUCKET, "available": BUCKET["maximum"], "at": time.monotonic()})
    now = time.monotonic()
    bucket["available"] = min(bucket["maximum"], bucket["available"] + (now - bucket["at"]) * bucket["restore_rate"])
    bucket["at"] = now
    return bucket


def _spend(s, cost: float):
    bucket = _bucket(s)
    if cost > bucket["available"]:
        return None
    bucket["available"] -= cost
    return bucket


def _cost(s, requested: float, actual: float | None) -> dict:
    bucket = _bucket(s)
    return {"requestedQueryCost": requested, "actualQueryCost": actual,
            "throttleStatus": {"maximumAvailable": float(bucket["maximum"]),
                               "currentlyAvailable": round(bucket["available"], 3),
                               "restoreRate": float(bucket["restore_rate"])}}


def _since(version: str, floor: str) -> bool:
    return version == "unstable" or version >= floor


def _legacy(value, kind: str) -> str | None:
    """The numeric part of a gid://shopify/{kind}/N (a bare id is accepted too)."""
    text = str(value or "")
    if text.startswith("gid://"):
        prefix = f"gid://shopify/{kind}/"
        return text[len(prefix):].split("?")[0] or None if text.startswith(prefix) else None
    return text or None


def _key(s, item: str, location: str, *, claim: bool = False) -> str:
    """Where an item's level at a location is kept: under the item id at its first location."""
    homes = s.details.setdefault("locations", {})
    home = homes.get(item)
    if home is None and claim:
        homes[item] = home = location
    return item if home is None or home == location else f"{item}@{location}"


def _user_error(field: list, code: str, message: str) -> dict:
    return {"field": field, "code": code, "message": message}


def _set_quantities(req, s, version: str, query: str, variables: dict, call: dict):
    """Returns (data or a list of top-level errors, lose the answer); notes the outcome in `call`."""
    payload_input = variables.get("input")
    match = _IDEMPOTENT.search(query)
    key = (match.group(1) if match.group(1) is not None else variables.get(match.group(2))) if match else None
    call["key"] = key
    if not isinstance(payload_input, dict) or not isinstance(payload_input.get("quantities"), list):
        return [{"message": "Variable $input of type InventorySetQuantitiesInput! was provided invalid value",
                 "extensions": {"code": "INVALID_VARIABLE"}}], False
    quantities = payload_input["quantities"]
    if len(quantities) > MAX_INPUT:
        return [{"message": f"The input array size of {len(quantities)} is greater than the maximum allowed of "
                            f"{MAX_INPUT}.", "extensions": {"code": "MAX_INPUT_SIZE_EXCEEDED"}}], False
    if _since(version, REQUIRED_SINCE) and not key:
        return [{"message": "inventorySetQuantities requires the @idempotent directive with a key from 2026-04.",
                 "extensions": {"code": "BAD_REQUEST"}}], False
    if _since(version, REQUIRED_SINCE) and any(isinstance(q, dict) and "changeFromQuantity" not in q
                                               for q in quantities):
        return [{"message": "Every quantity must include changeFromQuantity (null opts out) from 2026-04.",
                 "extensions": {"code": "BAD_REQUEST"}}], False
    fingerprint = json.dumps(variables, sort_keys=True)
    log = _log(s)
    keys = s.details.setdefault("idempotency", {})
    if key is not None and _since(version, CHANGE_FROM_SINCE) and key in keys:
        earlier = keys[key]
        if earlier["fingerprint"] != fingerprint:
            error = _user_error(["idempotencyKey"], "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
                                "The same idempotency key cannot be used with different operation parameters.")
        elif earlier["failed"]:
            error = _user_error(["idempotencyKey"], "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
                                "A previous request with this idempotency key failed. Retry with a new "
                                "idempotency key.")
        else:
            log["replays"] += 1
            call["outcome"] = "replayed"
            return earlier["data"], False
        call["outcome"], call["codes"] = "user_errors", [error["code"]]
        return _payload(None, [error]), False
    errors, changes = _validate(req, s, version, payload_input)
    call["outcome"], call["codes"] = ("user_errors" if errors else "applied"), [e["code"] for e in errors]
    if errors:
        data = _payload(None, errors)
    else:
        group = f"gid://shopify/InventoryAdjustmentGroup/{uuid.uuid4().int % 10**12}"
        for item, location, quantity, _before in changes:
            req.state.set_level(s.name, "shopify", _key(s, item, location, claim=True), quantity)
        log["applied"].append({"key": key, "version": version, "reason": payload_input.get("reason"),
                               "reference": payload_input.get("referenceDocumentUri"),
                               "quantities": [{"item": i, "location": loc, "quantity": q, "before": b}
                                              for i, loc, q, b in changes]})
        data = _payload({"id": group, "reason": payload_input.get("reason"),
                         "referenceDocumentUri": payload_input.get("referenceDocumentUri"),
                         "changes": [{"name": "available", "delta": q - b, "quantityAfterChange": q,
                                      "item": {"id": f"gid://shopify/InventoryItem/{i}"},
                                      "location": {"id": f"gid://shopify/Location/{loc}"}}
                                     for i, loc, q, b in changes]}, [])
        updated = datetime.now(UTC).isoformat()
        for item, location, quantity, _before in changes:
            _maybe_echo(req.state, s.name, {"inventory_item_id": num(item), "location_id": num(location),
                                            "available": quantity, "updated_at": updated})
    if key is not None and _since(version, CHANGE_FROM_SINCE):
        keys[key] = {"fingerprint": fingerprint, "data": data, "failed": bool(errors)}
    lose = not errors and log["lose_answer_next"] > 0
    if lose:
        log["lose_answer_next"] -= 1
    return data, lose


def _payload(group, errors: list) -> dict:
    return {"inventorySetQuantities": {"inventoryAdjustmentGroup": group, "userErrors": errors}}


def _validate(req, s, version: str, payload_input: dict):
    """User errors, else the changes [(item, location, quantity, level before)]."""
    errors, changes = [], []
    if payload_input.get("name") != "available":
        errors.append(_user_error(["input", "name"], "INVALID_NAME",
                                  "The simulator sets the 'available' quantity only."))
    if payload_input.get("reason") not in REASONS:
        errors.append(_user_error(["input", "reason"], "INVALID_REASON", "The specified reason is invalid."))
    reference = payload_input.get("referenceDocumentUri")
    if reference is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", str(reference)):
        errors.append(_user_error(["input", "referenceDocumentUri"], "INVALID_REFERENCE_DOCUMENT",
                                  "The specified reference document is invalid."))
    cas = _since(version, CHANGE_FROM_SINCE)
    ignore = bool(payload_input.get("ignoreCompareQuantity"))
    seen: set = set()
    for n, q in enumerate(payload_input["quantities"]):
        path = ["input", "quantities", str(n)]
        q = q if isinstance(q, dict) else {}
        item, location = _legacy(q.get("inventoryItemId"), "InventoryItem"), _legacy(q.get("locationId"), "Location")
        quantity = q.get("quantity")
        if item is None or req.item_error(s.name, item):
            errors.append(_user_error([*path, "inventoryItemId"], "INVALID_INVENTORY_ITEM",
                                      "The specified inventory item could not be found."))
            continue
        if location is None:
            errors.append(_user_error([*path, "locationId"], "INVALID_LOCATION",
                                      "The specified location could not be found."))
            continue
        if (item, location) in seen:
            errors.append(_user_error(path, "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
                                      "The combination of inventoryItemId and locationId must be unique."))
            continue
        seen.add((item, location))
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            errors.append(_user_error([*path, "quantity"], "INVALID_QUANTITY_TOO_LOW", "quantity must be an Int."))
            continue
        if quantity > 1_000_000_000:
            errors.append(_user_error([*path, "quantity"], "INVALID_QUANTITY_TOO_HIGH",
                                      "The total quantity can't be higher than 1,000,000,000."))
            continue
        before = s.levels.get(_key(s, item, location), 0)
        if cas and "changeFromQuantity" in q:
            if q["changeFromQuantity"] is not None and q["changeFromQuantity"] != before:
                errors.append(_user_error([*path, "changeFromQuantity"], "CHANGE_FROM_QUANTITY_STALE",
                                          "The changeFromQuantity value does not match persisted value."))
                continue
        elif not ignore:
            if q.get("compareQuantity") is None:
                errors.append(_user_error([*path, "compareQuantity"], "COMPARE_QUANTITY_REQUIRED",
                                          "The compareQuantity argument must be given to each quantity or ignored "
                                          "using ignoreCompareQuantity."))
                continue
            if q["compareQuantity"] != before:
                errors.append(_user_error([*path, "compareQuantity"], "COMPARE_QUANTITY_STALE",
                                          "The compareQuantity value does not match persisted value."))
                continue
        changes.append((item, location, quantity, before))
    return errors, changes


def _levels(s, variables: dict) -> dict:
    location = _legacy(variables.get("locationId"), "Location")
    single = not isinstance(variables.get("ids"), list)
    ids = [variables.get("id")] if single else variables["ids"][:MAX_INPUT]
    nodes = []
    for value in ids:
        item = _legacy(value, "InventoryItem")
        if item is None:
            nodes.append(None)
            continue
        level = s.levels.get(_key(s, item, location)) if location else None
        nodes.append({"id": f"gid://shopify/InventoryItem/{item}", "inventoryLevel": None if level is None else {
            "id": f"gid://shopify/InventoryLevel/{item}?inventory_item_id={item}",
            "location": {"id": f"gid://shopify/Location/{location}"},
            "quantities": [{"name": "available", "quantity": level}]}})
    return {"inventoryItem": nodes[0]} if single else {"nodes": nodes}


def control(state, body: dict) -> dict:
    """POST /_sim/shopify: the store's cost bucket and lost answers (see the module docstring)."""
    s = state.store(body.get("store") or "default", "shopify")
    with state.lock:
        bucket = _bucket(s)
        throttle = body.get("throttle")
        if throttle is not None:
            if not isinstance(throttle, dict):
                raise ValueError("throttle must be an object {maximum, restore_rate, available}.")
            try:
                for name in ("maximum", "restore_rate", "available"):
                    if name in throttle:
                        bucket[name] = float(throttle[name])
            except (TypeError, ValueError):
                raise ValueError("throttle values must be numbers.") from None
            bucket["available"] = min(bucket["available"], bucket["maximum"])
        log = _log(s)
        if "lose_answer_next" in body:
            log["lose_answer_next"] = int(body["lose_answer_next"])
        return {"store": s.name, "throttle": {k: bucket[k] for k in ("maximum", "restore_rate", "available")},
                "applied": len(log["applied"]), "replays": log["replays"], "lose_answer_next": log["lose_answer_next"]}


# ---------------------------------------------------------------------- legacy REST


def inventory_levels_set(req, store, match, body):
    if not isinstance(body, dict) or not isinstance(body.get("available"), int) or \
            body.get("inventory_item_id") is None or body.get("location_id") is None:
        req.answer(422, {"errors": {"available": ["must be an integer"]}})
        return 1
    item, location = str(body["inventory_item_id"]), str(body["location_id"])
    if req.item_error(store, item):
        req.answer(422, {"errors": ["Inventory item does not have inventory tracking enabled"]})
        return 1
    s = req.state.store(store, "shopify")
    with req.state.lock:
        req.state.set_level(store, "shopify", _key(s, item, location, claim=True), body["available"])
    updated = datetime.now(UTC).isoformat()
    level = {"inventory_item_id": body["inventory_item_id"], "location_id": body["location_id"],
             "available": body["available"], "updated_at": updated}
    req.answer(200, {"inventory_level": level})
    _maybe_echo(req.state, store, level)
    return 1


def inventory_levels_get(req, store, match, body):
    ids = [i for i in req.query.get("inventory_item_ids", "").split(",") if i]
    s = req.state.store(store, "shopify")
    with req.state.lock:
        rows = [{"inventory_item_id": int(i) if i.isdigit() else i,
                 "location_id": num(s.details.get("locations", {}).get(i, req.query.get("location_ids", ""))),
                 "available": s.levels[i]} for i in ids if i in s.levels]
    req.answer(200, {"inventory_levels": rows})
    return len(rows)


# ---------------------------------------------------------------------- webhooks


def _maybe_echo(state, store: str, level: dict) -> None:
    s = state.store(store)
    if not (s.echo and s.webhook_url and s.secret):
        return
    body = json.dumps(level).encode()
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": "inventory_levels/update",
               "X-Shopify-Hmac-Sha256": b64_hmac(s.secret.encode(), body),
               "X-Shopify-Webhook-Id": str(uuid.uuid4()), "X-Shopify-Event-Id": str(uuid.uuid4()),
               "X-Shopify-Shop-Domain": f"{store}.myshopify.com", "X-Shopify-API-Version": "2026-10",
               "X-Shopify-Triggered-At": datetime.now(UTC).isoformat()}
    threading.Thread(target=deliver, args=(s.webhook_url, body, headers), daemon=True).start()


def order_webhook(state, *, store, order_id, lines, now, topic, secret):
    stamp = now.isoformat()
    items = [{"id": order_id * 100 + n, "variant_id": num(line.get("variant_id") or line.get("external_id") or n),
              "product_id": num(line.get("product_id") or n), "sku": line.get("sku") or "",
              "quantity": int(line["quantity"]), "title": line.get("sku") or "item", "fulfillment_status": None,
              "gift_card": False} for n, line in enumerate(lines, 1)]
    payload = {"id": order_id, "name": f"#{order_id}", "created_at": stamp, "line_items": items}
    headers = {"X-Shopify-Topic": topic or "orders/create", "X-Shopify-Webhook-Id": str(uuid.uuid4()),
               "X-Shopify-Event-Id": str(uuid.uuid4()), "X-Shopify-Shop-Domain": f"{store}.myshopify.com",
               "X-Shopify-API-Version": "2026-10", "X-Shopify-Triggered-At": stamp}
    raw = json.dumps(payload).encode()
    headers["X-Shopify-Hmac-Sha256"] = b64_hmac(secret.encode(), raw)
    return raw, headers


SHOPIFY = register(Marketplace(
    kind="shopify",
    routes=(
        Route("POST", re.compile(r"^/admin/api/(?P<version>[^/]+)/graphql\.json$"), graphql),
        Route("POST", re.compile(r"^/admin/api/[^/]+/inventory_levels/set\.json$"), inventory_levels_set),
        Route("GET", re.compile(r"^/admin/api/[^/]+/inventory_levels\.json$"), inventory_levels_get),
    ),
    authorized=lambda headers: bool(headers.get("X-Shopify-Access-Token")),
    rate_limit_headers=lambda seconds: {"Retry-After": f"{seconds:.1f}"},  # Shopify: float seconds
    order_webhook=order_webhook,
    control=control,
))
