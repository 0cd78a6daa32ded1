"""The case file: ``hunt --case`` writes it, ``query`` reads it; idempotence, append, bad files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

duckdb = pytest.importorskip("duckdb")

from scmwatch.case import schema  # noqa: E402
from scmwatch.case.queries import QUESTIONS  # noqa: E402
from scmwatch.case.store import CaseError, open_case  # noqa: E402
from scmwatch.case.triage import edge_id, set_status  # noqa: E402
from scmwatch.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
PART_A = [str(DEMO / "DC01"), str(DEMO / "FS01")]
PART_B = [str(DEMO / "WS0001"), str(DEMO / "WS0002")]


def hunt(capsys, case: Path, *paths: str, extra: tuple[str, ...] = ()) -> list[dict]:
    rc = main(["hunt", *paths, "--case", str(case), "--format", "jsonl", *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


def query(capsys, case: Path, sql: str, *args: str, fmt: str = "jsonl") -> tuple[int, list, str]:
    rc = main(["query", str(case), sql, *args, "--format", fmt])
    out, err = capsys.readouterr()
    if fmt == "jsonl" and rc == 0:
        return rc, [json.loads(line) for line in out.splitlines()], err
    return rc, out, err


def scalar(case: Path, sql: str):
    con = open_case(str(case))
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_hunt_case_keeps_every_alert_and_still_streams(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    streamed = hunt(capsys, case, str(DEMO))
    assert len(streamed) > 100
    assert scalar(case, "SELECT count(*) FROM alerts") == len(streamed)
    corr = [a for a in streamed if "correlation" in a]
    assert corr and scalar(case, "SELECT count(*) FROM alerts WHERE kind = 'correlation'") == len(corr)
    # evidence: one row per contributing event, as many as the alert says
    assert scalar(case, """SELECT count(*) FROM alerts a WHERE evidence_count <>
                           (SELECT count(*) FROM evidence e WHERE e.alert_id = a.alert_id)""") == 0
    assert scalar(case, "SELECT sum(evidence_count) FROM alerts WHERE kind = 'correlation'") == sum(
        len(a["events"]) for a in corr)
    # files: every input with its hash, format and event count
    rc, files, _ = query(capsys, case, "SELECT path, sha256, format, events, size FROM files")
    assert rc == 0 and len(files) == 30
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in files)
    assert {f["format"] for f in files} == {"json", "zeek"}
    assert sum(f["events"] for f in files) == scalar(case, "SELECT events FROM runs")
    # the demo's lateral movement shows up as host -> host edges
    assert scalar(case, "SELECT count(*) FROM lateral_edges WHERE source_host <> target_host") > 0


def test_rehunt_adds_nothing_and_new_files_append(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    first = hunt(capsys, case, *PART_A)
    n_a = scalar(case, "SELECT count(*) FROM alerts")
    ev_a = scalar(case, "SELECT count(*) FROM evidence")
    links_a = scalar(case, "SELECT count(*) FROM links")
    assert n_a == len(first) > 0
    again = hunt(capsys, case, *PART_A)
    assert len(again) == len(first)  # the normal sink still gets every alert
    assert scalar(case, "SELECT count(*) FROM alerts") == n_a
    assert scalar(case, "SELECT count(*) FROM evidence") == ev_a
    assert scalar(case, "SELECT count(*) FROM links") == links_a
    assert scalar(case, "SELECT alerts_new FROM runs WHERE run_id = 2") == 0
    second = hunt(capsys, case, *PART_B)
    total = scalar(case, "SELECT count(*) FROM alerts")
    assert total == n_a + len(second)
    assert scalar(case, "SELECT count(DISTINCT alert_id) FROM alerts") == total
    assert scalar(case, "SELECT count(*) FROM runs") == 3
    # the same files under another path (a copy) are the same evidence: nothing new
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(DEMO / "DC01", copy / "DC01")
    shutil.copytree(DEMO / "FS01", copy / "FS01")
    hunt(capsys, case, str(copy / "DC01"), str(copy / "FS01"))
    assert scalar(case, "SELECT count(*) FROM alerts") == total


def test_views_have_their_documented_columns(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, case, *PART_A)
    con = open_case(str(case))
    try:
        for view, cols in schema.VIEW_COLUMNS.items():
            got = [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description]
            assert got == list(cols), view
    finally:
        con.close()


def test_query_formats_saved_questions_and_read_only(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, case, str(DEMO))
    for q in QUESTIONS:
        args = ["ws0001"] * len(q.params)
        rc, rows, err = query(capsys, case, q.name, *args)
        assert rc == 0, (q.name, err)
    rc, rows, _ = query(capsys, case, "services")
    assert rows and all(r["service"] for r in rows)
    rc, rows, _ = query(capsys, case, "reached-from", rows and "ws0001")
    assert rc == 0
    rc, out, _ = query(capsys, case, "SELECT level, count(*) AS n FROM alerts GROUP BY 1 ORDER BY 1",
                       fmt="csv")
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == ["level", "n"] and len(table) > 2
    rc, out, _ = query(capsys, case, "SELECT title FROM alerts LIMIT 3", fmt="table")
    assert rc == 0 and out.splitlines()[0].startswith("title") and "(3 rows)" in out
    assert main(["query", str(case), "--list"]) == 0
    assert "reached-from HOST" in capsys.readouterr().out
    # read-only, and nothing outside the case is reachable
    for sql in ("DELETE FROM alert_rows", "CREATE TABLE x (a INT)",
                f"SELECT * FROM read_csv('{ROOT / 'pyproject.toml'}')",
                f"ATTACH '{tmp_path / 'other.duckdb'}' AS o", "SELECT * FROM nonsense"):
        rc, _, err = query(capsys, case, sql)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, sql
    assert scalar(case, "SELECT count(*) FROM alert_rows") > 0
    assert not (tmp_path / "other.duckdb").exists()
    rc, _, err = query(capsys, case, "host-services")
    assert rc == 2 and "takes HOST" in err


def test_csv_and_table_escape_log_values(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, case, *PART_A)
    rc, out, _ = query(capsys, case, "SELECT '=HYPERLINK(\"x\")' AS a, 'ok' AS b", fmt="csv")
    assert out.splitlines()[1].startswith("\"'=HYPERLINK")
    rc, out, _ = query(capsys, case, "SELECT 'red' || chr(27) || '[31m' || chr(13) AS a", fmt="table")
    assert "\x1b" not in out and "\r" not in out and "\\x1b[31m\\r" in out


def _one_line_error(capsys, case: Path, *args: str) -> str:
    rc = main(["query", str(case), "SELECT 1", *args])
    _, err = capsys.readouterr()
    assert rc == 1, err
    assert err.count("\n") == 1 and err.startswith(f"scmwatch: {case}: ") and "Traceback" not in err
    return err


def test_bad_case_files_get_one_line(capsys, tmp_path):
    assert "no such case" in _one_line_error(capsys, tmp_path / "missing.duckdb")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert "not a case file" in _one_line_error(capsys, text)
    empty = tmp_path / "empty.duckdb"
    empty.write_bytes(b"")
    assert "not a case file" in _one_line_error(capsys, empty)
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t (a INT)")
    con.close()
    assert "not an scmwatch case" in _one_line_error(capsys, other)
    newer = tmp_path / "newer.duckdb"
    con = duckdb.connect(str(newer))
    schema.create(con)
    con.execute("UPDATE case_meta SET value = '999' WHERE key = 'schema_version'")
    con.close()
    assert "newer scmwatch" in _one_line_error(capsys, newer)
    # a real case, then damaged in the middle
    good = tmp_path / "good.duckdb"
    hunt(capsys, good, *PART_A)
    data = bytearray(good.read_bytes())
    for i in range(4096, len(data), 7):
        data[i] ^= 0x5A
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(bytes(data))
    err = _one_line_error(capsys, corrupt)
    assert "corrupt" in err or "cannot open" in err
    # hunting into a file that is not a case refuses before reading any input
    rc = main(["hunt", str(DEMO / "DC01"), "--case", str(text)])
    _, err = capsys.readouterr()
    assert rc == 1 and err.count("\n") == 1 and "not a case file" in err
    assert text.read_text() == "hello\n"


def test_locked_case_gets_one_line(capsys, tmp_path, monkeypatch):
    from scmwatch.case import store

    monkeypatch.setattr(store, "LOCK_WAIT", 0.3)
    case = tmp_path / "c.duckdb"
    hunt(capsys, case, *PART_A)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); sys.stdin.read()", str(case)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        err = _one_line_error(capsys, case)
        assert "locked" in err
        rc = main(["hunt", *PART_A, "--case", str(case)])
        _, err = capsys.readouterr()
        waiting, failed = err.splitlines()  # told once that it waits, then one line when it gives up
        assert "waiting up to 0.3 s" in waiting and "locked" in failed and rc == 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_latest_decisions_follow_the_log(capsys, tmp_path):
    """``triage_latest`` (the console's status filter) always equals ``triage_state`` (the log)."""
    from scmwatch.case.triage import set_status_where

    case = tmp_path / "c.duckdb"
    hunt(capsys, case, str(DEMO))
    con = open_case(str(case), write=True)
    try:
        aid, host = con.execute("SELECT alert_id, host_key FROM alerts ORDER BY alert_id LIMIT 1").fetchone()
        n = set_status_where(con, "host_key = ?", [host], "investigating", "sweep")
        assert n == con.execute("SELECT count(*) FROM alerts WHERE host_key = ?", [host]).fetchone()[0] > 1
        set_status(con, "alert", aid, "malicious", "confirmed")
        investigating = "alert_id IN (SELECT alert_id FROM alerts WHERE status = 'investigating')"
        assert set_status_where(con, investigating, [], "closed") == n - 1
        set_status(con, "alert", aid, "new")
        diff = con.execute("(SELECT * FROM triage_state EXCEPT SELECT * FROM triage_latest) UNION ALL "
                           "(SELECT * FROM triage_latest EXCEPT SELECT * FROM triage_state)").fetchall()
        assert diff == []
        assert dict(con.execute("SELECT status, count(*) FROM alerts WHERE host_key = ? GROUP BY 1",
                                [host]).fetchall()) == {"closed": n - 1, "new": 1}
        with pytest.raises(ValueError):
            set_status_where(con, "true", [], "owned")
    finally:
        con.close()


def test_migration_from_schema_2_renames_statuses_and_adds_rules(capsys, tmp_path):
    case = tmp_path / "old.duckdb"
    con = duckdb.connect(str(case))
    schema.create(con, version=2)
    con.execute("INSERT INTO triage_t VALUES ('alert', 'a1', 'true-positive', 'yes', NULL, now()), "
                "('alert', 'a2', 'false-positive', NULL, NULL, now()), "
                "('host', 'ws1', 'closed', NULL, NULL, now())")
    con.close()
    rc, rows, err = query(capsys, case, "SELECT entity_id, status FROM triage_state ORDER BY entity_id")
    assert rc == 0, err
    assert rows == [{"entity_id": "a1", "status": "malicious"}, {"entity_id": "a2", "status": "benign"},
                    {"entity_id": "ws1", "status": "closed"}]
    hunt(capsys, case, *PART_A)
    assert scalar(case, "SELECT count(*) FROM alerts WHERE rule_id NOT IN (SELECT rule_id FROM rules)") == 0
    assert scalar(case, "SELECT count(*) FROM rules WHERE yaml LIKE '%title:%'") == scalar(
        case, "SELECT count(*) FROM rules")


def test_migration_from_schema_1(capsys, tmp_path):
    case = tmp_path / "old.duckdb"
    con = duckdb.connect(str(case))
    schema.create(con, version=1)
    con.execute("INSERT INTO alert_rows (alert_id, rule_id, title, level, level_rank, host, host_key, kind, "
                "evidence_count) VALUES ('a1', 'r1', 'old alert', 'high', 3, 'WS1', 'ws1', 'event', 0)")
    con.close()
    # a read-only open migrates it first; the old rows are still there, the views work
    rc, rows, err = query(capsys, case, "SELECT alert_id, title, status FROM alerts")
    assert rc == 0, err
    assert rows == [{"alert_id": "a1", "title": "old alert", "status": "new"}]
    version = scalar(case, "SELECT value FROM case_meta WHERE key = 'schema_version'")
    assert version == str(schema.SCHEMA_VERSION)
    assert scalar(case, "SELECT count(*) FROM events") == 0
    # and hunting into it appends
    hunt(capsys, case, *PART_A)
    assert scalar(case, "SELECT count(*) FROM alerts") > 1


def test_open_case_refuses_directory(tmp_path):
    with pytest.raises(CaseError, match="directory"):
        open_case(str(tmp_path))


def test_readme_documents_the_views():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for view, cols in schema.VIEW_COLUMNS.items():
        assert f"| `{view}` | {', '.join(cols)} |" in readme, view


def test_a_failed_run_leaves_the_case_as_it_was(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, case, *PART_A)
    n = scalar(case, "SELECT count(*) FROM alerts")
    rc = main(["hunt", *PART_B, "--case", str(case), "--format", "jsonl", "-o", "/dev/full"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot write alerts" in err
    assert scalar(case, "SELECT count(*) FROM runs") == 1
    assert scalar(case, "SELECT count(*) FROM alerts") == n
    assert scalar(case, "SELECT count(*) FROM files") == len(list(DEMO.glob("DC01/*"))) + len(
        list(DEMO.glob("FS01/*")))


def test_triage_state_shows_in_the_views(capsys, tmp_path):
    case = tmp_path / "c.duckdb"
    hunt(capsys, case, str(DEMO))
    con = open_case(str(case), write=True)
    try:
        aid, host = con.execute("SELECT alert_id, host_key FROM alerts ORDER BY time LIMIT 1").fetchone()
        src, dst = con.execute("SELECT source_host, target_host FROM lateral_edges LIMIT 1").fetchone()
        set_status(con, "alert", aid, "investigating", "first look", "ann")
        set_status(con, "alert", aid, "malicious", "confirmed", "bob")
        set_status(con, "host", host, "closed", analyst="ann")
        set_status(con, "edge", edge_id(src, dst), "benign", "admin jump host", "ann")
        with pytest.raises(ValueError):
            set_status(con, "alert", aid, "pwned")
    finally:
        con.close()
    rc, rows, _ = query(capsys, case, "SELECT status, note FROM alerts WHERE alert_id = $1", aid)
    assert rc == 2  # arguments belong to saved questions only
    rc, rows, _ = query(capsys, case, f"SELECT status, note FROM alerts WHERE alert_id = '{aid}'")
    assert rows == [{"status": "malicious", "note": "confirmed"}]  # the latest decision
    rc, rows, _ = query(capsys, case, f"SELECT status FROM hosts WHERE host = '{host}'")
    assert rows == [{"status": "closed"}]
    rc, rows, _ = query(capsys, case, f"SELECT status FROM lateral_edges WHERE source_host = '{src}' "
                                      f"AND target_host = '{dst}'")
    assert rows == [{"status": "benign"}]
    rc, rows, _ = query(capsys, case, "untriaged")
    assert aid not in {r["alert_id"] for r in rows}
    out = tmp_path / "r.html"
    assert main(["report", str(case), "-o", str(out)]) == 0
    capsys.readouterr()
    html = out.read_text()
    assert "malicious" in html and "confirmed" in html


def test_oversized_values_are_cut_not_fatal(capsys, tmp_path):
    from scmwatch.case import stage

    log = tmp_path / "big.ndjson"
    huge = "A" * (stage.MAX_ROW + 1000)
    log.write_text(json.dumps({"EventID": 7045, "Channel": "System", "Computer": "WS1",
                               "TimeCreated": "2024-05-01T10:00:00Z", "ServiceName": "x",
                               "ImagePath": huge}) + "\n")
    case = tmp_path / "c.duckdb"
    summary = tmp_path / "s.json"
    rc = main(["hunt", str(log), "--case", str(case), "--keep-events", "--format", "jsonl",
               "--summary", str(summary)])
    capsys.readouterr()
    assert rc == 0
    assert scalar(case, "SELECT count(*) FROM events") == 1
    kept = scalar(case, "SELECT data->>'ImagePath' FROM events")
    assert len(kept) < stage.MAX_ROW and kept.startswith("A" * 1000) and "cut by scmwatch" in kept
    assert scalar(case, "SELECT (summary->>'case_values_cut')::INT FROM runs") >= 1


def test_a_case_run_removes_the_staging_dead_runs_left(tmp_path):
    """Staged rows are files named by the writing process's pid: a run killed outright leaves
    them, and the next run writing a case removes those of processes that are gone, only those."""
    import os

    from scmwatch.case.stage import sweep
    from scmwatch.case.writer import CaseWriter

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    tmp = tmp_path / "tmp"
    (tmp / f"scmwatch-events-{dead}-a").mkdir(parents=True)
    (tmp / f"scmwatch-events-{dead}-a" / "rows.ndjson").write_text("{}\n")
    (tmp / f"scmwatch-case-{dead}-b.ndjson").write_text("{}\n")
    kept = [f"scmwatch-case-{os.getpid()}-c.ndjson", "scmwatch-case-nopid.ndjson", "notes.txt"]
    for name in kept:
        (tmp / name).write_text("")
    (tmp / f"scmwatch-case-{dead}-link").symlink_to(tmp / "notes.txt")  # never followed
    writer = CaseWriter(str(tmp_path / "case.duckdb"), command="test", tmpdir=str(tmp))
    writer.close({})
    assert sorted(os.listdir(tmp)) == sorted([*kept, f"scmwatch-case-{dead}-link"])
    assert sweep(str(tmp)) == 0
