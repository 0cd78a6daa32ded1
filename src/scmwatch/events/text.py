"""Text plumbing shared by the text-based readers (JSON, XML): sniffing and decoding.

Formats are told apart from the first bytes, so the dispatcher reads a small head first;
``Prefixed`` replays it in front of the rest of the stream. ``TextChunks`` decodes in fixed
chunks and, rather than failing or silently substituting, replaces bytes that are invalid in
the file's encoding with U+FFFD and counts them (kind ``encoding``): one report line per file,
every occurrence counted.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from scmwatch.events.model import ReadStats

CHUNK = 1 << 16
# Bytes per read of the C loops over NDJSON lines and XML events (they split the bytes
# themselves, whatever the block size).
BLOCK = 1 << 20
_SURROGATE = re.compile("[\udc80-\udcff]")  # stand-ins for undecodable bytes (see _stand_in)


def _stand_in(exc: UnicodeError) -> tuple[str, int]:
    """Like ``surrogateescape``, but for every byte: that handler gives up on bytes below 0x80,
    which a UTF-16 text cut in the middle of a code unit ends with."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start:exc.end]
    return "".join(chr(0xDC00 + b) if b >= 0x80 else "\udc80" for b in bad), exc.end


codecs.register_error("scmwatch-stand-in", _stand_in)


def _has_stand_in(chunk: str) -> bool:
    """Whether a decoded chunk holds stand-ins (only they can be surrogates after decoding).

    Asked only of non-ASCII chunks (``str.isascii`` costs nothing); a strict encode rejects any
    surrogate ~10x faster than the regex scans for one (which was 6.8 us per XML event, a
    quarter of the XML reader's time)."""
    try:
        chunk.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.search(chunk) is not None
    return False


class Prefixed(io.RawIOBase):
    """A stream that replays the bytes already read for sniffing, then continues the source."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        readinto = getattr(self._rest, "readinto", None)
        if readinto is not None:  # straight into the caller's buffer: no copy of large reads
            return readinto(buffer) or 0
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_blocks(stream: BinaryIO) -> Iterator[memoryview]:
    """``stream`` in BLOCK-sized reads into one reused buffer (the consumer is done with a
    block when it asks for the next): no new large object, so no fresh pages, per read."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    readinto = stream.readinto  # type: ignore[attr-defined]
    while n := readinto(buf):
        yield view[:n]


def sniff_encoding(head: bytes) -> str | None:
    """UTF-8 (default), UTF-8/16 by BOM, UTF-16 by its NUL pattern; None for binary content."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if b"\x00" in sample:
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        if len(sample) >= 4 and odd > len(sample) // 4 and even == 0:
            return "utf-16-le"
        if len(sample) >= 4 and even > len(sample) // 4 and odd == 0:
            return "utf-16-be"
        return None
    return "utf-8"


class TextChunks:
    """Decoded text of a binary stream, chunk by chunk, with invalid bytes replaced and counted."""

    def __init__(self, name: str, stream: BinaryIO, encoding: str, stats: ReadStats) -> None:
        raw = stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream, CHUNK)  # type: ignore[arg-type]
        self._text = io.TextIOWrapper(raw, encoding=encoding, errors="scmwatch-stand-in", newline="")
        self._name = name
        self._stats = stats
        self._reported = False

    def read(self, line: int | None = None) -> str:
        """The next chunk ('' at the end); ``line`` locates the first bad byte in the report."""
        chunk = self._text.read(CHUNK)
        self._stats.bytes += len(chunk)
        if not chunk.isascii() and _has_stand_in(chunk):
            bad = len(_SURROGATE.findall(chunk))
            if not self._reported:
                self._reported = True
                self._stats.error(
                    self._name,
                    "encoding",
                    "bytes invalid in the file's encoding (replaced with U+FFFD)",
                    line,
                )
                bad -= 1
            self._stats.errors["encoding"] += bad
            chunk = _SURROGATE.sub("\ufffd", chunk)
        return chunk

