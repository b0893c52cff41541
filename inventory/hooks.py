"""What reacts to a stock change, in one ordered list, without inventory knowing who.

Every service that changes stock calls `positions_changed` inside its transaction, once, after
its ledger rows are written. The reactions are named, in order, by the composition root:
`settings.STOCK_CHANGE_REACTIONS` (config/settings.py), dotted paths of functions
`reaction(change: StockChange) -> Iterable[StockPosition] | None`.

A reaction that itself changes stock (waitlist activation takes freed units) returns the
positions it changed; they join the change for every later reaction. So the channel outbox, last
in the list, marks everything the transaction changed in one ordered statement (two marking
statements in one transaction could lock outbox rows in opposite orders and deadlock).
Reactions run inside the stock transaction: side effects that leave the process are queued on
commit (core.oncommit), never sent from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from inventory.models import StockPosition


@dataclass
class StockChange:
    """The positions one transaction changed (locked by it), and whether any availability rose
    (receipt, release, expiry...: waiting reservations may now be filled)."""

    positions: list[StockPosition]
    availability_rose: bool


StockReaction = Callable[[StockChange], Iterable[StockPosition] | None]


@cache
def stock_reactions() -> tuple[StockReaction, ...]:
    return tuple(import_string(path) for path in getattr(settings, "STOCK_CHANGE_REACTIONS", ()))


def positions_changed(positions: Iterable[StockPosition], *, availability_rose: bool) -> None:
    """Run every registered reaction, in order, inside the caller's transaction."""
    change = StockChange(positions=list(positions), availability_rose=availability_rose)
    if not change.positions:
        return
    for reaction in stock_reactions():
        more = reaction(change)
        if more:
            known = {p.pk for p in change.positions}
            change.positions += [p for p in more if p.pk not in known]
