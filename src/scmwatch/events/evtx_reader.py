"""EVTX: decoded chunk by chunk in C (``_evtx``), with the Rust-backed ``evtx`` package as the
reference and the fallback.

The ``evtx`` package renders every record as JSON text that ``_flatten`` then parses again;
``_evtx.decode_chunk`` reads the chunk's binary XML itself and builds the same fields (see
``_evtx.c``). It decodes only what it is sure to render exactly as the package does; any other
chunk (a damaged record, a rare token or value type) goes whole to the package through a
one-chunk file (:class:`ChunkEvents`), so events, record ids and errors are the package's. The
C path is off with ``scmwatch.native.pure_python()`` or when the extension was not built.
Why: reading was ~35 % of a whole hunt with all of SigmaHQ. Measured in one run on the shared
attack corpus (bench/read_throughput.py, load 1.7): the reader went from 0.82 to 0.98 x the raw
``evtx`` + orjson parse; a hunt with all SigmaHQ (bench/hunt_throughput.py (b)) from 0.291 to
0.322 x. On the shared corpora 637 of the 655 non-empty chunks are decoded in C. With the
decoder's per-chunk value cache and the chunks' events handed out as lists (old and new reader
alternately in one process, all SigmaHQ, load 2.8): the hunt 0.325 -> 0.354 x raw, the decoder
alone 5.5 -> 4.6 us per event (bench/evtx_decode.py).

``PyEvtxParser`` raises for a record it cannot decode and then carries on with the next one,
so each failure is counted and the rest of the file is still read. It silently skips a chunk
that was cut short, so a truncated file is detected separately from the header's chunk count.
It also says nothing when a damaged record size ends a chunk early, or when a chunk the file
header counts has no valid chunk header (zeros): :func:`_audit_chunks` compares the records
read with every chunk header's record-id range and reports each gap.
"""

from __future__ import annotations

import errno
import io
import os
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import evtx

from scmwatch.events.model import Event, ReadGate, ReadStats
from scmwatch.events.normalize import _CORE, SYSTEM_ATTRS, EvtxEvents, from_evtx_dict, from_evtx_json
from scmwatch.native import pure_python

try:
    from scmwatch.events import _evtx
except ImportError:  # no compiler at install time
    _evtx = None  # type: ignore[assignment]
if _evtx is not None:
    _evtx.configure(from_evtx_dict, Event, SYSTEM_ATTRS, _CORE)
DECODE_CHUNK = _evtx.decode_chunk if _evtx is not None and not pure_python() else None

MAGIC = b"ElfFile\x00"
HEADER_SIZE = 4096
CHUNK_SIZE = 65536
MAX_RECORD_ERRORS = 1000  # past this many in one file the file is garbage; stop and say so
CHUNK_MAGIC = b"ElfChnk\x00"
RECORD_MAGIC = 0x00002A2A  # b"**\x00\x00"
RECORDS_START = 512  # records follow the chunk header and its string/template tables
MAX_CHUNK_RECORDS = (CHUNK_SIZE - RECORDS_START) // 24  # a record is at least 24 bytes
MAX_GAP_LINES = 20  # per file; further gaps are counted in one closing line
_ZERO_CHUNK = bytes(CHUNK_SIZE)
_ZERO_HEAD = bytes(40)
SEEK_DATA, SEEK_HOLE = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
_CHUNK_ERROR = "Failed to parse chunk number "  # the package's words; then 0 in a one-chunk file


def _check_truncation(name: str, head: bytes, size: int, stats: ReadStats) -> None:
    """Compare the file size with the header's chunk count: the parser itself does not tell."""
    if len(head) < 44 or size < HEADER_SIZE:
        stats.error(name, "evtx-truncated", f"file is {size} bytes, shorter than the EVTX header")
        return
    chunks = struct.unpack_from("<H", head, 42)[0]
    body = size - HEADER_SIZE
    full, rest = divmod(body, CHUNK_SIZE)
    if rest or full < chunks:
        stats.error(
            name,
            "evtx-truncated",
            f"file ends inside chunk {full + 1} ({rest} of {CHUNK_SIZE} bytes present; header says {chunks} "
            "chunks): records of the incomplete chunk are lost",
        )


