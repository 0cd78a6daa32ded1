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


def _correlation_events(path: Path) -> None:
    """Scenarios for the golden correlations: positive, wrong order, past the window, exactly at
    the window, repeated, mixed-case group value; bursts of 5, 10, 5-at-the-limit and 4 installs."""
    import datetime
    import json

    t0 = datetime.datetime(2024, 5, 1, 10, 0, 0)
    events = []

    def at(sec: float) -> str:
        return (t0 + datetime.timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def write(host: str, sec: float) -> None:
        events.append({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 13, "Computer": host,
                       "TimeCreated": at(sec), "Image": "C:\\Windows\\regedit.exe", "Details": "cmd /c x",
                       "TargetObject": "HKLM\\System\\CurrentControlSet\\Services\\evil\\ImagePath"})

    def shell(host: str, sec: float) -> None:
        events.append({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": host,
                       "TimeCreated": at(sec), "ParentImage": "C:\\Windows\\System32\\services.exe",
                       "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c x"})

    def install(host: str, sec: float) -> None:
        n = len(events)
        events.append({"Channel": "System", "EventID": 7045, "Provider_Name": "Service Control Manager",
                       "Computer": host, "TimeCreated": at(sec), "ServiceName": f"s{n}",
                       "ImagePath": f"C:\\Windows\\Temp\\x{n}.exe"})

    write("A", 0), shell("A", 30)
    shell("B", 0), write("B", 30)
    write("C", 0), shell("C", 180)
    write("BND", 0), shell("BND", 120)
    write("TWICE", 0), shell("TWICE", 10), shell("TWICE", 20)
    write("MIX", 0), shell("mix", 30)
    for i in range(5):
        install("D", i * 60)
    for i in range(10):
        install("G", i * 50)
    for i in range(5):
        install("H", i * 150)
    for i in range(4):
        install("E", i * 60)
    events.sort(key=lambda e: e["TimeCreated"])
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def test_golden_correlations_alert_for_the_same_groups_in_sqlite(tmp_path):
    from scmwatch.export.verify import verify

    events = tmp_path / "corr.ndjson"
    _correlation_events(events)
    res = verify([RULES], [str(events)])
    assert res.ok, (res.correlation_differences, res.differences, res.errors)
    assert res.correlations_compared == 2 and res.correlations_equal == 2
    assert res.correlation_alerts == 7  # A, BND, TWICE, MIX; D, G, H
    # re-alerting differs (documented): scmwatch starts a new window after an alert
    assert sorted(res.correlation_count_notes) == [
        "golden_install_burst: group Computer=g: engine 2 alert(s), SQLite 6",
        "golden_write_then_shell: group Computer=twice: engine 1 alert(s), SQLite 2",
    ]
