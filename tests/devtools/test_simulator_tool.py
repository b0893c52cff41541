"""The channel simulator is a development tool: it runs as `python -m devtools.simulator`, no
production module imports it (except a benchmark command, inside a function), and the Docker
image does not ship it."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap

import requests

from devtools.services import free_port
from tests.conftest import ROOT

PRODUCTION = ("config", "core", "inventory", "reservations", "channels", "ingestion", "analytics", "live")
# Benchmark/demo commands may start the simulator, importing it inside a function only.
LAZY_IMPORT_ALLOWED = {"channels/management/commands/bench_propagation.py",
                       "live/management/commands/simulate_flash_sale.py"}


def _devtools_imports(tree: ast.AST):
    """(node, inside a function) for every import of devtools in a module."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module or ""]
            if any(name == "devtools" or name.startswith("devtools.") for name in names):
                yield child, in_function
            yield from walk(child, nested)

    yield from walk(tree, False)


def test_production_packages_do_not_import_devtools():
    found = []
    for package in PRODUCTION:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node, in_function in _devtools_imports(ast.parse(path.read_text(), filename=rel)):
                found.append((rel, node.lineno, in_function))
    wrong = [(rel, line) for rel, line, in_function in found if not (in_function and rel in LAZY_IMPORT_ALLOWED)]
    assert wrong == [], f"production code imports devtools: {wrong}"


def test_production_modules_import_without_devtools():
    # given: an interpreter where `devtools` cannot be imported (as in the Docker image)
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys

        class NoDevtools:
            def find_spec(self, name, path=None, target=None):
                if name == "devtools" or name.startswith("devtools."):
                    raise ImportError("devtools is not in the image")

        sys.meta_path.insert(0, NoDevtools())
        import django
        django.setup()
        from django.core.management import get_commands, load_command_class
        for package in {PRODUCTION!r}:
            module = importlib.import_module(package)
            for info in pkgutil.walk_packages(module.__path__, package + "."):
                importlib.import_module(info.name)
        for name, app in get_commands().items():
            if app.split(".")[0] in {PRODUCTION!r}:
                load_command_class(app, name)
        print("ok")
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    # when: every production module and management command is imported
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    # then
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr


def test_the_image_does_not_ship_devtools():
    copied = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")]
    assert not any(source.strip("./").startswith("devtools") for source in copied), copied
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "devtools/" in ignored


def test_python_m_devtools_simulator_serves_and_stops_on_sigterm():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "devtools.simulator", "--standalone", "--port", str(port),
                             "--seed", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert f"channel simulator listening on http://127.0.0.1:{port}" in first, first
        base = f"http://127.0.0.1:{port}"
        pushed = requests.post(f"{base}/s/cli/admin/api/2024-01/inventory_levels/set.json", timeout=10,
                               headers={"X-Shopify-Access-Token": "t"},
                               json={"location_id": 1, "inventory_item_id": 44, "available": 3})
        assert pushed.status_code == 200
        assert requests.get(f"{base}/_sim/levels", timeout=10).json() == {
            "stores": {"cli": {"kind": "shopify", "levels": {"44": 3}}}}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "channel simulator stopped" in out
