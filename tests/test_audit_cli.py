"""`scmwatch audit` end to end: formats, fleet view, exit codes, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from paths import FIXTURES
from scmwatch.cli import main

FLEET = FIXTURES / "audit" / "fleet"
BAD = FIXTURES / "audit" / "bad"


def run(capsys, *argv):
    code = main(["audit", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_over_the_fleet(capsys):
    code, out, err = run(capsys, FLEET)
    assert code == 0
    for host in ("WS01", "WS02", "WS03", "WS04", "WS06"):
        assert f"== {host}" in out
    assert "== fleet: 5 host(s)" in out
    assert re.search(r"WeakSvc\s+AUD-M1026-001 3/3  EVERYWHERE  WS01, WS02, WS03", out)
    assert re.search(r"absent\s+1: WS06", out) and re.search(r"not collected\s+2: WS02, WS03", out)
    # Item-level problems are reported, named by file, and the hosts are still audited.
    assert "WS01.scmwatch.json: service BadSddlSvc: invalid SDDL" in err
    assert "5 host(s) audited" in err


def test_jsonl_records(capsys):
    code, out, _ = run(capsys, FLEET, "--format", "jsonl")
    assert code == 0
    recs = [json.loads(line) for line in out.splitlines()]
    types = [r["type"] for r in recs]
    assert types.count("host") == 5 and types[-1] == "fleet" and types.count("fleet") == 1
    findings = [r for r in recs if r["type"] == "finding"]
    hosts = {r["host"]: r for r in recs if r["type"] == "host"}
    assert len(findings) == sum(h["findings"] for h in hosts.values())
    for f in findings:
        assert {"check", "title", "severity", "mitigation", "host", "target", "evidence", "fix"} <= set(f)
        assert f["mitigation"] in ("M1026", "M1040", "M1022") and f["check"].startswith(
            "AUD-" + f["mitigation"]
        )
    assert hosts["WS04"]["findings"] == 0 and hosts["WS04"]["asr_psexec_wmi"] == "block"
    assert hosts["WS01"]["input_errors"] == 3


def test_html_is_one_self_contained_file(capsys, tmp_path):
    out_file = tmp_path / "report.html"
    code, out, _ = run(capsys, FLEET, "--format", "html", "-o", out_file)
    assert code == 0 and out == ""
    html = out_file.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<style>" in html and not re.search(r"<(script|link|img)\b|src=|https?://", html)
    assert "id='h-WS01'" in html and "AUD-M1022-003" in html and "<b>everywhere</b>" in html


def test_html_escapes_input_text(capsys, tmp_path):
    doc = json.loads((FLEET / "WS06.scmwatch.json").read_text())
    doc["services"][0]["name"] = "<script>alert(1)</script>"
    doc["services"][0]["sddl"] = "D:(A;;GA;;;WD)"
    (tmp_path / "h.json").write_text(json.dumps(doc))
    code, out, _ = run(capsys, tmp_path / "h.json", "--format", "html")
    assert code == 0 and "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_bad_inputs_are_counted_and_others_still_audited(capsys, tmp_path):
    code, out, err = run(capsys, BAD, FLEET / "WS04.scmwatch.json", tmp_path / "absent.reg")
    assert code == 0
    lines = err.strip().splitlines()
    assert any("WS07.reg: line" in line and "truncated" in line for line in lines)
    assert any("WS08.scmwatch.json: unsupported snapshot schema_version 99" in line for line in lines)
    assert any("garbage.txt: unrecognised input" in line for line in lines)
    assert any("WS05.sc.txt: service Broken: invalid SDDL: unknown SID 'NOPE'" in line for line in lines)
    assert any("absent.reg: no such file or directory" in line for line in lines)
    assert all(line.startswith("scmwatch: ") for line in lines) and "Traceback" not in err
    assert "3 host(s) audited; 5 input problem(s), 3 file(s) unreadable" in err
    assert "== WS04" in out and "== WS05" in out and "== WS07" in out


def test_nothing_readable_exits_1(capsys):
    code, out, err = run(capsys, BAD / "WS08.scmwatch.json", BAD / "garbage.txt")
    assert code == 1 and out == ""
    assert "no input could be read (2 file(s) tried)" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(FLEET), "--format", "xml"])
    assert exc.value.code == 2


def test_list_checks(capsys):
    code, out, _ = run(capsys, "--list-checks", "x")
    assert code == 0 and len(out.splitlines()) == 9
    assert {line.split()[1] for line in out.splitlines()} == {"M1026", "M1040", "M1022"}


def test_console_script_prints_the_collector():
    r = subprocess.run(
        [sys.executable, "-m", "scmwatch", "audit", "collector"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.startswith("<#") and "Get-MpPreference" in r.stdout
