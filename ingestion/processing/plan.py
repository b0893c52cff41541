"""Plan one claimed batch: parse every inbound event into lines and resolve what they name.

Pure reads (a handful of queries for the whole batch, never one per event); nothing is locked or
written here. Each event is planned on its own: whatever goes wrong with one (a payload an
adapter cannot read, an id no int() accepts, a channel setting of the wrong JSON type) fails that
event with its reason and leaves the others alone.

Error classes: `Permanent` (bad payload, unknown SKU/listing/location) fails the event at once
with its reason; `Transient` (not enough stock for a transfer or adjustment yet) and unexpected
errors while applying retry with backoff until the attempt budget is spent.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import cache

from django.db import connection
from django.db.models import Q
from psycopg import sql

from channels.adapters import adapter_for
from channels.adapters.base import CanonicalEvent, Delivery
from channels.adapters.canonical import MAX_QUANTITY, CanonicalError, canonical_event_parse
from channels.models import LISTING_ID_ATTRIBUTES, Channel, ChannelListing
from core.sql import sql_compose
from ingestion.models import InboundEvent, IngestedOrderLine
from inventory.bundles import bundle_components
from inventory.models import Location, MovementType, Sku

logger = logging.getLogger(__name__)

@cache
def _listings_by_attribute_sql() -> str:
    """A channel's listings with any id attribute among the batch's ids, one statement: each arm
    reads its index on (channel, attributes->>key) (channels.models). Rows: the SKU id, then each
    attribute's text in LISTING_ID_ATTRIBUTES order (NULL where absent). Text is compared, so a
    JSON string "123" and a JSON number 123 both match the id "123", which is how the lookup
    keys them."""
    texts = [sql.SQL("(attributes ->> {})").format(sql.Literal(key)) for key in LISTING_ID_ATTRIBUTES]
    return sql_compose("SELECT sku_id, {texts} FROM {table} WHERE channel_id = %(channel)s AND ({arms})",
                       table=ChannelListing._meta.db_table, texts=sql.SQL(", ").join(texts),
                       arms=sql.SQL(" OR ").join(text + sql.SQL(" = ANY(%(ids)s::text[])") for text in texts))


class Permanent(Exception):  # noqa: N818 - a failure class, named for what it means
    """The event cannot succeed as it is: fail it now, with the reason, for a person to act on."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


