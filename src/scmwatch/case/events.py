"""``--keep-events``: every normalized event into the case, columnar, beside the hunt.

The hunt's reader is wrapped (``HuntContext.read``): each event is matched as usual and also
written as one staged row (NDJSON) to a file per input; as results arrive the parent loads the
staged files with one ``INSERT ... FROM read_json`` per ``LOAD_ROWS`` rows, so memory stays
bounded (DuckDB's buffers, staged rows wait on disk) whatever the input size, and ``--jobs``
workers do the per-event Python work in parallel. The read gate is off for such a hunt (every
record is parsed, not only those a rule looks at): that, and the JSON encoding, is what keeping
events costs (bench/case_store.py).

Row layout (``event_rows``): the System fields in typed columns (EventID, Channel, Provider_Name,
Computer, EventRecordID, TimeCreated, ProcessID, ThreadID, UserID), everything else in ``data``
(JSON). A System value of another type than its column (``"4624"`` from an odd JSON export)
is kept as written in ``data`` -- and cast into the column when it is a number in a string --
so :func:`event_fields` gives back exactly the fields the hunt saw. That is what makes a
retro-hunt over the case equal to a hunt over the files.

A file whose content (sha256) the case already holds events for is not stored again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import duckdb
import orjson

from scmwatch.case.files import file_sha256
from scmwatch.case.stage import EVENTS_PREFIX, load, row_line
from scmwatch.events.model import Event, ReadGate, ReadStats
from scmwatch.events.read import read_input
from scmwatch.sinks.jsonl import json_line

# column -> (Python type it holds, bits): the typed System columns of event_rows
SYSTEM: dict[str, tuple[type, int]] = {
    "EventID": (int, 32), "Channel": (str, 0), "Provider_Name": (str, 0), "Computer": (str, 0),
    "EventRecordID": (int, 64), "TimeCreated": (str, 0), "ProcessID": (int, 64), "ThreadID": (int, 64),
    "UserID": (str, 0),
}
COLUMNS = {
    "file_sha256": "VARCHAR", "seq": "BIGINT", "source": "VARCHAR", "record_id": "BIGINT",
    "format": "VARCHAR", "time_us": "BIGINT", "EventID": "INTEGER", "Channel": "VARCHAR",
    "Provider_Name": "VARCHAR", "Computer": "VARCHAR", "EventRecordID": "BIGINT", "TimeCreated": "VARCHAR",
    "ProcessID": "BIGINT", "ThreadID": "BIGINT", "UserID": "VARCHAR", "data": "JSON",
}
# Rows staged before one load: DuckDB's read_json has a fixed cost per call (~5-10 ms), so
# directories of small .evtx files are loaded many files at a time.
LOAD_ROWS = 100_000
INSERT = ("INSERT INTO event_rows SELECT file_sha256, seq, source, record_id, format, "
          "CASE WHEN time_us IS NULL OR time_us = 0 THEN NULL ELSE make_timestamp(time_us) END, "
          "EventID, Channel, Provider_Name, Computer, EventRecordID, TimeCreated, ProcessID, ThreadID, "
          "UserID, data")


def _typed(value: Any, kind: type, bits: int) -> Any:
    """The column value for a System field, or None when it does not fit the column."""
    if kind is str:
        return value if type(value) is str else None
    if type(value) is int:
        v = value
    elif type(value) is str and value.strip().isdigit():
        v = int(value)
    else:
        return None
    return v if -(1 << (bits - 1)) <= v < (1 << (bits - 1)) else None


def event_row(ev: Event, sha256: str, seq: int) -> dict[str, Any]:
    """One event as a staged row of ``event_rows``."""
    t = ev.time
    row: dict[str, Any] = {"file_sha256": sha256, "seq": seq, "source": ev.source, "record_id": ev.record_id,
                           "format": ev.fmt, "time_us": int(round(t * 1e6)) if t else None}
    data: dict[str, Any] = {}
    get = SYSTEM.get
    for k, v in ev.fields.items():
        spec = get(k)
        if spec is None:
            data[k] = v
            continue
        typed = _typed(v, *spec)
        if typed is None or typed is not v:
            data[k] = v  # as written; the column holds the cast value, if any
        row[k] = typed
    row["data"] = data
    return row


def event_fields(row: tuple | list, names: tuple[str, ...] = tuple(SYSTEM)) -> dict[str, Any]:
    """The event's fields back from a stored row: the System columns ``names`` in ``row``
    order, then ``data`` as JSON text. ``data`` wins over a typed column."""
    fields = {k: v for k, v in zip(names, row, strict=False) if v is not None}
    data = row[len(names)]
    if data and data != "{}":
        fields.update(orjson.loads(data))
    return fields


class EventKeeper:
    """Stages events per input file (in any process) and loads them into the case (in the parent).

    Events are loaded through their own connection, one commit per load, outside the run's
    transaction: DuckDB keeps a transaction's appended rows in memory, and millions of events in
    one transaction exceeded the memory limit (out of memory at 256 MB on the dev corpus x20),
    while committed rows can be written out. The run's ``file_rows`` (which mark a file's events
    as kept) still commit with the run, so events of a run that did not finish are orphans:
    :meth:`abort` deletes them, and a hunt killed outright leaves them for the next keeping run
    to delete when it starts.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, tmpdir: str | None = None) -> None:
        self.con = con.cursor()
        self.con.execute("DELETE FROM event_rows WHERE file_sha256 NOT IN "
                         "(SELECT sha256 FROM file_rows WHERE events_kept AND sha256 IS NOT NULL)")
        self.loaded: set[str] = set()  # file hashes whose events this run committed
        self.dir = tempfile.mkdtemp(prefix=f"{EVENTS_PREFIX}{os.getpid()}-", dir=tmpdir)
        self.kept = frozenset(r[0] for r in con.execute(
            "SELECT DISTINCT sha256 FROM file_rows WHERE events_kept AND sha256 IS NOT NULL").fetchall())
        self.events = 0
        self.cut = 0  # events whose long strings were cut to fit stage.MAX_ROW
        # rows taken from the files' staging, not yet loaded
        self.batch = open(os.path.join(self.dir, "batch.ndjson"), "w+b")  # noqa: SIM115 - closed in cleanup
        self.pending_rows = 0

    def _paths(self, name: str) -> tuple[str, str]:
        key = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()
        return os.path.join(self.dir, key + ".ndjson"), os.path.join(self.dir, key + ".meta")

    def read(self, unit: Any, stats: ReadStats, gate: ReadGate | None = None) -> Iterator[Event]:
        """``HuntContext.read``: read every event (no gate) and stage it; runs in workers too."""
        sha256, size, head = file_sha256(unit)
        rows, meta = self._paths(unit.name)
        keep = sha256 is not None and sha256 not in self.kept
        n = cut = 0
        with open(rows, "wb") as fh:
            for n, ev in enumerate(read_input(unit, stats), 1):
                if keep:
                    line, was_cut = row_line(event_row(ev, sha256, n - 1))
                    cut += was_cut
                    fh.write(line)
                yield ev
        with open(meta, "wb") as fh:
            fh.write(json_line({"sha256": sha256, "size": size, "head": head.hex(), "kept": keep,
                                "events": n if keep else 0, "cut": cut}))

    def ingest(self, unit: Any) -> dict[str, Any] | None:
        """Take one file's staged rows (parent side; loaded in batches of ``LOAD_ROWS``); its
        meta (sha256, size, kept), or None when the unit was never read."""
        rows, meta_path = self._paths(unit.name)
        try:
            with open(meta_path, "rb") as fh:
                meta = orjson.loads(fh.read())
        except OSError:
            return None
        os.unlink(meta_path)
        if meta["sha256"] in self.kept:  # the same content twice in this run: stored once
            meta["kept"] = False
        if meta["kept"] and meta["events"]:
            self.cut += meta["cut"]
            self.kept = self.kept | {meta["sha256"]}
            self.loaded.add(meta["sha256"])
            with open(rows, "rb") as src:
                shutil.copyfileobj(src, self.batch)
            self.pending_rows += meta["events"]
            if self.pending_rows >= LOAD_ROWS:
                self.flush()
        os.unlink(rows)
        return meta

    def flush(self) -> None:
        """Load the rows taken so far with one INSERT (from one file: DuckDB's JSON reader
        holds a buffer per file it reads, and thousands of small staged files at once ran out
        of memory)."""
        if not self.pending_rows:
            return
        self.batch.flush()
        load(self.con, INSERT, self.batch.name, COLUMNS)
        self.events += self.pending_rows
        self.pending_rows = 0
        self.batch.seek(0)
        self.batch.truncate()

    def abort(self) -> None:
        """The run failed: delete the events it committed, then the staged files."""
        try:
            if self.loaded:
                self.con.execute("DELETE FROM event_rows WHERE file_sha256 IN (SELECT unnest(?::VARCHAR[]))",
                                 [sorted(self.loaded)])
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        self.batch.close()
        for name in os.listdir(self.dir):
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass
        os.rmdir(self.dir)
