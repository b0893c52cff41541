"""Order polling: marketplaces that do not push their orders to us (eBay, Amazon) are asked for
them, and every order document they return is stored as an inbound event exactly like a webhook
(same table, same `wh:<channel id>:<delivery id>` dedup key, same drain), so new orders,
cancellations and refunds are applied once, by the same code, whichever way they arrived.

How a channel is polled (one `ChannelPollCursor` row per channel):

- **Cursor and overlap.** Everything modified before `cursor_at` is stored. A poll reads the
  window "modified at or after `cursor_at` minus the overlap" (`settings.poll_overlap_seconds`,
  default 300 s), so an order the marketplace indexes late, or stamps with a clock a little
  behind ours, is still seen by the next poll. Reading a version twice costs nothing: the delivery
  id is the order's id plus its modification time and statuses (adapter `order_version`), so the
  same version dedupes on `dedup_key` and a changed order (cancelled, refunded) is a new event;
  its stock lines dedupe again on the ledger's event keys.
- **Windows are read to the end before the cursor moves.** The window's upper bound is fixed
  when its first page answers (our clock when that request was sent, or Amazon's
  `LastUpdatedBefore` if earlier). Progress is saved after each stored page (`page_token`: eBay's
  offset, Amazon's NextToken); `cursor_at` moves to the upper bound only when the last page is
  stored. A run cut short by its time budget resumes at the next page, and a failed page is
  asked again: nothing between two polls is skipped.
- **One poller per channel.** A run first claims the row with one conditional UPDATE (due, and
  no unexpired claim), and every later write is fenced by its claim token: two beats or workers
  never poll a channel at once, and a run that outlived its lease cannot move the cursor.
- **Interval.** `settings.poll_seconds` (default 60 s, at least the 10 s beat); when a run saw a
  full page (or more than one page) the next poll is due after `settings.poll_busy_seconds` (default 15 s); a run that
  stopped at its budget with pages left is queued again at once.
- **Failures** (no answer, timeouts, HTTP errors, answers that are not order pages) leave the
  cursor and the saved page where they were, count in `consecutive_failures` with the reason in
  `last_error`, and postpone the next poll with jittered exponential backoff from the channel's
  interval up to 15 minutes; a 429 waits as long as the marketplace asks (or the backoff when it
  does not say) without counting as a failure. Each request has the fetch timeouts
  (INGESTION_FETCH_TIMEOUT_SECONDS) and a run starts no page after INGESTION_FETCH_BUDGET_SECONDS
  (the first always goes). The backoff on the row is this stream's circuit breaker: one request
  stream per channel, already single-flight, needs no Redis circuit (ingestion.fetching) on top.

No HTTP call happens inside a database transaction: rows are inserted and the cursor updated in
autocommit between requests.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from channels.adapters import ADAPTERS, adapter_for
from channels.models import Channel
from core.backoff import backoff_delay
from core.jsonsafe import json_contains_nul, json_parse, json_replace_nul, text_clean
from ingestion.intake import _insert_new, _row
from ingestion.models import ChannelPollCursor, InboundEvent
from ingestion.scheduling import drain_kick, fetch_budget, fetch_timeout

logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 60.0  # contract: `settings.poll_seconds`, default 60
BEAT_SECONDS = 10.0  # the `ingestion-poll-orders` beat: no channel is polled more often than this
DEFAULT_BUSY_SECONDS = 15.0
DEFAULT_OVERLAP_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 900.0
POLL_FLAG_TTL = 60  # seconds; bounds the wait if a queued poll message is lost (the beat finds it too)


@dataclass
class PollResult:
    polled: bool = False  # False: not due, claimed by another run, or not a polling channel
    pages: int = 0
    orders: int = 0  # order documents seen
    stored: int = 0  # new versions stored as inbound events
    complete: bool = False  # the window was read to its end and the cursor moved
    error: str = ""


def polling_kinds() -> list[str]:
    """Channel kinds whose adapter polls orders (eBay and Amazon today)."""
    return sorted(kind for kind, adapter in ADAPTERS.items() if hasattr(adapter, "poll_orders_page"))


def _setting(channel: Channel, name: str, default: float, low: float, high: float) -> float:
    """A number from the channel's settings JSON, clamped; the default when absent or not a number."""
    settings = channel.settings if isinstance(channel.settings, dict) else {}
    value = settings.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
        return default
    return float(min(max(value, low), high))


