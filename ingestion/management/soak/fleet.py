"""The soak's processes: a gunicorn web server and W single-process Celery workers, each in its own
process group, so one can be SIGKILLed whole (no cleanup, no rollback from its side) and
restarted, as a machine or container dying would."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ingestion.management.loadtools import free_port, spawn, stop, wait_until_up, web_args, worker_args, worker_ready

TASK_RECEIVED = re.compile(r"Task [\w.]+\[[\w-]+\] received")
TASK_FINISHED = re.compile(r"Task [\w.]+\[[\w-]+\] (succeeded|raised|retry|failed)")


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen
    log: Path
    incarnation: int = 0

    def ready(self) -> bool:
        return self.proc.poll() is None and worker_ready(self.log)

    def busy(self) -> bool:
        """Whether its log shows a task received and not finished (a kill now interrupts it)."""
        text = self.log.read_text(errors="replace")
        return len(TASK_RECEIVED.findall(text)) > len(TASK_FINISHED.findall(text))


@dataclass
class Fleet:
    logs: Path
    worker_count: int
    url: str | None = None  # given: an existing web server (not started, not killed)
    web: subprocess.Popen | None = None
    workers: list[Worker] = field(default_factory=list)
    kills: int = 0
    kills_busy: int = 0  # kills that interrupted a running task (typically a drain mid-batch)
    web_kills: int = 0
    log: list[str] = field(default_factory=list)
    _port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---------------------------------------------------------------- start / stop

    def start(self) -> str:
        if self.url is None:
            self._port = free_port()
            self.url = f"http://127.0.0.1:{self._port}"
            self.web = spawn(web_args(self._port), self.logs / "web.log")
        self.workers = [self._spawn_worker(i) for i in range(self.worker_count)]
        children = [w.proc for w in self.workers] + ([self.web] if self.web else [])
        wait_until_up(self.url if self.web else None, [w.log for w in self.workers], children, timeout=90,
                      logs=self.logs)
        return self.url

    def _spawn_worker(self, index: int, incarnation: int = 0) -> Worker:
        log = self.logs / f"worker-{index}.{incarnation}.log"
        # One process per worker (prefork with one child), so killing its group kills everything
        # that worker was doing; the hostname is unique per incarnation like a new container's.
        proc = spawn(worker_args(f"soak-{os.getpid()}-{index}-{incarnation}@%h", 1), log)
        return Worker(index=index, proc=proc, log=log, incarnation=incarnation)

    def stop(self) -> None:
        stop([w.proc for w in self.workers] + ([self.web] if self.web else []))

    # ---------------------------------------------------------------- chaos

    def kill_random_worker(self, rng: random.Random) -> bool:
        """SIGKILL the process group of a random worker that is up and ready, then start a new one."""
        with self._lock:
            candidates = [w for w in self.workers if w.ready()]
            if not candidates:
                return False
            victim = rng.choice(candidates)
            busy = victim.busy()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            self.kills += 1
            self.kills_busy += busy
            self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL worker {victim.index} "
                            f"(pid {victim.proc.pid}{', mid-task' if busy else ''})")
            self.workers[victim.index] = self._spawn_worker(victim.index, victim.incarnation + 1)
            return True

    def kill_web(self) -> bool:
        """SIGKILL gunicorn's process group (master and workers, mid-request) and start it again."""
        if self.web is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.web.pid, signal.SIGKILL)
        self.web.wait()
        self.web_kills += 1
        self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL web server (pid {self.web.pid})")
        self.web = spawn(web_args(self._port), self.logs / "web.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return True
            time.sleep(0.3)
        return False

    def ensure_all_up(self, timeout: float = 90) -> None:
        """After the chaos: every worker alive and ready (one that died on its own is restarted)."""
        with self._lock:
            for w in list(self.workers):
                if w.proc.poll() is not None:
                    self.log.append(f"worker {w.index} had exited with {w.proc.returncode}; restarted")
                    self.workers[w.index] = self._spawn_worker(w.index, w.incarnation + 1)
        deadline = time.monotonic() + timeout
        while not all(w.ready() for w in self.workers) and time.monotonic() < deadline:
            time.sleep(0.3)


def chaos_loop(fleet: Fleet, *, mean_interval: float, rng: random.Random, stop_event: threading.Event) -> None:
    """Kill a random worker at exponentially distributed intervals until `stop_event` is set."""
    while not stop_event.wait(rng.expovariate(1.0 / mean_interval) if mean_interval > 0 else 3600):
        fleet.kill_random_worker(rng)
