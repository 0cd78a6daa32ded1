"""Input files as the case knows them: by content (sha256), not by path."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, BinaryIO

from scmwatch.events.evtx_reader import MAGIC as EVTX_MAGIC
from scmwatch.events.read import InputFile

__all__ = ["EVTX_MAGIC", "file_sha256", "hashed_while_read"]

Digest = tuple[str | None, int | None, bytes]


def file_sha256(inp: Any) -> tuple[str | None, int | None, bytes]:
    """(sha256, size, first bytes) of an input (a file or an archive member); (None, None, b"")
    if unreadable."""
    h = hashlib.sha256()
    size = 0
    head = b""
    try:
        with inp.open() as fh:
            while chunk := fh.read(1 << 20):
                if not size:
                    head = chunk[:16]
                h.update(chunk)
                size += len(chunk)
    except (OSError, zipfile.BadZipFile):
        return None, None, b""
    return h.hexdigest(), size, head


def hashed_while_read(inp: InputFile) -> tuple[InputFile, Callable[[], Digest]]:
    """``inp`` as an input that hashes its bytes as its reader reads them, and what then gives
    its :func:`file_sha256`: the hash taken on the way when the reader read it as one stream
    (text formats, URLs, archive members, ``.gz``: a URL is fetched once, not twice), else the
    file read again (a plain EVTX file, which its reader reads by path: from the page cache)."""
    teed = _Teed(*(getattr(inp, f.name) for f in fields(InputFile)))

    def digest() -> Digest:
        if len(teed.tees) == 1 and teed.tees[0].digest is not None:
            return teed.tees[0].digest
        return file_sha256(inp)

    return teed, digest


@dataclass(frozen=True, slots=True)
class _Teed(InputFile):
    tees: list[_Tee] = field(default_factory=list, compare=False, repr=False)

    def open(self) -> BinaryIO:
        tee = _Tee(InputFile.open(self))
        self.tees.append(tee)
        return tee  # type: ignore[return-value]


class _Tee(io.RawIOBase):
    """A stream that hashes the bytes read through it; closed, it reads and hashes what its
    reader left, so that its digest is the whole stream's, as :func:`file_sha256` reads it."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = b""
        self.digest: Digest | None = None  # once closed after reading to the end

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._take(data)
        return n

    def _take(self, data: bytes) -> None:
        if len(self._head) < 16:
            self._head += data[:16 - len(self._head)]
        self._hash.update(data)
        self._size += len(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            while chunk := self._raw.read(1 << 20):
                self._take(chunk)
            self.digest = (self._hash.hexdigest(), self._size, self._head)
        except (OSError, EOFError, zipfile.BadZipFile):
            pass  # left to file_sha256, which says it as a local run does
        finally:
            self._raw.close()
            super().close()
