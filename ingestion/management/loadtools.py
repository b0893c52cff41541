"""Helpers shared by the load commands (bench_ingestion, soak): start gunicorn and Celery workers
on the ./dev database as children in their own process groups, stop them, and sign webhooks the
way the marketplaces do (channels.adapters.signing)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.core.management.base import CommandError

from channels.adapters.signing import hmac_sha256_base64, standard_webhooks_sign

ROOT = Path(__file__).resolve().parents[2]


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def web_args(port: int) -> list[str]:
    """gunicorn as `./dev up` runs it: gthread, 2 processes x 8 threads, loopback only."""
    return [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
            "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--log-level", "warning"]


def worker_args(hostname: str, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency), "--hostname", hostname, "--without-gossip", "--without-mingle"]


def spawn(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a child in its own session (so its whole process group can be signalled), output to `log`."""
    with open(log, "a") as out:  # the child keeps its own descriptor
        return subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            args, cwd=ROOT, env=env or dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)


def worker_ready(log: Path) -> bool:
    try:
        return "ready." in log.read_text(errors="replace")
    except FileNotFoundError:
        return False


def wait_until_up(url: str | None, worker_logs: list[Path], children: list[subprocess.Popen], *,
                  timeout: float = 60, logs: Path | None = None) -> None:
    """Wait until the web server answers /healthz (when `url`) and every worker logged "ready."."""
    deadline = time.monotonic() + timeout
    while True:
        web_up = url is None
        if not web_up:
            with contextlib.suppress(requests.RequestException):
                web_up = requests.get(f"{url}/healthz", timeout=2).status_code == 200
        if web_up and all(worker_ready(log) for log in worker_logs):
            return
        if time.monotonic() > deadline or any(c.poll() is not None for c in children):
            raise CommandError(f"service did not start; logs in {logs or worker_logs[0].parent}")
        time.sleep(0.3)


def stop(children: list[subprocess.Popen], timeout: float = 20) -> None:
    """SIGTERM every child's process group, then SIGKILL what is still running after `timeout`."""
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def shopify_headers(secret: str, body: bytes, *, topic: str, delivery_id: str) -> dict:
    """Headers of a Shopify webhook delivery: X-Shopify-Hmac-Sha256 = base64(HMAC-SHA256(secret, body))."""
    return {"X-Shopify-Hmac-Sha256": hmac_sha256_base64(secret.encode(), body), "X-Shopify-Topic": topic,
            "X-Shopify-Webhook-Id": delivery_id, "Content-Type": "application/json"}


def standard_webhook_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict:
    """Headers of a Standard Webhooks delivery (signed now unless `timestamp` is given)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_webhooks_sign(secret, msg_id, timestamp, body),
            "Content-Type": "application/json"}
