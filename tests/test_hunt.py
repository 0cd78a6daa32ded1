"""``scmwatch hunt`` / ``scmwatch rules check`` end to end through the CLI entry point."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from scmwatch import rules as pack
from scmwatch.cli import main
from scmwatch.hunt import run_hunt
from scmwatch.sigma import load_rules

FIX = Path(__file__).resolve().parent / "fixtures" / "hunt"
RULES = str(FIX / "rules")
LOGS = [str(FIX / "a.ndjson"), str(FIX / "b.ndjson")]
CONTRACT_KEYS = {
    "rule_id",
    "title",
    "level",
    "description",
    "tags",
    "timestamp",
    "host",
    "source",
    "record_id",
    "event",
}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["hunt", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_jsonl_contract_and_order(capsys):
    rc, out, err = run_cli(capsys, *LOGS, "--rules", RULES, "--format", "jsonl")
    assert rc == 0, err
    alerts = [json.loads(line) for line in out.splitlines()]
    assert [(a["host"], a["title"].split(" (")[0]) for a in alerts] == [
        ("WS2", "Service image on a network share"),
        ("WS2", "PsExec service installed"),
        ("WS1", "PsExec service installed"),
        ("WS1", "PSEXESVC process started"),
    ]
    first = alerts[1]
    assert CONTRACT_KEYS <= set(first)
    assert first["rule_id"] == "0a3c1d52-7b61-4c3e-9d0e-5a1f0c2b7e01"
    assert first["tags"] == ["attack.execution", "attack.t1569.002"]
    assert first["timestamp"].startswith("2024-05-01T10:00:02")
    assert first["source"].endswith("b.ndjson") and first["record_id"] == 2
    assert first["event"]["ServiceName"] == "PSEXESVC"
    assert first["maxpatrol_rule"] == "mp_test_1"  # custom attributes travel with the alert
    assert "4 alerts" in err


def test_jobs_two_equals_jobs_one(capsys):
    logs = LOGS * 3  # more files than workers
    _, one, _ = run_cli(capsys, *logs, "--rules", RULES, "--format", "jsonl", "--jobs", "1")
    _, two, _ = run_cli(capsys, *logs, "--rules", RULES, "--format", "jsonl", "--jobs", "2")
    assert one == two and one.count("\n") == 12


def test_min_level(capsys):
    _, out, _ = run_cli(capsys, *LOGS, "--rules", RULES, "--format", "jsonl", "--min-level", "medium")
    levels = sorted(json.loads(x)["level"] for x in out.splitlines())
    assert levels == ["high", "high", "medium"]


def test_summary_keys(capsys, tmp_path):
    summ = tmp_path / "s.json"
    rc, _, _ = run_cli(capsys, *LOGS, "--rules", RULES, "--format", "jsonl", "--summary", str(summ))
    data = json.loads(summ.read_text())
    assert rc == 0
    for key in (
        "files",
        "events",
        "alerts",
        "seconds",
        "errors",
        "rules_loaded",
        "rules_rejected",
        "events_per_second",
    ):
        assert key in data
    assert (data["files"], data["events"], data["alerts"], data["rules_loaded"]) == (2, 5, 4, 3)
    assert data["errors"] == {} and data["rules_rejected"] == 0


def test_csv_and_table(capsys, tmp_path):
    out_file = tmp_path / "a.csv"
    rc, _, _ = run_cli(capsys, *LOGS, "--rules", RULES, "--format", "csv", "--output", str(out_file))
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert rc == 0 and len(rows) == 4
    psexec = [r for r in rows if r["level"] == "high"][0]
    assert "ServiceName=PSEXESVC" in psexec["details"] and psexec["host"] == "WS2"
    rc, out, _ = run_cli(capsys, *LOGS, "--rules", RULES, "--format", "table")
    assert rc == 0
    assert "PsExec service installed" in out and "WS2" in out and "ImagePath" in out


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_input_one_line_and_run_continues(capsys, jobs):
    rc, out, err = run_cli(
        capsys,
        str(FIX / "broken.json"),
        LOGS[0],
        str(FIX / "missing.evtx"),
        "--rules",
        RULES,
        "--format",
        "jsonl",
        "--jobs",
        jobs,
    )
    assert rc == 1  # a named input could not be read at all
    assert len(out.splitlines()) == 2  # a.ndjson still hunted
    problems = [line for line in err.splitlines() if line.startswith("scmwatch: ") and "files," not in line]
    assert any("broken.json" in line for line in problems)
    assert any("missing.evtx" in line for line in problems)
    assert "Traceback" not in err


def test_bad_rule_reported_rest_used(capsys, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    for p in Path(RULES).iterdir():
        (rules / p.name).write_text(p.read_text())
    (rules / "bad.yml").write_text(
        "title: bad\nlogsource: {product: windows}\ndetection:\n  sel:\n"
        "    Image|nosuchmod: x\n  condition: sel\n"
    )
    rc, out, err = run_cli(capsys, *LOGS, "--rules", str(rules), "--format", "jsonl")
    assert rc == 0 and len(out.splitlines()) == 4
    (line,) = [x for x in err.splitlines() if "rule rejected" in x]
    assert "bad.yml" in line and "nosuchmod" in line


def test_no_rules_loadable_exit_1(capsys, tmp_path):
    (tmp_path / "bad.yml").write_text("title: [unclosed\n")
    rc, _, err = run_cli(capsys, *LOGS, "--rules", str(tmp_path))
    assert rc == 1 and "no rule could be loaded" in err


def test_empty_builtin_pack_needs_rules(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(pack, "PACK_DIR", tmp_path)
    rc, _, err = run_cli(capsys, *LOGS)
    assert rc == 2 and "--rules" in err


def test_rules_check(capsys, tmp_path):
    assert main(["rules", "check", RULES]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "3 rules ok" in err
    (tmp_path / "dup.yml").write_text(
        (FIX / "rules" / "unc_service.yml")
        .read_text()
        .replace("    EventID: 7045\n", "    EventID: 7045\n    EventID: 7046\n")
    )
    assert main(["rules", "check", RULES, str(tmp_path)]) == 1
    out, _ = capsys.readouterr()
    assert "dup.yml" in out and "Duplicate key" in out


def test_correlation_generate_false_suppresses_base_rule(tmp_path):
    """Hook to the correlation stage: base rule alerts are suppressed, the correlation fires."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "base.yml").write_text((FIX / "rules" / "psexec_service.yml").read_text())
    (rules / "corr.yml").write_text(
        "title: PsExec on two hosts\nid: 0a3c1d52-7b61-4c3e-9d0e-5a1f0c2b7e09\nlevel: critical\n"
        "correlation:\n  type: value_count\n  rules: [test_psexec_service]\n  group-by: [ServiceName]\n"
        "  timespan: 10m\n  condition: {field: Computer, gte: 2}\n"
    )
    rs = load_rules([rules])
    assert len(rs.correlations) == 1
    res = run_hunt(LOGS, rs)
    titles = [a.title for a in res.alerts]
    assert titles == ["PsExec on two hosts"], titles
    assert res.alerts[0].correlation is not None


