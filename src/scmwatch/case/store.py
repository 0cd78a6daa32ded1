"""Opening a case file: every way it can be wrong becomes one :class:`CaseError` line.

DuckDB allows one writing process per file (a second one, or a reader while it writes, gets
a lock error) and any number of read-only ones. ``open_case`` tells the cases apart before and
after DuckDB has looked at the file: not there, not a DuckDB file (its header carries ``DUCK``
at byte 8), corrupt, locked by another process, not a case (no ``case_meta``), or written by a
newer scmwatch (schema version above ours). Older cases are migrated when opened for writing;
a read-only open of an older case first migrates it with a short writing connection.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import duckdb

from scmwatch.case import schema

# DuckDB takes 80% of RAM for its buffers by default; a hunt keeping events must stay bounded
# beside the rules and spill files. Above the limit DuckDB spills to a temporary directory
# beside the case. Its JSON reader needs twice the largest staged row (stage.MAX_ROW) at once.
MEMORY_LIMIT = os.environ.get("SCMWATCH_CASE_MEMORY", "256MB")
CONFIG = {"memory_limit": MEMORY_LIMIT}
# How long ``hunt --case`` waits for a case another process has open (``serve`` holds it for
# the milliseconds of one request; ``query`` or another hunt for longer) before giving up.
LOCK_WAIT = float(os.environ.get("SCMWATCH_CASE_WAIT", "30"))
LOCKED = "locked by another scmwatch or DuckDB process"
_MAGIC_AT = 8
_MAGIC = b"DUCK"


class CaseError(Exception):
    """A case file that cannot be used; ``str()`` is the one-line message (without the path)."""


class _Outdated(Exception):
    """A read-only open met an older schema: migrate with a writing connection, then reopen."""


def is_case_path(path: str) -> bool:
    """Is ``path`` a DuckDB file (by its header; any extension)? Used to route ``hunt CASE``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_MAGIC_AT + len(_MAGIC))
    except OSError:
        return False
    return head[_MAGIC_AT:] == _MAGIC


def open_case(path: str, write: bool = False, create: bool = False, wait: float = 0.0,
              on_wait: Callable[[str], None] | None = None) -> duckdb.DuckDBPyConnection:
    """Open a case; ``write`` takes the writer's lock (migrating an older schema), ``create``
    makes a new case when ``path`` does not exist. A case locked by another process is retried
    for up to ``wait`` seconds (``on_wait`` is told the reason once). Raises :class:`CaseError`."""
    exists = os.path.exists(path)
    if not exists and not create:
        raise CaseError("no such case file")
    if exists:
        if os.path.isdir(path):
            raise CaseError("is a directory, not a case file")
        if os.path.getsize(path) == 0 or not is_case_path(path):
            raise CaseError("not a case file (not a DuckDB database)")
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            con = duckdb.connect(path, read_only=not write, config=CONFIG)
            con.execute("SET enable_progress_bar = false")  # a long migration draws none on stderr
            break
        except duckdb.Error as exc:
            reason = _explain(exc)
            if not reason.startswith(LOCKED) or time.monotonic() >= deadline:
                raise CaseError(reason) from None
            if on_wait is not None and not told:
                on_wait(reason.split(";")[0])
                told = True
            time.sleep(0.05)
    try:
        if not exists:
            schema.create(con)
        else:
            _check(con, write)
        if write:
            schema.create_views(con)
    except _Outdated:
        con.close()
        open_case(path, write=True).close()
        return open_case(path)
    except CaseError:
        con.close()
        raise
    except duckdb.Error as exc:
        con.close()
        raise CaseError(_explain(exc)) from None
    return con


def _check(con: duckdb.DuckDBPyConnection, write: bool) -> None:
    try:
        rows = dict(con.execute("SELECT key, value FROM case_meta").fetchall())
    except duckdb.CatalogException:
        raise CaseError("a DuckDB database but not an scmwatch case (no case_meta table)") from None
    if rows.get("format") != schema.FORMAT:
        raise CaseError("a DuckDB database but not an scmwatch case (case_meta.format is not "
                        f"{schema.FORMAT!r})")
    try:
        version = int(rows.get("schema_version", ""))
    except ValueError:
        raise CaseError("case_meta.schema_version is not a number") from None
    if version > schema.SCHEMA_VERSION:
        raise CaseError(f"written by a newer scmwatch (case schema {version}, this one reads up to "
                        f"{schema.SCHEMA_VERSION}); upgrade scmwatch")
    if version < schema.SCHEMA_VERSION:
        if not write:
            raise _Outdated
        schema.migrate(con, version)


def _explain(exc: duckdb.Error) -> str:
    text = " ".join(str(exc).split())
    if "Could not set lock" in text or "Conflicting lock" in text:
        m = re.search(r"\(PID (\d+)\)", text)
        who = f" (process {m.group(1)})" if m else ""
        return f"{LOCKED}{who}; try again when it has finished"
    if "not a valid DuckDB database" in text:
        return "not a case file (not a DuckDB database)"
    if "checksum" in text.lower() or "corrupt" in text.lower() or "serializ" in text.lower():
        return "corrupt case file (DuckDB cannot read it)"
    if "version" in text.lower() and "storage" in text.lower():
        return "written by an incompatible DuckDB version"
    return f"cannot open case: {text[:200]}"
