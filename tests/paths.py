"""Shared test helpers: where the project's fixtures and the shared corpora are."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = ROOT.parent / "shared"
ATTACK_SAMPLES = SHARED / "corpora" / "evtx-attack-samples"
SIGMAHQ = SHARED / "corpora" / "sigmahq"


def need_shared(path: Path) -> Path:
    """Skip the calling test cleanly when ../shared (or a part of it) is absent."""
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path
