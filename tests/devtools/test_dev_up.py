"""`./dev up` for real: a second stack (own port, own data dir, own database on the test
server) comes up, answers /healthz, runs the channel simulator, and SIGTERM stops every child."""

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import psutil
import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection

from devtools.services import free_port
from tests.conftest import ROOT


def _admin_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST']}:{s['PORT']}/postgres"


def _up_env(tmp_path, dbname: str, port: int) -> dict:
    """Environment for a second `./dev up`: own port, data dir, database and Redis db."""
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    env = {
        **os.environ,
        "PORT": str(port),
        "INVENTORY_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": _admin_url().rsplit("/", 1)[0] + f"/{dbname}",
        "REDIS_URL": settings.REDIS_URL.rsplit("/", 1)[0] + "/7",
        "DJANGO_SUPERUSER_PASSWORD": "test-password-1",
    }
    env.pop("INVENTORY_TESTING", None)
    return env


def _wait_for_log(log, needle: str, proc, deadline: float) -> None:
    while needle not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)


def _start_up(tmp_path, env: dict):
    """`./dev up` as a user runs it (python -m devtools up), output to up.log."""
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devtools", "up"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def _drop(dbname: str) -> None:
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.mark.slow
def test_dev_up_serves_health_and_stops_cleanly(tmp_path, db):
    dbname = f"devup_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = _up_env(tmp_path, dbname, port)
    proc, log = _start_up(tmp_path, env)
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                if health.status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.5)
        assert health is not None and health.json()["checks"] == {"database": "ok", "redis": "ok", "broker": "ok"}
        while "worker-" not in log.read_text() or "ready." not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        # The bulk read takes up to 500 codes in the query string, far past gunicorn's default
        # request-line limit: the real server must accept it.
        key = subprocess.run([sys.executable, "manage.py", "create_api_key", "bulk", "--scopes", "stock:read"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
        codes = "&".join(f"sku=SKU-CODE-{i:08d}" for i in range(500))
        bulk = requests.get(f"http://127.0.0.1:{port}/api/v1/stock/?{codes}",
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert bulk.status_code == 200 and bulk.json() == {"results": []}
        text = log.read_text()
        assert "password: test-password-1" in text and f"http://127.0.0.1:{port}/admin/" in text
        # the channel simulator (python -m devtools.simulator) runs, its URL is printed, and the demo
        # channels were re-pointed at it and pushed there
        levels_url = re.search(r"simulator +(http://127\.0\.0\.1:\d+/_sim/levels)", text)
        assert levels_url, text
        _wait_for_log(log, "channel simulator listening on", proc, deadline)

        def demo_stores() -> set:
            try:
                return set(requests.get(levels_url[1], timeout=10).json()["stores"])
            except (requests.ConnectionError, requests.Timeout):
                return set()

        while not {"demo-shopify", "demo-webhook"} <= demo_stores():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"children left running: {alive}"
    _drop(dbname)


@pytest.mark.slow
def test_dev_up_reports_a_crashed_child_and_stops_the_rest(tmp_path, db):
    dbname = f"devup_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = _up_env(tmp_path, dbname, port)
    proc, log = _start_up(tmp_path, env)
    try:
        deadline = time.monotonic() + 120
        _wait_for_log(log, "beat: Starting", proc, deadline)
        _wait_for_log(log, "Listening at", proc, deadline)
        children = psutil.Process(proc.pid).children(recursive=True)
        beat = next(c for c in psutil.Process(proc.pid).children() if "beat" in " ".join(c.cmdline()))
        os.killpg(beat.pid, signal.SIGKILL)  # a crash, not a stop request
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 1, text
    assert "beat exited unexpectedly" in text
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"children left running: {alive}"
    _drop(dbname)
