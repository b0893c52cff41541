"""Alerts (contract §4 "Alerts"; docs/analytics.md "Alerts"): evaluation, delivery, subscriptions.

Evaluation. A stock change marks its SKUs in `AlertDirty` inside the stock transaction (one
ordered upsert, the only cost on the hot path: `alerts_on_stock_change`, a reaction in
settings.STOCK_CHANGE_REACTIONS). Beat runs `alerts_evaluate` every 30 s: under one advisory lock
(single-flight: a duplicate beat waits, then finds nothing to do) it takes the marks (skipping
those a stock transaction still holds: the upsert locks the mark, so the evaluator can never
read positions older than a mark it deletes), adds every SKU with an unresolved oversell
incident or an open oversell alert (incidents are resolved without a stock change), computes the
alerts that should be open and opens/resolves the difference, writing one outbox row per
delivery in the same transaction. Kinds and keys:
- `low_stock`: the SKU's total available <= its reorder point (own, or computed as in
  analytics); location null.
- `stockout`: the SKU's total available is 0; location null. (A stockout is also low stock:
  both are open, they are separate rules.)
- `oversell`: one per (SKU, location) with unresolved oversell incidents.
Inactive SKUs have no low_stock/stockout alerts. The unique partial index
`alert_one_open_per_key` is the last guard for "one open alert per key".

Bundles (docs/analytics.md "Bundles"): a bundle has low_stock and stockout alerts of its own on
its derived availability (whole bundles its components make, summed over locations, as GET
/stock/{bundle}/ answers) against its own reorder point (or the computed one, from its bundle
units sold); its components keep theirs, on their own stock and velocity (which includes what
they sold inside bundles). A bundle holds no positions, so nothing marks it: every batch adds the
bundles made of the SKUs it evaluates, which covers every change to a bundle's availability
(only its components' positions move it) and a change of its own `active` or safety stock (the
catalog announces it on its components' positions). Oversell incidents are recorded on the
components a marketplace order sold, so oversell alerts are the components'.

Delivery. `AlertDelivery` rows (webhook per matching subscription, and one email when
ALERT_EMAIL_RECIPIENTS is set) are drained by `alert_deliveries_drain`: due rows are claimed
with a lease (SKIP LOCKED), sent outside any transaction, and recorded: delivered, or retried
after core.backoff's delay, dead after ALERT_DELIVERY_MAX_ATTEMPTS (ops retry them in the admin).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone
from psycopg import sql

from analytics.models import Alert, AlertDelivery, AlertDirty, AlertSubscription
from analytics.selectors import _ceil_div, available_totals, units_sold
from channels.adapters.signing import standard_webhooks_sign
from core.backoff import backoff_delay
from core.errors import NotFound
from core.oncommit import enqueue_on_commit
from core.sql import sql_compose
from ingestion.models import OversellIncident
from inventory.hooks import ReactionStatement, StockChange, statement_form
from inventory.models import BundleComponent, Sku

logger = logging.getLogger(__name__)

ALERTS_LOCK = 0x616C7274  # pg_advisory_xact_lock key ("alrt"): one evaluator at a time
EVALUATE_BATCH = 1000
# Batches go on until the marks are gone or this is spent (below the task's 60 s soft limit and
# near the 30 s beat, so a backlog is worked through without runs piling up).
EVALUATE_BUDGET_SECONDS = 25.0
DELIVERY_LEASE = timedelta(seconds=120)  # a claimed row is retried if its worker dies
DELIVERY_TIMEOUT = 10  # seconds per HTTP POST
KINDS = [k for k, _ in Alert.KINDS]


# ------------------------------------------------------------------------------------ the hook


def _mark_sql(skus: sql.Composable) -> str:
    return sql_compose(
        "INSERT INTO {dirty} (sku_id, marked_at) SELECT s, now() FROM unnest({skus}) AS s "
        "ORDER BY s ON CONFLICT (sku_id) DO UPDATE SET marked_at = EXCLUDED.marked_at RETURNING sku_id",
        dirty=AlertDirty._meta.db_table, skus=skus)


@cache
def _mark_params_sql() -> str:
    return _mark_sql(sql.SQL("%s::bigint[]"))


def _alerts_statement() -> ReactionStatement:
    """The statement form (inventory.hooks): the same marks over the changed rows (DISTINCT:
    an upsert may not touch one row twice; array_agg's DISTINCT also sorts)."""
    return ReactionStatement(sql=_mark_sql(sql.SQL("(SELECT array_agg(DISTINCT sku_id) FROM changed)::bigint[]")))


@statement_form(_alerts_statement)
def alerts_on_stock_change(change: StockChange) -> None:
    """Stock-change reaction: mark the changed SKUs for evaluation (one statement, SKU order, so
    concurrent stock transactions lock marks in one order). DO UPDATE (not DO NOTHING) locks the
    mark until this transaction ends, so the evaluator skips it until the change is visible."""
    sku_ids = sorted({p.sku_id for p in change.positions})
    with connection.cursor() as cursor:
        cursor.execute(_mark_params_sql(), [sku_ids])


# ------------------------------------------------------------------------------------ selectors


def alert_object(alert: Alert) -> dict[str, Any]:
    """The contract's alert object (sku and location as codes)."""
    from analytics.serializers import AlertSerializer

    return dict(AlertSerializer(alert).data)


def alerts_list(*, status: str | None = None, kind: str | None = None,
                sku: str | None = None) -> QuerySet[Alert]:
    qs = Alert.objects.select_related("sku", "location").order_by("-opened_at", "-id")
    if status:
        qs = qs.filter(status=status)
    if kind:
        qs = qs.filter(kind=kind)
    if sku:
        qs = qs.filter(sku__code=sku)
    return qs


# ----------------------------------------------------------------------------------- evaluation


def _desired(skus: Sequence[Sku], *, now: datetime) -> dict[tuple[str, int, int | None], dict[str, Any]]:
    """The alerts that should be open for these SKUs, by key, with their detail."""
    ids = [s.pk for s in skus]
    available = available_totals(skus)  # a bundle's derived from its components
    computed = [s for s in skus if s.reorder_point is None]
    units = units_sold(windows=(7,), now=now, sku_ids=[s.pk for s in computed],
                       bundles=any(s.is_bundle for s in computed)) if computed else {}
    wanted: dict[tuple[str, int, int | None], dict[str, Any]] = {}
    for s in skus:
        if not s.active:
            continue
        avail = available.get(s.pk, 0)
        rp = s.reorder_point
        if rp is None:
            rp = _ceil_div(units.get(s.pk, {}).get(7, 0) * s.lead_time_days, 7) + s.safety_stock
        if avail == 0:
            wanted[(Alert.STOCKOUT, s.pk, None)] = {"available": avail}
        if avail <= rp:
            wanted[(Alert.LOW_STOCK, s.pk, None)] = {"available": avail, "reorder_point": rp}
    incidents = (OversellIncident.objects.filter(sku_id__in=ids, resolved_at__isnull=True)
                 .values("sku_id", "location_id").annotate(n=Count("id"), shortfall=Sum("shortfall")))
    for row in incidents:
        wanted[(Alert.OVERSELL, row["sku_id"], row["location_id"])] = {
            "incidents": row["n"], "shortfall": int(row["shortfall"] or 0)}
    return wanted


def alerts_evaluate(*, now: datetime | None = None, batch: int = EVALUATE_BATCH,
                    budget_seconds: float = EVALUATE_BUDGET_SECONDS) -> dict[str, int]:
    """Open and resolve alerts of the marked SKUs (and of SKUs with oversell incidents or open
    oversell alerts), a batch of `batch` SKUs per transaction, until no mark is left or the time
    budget is spent (the next beat goes on). Idempotent: with nothing marked nothing changes."""
    started = time.monotonic()
    total = {"skus": 0, "opened": 0, "resolved": 0}
    first = True
    while True:
        result, taken = _evaluate_batch(now=now or timezone.now(), batch=batch, oversells=first)
        first = False
        for key in total:
            total[key] += result[key]
        if taken < batch or time.monotonic() - started > budget_seconds:
            return total


def _evaluate_batch(*, now: datetime, batch: int, oversells: bool) -> tuple[dict[str, int], int]:
    """One transaction: take up to `batch` marks, evaluate those SKUs; (counts, marks taken)."""
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ALERTS_LOCK])
        cursor.execute(sql_compose(
            "DELETE FROM {dirty} WHERE sku_id IN (SELECT sku_id FROM {dirty} ORDER BY sku_id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) RETURNING sku_id", dirty=AlertDirty._meta.db_table), [batch])
        sku_ids = {row[0] for row in cursor.fetchall()}
        taken = len(sku_ids)
        if oversells:
            sku_ids |= set(OversellIncident.objects.filter(resolved_at__isnull=True)
                           .values_list("sku_id", flat=True).distinct())
            sku_ids |= set(Alert.objects.filter(status=Alert.OPEN, kind=Alert.OVERSELL)
                           .values_list("sku_id", flat=True))
        if not sku_ids:
            return {"skus": 0, "opened": 0, "resolved": 0}, taken
        # Bundles made of these SKUs: their availability is derived from them (index lookup).
        sku_ids |= set(BundleComponent.objects.filter(component_id__in=sku_ids).values_list("bundle_id", flat=True))
        skus = list(Sku.objects.filter(pk__in=sku_ids).order_by("pk"))
        wanted = _desired(skus, now=now)
        open_alerts = {(a.kind, a.sku_id, a.location_id): a
                       for a in Alert.objects.filter(sku_id__in=sku_ids, status=Alert.OPEN)}
        opened = Alert.objects.bulk_create([
            Alert(kind=key[0], sku_id=key[1], location_id=key[2], opened_at=now, detail=detail)
            for key, detail in sorted(wanted.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2] or 0))
            if key not in open_alerts])
        resolved = [a for key, a in open_alerts.items() if key not in wanted]
        for alert in resolved:
            alert.status, alert.resolved_at = Alert.RESOLVED, now
        Alert.objects.bulk_update(resolved, ["status", "resolved_at"])
        written = _deliveries_write([("alert.opened", a) for a in opened] + [("alert.resolved", a) for a in resolved],
                                    now=now)
        if written:
            from analytics.tasks import alert_deliveries_drain_task

            enqueue_on_commit(alert_deliveries_drain_task)
        return {"skus": len(skus), "opened": len(opened), "resolved": len(resolved)}, taken


