"""Hostile values on their way out (issue 11, items 7-9): terminals, CSV, JSONL, output files.

Every input is built here: events whose values carry ANSI/OSC sequences, formulas, raw CR and
lone surrogates; zip members and files whose names carry newlines and ESC; output paths that
are, or resolve to, an input.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import pytest

from paths import FIXTURES
from scmwatch.cli import main
from scmwatch.escape import csv_cell, terminal

RULE = """title: Service installed (test)
id: 5f1e2a3b-0000-4000-8000-000000000001
status: test
level: high
logsource: {product: windows, service: system}
detection:
  sel:
    EventID: 7045
  condition: sel
fields: [ServiceName, ImagePath]
"""
CLEAR_SCREEN = "\x1b[2J\x1b[H"
OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # clipboard write
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
TITLE = "\x1b]0;owned\x07"
CSI_C1 = "\x9b31m"  # 8-bit CSI


def _event(**fields) -> dict:
    base = {"EventID": 7045, "Channel": "System", "Computer": "WS1", "TimeCreated": "2024-05-01T10:00:00Z",
            "ServiceName": "svc", "ImagePath": "C:\\x.exe"}
    base.update(fields)
    return base


def _write(tmp: Path, events: list[dict]) -> tuple[str, str]:
    rules = tmp / "rule.yml"
    rules.write_text(RULE)
    log = tmp / "log.ndjson"
    with log.open("w", encoding="utf-8", errors="surrogatepass") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
    return str(log), str(rules)


def _hunt(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["hunt", *args])
    out, err = capsys.readouterr()
    return rc, out, err


# -- the shared escaping helper -------------------------------------------------------------------

def test_terminal_escapes_every_control_character_and_keeps_the_rest():
    assert terminal("C:\\Windows\\PSEXESVC.exe ünïcode 名前") == "C:\\Windows\\PSEXESVC.exe ünïcode 名前"
    assert terminal(OSC52) == "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"
    assert terminal("a\r\nb\tc") == "a\\r\\nb\\tc"
    assert terminal(CSI_C1 + "\x7f") == "\\x9b31m\\x7f"
    assert terminal("evil\u202eexe.txt") == "evil\\u202eexe.txt"  # bidi override
    assert terminal("x\u2028y\ud800") == "x\\u2028y\\ud800"  # line separator, lone surrogate
    assert terminal(42) == "42"


def test_csv_cell_neutralises_formulas_per_owasp():
    for payload in ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(payload) == "'" + payload
    assert csv_cell("C:\\x.exe") == "C:\\x.exe"
    assert csv_cell(-5) == -5  # a number is not a formula
    assert csv_cell("a\ud800b") == "a\ufffdb"


# -- item 8: terminal escape injection ---------------------------------------------------------------

def test_hunt_table_shows_control_characters_escaped(capsys, tmp_path):
    log, rules = _write(tmp_path, [
        _event(ServiceName=CLEAR_SCREEN + "svc" + OSC52, ImagePath="C:\\a.exe" + TITLE),
        _event(Computer="WS" + OSC8, ServiceName="[bold red]x[/]" + CSI_C1,
               TimeCreated="2024-05-01T10:00:01Z"),
    ])
    rc, out, err = _hunt(capsys, log, "--rules", rules)
    assert rc == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in out
    assert "\\x1b[2J" in out and "\\x1b]0;owned" in out and "\\x9b31m" in out
    assert "[bold red]x[/]" in out  # rich markup in a value is shown, not applied


def test_events_table_shows_control_characters_escaped(capsys, tmp_path):
    log, _ = _write(tmp_path, [_event(ServiceName=OSC52, Computer="H\r\x1b[1A" + TITLE)])
    assert main(["events", log, "--format", "table"]) == 0
    out, _ = capsys.readouterr()
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "\\x1b]52;c;" in out and "\\r\\x1b[1A" in out


def test_stderr_problem_line_cannot_be_forged_by_a_member_name(capsys, tmp_path):
    archive = tmp_path / "logs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.json\nscmwatch: logs.zip: all clear, 0 errors\x1b[2K.json", b'{"EventID": 7045, ')
    rc, _, err = _hunt(capsys, str(archive), "--format", "jsonl")
    assert rc == 0
    lines = err.splitlines()
    assert not any(line.startswith("scmwatch: logs.zip: all clear") for line in lines)
    assert "\x1b" not in err
    problem = [line for line in lines if "a.json" in line]
    assert len(problem) == 1 and "\\nscmwatch: logs.zip: all clear" in problem[0]


def test_stderr_problem_line_escapes_a_file_name(capsys, tmp_path):
    bad = tmp_path / "x\x1b]0;pwned\x07\rscmwatch: fine.json"
    bad.write_text("{not json")
    main(["events", str(bad)])
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "\x07" not in err
    assert "\\x1b]0;pwned\\x07\\rscmwatch: fine.json" in err


def test_audit_table_escapes_host_and_service_names(capsys, tmp_path):
    snap = json.loads((FIXTURES / "audit" / "fleet" / "WS01.scmwatch.json").read_text())
    snap["host"]["name"] = "WS01" + OSC52
    snap["services"][0]["name"] = "Spooler\n== fleet: 0 host(s)" + CLEAR_SCREEN
    path = tmp_path / "WS01.scmwatch.json"
    path.write_text(json.dumps(snap))
    assert main(["audit", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "WS01\\x1b]52;c;" in out
    assert "== fleet: 1 host(s)" in out and "\n== fleet: 0 host(s)" not in out


# -- item 9: CSV injection, JSONL exact --------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+cmd|' /C calc'!A0", "-1+2", "@SUM(1+1)*cmd",
            "\t=1+1", "\r=1+1"]


def test_csv_neutralises_formulas_and_never_splits_a_row(capsys, tmp_path):
    events = [_event(ServiceName=f, Computer=f, TimeCreated=f"2024-05-01T10:00:0{i}Z")
              for i, f in enumerate(FORMULAS)]
    events.append(_event(ServiceName="two\rlines\r\nthree", Computer="a,b\"c",
                         TimeCreated="2024-05-01T10:00:09Z"))
    log, rules = _write(tmp_path, events)
    out_file = tmp_path / "alerts.csv"
    rc, _, err = _hunt(capsys, log, "--rules", rules, "--format", "csv", "-o", str(out_file))
    assert rc == 0, err
    raw = out_file.read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert len(rows) == 1 + len(events)
    hosts = [r[4] for r in rows[1:]]
    assert hosts[:len(FORMULAS)] == ["'" + f for f in FORMULAS]
    assert hosts[-1] == 'a,b"c'
    # no cell a spreadsheet would evaluate, and every field is quoted
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)
    assert all(line.startswith('"') for line in raw.decode().split("\n") if line and line[0] not in "\r")


def test_jsonl_keeps_values_byte_exact(capsys, tmp_path):
    values = [*FORMULAS, OSC52, "a\rb\nc", "é\u202e名"]
    events = [_event(ServiceName=v, TimeCreated=f"2024-05-01T10:00:{i:02d}Z") for i, v in enumerate(values)]
    log, rules = _write(tmp_path, events)
    rc, out, err = _hunt(capsys, log, "--rules", rules, "--format", "jsonl")
    assert rc == 0, err
    got = [json.loads(line)["event"]["ServiceName"] for line in out.splitlines()]
    assert got == values


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_lone_surrogate_does_not_break_any_output(capsys, tmp_path, fmt):
    log, rules = _write(tmp_path, [_event(ServiceName="a\ud800b", Computer="\udfffH")])
    out_file = tmp_path / f"out.{fmt}"
    rc, _, err = _hunt(capsys, log, "--rules", rules, "--format", fmt, "-o", str(out_file))
    assert rc == 0, err
    text = out_file.read_text(encoding="utf-8")  # valid UTF-8
    assert "a\ufffdb" in text or "a\\ud800b" in text


# -- item 7: outputs never destroy inputs, never half-written ----------------------------------------

def test_output_equal_to_an_input_is_refused(capsys, tmp_path):
    log, rules = _write(tmp_path, [_event()])
    before = Path(log).read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(log)
    hard = tmp_path / "hard.jsonl"
    os.link(log, hard)
    for args in (["-o", log], ["--summary", log], ["-o", str(link)], ["--summary", str(hard)],
                 ["-o", str(tmp_path / "sub" / ".." / "log.ndjson")], ["-o", rules]):
        rc, out, err = _hunt(capsys, log, "--rules", rules, *args)
        assert rc == 2 and "would be overwritten" in err and err.count("\n") == 1, (args, err)
    assert Path(log).read_bytes() == before
    # an output inside an input directory would be read back as input on the next run
    existing = tmp_path / "old.jsonl"
    existing.write_text("")
    rc, _, err = _hunt(capsys, str(tmp_path), "--rules", rules, "-o", str(existing))
    assert rc == 2 and "inside the input directory" in err
    same = str(tmp_path / "x")
    rc, _, err = _hunt(capsys, log, "--rules", rules, "-o", same, "--summary", same)
    assert rc == 2 and "the same file" in err


def test_failed_run_keeps_the_old_output_and_writes_the_error_summary(capsys, tmp_path, monkeypatch):
    log, rules = _write(tmp_path, [_event()])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out_file, summary = out_dir / "alerts.jsonl", out_dir / "summary.json"
    out_file.write_text("previous run\n")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_dir))  # spill files cannot be created
    rc, _, err = _hunt(capsys, log, "--rules", rules, "--format", "jsonl", "-o", str(out_file),
                       "--summary", str(summary))
    assert rc == 1 and "cannot write temporary spill files" in err
    assert out_file.read_text() == "previous run\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["alerts.jsonl", "summary.json"]  # no partial file
    s = json.loads(summary.read_text())
    assert s["exit_code"] == 1 and "spill" in s["error"]
    monkeypatch.undo()
    # the same run, now able to finish: the output is replaced, the summary says no error
    rc, _, err = _hunt(capsys, log, "--rules", rules, "--format", "jsonl", "-o", str(out_file),
                       "--summary", str(summary))
    assert rc == 0, err
    assert json.loads(out_file.read_text().splitlines()[0])["title"] == "Service installed (test)"
    s = json.loads(summary.read_text())
    assert s["error"] is None and s["exit_code"] == 0 and s["alerts"] == 1


def test_no_rule_loaded_still_writes_the_summary(capsys, tmp_path):
    log, _ = _write(tmp_path, [_event()])
    bad = tmp_path / "bad.yml"
    bad.write_text("title: [unclosed\n")
    summary = tmp_path / "s.json"
    rc, _, err = _hunt(capsys, log, "--rules", str(bad), "--summary", str(summary))
    assert rc == 1 and "no rule could be loaded" in err
    s = json.loads(summary.read_text())
    assert s["error"] == "no rule could be loaded" and s["exit_code"] == 1


def test_output_to_a_special_file_is_written_directly(capsys, tmp_path):
    log, rules = _write(tmp_path, [_event()])
    rc, _, err = _hunt(capsys, log, "--rules", rules, "-o", os.devnull, "--summary", os.devnull)
    assert rc == 0, err


def test_rules_list_and_rejections_escape_hostile_rule_text(capsys, tmp_path):
    good = tmp_path / "good.yml"
    good.write_text(RULE.replace("title: Service installed (test)",
                                 'title: "x\\tfake column\\e[2J\\nscmwatch: forged line"'))
    bad = tmp_path / "bad\x1b]0;t\x07.yml"
    bad.write_text("title: [unclosed\n")
    assert main(["rules", "list", str(good)]) == 0
    out, _ = capsys.readouterr()
    rows = out.splitlines()
    assert len(rows) == 2 and all(row.count("\t") == 5 for row in rows)
    assert "\x1b" not in out and "x\\tfake column\\x1b[2J\\nscmwatch: forged line" in out
    assert main(["rules", "check", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "bad\\x1b]0;t\\x07.yml" in out
