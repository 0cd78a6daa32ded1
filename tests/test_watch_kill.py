"""Exactly-once under ``kill -9``: the real ``scmwatch watch`` process is killed at random
points (seeded) while a writer process appends a simulated multi-host attack; after the last
restart, the alerts delivered equal the batch ``hunt`` of the same files, each exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from scmwatch.simulate import Options, simulate

WAIT = 60  # seconds: bounds that only turn a hang into a failure
KILLS = 20
WRITER = Path(__file__).with_name("live_writer.py")


def _watch(watched: Path, out: Path, state: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "scmwatch", "watch", str(watched), "--output", str(out),
            "--state", str(state), "--checkpoint-interval", "0.3", "--status-interval", "0",
            "--idle-timeout", "60", *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_checkpoint(state: Path, proc: subprocess.Popen) -> None:
    """Until ``proc`` has written a checkpoint (its first comes right after start-up)."""
    ckpt = state / "checkpoint"
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
    deadline = time.monotonic() + WAIT
    while not ckpt.exists() or ckpt.stat().st_mtime_ns == before:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)


def _keys(path: Path) -> list[tuple]:
    out = []
    for line in path.read_bytes().splitlines():
        a = orjson.loads(line)
        out.append((a["rule_id"], a["timestamp"], a["source"], a["record_id"]))
    return out


def test_kill_9_loop_delivers_every_alert_of_the_batch_hunt_exactly_once(tmp_path):
    src, watched, state = tmp_path / "src", tmp_path / "watched", tmp_path / "state"
    simulate(Options(scenarios=["all"], out=src, events=2500, seed=7, hosts=3))
    watched.mkdir()
    out = tmp_path / "alerts.jsonl"
    writer = subprocess.Popen([sys.executable, str(WRITER), str(src), str(watched), "12", "7"])
    rng = random.Random(19)
    deadline = time.monotonic() + WAIT
    try:
        i = 0
        # at least KILLS restarts, and on until the writer is done and a killed run delivered
        # something: how long the writing takes against how fast a watch starts (load, caches)
        # must not decide whether the killed runs saw any alert
        while i < KILLS or writer.poll() is None or not out.exists() or not out.stat().st_size:
            proc = _watch(watched, out, state)
            if i % 4 == 0:  # any moment, start-up included
                time.sleep(rng.uniform(0.0, 1.0))
            else:  # once it runs (its first checkpoint is written at start), a while into its work
                _wait_for_checkpoint(state, proc)
                time.sleep(rng.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=WAIT)
            assert time.monotonic() < deadline
            i += 1
        assert writer.wait(timeout=WAIT) == 0
        delivered_before_last = len(out.read_bytes().splitlines())
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    final = _watch(watched, out, state, "--exit-idle", "1.5")
    _, err = final.communicate(timeout=WAIT)
    assert final.returncode == 0, err
    hunted = tmp_path / "hunt.jsonl"
    code = subprocess.run([sys.executable, "-m", "scmwatch", "hunt", str(watched), "--format", "jsonl",
                           "--output", str(hunted)], capture_output=True, timeout=WAIT).returncode
    assert code == 0
    got, want = _keys(out), _keys(hunted)
    assert len(want) > 100  # the simulated attack raises alerts, correlations among them
    assert any(orjson.loads(line).get("correlation") for line in hunted.read_bytes().splitlines())
    assert 0 < delivered_before_last < len(got)  # the killed runs delivered part of them
    assert len(got) == len(set(got)), "an alert was delivered twice"
    ids = [orjson.loads(line)["alert_id"] for line in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids))
    assert set(got) == set(want)
    assert os.path.getsize(state / "checkpoint") > 0
