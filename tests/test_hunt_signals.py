"""Leftovers (issue 11, item 14): SIGTERM/SIGINT remove the spill directory, and a hunt removes
the directories of earlier hunts that died where no cleanup could run.

The signal tests run the real CLI in a subprocess under a private ``TMPDIR``, wait until its
spill directory exists (the hunt is running), send the signal and look at what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scmwatch import rules as pack
from scmwatch.hunt import run_hunt
from scmwatch.sigma import load_rules
from scmwatch.spill import PREFIX, SpillDir, remove_stale
from service_logs import system_logs

WAIT = 60  # seconds: generous bounds that only turn a hang into a failure


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize(("sig", "jobs", "code"),
                         [(signal.SIGTERM, "1", 143), (signal.SIGINT, "2", 130), (signal.SIGTERM, "2", 143)])
def test_signal_removes_the_spill_dir_and_writes_the_summary(tmp_path, sig, jobs, code):
    spill_parent = tmp_path / "tmp"
    spill_parent.mkdir()
    logs = system_logs(tmp_path, 2, 20_000)
    out, summary = tmp_path / "alerts.jsonl", tmp_path / "summary.json"
    env = dict(os.environ, TMPDIR=str(spill_parent))
    argv = ["hunt", *logs, "--jobs", jobs, "--format", "jsonl", "-o", str(out), "--summary", str(summary)]
    proc = subprocess.Popen([sys.executable, "-m", "scmwatch", *argv], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + WAIT
    while not any(p.name.startswith(PREFIX) for p in spill_parent.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the hunt ended before it was signalled"
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == code, err
    assert list(spill_parent.iterdir()) == []
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    s = json.loads(summary.read_text())
    assert s["exit_code"] == code and s["error"] in ("interrupted", "terminated (SIGTERM)")
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("scmwatch: ")


def test_a_stop_right_after_the_spill_dir_is_made_still_removes_it(tmp_path, monkeypatch):
    """A Ctrl-C that lands as the spill directory has just been made (a loaded host preempts the
    hunt when its mkdir returns, and the signal is taken when it runs again) still removes it:
    the signal waits until the directory is the hunt's to clean up."""
    made = []
    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        path = real(*args, **kwargs)
        made.append(path)
        signal.raise_signal(signal.SIGINT)
        return path

    logs = system_logs(tmp_path, 1, 10)
    ruleset = load_rules([str(pack.PACK_DIR)])
    spill_parent = tmp_path / "tmp"
    spill_parent.mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(KeyboardInterrupt):
        run_hunt(logs, ruleset, spill_dir=str(spill_parent))
    assert len(made) == 1 and list(spill_parent.iterdir()) == []


def test_stale_spill_dirs_of_dead_hunts_are_removed_at_the_next_start(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f"{PREFIX}{dead}-abcd1234"
    stale.mkdir()
    (stale / "hits-1-0.pkl").write_bytes(b"x" * 1000)
    empty = tmp_path / f"{PREFIX}{dead}-empty000"
    empty.mkdir()
    absurd = tmp_path / f"{PREFIX}{10**30}-zzz"  # no system has this pid
    absurd.mkdir()
    live = tmp_path / f"{PREFIX}{os.getppid()}-live0000"  # a running process (pytest's parent)
    live.mkdir()
    foreign = tmp_path / f"{PREFIX}memory-out-1"  # another tool's name: not ours to judge
    foreign.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("keep")
    link = tmp_path / f"{PREFIX}{dead}-link0000"
    link.symlink_to(target)
    spill = SpillDir(str(tmp_path))
    try:
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([live.name, foreign.name, "elsewhere", link.name, Path(spill.path).name])
        assert (target / "keep").exists()
        assert Path(spill.path).name.startswith(f"{PREFIX}{os.getpid()}-")
        assert remove_stale(str(tmp_path)) == 0  # its own directory is never stale
    finally:
        spill.cleanup()
