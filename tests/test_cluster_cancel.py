"""Ctrl-C during ``hunt --cluster``: the cluster work stops, no worker process outlives the hunt,
and the case store keeps exactly what it had (the interrupted run adds nothing half-done)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
duckdb = pytest.importorskip("duckdb")

from scmwatch.simulate import Options, simulate  # noqa: E402


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _case_state(case: Path) -> tuple:
    con = duckdb.connect(str(case), read_only=True)
    try:
        runs = con.execute("select run_id, alerts, events from runs order by run_id").fetchall()
        alerts = con.execute("select count(*) from alerts").fetchone()[0]
    finally:
        con.close()
    return runs, alerts


def _hunt(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scmwatch", "hunt", *args, "--format", "jsonl", "--output", os.devnull]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kids_before, settle", [(1, 0.0), (2, 1.5)], ids=["while-starting", "while-hunting"])
def test_ctrl_c_stops_the_cluster_and_keeps_the_case(tmp_path, kids_before, settle):
    """Signalled as the first process of the LocalCluster appears (it is still starting) or once
    its workers run."""
    small, big = tmp_path / "small", tmp_path / "big"
    simulate(Options(scenarios=["all"], out=small, events=3000, seed=5, labels=tmp_path / "l1.jsonl"))
    simulate(Options(scenarios=["all"], out=big, events=150_000, seed=6, labels=tmp_path / "l2.jsonl"))
    case = tmp_path / "case.duckdb"
    first = _hunt(str(small), "--case", str(case))
    assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""
    before = _case_state(case)
    assert len(before[0]) == 1 and before[1] > 0

    p = _hunt(str(big), "--cluster", "local:2", "--case", str(case))
    deadline = time.monotonic() + 120
    kids: set[int] = set()
    while time.monotonic() < deadline and p.poll() is None:
        kids |= _descendants(p.pid)
        if len(kids) >= kids_before:
            break
        time.sleep(0.05)
    time.sleep(settle)
    kids |= _descendants(p.pid)
    assert p.poll() is None, "the hunt ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)]

    assert _case_state(case) == before
    again = _hunt(str(small), "--case", str(case))
    assert again.wait(timeout=300) == 0
    runs, _ = _case_state(case)
    assert len(runs) == 2
