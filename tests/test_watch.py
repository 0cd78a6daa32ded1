"""``scmwatch watch`` with real processes: a growing file through both kinds of rotation, new files
in a watched directory (an EVTX file once complete), stdin, SIGTERM, and the checkpoint's parts."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from evtxbuild import simple_file
from scmwatch.correlate.links import EntityLinks
from scmwatch.live.watcher import WatermarkMerge

WAIT = 60  # seconds: bounds that only turn a hang into a failure
RULE = """title: Test service install
id: 11111111-1111-4111-8111-111111111111
status: test
logsource: {product: windows, service: system}
detection:
  sel: {EventID: 7045}
  condition: sel
level: high
"""


def _rule(tmp: Path) -> Path:
    path = tmp / "rule.yml"
    path.write_text(RULE)
    return path


def _line(name: str, second: int) -> bytes:
    return (json.dumps({"EventID": 7045, "Channel": "System", "Computer": "WS1",
                        "TimeCreated": f"2024-05-01T10:{second // 60:02d}:{second % 60:02d}.000000Z",
                        "ServiceName": name, "ImagePath": "C:\\x.exe"}) + "\n").encode()


def _append(path: Path, *lines: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(b"".join(lines))


def _start(tmp: Path, *sources: str, extra: tuple[str, ...] = (), **kw: object) -> subprocess.Popen:
    argv = [sys.executable, "-m", "scmwatch", "watch", *sources, "--rules", str(_rule(tmp)),
            "--output", str(tmp / "alerts.jsonl"), "--state", str(tmp / "state"), "--settle", "0.3",
            "--checkpoint-interval", "0.2", "--status-interval", "0", *extra]
    return subprocess.Popen(argv, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def _alerts(tmp: Path) -> list[dict]:
    path = tmp / "alerts.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _until(tmp: Path, proc: subprocess.Popen, count: int) -> list[dict]:
    deadline = time.monotonic() + WAIT
    while len(alerts := _alerts(tmp)) < count:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, f"{len(alerts)} of {count} alerts"
        time.sleep(0.05)
    return alerts


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err.decode()
    return err.decode()


def test_follows_a_file_through_rename_and_copytruncate_rotation(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "System.jsonl"
    _append(log, _line("a1", 1), _line("a2", 2))
    proc = _start(tmp_path, str(log))
    try:
        _until(tmp_path, proc, 2)
        _append(log, _line("a3", 3), _line("a4", 4)[:20])  # a line cut in two: read once whole
        time.sleep(0.3)
        _append(log, _line("a4", 4)[20:])
        _until(tmp_path, proc, 4)
        # rename rotation: the rest of the old file (written after the rename), then the new one
        os.rename(log, logs / "System.jsonl.1")
        _append(logs / "System.jsonl.1", _line("a5", 5))
        _append(log, _line("b1", 6), _line("b2", 7))
        _until(tmp_path, proc, 7)
        # copytruncate rotation: same inode, shorter; the new content from its start
        shutil.copy(log, logs / "System.jsonl.2")
        with log.open("r+b") as fh:
            fh.truncate(0)
        _append(log, _line("c1", 8))
        alerts = _until(tmp_path, proc, 8)
    finally:
        err = _stop(proc)
    names = sorted(a["event"]["ServiceName"] for a in alerts)
    assert names == ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "c1"], err
    assert {a["source"] for a in alerts} == {str(log)}  # provenance: the path as watched
    assert "copytruncate" in err
    assert len({a["alert_id"] for a in alerts}) == 8  # line 1 of each generation: three ids


def test_directory_new_files_rotated_copies_and_a_complete_evtx(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    _append(logs / "a.jsonl", _line("a1", 1))
    proc = _start(tmp_path, str(logs))
    try:
        _until(tmp_path, proc, 1)
        _append(logs / "b.ndjson", _line("b1", 2), _line("b2", 3))  # a new file joins
        _until(tmp_path, proc, 3)
        # copytruncate with the copy in the watched directory: lines the watcher had not read yet
        # when the file was truncated are read from the copy, and nothing twice
        _append(logs / "a.jsonl", *[_line(f"a{i}", 3 + i) for i in range(2, 12)])
        shutil.copy(logs / "a.jsonl", logs / "a.jsonl.1")
        with (logs / "a.jsonl").open("r+b") as fh:
            fh.truncate(0)
        _append(logs / "a.jsonl", _line("n1", 20))
        _until(tmp_path, proc, 14)
        # an EVTX file copied in piece by piece is read once complete
        data = simple_file(3)
        part = logs / "Security.evtx"
        part.write_bytes(data[:5000])
        time.sleep(0.1)
        with part.open("ab") as fh:
            fh.write(data[5000:])
        alerts = _until(tmp_path, proc, 17)
        time.sleep(0.5)
    finally:
        err = _stop(proc)
    alerts = _alerts(tmp_path)
    names = sorted(a["event"]["ServiceName"] for a in alerts)
    want = sorted(["a1", "b1", "b2", *[f"a{i}" for i in range(2, 12)], "n1", *["PSEXESVC"] * 3])
    assert names == want, err
    assert len({a["alert_id"] for a in alerts}) == len(alerts)


def test_stdin_to_its_end_equals_the_batch_hunt(tmp_path):
    log = tmp_path / "System.jsonl"
    _append(log, *[_line(f"s{i}", i) for i in range(50)])
    with log.open("rb") as fh:
        proc = _start(tmp_path, "-", stdin=fh)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err.decode()
    alerts = _alerts(tmp_path)
    assert sorted(a["record_id"] for a in alerts) == list(range(1, 51))
    assert {a["source"] for a in alerts} == {"<stdin>"}


def test_sigterm_checkpoints_and_a_restart_goes_on_without_repeating(tmp_path):
    log = tmp_path / "System.jsonl"
    _append(log, *[_line(f"x{i}", i) for i in range(5)])
    proc = _start(tmp_path, str(log))
    _until(tmp_path, proc, 5)
    err = _stop(proc)
    assert "5 alerts" in err
    _append(log, *[_line(f"y{i}", 10 + i) for i in range(3)])
    proc = _start(tmp_path, str(log))
    _until(tmp_path, proc, 8)
    time.sleep(0.5)
    _stop(proc)
    names = [a["event"]["ServiceName"] for a in _alerts(tmp_path)]
    assert sorted(names) == sorted([f"x{i}" for i in range(5)] + [f"y{i}" for i in range(3)])


def test_a_second_watcher_on_the_same_state_is_refused(tmp_path):
    log = tmp_path / "System.jsonl"
    _append(log, _line("x", 1))
    first = _start(tmp_path, str(log))
    try:
        _until(tmp_path, first, 1)
        second = _start(tmp_path, str(log))
        _, err = second.communicate(timeout=WAIT)
        assert second.returncode == 1
        assert b"in use by another watcher" in err
    finally:
        _stop(first)


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    for argv in (["x.jsonl", "--idle-timeout", "-1"], ["-", "-"], [str(tmp_path / "no" / "such.jsonl")]):
        r = subprocess.run([sys.executable, "-m", "scmwatch", "watch", *argv, "--state",
                            str(tmp_path / "st")], capture_output=True, timeout=WAIT)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.decode().strip().splitlines()) == 1


def test_watermark_merge_releases_in_time_source_position_order():
    m = WatermarkMerge(max_held=3)
    m.add([(30, 1, 0, "c"), (10, 1, 1, "a")])
    m.add([(10, 0, 5, "b"), (50, 0, 6, "d")])
    assert [r[3] for r in m.release(20)] == ["b", "a"]
    m.add([(60, 2, 0, "e"), (70, 2, 1, "f")])
    assert [r[3] for r in m.release(20)] == ["c"]  # over the cap: the oldest goes, counted
    assert m.overflow == 1
    assert [r[3] for r in m.release(float("inf"))] == ["d", "e", "f"]


def test_entity_links_survive_the_checkpoint_pickle():
    links = EntityLinks(max_entries=2)
    links.ip_names.put("10.0.0.1", "ws1")
    links.ip_names.put("10.0.0.2", "ws2")
    back = pickle.loads(pickle.dumps(links))
    assert dict(back.ip_names) == {"10.0.0.1": "ws1", "10.0.0.2": "ws2"}
    back.ip_names.put("10.0.0.3", "ws3")  # the cap came along
    assert list(back.ip_names) == ["10.0.0.2", "10.0.0.3"]


def test_case_gets_every_alert_once_across_a_kill(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    log = tmp_path / "System.jsonl"
    case = tmp_path / "case.duckdb"
    _append(log, *[_line(f"x{i}", i) for i in range(5)])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = _start(tmp_path, str(log), extra=("--case", str(case)), env=env)
    _until(tmp_path, proc, 5)
    proc.kill()  # whatever the case committed or not, the restart completes it once
    proc.communicate(timeout=WAIT)
    assert any(n.startswith(f"scmwatch-case-{proc.pid}-") for n in os.listdir(tmp))  # SIGKILL left them
    _append(log, *[_line(f"y{i}", 10 + i) for i in range(3)])
    proc = _start(tmp_path, str(log), extra=("--case", str(case)), env=env)
    _until(tmp_path, proc, 8)
    time.sleep(0.5)
    _stop(proc)
    assert os.listdir(tmp) == []  # the restart removed the killed run's staging, and its own
    con = duckdb.connect(str(case), read_only=True)
    try:
        rows = con.execute("SELECT alert_id, event->>'ServiceName' FROM alert_rows").fetchall()
    finally:
        con.close()
    assert len(rows) == len({r[0] for r in rows}) == 8
    assert {r[0] for r in rows} == {a["alert_id"] for a in _alerts(tmp_path)}


def test_a_deleted_file_read_to_its_end_is_dropped(tmp_path):
    from scmwatch.live.sources import Sources

    (tmp_path / "000000000001.ndjson").write_bytes(_line("a", 1))
    sources = Sources([str(tmp_path)], settle=0.0)
    sources.start(None)
    src, batch = sources.poll()
    src.commit(batch, 1)
    assert sources.poll() is None
    (tmp_path / "000000000001.ndjson").unlink()  # a spool segment pruned
    sources.scan(force=True)
    assert sources.followers == {}
    assert sources.positions()["positions"] == []
    sources.close()


def test_a_changed_tuning_file_is_refused_with_the_old_state(tmp_path):
    """The tuning file decides which events feed correlations: the saved state belongs to it."""
    log = tmp_path / "System.jsonl"
    _append(log, _line("x", 1))
    tune = tmp_path / "tune.yml"
    tune.write_text("exclude:\n  Test service install:\n    ServiceName: [nothing*]\n")
    first = _start(tmp_path, str(log), extra=("--tune", str(tune)))
    try:
        _until(tmp_path, first, 1)
    finally:
        _stop(first)
    tune.write_text("exclude:\n  Test service install:\n    ServiceName: [other*]\n")
    again = _start(tmp_path, str(log), extra=("--tune", str(tune)))
    _, err = again.communicate(timeout=WAIT)
    assert again.returncode != 0 and b"use another --state" in err, err


def _host_line(host: str, second: int) -> bytes:
    """A System 7045 record as Windows exports put it: the provider header first, the values that
    tell hosts apart (time, record id, computer) after more than 256 bytes."""
    return (json.dumps({"Provider_Name": "Service Control Manager",
                        "Provider_Guid": "{555908d1-a6d7-4695-8e1e-26931d2012f4}",
                        "Provider_EventSourceName": "Service Control Manager", "EventID": 7045,
                        "EventID_Qualifiers": 16384, "Version": 0, "Level": 4, "Task": 0, "Opcode": 0,
                        "Keywords": "0x8080000000000000", "Channel": "System",
                        "UserID": "S-1-5-21-3623811015-3361044348-30300820-500",
                        "TimeCreated": f"2024-05-01T10:00:{second:02d}.000000Z", "EventRecordID": second,
                        "Computer": host, "ServiceName": f"svc{second}", "ImagePath": "C:\\x.exe"})
            + "\n").encode()


def test_a_new_file_that_begins_like_a_followed_one_is_read_not_taken_for_its_copy(tmp_path):
    """Every host's System log begins with the same provider header: a host's log that appears
    after another's is a new file (read from its start), not a copy of the other left by a
    copytruncate rotation, and not the continuation of one read before."""
    from scmwatch.live.sources import Sources

    one, two, three = (tmp_path / h / "System.jsonl" for h in ("WS1", "WS2", "WS3"))
    for path in (one, two, three):
        path.parent.mkdir()
    _append(one, _host_line("WS1", 1), _host_line("WS1", 2))
    assert _host_line("WS1", 1)[:256] == _host_line("WS2", 3)[:256]
    sources = Sources([str(tmp_path)], settle=0.0)
    sources.start(None)

    def read_all() -> dict[str, int]:
        events: dict[str, int] = {}
        while (got := sources.poll()) is not None:
            src, batch = got
            src.commit(batch, batch.lines)
            events[batch.pos.name] = events.get(batch.pos.name, 0) + batch.lines
        return events

    assert read_all() == {str(one): 2}
    _append(two, _host_line("WS2", 3), _host_line("WS2", 4), _host_line("WS2", 5))
    sources.scan(force=True)
    assert read_all() == {str(two): 3}
    # a finished file (deleted once read) is remembered to recognise its renamed copy: a new host's
    # log is not resumed at its offset
    one.unlink()
    sources.scan(force=True)
    assert [p.name for p in sources.history] == [str(one)]
    _append(three, *[_host_line("WS3", s) for s in range(6, 10)])
    sources.scan(force=True)
    assert read_all() == {str(three): 4}
    sources.close()
