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

Statement forms. The hottest changes, a plain sale (inventory.sale_statement) and a checkout
reservation (reservations.create_statement), run as one SQL statement each (the machinery is in
inventory.one_statement), so the positions' row locks are held for one round trip. Its reactions run inside that
statement: each reaction may carry a *statement form* (`@statement_form(build)`), a
data-modifying statement over the changed rows plus what to do once they are committed. The
forms are asked only for changes that raise no availability (a sale). When any registered
reaction has no form, `reaction_statements()` is None and every change takes the general path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

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
R = TypeVar("R", bound=StockReaction)


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


# ------------------------------------------------------------------------------ statement forms


@dataclass(frozen=True)
class ReactionStatement:
    """A reaction's work inside a one-statement stock change.

    `sql`: a data-modifying statement (an INSERT ... RETURNING one column) that reads the changed
    rows from a CTE named `changed(sku_id, location_id)`; empty when the reaction writes nothing
    in the transaction. Its parameters are named (`%(name)s`) and given in `params`; prefix them
    with the reaction's name. `after_commit(change, returned)` runs once the change is committed
    (or, inside an outer transaction, queues its work on commit as the reaction would), with the
    values the statement returned."""

    sql: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    after_commit: Callable[[StockChange, list[Any]], None] | None = None


def statement_form(build: Callable[[], ReactionStatement]) -> Callable[[R], R]:
    """Attach a statement form to a reaction (`build` is called once per process)."""

    def attach(reaction: R) -> R:
        reaction.statement_form = cache(build)  # type: ignore[attr-defined]
        return reaction

    return attach


def reaction_statements() -> tuple[ReactionStatement, ...] | None:
    """Every registered reaction's statement form, in order; None if one has none (the change
    must then take the general path and call `positions_changed`)."""
    builders = [getattr(reaction, "statement_form", None) for reaction in stock_reactions()]
    if any(build is None for build in builders):
        return None
    return tuple(build() for build in builders)  # type: ignore[misc]