def _deliveries_write(events: Sequence[tuple[str, Alert]], *, now: datetime) -> int:
    """One outbox row per (event, matching subscription), plus one email per event when
    recipients are configured; the body is frozen now (the alert as it was at the event)."""
    if not events:
        return 0
    subscriptions = list(AlertSubscription.objects.all())
    email = bool(getattr(settings, "ALERT_EMAIL_RECIPIENTS", []))
    alerts = {a.pk: a for a in Alert.objects.select_related("sku", "location").filter(pk__in=[a.pk for _, a in events])}
    rows = []
    for event, alert in events:
        body = json.dumps({"type": event, "alert": alert_object(alerts[alert.pk])}, separators=(",", ":"))
        for sub in subscriptions:
            if not sub.kinds or alert.kind in sub.kinds:
                rows.append(AlertDelivery(subscription=sub, alert=alert, target=AlertDelivery.WEBHOOK,
                                          msg_id=f"msg_{secrets.token_hex(12)}", body=body, next_attempt_at=now))
        if email:
            rows.append(AlertDelivery(alert=alert, target=AlertDelivery.EMAIL, msg_id=f"mail_{secrets.token_hex(12)}",
                                      body=body, next_attempt_at=now))
    AlertDelivery.objects.bulk_create(rows)
    return len(rows)


