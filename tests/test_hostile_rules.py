"""Hostile rules and rule inputs (issue 11, items 3, 10 and 15): wildcards that made Python's
``re`` backtrack for minutes, absurdly complex values, correlations that wait for themselves,
and a burst of distinct correlation groups that the reorder buffer held without limit.

Rules and logs are written by each test. The hang cases run the real CLI in a subprocess with a
generous timeout: the old matcher needed minutes (or forever) on these, the linear one
milliseconds, so the timeout only turns a hang into a failure; it measures nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from scmwatch.cli import main
from scmwatch.correlate import Candidate, Correlator, ReorderBuffer, rule_key, spec_from_sigma
from scmwatch.correlate.links import extract_fact
from scmwatch.correlate.stream import MAX_HELD
from scmwatch.events.model import Event
from scmwatch.hunt import run_hunt
from scmwatch.sigma import load_rules
from scmwatch.sigma.values import MAX_WILDCARDS, ONE, WILD, glob_matcher, merge_parts

HANG_TIMEOUT = 120  # seconds; the fixed matcher needs well under one


def _rule(value: str, field: str = "ServiceName", rid: str = "1") -> str:
    return f"""title: hostile wildcard {rid}
id: 7a1e2a3b-0000-4000-8000-{int(rid):012d}
level: high
logsource: {{product: windows, service: system}}
detection:
  sel:
    EventID: 7045
    {field}: {json.dumps(value)}
  condition: sel
"""


def _parts(pattern: str) -> list:
    return merge_parts([WILD if c == "*" else ONE if c == "?" else c for c in pattern])


def _cli(*args: str, timeout: float = HANG_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scmwatch", *args], capture_output=True, text=True,
                          timeout=timeout)


# -- item 3: linear glob matching --------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("*a*a*a*a*a*a*a*a?b", "a" * 120, False),
    ("*a*a*a*a*a*a*a*a?b", "a" * 120 + "xb", True),
    ("*?" * 32, "a" * 31, False),
    ("*?" * 32, "a" * 32, True),
    ("?*?*?*", "ab", False),
    ("c:\\win?ows\\*.exe", "c:\\windows\\x.exe", True),
    ("c:\\win?ows\\*.exe", "c:\\win\nows\\x.exe", True),  # ? matches any one character
    ("c:\\win?ows\\*.exe", "c:\\windows\\x.ex", False),
    ("?é?", "aéb", True),
    ("?é?", "aé", False),
    ("a.b(c)?[x]", "a.b(c)![x]", True),  # regex metacharacters are literals
    ("a.b(c)?[x]", "aXb(c)![x]", False),
])
def test_glob_with_single_wildcards_matches_like_a_glob(pattern, value, expected):
    assert glob_matcher(_parts(pattern))(value) is expected


def test_hunt_with_backtracking_bombs_finishes(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yml").write_text(_rule("*a*a*a*a*a*a*a*a?b", rid="1"))
    (rules / "b.yml").write_text(_rule("*?" * 30 + "x", field="ImagePath", rid="2"))
    (rules / "c.yml").write_text(_rule("?*a?" * 15 + "b", field="AccountName", rid="3"))
    events = [{"EventID": 7045, "Channel": "System", "Computer": "H", "TimeCreated": "2024-05-01T10:00:00Z",
               "ServiceName": "a" * n, "ImagePath": "?" * n, "AccountName": "a" * n}
              for n in (120, 5_000, 200_000)]
    events.append({**events[0], "ServiceName": "a" * 200 + "zb", "TimeCreated": "2024-05-01T10:00:01Z"})
    log = tmp_path / "log.ndjson"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    done = _cli("hunt", str(log), "--rules", str(rules), "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["title"] for a in alerts] == ["hostile wildcard 1"]


def test_rules_check_rejects_absurd_wildcard_counts(tmp_path):
    (tmp_path / "bomb.yml").write_text(_rule("*?" * 5000, rid="1"))
    (tmp_path / "over.yml").write_text(_rule("?" * (MAX_WILDCARDS + 1), rid="2"))
    (tmp_path / "limit.yml").write_text(_rule("a*" * (MAX_WILDCARDS // 2) + "b", rid="3"))
    done = _cli("rules", "check", str(tmp_path))
    assert done.returncode == 1
    assert f"value has 10000 wildcards (limit {MAX_WILDCARDS})" in done.stdout
    assert f"value has {MAX_WILDCARDS + 1} wildcards" in done.stdout
    assert "limit.yml" not in done.stdout
    rs = load_rules([str(tmp_path)])
    assert [r.title for r in rs.rules] == ["hostile wildcard 3"] and len(rs.rejected) == 2


def test_dns_answer_address_scan_is_linear():
    fields = {"EventID": 22, "Channel": "Microsoft-Windows-Sysmon/Operational", "QueryName": "x.corp",
              "QueryResults": ":" * 200_000 + "9" * 200_000 + ";::ffff:10.0.0.8;fe80::1;"}
    fact = extract_fact(fields)  # a backtracking pattern needed hours here
    assert fact == ("multi", ("ipname", "10.0.0.8", "x"), ("ipname", "fe80::1", "x"))


# -- item 15: circular correlations ---------------------------------------------------------------------

BASE = """title: base
name: base
id: 11111111-0000-4000-8000-000000000001
level: low
logsource: {product: windows, service: system}
detection:
  sel: {EventID: 7045}
  condition: sel
