"""Shopify adapter.

Inbound: order, refund and inventory-level webhooks. Outbound: the GraphQL Admin API
(`inventorySetQuantities` to push, `nodes { ... on InventoryItem { inventoryLevel } }` to read
back), with compare-and-set (`changeFromQuantity`), `@idempotent` keys per push attempt and
pacing by Shopify's cost-based throttle. docs/propagation.md#shopify-graphql-admin-api gives the
rules and the Shopify documentation each one follows.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from channels.adapters.base import ChannelAdapter, PushItem, PushOutcome
from core.parsing import json_int

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- outbound
# Versions (https://shopify.dev/docs/api/admin-graphql/latest/mutations/inventorySetQuantities):
# inventorySetQuantities exists since 2024-07; before 2026-01 the compare-and-set is
# `compareQuantity` per quantity or `ignoreCompareQuantity: true` for the call; 2026-01 adds
# `changeFromQuantity` (an explicit value, null included, overrides compareQuantity) and the
# optional `@idempotent` directive; from 2026-04 both are required (null opts a quantity out).
CHANGE_FROM_SINCE = "2026-01"
MAX_QUANTITIES = 250
REASON = "correction"  # one of the documented reasons for setting quantities
REFERENCE = "gid://stockline/ChannelPush/{key}"  # our push attempt; the preferred GID form
CAS_ROUNDS = 3  # refused compare-and-sets read back and retried within one push, then give up
MAX_CALLS = 8  # mutation calls in one push (re-keyed and compare-and-set rounds included)
INLINE_WAIT = 2.0  # seconds of cost-budget wait slept before a call; longer ones end the push
STALE = {"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"}
# "A previous request with this idempotency key failed. Retry with a new idempotency key." (and a
# key that named other parameters): the call was not applied, so it is sent again with a new key.
REKEY = {"IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED", "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"}
DEFAULT_COST = {"set": 10.0, "levels": 2.0}  # per call / per item read, until Shopify tells us
_KEY_NAMESPACE = uuid.UUID("6f1d7c1e-2b7a-4c8e-9a51-3c0f5d2e8b40")

_SET_MUTATION = ("mutation StocklineSetAvailable($input: InventorySetQuantitiesInput!) {{ "
                 "inventorySetQuantities(input: $input){directive} {{ "
                 "inventoryAdjustmentGroup {{ id }} userErrors {{ code field message }} }} }}")
_LEVELS_QUERY = ("query StocklineLevels($ids: [ID!]!, $locationId: ID!) { nodes(ids: $ids) { "
                 "... on InventoryItem { id inventoryLevel(locationId: $locationId) { "
                 "quantities(names: [\"available\"]) { name quantity } } } } }")


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
    # POST {base}/admin/api/{version}/graphql.json, X-Shopify-Access-Token. One push is one
    # inventorySetQuantities call for one location's listings (up to 250 quantities: every input
    # array is capped at 250, https://shopify.dev/docs/api/usage/limits), plus, only when Shopify
    # refuses a compare-and-set, a read of the refused levels and the call again.
    max_batch = MAX_QUANTITIES
    fetch_batch = MAX_QUANTITIES  # nodes(ids:) takes up to 250 ids

    def batch_key(self, item: PushItem) -> str:
        """Batches are cut per location (the listing's `location_id`, else the channel's)."""
        return str(item.attributes.get("location_id") or "")

    def push(self, channel, session, items):
        return _SetQuantities(channel, _GraphQL(channel, session), items).run()

    def fetch_levels(self, channel, session, items):
        try:
            levels = _read_levels(_GraphQL(channel, session), items)
        except _CallFailed as exc:
            raise RuntimeError(exc.answer.error or f"HTTP {exc.answer.status}") from None
        return {sku: level for sku, level in levels.items() if level is not None}
    # ------------------------------------------------------------ outbound (propagation) — END


def api_version(channel) -> str:
    """The channel's own `settings.api_version`, else the deployment's SHOPIFY_API_VERSION."""
    from django.conf import settings

    return str((channel.settings or {}).get("api_version") or settings.SHOPIFY_API_VERSION)


def gid(kind: str, value) -> str:
    """A Shopify global id; listings and settings may hold the numeric legacy id or the gid."""
    text = str(value).strip()
    return text if text.startswith("gid://") else f"gid://shopify/{kind}/{text}"


def _location(channel, item: PushItem) -> str:
    location = item.attributes.get("location_id") or (channel.settings or {}).get("location_id")
    if not location:
        raise ValueError("Shopify channel needs settings.location_id")
    return gid("Location", location)


@dataclass
class _Answer:
    status: int
    data: dict = field(default_factory=dict)
    retry_after: float | None = None  # throttled: seconds until the bucket holds the call's cost
    error: str = ""


class _CallFailed(Exception):  # noqa: N818 - carries the answer that ended a read
    def __init__(self, answer: _Answer):
        super().__init__(answer.error)
        self.answer = answer


class _GraphQL:
    """One channel's GraphQL endpoint, paced by Shopify's cost-based throttle
    (https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits): every answer carries
    `extensions.cost.throttleStatus` (maximumAvailable, currentlyAvailable, restoreRate); it is
    kept per channel in Redis, and a call whose cost the bucket cannot hold yet waits for it
    (slept when short, else the push ends with a retry-after, like a 429)."""

    def __init__(self, channel, session):
        from channels.adapters.http import root

        self.channel, self.session = channel, session
        self.version = api_version(channel)
        self.url = f"{root(channel)}/admin/api/{self.version}/graphql.json"
        self.headers = {"X-Shopify-Access-Token": (channel.credentials or {}).get("access_token", "")}

    def call(self, operation: str, query: str, variables: dict, *, units: int = 1) -> _Answer:
        from channels.adapters import http

        slept = 0.0
        while (wait := _cost_wait(self.channel.pk, operation, units)) > 0:
            if slept + wait > INLINE_WAIT:
                return _Answer(429, retry_after=wait,
                               error=f"Shopify cost budget: this call can be afforded in {wait:.2f} s")
            time.sleep(wait)  # then asked again: the cost is taken out only when it fits
            slept += wait
        response = self.session.post(self.url, json={"query": query, "variables": variables}, headers=self.headers)
        body = http.json_body(response)
        body = body if isinstance(body, dict) else {}
        extensions = body.get("extensions") if isinstance(body.get("extensions"), dict) else {}
        cost = extensions.get("cost") if isinstance(extensions.get("cost"), dict) else None
        if cost:
            _cost_store(self.channel.pk, operation, units, cost)
        if response.status_code == 429:
            return _Answer(429, retry_after=http.retry_after_seconds(response) or _bucket_need(cost) or 1.0,
                           error=http.describe(response))
        if not 200 <= response.status_code < 300:
            return _Answer(response.status_code, error=http.describe(response))
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        codes = {str((e.get("extensions") or {}).get("code") or "") for e in errors}
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        if "THROTTLED" in codes or any(str(e.get("message", "")).lower() == "throttled" for e in errors):
            # Not executed; retried once the bucket has restored the requested cost.
            need = _bucket_need(cost) or 1.0
            return _Answer(429, retry_after=need, error=f"THROTTLED: the cost bucket needs {need:.2f} s")
        if errors:
            status = 403 if "ACCESS_DENIED" in codes else 500 if "INTERNAL_SERVER_ERROR" in codes else 400
            return _Answer(status, data=data, error="GraphQL: " + "; ".join(
                str(e.get("message") or e)[:200] for e in errors[:3]))
        return _Answer(response.status_code, data=data)


def _bucket_need(cost: dict | None) -> float | None:
    """Seconds until the bucket restores a throttled call's requested cost."""
    try:
        status = cost["throttleStatus"]  # a None or malformed cost is a TypeError/KeyError here
        requested, available = float(cost["requestedQueryCost"]), float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return None
    return max((requested - available) / rate, 0.05) if rate > 0 else None


