"""Golden outputs of ``rules export`` per target: reviewed texts in tests/golden/<target>/, so a
backend or pipeline upgrade that changes a query shows up as a diff here.

Inputs: tests/golden/rules/golden.yml (five rules, one per kind of query the pack needs, and two
correlations on plain fields). After reviewing a deliberate change, regenerate with
``SCMWATCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_export_golden.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scmwatch.export import formats
from scmwatch.export.convert import export_rules
from scmwatch.export.targets import TARGETS

GOLDEN = Path(__file__).resolve().parent / "golden"
RULES = GOLDEN / "rules"
REGEN = os.environ.get("SCMWATCH_REGEN_GOLDEN") == "1"


def _outputs(target: str) -> dict[str, str]:
    exp = export_rules([RULES], target)
    return {
        "queries.txt": formats.listing(exp),
        "not-exported.tsv": formats.not_exported(exp),
        exp.target.saved_file: formats.saved_form(exp),
    }


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_golden(target):
    outputs = _outputs(target)
    folder = GOLDEN / target
    if REGEN:
        folder.mkdir(exist_ok=True)
        for name, text in outputs.items():
            (folder / name).write_text(text, encoding="utf-8")
    for name, text in outputs.items():
        expected = (folder / name).read_text(encoding="utf-8")
        assert text == expected, f"{target}/{name} changed; review, then regenerate (see module doc)"


def test_golden_inputs_cover_rules_and_correlations():
    exp = export_rules([RULES], "sqlite")
    kinds = [e.kind for e in exp.entries]
    assert kinds.count("rule") == 5 and kinds.count("correlation") == 2
    assert all(e.exported for e in exp.entries)  # the SQLite backend expresses both correlation types
    by = {e.name: e for e in export_rules([RULES], "splunk").entries}
    assert by["golden_install_burst"].exported and "| stats count" in by["golden_install_burst"].queries[0]
    assert "temporal_ordered" in (by["golden_write_then_shell"].reason or "")
