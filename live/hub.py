"""One hub per web process (per event loop): the Redis subscription and the open streams.

Each process holds one pub/sub connection, however many clients it serves. A notification
("<epoch> <number> <sku ids>") marks the named SKUs that local clients watch; one fetch task
reads their current stock (two queries per batch, on the hub's own thread and database
connection) and offers each SKU's event to every local stream watching it. Notifications that
arrive while a read runs are served by the next read: a burst of changes costs a handful of
reads, and an idle stream costs no thread, no query and no database connection, only the
objects below (see docs/live.md for the measured figures).

Ordering and resume (docs/live.md): notifications carry increasing numbers and reach the hub
in that order; a state read after a notification includes its change; a stream keeps, per
SKU, the newest state not yet written (higher revision wins) and writes what it has in
number order, so a client's cursor never passes a change it has not received.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings
from django.db import close_old_connections

from live.keys import cursor_format, live_keys
from live.selectors import stock_states_read

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StockEvent:
    """The state of one SKU read after change `seq` of `epoch` (it may include later ones)."""

    sku_id: int
    epoch: str
    seq: int
    revision: int
    body: bytes


class Subscriber:
    """One open stream: its SKUs, where its cursor starts, and the newest event per SKU not yet
    written. Memory stays bounded whatever the client's speed: one pending event per SKU."""

    __slots__ = ("skus", "epoch", "after", "pending", "sent", "wake", "cursor", "__weakref__")

    def __init__(self, *, skus: dict[int, str], epoch: str, after: int, cursor: int | None = None):
        self.skus = skus  # id -> code
        self.epoch = epoch
        self.after = after  # changes numbered up to here are the client's already (or sent first)
        self.cursor = after if cursor is None else cursor  # the number in the id written last
        self.pending: dict[int, StockEvent] = {}
        self.sent: dict[int, int] = {}  # sku id -> revision written last
        self.wake = asyncio.Event()

    def offer(self, event: StockEvent, *, force: bool = False) -> None:
        if event.epoch != self.epoch:
            # Redis lost its numbering (new epoch): numbers restart; revisions still dedupe.
            self.epoch, self.after, self.cursor = event.epoch, 0, 0
        elif not force and event.seq <= self.after:
            return
        if event.revision <= self.sent.get(event.sku_id, -1):
            return
        current = self.pending.get(event.sku_id)
        if current is not None:
            # The higher revision is the later read and includes the other's change: keep it,
            # under the larger number.
            newer = event if event.revision >= current.revision else current
            event = StockEvent(event.sku_id, event.epoch, max(event.seq, current.seq), newer.revision, newer.body)
        self.pending[event.sku_id] = event
        self.wake.set()

    def take(self) -> bytes:
        """The pending events as SSE frames, oldest number first; empty when none.

        Events of one change (equal numbers) carry the previous cursor except the last of them,
        so a connection lost between them resumes before that change, not after it."""
        self.wake.clear()
        events = sorted(self.pending.values(), key=lambda e: e.seq)
        self.pending.clear()
        frames = []
        for n, event in enumerate(events):
            if event.revision <= self.sent.get(event.sku_id, -1):
                continue
            self.sent[event.sku_id] = event.revision
            last_of_change = n + 1 == len(events) or events[n + 1].seq != event.seq
            if last_of_change:
                self.cursor = max(self.cursor, event.seq)
            frames.append(b"id: %s\nevent: stock\ndata: %s\n\n"
                          % (cursor_format(event.epoch, self.cursor).encode(), event.body))
        return b"".join(frames)


