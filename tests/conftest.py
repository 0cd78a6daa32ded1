"""Test-wide settings."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Compiled Hyperscan databases go to a private cache for the test run, not the user's ~/.cache,
# removed when the run ends.
if "SCMWATCH_CACHE_DIR" not in os.environ:
    os.environ["SCMWATCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="scmwatch-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SCMWATCH_CACHE_DIR"], True)


@pytest.fixture(scope="session")
def pack():
    """The built-in rule pack and its engine, loaded once for the run (read only)."""
    from scmwatch.rules import PACK_DIR
    from scmwatch.sigma import Engine, load_rules

    rs = load_rules([str(PACK_DIR)])
    return rs, Engine(rs)


@pytest.fixture(scope="session")
def attack(tmp_path_factory) -> Path:
    """A simulated multi-host attack (every scenario, 6 hosts, cross-host correlations)."""
    from scmwatch.simulate import Options, simulate

    out = tmp_path_factory.mktemp("sim")
    simulate(Options(scenarios=["all"], out=out, events=6000, seed=21, hosts=6,
                     labels=out.parent / "l.jsonl"))
    return out
