"""Forked ``--jobs`` workers (``scmwatch.workers``): every result arrives, a worker's exception
is raised in the parent, a worker that dies is reported (not waited for), a stopped hunt stops
its workers, and the plan's lock excludes a forked process. Real processes throughout; the CLI
cases run in a subprocess with a deadline, so that a hang fails instead of blocking the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scmwatch.workers import FileLock, WorkerLost, Workers
from service_logs import system_logs

WAIT = 60  # seconds: generous bounds that only turn a hang into a failure


def _send_three(send) -> None:
    for i in range(3):
        send((os.getpid(), i))


def test_every_result_of_every_worker_arrives_and_the_workers_exit() -> None:
    w = Workers(3, _send_three)
    got = list(w.finished()) + list(w.rest())
    w.join()
    assert len(w.pids) == 3 and len(set(w.pids)) == 3
    assert sorted(got) == sorted((pid, i) for pid in w.pids for i in range(3))
    for pid in w.pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _fail(send) -> None:
    send("before")
    raise ValueError("no such thing")


def test_an_exception_in_a_worker_is_raised_here_after_what_it_sent() -> None:
    w = Workers(1, _fail)
    got = []
    with pytest.raises(ValueError, match="no such thing"):
        for r in w.rest():
            got.append(r)
    w.terminate()
    assert got == ["before"]


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not today")


def _fail_unpicklably(send) -> None:
    raise _Unpicklable("deep trouble")


def test_an_exception_that_cannot_be_pickled_arrives_as_its_text() -> None:
    w = Workers(1, _fail_unpicklably)
    with pytest.raises(RuntimeError, match="_Unpicklable: deep trouble"):
        list(w.rest())
    w.terminate()


def _die(send) -> None:
    send("one")
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_that_dies_is_reported_not_waited_for() -> None:
    w = Workers(1, _die)
    got = []
    with pytest.raises(WorkerLost, match=r"pid \d+\) ended before its work was done: killed by SIGKILL"):
        for r in w.rest():
            got.append(r)
    assert got == ["one"]
    with pytest.raises(ChildProcessError):  # reaped
        os.waitpid(w.pids[0], os.WNOHANG)


def _sleep(send) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    time.sleep(WAIT)


def test_terminate_stops_a_busy_worker() -> None:
    w = Workers(2, _sleep)
    assert list(w.finished()) == []
    t0 = time.monotonic()
    w.terminate()
    assert time.monotonic() - t0 < WAIT / 2
    for pid in w.pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_the_file_lock_excludes_a_forked_process(tmp_path: Path) -> None:
    """The child holds the lock while it writes a mark; the parent, asking for the lock once
    the child said it has it, gets it only after the mark is there."""
    lock = FileLock()
    mark = tmp_path / "mark"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            with lock:
                os.write(ready_w, b"x")
                time.sleep(0.3)
                mark.write_text("held")
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    with lock:
        assert mark.read_text() == "held"
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _cli_with_worker(tmp_path: Path, worker_body: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``scmwatch hunt --jobs 2`` in a subprocess whose forked worker runs ``worker_body``
    instead of hunting (``hunt._work`` replaced before the fork)."""
    logs = system_logs(tmp_path, 4, 500)
    out, summary = tmp_path / "alerts.jsonl", tmp_path / "summary.json"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import scmwatch.hunt as hunt
        from scmwatch.cli import main

        def _work(send):
            {worker_body}

        hunt._work = _work
        sys.exit(main(sys.argv[1:]))
    """)
    argv = ["hunt", *logs, "--jobs", "2", "--format", "jsonl", "-o", str(out), "--summary", str(summary)]
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=WAIT)
    return proc, out, summary


def test_cli_reports_a_worker_that_died_once_and_writes_no_alerts(tmp_path: Path) -> None:
    proc, out, summary = _cli_with_worker(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if "worker" in x]
    assert len(lines) == 1 and "killed by SIGKILL" in lines[0] and lines[0].startswith("scmwatch: ")
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    s = json.loads(summary.read_text())
    assert s["exit_code"] == 1 and "killed by SIGKILL" in s["error"]


def test_cli_reports_a_worker_exception_once(tmp_path: Path) -> None:
    proc, out, summary = _cli_with_worker(tmp_path, "raise ValueError('a bug in the worker')")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("a bug in the worker") == 1
    assert "scmwatch: internal error: ValueError: a bug in the worker" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_a_message_begun_is_read_to_its_end() -> None:
    """When the parent looks (between its own units) while a worker is writing a result, it
    reads that result to its end then, instead of leaving the rest for its next look, one of
    its batches later (here the writer pauses halfway)."""
    import pickle
    import threading

    from scmwatch import workers

    data = pickle.dumps((workers._RESULT, b"x" * 30_000))
    framed = workers._LENGTH.pack(len(data)) + data
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.write(write, framed[:1000])

    def rest() -> None:
        time.sleep(0.3)
        with os.fdopen(write, "wb") as fh:
            fh.write(framed[1000:])

    t = threading.Thread(target=rest)
    t.start()
    w = workers._Worker(0, read)
    ended = workers._drain(w)
    t.join()
    os.close(read)
    assert not ended or bytes(w.buffer) == framed
    assert bytes(w.buffer[:len(framed)]) == framed
    assert list(Workers._messages(None, w)) == [b"x" * 30_000]  # type: ignore[arg-type]
