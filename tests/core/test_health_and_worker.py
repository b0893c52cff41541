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
        assert time.monotonic() < deadline, "no worker connection left idle after the task: closed, or never ran"
        time.sleep(0.1)


def _idle_since(moment) -> set[int]:
    """PostgreSQL sessions (not this test's) idle after a statement that ended after `moment`."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                       "pid <> pg_backend_pid() AND state = 'idle' AND state_change > %s", [moment])
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def db_reuse(monkeypatch):
    """CELERY_DB_REUSE_MAX for the worker started after it (the fixture reads the environment)."""
    monkeypatch.setenv("CELERY_DB_REUSE_MAX", "10000")


@pytest.mark.slow
def test_worker_keeps_its_database_connection_across_tasks(db_reuse, celery_worker_process):
    """With CELERY_DB_REUSE_MAX set, a worker keeps its connection across tasks, as the web keeps
    its own (Celery's Django fixup alone closes it after every task: a new PostgreSQL backend per
    task); core.celery_connections then checks it at each task's start."""
    from django.utils import timezone

    from core.tasks import prune_idempotency_keys_task

    seen: set[int] = set()
    for _ in range(5):
        sent = timezone.now()
        prune_idempotency_keys_task.delay()  # one DELETE in a transaction
        deadline = time.monotonic() + 60
        while not (idle := _idle_since(sent)):
            assert time.monotonic() < deadline, "no worker connection left idle after the task: closed, or never ran"
            time.sleep(0.02)
        seen |= idle
    time.sleep(1.0)
    assert len(seen) <= 2, f"a new connection per task: backends {sorted(seen)}"  # 2 pool processes
    assert _idle_since(sent) & seen, "the worker closed its connection after the task"
