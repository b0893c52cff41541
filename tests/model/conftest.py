"""Hypothesis profiles for the model-based (stateful) tests, and their fixtures.

Profiles (chosen with the environment variable STOCKLINE_MODEL_PROFILE, else `ci` when the CI
variable is set, else `default`):
- `default`: bounded (40 examples of up to 30 steps per machine, about 15 ms a step), so all of
  tests/model takes about 35 s on an idle 2-core machine and well under 90 s on a busy one;
  random exploration, failures remembered in the example database.
- `ci`: the same budget, derandomized: CI must go red because of the change under test, never
  because a random run happened to find an old bug on one commit and not on the next. New
  sequences are explored locally with `default` and `long`; what they find is pinned in
  tests/model/test_regressions.py.
- `long`: `STOCKLINE_MODEL_PROFILE=long ./dev test tests/model` for a deep search (600 examples
  of up to 60 steps per machine: about 10 minutes each).

Every profile has no deadline (the steps hit PostgreSQL, Redis and HTTP) and accepts slow data
generation. The example database lives under INVENTORY_DATA_DIR (never in the work tree).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parents[2]
_DATA_DIR = Path(os.environ.get("INVENTORY_DATA_DIR") or ROOT / ".local")

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    "print_blob": True,
}

settings.register_profile(
    "stockline-model-default", max_examples=40, stateful_step_count=30,
    database=DirectoryBasedExampleDatabase(str(_DATA_DIR / "hypothesis")), **_COMMON)
settings.register_profile(
    "stockline-model-ci", max_examples=40, stateful_step_count=30, derandomize=True, database=None,
    # Explain phase off: it replays the failure many times only to annotate it.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink], **_COMMON)
settings.register_profile(
    "stockline-model-long", max_examples=600, stateful_step_count=60,
    database=DirectoryBasedExampleDatabase(str(_DATA_DIR / "hypothesis")), **_COMMON)


def profile_name() -> str:
    chosen = os.environ.get("STOCKLINE_MODEL_PROFILE", "").strip()
    if not chosen:
        chosen = "ci" if os.environ.get("CI") else "default"
    return f"stockline-model-{chosen}"


def model_settings(**overrides) -> settings:
    """The selected profile (optionally scaled for one machine), passed explicitly to each run so
    loading it does not change the settings of any other hypothesis test in the suite."""
    return settings(settings.get_profile(profile_name()), **overrides)


@pytest.fixture
def sim():
    """The channel simulator on a free port for one test (shared by that test's examples; each
    example uses its own stores, named after its own channels)."""
    try:
        from devtools.simulator import Simulator
    except ImportError:  # before the simulator moved to devtools/
        from channels.simulator import Simulator

    simulator = Simulator(seed=11).start()
    try:
        yield simulator
    finally:
        simulator.stop()
