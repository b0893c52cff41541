"""Reads for live stock: what a stream names, and the stock events it sends."""

from __future__ import annotations

from rest_framework.renderers import JSONRenderer

from inventory.models import Sku
from inventory.selectors import stock_get_many

_RENDERER = JSONRenderer()


def sku_ids_for_codes(*, codes: list[str]) -> dict[str, int]:
    """SKU code -> id for the codes that exist (one query)."""
    return dict(Sku.objects.filter(code__in=codes).values_list("code", "id"))


def stock_states_read(*, skus: dict[int, str]) -> dict[int, tuple[int, bytes]]:
    """Current stock of these SKUs (id -> code): id -> (revision, JSON body).

    The body is the bytes `GET /api/v1/stock/{sku}/` answers (same selector, same renderer).
    The revision is the sum of the SKU's position versions: every ledger row adds one, so of
    two reads of a SKU the one with the higher revision is the newer (equal: the same state).
    Two queries, whatever the number of SKUs.
    """
    by_code = {code: sku_id for sku_id, code in skus.items()}
    states = {}
    for body in stock_get_many(sku_codes=list(by_code)):
        revision = sum(location["version"] for location in body["locations"])
        states[by_code[body["sku"]]] = (revision, _RENDERER.render(body))
    return states
