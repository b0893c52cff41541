"""Apply one planned batch of inbound events to stock, inside the drain's transaction.

Lock order is the global one (docs/ARCHITECTURE.md): reservation rows first, in primary-key
order (the holds of every order the batch sells, reservations.order_commit), then every stock
position the batch touches in ONE `positions_lock` call (primary-key order). Nothing else is
locked afterwards, so a drain never deadlocks with another drain, a checkout or an API commit.

Then, under those locks:
1. read which ledger keys and order lines already exist (a concurrent worker that applied the
   same line has committed by now);
2. settle each order's hold once (commit what the order sells, release the rest);
3. apply each event's lines, ledger rows carrying the line's stable key: on the fast path into a
   `MovementBatch` written set-based at the end (one UPDATE of all positions, one INSERT of all
   ledger rows), on the careful path through `movement_apply` inside each event's savepoint.

Why one module of ~470 lines: every step works on the one BatchProcessor state (the locked
positions, applied keys, order cover, in-memory order lines) that `snapshot()` must save and
restore as a whole; split across modules, a new field would be easy to leave out of it.

`careful=False` (the fast path) applies the batch without savepoints and lets any error escape;
the caller rolls it back and reruns with `careful=True`, where every order settlement and every
event gets its own savepoint and its own outcome, so one bad event never holds back another.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from django.db import connection, models, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from channels.models import Channel, ChannelSkuState
from core.errors import DomainError
from core.sql import sql_columns, sql_compose, sql_json_param, sql_json_rows
from ingestion.kept_channels import KeptChannels
from ingestion.models import InboundEvent, IngestedOrderLine, LevelDrift, LevelWatermark, OversellIncident
from ingestion.processing.plan import EventResult, Line, Plan, Transient, plans_make
from inventory.batch import MovementBatch
from inventory.locking import positions_lock
from inventory.models import MovementType, StockMovement, StockPosition
from inventory.services import TRANSFER_IN_SUFFIX, MovementContext, movement_apply, positions_changed
from reservations.models import Reservation
from reservations.order_commit import (
    OrderHolds,
    order_hold_cover,
    order_hold_settle,
    order_holds_lock,
    order_waiting_release,
)

logger = logging.getLogger(__name__)

OrderKey = tuple[int | None, str]


def order_ref_of(line: Line) -> str:
    return str(line.event.metadata.get("order_id") or line.event.reference or "")


def line_id_of(line: Line) -> str:
    return str(line.event.metadata.get("line_id") or line.key)


def _channel_id(plan: Plan) -> int | None:
    return plan.channel.pk if plan.channel else None


def _orders_of(plan: Plan) -> set[OrderKey]:
    return {(_channel_id(plan), order_ref_of(line)) for line in plan.lines
            if line.kind == "sale" and line.error is None and order_ref_of(line)}


class _Regroup(Exception):  # noqa: N818 - control flow: apply an order's group again without a failed event
    pass


# The batch's channels with their authoritative locations, kept in the process for
# DRAIN_CHANNEL_CACHE_SECONDS (default 5): the two queries were a seventh of a small batch's CPU.
# A change saved in this process forgets them at once; a drain in another process applies a
# changed mapping (default location, settings, authoritative locations) within that window
# (docs/ingestion.md, ingestion.kept_channels).
_channels = KeptChannels("DRAIN_CHANNEL_CACHE_SECONDS")


def batch_channels(ids: set[int]) -> dict[int, Channel]:
    found = {pk: channel for pk in ids if (channel := _channels.get(pk)) is not None}
    missing = ids - found.keys()
    if missing:
        for channel in Channel.objects.filter(pk__in=missing).prefetch_related("authoritative_locations"):
            found[channel.pk] = channel
            _channels.put(channel.pk, channel)
    return found


class BatchProcessor:
    """Applies the claimed events of one drain transaction; see the module docstring."""

    def __init__(self, events: list[InboundEvent], *, worker: str = "", careful: bool = False):
        self.events = events
        self.worker = worker
        self.careful = careful
        self.results: dict[int, EventResult] = {}
        # State of the batch under its locks; snapshot() / restore() undo one event's share of it.
        self.locked: dict[tuple[int, int], StockPosition] = {}
        self.applied_keys: set[str | None] = set()  # ledger keys (a nullable column)
        self.sold_lines: set[tuple] = set()
        self.changed: dict[tuple[int, int], StockPosition] = {}
        self.availability_rose = False
        self.watermarks: dict[tuple[int, int], datetime] = {}
        self.order_lines: dict[int, IngestedOrderLine] = {}  # recorded by earlier batches
        self.new_order_lines: dict[tuple, IngestedOrderLine] = {}  # recorded by sales in this batch
        self.holds: OrderHolds | None = None
        # The fast path writes its stock changes set-based at the end (one UPDATE, one INSERT);
        # the careful path writes each at once, so a savepoint rollback undoes it exactly.
        self.movements: MovementBatch | None = None if careful else MovementBatch()
        self.cover: dict[tuple[OrderKey, int], list[list[int]]] = {}  # held units an order's lines draw on

    # ---------------------------------------------------------------- the batch

    def run(self) -> dict[int, EventResult]:
        assert transaction.get_connection().in_atomic_block, "the drain holds the batch in one transaction"
        channels = batch_channels({e.channel_id for e in self.events if e.channel_id})
        plans, failed = plans_make(self.events, channels)
        self.results.update(failed)

        orders = {(_channel_id(plan), order_ref_of(line)) for plan in plans for line in plan.lines
                  if line.kind == "sale" and line.error is None and order_ref_of(line)}
        holds = order_holds_lock(orders=orders)  # reservation rows first: the global lock order
        self.locked = positions_lock(self._pairs(plans) | holds.pairs)
        self._load(plans)
        self.holds = holds
        if self.careful:
            self._apply_careful(plans)
        else:
            self._settle_orders(plans)
            for plan in plans:
                self.results[plan.event.pk] = self._apply_plan(plan)
        if self.movements is not None:
            self.movements.flush()  # before anything reads the positions back (the hooks do)
        if self.new_order_lines:
            _order_lines_insert(list(self.new_order_lines.values()))
        if self.changed:
            positions_changed(self.changed.values(), availability_rose=self.availability_rose)
        return self.results

    def _pairs(self, plans: list[Plan]) -> set[tuple[int, int]]:
        pairs = set()
        for plan in plans:
            for line in plan.lines:
                if line.sku_id and line.location_id:
                    pairs.add((line.sku_id, line.location_id))
                if line.sku_id and line.to_location_id:
                    pairs.add((line.sku_id, line.to_location_id))
                if line.order_line is not None:  # a restock goes back wherever the sale took from
                    pairs |= {(line.order_line.sku_id, src["location"]) for src in _sources(line.order_line)}
        return pairs

    def _load(self, plans: list[Plan]) -> None:
        """What earlier batches did, read under the locks."""
        keys = [line.key for plan in plans for line in plan.lines]
        self.applied_keys = set(_column_any(StockMovement, "event_key", keys))
        wanted = {(_channel_id(plan), order_ref_of(line), line_id_of(line))
                  for plan in plans for line in plan.lines if line.kind == "sale"}
        if wanted:  # narrow by order and line (the unique index leads with them), then match exact triples
            with connection.cursor() as cursor:
                cursor.execute(sql_compose("SELECT channel_id, order_ref, line_id FROM {table} "
                                           "WHERE order_ref = ANY(%s) AND line_id = ANY(%s)",
                                           table=IngestedOrderLine._meta.db_table),
                               [list({w[1] for w in wanted}), list({w[2] for w in wanted})])
                self.sold_lines = {row for row in map(tuple, cursor.fetchall()) if row in wanted}
        level_pairs = {(line.sku_id, line.location_id) for plan in plans for line in plan.lines
                       if line.kind in ("count", "delta") and line.sku_id and line.location_id}
        if level_pairs:
            with connection.cursor() as cursor:
                cursor.execute(sql_compose("SELECT sku_id, location_id, observed_at FROM {table} WHERE (sku_id, "
                                           "location_id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
                                           table=LevelWatermark._meta.db_table), sql_columns(sorted(level_pairs)))
                self.watermarks = {(sku_id, location_id): at for sku_id, location_id, at in cursor.fetchall()}
        ids = [line.order_line.pk for plan in plans for line in plan.lines if line.order_line]
        if ids:
            self.order_lines = IngestedOrderLine.objects.in_bulk(ids)

    # ---------------------------------------------------------------- orders and their holds

    def _apply_careful(self, plans: list[Plan]) -> None:
        """Each event in its own savepoint; an order's settlement shares one savepoint with the
        events that sell for it, so it never outlives them: if one of those events fails (its
        lines roll back), the whole group rolls back and is applied again without it, the hold
        settled against what the remaining events sell. Found by the model test: a settlement
        kept after its order's event failed took units off the shelf with no sale recorded."""
        groups: dict[frozenset, list[Plan]] = defaultdict(list)
        for plan in plans:
            groups[frozenset(_orders_of(plan))].append(plan)
        for orders, group in groups.items():
            if not orders:
                for plan in group:
                    self.results[plan.event.pk] = self._apply_plan(plan)
                continue
            excluded: set[int] = set()
            while True:
                undo = self.snapshot()
                done: dict[int, EventResult] = {}
                try:
                    with transaction.atomic():
                        self._settle_orders([p for p in group if p.event.pk not in excluded])
                        for plan in group:
                            if plan.event.pk in excluded:
                                continue
                            done[plan.event.pk] = result = self._apply_plan(plan)
                            if result.transient:  # its lines rolled back: the settlement must too
                                excluded.add(plan.event.pk)
                                self.results[plan.event.pk] = result
                                raise _Regroup
                except _Regroup:
                    undo()
                    continue
                except Exception as exc:  # the settlement itself failed: its events retry
                    undo()
                    logger.warning("orders %s: settling failed; their events retry", sorted(orders), exc_info=True)
                    code = exc.code if isinstance(exc, DomainError | Transient) else "database_error"
                    for plan in group:
                        if plan.event.pk not in excluded:
                            self.results[plan.event.pk] = EventResult(
                                InboundEvent.Status.PENDING, code[:64],
                                f"Settling the order's reservation failed: {type(exc).__name__}: {exc}",
                                transient=True)
                    break
                self.results.update(done)
                break

    def _settle_orders(self, plans: list[Plan]) -> None:
        """Settle each order's hold against what these plans sell for it (lines not sold before),
        and fill `self.cover`."""
        holds = self.holds
        assert holds is not None  # run() locked them first
        sold: dict[OrderKey, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        first: dict[OrderKey, tuple[Plan, Line]] = {}
        for plan in plans:
            for line in plan.lines:
                ref = order_ref_of(line)
                if line.kind != "sale" or line.error is not None or not ref:
                    continue
                key = (_channel_id(plan), ref)
                if line.key in self.applied_keys or (*key, line_id_of(line)) in self.sold_lines:
                    continue
                assert line.sku_id is not None  # a planned sale names its SKU
                sold[key][line.sku_id] += line.quantity
                first.setdefault(key, (plan, line))
        consumed = self._covered_before([key for key, hold in holds.by_order.items()
                                         if hold.reservation.status == Reservation.Status.COMMITTED])
        now = timezone.now()
        for key in sorted(first, key=lambda k: (k[0] or 0, k[1])):
            plan, line = first[key]
            self._settle_one(key, holds, sold[key], consumed, plan, line, now)

    def _settle_one(self, key: OrderKey, holds: OrderHolds, sold: dict[int, int], consumed: dict, plan: Plan,
                    line: Line, now: datetime) -> None:
        actor = f"ingestion:{plan.event.pk}"
        if key in holds.waiting:
            order_waiting_release(reservations=holds.waiting[key], now=now, actor=actor)
        hold = holds.by_order.get(key)
        if hold is None:
            return
        if hold.reservation.status == Reservation.Status.ACTIVE:
            settled = order_hold_settle(hold=hold, sold=dict(sold), positions=self.locked,
                                        context=self._context(plan, line), now=now, actor=actor)
            for position in settled.positions:
                self.changed[(position.sku_id, position.location_id)] = position
            self.availability_rose |= settled.released
            cover = settled.cover
        else:  # committed earlier: what it committed, less what order lines already drew from it
            cover = order_hold_cover(hold=hold)
            for sku_id, sources in cover.items():
                _draw(sources, consumed.get((*key, sku_id), 0))
        for sku_id, sources in cover.items():
            self.cover[(key, sku_id)] = sources

    @staticmethod
    def _covered_before(keys: list[OrderKey]) -> dict[tuple, int]:
        if not keys:
            return {}
        condition = Q(pk__in=[])
        for channel_id, order_ref in keys:
            condition |= Q(channel_id=channel_id, order_ref=order_ref)
        rows = IngestedOrderLine.objects.filter(condition).values("channel_id", "order_ref", "sku_id").annotate(
            covered=Sum("covered"))
        return {(r["channel_id"], r["order_ref"], r["sku_id"]): r["covered"] or 0 for r in rows}

    # ---------------------------------------------------------------- one event

    def snapshot(self) -> Callable[[], None]:
        """Everything an event may change in memory; the returned function puts it back (after
        its savepoint was rolled back, so memory matches the database again)."""
        positions = {pair: (p.on_hand, p.reserved, p.version) for pair, p in self.locked.items()}
        applied, sold, changed, rose = set(self.applied_keys), set(self.sold_lines), dict(self.changed), \
            self.availability_rose
        watermarks, cover = dict(self.watermarks), copy.deepcopy(self.cover)
        old_lines = {pk: (ol.restocked, copy.deepcopy(ol.sources)) for pk, ol in self.order_lines.items()}
        new_lines = {key: (ol, ol.restocked, copy.deepcopy(ol.sources)) for key, ol in self.new_order_lines.items()}
        holds = self.holds.by_order.values() if self.holds is not None else []
        hold_state = [(h, h.reservation.status, h.reservation.closed_at, h.reservation.closed_by,
                       [line.committed for line in h.lines]) for h in holds]
        waiting = [(r, r.status, r.closed_at, r.closed_by) for rs in (self.holds.waiting.values() if self.holds
                                                                         else []) for r in rs]

        def restore() -> None:
            for h, status, closed_at, closed_by, committed in hold_state:
                h.reservation.status, h.reservation.closed_at, h.reservation.closed_by = status, closed_at, closed_by
                for line, value in zip(h.lines, committed, strict=True):
                    line.committed = value
            for r, status, closed_at, closed_by in waiting:
                r.status, r.closed_at, r.closed_by = status, closed_at, closed_by
            for pair, (on_hand, reserved, version) in positions.items():
                p = self.locked[pair]
                p.on_hand, p.reserved, p.version = on_hand, reserved, version
            self.applied_keys, self.sold_lines, self.changed = applied, sold, changed
            self.availability_rose, self.watermarks, self.cover = rose, watermarks, cover
            for pk, (restocked, sources) in old_lines.items():
                self.order_lines[pk].restocked, self.order_lines[pk].sources = restocked, sources
            self.new_order_lines = {}
            for key, (ol, restocked, sources) in new_lines.items():
                ol.restocked, ol.sources = restocked, sources
                self.new_order_lines[key] = ol

        return restore

    def _apply_plan(self, plan: Plan) -> EventResult:
        if not self.careful:
            outcome: dict[str, str] = {line.key: self._apply_line(plan, line) for line in plan.lines
                                       if line.error is None}
            return _result(plan, outcome)
        undo = self.snapshot()
        outcome = {}
        try:
            with transaction.atomic():  # savepoint: one event's lines all apply, or none do
                for line in plan.lines:
                    if line.error is None:
                        outcome[line.key] = self._apply_line(plan, line)
        except Exception as exc:  # confined to this event: retried per policy, then failed
            undo()
            if isinstance(exc, Transient | DomainError):
                code = exc.code
            else:
                logger.warning("inbound event %s: unexpected error, will retry", plan.event.pk, exc_info=True)
                code = "unexpected_error"
            return EventResult(InboundEvent.Status.PENDING, code[:64], f"{type(exc).__name__}: {exc}", transient=True)
        return _result(plan, outcome)

    # ---------------------------------------------------------------- lines

    def _context(self, plan: Plan, line: Line) -> MovementContext:
        return MovementContext(
            source=(line.event.source or plan.event.source)[:100],
            reference=(line.event.reference or "")[:200],
            actor=f"ingestion:{plan.event.pk}",
            occurred_at=line.event.occurred_at or plan.event.received_at,
            # A bundle's component line says which bundle it is for (analytics counts bundle units).
            metadata={"inbound_event": plan.event.pk, **{k: line.event.metadata[k] for k in ("bundle_id",)
                                                         if k in line.event.metadata}},
        )

    def _move(self, plan: Plan, line: Line, position: StockPosition, *, type: str, delta: int, key: str,
              metadata: dict[str, object] | None = None) -> None:
        write = movement_apply if self.movements is None else self.movements.apply
        write(position=position, type=type, on_hand_delta=delta, context=self._context(plan, line),
              event_key=key, metadata=metadata)
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
        assert line.sku_id is not None and line.location_id is not None  # planned (notes returned above)
        position = self.locked[(line.sku_id, line.location_id)]
        if line.kind == "count":
            return self._apply_count(plan, line, position)
        if line.kind == "transfer":
            if line.quantity > position.available:
                raise Transient("insufficient_stock",
                                f"Only {position.available} available to transfer; will retry.")
            assert line.to_location_id is not None  # a planned transfer names both locations
            destination = self.locked[(line.sku_id, line.to_location_id)]
            self._move(plan, line, position, type=MovementType.TRANSFER_OUT, delta=-line.quantity, key=line.key)
            self._move(plan, line, destination, type=MovementType.TRANSFER_IN, delta=line.quantity,
                       key=line.key + TRANSFER_IN_SUFFIX)
            return f"applied: transfer {line.quantity}"
        # receipt, return, cancellation, adjustment (signed)
        happened = line.event.occurred_at or plan.event.received_at
        counted = self.watermarks.get((line.sku_id, line.location_id))
        if counted is not None and happened < counted:
            # The count taken after this change already includes it: applying it again would
            # count it twice.
            return (f"stale: happened at {happened.isoformat()}, before the count observed at "
                    f"{counted.isoformat()} that already includes it")
        delta = line.quantity
        if position.on_hand + delta < 0:
            raise Transient("insufficient_stock",
                            f"On hand is {position.on_hand}; an adjustment of {delta} would go below zero.")
        self._move(plan, line, position, type=line.type, delta=delta, key=line.key)
        return f"applied: {line.type} {delta:+d}"

    def _apply_sale(self, plan: Plan, line: Line) -> str:
        """A sale is a fact: take what the order's settled hold covers, take what exists for the
        rest, and record an oversell incident for what was not available."""
        channel = plan.channel
        order_ref = order_ref_of(line)
        line_key = (_channel_id(plan), order_ref, line_id_of(line))
        if line.key in self.applied_keys or line_key in self.sold_lines:
            return "replayed"
        assert line.sku_id is not None and line.location_id is not None  # a planned sale names both
        sources = _draw(self.cover.get(((_channel_id(plan), order_ref), line.sku_id), []), line.quantity)
        covered = sum(src["taken"] for src in sources)
        position = self.locked[(line.sku_id, line.location_id)]
        remainder = line.quantity - covered
        applied = shortfall = 0
        if remainder > 0:
            available_before = position.available
            applied = min(remainder, position.on_hand)
            if applied > 0:
                self._move(plan, line, position, type=MovementType.SALE, delta=-applied, key=line.key,
                           metadata={"requested": remainder} if applied < remainder else None)
                sources.append({"location": line.location_id, "taken": applied, "restocked": 0})
            if remainder > available_before:
                shortfall = remainder - available_before
                OversellIncident.objects.create(
                    channel=channel, sku_id=line.sku_id, location_id=line.location_id, order_ref=order_ref,
                    event_key=line.key, inbound_event=plan.event, requested=remainder,
                    available_before=available_before, applied=applied, shortfall=shortfall)
        # Inserted in bulk at the end of the batch (restocks in this batch update it in memory).
        self.new_order_lines[line_key] = IngestedOrderLine(
            channel=channel, order_ref=order_ref, line_id=line_key[2], sku_id=line.sku_id,
            location_id=sources[0]["location"] if sources else line.location_id,
            ordered=line.quantity, taken=applied + covered, covered=covered, sources=sources)
        self.sold_lines.add(line_key)
        parts = [f"applied: sale -{applied}"]
        if covered:
            parts.append(f"reservation covered {covered}")
        if shortfall:
            parts.append(f"oversold by {shortfall}")
        return ", ".join(parts)

    def _apply_restock(self, plan: Plan, line: Line) -> str:
        """Put back at most what the order line took, each unit where it was taken from."""
        order_line: IngestedOrderLine | None
        if line.order_line is not None:
            order_line = self.order_lines[line.order_line.pk]
        else:
            order_line = self.new_order_lines.get((_channel_id(plan), order_ref_of(line), line_id_of(line)))
        if order_line is None:
            return "ignored: no recorded sale for this order line; nothing to put back"
        quantity = min(line.quantity, order_line.taken - order_line.restocked)
        if quantity <= 0:
            return "ignored: already put back"
        sources = _sources(order_line)
        left, moved = quantity, 0
        for src in sources:
            put = min(src["taken"] - src["restocked"], left)
            if put <= 0:
                continue
            position = self.locked[(order_line.sku_id, src["location"])]
            self._move(plan, line, position, type=line.type, delta=put,
                       key=line.key if moved == 0 else f"{line.key}@{src['location']}",
                       metadata={"order": order_line.order_ref, "order_line": order_line.line_id})
            src["restocked"] += put
            left -= put
            moved += 1
        order_line.sources = sources
        order_line.restocked += quantity
        if order_line.pk is not None:
            IngestedOrderLine.objects.filter(pk=order_line.pk).update(restocked=F("restocked") + quantity,
                                                                      sources=sources)
        return f"applied: {line.type} +{quantity}"

    def _apply_count(self, plan: Plan, line: Line, position: StockPosition) -> str:
        """An absolute level. From a channel: a level observed before our last acknowledged push is
        stale (the push overwrote it), an echo of that push is ignored, and it is applied only
        where the channel is authoritative (otherwise recorded as drift). Older than the newest
        level applied to the position: stale, not applied."""
        channel = plan.channel
        observed = line.event.occurred_at or plan.event.received_at
        assert line.sku_id is not None and line.location_id is not None  # _apply_line: a planned count
        if line.event.metadata.get("channel_level"):
            assert channel is not None  # only a channel's adapter reports the channel's own levels
            state = ChannelSkuState.objects.filter(channel=channel, sku_id=line.sku_id).values_list(
                "last_pushed", "last_pushed_at").first()
            last_pushed, pushed_at = state or (None, None)
            if last_pushed is not None and last_pushed == line.quantity:
                return f"ignored: echo of our push ({last_pushed})"
            if pushed_at is not None and line.event.occurred_at is not None and line.event.occurred_at < pushed_at:
                return (f"stale: observed at {observed.isoformat()}, before our push of {last_pushed} at "
                        f"{pushed_at.isoformat()}")
            if line.location_id not in {loc.pk for loc in channel.authoritative_locations.all()}:
                LevelDrift.objects.create(channel=channel, sku_id=line.sku_id, location_id=line.location_id,
                                          reported=line.quantity, on_hand=position.on_hand,
                                          available=position.available, reported_at=observed,
                                          inbound_event=plan.event)
                return f"drift: channel reports {line.quantity}, on hand {position.on_hand} (not authoritative)"
        pair = (line.sku_id, line.location_id)
        newest = self.watermarks.get(pair)
        if newest is not None and observed < newest:
            return f"stale: observed {observed.isoformat()}, newer level applied at {newest.isoformat()}"
        self._move(plan, line, position, type=MovementType.COUNT, delta=line.quantity - position.on_hand,
                   key=line.key, metadata={"counted": line.quantity})
        if newest is None or observed > newest:
            LevelWatermark.objects.update_or_create(sku_id=line.sku_id, location_id=line.location_id,
                                                    defaults={"observed_at": observed})
            self.watermarks[pair] = observed
        return f"applied: count {line.quantity}"


# ------------------------------------------------------------------------------ helpers


def _result(plan: Plan, outcome: dict[str, str]) -> EventResult:
    errors = [(line.key, line.error) for line in plan.lines if line.error is not None]
    for key, error in errors:
        outcome[key] = f"failed: {error.code}: {error.detail}"
    if errors:
        first = errors[0][1]
        detail = first.detail if len(errors) == 1 else f"{first.detail} (and {len(errors) - 1} more lines)"
        return EventResult(InboundEvent.Status.FAILED, first.code, detail, outcome=outcome)
    if not plan.lines:
        return EventResult(InboundEvent.Status.IGNORED, outcome={"_": "nothing to apply for this topic/status"})
    return EventResult(InboundEvent.Status.DONE, outcome=outcome)


def _sources(order_line: IngestedOrderLine) -> list[dict]:
    """Where an order line's units came from (rows older than `sources` took all from `location`)."""
    if order_line.sources:
        return order_line.sources
    return [{"location": order_line.location_id, "taken": order_line.taken, "restocked": order_line.restocked}]


def _draw(cover: list[list[int]], units: int) -> list[dict]:
    """Take up to `units` from a cover list [[location_id, units], ...] in order (mutating it);
    returns the sources taken, as order-line sources."""
    taken = []
    for entry in cover:
        take = min(entry[1], units)
        if take > 0:
            entry[1] -= take
            units -= take
            taken.append({"location": entry[0], "taken": take, "restocked": 0})
    return taken


def _column_any(model: type[models.Model], column: str, values: list) -> list:
    """`SELECT <column> FROM <model's table> WHERE <column> = ANY(%s)`: one array parameter for
    any number of values (an ORM IN list of 500 builds 500 lookups in Python)."""
    if not values:
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql_compose("SELECT {column} FROM {table} WHERE {column} = ANY(%s)",
                                   table=model._meta.db_table, column=column), [list(values)])
        return [row[0] for row in cursor.fetchall()]


def _order_lines_insert(lines: list[IngestedOrderLine]) -> None:
    """The batch's new order lines in one INSERT ... SELECT, the rows as one JSON parameter."""
    now = timezone.now()
    rows = [(ol.channel_id, ol.order_ref, ol.line_id, ol.sku_id, ol.location_id, ol.ordered, ol.taken, ol.covered,
             ol.restocked, ol.sources, now, now) for ol in lines]
    with connection.cursor() as cursor:
        cursor.execute(sql_compose(
            "INSERT INTO {table} (channel_id, order_ref, line_id, sku_id, location_id, ordered, taken, covered, "
            "restocked, sources, created_at, updated_at) SELECT * FROM {rows} AS r",
            table=IngestedOrderLine._meta.db_table,
            rows=sql_json_rows(["bigint", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
                                "jsonb", "timestamptz", "timestamptz"])), [sql_json_param(rows)])
