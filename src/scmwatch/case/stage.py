"""Bulk loading through DuckDB's JSON reader: rows are written as NDJSON, then one INSERT.

DuckDB's Python ``executemany`` costs ~2 ms per row (measured: 20k rows in 44 s), so every
table the case fills in bulk goes through a staging file instead: orjson writes one object per
row, ``read_json`` with an explicit column list parses and casts them in C++ (measured:
~350k rows/s including the write). Values from logs that orjson refuses (lone surrogates,
integers past 64 bits) go through the JSONL sink's fallback: changed, never dropped.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import duckdb

from scmwatch.sinks.jsonl import json_line
from scmwatch.spill import remove_stale

# The largest staged row. DuckDB's JSON reader holds two buffers of this size per thread, so it
# bounds the case's memory; EVTX records are at most 64 KiB, and a larger row (a giant JSON log
# line) has its long strings cut (``row_line``) rather than failing the run.
MAX_ROW = 16 << 20
CUT = 64 << 10  # a string longer than this in an oversized row keeps its first CUT characters
# Staged files and folders are named ``<prefix><pid>-...``: a run killed outright (SIGKILL) leaves
# them behind, and the next run writing a case removes those of dead processes (``sweep``), as
# the hunt does with its spill folders.
STAGE_PREFIX = "scmwatch-case-"
EVENTS_PREFIX = "scmwatch-events-"


def sweep(tmpdir: str | None = None) -> int:
    """Remove the staging that dead runs left in ``tmpdir`` (default ``TMPDIR``); how many."""
    return remove_stale(tmpdir, STAGE_PREFIX) + remove_stale(tmpdir, EVENTS_PREFIX)


def row_line(row: dict[str, Any]) -> tuple[bytes, bool]:
    """One staged row as an NDJSON line, and whether long strings had to be cut to fit MAX_ROW."""
    line = json_line(row)
    if len(line) <= MAX_ROW:
        return line, False
    return json_line(_cut(row)), True


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= CUT else value[:CUT] + f"…[cut by scmwatch: {len(value):,} chars]"
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value]
    return value


def dumps(obj: Any) -> bytes:
    """JSON for any value read from a log, without the newline (never raises)."""
    return json_line(obj)[:-1]


class Stager:
    """Rows for one table, written to a temporary NDJSON file and loaded ``batch`` at a time.

    ``insert`` is the statement's head, e.g. ``INSERT INTO t SELECT a, make_timestamp(t_us)``;
    ``columns`` maps the staged keys to DuckDB types (the order ``read_json`` yields them).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, insert: str, columns: dict[str, str],
                 batch: int = 20_000, tmpdir: str | None = None) -> None:
        self.con = con
        self.insert = insert
        self.columns = columns
        self.batch = batch
        fd, self.path = tempfile.mkstemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", suffix=".ndjson", dir=tmpdir)
        self.fh = os.fdopen(fd, "wb")
        self.pending = 0
        self.cut = 0  # rows whose long strings were cut to fit MAX_ROW

    def add(self, row: dict[str, Any]) -> None:
        line, cut = row_line(row)
        self.cut += cut
        self.fh.write(line)
        self.pending += 1
        if self.pending >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.fh.flush()
        load(self.con, self.insert, self.path, self.columns)
        self.pending = 0
        self.fh.seek(0)
        self.fh.truncate()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.discard()

    def discard(self) -> None:
        """Close and remove the staging file, loading nothing more (idempotent)."""
        self.fh.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def load(con: duckdb.DuckDBPyConnection, insert: str, path: str | list[str], columns: dict[str, str]) -> None:
    """Run ``insert`` over the rows of one NDJSON file (or several), read as ``staged``."""
    cols = ", ".join(f"'{k}': '{v}'" for k, v in columns.items())
    con.execute(f"{insert} FROM read_json(?, format='newline_delimited', columns={{{cols}}}, "
                f"maximum_object_size={MAX_ROW}) AS staged", [path])
