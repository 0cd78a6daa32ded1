"""The analyst's decisions: a status and a note per alert, lateral edge or host.

Decisions are appended to ``triage_t`` (never updated in place, so the history stays) and the
view ``triage_state`` shows the latest per entity; ``alerts``, ``hosts`` and ``lateral_edges``
carry its ``status``. The same latest decision is kept in ``triage_latest`` in the same
transaction, for the console's status filter: write decisions only through :func:`set_status`
and :func:`set_status_where` (the web console does); ``query`` and the report read the views.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from scmwatch.case.schema import TRIAGE_STATUSES

ENTITIES = ("alert", "edge", "host")


def edge_id(source_host: str, target_host: str) -> str:
    """The entity id of a lateral edge (as ``lateral_edges`` joins it)."""
    return f"{source_host} -> {target_host}"


def set_status(con: duckdb.DuckDBPyConnection, entity: str, entity_id: str, status: str,
               note: str | None = None, analyst: str | None = None) -> None:
    """Record a decision (``con`` must be a writing connection). Raises ValueError for an
    unknown entity kind or status."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r} (one of {', '.join(ENTITIES)})")
    if status not in TRIAGE_STATUSES:
        raise ValueError(f"unknown status {status!r} (one of {', '.join(TRIAGE_STATUSES)})")
    row = [entity, entity_id, status, note, analyst, datetime.now(UTC).replace(tzinfo=None)]
    _in_transaction(con, lambda: (
        con.execute("INSERT INTO triage_t VALUES (?, ?, ?, ?, ?, ?)", row),
        con.execute("INSERT OR REPLACE INTO triage_latest VALUES (?, ?, ?, ?, ?, ?)", row)))


def set_status_where(con: duckdb.DuckDBPyConnection, where: str, args: list, status: str,
                     note: str | None = None, analyst: str | None = None) -> int:
    """Record one decision for every alert matching ``where`` (SQL over ``alert_rows`` with
    ``?`` parameters ``args``: the console's filters, ``web/alert_query.py``), in one statement;
    returns how many."""
    if status not in TRIAGE_STATUSES:
        raise ValueError(f"unknown status {status!r} (one of {', '.join(TRIAGE_STATUSES)})")
    now = datetime.now(UTC).replace(tzinfo=None)
    cond = f" WHERE {where}" if where else ""
    head = [status, note, analyst, now]
    counts: list[int] = []

    def both() -> None:
        con.execute("CREATE TEMP TABLE bulk_ids AS SELECT alert_id FROM alert_rows" + cond, list(args))
        row = con.execute("INSERT INTO triage_t SELECT 'alert', alert_id, ?, ?, ?, ? FROM bulk_ids",
                          head).fetchone()
        counts.append(int(row[0]) if row else 0)
        con.execute("INSERT OR REPLACE INTO triage_latest SELECT 'alert', alert_id, ?, ?, ?, ? FROM bulk_ids",
                    head)
        con.execute("DROP TABLE bulk_ids")

    _in_transaction(con, both)
    return counts[0]


def _in_transaction(con: duckdb.DuckDBPyConnection, work: Callable[[], Any]) -> None:
    """Run ``work`` in a transaction of its own, or in the caller's if one is open."""
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.TransactionException:
        work()
        return
    try:
        work()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
