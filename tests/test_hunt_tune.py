"""``hunt --tune FILE`` and ``rules check --tune`` (issue 14): drop, level overrides, exclusions
inside the engine (before correlation); Sigma filter documents still work and are counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scmwatch.cli import main
from scmwatch.sigma import Engine, load_rules
from scmwatch.sigma.tune import TuneError, apply_tune, parse_tune

FIX = Path(__file__).resolve().parent / "fixtures" / "hunt"
RULES = FIX / "rules"
LOGS = [str(FIX / "a.ndjson"), str(FIX / "b.ndjson")]
PSEXEC_ID = "0a3c1d52-7b61-4c3e-9d0e-5a1f0c2b7e01"

# Fires when PSEXESVC is installed on two hosts within an hour (a.ndjson: WS1, b.ndjson: WS2).
CORRELATION = """\
title: PSEXESVC installed on two hosts (test correlation)
id: 5d1c3a9e-2f4b-4e8a-9c6d-7b0e1f2a3c4d
status: test
level: critical
correlation:
  type: value_count
  rules: [test_psexec_service]
  group-by: [ServiceName]
  timespan: 1h
  condition: {field: Computer, gte: 2}
"""

FILTER = """\
title: PsExec on WS2 is the admins' (test filter)
id: 6e2d4b0f-3a5c-4f9b-8d7e-8c1f2a3b4d5e
logsource: {product: windows, service: system}
filter:
  rules: [test_psexec_service]
  selection:
    Computer: WS2
  condition: not selection