def _plain_header(head: bytes, size: int) -> bool:
    """A header the package accepts, with the usual 4096-byte header block (the package counts
    chunks from the file size less that block): the chunk path reads such a file."""
    return size >= HEADER_SIZE and head[:8] == MAGIC and struct.unpack_from("<H", head, 40)[0] == HEADER_SIZE


def read_evtx(
    name: str,
    source: str | BinaryIO,
    stats: ReadStats,
    head: bytes | None = None,
    size: int | None = None,
    named: bool = False,
    gate: ReadGate | None = None,
    body: _InMemory | None = None,
) -> Iterator[Event]:
    """Yield normalized events from an EVTX file (path or seekable binary file object).

    ``head`` (the file's first bytes) and ``size`` may be passed by a caller that already has
    them, saving a second open per file. ``body``: the file's chunks after its 4096-byte
    ``head`` (:func:`read_small`), when the caller read a small file where it sniffed it
    (:func:`~scmwatch.events.read.read_input`): the file is then not opened again unless a chunk
    has to be read whole. ``named``: the user named this file, so a file that
    cannot be read at all makes the exit code 1. ``gate``: see :class:`ReadGate`.
    """
    try:
        if body is not None and head is not None and len(head) == HEADER_SIZE:
            size = body.size
        elif isinstance(source, str):
            if head is None or size is None or len(head) < 128:
                size = os.path.getsize(source)
                with open(source, "rb") as fh:
                    head = fh.read(128)
        else:
            source.seek(0, os.SEEK_END)
            size = source.tell()
            source.seek(0)
            head = source.read(128)
            source.seek(0)
        want = gate.want if gate is not None else None
        if body is not None and size > HEADER_SIZE:
            source = (body if DECODE_CHUNK is not None and _plain_header(head, size)
                      else io.BytesIO(head + body.whole()))
        if _plain_header(head, size) and (DECODE_CHUNK is not None or _any_string_table_loops(source, size)):
            events: Any = ChunkEvents(name, source, size, want, gate.decisions if gate is not None else None)
        else:  # the package also says why a file is no EVTX file
            events = (EvtxEvents or PyEvtxEvents)(evtx.PyEvtxParser(source).records_json(), name, want)
    except (OSError, RuntimeError) as exc:
        stats.files_failed += 1
        stats.named_failed += named
        stats.error(name, "evtx-header", f"not a readable EVTX file ({exc})")
        return
    _check_truncation(name, head, size, stats)
    stats.bytes += size
    if gate is not None:
        gate.reader = events
    errors = 0
    batch: Any = None
    try:
        while True:  # the parser raises for a record it cannot decode, then goes on with the next
            try:
                if not isinstance(events, ChunkEvents):
                    yield from events
                    break
                if batch is not None:  # the package's events of a chunk, after one of them raised
                    yield from batch
                while True:
                    batch = None
                    batch = events.batch()
                    if batch is None:
                        break
                    yield from batch
                break
            except Exception as exc:  # noqa: BLE001 - whatever one record raises, the next is read
                errors += 1
                stats.error(name, "evtx-record", str(exc).split("\n", 1)[0][:300])
                if errors >= MAX_RECORD_ERRORS:
                    stats.error(name, "evtx-abandoned", f"{errors} undecodable records: rest of file skipped")
                    break
        if errors < MAX_RECORD_ERRORS:
            read = events.count + events.skipped + events.missing_count + errors
            _audit_chunks(name, source, head, size, read, stats, getattr(events, "heads", None))
    finally:
        if isinstance(events, ChunkEvents):
            events.close()
        stats.events += events.count + events.skipped
        for rid in events.missing:
            stats.error(name, "evtx-record", "record has no Event element", rid)
        if events.missing_count > len(events.missing):
            stats.errors["evtx-record"] += events.missing_count - len(events.missing)


