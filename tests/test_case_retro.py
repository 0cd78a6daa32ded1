"""``--keep-events`` and the retro-hunt: the case's events give the same alerts as the files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

duckdb = pytest.importorskip("duckdb")

from paths import ATTACK_SAMPLES, need_shared  # noqa: E402
from scmwatch.case.queries import connect_read_only  # noqa: E402
from scmwatch.case.source import CaseSource  # noqa: E402
from scmwatch.cli import main  # noqa: E402
from scmwatch.events.model import ReadStats  # noqa: E402
from scmwatch.events.read import iter_events  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"

NEW_RULE = """
title: Any service installed (retro-hunt test rule)
id: 5d2c8e1a-0000-4000-8000-00000000f00d
status: test
level: low
logsource: {product: windows, service: system}
detection:
  sel: {EventID: 7045}
  condition: sel
"""


def hunt(capsys, *args: str) -> tuple[list[dict], str]:
    rc = main(["hunt", *args, "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()], err


def scalar(case: Path, sql: str):
    con = connect_read_only(str(case))
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_retro_hunt_equals_file_hunt_on_the_demo(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    files, _ = hunt(capsys, str(DEMO), "--case", str(case), "--keep-events", "--jobs", "2")
    plain, _ = hunt(capsys, str(DEMO))
    assert files == plain  # keeping events changes nothing in the alerts
    events = scalar(case, "SELECT events FROM runs")
    assert scalar(case, "SELECT count(*) FROM events") == events > 2000
    assert scalar(case, "SELECT count(*) FROM files WHERE NOT events_kept") == 0
    # typed System columns and the rest as JSON, searchable with SQL
    assert scalar(case, "SELECT count(*) FROM events WHERE EventID = 7045 AND data->>'ServiceName' "
                        "IS NOT NULL") > 0
    retro, err = hunt(capsys, str(case))
    assert retro == files
    assert "30 files" in err
    # hunting the same files again keeps no event twice
    hunt(capsys, str(DEMO), "--case", str(case), "--keep-events")
    assert scalar(case, "SELECT count(*) FROM events") == events


def test_retro_hunt_with_new_rules_appends_only_their_alerts(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, str(DEMO), "--case", str(case), "--keep-events")
    before = scalar(case, "SELECT count(*) FROM alerts")
    # the same rules over the case, into the case: nothing new
    hunt(capsys, str(case), "--case", str(case))
    assert scalar(case, "SELECT count(*) FROM alerts") == before
    assert scalar(case, "SELECT kind FROM runs WHERE run_id = 2") == "retro-hunt"
    rules = tmp_path / "new"
    rules.mkdir()
    (rules / "any_service.yml").write_text(NEW_RULE)
    retro, _ = hunt(capsys, str(case), "--rules", str(rules), "--case", str(case))
    on_files, _ = hunt(capsys, str(DEMO), "--rules", str(rules))
    assert retro == on_files and len(retro) > 10
    assert scalar(case, "SELECT count(*) FROM alerts") == before + len(retro)
    assert scalar(case, "SELECT alerts_new FROM runs WHERE run_id = 3") == len(retro)


def test_kept_events_come_back_exactly(capsys, tmp_path):
    odd = [
        {"EventID": "7045", "Channel": "System", "Computer": "WS1", "TimeCreated": "2024-05-01T10:00:01Z",
         "ServiceName": "a", "ProcessID": 2**70, "ThreadID": -5, "Nested": {"k": [1, "two", None]}},
        {"EventID": 2**40, "Channel": ["System"], "Computer": None, "TimeCreated": "2024-05-01T10:00:02Z",
         "UserID": 5, "Data": ["x", "y"], "Flag": True, "Ratio": 0.25},
        {"EventID": 4624, "Channel": "Security", "Computer": "WS2\x1b[31m<script>", "EventRecordID": 7,
         "TimeCreated": "not a time", "Empty": ""},
    ]
    log = tmp_path / "odd.ndjson"
    log.write_text("\n".join(json.dumps(e) for e in odd) + "\n")
    case = tmp_path / "c.duckdb"
    main(["hunt", str(log), "--case", str(case), "--keep-events", "--format", "jsonl"])
    capsys.readouterr()
    con = connect_read_only(str(case))
    try:
        src = CaseSource(con)
        got = [e.fields for u in src.files for e in src.read(u, ReadStats())]
        typed = con.execute("SELECT EventID, ProcessID, Computer FROM events ORDER BY seq").fetchall()
    finally:
        con.close()
    expect = [e.fields for e in iter_events([str(log)], ReadStats())]  # what the hunt saw
    assert got == expect
    for g, e in zip(got, expect, strict=True):  # 1 == 1.0 == True: the types must match too
        assert {k: type(v) for k, v in g.items()} == {k: type(v) for k, v in e.items()}
    assert typed[2] == (4624, None, "WS2\x1b[31m<script>")


def test_retro_hunt_problems_are_one_line(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, str(DEMO / "DC01"), "--case", str(case))  # no --keep-events
    rc = main(["hunt", str(case)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "keeps no events" in err
    rc = main(["hunt", str(case), str(DEMO)])
    err = capsys.readouterr().err
    assert rc == 2 and "hunted alone" in err
    rc = main(["hunt", str(DEMO), "--keep-events"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs --case" in err
    # a case where only some files kept their events: the others are named, the rest is hunted
    hunt(capsys, str(DEMO / "FS01"), "--case", str(case), "--keep-events")
    alerts, err = hunt(capsys, str(case))
    assert "not in this retro-hunt" in err and alerts


def test_retro_hunt_equals_file_hunt_on_the_shared_corpus(capsys, tmp_path):
    corpus = need_shared(ATTACK_SAMPLES)
    case = tmp_path / "dev.duckdb"
    files, _ = hunt(capsys, str(corpus), "--case", str(case), "--keep-events")
    retro, _ = hunt(capsys, str(case))
    assert len(files) > 50
    assert retro == files
    # a copy of the corpus elsewhere is the same evidence: nothing new in the case
    n = scalar(case, "SELECT count(*) FROM alerts")
    copy = tmp_path / "copy"
    shutil.copytree(corpus / "Lateral Movement", copy)
    hunt(capsys, str(copy), "--case", str(case), "--keep-events")
    assert scalar(case, "SELECT count(*) FROM alerts") == n


def test_events_of_a_failed_run_do_not_stay(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, str(DEMO / "DC01"), "--case", str(case), "--keep-events")
    kept = scalar(case, "SELECT count(*) FROM events")
    rc = main(["hunt", str(DEMO / "FS01"), "--case", str(case), "--keep-events", "--format", "jsonl",
               "-o", "/dev/full"])
    assert rc == 1 and "cannot write alerts" in capsys.readouterr().err
    assert scalar(case, "SELECT count(*) FROM events") == kept
    # rows left by a run killed outright (no file row marks them kept) go when the next one starts
    con = duckdb.connect(str(case))
    con.execute("INSERT INTO event_rows (file_sha256, seq, source) VALUES ('orphan', 0, 'x')")
    con.close()
    hunt(capsys, str(DEMO / "WS0001"), "--case", str(case), "--keep-events")
    assert scalar(case, "SELECT count(*) FROM events WHERE file_sha256 = 'orphan'") == 0
    assert scalar(case, "SELECT count(*) FROM events") > kept