"""


def hunt(capsys, *args: str) -> tuple[int, list[dict], str]:
    rc = main(["hunt", *args])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(RULES, d)
    (d / "corr.yml").write_text(CORRELATION)
    return d


def tune_file(tmp_path: Path, text: str) -> str:
    p = tmp_path / "tune.yml"
    p.write_text(text)
    return str(p)


def titles(alerts: list[dict]) -> list[str]:
    return [a["title"] for a in alerts]


def test_exclusion_glob_case_insensitive_with_near_miss(capsys, tmp_path):
    base = [*LOGS, "--rules", str(RULES), "--format", "jsonl"]
    _, every, _ = hunt(capsys, *base)
    psexec = [a for a in every if a["rule_id"] == PSEXEC_ID]
    assert len(psexec) == 2
    tune = tune_file(tmp_path, "exclude:\n  'psexec service*':\n    ServiceName: [other, psexe*]\n")
    rc, out, err = hunt(capsys, *base, "--tune", tune, "--summary", str(tmp_path / "s.json"))
    assert rc == 0 and out == [a for a in every if a["rule_id"] != PSEXEC_ID]
    assert "2 matches tuned out" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["tune"]["matches_tuned_out"] == 2 and summary["tune"]["rules_with_exclusions"] == 1
    tune = tune_file(tmp_path, "exclude:\n  'psexec service*':\n    ServiceName: psexe\n")
    _, out, _ = hunt(capsys, *base, "--tune", tune)
    assert out == every  # near miss: a glob matches the whole value


def test_exclusion_fields_and_alternatives(capsys, tmp_path):
    base = [*LOGS, "--rules", str(RULES), "--format", "jsonl"]
    # one map: every field must match (WS2's PSEXESVC only); a list of maps: any of them
    tune = tune_file(tmp_path, f"exclude:\n  {PSEXEC_ID}:\n    ServiceName: PSEXESVC\n    Computer: ws2\n")
    _, out, _ = hunt(capsys, *base, "--tune", tune)
    assert [a["host"] for a in out if a["rule_id"] == PSEXEC_ID] == ["WS1"]
    tune = tune_file(tmp_path, f"exclude:\n  {PSEXEC_ID}:\n    computer: ws2\n")
    _, out, _ = hunt(capsys, *base, "--tune", tune)
    assert len([a for a in out if a["rule_id"] == PSEXEC_ID]) == 2  # near miss: names are case-sensitive
    tune = tune_file(tmp_path, f"exclude:\n  {PSEXEC_ID}:\n    - Computer: ws1\n    - Computer: ws2\n")
    _, out, _ = hunt(capsys, *base, "--tune", tune)
    assert [a for a in out if a["rule_id"] == PSEXEC_ID] == []
    tune = tune_file(tmp_path, "exclude:\n  '*':\n    EventID: 7045\n")  # numbers: by their text
    _, out, _ = hunt(capsys, *base, "--tune", tune)
    assert titles(out) == ["PSEXESVC process started (test rule)"]


def test_drop_and_level_override(capsys, tmp_path):
    base = [*LOGS, "--rules", str(RULES), "--format", "jsonl"]
    _, every, _ = hunt(capsys, *base)
    tune = tune_file(tmp_path, f"drop: ['SERVICE IMAGE ON A NETWORK*']\nlevels:\n  {PSEXEC_ID}: Low\n")
    rc, out, _ = hunt(capsys, *base, "--tune", tune, "--summary", str(tmp_path / "s.json"))
    assert rc == 0 and "Service image on a network share (test rule)" not in titles(out)
    assert len(out) == len(every) - 1
    assert {a["level"] for a in out if a["rule_id"] == PSEXEC_ID} == {"low"}
    assert json.loads((tmp_path / "s.json").read_text())["rules_loaded"] == 2
    _, out, _ = hunt(capsys, *base, "--tune", tune, "--min-level", "medium")
    assert out == []  # the override is what --min-level sees


def test_exclusion_applies_before_correlation(capsys, tmp_path, rules_dir):
    base = [*LOGS, "--rules", str(rules_dir), "--format", "jsonl"]
    _, every, _ = hunt(capsys, *base)
    corr = [a for a in every if "correlation" in a]
    assert [a["title"] for a in corr] == ["PSEXESVC installed on two hosts (test correlation)"]
    tune = tune_file(tmp_path, f"exclude:\n  {PSEXEC_ID}:\n    Computer: WS2\n")
    _, out, _ = hunt(capsys, *base, "--tune", tune)
    assert not any("correlation" in a for a in out)  # WS2's install no longer counts
    _, out, _ = hunt(capsys, *base, "--exclude-host", "WS2")
    assert [a for a in out if "correlation" in a] == corr  # a filter runs after correlation


def test_dropping_a_building_block_warns_and_correlation_level(capsys, tmp_path, rules_dir):
    base = [*LOGS, "--rules", str(rules_dir), "--format", "jsonl"]
    tune = tune_file(tmp_path, "levels:\n  'PSEXESVC installed on two*': medium\n")
    _, out, _ = hunt(capsys, *base, "--tune", tune)
    assert [a["level"] for a in out if "correlation" in a] == ["medium"]
    tune = tune_file(tmp_path, f"drop: [{PSEXEC_ID}]\n")
    rc, out, err = hunt(capsys, *base, "--tune", tune)
    assert rc == 0 and not any("correlation" in a for a in out)
    assert "leaves correlation 'PSEXESVC installed on two hosts (test correlation)'" in err


@pytest.mark.parametrize(("text", "message"), [
    ("drop: [x\n", "not valid YAML (line 2)"),
    ("ignore: [x]\n", "unknown key 'ignore'"),
    ("- a\n", "expected a mapping"),
    (f"levels: {{{PSEXEC_ID}: severe}}\n", "'severe' is not a level"),
    ("drop: [0a3c1d52-0000-0000-0000-000000000000]\n", "selects no loaded rule"),
    ("exclude: {'*psexec*': {ServiceName: [{a: 1}]}}\n", "exclude: '*psexec*': expected a mapping"),
    ("exclude: {'PSEXESVC installed on two*': {Computer: x}}\n", "a correlation has no event"),
])
def test_bad_tuning_files_are_one_line_errors(capsys, tmp_path, rules_dir, text, message):
    tune = tune_file(tmp_path, text)
    rc, out, err = hunt(capsys, *LOGS, "--rules", str(rules_dir), "--format", "jsonl", "--tune", tune)
    assert rc == 2 and out == [] and err.count("\n") == 1 and message in err and tune in err
    rc = main(["rules", "check", str(rules_dir), "--tune", tune])
    out, err = capsys.readouterr()
    assert rc == 1 and message in out and out.count("\n") == 1


def test_rules_check_tune_ok_and_counts_filters(capsys, tmp_path, rules_dir):
    (rules_dir / "filter.yml").write_text(FILTER)
    tune = tune_file(tmp_path, f"drop: [{PSEXEC_ID}]\nexclude: {{'*network share*': {{Computer: x}}}}\n")
    rc = main(["rules", "check", str(rules_dir), "--tune", tune])
    out, err = capsys.readouterr()
    assert rc == 0 and "3 rules ok, 1 correlations, 0 rejected, 0 without an event source, 1 filters" in err
    assert "drops 1 rules and 0 correlations" in err and "excludes events from 1 rules" in err
    assert "warning:" in out  # the correlation loses its input
    (rules_dir / "corr.yml").unlink()  # (its generate: false hides the rule's own alerts)
    _, alerts, _ = hunt(capsys, *LOGS, "--rules", str(rules_dir), "--format", "jsonl")
    assert [a["host"] for a in alerts if a["rule_id"] == PSEXEC_ID] == ["WS1"]  # the filter works


def test_exclusion_inside_the_engine():
    rs = load_rules([str(RULES)])
    apply_tune(rs, parse_tune("exclude:\n  '*':\n    ImagePath: ['*\\PSEXESVC.exe']\n"))
    engine = Engine(rs)
    f = {"EventID": 7045, "Channel": "System", "ServiceName": "PSEXESVC",
         "ImagePath": "%SystemRoot%\\PSEXESVC.exe"}
    assert engine.match_fields(f) == [] and engine.excluded == 1
    f["ImagePath"] = "%SystemRoot%\\PSEXESVC.exe.bak"  # near miss
    assert [r.id for r in engine.match_fields(f)] == [PSEXEC_ID]
    with pytest.raises(TuneError):
        apply_tune(rs, parse_tune("levels: {nothing-like-it: low}\n"))


def test_rules_check_tune_against_the_builtin_pack(capsys, tmp_path):
    tune = tune_file(tmp_path, "drop: ['Remote service started over MS-SCMR*']\n")
    rc = main(["rules", "check", "builtin", "--tune", tune])
    err = capsys.readouterr().err
    assert rc == 0 and "drops 1 rules and 0 correlations" in err
    tune = tune_file(tmp_path, "drop: ['Remote service started over MS-SCMR']\n")  # near miss: no glob
    assert main(["rules", "check", "builtin", "--tune", tune]) == 1
    assert "selects no loaded rule or correlation" in capsys.readouterr().out


def test_cluster_workers_apply_the_tuning_file(tmp_path):
    from scmwatch import cluster
    from scmwatch.events import ReadStats, discover

    inputs = list(discover([LOGS[1]], ReadStats()))  # WS2: a UNC service and PSEXESVC
    plain = cluster.hunt_batch(cluster.rule_payload([str(RULES)]), cluster.Batch([(0, inputs[0])]))
    tune = tune_file(tmp_path, f"drop: [{PSEXEC_ID}]\nexclude: {{'*network share*': {{Computer: WS2}}}}\n")
    tuned = cluster.hunt_batch(cluster.rule_payload([str(RULES)], tune=tune), cluster.Batch([(0, inputs[0])]))
    assert plain.hits == 2 and plain.tuned_out == 0
    assert tuned.hits == 0 and tuned.tuned_out == 1  # PSEXESVC's rule dropped, the UNC one excluded
