"""Alerts (contract §4 "Alerts"): opened and resolved by the evaluator from real stock changes,
one open per key, read and subscribed through the API, delivered as Standard Webhooks over real
HTTP (the test verifies the signature), retried, dead-lettered and retried again, and emailed."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.alerts import alert_deliveries_drain, alert_deliveries_retry, alerts_evaluate
from analytics.models import Alert, AlertDelivery, AlertDirty, AlertSubscription
from channels.adapters.signing import standard_webhooks_verify
from ingestion.drain import oversell_incidents_resolve
from ingestion.models import OversellIncident
from tests.analytics.conftest import assert_error, post, receive, sell

SECRET = "whsec_c2VjcmV0LWZvci1hbGVydHMtdGVzdA=="  # base64 of "secret-for-alerts-test"


def open_alerts(sku):
    return sorted((a.kind, a.location_id) for a in Alert.objects.filter(sku=sku, status="open"))


@pytest.fixture
def receiver():
    """A real HTTP server on loopback recording every POST; `status` decides the answer."""
    state = {"requests": [], "status": 204}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"].append((dict(self.headers), body))
            self.send_response(state["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def test_low_stock_and_stockout_open_once_and_resolve(sku, location):
    # given: a SKU with its own reorder point of 5
    sku.reorder_point = 5
    sku.save(update_fields=["reorder_point"])
    receive(sku, location, 10)
    assert AlertDirty.objects.filter(sku=sku).exists()  # the stock change marked it
    assert alerts_evaluate()["opened"] == 0
    assert not AlertDirty.objects.filter(sku=sku).exists()
    # when: available falls to 4, then 0
    sell(sku, location, 6)
    assert alerts_evaluate()["opened"] == 1
    assert open_alerts(sku) == [("low_stock", None)]
    alert = Alert.objects.get(sku=sku, kind="low_stock")
    assert alert.detail == {"available": 4, "reorder_point": 5}
    assert alerts_evaluate() == {"skus": 0, "opened": 0, "resolved": 0}  # nothing marked: nothing done
    sell(sku, location, 1)  # still low: the same alert stays, no second one
    assert alerts_evaluate()["opened"] == 0
    sell(sku, location, 3)
    alerts_evaluate()
    assert open_alerts(sku) == [("low_stock", None), ("stockout", None)]
    # then: a receipt clears both
    receive(sku, location, 20)
    assert alerts_evaluate()["resolved"] == 2
    assert open_alerts(sku) == []
    assert Alert.objects.filter(sku=sku, status="resolved", resolved_at__isnull=False).count() == 2
    # and a new drop opens a new alert (the old one stays resolved)
    sell(sku, location, 18)
    alerts_evaluate()
    assert Alert.objects.filter(sku=sku, kind="low_stock").count() == 2


def test_computed_reorder_point_uses_sales_and_safety_stock(sku, location):
    # 14 units sold in 7 days, lead time 7: computed reorder point 14 + safety stock 2 = 16
    sku.safety_stock, sku.lead_time_days = 2, 7
    sku.save(update_fields=["safety_stock", "lead_time_days"])
    receive(sku, location, 31, at=timezone.now() - timedelta(days=3))
    sell(sku, location, 14, at=timezone.now() - timedelta(days=2))
    alerts_evaluate()
    assert open_alerts(sku) == []  # 17 > 16
    sell(sku, location, 1)  # 16 <= 16 + (the 15th unit raises the point to 17)
    alerts_evaluate()
    alert = Alert.objects.get(sku=sku, status="open")
    assert alert.kind == "low_stock" and alert.detail == {"available": 16, "reorder_point": 17}


def test_database_refuses_a_second_open_alert_per_key(sku, location):
    now = timezone.now()
    Alert.objects.create(kind="stockout", sku=sku, opened_at=now)
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(kind="stockout", sku=sku, opened_at=now)  # null location is one key
    Alert.objects.create(kind="stockout", sku=sku, location=location, opened_at=now)  # another key
    Alert.objects.create(kind="stockout", sku=sku, opened_at=now, status="resolved")  # not open


def test_oversell_alert_per_location_opens_and_resolves_with_the_incident(sku, location):
    receive(sku, location, 50)
    alerts_evaluate()
    incident = OversellIncident.objects.create(sku=sku, location=location, event_key="t-1", requested=3,
                                               available_before=1, applied=1, shortfall=2)
    # no stock change needed: the evaluator looks at unresolved incidents every run
    alerts_evaluate()
    assert open_alerts(sku) == [("oversell", location.pk)]
    assert Alert.objects.get(kind="oversell").detail == {"incidents": 1, "shortfall": 2}
    alerts_evaluate()
    assert Alert.objects.filter(kind="oversell").count() == 1
    oversell_incidents_resolve(ids=[incident.pk], note="back-ordered")
    assert alerts_evaluate()["resolved"] == 1
    assert open_alerts(sku) == []


def test_alert_list_filters_paginates_and_needs_a_key(sku, location, client_with):
    sku.reorder_point = 5
    sku.save(update_fields=["reorder_point"])
    receive(sku, location, 1)
    alerts_evaluate()
    reader = client_with("stock:read")
    body = reader.get("/api/v1/alerts/").json()
    assert body["count"] == 1
    [item] = body["results"]
    assert set(item) == {"id", "kind", "sku", "location", "status", "opened_at", "resolved_at", "detail"}
    assert item["kind"] == "low_stock" and item["sku"] == "SKU-1" and item["location"] is None
    assert item["status"] == "open" and item["resolved_at"] is None
    assert reader.get("/api/v1/alerts/?status=resolved").json()["count"] == 0
    assert reader.get("/api/v1/alerts/?kind=stockout&status=").json()["count"] == 0
    assert reader.get("/api/v1/alerts/?sku=OTHER").json()["count"] == 0
    assert reader.get("/api/v1/alerts/?sku=SKU-1&kind=low_stock&status=open").json()["count"] == 1
    assert_error(reader.get("/api/v1/alerts/?status=closed"), 400, "invalid_status")
    assert_error(reader.get("/api/v1/alerts/?kind=nope"), 400, "invalid_kind")
    assert APIClient().get("/api/v1/alerts/").status_code == 401
    assert client_with("ops").get("/api/v1/alerts/").status_code == 403


def test_subscriptions_need_ops_and_never_answer_the_secret(client_with, db):
    body = {"url": "http://127.0.0.1:9/hook", "secret": SECRET, "kinds": ["stockout", "low_stock"]}
    assert APIClient().post("/api/v1/alert-subscriptions/", body, format="json").status_code == 401
    assert post(client_with("stock:read"), "/api/v1/alert-subscriptions/", body).status_code == 403
    ops = client_with("ops")
    response = post(ops, "/api/v1/alert-subscriptions/", body)
    assert response.status_code == 201, response.content
    created = response.json()
    assert "secret" not in created and SECRET not in response.content.decode()
    assert created["url"] == body["url"] and created["kinds"] == ["low_stock", "stockout"]
    assert AlertSubscription.objects.get(pk=created["id"]).secret == SECRET
    assert_error(post(ops, "/api/v1/alert-subscriptions/", {**body, "kinds": ["nope"]}), 400, "validation_error")
    assert_error(post(ops, "/api/v1/alert-subscriptions/", {**body, "url": "not a url"}), 400, "validation_error")
    assert client_with("stock:read").delete(f"/api/v1/alert-subscriptions/{created['id']}/").status_code == 403
    assert ops.delete(f"/api/v1/alert-subscriptions/{created['id']}/").status_code == 204
    assert_error(ops.delete(f"/api/v1/alert-subscriptions/{created['id']}/"), 404, "alert_subscription_not_found")
    assert_error(ops.delete("/api/v1/alert-subscriptions/x/"), 404, "alert_subscription_not_found")


def test_openings_and_resolvings_are_delivered_as_signed_standard_webhooks(sku, location, receiver, client_with):
    # given: one subscription to stockouts over real HTTP, one to oversells only
    response = post(client_with("ops"), "/api/v1/alert-subscriptions/",
                    {"url": receiver["url"], "secret": SECRET, "kinds": ["stockout"]})
    assert response.status_code == 201
    AlertSubscription.objects.create(url=receiver["url"] + "/other", secret="x", kinds=["oversell"])
    receive(sku, location, 2)
    alerts_evaluate()
    # when: a stockout opens and is drained
    sell(sku, location, 2)
    alerts_evaluate()
    assert alert_deliveries_drain() == {"delivered": 1, "retried": 0, "dead": 0}
    # then: one POST whose signature verifies with the secret
    [(headers, body)] = receiver["requests"]
    headers = {k.lower(): v for k, v in headers.items()}
    assert standard_webhooks_verify(SECRET, headers["webhook-id"], headers["webhook-timestamp"],
                                    headers["webhook-signature"], body)
    assert not standard_webhooks_verify("whsec_d3Jvbmc=", headers["webhook-id"], headers["webhook-timestamp"],
                                        headers["webhook-signature"], body)
    payload = json.loads(body)
    assert payload["type"] == "alert.opened"
    assert payload["alert"]["kind"] == "stockout" and payload["alert"]["sku"] == "SKU-1"
    assert payload["alert"]["status"] == "open"
    # and the resolving follows
    receive(sku, location, 5)
    alerts_evaluate()
    alert_deliveries_drain()
    payload = json.loads(receiver["requests"][-1][1])
    assert payload["type"] == "alert.resolved" and payload["alert"]["status"] == "resolved"
    assert payload["alert"]["resolved_at"] is not None
    assert alert_deliveries_drain() == {"delivered": 0, "retried": 0, "dead": 0}  # nothing twice


def test_failed_deliveries_back_off_die_and_are_retried_by_ops(sku, location, receiver, settings):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    AlertSubscription.objects.create(url=receiver["url"], secret=SECRET, kinds=[])
    receiver["status"] = 500
    receive(sku, location, 1)
    sell(sku, location, 1)
    alerts_evaluate()  # stockout + low_stock (computed reorder point 0)
    assert alert_deliveries_drain() == {"delivered": 0, "retried": 2, "dead": 0}
    delivery = AlertDelivery.objects.order_by("pk").first()
    assert delivery.attempts == 1 and delivery.status == "pending" and delivery.last_error == "RuntimeError: HTTP 500"
    assert delivery.next_attempt_at > timezone.now()  # backoff: not due yet
    assert alert_deliveries_drain() == {"delivered": 0, "retried": 0, "dead": 0}
    later = timezone.now() + timedelta(hours=2)
    assert alert_deliveries_drain(now=later) == {"delivered": 0, "retried": 0, "dead": 2}
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"dead"}
    # ops retry the dead letters (the admin action calls this), the receiver is back
    receiver["status"] = 200
    assert alert_deliveries_retry(ids=AlertDelivery.objects.values_list("pk", flat=True)) == 2
    assert alert_deliveries_drain() == {"delivered": 2, "retried": 0, "dead": 0}
    ids = [h["webhook-id"] for h, _ in receiver["requests"]]
    assert len(ids) == 6 and len(set(ids)) == 2  # the same webhook-id on every attempt


def test_alerts_are_emailed_to_the_configured_recipients(sku, location, settings):
    settings.ALERT_EMAIL_RECIPIENTS = ["ops@example.com"]
    sku.reorder_point = 0
    sku.save(update_fields=["reorder_point"])
    receive(sku, location, 1)
    sell(sku, location, 1)
    alerts_evaluate()
    alert_deliveries_drain()
    subjects = sorted(m.subject for m in mail.outbox)
    assert subjects == ["[Stockline] alert.opened: low_stock SKU-1", "[Stockline] alert.opened: stockout SKU-1"]
    assert mail.outbox[0].to == ["ops@example.com"]


def test_no_recipients_no_mail(sku, location, settings):
    settings.ALERT_EMAIL_RECIPIENTS = []
    receive(sku, location, 1)
    sell(sku, location, 1)
    alerts_evaluate()
    alert_deliveries_drain()
    assert mail.outbox == [] and not AlertDelivery.objects.exists()


def test_a_backlog_is_evaluated_in_batches_in_one_run(location):
    from analytics.models import AlertDirty as Dirty
    from inventory.models import Sku, StockPosition

    skus = Sku.objects.bulk_create([Sku(code=f"B-{i}", name="b", reorder_point=5) for i in range(25)])
    StockPosition.objects.bulk_create([StockPosition(sku=s, location=location, on_hand=i) for i, s in enumerate(skus)])
    now = timezone.now()
    Dirty.objects.bulk_create([Dirty(sku=s, marked_at=now) for s in skus])
    result = alerts_evaluate(batch=10)
    assert result["skus"] == 25 and not Dirty.objects.exists()
    assert Alert.objects.filter(kind="low_stock").count() == 6  # on_hand 0..5
    assert Alert.objects.filter(kind="stockout").count() == 1


def test_alert_jobs_are_scheduled_every_30_seconds_and_the_reaction_is_registered(settings):
    from config.celery import app

    schedule = app.conf.beat_schedule
    assert schedule["analytics-alerts-evaluate"]["task"] == "analytics.alerts_evaluate"
    assert schedule["analytics-alert-deliveries"]["task"] == "analytics.alert_deliveries_drain"
    assert schedule["analytics-alerts-evaluate"]["schedule"] <= 30.0  # + the run: within 60 s
    assert "analytics.alerts_evaluate" in app.tasks and "analytics.alert_deliveries_drain" in app.tasks
    assert "analytics.alerts.alerts_on_stock_change" in settings.STOCK_CHANGE_REACTIONS


def test_subscription_secret_must_be_a_json_string(client_with, db):
    response = post(client_with("ops"), "/api/v1/alert-subscriptions/",
                    {"url": "https://example.com/hook", "secret": 5, "kinds": ["oversell"]})
    assert_error(response, 400, "validation_error")
    assert_error(post(client_with("ops"), "/api/v1/alert-subscriptions/",
                      {"url": "https://example.com/hook", "secret": "s", "kinds": []}), 400, "validation_error")
