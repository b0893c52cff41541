"""Bundles (kits): SKUs made of other SKUs. A bundle holds no stock of its own.

Contract section 4, "Bundles": at each location a bundle's `available` is the minimum over its
components of floor(component available there / units per bundle), and `on_hand` likewise from
the components' on_hand; totals sum the locations. So one bundle unit is always made from one
location's stock: a kit ships from one place. Its `reserved` is what makes the difference
(on_hand - available: bundle units whose component units are held), so `available =
max(on_hand - reserved, 0)` holds for bundles as for any SKU, and its `version` at a location is
the sum of its components' versions there (it moves whenever a component there changes).

Writes never touch a bundle's own row: selling, reserving or committing a bundle changes its
components' positions (one ledger row per component, with `{"bundle", "bundle_units"}` in the
row's metadata), locked through inventory.locking like any other change. Components are set at
creation and never change, and a bundle is never a component, so expansion is one level deep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

from django.db import connection
from psycopg import sql

from core.sql import sql_compose
from inventory.models import BundleComponent, Location, StockPosition

# (component SKU id, units of it per bundle unit), ordered by component id.
Components = tuple[tuple[int, int], ...]


@cache
def _components_sql() -> str:
    return sql_compose("SELECT bundle_id, component_id, quantity FROM {component} WHERE bundle_id = ANY(%s::bigint[]) "
                       "ORDER BY bundle_id, component_id", component=BundleComponent._meta.db_table)


def bundle_components(bundle_ids: Iterable[int]) -> dict[int, Components]:
    """The components of each given bundle, in one query (ids that are no bundle are absent)."""
    found: dict[int, list[tuple[int, int]]] = {}
    ids = sorted(set(bundle_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:  # composed once: the queryset's compilation cost more than the query
        cursor.execute(_components_sql(), [ids])
        rows = cursor.fetchall()
    for bundle_id, component_id, quantity in rows:
        found.setdefault(bundle_id, []).append((component_id, quantity))
    return {bundle_id: tuple(parts) for bundle_id, parts in found.items()}


def bundle_units(components: Components, units: Mapping[int, int]) -> int:
    """How many whole bundles `units` ({component id: units at one location}) make."""
    return min((max(units.get(component_id, 0), 0) // per_bundle for component_id, per_bundle in components),
               default=0)


def bundle_location_numbers(components: Components,
                            positions: Mapping[int, tuple[int, int, int]]) -> tuple[int, int, int, int]:
    """(on_hand, reserved, available, version) of a bundle at one location, from its components'
    (on_hand, reserved, version) there ({component id: numbers}; a missing one holds nothing)."""
    on_hand = bundle_units(components, {c: numbers[0] for c, numbers in positions.items()})
    available = bundle_units(components, {c: numbers[0] - numbers[1] for c, numbers in positions.items()})
    version = sum(numbers[2] for numbers in positions.values())
    return on_hand, on_hand - available, available, version


def bundles_containing_sql(skus: sql.Composable) -> str:
    """The bundles made of any of the SKUs in the bigint[] `skus` (SQL: a parameter, or a
    statement form's subquery, inventory.hooks)."""
    return sql_compose("SELECT DISTINCT bundle_id FROM {component} WHERE component_id = ANY({skus})",
                       component=BundleComponent._meta.db_table, skus=skus)


@cache
def _containing_sql() -> str:
    return bundles_containing_sql(sql.SQL("%s::bigint[]"))


def bundles_containing(sku_ids: Iterable[int]) -> list[int]:
    """Ids of the bundles made of any of these SKUs (their derived stock moves with them)."""
    ids = sorted(set(sku_ids))
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_containing_sql(), [ids])
        return [row[0] for row in cursor.fetchall()]


@cache
def _numbers_sql() -> str:
    return sql_compose(
        "SELECT bc.bundle_id, bc.component_id, bc.quantity, l.code, p.on_hand, p.reserved, p.version "
        "FROM {component} bc LEFT JOIN {position} p ON p.sku_id = bc.component_id "
        "LEFT JOIN {location} l ON l.id = p.location_id WHERE bc.bundle_id = ANY(%s)",
        component=BundleComponent._meta.db_table, position=StockPosition._meta.db_table,
        location=Location._meta.db_table)


def bundles_stock_rows(bundle_ids: list[int]) -> dict[int, list[tuple[str, int, int, int, int]]]:
    """Each bundle's derived numbers per location, in one query:
    {bundle id: [(location code, on_hand, reserved, available, version)]}. A location appears
    where any component has a position (a component missing there makes it 0)."""
    components: dict[int, list[tuple[int, int]]] = {}
    numbers: dict[int, dict[str, dict[int, tuple[int, int, int]]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_numbers_sql(), [bundle_ids])
        for bundle_id, component_id, per_bundle, location_code, on_hand, reserved, version in cursor.fetchall():
            parts = components.setdefault(bundle_id, [])
            if (component_id, per_bundle) not in parts:
                parts.append((component_id, per_bundle))
            if location_code is not None:
                numbers.setdefault(bundle_id, {}).setdefault(location_code, {})[component_id] = (
                    on_hand, reserved, version)
    out: dict[int, list[tuple[str, int, int, int, int]]] = {}
    for bundle_id, parts in components.items():
        by_component = tuple(sorted(parts))
        out[bundle_id] = [(code, *bundle_location_numbers(by_component, at))
                          for code, at in sorted(numbers.get(bundle_id, {}).items())]
    return out