"""


def _corr(name: str, refs: list[str], cid: str | None = None) -> str:
    return f"""title: corr {name}
name: {name}
{f"id: {cid}" if cid else ""}
level: high
correlation:
  type: temporal
  rules: {json.dumps(refs)}
  group-by: [Computer]
  timespan: 5m
"""


def _write(path: Path, *docs: str) -> str:
    path.write_text("---\n".join(docs))
    return str(path)


def test_self_and_mutual_references_are_rejected_with_the_cycle_named(tmp_path, capsys):
    rules = _write(tmp_path / "r.yml", BASE, _corr("selfish", ["selfish"]),
                   _corr("ping", ["pong", "base"]), _corr("pong", ["ping", "base"]),
                   _corr("fine", ["base"]))
    rs = load_rules(rules)
    assert [c.name for c in rs.correlations] == ["fine"]
    reasons = sorted(reason for _, reason in rs.rejected)
    assert reasons == [
        "'corr ping': circular correlation (can never fire): ping -> pong -> ping",
        "'corr pong': circular correlation (can never fire): ping -> pong -> ping",
        "'corr selfish': circular correlation (can never fire): selfish -> selfish",
    ]
    assert main(["rules", "check", rules]) == 1
    out, err = capsys.readouterr()
    assert "selfish -> selfish" in out and "1 correlations, 3 rejected" in err


def test_cycle_by_id_across_files_and_its_dependents(tmp_path):
    ids = [f"22222222-0000-4000-8000-00000000000{i}" for i in range(3)]
    _write(tmp_path / "base.yml", BASE)
    _write(tmp_path / "x.yml", _corr("x", [ids[1], "base"], ids[0]))
    _write(tmp_path / "y.yml", _corr("y", [ids[2]], ids[1]))
    _write(tmp_path / "z.yml", _corr("z", [ids[0]], ids[2]))
    _write(tmp_path / "user.yml", _corr("user", ["x", "base"]))
    rs = load_rules([str(tmp_path)])
    assert rs.correlations == []
    by_title = {reason.split("'")[1]: reason for _, reason in rs.rejected}
    assert by_title["corr x"].endswith("circular correlation (can never fire): x -> y -> z -> x")
    assert by_title["corr user"].endswith("references the circular correlation x (can never fire)")


def test_long_chain_into_a_cycle_does_not_hit_the_recursion_limit(tmp_path):
    n = 300
    docs = [BASE, _corr("c0", ["c1"]), _corr("c1", ["c0"])]
    docs += [_corr(f"d{i}", [f"d{i + 1}" if i + 1 < n else "c0"]) for i in range(n)]
    rs = load_rules(_write(tmp_path / "chain.yml", *docs))
    assert rs.correlations == [] and len(rs.rejected) == n + 2


# -- item 10: the correlation reorder buffer and window state are bounded ---------------------------

def _cand(t_us: int, pos: int) -> Candidate:
    ev = Event({"EventID": 7045, "ServiceName": f"s{pos}"}, "f", pos, "json", t_us / 1e6)
    return Candidate(t_us, 0, pos, ev, ("k",))


def test_reorder_buffer_holds_at_most_its_cap_and_counts_the_overflow():
    buf = ReorderBuffer(lateness=300, max_held=100)
    t0 = 1_714_557_600_000_000
    released = []
    for i in range(1000):  # a million-event burst in miniature: all within the lateness
        released += buf.push(_cand(t0 + i * 100, i))
        assert len(buf) <= 100
    released += list(buf.drain())
    assert [c.position for c in released] == list(range(1000))  # still in time order
    assert buf.peak == 100 and buf.overflow == 900 and buf.late == 0


def test_reorder_overflow_makes_an_older_straggler_late_not_lost_silently():
    buf = ReorderBuffer(lateness=300, max_held=10)
    t0 = 1_714_557_600_000_000
    for i in range(50):
        buf.push(_cand(t0 + 1_000_000 + i, i))
    assert buf.push(_cand(t0, 99)) == [] and buf.late == 1  # older than what was forced out
    assert buf.late_examples[0]["record_id"] == 99


def test_hunt_summary_reports_the_reorder_cap(tmp_path):
    n = 200
    log = tmp_path / "System.jsonl"
    log.write_text("".join(json.dumps({
        "EventID": 7045, "Channel": "System", "Computer": "H", "ServiceName": f"svc{i}",
        "TimeCreated": f"2024-05-01T10:00:00.{i:06d}Z"}) + "\n" for i in range(n)))
    rules = _write(tmp_path / "r.yml", BASE, """title: twice