def poll_interval(channel: Channel) -> float:
    return _setting(channel, "poll_seconds", DEFAULT_POLL_SECONDS, BEAT_SECONDS, 86400.0)


def _busy_interval(channel: Channel) -> float:
    interval = poll_interval(channel)
    return _setting(channel, "poll_busy_seconds", min(DEFAULT_BUSY_SECONDS, interval), BEAT_SECONDS, interval)


def _overlap(channel: Channel) -> timedelta:
    return timedelta(seconds=_setting(channel, "poll_overlap_seconds", DEFAULT_OVERLAP_SECONDS, 30.0, 86400.0))


def _page_size(channel: Channel, adapter: Any) -> int:
    maximum = int(adapter.order_page_max)
    return int(_setting(channel, "poll_page_size", maximum, 1, maximum))


def _polls(channel: Channel) -> bool:
    settings = channel.settings if isinstance(channel.settings, dict) else {}
    return channel.active and channel.kind in polling_kinds() and settings.get("poll_orders", True) is not False


# ------------------------------------------------------------------------------ scheduling


def poll_flag(*, channel_id: int) -> str:
    return f"ingestion:poll-queued:{channel_id}"


def poll_kick_now(*, channel_id: int) -> None:
    """Queue a poll of the channel unless one is queued already (the task clears the flag)."""
    try:
        if cache.add(poll_flag(channel_id=channel_id), 1, timeout=POLL_FLAG_TTL):
            from ingestion.tasks import channel_poll_task

            channel_poll_task.apply_async(args=[channel_id])
    except Exception:  # Redis or broker down: the beat dispatch finds the channel due again
        logger.exception("could not queue an order poll for channel %s; the beat will", channel_id)


def channels_poll_dispatch(*, now: datetime | None = None) -> list[int]:
    """Beat: make sure every polling channel has its cursor row (a new one is due at once) and
    queue a poll for each channel that is due and not claimed. Returns the channels queued."""
    now = now or timezone.now()
    candidates = [c for c in Channel.objects.filter(active=True, kind__in=polling_kinds()) if _polls(c)]
    ids = [c.pk for c in candidates]
    have = set(ChannelPollCursor.objects.filter(channel_id__in=ids).values_list("channel_id", flat=True))
    missing = [c for c in candidates if c.pk not in have]
    if missing:
        ChannelPollCursor.objects.bulk_create([ChannelPollCursor(channel=c, next_due_at=now) for c in missing],
                                              ignore_conflicts=True)
    due = list(ChannelPollCursor.objects.filter(_claimable(now), channel_id__in=ids, next_due_at__lte=now)
               .order_by("next_due_at").values_list("channel_id", flat=True))
    for channel_id in due:
        poll_kick_now(channel_id=channel_id)
    return due


