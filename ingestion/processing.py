"""Apply one claimed batch of inbound events to stock, inside the drain's transaction.

Three phases, so that two workers draining at once never deadlock and never apply a line twice:

1. plan: parse every event into lines (adapters' `parse_webhook`, or the stored canonical event)
   and resolve SKUs, listings and locations with a handful of queries for the whole batch;
2. lock: every stock position the batch touches, once, in primary-key order
   (inventory.locking), then read which ledger keys already exist *under those locks*, so a
   concurrent worker that applied the same line has committed before we look;
3. apply: each event in its own savepoint through `movement_apply`, its ledger rows carrying the
   line's stable key (unique in the ledger), so a replayed line is a no-op.

Error classes: `Permanent` (bad payload, unknown SKU/listing/location) fails the event at once
with its reason; `Transient` (not enough stock for a transfer or adjustment yet, a lost lock
race) and unexpected errors retry with backoff until the attempt budget is spent.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.utils import timezone

from channels.adapters import adapter_for
from channels.adapters.base import CanonicalEvent, Delivery
from channels.models import Channel, ChannelListing
from core.errors import DomainError
from ingestion.canonical import CanonicalError, canonical_event_parse
from ingestion.models import (
    InboundEvent,
    IngestedOrderLine,
    LevelDrift,
    LevelWatermark,
    OversellIncident,
)
from inventory.locking import positions_lock
from inventory.models import Location, MovementType, Sku, StockMovement, StockPosition
from inventory.services import TRANSFER_IN_SUFFIX, MovementContext, movement_apply, positions_changed

logger = logging.getLogger(__name__)

LISTING_ATTRIBUTE_KEYS = ("variant_id", "product_id", "variation_id", "inventory_item_id", "offer_id")


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
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise Permanent("invalid_payload", f"Payload could not be read: {type(exc).__name__}: {exc}") from None


class Resolver:
    """Batch lookups of SKUs, listings, locations and order lines (a few queries per batch)."""

    def __init__(self, plans: list[tuple[InboundEvent, Channel | None, list[CanonicalEvent]]]):
        codes, candidates = set(), defaultdict(set)
        order_keys = set()
        for _inbound, channel, events in plans:
            for ev in events:
                if ev.sku:
                    codes.add(ev.sku)
                if channel is not None:
                    candidates[channel.pk] |= set(self._candidates(channel, ev))
                if ev.metadata.get("restock"):
                    order_keys.add((channel.pk if channel else None, ev.metadata.get("order_id") or ev.reference,
                                    ev.metadata.get("line_id")))
        self.skus = dict(Sku.objects.filter(code__in=codes).values_list("code", "pk")) if codes else {}
        self.locations = dict(Location.objects.values_list("code", "pk"))
        self.listings: dict[tuple[int, str], int] = {}
        self.attribute_listings: dict[tuple[int, str, str], int] = {}
        for channel_id, ids in candidates.items():
            ids = {i for i in ids if i}
            if not ids:
                continue
            for external_id, sku_id in ChannelListing.objects.filter(
                    channel_id=channel_id, external_id__in=ids).values_list("external_id", "sku_id"):
                self.listings[(channel_id, external_id)] = sku_id
            by_attribute = Q()
            for key in LISTING_ATTRIBUTE_KEYS:
                values = list(ids) + [int(i) for i in ids if i.isdigit()]
                by_attribute |= Q(**{f"attributes__{key}__in": values})
            for sku_id, attributes in ChannelListing.objects.filter(by_attribute, channel_id=channel_id).values_list(
                    "sku_id", "attributes"):
                for key in LISTING_ATTRIBUTE_KEYS:
                    if (attributes or {}).get(key) is not None:
                        self.attribute_listings[(channel_id, key, str(attributes[key]))] = sku_id
        self.order_lines: dict[tuple, IngestedOrderLine] = {}
        if order_keys:
            condition = Q()
            for channel_id, order_ref, line_id in order_keys:
                condition |= Q(channel_id=channel_id, order_ref=order_ref, line_id=line_id)
            for line in IngestedOrderLine.objects.filter(condition):
                self.order_lines[(line.channel_id, line.order_ref, line.line_id)] = line

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
                for attribute in {key, *LISTING_ATTRIBUTE_KEYS}:
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
        settings = channel.settings or {}
        if theirs and str(settings.get("location_id", "")) == theirs:
            return channel.default_location_id
        mapped = (settings.get("locations") or {}).get(theirs)
        if mapped and mapped in self.locations:
            return self.locations[mapped]
        if not theirs and not settings.get("location_id"):
            return channel.default_location_id
        return None

    def order_line_for(self, channel: Channel | None, ev: CanonicalEvent) -> IngestedOrderLine | None:
        return self.order_lines.get((channel.pk if channel else None, ev.metadata.get("order_id") or ev.reference,
                                     ev.metadata.get("line_id")))


def lines_for(channel: Channel | None, events: list[CanonicalEvent], resolver: Resolver) -> list[Line]:
    lines = []
    for ev in events:
        try:
            lines.append(_line_for(channel, ev, resolver))
        except Permanent as exc:
            lines.append(Line(key=ev.event_id, kind="error", type=ev.type, quantity=ev.quantity, event=ev,
                              error=exc))
    return lines


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


# ------------------------------------------------------------------------------ apply


class BatchProcessor:
    """Applies the claimed events of one drain transaction; see the module docstring."""

    def __init__(self, events: list[InboundEvent], *, worker: str = "", careful: bool = False):
        """`careful=False` (the fast path) applies the batch without per-event savepoints and lets
        any error escape, so the caller rolls the attempt back and reruns with `careful=True`,
        where each event gets its own savepoint and its own outcome. Errors are rare, and two
        round trips per event saved is most of the drain's cost."""
        self.events = events
        self.worker = worker
        self.careful = careful
        self.results: dict[int, EventResult] = {}
        self.changed: dict[tuple[int, int], StockPosition] = {}
        self.availability_rose = False
        self.reservations: dict[tuple, object] = {}

    def run(self) -> dict[int, EventResult]:
        assert transaction.get_connection().in_atomic_block, "the drain holds the batch in one transaction"
        channels = {c.pk: c for c in Channel.objects.filter(pk__in={e.channel_id for e in self.events if e.channel_id})
                    .prefetch_related("authoritative_locations")}
        parsed = []
        for inbound in self.events:
            channel = channels.get(inbound.channel_id)
            try:
                parsed.append((inbound, channel, events_for(inbound, channel)))
            except Permanent as exc:
                self.results[inbound.pk] = EventResult(InboundEvent.Status.FAILED, exc.code, exc.detail)
        resolver = Resolver(parsed)
        plans = [Plan(inbound, channel, lines_for(channel, events, resolver)) for inbound, channel, events in parsed]

        # Reservations first: reservations.services locks a reservation row before its positions,
        # so committing before we lock ours keeps one lock order with the reservations API.
        self.deferred: dict[int, Exception] = {}
        for plan in plans:
            for line in plan.lines:
                if line.kind == "sale" and line.error is None and self._order_ref(line):
                    try:
                        self._reservation_commit(plan, line, self._order_ref(line))
                    except DatabaseError as exc:  # e.g. a deadlock victim: retry the event later
                        self.deferred[plan.event.pk] = exc
        pairs = set()
        for plan in plans:
            for line in plan.lines:
                if line.location_id and line.sku_id:
                    pairs.add((line.sku_id, line.location_id))
                if line.to_location_id:
                    pairs.add((line.sku_id, line.to_location_id))
        self.locked = positions_lock(pairs)
        # Read under the locks: a line another worker applied has committed by now.
        keys = [line.key for plan in plans for line in plan.lines]
        self.applied_keys = set(StockMovement.objects.filter(event_key__in=keys).values_list("event_key", flat=True))
        self.sold_lines = self._existing_sale_lines(plans)
        count_pairs = {(line.sku_id, line.location_id) for plan in plans for line in plan.lines
                       if line.kind == "count" and line.location_id}
        self.watermarks = {(w.sku_id, w.location_id): w
                           for w in LevelWatermark.objects.filter(self._pairs_q(count_pairs))} if count_pairs else {}
        order_line_ids = [line.order_line.pk for plan in plans for line in plan.lines if line.order_line]
        self.order_lines = IngestedOrderLine.objects.in_bulk(order_line_ids) if order_line_ids else {}
        self.new_order_lines: dict[tuple, IngestedOrderLine] = {}  # recorded by sales in this batch

        for plan in plans:
            if plan.event.pk in self.deferred:
                exc = self.deferred[plan.event.pk]
                self.results[plan.event.pk] = EventResult(InboundEvent.Status.PENDING, "database_error", str(exc),
                                                          transient=True)
                continue
            self.results[plan.event.pk] = self._apply_plan(plan)
        if self.new_order_lines:
            IngestedOrderLine.objects.bulk_create(self.new_order_lines.values())
        if self.changed:
            positions_changed(self.changed.values(), availability_rose=self.availability_rose)
        return self.results

    @staticmethod
    def _pairs_q(pairs) -> Q:
        condition = Q(pk__in=[])
        for sku_id, location_id in pairs:
            condition |= Q(sku_id=sku_id, location_id=location_id)
        return condition

    def _existing_sale_lines(self, plans: list[Plan]) -> set[tuple]:
        wanted = {(plan.channel.pk if plan.channel else None, self._order_ref(line), self._line_id(line))
                  for plan in plans for line in plan.lines if line.kind == "sale"}
        if not wanted:
            return set()
        # Narrow with plain IN lists (cheap to build and indexed), then match exact triples here.
        rows = IngestedOrderLine.objects.filter(
            order_ref__in={w[1] for w in wanted}, line_id__in={w[2] for w in wanted},
        ).values_list("channel_id", "order_ref", "line_id")
        return {row for row in rows if row in wanted}

    @staticmethod
    def _order_ref(line: Line) -> str:
        return str(line.event.metadata.get("order_id") or line.event.reference or "")

    @staticmethod
    def _line_id(line: Line) -> str:
        return str(line.event.metadata.get("line_id") or line.key)

    def _apply_plan(self, plan: Plan) -> EventResult:
        if not self.careful:
            outcome = {line.key: self._apply_line(plan, line) for line in plan.lines if line.error is None}
            return self._result(plan, outcome)
        plan_pairs = {(ln.sku_id, ln.location_id) for ln in plan.lines} | {(ln.sku_id, ln.to_location_id)
                                                                           for ln in plan.lines}
        touched = {pair: self.locked[pair] for pair in plan_pairs if pair in self.locked}
        saved = {pair: (p.on_hand, p.reserved, p.version) for pair, p in touched.items()}
        saved_keys, saved_sold = set(self.applied_keys), set(self.sold_lines)
        changed_before, rose_before = dict(self.changed), self.availability_rose
        saved_watermarks = {pair: (w, w.observed_at) for pair, w in self.watermarks.items()}
        saved_restocked = {pk: ol.restocked for pk, ol in self.order_lines.items()}
        saved_new_lines = {key: (ol, ol.restocked) for key, ol in self.new_order_lines.items()}
        outcome: dict[str, str] = {}
        try:
            with transaction.atomic():  # savepoint: one event's lines all apply, or none do
                for line in plan.lines:
                    if line.error is None:
                        outcome[line.key] = self._apply_line(plan, line)
        except (Transient, DomainError, DatabaseError) as exc:
            # Undo what this event did to our in-memory view of the locked rows.
            for pair, (on_hand, reserved, version) in saved.items():
                position = self.locked[pair]
                position.on_hand, position.reserved, position.version = on_hand, reserved, version
            self.applied_keys, self.sold_lines, self.changed = saved_keys, saved_sold, changed_before
            self.availability_rose = rose_before
            self.watermarks = {pair: w for pair, (w, _) in saved_watermarks.items()}
            for w, observed_at in saved_watermarks.values():
                w.observed_at = observed_at
            self.order_lines = {pk: ol for pk, ol in self.order_lines.items() if pk in saved_restocked}
            for pk, restocked in saved_restocked.items():
                self.order_lines[pk].restocked = restocked
            self.new_order_lines = {key: ol for key, (ol, _) in saved_new_lines.items()}
            for ol, restocked in saved_new_lines.values():
                ol.restocked = restocked
            code = getattr(exc, "code", "") or type(exc).__name__
            if isinstance(exc, DatabaseError):
                logger.warning("inbound event %s: database error, will retry: %s", plan.event.pk, exc)
                code = "database_error"
            return EventResult(InboundEvent.Status.PENDING, code[:64], str(exc), transient=True)
        return self._result(plan, outcome)

    @staticmethod
    def _result(plan: Plan, outcome: dict) -> EventResult:
        errors = [line for line in plan.lines if line.error is not None]
        for line in errors:
            outcome[line.key] = f"failed: {line.error.code}: {line.error.detail}"
        if errors:
            first = errors[0].error
            detail = first.detail if len(errors) == 1 else f"{first.detail} (and {len(errors) - 1} more lines)"
            return EventResult(InboundEvent.Status.FAILED, first.code, detail, outcome=outcome)
        if not plan.lines:
            return EventResult(InboundEvent.Status.IGNORED, outcome={"_": "nothing to apply for this topic/status"})
        return EventResult(InboundEvent.Status.DONE, outcome=outcome)

    # ---------------------------------------------------------------- lines

    def _context(self, plan: Plan, line: Line) -> MovementContext:
        return MovementContext(
            source=(line.event.source or plan.event.source)[:100],
            reference=(line.event.reference or "")[:200],
            actor=f"ingestion:{plan.event.pk}",
            occurred_at=line.event.occurred_at or plan.event.received_at,
            metadata={"inbound_event": plan.event.pk},
        )

    def _move(self, plan: Plan, line: Line, position: StockPosition, *, type: str, delta: int, key: str | None,
              metadata: dict | None = None) -> None:
        movement_apply(position, type=type, on_hand_delta=delta, context=self._context(plan, line), event_key=key,
                       metadata=metadata)
        self.applied_keys.add(key)
        self.changed[(position.sku_id, position.location_id)] = position
        self.availability_rose |= delta > 0

    def _apply_line(self, plan: Plan, line: Line) -> str:
        if line.note:
            return f"ignored: {line.note}"
        if line.kind == "sale":
            return self._apply_sale(plan, line)
        if line.key in self.applied_keys:
            return "replayed"
        if line.kind == "restock":
            return self._apply_restock(plan, line)
        position = self.locked[(line.sku_id, line.location_id)]
        if line.kind == "count":
            return self._apply_count(plan, line, position)
        if line.kind == "transfer":
            if line.quantity > position.available:
                raise Transient("insufficient_stock",
                                f"Only {position.available} available to transfer; will retry.")
            destination = self.locked[(line.sku_id, line.to_location_id)]
            self._move(plan, line, position, type=MovementType.TRANSFER_OUT, delta=-line.quantity, key=line.key)
            self._move(plan, line, destination, type=MovementType.TRANSFER_IN, delta=line.quantity,
                       key=line.key + TRANSFER_IN_SUFFIX)
            return f"applied: transfer {line.quantity}"
        delta = line.quantity  # receipt, return, cancellation, adjustment (signed)
        if position.on_hand + delta < 0:
            raise Transient("insufficient_stock",
                            f"On hand is {position.on_hand}; an adjustment of {delta} would go below zero.")
        self._move(plan, line, position, type=line.type, delta=delta, key=line.key)
        return f"applied: {line.type} {delta:+d}"

    def _apply_sale(self, plan: Plan, line: Line) -> str:
        """A sale is a fact: commit the order's reservation if there is one, take what exists
        for the rest, and record an oversell incident for what was not available."""
        channel = plan.channel
        order_ref, line_id = self._order_ref(line), self._line_id(line)
        line_key = (channel.pk if channel else None, order_ref, line_id)
        if line.key in self.applied_keys or line_key in self.sold_lines:
            return "replayed"
        covered, covered_location = self._reservation_cover(plan, line, order_ref) if order_ref else (0, None)
        position = self.locked[(line.sku_id, line.location_id)]
        remainder = line.quantity - covered
        applied = 0
        shortfall = 0
        if remainder > 0:
            available_before = position.available
            applied = min(remainder, position.on_hand)
            if applied > 0:
                self._move(plan, line, position, type=MovementType.SALE, delta=-applied, key=line.key,
                           metadata={"requested": remainder} if applied < remainder else None)
            if remainder > available_before:
                shortfall = remainder - available_before
                OversellIncident.objects.create(
                    channel=channel, sku_id=line.sku_id, location_id=line.location_id, order_ref=order_ref,
                    event_key=line.key, inbound_event=plan.event, requested=remainder,
                    available_before=available_before, applied=applied, shortfall=shortfall)
        # Inserted in bulk at the end of the batch (restocks in this batch update it in memory).
        self.new_order_lines[line_key] = IngestedOrderLine(
            channel=channel, order_ref=order_ref, line_id=line_id, sku_id=line.sku_id,
            location_id=covered_location if covered and remainder <= 0 else line.location_id,
            ordered=line.quantity, taken=applied + covered, covered=covered)
        self.sold_lines.add(line_key)
        parts = [f"applied: sale -{applied}"]
        if covered:
            parts.append(f"reservation covered {covered}")
        if shortfall:
            parts.append(f"oversold by {shortfall}")
        return ", ".join(parts)

    def _reservation_cover(self, plan: Plan, line: Line, order_ref: str) -> tuple[int, int | None]:
        """Commit the order's active reservation (once) and return how much of this line it
        covers, and where that stock was held."""
        reservation = self.reservations.get((plan.channel.pk if plan.channel else None, order_ref))
        if reservation is None:
            return 0, None
        held = [rl for rl in reservation.held_lines if rl.sku_id == line.sku_id]
        if not held:
            return 0, None
        consumed = sum(IngestedOrderLine.objects.filter(
            channel=plan.channel, order_ref=order_ref, sku_id=line.sku_id).values_list("covered", flat=True))
        # Lines of the same order covered earlier in this batch are not in the database yet:
        # without them one reservation would cover every line of the order (an oversell).
        channel_id = plan.channel.pk if plan.channel else None
        consumed += sum(recorded.covered for (ch, ref, _line_id), recorded in self.new_order_lines.items()
                        if ch == channel_id and ref == order_ref and recorded.sku_id == line.sku_id)
        covered = max(0, min(line.quantity, sum(rl.quantity for rl in held) - consumed))
        return covered, held[0].location_id

    def _reservation_commit(self, plan: Plan, line: Line, order_ref: str):
        cache_key = (plan.channel.pk if plan.channel else None, order_ref)
        if cache_key in self.reservations:
            return self.reservations[cache_key]
        try:
            from reservations.services import reservation_commit_for_order
        except ImportError:  # reservations not installed: nothing to commit
            self.reservations[cache_key] = None
            return None
        try:
            with transaction.atomic():
                reservation = reservation_commit_for_order(order_ref=order_ref, channel=plan.channel,
                                                           context=self._context(plan, line))
        except DomainError as exc:
            # The sale stands whatever the reservation's state; it is taken from free stock.
            logger.warning("order %s: reservation not committed (%s); selling from free stock", order_ref, exc)
            reservation = None
        if reservation is not None:
            reservation.held_lines = list(reservation.lines.all())
        self.reservations[cache_key] = reservation
        return reservation

    def _apply_restock(self, plan: Plan, line: Line) -> str:
        """Put back at most what the order line took, where it took it from."""
        if line.order_line is not None:
            order_line = self.order_lines[line.order_line.pk]
        else:
            order_line = self.new_order_lines.get((plan.channel.pk if plan.channel else None, self._order_ref(line),
                                                   self._line_id(line)))
        if order_line is None:
            return "ignored: no recorded sale for this order line; nothing to put back"
        position = self.locked.get((order_line.sku_id, order_line.location_id))
        if position is None:  # a covered line held elsewhere, recorded in this batch: next pass
            raise Transient("retry", "The order line was recorded in this batch at an unlocked position.")
        quantity = min(line.quantity, order_line.taken - order_line.restocked)
        if quantity <= 0:
            return "ignored: already put back"
        self._move(plan, line, position, type=line.type, delta=quantity, key=line.key,
                   metadata={"order": order_line.order_ref, "order_line": order_line.line_id})
        if order_line.pk is not None:
            IngestedOrderLine.objects.filter(pk=order_line.pk).update(restocked=F("restocked") + quantity)
        order_line.restocked += quantity
        return f"applied: {line.type} +{quantity}"

    def _apply_count(self, plan: Plan, line: Line, position: StockPosition) -> str:
        """An absolute level. From a channel: an echo of our own push is ignored, and it is applied
        only where the channel is authoritative (otherwise recorded as drift). Older than the
        newest level applied to the position: stale, not applied."""
        channel = plan.channel
        observed = line.event.occurred_at or plan.event.received_at
        if line.event.metadata.get("channel_level"):
            from channels.selectors import channel_last_pushed

            last_pushed = channel_last_pushed(channel=channel, sku_id=line.sku_id)
            if last_pushed is not None and last_pushed == line.quantity:
                return f"ignored: echo of our push ({last_pushed})"
            if line.location_id not in {loc.pk for loc in channel.authoritative_locations.all()}:
                LevelDrift.objects.create(channel=channel, sku_id=line.sku_id, location_id=line.location_id,
                                          reported=line.quantity, on_hand=position.on_hand,
                                          available=position.available, reported_at=observed,
                                          inbound_event=plan.event)
                return f"drift: channel reports {line.quantity}, on hand {position.on_hand} (not authoritative)"
        watermark = self.watermarks.get((line.sku_id, line.location_id))
        if watermark is not None and observed < watermark.observed_at:
            return f"stale: observed {observed.isoformat()}, newer level applied at {watermark.observed_at.isoformat()}"
        self._move(plan, line, position, type=MovementType.COUNT, delta=line.quantity - position.on_hand,
                   key=line.key, metadata={"counted": line.quantity})
        self._watermark(line, observed)
        return f"applied: count {line.quantity}"

    def _watermark(self, line: Line, observed: datetime) -> None:
        pair = (line.sku_id, line.location_id)
        watermark = self.watermarks.get(pair)
        if watermark is None:
            watermark, _ = LevelWatermark.objects.update_or_create(
                sku_id=line.sku_id, location_id=line.location_id, defaults={"observed_at": observed})
        elif observed > watermark.observed_at:
            watermark.observed_at = observed
            LevelWatermark.objects.filter(pk=watermark.pk).update(observed_at=observed)
        self.watermarks[pair] = watermark


def now() -> datetime:
    return timezone.now()