name: twice
level: high
correlation:
  type: event_count
  rules: [base]
  group-by: [ServiceName]
  timespan: 10m
  condition: {gte: 2}
""")
    res = run_hunt([str(log)], load_rules(rules))
    corr = res.summary["correlation"]
    assert corr["reorder_cap"] == MAX_HELD and corr["reorder_overflow"] == 0 and corr["reorder_peak"] == n
    assert corr["groups_peak"] == n and res.summary["alerts"] == 0


def test_correlation_state_is_capped_over_all_groups():
    col = SigmaCollection.from_yaml(BASE + """---
title: many
name: many
correlation:
  type: event_count
  rules: [base]
  group-by: [Computer]
  timespan: 1h
  condition: {gte: 1000}
""")
    specs = [spec_from_sigma(r) for r in col.rules if isinstance(r, SigmaCorrelationRule)]
    base_key = rule_key(next(r for r in col.rules if r.name == "base"))
    corr = Correlator(specs, lateness=0, max_state=100, max_entries_per_group=50)
    t0 = 1_714_557_600_000_000
    n = 0
    for host in range(40):  # 40 groups x 20 entries: 800 entries, each group under its own cap
        for _ in range(20):
            n += 1
            ev = Event({"EventID": 7045, "Computer": f"H{host}"}, "f", n, "json", (t0 + n) / 1e6)
            assert corr.push(Candidate(t0 + n, 0, n, ev, (base_key,))) == []
    s = corr.summary()
    assert s["state_peak"] == 101 and s["state_cap"] == 100
    assert s["groups_evicted"] == 35 and s["entries_truncated"] == 0
    assert corr.finish() == []


def test_ordered_correlation_over_a_flood_of_one_reference_finishes(tmp_path):
    """30,000 service installs on one host against "remote command, then install": before, every
    install re-sorted and walked its group's window (up to 10,000 entries): 103 s, now ~2 s."""
    rules = _write(tmp_path / "r.yml", BASE, """title: remote command
name: remote_cmd
level: low
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4688}
  condition: sel
---
title: command then install
name: cmd_then_install
level: high
correlation:
  type: temporal_ordered
  rules: [remote_cmd, base]
  group-by: [Computer]
  timespan: 1h
  condition: remote_cmd and base
""")
    log = tmp_path / "System.jsonl"
    log.write_text("".join(json.dumps({
        "EventID": 7045, "Channel": "System", "Computer": "H", "ServiceName": f"svc{i}",
        "TimeCreated": f"2024-05-01T10:{i // 1000 % 60:02d}:{i // 10 % 60:02d}.{i:06d}Z"}) + "\n"
        for i in range(30_000)))
    done = _cli("hunt", str(log), "--rules", rules, "--format", "jsonl", "--min-level", "high", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
