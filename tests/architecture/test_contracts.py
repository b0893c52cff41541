"""The architecture is a test, not a hope (docs/ARCHITECTURE.md, "Packages and arrows").

- import-linter's contracts in pyproject.toml: dependencies point one way
  (ingestion > reservations > channels > inventory > core; config above all), imports inside
  functions included, and the product never imports devtools;
- mypy (django-stubs) over the service and selector layers listed in pyproject.toml.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,  # noqa: S603
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_import_contracts_are_kept():
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_service_layers_type_check():
    # The django-stubs plugin imports config.settings (no database or Redis connection); a
    # secret key keeps settings from generating one in the data dir. Incremental: .mypy_cache.
    result = run(str(BIN / "mypy"), env={"DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or "mypy-check"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