# The bucket per channel in one Redis hash (max, available, rate, ts on Redis' clock, and the
# last requested cost per unit of each operation), shared by every worker. Waiting takes the
# estimated cost out at once, so two workers (a push and a reconciliation) do not both spend it.
_COST_WAIT = """
local s = redis.call('HMGET', KEYS[1], 'max', 'available', 'rate', 'ts', ARGV[3])
local max, available, rate, ts = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
if max == nil or available == nil or rate == nil or ts == nil or rate <= 0 then return 0 end
local per_unit = tonumber(s[5]) or tonumber(ARGV[1])
local cost = math.min(math.ceil(per_unit * tonumber(ARGV[2])), max)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
available = math.min(max, available + math.max(0, now - ts) * rate / 1000)
if available >= cost then
  redis.call('HSET', KEYS[1], 'available', tostring(available - cost), 'ts', tostring(now))
  return 0
end
return math.ceil((cost - available) * 1000 / rate)
"""
_COST_STORE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'max', ARGV[1], 'available', ARGV[2], 'rate', ARGV[3], 'ts', tostring(now))
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
local rate = tonumber(ARGV[3])
local refill = 0
if rate > 0 then refill = math.ceil(math.max(0, tonumber(ARGV[1]) - tonumber(ARGV[2])) * 1000 / rate) end
redis.call('PEXPIRE', KEYS[1], refill + 600000)
return 1
"""


def cost_key(channel_id: int) -> str:
    return f"stockline:shopify-cost:{channel_id}"


def _cost_wait(channel_id: int, operation: str, units: int) -> float:
    """Seconds to wait before a call of `units` (1 per mutation, items per read) fits the bucket
    as Shopify last described it; 0 when it fits now (or nothing is known yet)."""
    import redis

    from channels.ratelimit import redis_client

    try:
        ms = redis_client().eval(_COST_WAIT, 1, cost_key(channel_id), DEFAULT_COST[operation], max(units, 1),
                                 f"cost:{operation}")
    except redis.RedisError:
        logger.warning("Shopify cost bucket unavailable in Redis; sending unpaced")
        return 0.0
    return int(ms) / 1000.0


def _cost_store(channel_id: int, operation: str, units: int, cost: dict) -> None:
    import redis

    from channels.ratelimit import redis_client

    status = cost.get("throttleStatus") if isinstance(cost.get("throttleStatus"), dict) else {}
    try:
        maximum, available = float(status["maximumAvailable"]), float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return
    requested = cost.get("requestedQueryCost")
    per_unit = (f"cost:{operation}", str(float(requested) / max(units, 1))) \
        if isinstance(requested, int | float) and not isinstance(requested, bool) else ("", "")
    try:
        redis_client().eval(_COST_STORE, 1, cost_key(channel_id), maximum, available, rate, *per_unit)
    except redis.RedisError:
        logger.warning("could not keep Shopify's throttle status in Redis")


def _quantity_index(path, count: int) -> int | None:
    """The quantity a user error names: its `field` path is ["input", "quantities", "<n>", ...]."""
    if not isinstance(path, list):
        return None
    for name, index in zip(path, path[1:], strict=False):
        if name == "quantities":
            try:
                number = int(str(index))
            except ValueError:
                return None
            return number if 0 <= number < count else None
    return None


def _describe(errors: list[dict]) -> str:
    return "; ".join(f"{e.get('code') or 'ERROR'}: {e.get('message') or ''}".strip() for e in errors)[:500]


class _SetQuantities:
    """One push: `inventorySetQuantities` (name "available") for a batch.

    - Compare-and-set: each quantity carries `changeFromQuantity` = what we believe Shopify holds
      (`PushItem.change_from`: our last acknowledged push, or a newer read-back; null when unknown).
      Before 2026-01: `compareQuantity`, or `ignoreCompareQuantity` when a value is unknown.
    - On CHANGE_FROM_QUANTITY_STALE (COMPARE_QUANTITY_STALE) nothing is overwritten blindly: the
      refused levels are read, reported as `PushOutcome.seen` (propagation records the drift), and
      our quantity (computed from committed stock right before this push) is sent again with the
      level read as `changeFromQuantity`. A sale behind the difference arrives as an order webhook
      and is pushed in turn. A refused call changes nothing (the mutation is applied as a whole),
      so the other quantities are sent again with it.
    - Idempotency (2026-01 on): the `@idempotent` key is a UUID derived from the outbox marks the
      items answer (`PushItem.attempt_key`) and the call's variables, so a retry of the same
      attempt (a lost answer, a crash before recording) reuses it and is not applied twice, while
      a newer mark, a re-queued push or a changed value is a new operation with a new key.
    """

    def __init__(self, channel, client: _GraphQL, items: list[PushItem]):
        self.channel, self.client, self.items = channel, client, items
        self.cas = client.version == "unstable" or client.version >= CHANGE_FROM_SINCE
        self.believed: dict[str, int | None] = {i.sku: i.change_from for i in items}
        self.seen: dict[str, int] = {}
        self.outcomes: dict[str, PushOutcome] = {}
        self.salt = 0

    def run(self) -> list[PushOutcome]:
        pending, reads = list(self.items), 0
        for _ in range(MAX_CALLS):
            if not pending:
                break
            pending, read = self._call(pending, stale_reads_left=CAS_ROUNDS - reads)
            reads += read
        if pending:
            self._fail(pending, 409, f"compare-and-set still refused after {reads} read(s) of the current level")
        return [self.outcomes[i.sku] for i in self.items]

    # ---------------------------------------------------------------- one call
    def _call(self, pending: list[PushItem], *, stale_reads_left: int) -> tuple[list[PushItem], int]:
        """Send `pending`; returns what must be sent again and whether levels were read."""
        payload_input = self._input(pending)
        key = self._key(pending, payload_input)
        payload_input["referenceDocumentUri"] = REFERENCE.format(key=key)
        query = _SET_MUTATION.format(directive=f' @idempotent(key: "{key}")' if self.cas else "")
        answer = self.client.call("set", query, {"input": payload_input})
        payload = answer.data.get("inventorySetQuantities")
        if answer.retry_after is not None or answer.error or not isinstance(payload, dict):
            self._fail(pending, answer.status, answer.error or "answer without inventorySetQuantities",
                       retry_after=answer.retry_after)
            return [], 0
        errors = [e for e in payload.get("userErrors") or [] if isinstance(e, dict)]
        if not errors:
            for item in pending:
                self.outcomes[item.sku] = PushOutcome(sku=item.sku, ok=True, status=answer.status,
                                                      seen=self.seen.get(item.sku))
            return [], 0
        codes = {str(e.get("code") or "") for e in errors}
        if codes <= REKEY:
            self.salt += 1  # that key named a failed or different call: this one was not applied
            return pending, 0
        if "IDEMPOTENCY_CONCURRENT_REQUEST" in codes:  # our earlier call with this key still runs
            self._fail(pending, 429, _describe(errors), retry_after=1.0)
            return [], 0
        stale: set[int] = set()
        refused: dict[int, dict] = {}
        whole: list[dict] = []
        for error in errors:
            index = _quantity_index(error.get("field"), len(pending))
            if str(error.get("code") or "") in STALE:
                stale.update(range(len(pending)) if index is None else {index})
            elif index is None:
                whole.append(error)
            else:
                refused[index] = error
        if whole:
            self._fail(pending, 422, _describe(whole))
            return [], 0
        for index, error in refused.items():  # that item's own problem: fails alone, attempt charged
            self.outcomes[pending[index].sku] = PushOutcome(sku=pending[index].sku, ok=False, status=422,
                                                            error=_describe([error]),
                                                            seen=self.seen.get(pending[index].sku))
        again = [item for n, item in enumerate(pending) if n not in refused]
        stale_items = [pending[n] for n in sorted(stale) if n not in refused]
        if not stale_items:
            return again, 0
        if stale_reads_left <= 0:
            self._fail(again, 409, _describe([e for e in errors if str(e.get("code") or "") in STALE]))
            return [], 0
        try:
            levels = _read_levels(self.client, stale_items)
        except _CallFailed as exc:
            self._fail(again, exc.answer.status, exc.answer.error, retry_after=exc.answer.retry_after)
            return [], 1
        for item in stale_items:
            level = levels.get(item.sku)
            self.believed[item.sku] = level  # None: no level there now, so nothing to compare with
            if level is not None and level != item.quantity:
                # (Shopify already showing our quantity is, most likely, an earlier push of ours
                # whose answer was lost: no drift to report.)
                self.seen[item.sku] = level
        logger.info("Shopify refused a compare-and-set on channel %s; levels read: %s", self.channel.slug,
                    {i.sku: levels.get(i.sku) for i in stale_items})
        return again, 1

    def _input(self, pending: list[PushItem]) -> dict:
        quantities = []
        compare = self.cas or all(self.believed[i.sku] is not None for i in pending)
        for item in pending:
            quantity = {"inventoryItemId": gid("InventoryItem", item.external_id),
                        "locationId": _location(self.channel, item), "quantity": item.quantity}
            if self.cas:
                quantity["changeFromQuantity"] = self.believed[item.sku]  # explicit null: no check
            elif compare:
                quantity["compareQuantity"] = self.believed[item.sku]
            quantities.append(quantity)
        payload = {"name": "available", "reason": REASON, "quantities": quantities}
        if not self.cas:
            payload["ignoreCompareQuantity"] = not compare
        return payload

    def _key(self, pending: list[PushItem], payload_input: dict) -> str:
        attempts = sorted(i.attempt_key for i in pending)
        if not all(attempts):  # no outbox mark to tie a retry to (a dead-letter retry): one-off
            return str(uuid.uuid4())
        material = json.dumps({"channel": self.channel.pk, "attempts": attempts, "input": payload_input,
                               "salt": self.salt}, sort_keys=True, separators=(",", ":"))
        return str(uuid.uuid5(_KEY_NAMESPACE, material))

    def _fail(self, items: list[PushItem], status: int | None, error: str, *, retry_after: float | None = None):
        for item in items:
            self.outcomes[item.sku] = PushOutcome(sku=item.sku, ok=False, status=status, error=error,
                                                  retry_after=retry_after, seen=self.seen.get(item.sku))


def _read_levels(client: _GraphQL, items: list[PushItem]) -> dict[str, int | None]:
    """The `available` quantity of each item at its location (None: not stocked there), read with
    `nodes(ids:)` on InventoryItem.inventoryLevel(locationId:), one call per location and 250 ids.
    Raises `_CallFailed` with the answer when a call is throttled or fails."""
    by_location: dict[str, list[PushItem]] = defaultdict(list)
    for item in items:
        by_location[_location(client.channel, item)].append(item)
    levels: dict[str, int | None] = {}
    for location, group in by_location.items():
        for start in range(0, len(group), MAX_QUANTITIES):
            chunk = group[start:start + MAX_QUANTITIES]
            ids = [gid("InventoryItem", i.external_id) for i in chunk]
            variables = {"ids": ids, "locationId": location}
            answer = client.call("levels", _LEVELS_QUERY, variables, units=len(chunk))
            if answer.retry_after is not None and answer.retry_after <= INLINE_WAIT:  # THROTTLED: once more
                time.sleep(answer.retry_after)
                answer = client.call("levels", _LEVELS_QUERY, variables, units=len(chunk))
            nodes = answer.data.get("nodes")
            if answer.retry_after is not None or answer.error or not isinstance(nodes, list):
                raise _CallFailed(answer if answer.error else _Answer(answer.status, retry_after=answer.retry_after,
                                                                      error="answer without nodes"))
            by_id = {str(node.get("id")): node for node in nodes if isinstance(node, dict)}
            for item, item_id in zip(chunk, ids, strict=True):
                levels[item.sku] = _available(by_id.get(item_id))
    return levels


def _available(node) -> int | None:
    level = node.get("inventoryLevel") if isinstance(node, dict) else None
    quantities = level.get("quantities") if isinstance(level, dict) else None
    for quantity in quantities if isinstance(quantities, list) else []:
        if isinstance(quantity, dict) and quantity.get("name") == "available":
            return json_int(quantity.get("quantity"))
    return None
