"""Live stock over real HTTP: the ASGI application as `./dev up` serves it (gunicorn with the
uvicorn worker, separate process, test database), and a small server-sent events client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
import requests

from devtools.services import free_port
from tests.conftest import ROOT, database_url_for_subprocess


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """Base URL of gunicorn + StocklineUvicornWorker serving config.asgi on the test database.
    Heartbeats every second (so a test sees one), demo mode on (the storefront's keys)."""
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "LIVE_HEARTBEAT_SECONDS": "1", "STOCKLINE_DEMO": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path_factory.mktemp("asgi") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.asgi:application", "--bind", f"127.0.0.1:{port}",
             "--worker-class", "live.worker.StocklineUvicornWorker", "--workers", "1", "--graceful-timeout", "5"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the ASGI server did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Event:
    id: str | None = None
    event: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self):
        return json.loads(self.data)


class SSEClient:
    """Reads a `text/event-stream` answer frame by frame over a plain socket (chunked HTTP/1.1)."""

    def __init__(self, url: str, headers: dict | None = None):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream",
                 *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        self.raw = b""
        head = self._read_until(b"\r\n\r\n", time.monotonic() + 10)
        status_line, *header_lines = head.decode("latin1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if ":" in h)}
        self.body = b""  # de-chunked bytes not parsed yet
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.closed = False

    def _recv(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            self.closed = True
            return False
        self.raw += data
        return True

    def _read_until(self, marker: bytes, deadline: float) -> bytes:
        while marker not in self.raw:
            if not self._recv(deadline) and (self.closed or time.monotonic() > deadline):
                raise TimeoutError(f"no {marker!r} in time; got {self.raw[:300]!r}")
        head, _, self.raw = self.raw.partition(marker)
        return head

    def _dechunk(self) -> None:
        if not self.chunked:
            self.body += self.raw
            self.raw = b""
            return
        while b"\r\n" in self.raw:
            size_line, _, rest = self.raw.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self.raw = rest[size + 2:]
            if size == 0:
                self.closed = True
                return

    def text(self) -> str:
        """The whole body of a non-stream answer (refusals)."""
        deadline = time.monotonic() + 10
        length = int(self.headers.get("content-length", "-1"))
        while True:
            self._dechunk()
            if self.closed or (length >= 0 and len(self.body) >= length) or time.monotonic() > deadline:
                return self.body.decode()
            self._recv(deadline)

    def next(self, timeout: float = 5.0, *, skip_comments: bool = True) -> Event:
        """The next frame (an event, or comment lines when skip_comments is False)."""
        deadline = time.monotonic() + timeout
        while True:
            self._dechunk()
            while b"\n\n" in self.body:
                frame, _, self.body = self.body.partition(b"\n\n")
                event = Event()
                for line in frame.decode().split("\n"):
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "":
                        event.comments.append(value)
                    elif name == "id":
                        event.id = value
                    elif name == "event":
                        event.event = value
                    elif name == "data":
                        event.data += value
                if event.data or not skip_comments:
                    return event
            if self.closed:
                raise EOFError("the stream ended")
            if time.monotonic() > deadline:
                raise TimeoutError("no event in time")
            self._recv(deadline)

    def opened(self) -> None:
        """Wait for the stream's opening comment (the server has registered the stream)."""
        assert self.status == 200, self.text()
        frame = self.next(timeout=10, skip_comments=False)
        assert any("stream open" in c for c in frame.comments), frame

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sse():
    clients: list[SSEClient] = []

    def open_(url: str, headers: dict | None = None) -> SSEClient:
        client = SSEClient(url, headers)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        client.close()