# ------------------------------------------------------------------------------------- delivery


def _claim(*, limit: int, now: datetime) -> list[AlertDelivery]:
    """Due pending rows, leased to this caller (SKIP LOCKED: concurrent drains take others)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql_compose(
            "UPDATE {d} SET next_attempt_at = %s WHERE id IN (SELECT id FROM {d} WHERE status = 'pending' "
            "AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
            d=AlertDelivery._meta.db_table), [now + DELIVERY_LEASE, now, limit])
        ids = [row[0] for row in cursor.fetchall()]
    return list(AlertDelivery.objects.filter(pk__in=ids).select_related("subscription").order_by("pk"))


def _send(delivery: AlertDelivery) -> None:
    """Raise on failure. The secret never reaches a log line or an error text."""
    body = delivery.body.encode()
    if delivery.target == AlertDelivery.EMAIL:
        payload = json.loads(delivery.body)
        alert = payload["alert"]
        where = f" at {alert['location']}" if alert["location"] else ""
        subject = f"[Stockline] {payload['type']}: {alert['kind']} {alert['sku']}{where}"
        send_mail(subject, json.dumps(payload, indent=2), None, list(settings.ALERT_EMAIL_RECIPIENTS))
        return
    sub = delivery.subscription
    assert sub is not None
    timestamp = int(time.time())
    headers = {"content-type": "application/json", "webhook-id": delivery.msg_id,
               "webhook-timestamp": str(timestamp),
               "webhook-signature": standard_webhooks_sign(sub.secret, delivery.msg_id, timestamp, body)}
    response = requests.post(sub.url, data=body, headers=headers, timeout=DELIVERY_TIMEOUT, allow_redirects=False)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"HTTP {response.status_code}")


def alert_deliveries_drain(*, limit: int = 100, now: datetime | None = None) -> dict[str, int]:
    """Send due deliveries; record each outcome (delivered, retry later with backoff, dead)."""
    counts = {"delivered": 0, "retried": 0, "dead": 0}
    for delivery in _claim(limit=limit, now=now or timezone.now()):
        attempts = delivery.attempts + 1
        try:
            _send(delivery)
        except Exception as exc:  # any failure is the row's to retry; the body is not logged
            error = f"{type(exc).__name__}: {exc}"[:500] if not isinstance(exc, requests.RequestException) \
                else type(exc).__name__
            max_attempts = settings.ALERT_DELIVERY_MAX_ATTEMPTS
            if attempts >= max_attempts:
                status, counts["dead"] = AlertDelivery.DEAD, counts["dead"] + 1
            else:
                status, counts["retried"] = AlertDelivery.PENDING, counts["retried"] + 1
            delay = backoff_delay(attempt=attempts, base=settings.ALERT_DELIVERY_BACKOFF_BASE,
                                  cap=settings.ALERT_DELIVERY_BACKOFF_CAP, floor=1.0)
            AlertDelivery.objects.filter(pk=delivery.pk).update(
                status=status, attempts=attempts, last_error=error,
                next_attempt_at=timezone.now() + timedelta(seconds=delay))
            logger.warning("alert delivery %s failed (attempt %s): %s", delivery.msg_id, attempts, error)
        else:
            AlertDelivery.objects.filter(pk=delivery.pk).update(
                status=AlertDelivery.DELIVERED, attempts=attempts, last_error="", delivered_at=timezone.now())
            counts["delivered"] += 1
    return counts


def alert_deliveries_retry(*, ids: Iterable[int]) -> int:
    """Ops: put dead (or failing) deliveries back in the queue, attempts from zero, due now."""
    with transaction.atomic():
        count = AlertDelivery.objects.filter(pk__in=list(ids)).exclude(status=AlertDelivery.DELIVERED).update(
            status=AlertDelivery.PENDING, attempts=0, next_attempt_at=timezone.now())
        if count:
            from analytics.tasks import alert_deliveries_drain_task

            enqueue_on_commit(alert_deliveries_drain_task)
    return count


# -------------------------------------------------------------------------------- subscriptions


def alert_subscription_create(*, url: str, secret: str, kinds: Sequence[str]) -> AlertSubscription:
    return AlertSubscription.objects.create(url=url, secret=secret, kinds=sorted(set(kinds)))


def alert_subscription_delete(*, subscription_id: int) -> None:
    deleted, _ = AlertSubscription.objects.filter(pk=subscription_id).delete()
    if not deleted:
        raise NotFound("Unknown alert subscription.", code="alert_subscription_not_found")
