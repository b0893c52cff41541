"""Shared fixtures. Everything runs against the real PostgreSQL and Redis that `./dev test`
started (or that DATABASE_URL / REDIS_URL name)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from core.auth import api_key_create
from core.models import SCOPES
from tests.factories import LocationFactory, SkuFactory

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_wake_up_windows():
    """Each test starts as a new process would: no quiet period after an earlier test's wake-up
    (ingestion.scheduling._kick), which would leave a drain unqueued that the test expects."""
    from ingestion import scheduling

    scheduling._quiet_until.clear()


@pytest.fixture
def make_key(db):
    def make(*scopes: str, name: str = "test"):
        _key, plaintext = api_key_create(name=name, scopes=list(scopes or SCOPES))
        return plaintext

    return make


@pytest.fixture
def api(make_key):
    """An API client whose key has every scope."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key()}")
    return client


@pytest.fixture
def client_with(make_key):
    def build(*scopes: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(*scopes)}")
        return client

    return build


@pytest.fixture
def admin_groups(db):
    """The admin groups the data migrations make, made again when missing: a transactional test
    (live_server, real threads) empties every table when it ends, groups included."""
    from importlib import import_module

    from django.apps import apps
    from django.contrib.auth.models import Group

    if not Group.objects.filter(name="Merchandisers").exists():
        for module, function in (("inventory.migrations.0003_groups", "create_groups"),
                                 ("analytics.migrations.0002_groups", "grant"),
                                 ("analytics.migrations.0004_alert_groups", "grant")):
            getattr(import_module(module), function)(apps, None)


@pytest.fixture
def location(db):
    return LocationFactory(code="wh")


@pytest.fixture
def other_location(db):
    return LocationFactory(code="store")


@pytest.fixture
def sku(db):
    return SkuFactory(code="SKU-1")


def run_concurrently(fn, args_list, workers: int | None = None):
    """Run fn(*args) for each args in parallel threads, each with its own DB connection.

    Returns results (or the raised exception) in input order. A barrier-like start: all threads
    are created before any runs, so they really contend.
    """
    import threading

    start = threading.Event()

    def call(args):
        start.wait()
        try:
            return fn(*args)
        except Exception as exc:  # returned, so the test can assert on every outcome
            return exc
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=workers or len(args_list)) as pool:
        futures = [pool.submit(call, args) for args in args_list]
        time.sleep(0.2)
        start.set()
        return [f.result() for f in futures]


def database_url_for_subprocess() -> str:
    """DATABASE_URL pointing at the test database pytest-django created (for subprocesses)."""
    settings = connection.settings_dict
    return (f"postgres://{settings['USER']}:{settings['PASSWORD'] or ''}@{settings['HOST']}:{settings['PORT']}"
            f"/{settings['NAME']}")


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real Celery worker (separate process) on the real broker, using the test database.

    The queue is purged first: tasks queued by earlier tests (or earlier runs, on an external
    broker such as RabbitMQ) name rows that no longer exist and would only delay this test's
    tasks. A test that queued work before asking for the worker must queue it again after.
    """
    from config.celery import app

    app.control.purge()
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
             "--concurrency", "2", "--pool", "prefork", "--hostname", f"test-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "ready." not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"celery worker did not start:\n{log.read_text()}")
                time.sleep(0.2)
            yield proc
        finally:
            import signal

            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