def _audit_chunks(name: str, source: str | BinaryIO, head: bytes, size: int, read: int,
                  stats: ReadStats, heads: list[bytes] | None = None) -> None:
    """``heads``: the first 40 bytes of every chunk, when the reader kept them (then the file is
    opened again only if the counts disagree)."""
    if type(source) is _InMemory:
        _audit_open(name, source.read_at, head, size, read, stats, heads)
        return
    if not isinstance(source, str):
        _audit_open(name, lambda offset, n: _read_at(source, offset, n), head, size, read, stats, heads)
        return
    opened: list[BinaryIO] = []

    def read_at(offset: int, n: int) -> bytes:
        if not opened:
            opened.append(open(source, "rb", buffering=0))  # noqa: SIM115 - unbuffered: 40 bytes per chunk, not 8 KiB
        return _read_at(opened[0], offset, n)

    try:
        _audit_open(name, read_at, head, size, read, stats, heads)
    finally:
        for fh in opened:
            fh.close()


PROBE = RECORDS_START  # read first of a chunk: its header, which says how much of it to read


def _used(head: bytes) -> int:
    """How many bytes from its start a chunk whose header is ``head`` needs read: up to its
    free-space offset (its header and records; the record CRC covers exactly that) when it has a
    chunk header and that offset lies past the header inside the chunk, else all of it (a chunk
    of zeros or a damaged one: the zero check and the package want every byte)."""
    if head[:8] == CHUNK_MAGIC and len(head) >= 52:
        free = int.from_bytes(head[48:52], "little")
        if RECORDS_START < free < CHUNK_SIZE:
            return free
    return CHUNK_SIZE


