"""Every fuzz target (``tests/fuzz/target_*.py``) on its seeds, then under Hypothesis for a
bounded time.

Targets are found by glob, so adding ``target_<name>.py`` (and ``seeds/<name>/``) is all a new
reader needs. Each target gets at most FUZZ_SECONDS of Hypothesis examples (all targets
together stay under a minute in CI); the examples are derandomized, so CI is reproducible, and
``bench/fuzz.py`` runs the same targets for longer with fresh randomness (or Atheris).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path[:0] = [str(FUZZ), str(FUZZ.parent)]

from fuzzlib import seeds, strategy_for  # noqa: E402

TARGETS = sorted(p.stem.removeprefix("target_") for p in FUZZ.glob("target_*.py"))
# Hypothesis time per target; the seeds always run in full.
FUZZ_SECONDS = float(os.environ.get("SCMWATCH_FUZZ_SECONDS", "5"))


def load_target(name: str) -> ModuleType:
    path = FUZZ / f"target_{name}.py"
    spec = importlib.util.spec_from_file_location(f"target_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert callable(getattr(module, "target", None)), f"{path} defines no target(data: bytes)"
    return module


def test_every_target_has_seeds() -> None:
    assert TARGETS, "no fuzz target found"
    for name in TARGETS:
        assert seeds(name), f"tests/fuzz/seeds/{name}/ is empty: a target needs a seed corpus"


@pytest.mark.parametrize("name", TARGETS)
def test_seeds(name: str) -> None:
    target = load_target(name).target
    start = time.perf_counter()
    for data in seeds(name):
        target(data)
    _seconds_per_input[name] = (time.perf_counter() - start) / max(1, len(seeds(name)))


_seconds_per_input: dict[str, float] = {}


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz(name: str) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings

    module = load_target(name)
    if name not in _seconds_per_input:
        test_seeds(name)
    # As many examples as fit the time at the seeds' pace; the deadline below cuts off the rest
    # should the fuzzed inputs be slower (Hypothesis has no time budget of its own).
    examples = int(min(2000, max(20, FUZZ_SECONDS / max(_seconds_per_input[name], 1e-4))))
    deadline = time.monotonic() + FUZZ_SECONDS
    ran = 0

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy_for(module, name))
    def run(data: bytes) -> None:
        nonlocal ran
        if time.monotonic() > deadline:
            return  # time is up: the remaining examples are generated but not run
        ran += 1
        module.target(data)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        pass
    assert ran > 0