class Hub:
    def __init__(self) -> None:
        self.watchers: dict[int, weakref.WeakSet[Subscriber]] = {}
        self.codes: dict[int, str] = {}
        self.dirty: dict[int, tuple[str, int]] = {}  # sku id -> (epoch, highest number announced)
        self.epoch: str | None = None
        self.ready = asyncio.Event()  # subscribed to the channel
        self.kick = asyncio.Event()
        self.keys = live_keys()
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
        # The hub's own thread keeps its own database connection; no request thread is used.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-hub")
        self.tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.tasks:
            return
        loop = asyncio.get_running_loop()
        # A fresh context: the tasks outlive the request that started them (and its
        # thread-sensitive context, see live.asgi).
        for coro in (self._listen(), self._fetch_loop()):
            self.tasks.append(loop.create_task(coro, context=contextvars.Context()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self.redis.aclose()
        self.executor.shutdown(wait=False)

    # ------------------------------------------------------------------ streams
    def add(self, subscriber: Subscriber) -> None:
        for sku_id, code in subscriber.skus.items():
            self.watchers.setdefault(sku_id, weakref.WeakSet()).add(subscriber)
            self.codes[sku_id] = code

    def remove(self, subscriber: Subscriber) -> None:
        for sku_id in subscriber.skus:
            watchers = self.watchers.get(sku_id)
            if watchers is not None:
                watchers.discard(subscriber)
                if not watchers:
                    del self.watchers[sku_id]
                    self.codes.pop(sku_id, None)

    def clients(self) -> int:
        return len({id(s) for watchers in self.watchers.values() for s in watchers})

    async def position(self) -> tuple[str, int]:
        """(epoch, number of the latest change): where a new stream starts."""
        epoch, seq = await self.redis.mget([self.keys.epoch, self.keys.seq])
        if epoch is None:  # nothing published yet: make the epoch now, so cursors stay valid
            await self.redis.set(self.keys.epoch, secrets.token_hex(4), nx=True)
            epoch, seq = await self.redis.mget([self.keys.epoch, self.keys.seq])
        return (epoch.decode() if isinstance(epoch, bytes) else str(epoch)), int(seq or 0)

    async def last_changes(self, sku_ids: Iterable[int]) -> dict[int, int]:
        """SKU id -> the number of its latest change (absent: none recorded)."""
        ids = list(sku_ids)
        values = await self.redis.hmget(self.keys.last, [str(i) for i in ids]) if ids else []
        return {sku_id: int(value) for sku_id, value in zip(ids, values, strict=True) if value is not None}

    async def read(self, skus: dict[int, str]) -> dict[int, tuple[int, bytes]]:
        """Current stock of these SKUs, read on the hub's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, _read, skus)

    # ------------------------------------------------------------------ notifications
    def _mark(self, epoch: str, seq: int, sku_ids: Iterable[int]) -> None:
        marked = False
        for sku_id in sku_ids:
            if sku_id in self.watchers:
                self.dirty[sku_id] = (epoch, seq)
                marked = True
        if marked:
            self.kick.set()

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.channel)
                # Anything watched may have changed while we were not subscribed (first start,
                # Redis restart): read it again; streams drop what their clients already have.
                await self._resync()
                self.ready.set()
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarting: streams stay open, we retry
                self.ready.clear()
                logger.warning("live stock: Redis subscription lost (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):  # the connection may be gone already
                    await pubsub.aclose()

    def _on_message(self, data: bytes) -> None:
        try:
            epoch, seq, ids = data.decode().split(" ", 2)
            sku_ids = [int(i) for i in ids.split(",") if i]
            number = int(seq)
        except ValueError:
            logger.warning("live stock: ignored a malformed notification %r", data[:200])
            return
        self.epoch = epoch
        self._mark(epoch, number, sku_ids)

    async def _resync(self) -> None:
        epoch, _seq = await self.position()
        self.epoch = epoch
        last = await self.last_changes(list(self.watchers))
        for sku_id, seq in last.items():
            self._mark(epoch, seq, [sku_id])

    async def _fetch_loop(self) -> None:
        while True:
            await self.kick.wait()
            self.kick.clear()
            batch, self.dirty = self.dirty, {}
            skus = {sku_id: self.codes[sku_id] for sku_id in batch if sku_id in self.codes}
            if not skus:
                continue
            try:
                states = await self.read(skus)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("live stock: could not read stock; retrying")
                for sku_id, mark in batch.items():
                    self.dirty.setdefault(sku_id, mark)
                await asyncio.sleep(1.0)
                self.kick.set()
                continue
            # Offered without an await in between: a stream writes the whole batch at once.
            for sku_id, (revision, body) in states.items():
                epoch, seq = batch[sku_id]
                event = StockEvent(sku_id, epoch, seq, revision, body)
                for subscriber in list(self.watchers.get(sku_id, ())):
                    subscriber.offer(event)


def _read(skus: dict[int, str]) -> dict[int, tuple[int, bytes]]:
    close_old_connections()  # a new "request cycle" for this thread's persistent connection
    return stock_states_read(skus=skus)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub_get() -> Hub:
    """This event loop's hub, started on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    hub.start()
    return hub


async def hubs_close() -> None:
    """Stop this loop's hub (ASGI lifespan shutdown)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.close()