class _InMemory:
    """A small EVTX file read where it was sniffed (:func:`read_small`): the 4096-byte header and
    the used part of each chunk after it (``read_evtx(body=...)``), read without opening the file
    again; the rest of a chunk, rarely wanted, is read from ``path`` when asked for."""

    __slots__ = ("head", "parts", "size", "path")

    def __init__(self, head: bytes, parts: list[bytes], size: int, path: str) -> None:
        self.head = head
        self.parts = parts  # chunk i from its start: all of it, or the part :func:`_used` says
        self.size = size
        self.path = path

    def read_at(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (at or past the header), fewer at the end of the file."""
        index, at = divmod(offset - HEADER_SIZE, CHUNK_SIZE)
        part = self.parts[index] if index < len(self.parts) else b""
        if at + n <= len(part):
            return part[at:at + n]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return _pread(fd, n, offset)
        finally:
            os.close(fd)

    def whole(self) -> bytes:
        """The file after its header, every chunk in full."""
        return b"".join(p if len(p) == CHUNK_SIZE else self.read_at(HEADER_SIZE + i * CHUNK_SIZE, CHUNK_SIZE)
                        for i, p in enumerate(self.parts))


def read_small(fd: int, path: str, head: bytes, size: int) -> _InMemory:
    """The chunks of a small EVTX file opened as ``fd`` (``size`` bytes when sniffed), each up
    to its free-space offset (:func:`_used`): the attack corpus's chunks hold 8.8 of their 23.4 MB
    there, the rest is bytes no reader looks at. ``head``: the file's first bytes as read, its
    4096-byte header and after it the first chunk's header (:data:`PROBE` bytes). Each chunk is
    read as its header, then the part it says from the start (the header again: a second copy of
    512 bytes in the kernel instead of joining two pieces)."""
    parts = []
    probe = head[HEADER_SIZE:]
    for i in range((size - HEADER_SIZE) // CHUNK_SIZE):
        offset = HEADER_SIZE + i * CHUNK_SIZE
        if i:
            probe = _pread(fd, PROBE, offset)
        need = _used(probe) if len(probe) == PROBE else PROBE
        part = _pread(fd, need, offset) if len(probe) == PROBE else probe  # the header again with the rest
        if len(part) < need:  # the file is shorter than it was
            return _InMemory(head[:HEADER_SIZE], parts, offset + len(part), path)
        parts.append(part)
    return _InMemory(head[:HEADER_SIZE], parts, size, path)


def _read_at(fh: BinaryIO, offset: int, n: int) -> bytes:
    fh.seek(offset)
    return fh.read(n)


def _audit_open(name: str, read_at: Any, head: bytes, size: int, read: int, stats: ReadStats,
                heads: list[bytes] | None = None) -> None:
    """Report records the chunk headers list but the parser never produced (``evtx-record``),
    chunks the file header counts that have no chunk header (``evtx-chunk``), and a file with
    no readable chunk at all.

    Costs one small read per chunk; the record walk (:func:`_reachable`) runs only when the
    counts disagree. On 575 undamaged recordings the counts agree exactly.
    """
    if len(head) < 44 or size < HEADER_SIZE:
        return  # reported by _check_truncation
    n = (size - HEADER_SIZE) // CHUNK_SIZE
    if heads is not None and 0 < n <= len(heads) and _all_read(heads, n, read):
        return
    declared = struct.unpack_from("<H", head, 42)[0]
    next_id = struct.unpack_from("<Q", head, 24)[0]
    damaged: set[int] = set()
    ranges: list[tuple[int, int] | None] = []
    for i in range(n):
        h = heads[i] if heads is not None and i < len(heads) else read_at(HEADER_SIZE + i * CHUNK_SIZE, 40)
        if h[:8] != CHUNK_MAGIC:
            ranges.append(None)
            continue
        first, last = struct.unpack_from("<QQ", h, 24)
        if 0 <= last - first < MAX_CHUNK_RECORDS:
            ranges.append((first, last))
        else:  # the parser may still read its records: say the header is damaged, claim no loss
            ranges.append(None)
            stats.error(name, "evtx-chunk", f"chunk {i + 1} header lists records {first}-{last}, more than "
                        "a chunk can hold: damaged, its records not checked")
            damaged.add(i)
    valid = [r for r in ranges if r is not None]
    if not valid and not damaged:
        stats.error(name, "evtx-chunk", f"no readable chunk ({n} chunks in the file, header says "
                    f"{declared}): no record could be read")
        return
    if not valid:
        return
    lost = {i for i in range(min(declared, n)) if ranges[i] is None and i not in damaged}
    expected = sum(last - first + 1 for first, last in valid)
    if read >= expected and not lost:
        return
    # the record ids around each lost chunk: the last id before it, the first after it
    before = [0] * n
    prev = 0
    for i, r in enumerate(ranges):
        before[i] = prev
        prev = r[1] if r is not None else prev
    after = [next_id] * n
    nxt = next_id
    for i in range(n - 1, -1, -1):
        after[i] = nxt
        nxt = ranges[i][0] if ranges[i] is not None else nxt  # type: ignore[index]
    gaps: list[str] = []
    for i, r in enumerate(ranges):
        if r is None:
            if i in lost:
                span = f" {before[i] + 1}-{after[i] - 1}" if after[i] - 1 > before[i] else ""
                stats.error(name, "evtx-chunk", f"chunk {i + 1} has no valid chunk header: its records{span} "
                            "are lost")
            continue
        first, last = r
        chunk = read_at(HEADER_SIZE + i * CHUNK_SIZE, CHUNK_SIZE)
        got = _reachable(chunk, first, last)
        for start, end in _missing_runs(got, first, last):
            what = f"record {start}" if start == end else f"records {start}-{end}"
            gaps.append(f"{what} of chunk {i + 1} not read (a damaged record ends the chunk early)")
    for text in gaps[:MAX_GAP_LINES]:
        stats.error(name, "evtx-record", text)
    if len(gaps) > MAX_GAP_LINES:
        stats.error(name, "evtx-record", f"{len(gaps) - MAX_GAP_LINES} further gaps")
    if not gaps and not lost:
        stats.error(name, "evtx-record", f"{expected - read} of the {expected} records the chunk headers "
                    "list were not read")


def _all_read(heads: list[bytes], n: int, read: int) -> bool:
    """The common case of :func:`_audit_open`, decided from the kept chunk heads alone: every
    chunk has a valid header and the reader produced all the records they list: 0.6 instead
    of 3.0 us for a one-chunk file (measured)."""
    expected = 0
    for h in heads[:n]:
        if h[:8] != CHUNK_MAGIC:
            return False
        first, last = struct.unpack_from("<QQ", h, 24)
        if not 0 <= last - first < MAX_CHUNK_RECORDS:
            return False
        expected += last - first + 1
    return read >= expected


def _reachable(chunk: bytes, first: int, last: int) -> set[int]:
    """Record ids of one chunk reached by following record sizes, as the parser does: it ends
    the chunk at the first record header that is not one."""
    free = struct.unpack_from("<I", chunk, 48)[0] if len(chunk) >= 52 else 0
    end = free if RECORDS_START < free <= len(chunk) else len(chunk)
    off = RECORDS_START
    got: set[int] = set()
    while off + 24 <= end:
        magic, size, rid = struct.unpack_from("<IIQ", chunk, off)
        if magic != RECORD_MAGIC or size < 24 or off + size > len(chunk):
            break
        if first <= rid <= last:
            got.add(rid)
        off += size
    return got


def _missing_runs(got: set[int], first: int, last: int) -> Iterator[tuple[int, int]]:
    """Runs of ids in ``first..last`` not in ``got``."""
    start = None
    for rid in range(first, last + 1):
        if rid in got:
            if start is not None:
                yield start, rid - 1
                start = None
        elif start is None:
            start = rid
    if start is not None:
        yield start, last


class PyEvtxEvents:
    """``records_json()`` records → Event objects: the Python twin of ``_flatten.EvtxEvents``
    (used when the C extension was not built). Same attributes; it never skips records, so
    ``want`` is ignored. An error of the parser for one record propagates from ``__next__``
    and iteration can go on with the next record."""

    MAX_MISSING_KEPT = 100

    def __init__(self, records: Iterator[dict], name: str, want: Any = None) -> None:
        self.records = records
        self.name = name
        self.count = 0
        self.skipped = 0
        self.missing_count = 0
        self.missing: list[Any] = []

    def __iter__(self) -> PyEvtxEvents:
        return self

    def __next__(self) -> Event:
        for rec in self.records:
            fields = from_evtx_json(rec["data"])
            if fields is None:
                self.missing_count += 1
                if len(self.missing) < self.MAX_MISSING_KEPT:
                    self.missing.append(rec["event_record_id"])
                continue
            self.count += 1
            return Event(fields, self.name, rec["event_record_id"], "evtx")
        raise StopIteration


def _string_table_loops(chunk: bytes) -> bool:
    """Whether a chain of the chunk's string table comes back to a string it passed: the package
    would follow it forever. Checked for every chunk the package reads (without the C decoder:
    all of them; with it: those it hands over, which may loop behind a string it refused)."""
    if len(chunk) < CHUNK_SIZE:
        return False  # the package skips a cut chunk
    for bucket in struct.unpack_from("<64I", chunk, 128):
        seen: set[int] = set()
        off = bucket
        while 0 < off <= CHUNK_SIZE - 4:
            if off in seen:
                return True
            seen.add(off)
            nxt = struct.unpack_from("<I", chunk, off)[0]
            if nxt == off:
                break
            off = nxt
    return False


def _any_string_table_loops(source: str | BinaryIO, size: int) -> bool:
    """Without the C decoder the package reads a whole file at once, and never comes back from
    a looping chunk: such a file is read chunk by chunk instead (one more read of the file)."""
    fh: Any = open(source, "rb") if isinstance(source, str) else source  # noqa: SIM115 - closed below
    try:
        for i in range((size - HEADER_SIZE) // CHUNK_SIZE):
            if _string_table_loops(_read_at(fh, HEADER_SIZE + i * CHUNK_SIZE, CHUNK_SIZE)):
                return True
        return False
    finally:
        if isinstance(source, str):
            fh.close()
        else:
            fh.seek(0)


def _pread(fd: int, n: int, offset: int) -> bytes:
    """``n`` bytes at ``offset``, fewer only at the end of the file (as a buffered read gives)."""
    data = os.pread(fd, n, offset)
    while 0 < len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def _has_holes(fd: int, size: int) -> bool:
    """Whether the file has a hole (a range the filesystem stores as none: zeros) past its header."""
    if SEEK_HOLE is None:
        return False
    try:
        return os.lseek(fd, HEADER_SIZE, SEEK_HOLE) < size
    except OSError:
        return False


def _in_hole(fd: int, offset: int) -> bool:
    """Whether the chunk at ``offset`` lies in a hole, so is all zeros without reading it."""
    try:
        return os.lseek(fd, offset, SEEK_DATA) >= offset + CHUNK_SIZE  # type: ignore[arg-type]
    except OSError as exc:
        return exc.errno == errno.ENXIO  # no data from here to the end of the file


class ChunkEvents:
    """Event objects of a whole EVTX file, chunk by chunk: ``_evtx.decode_chunk`` where it is
    sure, else the ``evtx`` package on a file of the header and that one chunk (it reads each
    chunk on its own, so events and errors are the ones it gives for the whole file). A chunk
    whose string table loops is reported and skipped: the package would follow it forever
    (measured: no answer after 20 s on a two-string loop). An error
    of the package for one record propagates from ``__next__`` (or from the iterator
    :meth:`batch` gave), and iteration goes on with the next record, as with ``records_json()``.
    Same counters as :class:`PyEvtxEvents`.

    A file given by path is read with ``os.pread`` (no buffered file object: one system call
    per chunk), and a chunk that lies in a hole of a sparse file is known to be zeros without
    reading it: preallocated EVTX files are mostly empty chunks (208 of the 565 chunks of the
    attack samples, all of them holes there), each a 64 KiB copy and scan otherwise. Measured
    on the attack samples, reading + normalizing alone (old and new reader alternately, median of
    three, load 2.4): 5.76 -> 4.96 us CPU per event."""

    def __init__(self, name: str, source: str | BinaryIO | _InMemory, size: int, want: Any = None,
                 decisions: dict | None = None) -> None:
        self.name = name
        self.want = want
        self.count = 0
        self.skipped = 0
        self.missing_count = 0
        self.missing: list[Any] = []
        self.fallback_chunks = 0
        self.hole_chunks = 0  # chunks known to be zeros from the file's holes, not read
        self._fd: int | None = None
        self._fh: Any = None
        self._sparse = False
        self._mem: _InMemory | None = None
        if type(source) is _InMemory:
            self._header = source.head
            self._mem = source
        elif isinstance(source, str):
            self._fd = os.open(source, os.O_RDONLY)
            try:
                self._header = _pread(self._fd, HEADER_SIZE, 0)
                self._sparse = _has_holes(self._fd, size)
            except OSError:
                os.close(self._fd)
                raise
        else:
            self._fh = source
            self._fh.seek(0)
            self._header = self._fh.read(HEADER_SIZE)
        self._chunks = (size - HEADER_SIZE) // CHUNK_SIZE if len(self._header) == HEADER_SIZE else 0
        self._next_chunk = 0
        self.heads: list[bytes] = []  # the first 40 bytes of each chunk read, for the chunk audit
        self._decisions: dict = {} if decisions is None else decisions  # want's answers per pair
        self._ready: list[Event] = []  # the C decoder's events of the chunk just read
        self._batch: Iterator[Event] | None = None  # what __next__ is going through
        self._slow: Any = None  # the package's events of the current fallback chunk
        self._damaged: str | None = None  # a chunk neither path can read, to report once

    def __iter__(self) -> ChunkEvents:
        return self

    def __next__(self) -> Event:
        while True:
            if self._batch is not None:
                for event in self._batch:
                    return event
                self._batch = None
            batch = self.batch()
            if batch is None:
                raise StopIteration
            self._batch = iter(batch)

    def batch(self) -> Iterator[Event] | None:
        """The events of the next chunk that has any, None at the end: a list when the C decoder
        read the chunk (iterated by the caller without a Python call per event: measured
        0.2 us less per event), else an iterator over the package's events of the chunk, which
        raises for a record the package cannot decode and then goes on with the next. Raises
        for a chunk that cannot be read at all."""
        while True:
            if self._damaged is not None:
                text, self._damaged = self._damaged, None
                raise RuntimeError(text)
            if self._next_chunk >= self._chunks:
                return None
            self._load(self._next_chunk)
            self._next_chunk += 1
            if self._slow is not None:
                return _SlowChunk(self)
            if self._ready:
                ready, self._ready = self._ready, []
                return ready

    def _load(self, index: int) -> None:
        offset = HEADER_SIZE + index * CHUNK_SIZE
        if self._mem is not None:
            chunk = self._mem.parts[index]
            need = len(chunk)  # all :func:`_used` says: read_small ends the file at a shorter one
        elif self._fd is None:
            self._fh.seek(offset)
            chunk = self._fh.read(CHUNK_SIZE)
            need = CHUNK_SIZE
        elif self._sparse and _in_hole(self._fd, offset):
            self.hole_chunks += 1
            self.heads.append(_ZERO_HEAD)
            return  # an empty chunk of a preallocated file: the package skips it too
        else:
            chunk = _pread(self._fd, PROBE, offset)
            need = _used(chunk) if len(chunk) == PROBE else CHUNK_SIZE
            if len(chunk) == PROBE:
                chunk = _pread(self._fd, need, offset)
        self.heads.append(chunk[:40])
        whole = len(chunk) == CHUNK_SIZE
        used = whole or len(chunk) >= need  # else cut short by the end of the file
        got = DECODE_CHUNK(chunk, self.name, self.want, self._decisions) if used and DECODE_CHUNK else None
        if used and not whole and (got is None or got is False):  # the package, or the decoder, wants it all
            reread = self._mem.read_at if self._mem is not None else lambda at, n: _pread(self._fd, n, at)
            chunk = reread(offset, CHUNK_SIZE)
            whole = len(chunk) == CHUNK_SIZE
            if got is False:
                got = DECODE_CHUNK(chunk, self.name, self.want, self._decisions) if whole else None
        if got is None and whole and chunk != _ZERO_CHUNK and _string_table_loops(chunk):
            got = "its string table loops"
        if isinstance(got, str):  # the package would never come back from this chunk
            self._damaged = f"{_CHUNK_ERROR}{index}: {got} (chunk skipped)"
            return
        if got is not None:
            events, skipped = got
            self.count += len(events)
            self.skipped += skipped
            self._ready = events
            return
        if chunk == _ZERO_CHUNK:
            return  # an empty chunk of a preallocated file: the package skips it too
        self.fallback_chunks += 1
        parser = evtx.PyEvtxParser(io.BytesIO(self._header + chunk))
        self._slow = (EvtxEvents or PyEvtxEvents)(parser.records_json(), self.name, self.want)

    def _renumbered(self, exc: RuntimeError) -> RuntimeError:
        """The package's error for the one-chunk file, with the chunk's number in the whole file."""
        text = str(exc)
        if not text.startswith(_CHUNK_ERROR):
            return exc
        return type(exc)(f"{_CHUNK_ERROR}{self._next_chunk - 1}{text[len(_CHUNK_ERROR) + 1:]}")

    def _finish_slow(self) -> None:
        slow, self._slow = self._slow, None
        self.count += slow.count
        self.skipped += slow.skipped
        self.missing_count += slow.missing_count
        self.missing.extend(slow.missing[: max(0, PyEvtxEvents.MAX_MISSING_KEPT - len(self.missing))])

    def close(self) -> None:
        """Close the file this object opened; the counters of a fallback chunk in progress are kept."""
        if self._slow is not None:
            self._finish_slow()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _SlowChunk:
    """The package's events of one chunk of a :class:`ChunkEvents`: its errors renumbered to
    the chunk's place in the whole file, its counters added to the file's when it ends."""

    def __init__(self, owner: ChunkEvents) -> None:
        self.owner = owner

    def __iter__(self) -> _SlowChunk:
        return self

    def __next__(self) -> Event:
        owner = self.owner
        if owner._slow is None:
            raise StopIteration
        try:
            return next(owner._slow)
        except StopIteration:
            owner._finish_slow()
            raise
        except RuntimeError as exc:
            raise owner._renumbered(exc) from None
