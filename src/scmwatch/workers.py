"""Forked worker processes for ``--jobs``, without ``multiprocessing``: each worker runs one
function that sends its results back through a pipe of its own; the parent reads them between
its own units (:meth:`Workers.finished`) and at the end (:meth:`Workers.rest`).

Why not ``multiprocessing.Pool``: on a short hunt (the EVTX attack samples x5, 1,390 files, all
SigmaHQ, ``--jobs 2``) the parent spent 12-18 ms between the fork and its own first unit (the
pool's three handler threads, eight semaphores, a pipe each way) after 5-9 ms importing the
package, all while the forked worker waited for its first task; the pool's result-handler
thread then took the GIL from the hunting parent for every result. And a worker that died (the
OOM killer, a crash in a C extension) was replaced by a fresh one while its task was lost: the
hunt waited forever, deaf to SIGTERM. Here the worker starts on its work as soon as it is
forked, results are read by the parent's own thread when it looks, and a worker that ends
without saying it is done raises :class:`WorkerLost` in the parent.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import select
import signal
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

_LENGTH = struct.Struct("<Q")
# A result pipe's buffer: a worker whose result does not fit waits until the parent has finished
# its own unit and reads; a batch's result is a few KB (its spilled runs are files).
PIPE_BYTES = 1 << 20
_RESULT, _ERROR, _DONE = 0, 1, 2
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def stops_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM / SIGHUP back for a critical section, then deliver them.

    By Python-level handlers that only record them: blocking them with ``pthread_sigmask``
    holds them back from the calling thread only, and another thread of the process that does
    not block them (the hunt's stat and progress threads) takes the kernel's signal at once,
    after which Python runs the handler in the main thread at its next instruction. Only the
    main thread can set handlers, and only it runs them: elsewhere nothing is deferred.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before = {s: signal.signal(s, lambda num, _frame: caught.append(num)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for num in dict.fromkeys(caught):
            signal.raise_signal(num)


class WorkerLost(RuntimeError):
    """A worker process ended before its work was done (killed, crashed): its results are lost."""


class FileLock:
    """A lock between forked processes: a POSIX record lock on an unlinked temporary file. Such
    a lock belongs to a process, so a forked child does not inherit it and excludes its parent;
    ``multiprocessing``'s lock would cost its package's import (5-9 ms) before the fork."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()

    def __enter__(self) -> FileLock:
        fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)


class _Worker:
    __slots__ = ("pid", "fd", "buffer", "done", "status")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.buffer = bytearray()
        self.done = False
        self.status: int | None = None  # waitpid's, once reaped


class Workers:
    """``count`` forked processes, each running ``work(send)`` and then exiting; ``send(obj)``
    pickles ``obj`` to this process, which gets them from :meth:`finished` and :meth:`rest`. An
    exception ``work`` raises is raised here when it comes in. The caller defers the stop
    signals while this forks and until it holds the object (a Ctrl-C in between would leave a
    worker no one stops), and blocks them for the workers, which inherit the mask; ``work`` sets
    the worker's own."""

    def __init__(self, count: int, work: Callable[[Callable[[Any], None]], None]) -> None:
        self._workers: list[_Worker] = []
        try:
            for _ in range(count):
                read, write = os.pipe()
                _grow(write)
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child's side, measured by the results it sends
                    os.close(read)
                    for w in self._workers:
                        os.close(w.fd)
                    _child(write, work)
                os.close(write)
                os.set_blocking(read, False)
                self._workers.append(_Worker(pid, read))
        except BaseException:
            self.terminate()
            raise

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def finished(self) -> Iterator[Any]:
        """The results sent so far, without waiting for more."""
        return self._take(0)

    def rest(self) -> Iterator[Any]:
        """Every result still to come, until each worker has said it is done."""
        while any(not w.done for w in self._workers):
            yield from self._take(None)

    def _take(self, timeout: int | None) -> Iterator[Any]:
        poller = select.poll()
        waiting = {w.fd: w for w in self._workers if not w.done}
        if not waiting:
            return
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(timeout):
            w = waiting[fd]
            ended = _drain(w)
            yield from self._messages(w)
            if ended and not w.done:
                self._reap(w)
                raise WorkerLost(f"a hunt worker process (pid {w.pid}) ended before its work was done: "
                                 f"{_describe(w.status)}")

    def _messages(self, w: _Worker) -> Iterator[Any]:
        buf = w.buffer
        while len(buf) >= _LENGTH.size:
            (n,) = _LENGTH.unpack_from(buf)
            end = _LENGTH.size + n
            if len(buf) < end:
                return
            kind, obj = pickle.loads(memoryview(buf)[_LENGTH.size:end])  # noqa: S301 - our own child
            del buf[:end]
            if kind == _RESULT:
                yield obj
            elif kind == _ERROR:
                raise obj
            else:
                w.done = True

    def _reap(self, w: _Worker) -> None:
        if w.status is None:
            while True:
                try:
                    w.status = os.waitpid(w.pid, 0)[1]
                    break
                except ChildProcessError:
                    w.status = 0
                    break
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    continue
        if w.fd >= 0:
            os.close(w.fd)
            w.fd = -1

    def join(self) -> None:
        """Wait for the workers, done with their work, to exit (the kernel frees each one's heap:
        done after the merge, not before it)."""
        for w in self._workers:
            self._reap(w)

    def terminate(self) -> None:
        """Stop every worker still running (SIGTERM ends a worker at once) and wait for it."""
        for w in self._workers:
            if w.status is None:
                try:
                    os.kill(w.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self.join()


def _grow(fd: int) -> None:
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        try:
            fcntl.fcntl(fd, setsize, PIPE_BYTES)
        except OSError:
            pass


def _drain(w: _Worker) -> bool:
    """Read what the worker's pipe holds; True at its end (the worker closed it: it exited). A
    message whose start is read is read to its end, waiting for it: its worker is writing it
    (a result larger than the pipe would otherwise wait for the parent's next look, one batch of
    the parent's later, per pipe's worth)."""
    while True:
        try:
            data = os.read(w.fd, PIPE_BYTES)
        except BlockingIOError:
            if not _incomplete(w.buffer):
                return False
            select.select([w.fd], [], [])
            continue
        if not data:
            return True
        w.buffer += data


def _incomplete(buf: bytearray) -> bool:
    """Whether ``buf`` ends inside a message."""
    at = 0
    while at < len(buf):
        if len(buf) - at < _LENGTH.size:
            return True
        at += _LENGTH.size + _LENGTH.unpack_from(buf, at)[0]
    return at > len(buf)


def _send(fd: int, kind: int, obj: Any) -> None:
    data = pickle.dumps((kind, obj), pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _child(fd: int, work: Callable[[Callable[[Any], None]], None]) -> None:  # pragma: no cover - child
    """A worker's whole life: ``work``, then done (exit 0) or its exception sent (exit 1). It
    leaves with ``os._exit``: nothing of the parent's (buffers, atexit handlers) runs twice."""
    code = 1
    try:
        work(lambda obj: _send(fd, _RESULT, obj))
        _send(fd, _DONE, None)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            _send(fd, _ERROR, exc)
        except BaseException:  # noqa: BLE001 - not picklable: its text then
            try:
                _send(fd, _ERROR, RuntimeError(f"{type(exc).__name__}: {exc}"))
            except BaseException:  # noqa: BLE001, S110 - the parent sees the pipe end: WorkerLost
                pass
    finally:
        os._exit(code)


def _describe(status: int | None) -> str:
    if status is None:
        return "unknown status"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
