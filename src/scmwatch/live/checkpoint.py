"""The state directory: one checkpoint file, written atomically, and a lock.

``STATE/checkpoint`` is a pickle of one dict: source positions, the
correlation state (the correlator with its windows, reorder buffer and entity links, the
watermark merge's held candidates, each source's process-lineage table), the recently
delivered alert ids and each delivery target's own state. It is written as
``checkpoint.tmp`` + ``fsync`` + ``rename`` + ``fsync`` of the directory, so a ``kill -9`` or a
power cut leaves the previous checkpoint or the new one, never a torn file. The pickle is our
own file in a directory the operator chose (like a config file); log content reaches it only as
values inside events.

``STATE/lock`` is held (``flock``) while a watcher runs: a second watcher on the same state
directory is refused with a one-line error. The kernel drops the lock when the process dies,
so ``kill -9`` never leaves it stale.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from typing import Any

FORMAT = 1  # bumped when the checkpoint's layout changes: an older one is refused, not misread


class StateError(Exception):
    """The state directory cannot be used (one line for the operator)."""


class StateDir:
    """The watcher's state directory: lock, checkpoint, and a place for spools."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{path}: cannot create the state directory: {exc.strerror}") from None
        self._lock_fd: int | None = None
        self.bytes = 0  # size of the last checkpoint written or read

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.path, "checkpoint")

    def spool(self, source: str) -> str:
        """Where a network listener spools the batches of ``source`` (a followed directory)."""
        return os.path.join(self.path, "spool", source)

    def lock(self) -> None:
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise StateError(f"{self.path}: in use by another watcher (pid {other or '?'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none yet."""
        try:
            with open(self.checkpoint_path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.checkpoint_path}: cannot read: {exc.strerror}") from None
        try:
            state = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing
            raise StateError(f"{self.checkpoint_path}: not a readable checkpoint ({type(exc).__name__}); "
                             "move it away to start over") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise StateError(f"{self.checkpoint_path}: written by another scmwatch version; move it away "
                             "to start over")
        self.bytes = len(data)
        return state

    def save(self, state: dict[str, Any]) -> int:
        """Write ``state`` atomically and durably; returns its size in bytes."""
        state = {**state, "format": FORMAT}
        data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        tmp = self.checkpoint_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.checkpoint_path)
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.bytes = len(data)
        return len(data)
