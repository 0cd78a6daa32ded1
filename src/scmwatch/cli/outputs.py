"""Output files of a command: never one of its inputs, never left half-written.

``-o`` or ``--summary`` naming a log being read would truncate that log before it is read.
:func:`clash` finds an output that is, or resolves to (symlink, hard link, ``..``), an input
file, lies inside an input directory (the walk would read it), or is named twice; the command
refuses it as a usage error. :class:`AtomicFile` writes to a temporary file in the target's
directory and renames it over the target only on success: a run that fails or is interrupted
leaves the previous file untouched and no partial file behind. Special files (``/dev/null``,
``/dev/stdout``, a FIFO) cannot be renamed over and are written directly.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from typing import IO, Any


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def clash(outputs: Sequence[tuple[str, str]], inputs: Sequence[str]) -> str | None:
    """A one-line reason when an output (``(option, path)``) would overwrite an input, else None."""
    seen: dict[str, str] = {}
    for option, path in outputs:
        if os.path.exists(path) and not os.path.isfile(path):
            continue  # /dev/null, /dev/stdout, a FIFO: written directly, never an input file
        real = _real(path)
        if real in seen:
            return f"{option} {path}: the same file as {seen[real]}"
        seen[real] = f"{option} {path}"
        exists = os.path.lexists(path)
        for inp in inputs:
            rin = _real(inp)
            if real == rin or (exists and os.path.isfile(inp) and _same_file(path, inp)):
                return f"{option} {path}: is the input {inp} (it would be overwritten)"
            if exists and os.path.isdir(rin) and real.startswith(rin.rstrip(os.sep) + os.sep):
                return f"{option} {path}: lies inside the input directory {inp} (it would be read as input)"
    return None


class AtomicFile:
    """``with``-less on purpose: the caller decides between :meth:`commit` and :meth:`discard`.

    ``open()`` returns the file object to write; :meth:`commit` renames it into place (keeping
    the target's permissions, or the umask's for a new file); :meth:`discard` removes it.
    """

    def __init__(self, path: str, binary: bool = False) -> None:
        self.path = path
        self.binary = binary
        self.fh: IO[Any] | None = None
        self._tmp: str | None = None

    def open(self) -> IO[Any]:
        mode = "wb" if self.binary else "w"
        kw: dict[str, Any] = {} if self.binary else {"encoding": "utf-8", "newline": ""}
        try:
            special = not stat.S_ISREG(os.stat(self.path).st_mode)
        except OSError:
            special = False
        if special:
            self.fh = open(self.path, mode, **kw)  # noqa: SIM115 - closed in commit/discard
            return self.fh
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".part",
                                         dir=directory)
        self.fh = os.fdopen(fd, mode, **kw)
        return self.fh

    def commit(self) -> None:
        """Close and move into place; raises OSError (the temporary file is then removed)."""
        fh, self.fh = self.fh, None
        try:
            if fh is not None:
                fh.close()
            if self._tmp is not None:
                os.chmod(self._tmp, _mode_for(self.path))
                os.replace(self._tmp, self.path)
                self._tmp = None
        finally:
            self.discard()

    def discard(self) -> None:
        """Close and remove the temporary file; the target keeps its previous content."""
        fh, self.fh = self.fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _mode_for(path: str) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through an :class:`AtomicFile`; raises OSError."""
    out = AtomicFile(path, binary=True)
    try:
        out.open().write(data)
    except BaseException:
        out.discard()
        raise
    out.commit()