class Transient(Exception):  # noqa: N818
    """Worth retrying later (with backoff) before giving up."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass
class Line:
    """One resolved stock change of an event."""

    key: str  # the ledger event_key (stable across redeliveries)
    kind: str  # sale | restock | delta | count | transfer
    type: str  # movement type written to the ledger
    quantity: int
    event: CanonicalEvent
    sku_id: int | None = None
    location_id: int | None = None
    to_location_id: int | None = None
    order_line: IngestedOrderLine | None = None  # restocks: the sale they undo
    error: Permanent | None = None
    note: str = ""  # set instead of applying (e.g. unmapped channel location)


@dataclass
class Plan:
    event: InboundEvent
    channel: Channel | None
    lines: list[Line] = field(default_factory=list)


@dataclass
class EventResult:
    status: str
    error_code: str = ""
    error: str = ""
    transient: bool = False
    outcome: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ plan


def events_for(inbound: InboundEvent, channel: Channel | None) -> list[CanonicalEvent]:
    """The canonical events an inbound event stands for (raises Permanent on a bad payload)."""
    if inbound.source == InboundEvent.Source.API:
        try:
            event = canonical_event_parse(inbound.payload, default_source="api")
        except CanonicalError as exc:
            raise Permanent(exc.code, exc.detail) from None
        event.event_id = f"api:{event.event_id}"
        return [event]
    if inbound.payload is None:
        raise Permanent("invalid_json", inbound.last_error or "The body is not valid JSON.")
    adapter = adapter_for(channel)
    payload = inbound.payload
    if inbound.fetched is not None and isinstance(payload, dict):
        payload = {**payload, "_fetched": inbound.fetched}
    delivery = Delivery(delivery_id=inbound.delivery_id, topic=inbound.topic)
    try:
        return adapter.parse_webhook(channel, delivery, payload)
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise Permanent("invalid_payload", f"Payload could not be read: {type(exc).__name__}: {exc}") from None


_SKUS_SQL = "SELECT code, id FROM {table} WHERE code = ANY(%s::text[])"
_LISTINGS_SQL = "SELECT external_id, sku_id FROM {table} WHERE channel_id = %s AND external_id = ANY(%s::text[])"


def _rows(template: str, params: list, **parts: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql_compose(template, **parts), params)
        return cursor.fetchall()


class Resolver:
    """Batch lookups of SKUs, listings, locations and order lines (a few queries per batch)."""

    def __init__(self, plans: list[tuple[InboundEvent, Channel | None, list[CanonicalEvent]]]):
        codes: set[str] = set()
        candidates: defaultdict[int, set[str]] = defaultdict(set)
        order_keys: set[tuple[int | None, str, str | None]] = set()
        for _inbound, channel, events in plans:
            for ev in events:
                if ev.sku:
                    codes.add(ev.sku)
                if channel is not None:
                    candidates[channel.pk] |= set(self._candidates(channel, ev))
                if ev.metadata.get("restock"):
                    order_keys.add((channel.pk if channel else None, ev.metadata.get("order_id") or ev.reference,
                                    ev.metadata.get("line_id")))
        # Composed SQL, not querysets: compiling them was most of a small batch's lookup time.
        self.skus = dict(_rows(_SKUS_SQL, [sorted(codes)], table=Sku._meta.db_table)) if codes else {}
        self.locations = dict(_rows("SELECT code, id FROM {table}", [], table=Location._meta.db_table))
        self.listings: dict[tuple[int, str], int] = {}
        self.attribute_listings: dict[tuple[int, str, str], int] = {}
        for channel_id, ids in candidates.items():
            ids = {i for i in ids if i}
            if not ids:
                continue
            for external_id, sku_id in _rows(_LISTINGS_SQL, [channel_id, sorted(ids)],
                                             table=ChannelListing._meta.db_table):
                self.listings[(channel_id, external_id)] = sku_id
            with connection.cursor() as cursor:
                cursor.execute(_listings_by_attribute_sql(), {"channel": channel_id, "ids": sorted(ids)})
                found = cursor.fetchall()
            for sku_id, *values in found:
                for key, value in zip(LISTING_ID_ATTRIBUTES, values, strict=True):
                    if value is not None:
                        self.attribute_listings[(channel_id, key, value)] = sku_id
        self.order_lines: dict[tuple[int | None, str, str | None], IngestedOrderLine] = {}
        # A bundle's order line was recorded as one line per component, "<line id>#<component>x<units>".
        self.bundle_order_lines: defaultdict[tuple[int | None, str, str | None], list[IngestedOrderLine]] = \
            defaultdict(list)
        if order_keys:
            condition = Q()
            for order_channel_id, order_ref, line_id in order_keys:
                condition |= Q(channel_id=order_channel_id, order_ref=order_ref, line_id=line_id)
                condition |= Q(channel_id=order_channel_id, order_ref=order_ref, line_id__startswith=f"{line_id}#")
            for line in IngestedOrderLine.objects.filter(condition).order_by("id"):
                if (line.channel_id, line.order_ref, line.line_id) in order_keys:
                    self.order_lines[(line.channel_id, line.order_ref, line.line_id)] = line
                else:
                    base = (line.channel_id, line.order_ref, line.line_id.rsplit("#", 1)[0])
                    self.bundle_order_lines[base].append(line)
        # Bundles among every SKU this batch may name (inventory.bundles): their sales sell components.
        self.bundles = bundle_components({*self.skus.values(), *self.listings.values(),
                                          *self.attribute_listings.values()})

    @staticmethod
    def _candidates(channel: Channel, ev: CanonicalEvent) -> list[str]:
        found = [ev.external_id] if ev.external_id else []
        found += [str(v) for v in (ev.metadata.get("ids") or {}).values()]
        if channel.kind == Channel.Kind.WEBHOOK and ev.sku:
            found.append(ev.sku)  # partners may send their own code, mapped through a listing
        return found

    def sku_for(self, channel: Channel | None, ev: CanonicalEvent) -> int:
        """Listing id first (external_id, then the channel's other ids in attributes), then SKU code."""
        if channel is not None:
            for candidate in self._candidates(channel, ev):
                if (channel.pk, candidate) in self.listings:
                    return self.listings[(channel.pk, candidate)]
            for key, value in (ev.metadata.get("ids") or {}).items():
                # The id's own key first, then the others in their listed order (a set's order
                # varied between processes: where two listings share a value, the match did too).
                for attribute in dict.fromkeys((key, *LISTING_ID_ATTRIBUTES)):
                    if (channel.pk, attribute, str(value)) in self.attribute_listings:
                        return self.attribute_listings[(channel.pk, attribute, str(value))]
            if ev.external_id and (channel.pk, "inventory_item_id", ev.external_id) in self.attribute_listings:
                return self.attribute_listings[(channel.pk, "inventory_item_id", ev.external_id)]
        if ev.sku and ev.sku in self.skus:
            return self.skus[ev.sku]
        if channel is not None and (ev.external_id or ev.metadata.get("ids")):
            ids = ev.external_id or ", ".join(f"{k}={v}" for k, v in ev.metadata["ids"].items())
            raise Permanent("unknown_listing", f"No listing on channel '{channel.slug}' for {ids}"
                            + (f" and no SKU with code '{ev.sku}'." if ev.sku else " (and no SKU code sent)."))
        raise Permanent("unknown_sku", f"Unknown SKU '{ev.sku}'.")

    def location_for(self, channel: Channel | None, ev: CanonicalEvent, code: str | None = None) -> int:
        code = code if code is not None else ev.location
        if code:
            if code not in self.locations:
                raise Permanent("unknown_location", f"Unknown location '{code}'.")
            return self.locations[code]
        if channel is None or channel.default_location_id is None:
            raise Permanent("no_default_location",
                            f"Channel '{getattr(channel, 'slug', '')}' has no default location for its sales.")
        return channel.default_location_id

    def channel_location_for(self, channel: Channel, ev: CanonicalEvent) -> int | None:
        """Our location for a channel's own location id (Shopify `location_id`): settings.location_id
        names the one mapped to default_location; settings.locations maps others to our codes."""
        theirs = ev.metadata.get("channel_location_id") or ""
        settings = channel.settings if isinstance(channel.settings, dict) else {}
        if theirs and str(settings.get("location_id", "")) == theirs:
            return channel.default_location_id
        locations = settings.get("locations")
        mapped = locations.get(theirs) if isinstance(locations, dict) else None
        if mapped and mapped in self.locations:
            return self.locations[mapped]
        if not theirs and not settings.get("location_id"):
            return channel.default_location_id
        return None

    def order_line_for(self, channel: Channel | None, ev: CanonicalEvent) -> IngestedOrderLine | None:
        return self.order_lines.get(self._order_key(channel, ev))

    def bundle_order_lines_for(self, channel: Channel | None, ev: CanonicalEvent) -> list[IngestedOrderLine]:
        return self.bundle_order_lines.get(self._order_key(channel, ev), [])

    @staticmethod
    def _order_key(channel: Channel | None, ev: CanonicalEvent) -> tuple[int | None, str, str | None]:
        return channel.pk if channel else None, ev.metadata.get("order_id") or ev.reference, ev.metadata.get("line_id")


def lines_for(channel: Channel | None, events: list[CanonicalEvent], resolver: Resolver) -> list[Line]:
    lines = []
    for ev in events:
        try:
            if isinstance(ev.quantity, bool) or not isinstance(ev.quantity, int) or abs(ev.quantity) > MAX_QUANTITY:
                # Marketplace payloads are not bounded like canonical events: a 10^30-unit line
                # would overflow the ledger's bigint while applying. Refused here, for this line.
                raise Permanent("invalid_quantity", f"Quantity {str(ev.quantity)[:40]} is not a whole number of at "
                                                    f"most {MAX_QUANTITY} units.")
            lines.extend(_bundle_expand(channel, _line_for(channel, ev, resolver), resolver))
        except Permanent as exc:
            lines.append(Line(key=ev.event_id, kind="error", type=ev.type, quantity=ev.quantity, event=ev,
                              error=exc))
    return lines


def plans_make(events: list[InboundEvent], channels: dict[int, Channel]) -> tuple[list[Plan], dict[int, EventResult]]:
    """Plan every event of a batch; an event that cannot be planned gets its failed result instead.

    Parsing is a pure function of the stored payload, so an error there (expected or not) would
    repeat on every attempt: the event fails at once with the reason, for a person to act on
    (and reprocess once the adapter or data is fixed)."""
    failed: dict[int, EventResult] = {}
    parsed = []
    for inbound in events:
        channel = channels.get(inbound.channel_id) if inbound.channel_id is not None else None
        try:
            parsed.append((inbound, channel, events_for(inbound, channel)))
        except Permanent as exc:
            failed[inbound.pk] = EventResult(InboundEvent.Status.FAILED, exc.code, exc.detail)
        except Exception as exc:  # an adapter bug or a payload nobody foresaw: this event only
            logger.warning("inbound event %s could not be parsed", inbound.pk, exc_info=True)
            failed[inbound.pk] = _unexpected(exc)
    resolver = Resolver(parsed)
    plans = []
    for inbound, channel, canonical in parsed:
        try:
            plans.append(Plan(inbound, channel, lines_for(channel, canonical, resolver)))
        except Exception as exc:
            logger.warning("inbound event %s could not be planned", inbound.pk, exc_info=True)
            failed[inbound.pk] = _unexpected(exc)
    return plans, failed


def _unexpected(exc: Exception) -> EventResult:
    return EventResult(InboundEvent.Status.FAILED, "invalid_payload",
                       f"Payload could not be read: {type(exc).__name__}: {exc}")


def _component_line(line: Line, component_id: int, per_bundle: int, *,
                    order_line: IngestedOrderLine | None = None) -> Line:
    """One component's share of a bundle line: its own ledger key and order line id
    ("<line id>#<component>x<units per bundle>", so a later restock finds it and its share)."""
    metadata = dict(line.event.metadata)
    metadata["line_id"] = f"{metadata.get('line_id') or line.key}#{component_id}x{per_bundle}"
    metadata["bundle_units"] = line.quantity
    if line.sku_id is not None:  # the bundle (a restock found from its order lines knows only those)
        metadata["bundle_id"] = line.sku_id
    event = replace(line.event, quantity=line.quantity * per_bundle, metadata=metadata)
    return replace(line, key=f"{line.key}#{component_id}", quantity=line.quantity * per_bundle, event=event,
                   sku_id=component_id, order_line=order_line)


def _bundle_expand(channel: Channel | None, line: Line, resolver: Resolver) -> list[Line]:
    """A line naming a bundle acts on its components (contract, "Bundles"): a sale sells each
    component's share, a restock (a marketplace cancellation or refund) puts back what each
    component's recorded sale took, a canonical cancellation puts each share back; other changes
    are refused (`bundle_has_no_stock`), a bundle holding no stock of its own."""
    if line.kind == "restock" and line.order_line is None:
        recorded = resolver.bundle_order_lines_for(channel, line.event)
        if recorded:
            return [_component_line(line, r.sku_id, int(r.line_id.rsplit("x", 1)[1]), order_line=r)
                    for r in recorded]
        try:  # recorded by a sale earlier in this same batch, if the event names the bundle
            sku_id: int | None = resolver.sku_for(channel, line.event)
        except Permanent:
            sku_id = None
        if sku_id is not None and sku_id in resolver.bundles:
            return [_component_line(replace(line, sku_id=sku_id), c, q) for c, q in resolver.bundles[sku_id]]
        return [line]
    if line.sku_id not in resolver.bundles or line.note:
        return [line]
    if line.kind == "count" and line.event.metadata.get("channel_level"):
        # A marketplace reporting the level of a bundle's listing (Shopify echoes every push as
        # inventory_levels/update): the bundle's level is ours to derive, never theirs to set.
        return [replace(line, note="the listing is a bundle: its level is derived from its components")]
    if line.kind not in ("sale", "delta") or (line.kind == "delta" and line.type != MovementType.CANCELLATION):
        raise Permanent("bundle_has_no_stock", f"SKU id {line.sku_id} is a bundle and holds no stock of its own; "
                                               f"a {line.type} applies to its components.")
    return [_component_line(line, c, q) for c, q in resolver.bundles[line.sku_id]]


def _line_for(channel: Channel | None, ev: CanonicalEvent, resolver: Resolver) -> Line:
    if ev.metadata.get("restock"):
        # Without a recorded sale yet, a sale earlier in this same batch may still record one.
        order_line = resolver.order_line_for(channel, ev)
        return Line(key=ev.event_id, kind="restock", type=ev.type, quantity=ev.quantity, event=ev,
                    sku_id=order_line.sku_id if order_line else None,
                    location_id=order_line.location_id if order_line else None, order_line=order_line)
    sku_id = resolver.sku_for(channel, ev)
    if ev.type == "sale":
        return Line(key=ev.event_id, kind="sale", type=MovementType.SALE, quantity=ev.quantity, event=ev,
                    sku_id=sku_id, location_id=resolver.location_for(channel, ev))
    if ev.type == "count":
        if ev.metadata.get("channel_level"):
            assert channel is not None  # only a channel's adapter reports the channel's own levels
            location_id = resolver.channel_location_for(channel, ev)
            if location_id is None:
                return Line(key=ev.event_id, kind="count", type="count", quantity=ev.quantity, event=ev,
                            sku_id=sku_id, note=f"channel location {ev.metadata.get('channel_location_id')} "
                                                "is not mapped to one of ours; ignored")
        else:
            location_id = resolver.location_for(channel, ev)
        return Line(key=ev.event_id, kind="count", type=MovementType.COUNT, quantity=ev.quantity, event=ev,
                    sku_id=sku_id, location_id=location_id)
    if ev.type == "transfer":
        return Line(key=ev.event_id, kind="transfer", type="transfer", quantity=ev.quantity, event=ev,
                    sku_id=sku_id, location_id=resolver.location_for(channel, ev),
                    to_location_id=resolver.location_for(channel, ev, ev.to_location))
    return Line(key=ev.event_id, kind="delta", type=ev.type, quantity=ev.quantity, event=ev, sku_id=sku_id,
                location_id=resolver.location_for(channel, ev))


