"""``scmwatch events`` end to end through the real command-line entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from paths import FIXTURES
from scmwatch.cli import main

EV = FIXTURES / "events"


def run(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["events", *argv])
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_jsonl_has_fields_and_provenance(capsys) -> None:
    code, rows, err = run(capsys, str(EV / "security_4688.xml"))
    assert code == 0
    assert [r["EventID"] for r in rows] == [4688, 7045]
    assert rows[0]["source"] == str(EV / "security_4688.xml") and rows[0]["record_id"] == 5501
    assert "2 events" in err and "no errors" in err


def test_where_and_limit(capsys) -> None:
    code, rows, _ = run(capsys, str(EV), "--where", "Channel=security", "--where", "NewProcessName~CMD.EXE")
    assert code == 0 and rows and all(r["Channel"] == "Security" for r in rows)
    assert all("cmd.exe" in r["NewProcessName"].lower() for r in rows)
    code, rows, _ = run(capsys, str(EV), "--limit", "2")
    assert len(rows) == 2
    code, rows, _ = run(capsys, str(EV), "--limit", "0")
    assert rows == [] and code == 0


def test_bad_where_is_a_usage_error(capsys) -> None:
    code, rows, err = run(capsys, str(EV), "--where", "nonsense")
    assert code == 2 and "FIELD=VALUE" in err


def test_table_format(capsys) -> None:
    code = main(["events", str(EV / "array.json"), "--format", "table"])
    out, _ = capsys.readouterr()
    assert code == 0 and "winexesvc" in out and "7045" in out


def test_bad_inputs_give_one_line_each_and_exit_1(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\x00\x01\x02" * 100)
    code, rows, err = run(capsys, str(bad), str(tmp_path / "missing.evtx"), str(EV / "array.json"))
    assert code == 1
    assert len(rows) == 2
    lines = [line for line in err.splitlines() if line.startswith("scmwatch:")]
    assert any("bad.json" in line and "format" in line for line in lines)
    assert any("missing.evtx" in line and "no such file" in line for line in lines)
    assert "errors: format 1, unreadable 1" in err
    assert "Traceback" not in err


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scmwatch", "events", str(EV / "dce_rpc.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 2 and "zeek:dce_rpc" in proc.stdout
