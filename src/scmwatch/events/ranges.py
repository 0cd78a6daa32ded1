"""Ranges of one large file, each read on its own: EVTX by chunk ranges, NDJSON by line ranges.

One 900k-event file used to be one unit of work, so it ran on one core whatever ``--jobs``
said. :func:`split_file` cuts such a file into :class:`FileRange` units that workers read in
parallel, and :func:`read_range` reads one of them with the same reader code as the whole file:

* **EVTX**: the 64 KiB chunks are independent (each carries its own string and template
  tables), so a range is the file header plus chunks ``[start, end)``, handed to the ``evtx``
  parser as one seekable file (:class:`_ChunkView`). The parser (``PyEvtxParser``) has no
  chunk-range API; it takes any file-like object and counts chunks from the stream length, so
  the view is exact and costs no copy. Measured (bench/split_throughput.py), the raw parse
  through 8 views takes 0.98-1.28 x the time through the path (the parser calls back into
  Python 4-5 times per chunk; a copy of each range in memory instead: 1.4 x), a few per cent
  of a hunt, whose matching costs 4-6 x the raw parse. Records keep
  their record ids, which are in the records themselves. The view's header says how many of
  the file's declared chunks it holds, so a preallocated (zeroed) tail is judged exactly as in
  the whole file.
* **NDJSON** (UTF-8 without BOM, one object per line: the reader's fast path): byte ranges
  that start at line starts; each range knows the line number of its first line, so provenance
  (``record_id`` = line) is the whole file's. That number is counted lazily
  (:class:`LineCounter`): only when the range is handed to a worker (pickled) or read here, the
  newlines of the ranges before it counted once, in order. Counting the whole file before the
  first range started cost ~0.35 s per GB of serial parent time (0.9 s on a loaded machine)
  before either worker began, ~4-10 % of a ``--jobs 2`` hunt of 1 GB; handed out lazily, range
  0 starts at once and the count of range k-1 overlaps the hunting of ranges before it.

Everything else (a damaged, truncated or compressed file, an archive member, a URL, a pipe,
JSON arrays, UTF-16 or BOM-prefixed text, XML, Zeek TSV) is not split: :func:`split_file`
returns None and the file stays one unit. A range that meets any read problem is not trusted
either: the hunt then reads its whole file again (``scmwatch.split``), so problems are
reported exactly as for a whole-file read.
"""

from __future__ import annotations

import io
import itertools
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from scmwatch.events.evtx_reader import CHUNK_SIZE, HEADER_SIZE, MAGIC, read_evtx
from scmwatch.events.json_reader import MAX_OBJECT, is_object_line, read_json, read_ndjson_lines
from scmwatch.events.model import Event, ReadGate, ReadStats
from scmwatch.events.read import SIMULATOR_LABELS, SNIFF, InputFile, is_zeek_tsv
from scmwatch.events.text import CHUNK, sniff_encoding
from scmwatch.events.zeek_reader import zeek_log_type
from scmwatch.native import pure_python

try:
    from scmwatch.events import _lines
except ImportError:  # no compiler at install time
    _lines = None  # type: ignore[assignment]

COUNT_BLOCK = 8 << 20  # bytes per read when counting lines


