"""``hunt --dedup`` (issue 14): repeated alerts collapse into one row with count, first and last
time, in every output format; correlations keep their evidence."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from scmwatch.cli import main

FIX = Path(__file__).resolve().parent / "fixtures" / "hunt"
RULES = FIX / "rules"
DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo"
PSEXEC_ID = "0a3c1d52-7b61-4c3e-9d0e-5a1f0c2b7e01"  # fields: [ServiceName, ImagePath]
UNC_ID = "0a3c1d52-7b61-4c3e-9d0e-5a1f0c2b7e02"  # no fields: keyed by the ImagePath it tests


def install(host: str, second: int, image: str = "%SystemRoot%\\PSEXESVC.exe", name: str = "PSEXESVC",
            record: int = 0) -> str:
    return json.dumps({"EventID": 7045, "Channel": "System", "Computer": host, "EventRecordID": record,
                       "TimeCreated": f"2024-05-01T10:00:{second:02d}Z", "ServiceName": name,
                       "ImagePath": image, "AccountName": "LocalSystem"})


def logs(tmp_path: Path) -> str:
    lines = [install("WS1", 1, record=1), install("WS1", 5, record=2), install("ws1", 9, record=3),
             install("WS2", 2, record=4),
             install("WS1", 3, image="C:\\Windows\\PSEXESVC.exe", record=5),  # near miss: another ImagePath
             install("WS1", 4, image="\\\\10.0.0.5\\s\\a.exe", name="a", record=6),
             install("WS1", 6, image="\\\\10.0.0.5\\s\\a.exe", name="b", record=7),  # same ImagePath
             install("WS1", 7, image="\\\\10.0.0.5\\s\\c.exe", name="c", record=8)]
    p = tmp_path / "sys.ndjson"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def hunt(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["hunt", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_dedup_jsonl_rows_counts_and_times(capsys, tmp_path):
    base = [logs(tmp_path), "--rules", str(RULES), "--format", "jsonl"]
    _, every, _ = hunt(capsys, *base)
    rc, out, err = hunt(capsys, *base, "--dedup", "--summary", str(tmp_path / "s.json"))
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(every.splitlines()) == 8
    psexec = [(r["host"], r["event"]["ImagePath"], r["count"], r["first_timestamp"][17:19],
               r["last_timestamp"][17:19]) for r in rows if r["rule_id"] == PSEXEC_ID]
    assert psexec == [("WS1", "%SystemRoot%\\PSEXESVC.exe", 3, "01", "09"),  # ws1 is WS1
                      ("WS2", "%SystemRoot%\\PSEXESVC.exe", 1, "02", "02"),
                      ("WS1", "C:\\Windows\\PSEXESVC.exe", 1, "03", "03")]
    unc = [(r["event"]["ServiceName"], r["count"]) for r in rows if r["rule_id"] == UNC_ID]
    assert unc == [("a", 2), ("c", 1)]  # the rule tests ImagePath only: a and b are one finding
    assert rows[0]["record_id"] == 1 and rows[0]["timestamp"] == rows[0]["first_timestamp"]
    assert [r["first_timestamp"] for r in rows] == sorted(r["first_timestamp"] for r in rows)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["alerts"] == len(rows) == 5 and summary["alerts_deduplicated"] == 3
    assert "8 alerts in 5 rows from 3 rules" in err
    assert summary["results"]["alerts"] == 8 and summary["results"]["rows"] == 5
    assert summary["results"]["top_rules"][0]["alerts"] == 5  # PsExec: 3 + 1 + 1 in three rows


def test_dedup_csv_and_table(capsys, tmp_path):
    base = [logs(tmp_path), "--rules", str(RULES), "--dedup"]
    _, out, _ = hunt(capsys, *base, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["count"] for r in rows] == ["3", "1", "1", "2", "1"]
    assert rows[0]["last_timestamp"].startswith("2024-05-01T10:00:09")
    _, out, _ = hunt(capsys, *base, "--format", "table")
    head = out.splitlines()[1]
    assert " n " in head and "… 2024-05-01 10:00:09" in out
    _, plain, _ = hunt(capsys, logs(tmp_path), "--rules", str(RULES), "--format", "csv")
    assert "count" not in plain.splitlines()[0]  # without --dedup the columns stay as they were


def test_dedup_never_collapses_correlations(capsys):
    _, every, _ = hunt(capsys, str(DEMO), "--format", "jsonl")
    _, out, _ = hunt(capsys, str(DEMO), "--format", "jsonl", "--dedup")
    every = [json.loads(line) for line in every.splitlines()]
    rows = [json.loads(line) for line in out.splitlines()]
    corr = [a for a in every if "correlation" in a]
    kept = [a for a in rows if "correlation" in a]
    assert corr and len(kept) == len(corr) and all(a["count"] == 1 for a in kept)
    assert [a["events"] for a in kept] == [a["events"] for a in corr]
    assert len(rows) < len(every) and sum(a["count"] for a in rows) == len(every)


def test_dedup_in_the_timeline_exports(capsys, tmp_path):
    from test_hunt_exports import check_ecs, check_timesketch

    base = [logs(tmp_path), "--rules", str(RULES), "--dedup"]
    _, out, _ = hunt(capsys, *base, "--format", "timesketch")
    lines = [json.loads(line) for line in out.splitlines()]
    for line in lines:
        check_timesketch(line)
    assert [x["count"] for x in lines] == [3, 1, 1, 2, 1]
    assert lines[0]["last_timestamp"].startswith("2024-05-01T10:00:09")
    _, out, _ = hunt(capsys, *base, "--format", "ecs")
    docs = [json.loads(line) for line in out.splitlines()]
    for doc in docs:
        check_ecs(doc)
    assert [d["scmwatch"]["count"] for d in docs] == [3, 1, 1, 2, 1]
    assert docs[0]["event"]["start"] == docs[0]["@timestamp"] and docs[0]["event"]["end"][17:19] == "09"
