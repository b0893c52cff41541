"""What each channel may sell: available at its eligible locations, minus safety stock and buffer."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from django.db import connection

from channels.models import (
    Channel,
    ChannelListing,
    ChannelSkuState,
    DirtyPair,
)
from core.sql import sql_compose
from inventory.models import BundleComponent, Location, Sku, StockPosition

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ quantity


def buffered_quantity(*, available: int, safety_stock: int, buffer_type: str, buffer_value: int,
                      zero_below: int = 0, max_quantity: int | None = None) -> int:
    """What a channel may sell, >= 0, in the contract's order: available minus safety stock, minus
    the channel buffer; 0 when that is below `zero_below`; at most `max_quantity` (None: no cap).

    A percent buffer holds back ceil(p% of what is left after safety stock): rounding toward
    holding back, because overselling costs more than one unsold unit. `zero_below` is judged on
    the quantity before the cap, so a cap below `zero_below` does not zero a channel by itself.
    """
    base = max(available - safety_stock, 0)
    held = math.ceil(base * buffer_value / 100) if buffer_type == Channel.BufferType.PERCENT else buffer_value
    quantity = max(base - held, 0)
    if quantity < zero_below:
        quantity = 0
    if max_quantity is not None:
        quantity = min(quantity, max_quantity)
    return quantity


def _tables() -> dict:
    return {"pair": DirtyPair._meta.db_table, "sku": Sku._meta.db_table, "loc": Location._meta.db_table,
            "pos": StockPosition._meta.db_table, "cl": Channel.locations.through._meta.db_table,
            "state": ChannelSkuState._meta.db_table, "listing": ChannelListing._meta.db_table,
            "bc": BundleComponent._meta.db_table}


# Where a channel's quantity comes from: its `locations`, or every location when it names none;
# inactive locations never count. Shared by every quantity query below.
_ELIGIBLE = """
    eligible AS (
        SELECT l.id FROM {loc} l
        WHERE l.active AND (NOT EXISTS (SELECT 1 FROM {cl} x WHERE x.channel_id = %(channel)s)
                            OR l.id IN (SELECT x.location_id FROM {cl} x WHERE x.channel_id = %(channel)s)))
"""
# A bundle (inventory.bundles) holds no positions: per eligible location, whole bundles its
# components make there (min of floor(available / units per bundle)), summed; 0 while any of its
# components is inactive (it cannot be sold then).
_AVAILABLE = """CASE WHEN NOT s.is_bundle THEN
        COALESCE((SELECT SUM(GREATEST(p.on_hand - p.reserved, 0)) FROM {pos} p
                  WHERE p.sku_id = s.id AND p.location_id IN (SELECT id FROM eligible)), 0)
    WHEN EXISTS (SELECT 1 FROM {bc} bc JOIN {sku} c ON c.id = bc.component_id
                 WHERE bc.bundle_id = s.id AND NOT c.active) THEN 0
    ELSE COALESCE((SELECT SUM(units) FROM (
            SELECT MIN(COALESCE(GREATEST(p.on_hand - p.reserved, 0), 0) / bc.quantity) AS units
            FROM eligible e CROSS JOIN {bc} bc
            LEFT JOIN {pos} p ON p.sku_id = bc.component_id AND p.location_id = e.id
            WHERE bc.bundle_id = s.id GROUP BY e.id) per_location), 0) END"""


_QUANTITY_SQL = ("WITH " + _ELIGIBLE + " SELECT s.id, s.safety_stock, s.active, " + _AVAILABLE  # noqa: S608
                 + " FROM {sku} s WHERE s.id = ANY(%(skus)s)")  # composed with core.sql.sql_compose


def channel_quantities(*, channel: Channel, sku_ids: Iterable[int]) -> dict[int, int]:
    """The quantity each SKU should show on the channel now, in one query for any number of SKUs.
    An inactive SKU shows 0."""
    sku_ids = sorted(set(sku_ids))
    if not sku_ids:
        return {}
    sql = sql_compose(_QUANTITY_SQL, **_tables())
    with connection.cursor() as cursor:
        cursor.execute(sql, {"channel": channel.pk, "skus": sku_ids})
        rows = cursor.fetchall()
    return {sku_id: buffered_quantity(available=int(available) if active else 0, safety_stock=safety,
                                      buffer_type=channel.buffer_type, buffer_value=channel.buffer_value,
                                      zero_below=channel.zero_below, max_quantity=channel.max_quantity)
            for sku_id, safety, active, available in rows}
