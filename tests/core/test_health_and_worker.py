import time

import pytest
from django.core.cache import cache


def test_healthz_reports_every_check_ok(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}


def test_healthz_names_the_failing_check(client, db, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["redis"].startswith("error") and checks["database"] == "ok"


def test_schema_and_docs_are_served(client, db):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/stock/adjustments/" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_unknown_url_answers_json_404(client, db):
    response = client.get("/api/v1/nothing-here/")
    assert response.status_code == 404


@pytest.mark.slow
def test_real_worker_runs_a_task_end_to_end(celery_worker_process):
    from core.tasks import ping_task

    token = f"t{time.time_ns()}"
    ping_task.delay(token)
    deadline = time.monotonic() + 90
    while cache.get(f"ping:{token}") != "pong":
        assert time.monotonic() < deadline, "the worker never ran the task"
        time.sleep(0.1)
