"""``hunt`` rule status filters, rule/log mix-ups, the ``--jobs`` default, ``events --where`` hints
(issue 14)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scmwatch.cli import main
from scmwatch.cli.hunt import usable_cores

FIX = Path(__file__).resolve().parent / "fixtures" / "hunt"
RULES = FIX / "rules"
LOGS = [str(FIX / "a.ndjson"), str(FIX / "b.ndjson")]
PSEXEC_RULE = RULES / "psexec_service.yml"


def hunt(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["hunt", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def titles(out: str) -> list[str]:
    return [json.loads(line)["title"] for line in out.splitlines()]


def test_status_filters_case_insensitive(capsys, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    for p in RULES.glob("*.yml"):
        text = p.read_text()
        if p.name == "unc_service.yml":
            text = text.replace("status: test", "status: stable")
        (rules / p.name).write_text(text)
    base = [*LOGS, "--rules", str(rules), "--format", "jsonl"]
    _, every, _ = hunt(capsys, *base)
    rc, out, _ = hunt(capsys, *base, "--include-status", "STABLE")
    assert rc == 0 and titles(out) == ["Service image on a network share (test rule)"]
    _, out, err = hunt(capsys, *base, "--exclude-status", "Stable")
    assert len(titles(out)) == len(titles(every)) - 1 and "1 filtered out" in err
    _, out, _ = hunt(capsys, *base, "--include-status", "experimental")
    assert out == ""  # near miss: no rule here is experimental


def test_status_filter_sees_correlation_status(capsys):
    demo = Path(__file__).resolve().parent.parent / "examples" / "demo"
    _, out, _ = hunt(capsys, str(demo), "--format", "jsonl", "--include-status", "experimental")
    kept = [json.loads(line) for line in out.splitlines()]
    assert any("correlation" in a for a in kept)  # the pack's correlations are experimental too
    _, out, _ = hunt(capsys, str(demo), "--format", "jsonl", "--exclude-status", "experimental")
    assert out == ""


def test_unknown_status_is_a_usage_error(capsys):
    try:
        main(["hunt", *LOGS, "--include-status", "beta"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid choice: 'beta'" in capsys.readouterr().err


def test_rule_file_named_as_log_is_an_error(capsys):
    rc, out, err = hunt(capsys, *LOGS, str(PSEXEC_RULE))
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "Sigma rule file given as a log PATH" in err and "--rules" in err


def test_log_file_given_to_rules_is_an_error(capsys):
    rc, out, err = hunt(capsys, LOGS[0], "--rules", LOGS[1])
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "not a Sigma rule file" in err and LOGS[1] in err


def test_jobs_defaults_to_usable_cores(capsys, tmp_path):
    assert usable_cores() == len(os.sched_getaffinity(0))
    summ = tmp_path / "s.json"
    rc, _, _ = hunt(capsys, *LOGS, "--rules", str(RULES), "--format", "jsonl", "--summary", str(summ))
    assert rc == 0 and json.loads(summ.read_text())["jobs"] == min(usable_cores(), len(LOGS))


def test_events_where_unknown_field_warns_with_a_suggestion(capsys):
    rc = main(["events", *LOGS, "--where", "EventId=7045", "--where", "Servicename~psexe"])
    out, err = capsys.readouterr()
    assert rc == 0 and out == ""
    assert "--where EventId: no event read has this field (did you mean EventID?)" in err
    assert "(did you mean ServiceName?)" in err
    rc = main(["events", *LOGS, "--where", "EventID=7045", "--where", "ServiceName~psexe"])
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "warning" not in err  # near miss: the right names
