"""Group commit inside one process: requests for the same thing that arrive while a batch of it
is running wait for that batch, then run together as the next one (docs/performance.md, session 8).

The hot paths use it for one hot SKU (reservations.group_commit, inventory.sale_group): each
batch is one statement on the leader's own thread and database connection. There is no waiting
window: a request that finds nothing running runs at once, alone; batches form only while the
database is busy with the previous one, so an idle system answers as fast as before.

The leader is the request that found no batch running; after its batch it hands the lead to the
first request that arrived meanwhile. Every request's `outcome` is set before its thread wakes:
what its batch decided, or an error if the batch could not finish.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

UNSET = object()  # a request's outcome before its batch has decided it


class Waiting:
    """A request in a combiner's queue; subclasses carry its arguments."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lead = False  # handed the lead: run the next batch
        self.outcome: Any = UNSET


class _Group:
    def __init__(self, key: Hashable):
        self.key = key
        self.lock = threading.Lock()
        self.queue: list[Waiting] = []
        self.running = False


class Combiner:
    """Batches of requests with one key. `run_batch(batch)` sets every request's outcome (an
    exception instance is raised in the request's thread); it runs on the leader's thread."""

    def __init__(self, run_batch: Callable[[list[Any]], None], *, max_batch: int = 64):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self._groups: dict[Hashable, _Group] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, request: Waiting) -> Any:
        """Run `request` with the others of `key` that wait with it; its outcome, or raise it."""
        with self._lock:
            group = self._groups.get(key) or self._groups.setdefault(key, _Group(key))
        with group.lock:
            group.queue.append(request)
            lead = not group.running
            group.running = True
        if not lead:
            request.done.wait()
            lead = request.lead
        if lead:
            self._lead(group, request)
        if isinstance(request.outcome, BaseException):
            raise request.outcome
        return request.outcome

    def _lead(self, group: _Group, own: Waiting) -> None:
        with group.lock:
            batch, group.queue = group.queue[:self.max_batch], group.queue[self.max_batch:]
        try:
            self.run_batch(batch)
        finally:
            # A batch that did not finish (a defect, or the thread stopped, possibly after its
            # commit): every undecided request fails with its own error, never takes a path that
            # could apply it twice (a 5xx frees its Idempotency-Key claim; a retry finds the effect).
            for request in batch:
                if request.outcome is UNSET:
                    request.outcome = RuntimeError("the combined statement did not finish")
            with self._lock, group.lock:
                following = group.queue[0] if group.queue else None
                group.running = following is not None
                if following is None and self._groups.get(group.key) is group:
                    # Idle: an entry per key ever seen would only grow. A late arrival still
                    # holding this object leads it alone: exact, merely not combined.
                    del self._groups[group.key]
            for request in batch:
                if request is not own:
                    request.done.set()
            if following is not None:
                following.lead = True
                following.done.set()


def run_split(batch: list[Any], *, keys: Callable[[Any], set], combined: Callable[[list[Any]], bool],
              alone: Callable[[Any], Any]) -> None:
    """The shape every batch runner here shares. A request whose `keys` (an Idempotency-Key, a
    ledger key, an order_ref...) clash with an earlier one's is not combined: it runs alone after
    the batch, which has committed by then (its own path then answers a replay, 409 or 422). A
    batch of one runs alone; so does each request of a combined statement that failed as a whole
    (`combined` returned False: it changed nothing). `alone(request)` returns its outcome; one
    that raises gets the exception as its outcome, raised in the request's own thread."""
    solo, together = [], []
    seen: set = set()
    for request in batch:
        mine = keys(request)
        if mine & seen:
            solo.append(request)
            continue
        seen |= mine
        together.append(request)
    if len(together) == 1:
        solo.insert(0, together.pop())
    elif together and not combined(together):
        solo = together + solo
    for request in solo:
        try:
            request.outcome = alone(request)
        except Exception as exc:  # noqa: BLE001 - handed to the request's own thread, which raises it
            request.outcome = exc