@dataclass(frozen=True, slots=True)
class FileRange:
    """One range of a large file: chunks ``[start, end)`` (EVTX) or bytes ``[start, end)`` (NDJSON)."""

    inp: InputFile
    fmt: str  # "evtx" or "ndjson"
    part: int  # 0 .. parts-1, in file order
    parts: int
    start: int
    end: int
    declared: int = 0  # EVTX: the file header's chunk count
    counted: int = 0  # NDJSON: the line number of the range's first line, once counted (0: ask lines)
    zeek_path: str | None = None  # NDJSON: the Zeek log type the file name says (read_json)
    lines: LineCounter | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.inp.name

    @property
    def first_line(self) -> int:
        """NDJSON: the line number of the range's first line (counted now if not yet)."""
        if self.counted or self.lines is None:
            return self.counted or 1
        return self.lines.first_line(self.part)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Sent to a worker with its line number resolved (the counter stays in this process)."""
        counted = self.first_line if self.fmt == "ndjson" else 0
        return (FileRange, (self.inp, self.fmt, self.part, self.parts, self.start, self.end, self.declared,
                            counted, self.zeek_path))

    @property
    def nbytes(self) -> int:
        """The file bytes this range stands for (the header counts in the first EVTX range)."""
        if self.fmt == "evtx":
            return (self.end - self.start) * CHUNK_SIZE + (HEADER_SIZE if self.part == 0 else 0)
        return self.end - self.start


def splittable(inp: InputFile) -> bool:
    """A plain file on disk: no archive member, pipe, URL or ``.gz``."""
    return inp.member is None and not inp.pipe and not inp.url and not inp.name.lower().endswith(".gz")


def split_file(inp: InputFile, parts: int, min_bytes: int,
               weights: Sequence[int] | None = None) -> list[FileRange] | None:
    """``inp`` as up to ``parts`` ranges if it is a splittable EVTX or NDJSON file of at least
    ``min_bytes``; None otherwise (also when it cannot be read: the whole-file read reports that).
    ``weights`` (``parts`` positive integers, in file order): the ranges' relative sizes; equal
    by default."""
    weights = list(weights) if weights is not None and len(weights) == parts else [1] * parts
    if parts < 2 or (inp.size is not None and inp.size < min_bytes) or not splittable(inp):
        return None  # a walk's small file: decided by its size alone (the client asks per file)
    try:
        size = os.path.getsize(inp.path)
        if size < min_bytes:
            return None
        with open(inp.path, "rb") as fh:
            head = fh.read(max(SNIFF, HEADER_SIZE))
            if head.startswith(MAGIC):
                return _evtx_ranges(inp, head, size, weights)
            return _ndjson_ranges(inp, fh, head, size, weights)
    except OSError:
        return None


def _cuts(total: int, weights: list[int]) -> list[int]:
    """Where ranges of ``weights`` relative sizes start in ``[0, total)`` (the first at 0)."""
    whole = sum(weights)
    out, acc = [], 0
    for w in weights:
        out.append(total * acc // whole)
        acc += w
    return out


def _evtx_ranges(inp: InputFile, head: bytes, size: int, weights: list[int]) -> list[FileRange] | None:
    """Chunk ranges over the chunks the header declares; the last range also takes any chunks
    past them (a preallocated tail). A truncated file (a partial chunk, or fewer chunks than
    declared) is not split: its whole-file read reports the truncation."""
    if len(head) < HEADER_SIZE:
        return None
    declared = struct.unpack_from("<H", head, 42)[0]
    chunks, rest = divmod(size - HEADER_SIZE, CHUNK_SIZE)
    if rest or chunks < declared or declared < 2:
        return None
    if len(weights) > declared:
        weights = [1] * declared
    bounds = sorted(set(_cuts(declared, weights))) + [chunks]
    parts = len(bounds) - 1
    return [FileRange(inp, "evtx", k, parts, bounds[k], bounds[k + 1], declared) for k in range(parts)]


def _ndjson_ranges(inp: InputFile, fh: Any, head: bytes, size: int,
                   weights: list[int]) -> list[FileRange] | None:
    """Line-aligned byte ranges of an NDJSON file that the JSON reader would read line by line
    (UTF-8, no BOM, the first non-blank line one whole object); the first range holds that line."""
    if head.startswith(SIMULATOR_LABELS) or sniff_encoding(head) != "utf-8":
        return None
    text = head.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if text[:1] != "{" or is_zeek_tsv(text):
        return None
    fh.seek(0)
    first = fh.readline(MAX_OBJECT)
    while first and not first.strip():
        first = fh.readline(MAX_OBJECT)
    if not (first.lstrip()[:1] == b"{" and first.endswith(b"\n") and is_object_line(first)):
        return None
    bounds = [0]
    floor = fh.tell()
    for cut in _cuts(size, weights)[1:]:
        at = _line_start(fh, max(cut, floor, bounds[-1] + 1))
        if at >= size:
            break
        if at > bounds[-1]:
            bounds.append(at)
    if len(bounds) < 2:
        return None
    bounds.append(size)
    lines = LineCounter(inp.path, bounds)
    zeek = zeek_log_type(inp.inner_name)
    n = len(bounds) - 1
    return [FileRange(inp, "ndjson", k, n, bounds[k], bounds[k + 1], zeek_path=zeek, lines=lines)
            for k in range(n)]


def _line_start(fh: Any, at: int) -> int:
    """The first line start at or after byte ``at`` (a line starts after each ``\\n``)."""
    fh.seek(at - 1)
    while True:
        line = fh.readline(MAX_OBJECT)
        if not line or line.endswith(b"\n"):
            return fh.tell()


class LineCounter:
    """The line number at each range start of one NDJSON file, counted on demand: asking for
    range k counts the newlines of the ranges not counted yet before it, once each, in order
    (ranges are handed out in file order, so each ask counts about one range).

    Shared by the threads and the forked processes that ask: a pool hands out a range from a
    thread of its own, or its workers take their ranges from a plan they inherit instead of
    having them pickled. The counts are in shared memory under a process-shared lock, so each
    range is counted once, by whichever process asks first; counted per process, each of two
    workers counted the whole file before its last range (0.17-0.20 s of CPU per GB, twice).

    Counting newlines runs at memory speed (``bytes.count``): measured 2.8 GB/s from the page
    cache on this machine, against ~80 MB/s to hunt NDJSON with ``--jobs 1``."""

    def __init__(self, path: str, bounds: list[int]) -> None:
        import multiprocessing  # ~5 ms: only a split file needs it

        mp = multiprocessing.get_context("fork")
        self.path = path
        self.bounds = bounds  # byte offsets of the range starts, then the file size
        self._lines = mp.RawArray("q", len(bounds) - 1)  # line number at each range start; 0: not yet
        self._lines[0] = 1
        self._lock = mp.Lock()

    @property
    def known(self) -> list[int]:
        """The line numbers counted so far, at bounds[0], bounds[1], ..."""
        return list(itertools.takewhile(bool, self._lines))

    def first_line(self, part: int) -> int:
        lines = self._lines
        if lines[part]:
            return lines[part]
        with self._lock:
            last = part  # the last range start counted
            while not lines[last]:
                last -= 1
            if last < part:
                with open(self.path, "rb", buffering=0) as fh:
                    view = memoryview(bytearray(COUNT_BLOCK))
                    for k in range(last, part):
                        lines[k + 1] = lines[k] + _newlines(fh, view, self.bounds[k], self.bounds[k + 1])
            return lines[part]


def count_newlines(path: str, start: int, end: int) -> int:
    """Newlines in bytes ``[start, end)`` of the file ``path``: where a cluster's workers count
    an NDJSON file's lines, each range's apart, so that the client reads none of the file
    (``scmwatch.cluster``); the line number of range k is 1 + the counts of ranges 0..k-1."""
    with open(path, "rb", buffering=0) as fh:
        return _newlines(fh, memoryview(bytearray(COUNT_BLOCK)), start, end)


def _newlines(fh: Any, view: memoryview, start: int, end: int) -> int:
    """Newlines in bytes ``[start, end)`` of the file, read in ``view``-sized blocks."""
    count = newlines_in
    fh.seek(start)
    left = end - start
    n = 0
    while left > 0:
        got = fh.readinto(view[:min(left, len(view))])
        if not got:
            break
        n += count(view.obj, got)
        left -= got
    return n


def py_newlines_in(buf: Any, end: int) -> int:
    """The newline bytes in ``buf[:end]``: the Python twin of ``events/_lines.c``, which
    counts the same at 0.19-0.20 s per GB read against 0.48-0.56 s (983 MB NDJSON, CPU)."""
    return buf.count(b"\n", 0, end)


newlines_in = py_newlines_in
if _lines is not None and not pure_python():
    newlines_in = _lines.count_newlines


def read_range(unit: FileRange, stats: ReadStats, gate: ReadGate | None = None) -> Iterator[Event]:
    """The events of one range, read by the same readers as the whole file. The first range
    counts the file (``stats.files``); each counts its own bytes, so the sums are the file's."""
    if unit.part == 0:
        stats.files += 1
    try:
        if unit.fmt == "evtx":
            yield from _evtx_range(unit, stats, gate)
        else:
            yield from _ndjson_range(unit, stats, gate)
    except Exception as exc:  # noqa: BLE001 - reported; the hunt then reads the whole file instead
        stats.error(unit.name, "reader-error", f"{type(exc).__name__}: {str(exc)[:200]} (in range "
                    f"{unit.part + 1} of {unit.parts})")


