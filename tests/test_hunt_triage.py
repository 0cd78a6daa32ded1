"""``scmwatch hunt`` triage options (issue 14): rule selection, filters, results summary, pipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scmwatch import rules as pack
from scmwatch.cli import main

FIX = Path(__file__).resolve().parent / "fixtures" / "hunt"
RULES = FIX / "rules"
LOGS = [str(FIX / "a.ndjson"), str(FIX / "b.ndjson")]


def hunt(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["hunt", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def rule_ids(out: str) -> set[str]:
    return {json.loads(line)["rule_id"] for line in out.splitlines()}


def test_rules_takes_several_paths_per_flag(capsys):
    _, all_three, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl")
    two = [str(RULES / "psexec_service.yml"), str(RULES / "unc_service.yml")]
    rc, out, _ = hunt(capsys, *LOGS, "--rules", *two, "--format", "jsonl")
    _, first, _ = hunt(capsys, *LOGS, "--rules", two[0], "--format", "jsonl")
    _, repeated, _ = hunt(capsys, *LOGS, "--rules", two[0], "--rules", two[1], "--format", "jsonl")
    assert rc == 0 and out == repeated
    assert len(rule_ids(out)) == 2 and rule_ids(first) < rule_ids(out) < rule_ids(all_three)


def test_rules_builtin_names_the_pack(capsys, tmp_path):
    summ = tmp_path / "s.json"
    both = ["--rules", "builtin", "--rules", str(RULES), "--summary", str(summ), "--format", "jsonl"]
    rc, out, _ = hunt(capsys, *LOGS, *both)
    loaded = json.loads(summ.read_text())["rules_loaded"]
    _, builtin_out, _ = hunt(capsys, *LOGS, "--summary", str(summ), "--format", "jsonl")
    builtin_only = json.loads(summ.read_text())["rules_loaded"]
    _, fixture_out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl")
    assert rc == 0 and loaded == builtin_only + 3 and len(pack.pack_paths()) > 0
    assert rule_ids(out) == rule_ids(builtin_out) | rule_ids(fixture_out) and rule_ids(builtin_out)


def test_abbreviated_option_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["hunt", *LOGS, "--rule", str(RULES)])
    assert exc.value.code == 2
    assert "--rule" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nested subcommands refuse prefixes too
        main(["rules", "export", "-t", "sqlite", "--rule", str(RULES)])


def test_rules_directory_without_rules_is_an_error(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not a rule\n")
    rc, out, err = hunt(capsys, *LOGS, "--rules", str(RULES), str(tmp_path))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and str(tmp_path) in err and "without rule files" in err


DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo"


def alerts(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def demo_alerts(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("demo") / "all.jsonl"
    assert main(["hunt", str(DEMO), "--format", "jsonl", "-o", str(out)]) == 0
    return alerts(out.read_text())


def test_host_filter_glob_short_name_and_case(capsys):
    _, out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--include-host", "ws2")
    assert {a["host"] for a in alerts(out)} == {"WS2"} and len(alerts(out)) == 2
    _, out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--exclude-host", "W?2")
    assert {a["host"] for a in alerts(out)} == {"WS1"}
    _, out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--include-host", "ws")
    assert out == ""  # near miss: a glob matches the whole name, not a prefix


def test_host_filter_keeps_correlations_whole(capsys, demo_alerts):
    rc, out, err = hunt(capsys, str(DEMO), "--format", "jsonl", "--include-host", "FS01")
    kept = alerts(out)
    want = [a for a in demo_alerts if a["host"] == "FS01.corp.example.com"]
    assert rc == 0 and kept == want  # by short name; correlations identical to the unfiltered run
    assert any("correlation" in a for a in kept)
    assert f"{len(demo_alerts) - len(want):,} filtered out" in err
    _, out, _ = hunt(capsys, str(DEMO), "--format", "jsonl", "--include-host", "fs01.corp.example.com")
    assert alerts(out) == want


def test_time_filter(capsys, tmp_path):
    summ = tmp_path / "s.json"
    rc, out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--summary", str(summ),
                      "--from", "2024-05-01T10:00:02Z", "--to", "2024-05-01T10:00:03+00:00")
    times = [a["timestamp"][:19] for a in alerts(out)]
    assert rc == 0 and times == ["2024-05-01T10:00:02", "2024-05-01T10:00:03"]
    data = json.loads(summ.read_text())
    assert data["alerts"] == 2 and data["alerts_filtered"] == 2
    _, out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--to", "2024-05-01")
    assert len(alerts(out)) == 4  # a date as --to: the whole day
    _, out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--to", "2024-04-30")
    assert out == ""
    _, out, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--from", "2d")
    assert out == ""  # the fixture is from 2024
    rc, _, err = hunt(capsys, *LOGS, "--from", "yesterday")
    assert rc == 2 and err.count("\n") == 1 and "not a time" in err
    rc, _, err = hunt(capsys, *LOGS, "--from", "2024-05-02", "--to", "2024-05-01")
    assert rc == 2 and "after" in err


def test_tag_rule_and_level_filters(capsys):
    base = [*LOGS, "--rules", str(RULES), "--format", "jsonl"]
    _, out, _ = hunt(capsys, *base, "--include-tag", "T1569.002")
    assert [a["title"].startswith("PsExec service") for a in alerts(out)] == [True, True]
    _, out, _ = hunt(capsys, *base, "--exclude-tag", "attack.execution")
    assert len(alerts(out)) == 2 and all(not a["tags"] for a in alerts(out))
    _, out, _ = hunt(capsys, *base, "--include-tag", "t1569")
    assert out == ""  # near miss: t1569 is not t1569.002
    _, out, _ = hunt(capsys, *base, "--include-rule", "*network sha*")
    assert [a["level"] for a in alerts(out)] == ["medium"]
    _, out, _ = hunt(capsys, *base, "--exclude-rule", "0a3c1d52-7b61-4c3e-9d0e-5a1f0c2b7e01")
    assert len(alerts(out)) == 2
    _, out, _ = hunt(capsys, *base, "--level", "LOW", "--level", "medium")
    assert sorted(a["level"] for a in alerts(out)) == ["low", "medium"]
    _, out, _ = hunt(capsys, *base, "--level", "critical")
    assert out == ""


def test_hunt_into_head_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "scmwatch", "hunt", str(DEMO), "--format", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does: the demo's alerts are far more than a pipe buffer
    _, err = proc.communicate(timeout=120)
    assert json.loads(first)["rule_id"] and proc.returncode == 0
    assert b"Broken pipe" not in err and b"Traceback" not in err