def test_unhashable_channel_or_event_id_is_no_traceback(tmp_path, capsys):
    """An export with a list or object where Channel/EventID belong is hunted, not a crash."""
    p = tmp_path / "odd.jsonl"
    p.write_text('{"EventID":[1,2],"Channel":"System","Computer":"h"}\n'
                 '{"EventID":7045,"Channel":{"a":1},"Computer":"h"}\n'
                 '{"EventID":7045,"Channel":"System","Computer":"h","ServiceName":"x","ImagePath":"c:\\\\x.exe"}\n')
    rc, out, err = run_cli(capsys, str(p), "--format", "jsonl")
    assert rc == 0 and "Traceback" not in err
    assert "3 events" in err


def test_young_gc_threshold_raised_for_the_hunt_and_restored():
    """While a hunt runs the cyclic GC's young generation waits for HUNT_GC_THRESHOLD net
    allocations (its hits and lineage entries are not walked again and again); afterwards, and
    after a failed run, the process has its own thresholds back."""
    import gc

    from scmwatch.hunt import HUNT_GC_THRESHOLD

    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []
    result = run_hunt(LOGS, load_rules([RULES]), sink=lambda a: seen.append(gc.get_threshold()))
    assert result.summary["alerts"] == 4
    assert seen and all(t == (HUNT_GC_THRESHOLD, *before[1:]) for t in seen)
    assert gc.get_threshold() == before

    def boom(alert):
        raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError):
        run_hunt(LOGS, load_rules([RULES]), sink=boom)
    assert gc.get_threshold() == before


def test_hunt_leaves_no_young_generation_to_collect(tmp_path):
    """What a hunt leaves alive (here its result's ~3,000 alerts) is not left in the young
    generation for the caller's next allocation to collect: no collection starts while the hunt
    ends, and the young count is back to nothing afterwards."""
    import gc

    line = (FIX / "a.ndjson").read_text().splitlines()[0]
    big = tmp_path / "many.ndjson"
    big.write_text((line + "\n") * 3_000)
    rules = load_rules([RULES])
    gc.collect()
    young = gc.get_threshold()[0]
    starts: list[tuple[int, int]] = []  # (young threshold, young count) of each collection

    def started(phase: str, info: dict) -> None:
        if phase == "start":
            starts.append((gc.get_threshold()[0], gc.get_count()[0]))

    gc.callbacks.append(started)
    try:
        result = run_hunt([str(big)], rules)
        after = gc.get_count()[0]
    finally:
        gc.callbacks.remove(started)
    assert len(result.alerts) == 3_000
    assert not any(t == young and c > 2 * young for t, c in starts)  # none walked the survivors
    assert after < 100