def _evtx_range(unit: FileRange, stats: ReadStats, gate: ReadGate | None) -> Iterator[Event]:
    view = _ChunkView(unit)
    before = stats.bytes
    try:
        yield from read_evtx(unit.name, view, stats, named=unit.inp.named, gate=gate)
    finally:
        view.close()
        stats.bytes = before + unit.nbytes


def _ndjson_range(unit: FileRange, stats: ReadStats, gate: ReadGate | None) -> Iterator[Event]:
    with io.BufferedReader(_Window(unit.inp.path, unit.start, unit.end), CHUNK) as stream:
        if unit.part == 0:
            yield from read_json(unit.name, stream, stats, "utf-8", unit.zeek_path, gate)
        else:
            yield from read_ndjson_lines(unit.name, stream, stats, unit.first_line, unit.zeek_path, gate)


class _Window(io.RawIOBase):
    """Bytes ``[start, end)`` of a file, read with ``preadv`` into the caller's buffer: ``pread``
    gave each 1 MiB block as a new bytes object copied into that buffer again (callgrind, 128 MB
    of NDJSON split: 134 MB copied by ``memoryview`` besides the reads)."""

    def __init__(self, path: str, start: int, end: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._pos = start
        self._end = end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self._fd, [memoryview(buffer).cast("B")[:n]], self._pos)
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class _ChunkView(io.RawIOBase):
    """An EVTX range as one seekable file: the file header, its chunk count set to the declared
    chunks this range holds, then chunks ``[start, end)`` of the file."""

    def __init__(self, unit: FileRange) -> None:
        self._fd = os.open(unit.inp.path, os.O_RDONLY)
        header = bytearray(os.pread(self._fd, HEADER_SIZE, 0))
        held = max(0, min(unit.declared - unit.start, unit.end - unit.start))
        struct.pack_into("<H", header, 42, held)
        self._header = bytes(header)
        self._base = unit.start * CHUNK_SIZE  # file offset = view offset + base, past the header
        self._size = HEADER_SIZE + (unit.end - unit.start) * CHUNK_SIZE
        self._pos = 0
        self._block = b""  # the chunk last read, at view offset _block_at
        self._block_at = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            offset += self._size
        if offset < 0:
            raise OSError("negative seek position")
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        pos = self._pos
        end = self._size if n is None or n < 0 else min(self._size, pos + n)
        if pos >= end:
            return b""
        if pos < HEADER_SIZE:
            data = self._header[pos:min(end, HEADER_SIZE)]
            if end > HEADER_SIZE:
                data += os.pread(self._fd, end - HEADER_SIZE, self._base + HEADER_SIZE)
        else:
            # the parser reads a chunk in 8, 16, 32 and 8 KiB pieces: one pread per chunk
            at = pos - (pos - HEADER_SIZE) % CHUNK_SIZE
            if at != self._block_at:
                self._block = os.pread(self._fd, CHUNK_SIZE, self._base + at)
                self._block_at = at
            if end <= at + len(self._block):
                data = self._block[pos - at:end - at]
            else:
                data = os.pread(self._fd, end - pos, self._base + pos)
        self._pos = pos + len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
