"""Shared test helpers: where the project's fixtures and the shared corpora are."""

from __future__ import annotations

from collections.abc import Iterator
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


def evtx_files(root: Path) -> list[Path]:
    """Every ``.evtx`` file under ``root``, sorted."""
    return sorted(root.rglob("*.evtx"))


def evtx_records(path: Path) -> Iterator[dict]:
    """The ``records_json()`` records the evtx package itself can decode in one file (it raises
    for a record it cannot decode, then goes on with the next)."""
    import evtx

    it = evtx.PyEvtxParser(str(path)).records_json()
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except RuntimeError:
            continue
        yield rec
