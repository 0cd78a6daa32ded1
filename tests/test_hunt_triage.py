"""``scmwatch hunt`` triage options (issue 14): rule selection, filters, results summary, pipes."""

from __future__ import annotations

import json
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
