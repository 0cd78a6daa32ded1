"""Retro-hunt: the case's stored events as the input of a hunt (``scmwatch hunt CASE.duckdb``).

Each stored file is one unit of the hunt seam, in the order the files were first hunted:
:meth:`CaseSource.read` yields its events in their original order, rebuilt exactly
(:func:`scmwatch.case.events.event_fields`), and sets the position the correlator breaks
ties by to the event's position in its file. So the alerts equal those of hunting the original
files in one run (tests/test_case_retro.py checks it on the shared corpus). Files without kept
events (hunted without ``--keep-events``) are reported: a retro-hunt cannot see them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from scmwatch.case.events import SYSTEM, event_fields
from scmwatch.events.model import Event, ReadGate, ReadStats

_FETCH = 8192


@dataclass(frozen=True)
class StoredFile:
    """One unit of a retro-hunt: a file whose events the case keeps."""

    name: str  # the path it was hunted as
    sha256: str
    size: int | None
    format: str | None
    events: int
    path: str = ""  # no file on disk: the progress bar and --jobs batching size it as 0


class _Position:
    """Stands in for a reader behind the gate: ``skipped`` makes the hunt's event position the
    event's position in its original file (hunt_unit adds it to its own count)."""

    skipped = 0


def stored_files(con: duckdb.DuckDBPyConnection) -> tuple[list[StoredFile], list[str]]:
    """Files with kept events (first hunted first, once per content) and the paths of files
    the case knows but holds no events for."""
    rows = con.execute(
        "SELECT sha256, arg_min(path, (run_id, file_no)), arg_min(size, (run_id, file_no)), "
        "arg_min(format, (run_id, file_no)), min((run_id, file_no)) AS first, bool_or(events_kept) "
        "FROM file_rows WHERE sha256 IS NOT NULL GROUP BY sha256 ORDER BY first").fetchall()
    counts = dict(con.execute("SELECT file_sha256, count(*) FROM event_rows GROUP BY 1").fetchall())
    kept = [StoredFile(path, sha, size, fmt, counts.get(sha, 0)) for sha, path, size, fmt, _, k in rows
            if k and sha in counts]
    missing = [path for sha, path, _, _, _, k in rows if not (k and sha in counts)]
    return kept, missing


class CaseSource:
    """A case's kept events as hunt units (one per stored file), read through ``con`` (read-only,
    or the writer's own when the retro-hunt writes its alerts back into the same case).

    The units run in this process, one after the other: DuckDB is not safe to use in a process
    forked from one that has it open, so a retro-hunt does not use ``--jobs`` workers.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.files, self.missing = stored_files(con)

    def units(self, paths: Any = None, stats: ReadStats | None = None) -> list[StoredFile]:
        """``run_hunt``'s ``expand``: the stored files, in the order they were first hunted."""
        return list(self.files)

    def read(self, unit: StoredFile, stats: ReadStats, gate: ReadGate | None = None) -> Iterator[Event]:
        """``HuntContext.read`` for one stored file: its events in their original order."""
        position = _Position()
        if gate is not None:
            gate.reader = position
        names = tuple(SYSTEM)
        cols = ", ".join(names)
        stats.files += 1
        n = 0
        cur = self.con.cursor()
        try:
            cur.execute(f"SELECT seq, source, record_id, format, {cols}, data::VARCHAR FROM event_rows "
                        "WHERE file_sha256 = ? ORDER BY seq", [unit.sha256])
            while batch := cur.fetchmany(_FETCH):
                for row in batch:
                    position.skipped = row[0] - n
                    n += 1
                    stats.events += 1
                    yield Event(event_fields(row[4:], names), row[1], row[2], row[3])
        finally:
            cur.close()


def retro_units(source: CaseSource, writer: Any = None) -> Callable[..., Iterator[Any]]:
    """``run_hunt``'s unit mapper for a retro-hunt: each stored file inline, in order; with a
    ``writer`` (``--case``) each is recorded as this run's input with its stored hash, so alert
    ids equal those of the original hunt and retro-hunting into the same case adds only what
    the new rules find."""

    def mapper(ctx: Any, inputs: list[StoredFile], jobs: int, report: Any) -> Iterator[Any]:
        from scmwatch.hunt import hunt_unit

        for i, unit in enumerate(inputs):
            result = hunt_unit(ctx, i, unit, on_error=report, read=source.read)
            if writer is not None:
                writer.add_file(unit, unit.events, {}, unit.format, unit.sha256, unit.size, kept=True)
            yield result

    return mapper
