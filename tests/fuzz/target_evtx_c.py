"""EVTX read by the C chunk decoder (``_evtx.decode_chunk``) and by the ``evtx`` package: the same.

The input is that of ``target_evtx`` (a chunk header's record range, then the record area);
whatever the bytes, both paths must give the same events (fields with types and order, record
ids), counts and problem lines: the decoder either renders a chunk exactly as the package does
or hands it to the package.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fuzzlib import Violation
from target_evtx import evtx_bytes

from scmwatch.events import evtx_reader
from scmwatch.events.model import ReadStats


def _read(path: str, c: bool) -> tuple:
    decode = evtx_reader.DECODE_CHUNK
    if not c:
        evtx_reader.DECODE_CHUNK = None
    try:
        stats = ReadStats()
        events = [(e.record_id, repr(list(e.fields.items())))
                  for e in evtx_reader.read_evtx(path, path, stats)]
    finally:
        evtx_reader.DECODE_CHUNK = decode
    lines = [(e.kind, e.message, e.record) for e in stats.first_errors]
    return events, stats.events, dict(stats.errors), lines


def target(data: bytes) -> None:
    if evtx_reader.DECODE_CHUNK is None:
        return  # the C extension was not built: nothing to compare
    with tempfile.TemporaryDirectory(prefix="scmwatch-fuzz-") as folder:
        path = str(Path(folder) / "fuzz.evtx")
        Path(path).write_bytes(evtx_bytes(data))
        c, package = _read(path, True), _read(path, False)
    if c != package:
        for part, a, b in zip(("events", "count", "errors", "lines"), c, package, strict=True):
            if a != b:
                raise Violation(f"C decoder and package differ in {part}: {str(a)[:300]} vs {str(b)[:300]}")
