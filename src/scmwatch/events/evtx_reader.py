"""EVTX through the Rust-backed ``evtx`` package.

``PyEvtxParser`` raises for a record it cannot decode and then carries on with the next one,
so each failure is counted and the rest of the file is still read. It silently skips a chunk
that was cut short, so a truncated file is detected separately from the header's chunk count.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import evtx

from scmwatch.events.model import Event, ReadGate, ReadStats
from scmwatch.events.normalize import EvtxEvents, from_evtx_json

MAGIC = b"ElfFile\x00"
HEADER_SIZE = 4096
CHUNK_SIZE = 65536
MAX_RECORD_ERRORS = 1000  # past this many in one file the file is garbage; stop and say so


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


def read_evtx(
    name: str,
    source: str | BinaryIO,
    stats: ReadStats,
    head: bytes | None = None,
    size: int | None = None,
    named: bool = False,
    gate: ReadGate | None = None,
) -> Iterator[Event]:
    """Yield normalized events from an EVTX file (path or seekable binary file object).

    ``head`` (the file's first bytes) and ``size`` may be passed by a caller that already has
    them, saving a second open per file. ``named``: the user named this file, so a file that
    cannot be read at all makes the exit code 1. ``gate``: see :class:`ReadGate`.
    """
    try:
        if isinstance(source, str):
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
        parser = evtx.PyEvtxParser(source)
    except (OSError, RuntimeError) as exc:
        stats.files_failed += 1
        stats.named_failed += named
        stats.error(name, "evtx-header", f"not a readable EVTX file ({exc})")
        return
    _check_truncation(name, head, size, stats)
    stats.bytes += size
    records = parser.records_json()
    events = (EvtxEvents or PyEvtxEvents)(records, name, gate.want if gate is not None else None)
    if gate is not None:
        gate.reader = events
    errors = 0
    try:
        while True:  # the parser raises for a record it cannot decode, then goes on with the next
            try:
                yield from events
                break
            except (RuntimeError, OSError, ValueError) as exc:
                errors += 1
                stats.error(name, "evtx-record", str(exc).split("\n", 1)[0][:300])
                if errors >= MAX_RECORD_ERRORS:
                    stats.error(name, "evtx-abandoned", f"{errors} undecodable records: rest of file skipped")
                    break
    finally:
        stats.events += events.count + events.skipped
        for rid in events.missing:
            stats.error(name, "evtx-record", "record has no Event element", rid)
        if events.missing_count > len(events.missing):
            stats.errors["evtx-record"] += events.missing_count - len(events.missing)


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
