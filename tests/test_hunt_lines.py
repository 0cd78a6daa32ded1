"""Hits written as their JSON lines where they are matched (``run_hunt(lines=True)``, what
``hunt --format jsonl`` does) give byte for byte the lines the parent wrote from Alerts before,
and the same counts and results summary: hostile values still escaped, odd ones still take the
slow path, rules' custom attributes and derived fields in their places."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.test_hunt_lineage import _4688, _scm, _write

from scmwatch import rules as pack
from scmwatch.alerts import Alert, HitLine
from scmwatch.hunt import alerts_from_hits, run_hunt
from scmwatch.results import Results
from scmwatch.sigma import load_rules
from scmwatch.sinks import open_sink
from scmwatch.sinks.jsonl import HitLines, json_line

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"


@dataclass
class Rule:
    """The rule attributes an alert takes (those of a CompiledRule)."""

    id: str
    title: str = "Service installed"
    level: str = "high"
    description: str = "A service was installed"
    tags: list[str] = field(default_factory=lambda: ["attack.execution", "attack.t1569.002"])
    custom: dict[str, Any] = field(default_factory=dict)


RULES = [
    Rule("r-plain"),
    Rule("r-plain-2", title="Second \x1b]52;c;AAAA\x07 rule", tags=[]),
    # custom attributes: some collide with the contract's keys, a dict is not carried
    Rule("r-custom", custom={"maxpatrol_rule": "MP-1", "title": "spoofed", "derived": "custom", "count": 3,
                             "nested": {"a": 1}, "list": [1, "x"], "ratio": 0.5}),
    Rule("r-surrogate", description="bad \ud800 text"),  # the rule's own part needs the slow path
]
BY_ID = {r.id: r for r in RULES}

def _deep(n: int) -> Any:
    v: Any = "bottom"
    for _ in range(n):
        v = [v]
    return v


FIELDS = [
    {"EventID": 7045, "Channel": "System", "Computer": "DC01", "ServiceName": "evil\x1b[2J\u202e",
     "ImagePath": "C:\\Windows\\Temp\\x.exe\r\nscmwatch: forged",
     "TimeCreated": "2024-05-01T10:00:00.000000Z"},
    {"EventID": 7045, "Channel": "System", "ServiceName": "lone \udc80 surrogate"},  # no Computer either
    {"EventID": 7045, "Channel": "System", "Computer": 12, "Big": 1 << 70, "Neg": -(1 << 65)},
    {"EventID": 7045, "Channel": "System", "Computer": "WS1", "Deep": _deep(300)},
    {"EventID": 7045, "Channel": "System", "Computer": "WS1", "source": "own", "record_id": "own"},
]


def _hits(fields: dict[str, Any], t: float, rid: int | None, derived: tuple[str, ...]) -> tuple[list, list]:
    """The plain hits and the line hits of every rule on one event."""
    key = (t, "C:\\logs\\a.evtx", rid if rid is not None else -1)
    plain = [(key + (r.id, 0, 0, n), fields, rid, "evtx", derived) for n, r in enumerate(RULES)]
    bodies = HitLines().bodies(RULES, t, key[1], rid, fields, derived)
    lined = [(key + (r.id, 0, 0, n), body, "", None)
             for n, (r, body) in enumerate(zip(RULES, bodies, strict=True))]
    return plain, lined


@pytest.mark.parametrize("fields", FIELDS, ids=["escapes", "surrogate", "huge-int", "deep", "own-provenance"])
@pytest.mark.parametrize(("t", "rid", "derived"), [(1714557600.123456, 7, ()), (0.0, None, ("ParentImage",))])
def test_hit_lines_are_the_alerts_lines(fields: dict[str, Any], t: float, rid: int | None,
                                        derived: tuple[str, ...]) -> None:
    plain, lined = _hits(fields, t, rid, derived)
    want = [json_line(a.to_dict()) for a in alerts_from_hits(plain, BY_ID)]
    got = [a.line for a in alerts_from_hits(lined, BY_ID, HitLines())]
    assert got == want
    for line in got:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert b"\x1b" not in line and b"\r" not in line  # JSON escapes them
        line.decode("utf-8")  # surrogates replaced: always writable
        json.loads(line)


def test_rules_without_custom_attributes_share_one_body_per_event() -> None:
    lines = HitLines()
    a, b, custom, _ = lines.bodies(RULES, 1.0, "x", 1, dict(FIELDS[0]))
    assert a is b and custom is not a
    assert json.loads(lines.line(RULES[2], custom))["maxpatrol_rule"] == "MP-1"


def _run(paths: list[str], ruleset: Any, jobs: int, lines: bool) -> tuple[bytes, dict, dict, set]:
    out = io.StringIO()
    buf = io.BytesIO()
    out.buffer = buf  # type: ignore[attr-defined]
    sink = open_sink("jsonl", out, ruleset.by_id())
    results = Results()
    kinds: set = set()

    def emit(a: Alert | HitLine) -> None:
        kinds.add(type(a))
        results.add(a)
        sink.write(a)

    r = run_hunt(paths, ruleset, jobs=jobs, sink=emit, lines=lines)
    sink.close()
    summary = {k: v for k, v in r.summary.items() if "second" not in k and k != "memory"}
    return buf.getvalue(), summary, results.to_dict(), kinds


@pytest.mark.parametrize("jobs", [1, 2])
def test_demo_lines_equal_alerts_with_correlations_and_links(jobs: int) -> None:
    ruleset = load_rules([str(pack.PACK_DIR)])
    assert ruleset.correlations
    before = _run([str(DEMO)], ruleset, jobs, lines=False)
    after = _run([str(DEMO)], ruleset, jobs, lines=True)
    assert before[3] == {Alert}
    assert after[3] == {Alert, HitLine}  # correlations are still Alerts
    assert after[:3] == before[:3]
    assert before[2]["lateral_movement"]  # the results' links were built from the line hits too
    assert after[1]["alerts"] == before[0].count(b"\n") > 50


def test_lineage_lines_equal_alerts(tmp_path: Path) -> None:
    """Derived parents, and process creations only the merge step decides (deferred hits)."""
    cmd, services = "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\services.exe"
    paths = [
        _write(tmp_path / "Security.jsonl", [
            _4688("2024-05-01T10:05:00Z", "0x9c4", cmd, "0x1f0", "cmd.exe /c whoami"),
            _4688("2024-05-01T10:07:00Z", "0x300", services, "0x1c4", "services.exe"),
            _4688("2024-05-01T10:08:00Z", "0x9cc", cmd, "0x300", "cmd.exe /c dir"),
        ]),
        _write(tmp_path / "System.jsonl", [_scm("2024-05-01T11:00:00Z", 0x1F0)]),
    ]
    ruleset = load_rules([str(pack.PACK_DIR)])
    before = _run(paths, ruleset, 1, lines=False)
    for jobs in (1, 2):
        after = _run(paths, ruleset, jobs, lines=True)
        assert after[0] == before[0] and after[2] == before[2]
    alerts = [json.loads(x) for x in before[0].splitlines()]
    assert sum(a.get("derived") == ["ParentProcessName"] for a in alerts) == 2
    assert before[1]["lineage"]["resolved_by_merge"] == 1


def test_filters_and_dedup_still_get_alerts() -> None:
    ruleset = load_rules([str(pack.PACK_DIR)])
    kinds: set = set()
    run_hunt([str(DEMO)], ruleset, sink=lambda a: kinds.add(type(a)), lines=True, keep=lambda a: True)
    assert kinds == {Alert}