def _claimable(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


# ------------------------------------------------------------------------------ the run


def channel_orders_poll(*, channel_id: int, force: bool = False, budget: float | None = None) -> PollResult:
    """Poll one channel's orders once (the `ingestion.poll_channel` task): claim the cursor row,
    read the open window page by page within the time budget, store each new order version as an
    inbound event (the drain applies it), then move the cursor, or record the failure and back
    off. `force` ignores `next_due_at` (not an existing claim). See the module docstring."""
    result = PollResult()
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None or not _polls(channel):
        return result
    now = timezone.now()
    ChannelPollCursor.objects.get_or_create(channel_id=channel.pk, defaults={"next_due_at": now})
    budget = fetch_budget() if budget is None else budget
    timeout = fetch_timeout()
    lease = timedelta(seconds=budget + 4 * timeout + 60)
    token = uuid.uuid4().hex
    claim = ChannelPollCursor.objects.filter(_claimable(now), channel_id=channel.pk)
    if not force:
        claim = claim.filter(next_due_at__lte=now)
    if not claim.update(claim_token=token, claimed_until=now + lease, last_run_at=now):
        return result  # not due yet, or another run holds it
    result.polled = True
    cursor = ChannelPollCursor.objects.get(channel_id=channel.pk)
    fenced = ChannelPollCursor.objects.filter(channel_id=channel.pk, claim_token=token)
    release: dict[str, object] = {"claim_token": "", "claimed_until": None}
    try:
        busy = _poll_run(channel, cursor, fenced, budget=budget, timeout=timeout, result=result)
    except Exception as exc:
        result.error = _failure(channel, cursor, fenced, exc, release)
        return result
    finished = timezone.now()
    if result.complete:
        next_due = finished + timedelta(seconds=_busy_interval(channel) if busy else poll_interval(channel))
    else:
        next_due = finished  # stopped at the budget (or lost the lease) with pages left: go on at once
    fenced.update(next_due_at=next_due, last_success_at=finished, last_error="", consecutive_failures=0,
                  busy=busy or not result.complete, last_pages=result.pages, last_orders=result.orders,
                  last_stored=result.stored, **release)
    if not result.complete:
        poll_kick_now(channel_id=channel.pk)
    return result


def _poll_run(channel: Channel, cursor: ChannelPollCursor, fenced: Any, *, budget: float, timeout: float,
              result: PollResult) -> bool:
    """Read the window page by page; True when a page was full (the channel is busy)."""
    from channels.adapters.http import CONNECT_TIMEOUT, TimeoutSession

    adapter: Any = adapter_for(channel)  # a polling adapter: poll_orders_page, order_version, order_document
    started = timezone.now()
    deadline = time.monotonic() + budget
    page_size = _page_size(channel, adapter)
    window_from = cursor.window_from or ((cursor.cursor_at or started) - _overlap(channel))
    if cursor.cursor_at is None and cursor.window_from is None:
        # The first window ever starts at the first attempt, and stays there while attempts
        # fail: orders placed while the marketplace is down are read once it answers.
        fenced.update(window_from=window_from)
    until = cursor.window_until
    page_token = cursor.page_token
    busy = False
    with TimeoutSession(timeout=(min(CONNECT_TIMEOUT, timeout), timeout)) as session:
        while True:
            if result.pages and time.monotonic() >= deadline:
                return True  # pages left: the next run goes on from the saved page
            asked_at = timezone.now()
            try:
                orders, next_token, page_until = adapter.poll_orders_page(
                    channel, session, since=window_from, page_token=page_token, page_size=page_size)
            except Exception as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if page_token and status == 400:
                    # A saved NextToken the marketplace no longer takes (Amazon's expire): read
                    # the window again from its first page (duplicates dedupe), not forever stuck.
                    fenced.update(page_token="")
                raise
            if until is None:  # the first page of a new window fixes its upper bound
                until = min(asked_at, page_until) if page_until is not None else asked_at
            result.pages += 1
            result.orders += len(orders)
            busy = busy or len(orders) >= page_size or bool(next_token)  # more than a page of orders
            stored, whole = _store_page(channel, adapter, session, orders, window_from=window_from,
                                        deadline=deadline, first=result.pages == 1, result=result)
            result.stored += stored
            if not whole:
                # Budget spent inside the page (Amazon items): the page is read again next run,
                # its stored versions dedupe without another items call.
                fenced.update(window_from=window_from, window_until=until, page_token=page_token)
                return True
            if not next_token:
                moved = max(until, cursor.cursor_at) if cursor.cursor_at else until
                result.complete = bool(fenced.update(cursor_at=moved, window_from=None, window_until=None,
                                                     page_token=""))
                return busy
            page_token = next_token
            if not fenced.update(window_from=window_from, window_until=until, page_token=page_token):
                return busy  # our lease was taken over: stop without touching the row again


def _store_page(channel: Channel, adapter: Any, session: Any, orders: list[dict], *, window_from: datetime,
                deadline: float, first: bool, result: PollResult) -> tuple[int, bool]:
    """Store the page's order versions not stored yet (one query to know which, one INSERT ...
    ON CONFLICT DO NOTHING to store them). Returns (stored, whole page handled). Rows built
    before a failure are stored before it propagates, so the next attempt does not ask again."""
    keyed = []
    for order in orders:
        delivery_id = text_clean(str(adapter.order_version(order)).strip())[:255]
        keyed.append((f"wh:{channel.pk}:{delivery_id}", delivery_id, order))
    existing = set(InboundEvent.objects.filter(dedup_key__in=[k for k, _d, _o in keyed])
                   .values_list("dedup_key", flat=True))
    rows: list[dict[str, object]] = []
    whole = True
    calls = bool(getattr(adapter, "order_document_calls", False))  # a request per order (Amazon items)
    headers = {"X-Stockline-Polled-At": timezone.now().isoformat(),
               "X-Stockline-Poll-Window-From": window_from.isoformat()}
    try:
        for key, delivery_id, order in keyed:
            if key in existing:
                continue
            if calls and not (first and not rows) and time.monotonic() >= deadline:
                whole = False
                break
            existing.add(key)
            document = adapter.order_document(channel, session, order)  # Amazon: getOrderItems
            rows.append(_event_row(channel, adapter, key=key, delivery_id=delivery_id, document=document,
                                   headers=headers))
    finally:
        inserted = _insert_new(rows) if rows else []
        if inserted:
            drain_kick()
    return len(inserted), whole


def _event_row(channel: Channel, adapter: Any, *, key: str, delivery_id: str, document: Any,
               headers: dict[str, str]) -> dict[str, object]:
    """An inbound event row for one polled order, as intake builds one for a webhook: the raw
    document bytes, the parsed payload (NUL replaced), or `failed`/`invalid_json` with the reason
    when PostgreSQL could not hold it (NaN, lone surrogates, ...)."""
    try:
        raw = json.dumps(document, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):  # lone surrogates: keep them visible as escapes
        raw = json.dumps(document).encode("utf-8")
    payload: Any
    try:
        payload, error = json_parse(raw, allow_nul=True), ""
    except ValueError as exc:
        payload, error = None, f"The polled order is not storable JSON: {exc}"
    if payload is not None and json_contains_nul(payload):
        payload = json_replace_nul(payload)
    row = _row(channel_id=channel.pk, source=InboundEvent.Source.WEBHOOK, dedup_key=key, delivery_id=delivery_id,
               topic=str(adapter.order_topic), headers=headers, body=raw, payload=payload)
    if error:
        row.update(status=InboundEvent.Status.FAILED, error_code="invalid_json", last_error=error[:2000],
                   processed_at=row["received_at"])
    return row


def _failure(channel: Channel, cursor: ChannelPollCursor, fenced: Any, exc: Exception,
             release: dict[str, object]) -> str:
    """Record a failed run on the row: the cursor and the saved page stay where they are."""
    from channels.adapters.http import retry_after_seconds

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    detail = text_clean(f"{type(exc).__name__}: {exc}")[:2000]
    interval = poll_interval(channel)
    failures = cursor.consecutive_failures
    if status == 429:  # pacing, not failing: wait as asked (or the backoff), no failure counted
        asked = retry_after_seconds(response) if response is not None else None
        wait = asked if asked is not None else backoff_delay(attempt=max(failures, 1), base=interval,
                                                             cap=MAX_BACKOFF_SECONDS, floor=interval / 2)
        detail = f"rate limited (429): {detail}"
    else:
        failures += 1
        wait = backoff_delay(attempt=failures, base=interval, cap=MAX_BACKOFF_SECONDS,
                             floor=min(interval, MAX_BACKOFF_SECONDS) / 2)
    logger.warning("order poll of channel %s failed (%s consecutive): %s", channel.slug, failures, detail)
    fenced.update(next_due_at=timezone.now() + timedelta(seconds=wait), last_error=detail,
                  consecutive_failures=failures, **release)
    return detail
