"""NDJSON read by the C loop (``_flatten.NdjsonEvents``) and by the Python reader: the same.

Mutated evtx_dump and flat NDJSON; whatever the bytes, both readers must give the same events
(fields with types and key order, line numbers), counts, problem lines and byte counts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fuzzlib import Violation

from scmwatch.events import ReadStats, discover, json_reader, read_input


def _read(path: str, c: bool) -> tuple:
    loop = json_reader.NdjsonEvents
    if not c:
        json_reader.NdjsonEvents = None
    try:
        stats = ReadStats()
        events = [(e.record_id, e.fmt, repr(list(e.fields.items())))
                  for inp in discover([path], stats) for e in read_input(inp, stats)]
    finally:
        json_reader.NdjsonEvents = loop
    return (events, stats.events, stats.bytes, dict(stats.errors),
            [(e.kind, e.message, e.record) for e in stats.first_errors])


def target(data: bytes) -> None:
    if json_reader.NdjsonEvents is None:
        return  # the C extension was not built: nothing to compare
    with tempfile.TemporaryDirectory(prefix="scmwatch-fuzz-") as folder:
        path = str(Path(folder) / "fuzz.ndjson")
        Path(path).write_bytes(data)
        c, py = _read(path, True), _read(path, False)
    if c != py:
        for part, a, b in zip(("events", "count", "bytes", "errors", "lines"), c, py, strict=True):
            if a != b:
                raise Violation(f"C and Python readers differ in {part}: {str(a)[:300]} vs {str(b)[:300]}")
