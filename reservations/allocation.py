"""Deciding which positions a reservation draws from. Pure functions over *locked* positions.

Shared by creation and waitlist activation so both apply the same rules:
- lines naming the same SKU (and the same location, or none) are merged before checking;
- a line naming a location draws only from that location;
- a line without a location draws from the locations eligible for the channel in priority
  order (Location.priority, then code), and may be split across several of them;
- all lines or none: any shortfall refuses the whole request;
- a line naming a bundle draws whole bundle units from one location at a time: at each location
  it may use, min over components of floor(component units left there / units per bundle), the
  same formula as the bundle's derived availability (inventory.bundles), and holds each
  component's share there. Its holds are kept apart from the component's own line (keyed by the
  bundle too), so every reservation line says which bundle it is for.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from psycopg import sql

from channels.models import Channel
from inventory.bundles import Components
from inventory.models import Location, StockPosition


@dataclass(frozen=True)
class LineRequest:
    """One merged request line: ids, not codes (resolved by the caller). `components` is set
    (inventory.bundles) when the SKU is a bundle: the line then draws its components."""

    sku_id: int
    quantity: int
    location_id: int | None = None
    components: Components = ()


def stock_sku_ids(requests: list[LineRequest]) -> set[int]:
    """The SKUs whose positions the requests draw from: a bundle's components, any other SKU itself."""
    return {c for r in requests for c, _ in r.components} | {r.sku_id for r in requests if not r.components}


@dataclass
class Allocation:
    """Outcome of `allocate`: holds per position, or per-SKU shortfalls (never both)."""

    # (position pk, bundle id or None) -> (position, quantity, bundle id or None)
    holds: dict[tuple[int, int | None], tuple[StockPosition, int, int | None]]
    requested: dict[int, int]  # sku_id -> total requested
    available: dict[int, int]  # sku_id -> total available where this request may draw
    short: list[int]  # sku_ids that could not be covered, in request order

    @property
    def ok(self) -> bool:
        return not self.short


def lines_merge(lines: list[LineRequest]) -> list[LineRequest]:
    """Sum lines naming the same (sku, location), keeping first-appearance order."""
    totals: dict[tuple[int, int | None], int] = {}
    components: dict[int, Components] = {}
    for line in lines:
        key = (line.sku_id, line.location_id)
        totals[key] = totals.get(key, 0) + line.quantity
        components[line.sku_id] = line.components
    return [LineRequest(sku_id=s, location_id=loc, quantity=q, components=components[s])
            for (s, loc), q in totals.items()]


def eligible_locations(channel_id: int | None, *, cache: dict | None = None) -> list[Location]:
    """Active locations a reservation may draw from, in priority order.

    The channel's own locations that are active when it lists any (none, if all of them are
    switched off: the channel then shows 0, channels.propagation.quantity agrees); otherwise (or
    with no channel) every active location: a channel configured without a location list sells
    from everywhere.
    """
    if cache is not None and channel_id in cache:
        return cache[channel_id]
    listed: list[Location] = []
    if channel_id is not None:
        listed = list(Location.objects.filter(channels__id=channel_id).order_by("priority", "code"))
    if listed:
        found = [loc for loc in listed if loc.active]
    else:
        found = list(Location.objects.filter(active=True).order_by("priority", "code"))
    if cache is not None:
        cache[channel_id] = found
    return found


def eligible_locations_sql() -> sql.Composed:
    """`eligible_locations` as a subquery for the checkout's plain statements (id, code, active,
    priority; unordered), the channel given as the named parameter `%(channel)s` (NULL: none)."""
    return sql.SQL(
        "SELECT l.id, l.code, l.active, l.priority FROM {location} l WHERE l.active AND "
        "(NOT EXISTS (SELECT 1 FROM {listed} c WHERE c.channel_id = %(channel)s) "
        "OR EXISTS (SELECT 1 FROM {listed} c WHERE c.channel_id = %(channel)s AND c.location_id = l.id))").format(
            location=sql.Identifier(Location._meta.db_table),
            listed=sql.Identifier(Channel.locations.through._meta.db_table))


def location_ids_for(lines: list[LineRequest], eligible: list[Location]) -> list[int]:
    """Every location id the lines may draw from (eligible ones plus explicitly named ones)."""
    ids = [loc.pk for loc in eligible]
    ids += [line.location_id for line in lines if line.location_id is not None and line.location_id not in ids]
    return ids


def allocate(
    lines: list[LineRequest],
    positions: dict[tuple[int, int], StockPosition],
    eligible_ids: list[int],
) -> Allocation:
    """Plan holds for merged `lines` against locked `positions` {(sku_id, location_id): pos}.

    Explicitly located lines are served first so an unlocated line of the same SKU does not take
    the units the located one needs. Nothing is written here.
    """
    remaining = {key: p.available for key, p in positions.items()}
    holds: dict[tuple[int, int | None], tuple[StockPosition, int, int | None]] = {}
    requested: dict[int, int] = defaultdict(int)
    available: dict[int, int] = defaultdict(int)
    short: list[int] = []

    def drawable(line: LineRequest, location_id: int) -> int:
        """Units of the line's SKU (whole bundles, for a bundle) left to draw at one location."""
        if line.components:
            return min((remaining.get((c, location_id), 0) // per_bundle for c, per_bundle in line.components),
                       default=0)
        return remaining.get((line.sku_id, location_id), 0)

    for line in lines:
        requested[line.sku_id] += line.quantity
    for sku_id in requested:
        # Where this SKU may draw: the locations its lines name, plus every eligible location
        # only when one of its lines names none.
        sku_lines = [ln for ln in lines if ln.sku_id == sku_id]
        seen = {ln.location_id for ln in sku_lines if ln.location_id is not None}
        if any(ln.location_id is None for ln in sku_lines):
            seen |= set(eligible_ids)
        available[sku_id] = sum(drawable(sku_lines[0], loc) for loc in seen)

    def hold(position: StockPosition, quantity: int, bundle_id: int | None) -> None:
        _, before, _ = holds.get((position.pk, bundle_id), (position, 0, bundle_id))
        holds[(position.pk, bundle_id)] = (position, before + quantity, bundle_id)
        remaining[(position.sku_id, position.location_id)] -= quantity

    for line in sorted(lines, key=lambda ln: ln.location_id is None):
        need = line.quantity
        candidates = [line.location_id] if line.location_id is not None else eligible_ids
        for location_id in candidates:
            take = min(need, drawable(line, location_id))
            if take <= 0:
                continue
            if line.components:
                for component_id, per_bundle in line.components:
                    hold(positions[(component_id, location_id)], take * per_bundle, line.sku_id)
            else:
                hold(positions[(line.sku_id, location_id)], take, None)
            need -= take
        if need > 0 and line.sku_id not in short:
            short.append(line.sku_id)

    if short:
        holds = {}
        order = list(requested)
        short.sort(key=order.index)
    return Allocation(holds=holds, requested=dict(requested), available=dict(available), short=short)
