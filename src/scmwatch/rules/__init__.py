"""The built-in Sigma rule pack for ATT&CK T1569.002 (one YAML file per detection).

The YAML files sit beside this module and ship as package data; fixtures for ``scmwatch rules
test`` are under ``tests/`` here (see :mod:`scmwatch.packtest` for the convention).
"""

from __future__ import annotations

from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent


def pack_paths() -> list[str]:
    """The rule files of the built-in pack, sorted (fixtures under ``tests/`` are not rules)."""
    return [str(p) for p in sorted(PACK_DIR.glob("*.yml"))]
