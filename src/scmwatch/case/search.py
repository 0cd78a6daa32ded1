"""Free text over a case's alerts: the title, or any field of any evidence event, case-insensitive.

The meaning is ``title ILIKE '%text%' OR <an evidence event's JSON text> ILIKE '%json(text)%'``,
where ``json(text)`` is the text as it is written inside a JSON string (:func:`json_text`), so a
quote, a backslash or a control character in the text matches the same character in a field.

Scanning every evidence event's JSON for each query (1.25M events of a 1M-alert case, 266 MB)
and joining the matches back to their alerts cost ~0.9 s a query with no other load. So the
case keeps each alert's evidence JSON lower-cased in one column, ``alert_rows.search`` (one
line per event, :func:`text`), written with the alert (``case/writer.py`` loads a batch of
evidence first, then its alerts) and by the migration to schema 5; a query is then
``contains()`` over that one column (~150 ms; the price is a case file ~1.7x as large).
Lower-casing both sides with DuckDB's ``lower()`` is what ``ILIKE`` does, and no match can
span two events: they are joined by a newline, which ``json(text)`` never holds. The titles
stay a plain ``ILIKE`` (2 ms: the column is dictionary-compressed).
``tests/test_case_search.py`` checks the column query against the ``ILIKE`` one on hostile
and Unicode text.
"""

from __future__ import annotations

from typing import Any

import duckdb

from scmwatch.sinks.jsonl import json_line


def text(evidence: str) -> str:
    """The search text of one alert as SQL: an aggregate over its rows of ``evidence`` (a table
    or alias with ``event`` and ``seq``)."""
    return f"string_agg(lower(CAST({evidence}.event AS VARCHAR)), chr(10) ORDER BY {evidence}.seq)"


def refill(con: duckdb.DuckDBPyConnection, alert_ids: list[str]) -> None:
    """Write the search text of ``alert_ids`` again, after their evidence rows were changed."""
    con.execute(f"UPDATE alert_rows SET search = (SELECT {text('e')} FROM evidence_rows e "
                "WHERE e.alert_id = alert_rows.alert_id) WHERE alert_id = ANY(?::VARCHAR[])", [alert_ids])


def json_text(value: str) -> str:
    """``value`` as it appears inside a JSON string (how evidence fields are stored: a lone
    surrogate as the writer stores it, see ``sinks/jsonl.py``)."""
    return json_line(value)[1:-2].decode()


def like_pattern(value: str) -> str:
    """An ``ILIKE ... ESCAPE '\\'`` pattern matching ``value`` anywhere."""
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def predicate(text: str) -> tuple[str, list[Any]]:
    """SQL over ``alert_rows`` (with its ``?`` arguments) for the alerts ``text`` matches."""
    return ("(title ILIKE ? ESCAPE '\\' OR contains(search, lower(?)))",
            [like_pattern(text), json_text(text)])


def branches(text: str) -> list[tuple[str, list[Any]]]:
    """:func:`predicate` as two disjoint conditions (the evidence matches; the title matches and
    the evidence does not) that DuckDB pushes into the scan, so the other columns are read only
    for matching rows. The title test is ``contains(lower(title), lower(text))`` (what ``ILIKE``
    does) because DuckDB pushes that one first; with ``ILIKE ... ESCAPE`` it pushed the search
    test and scanned the column twice (1M alerts, fresh connection: ~400 vs ~660 ms)."""
    needle = json_text(text)
    return [("contains(search, lower(?))", [needle]),
            ("contains(lower(title), lower(?)) AND NOT coalesce(contains(search, lower(?)), false)",
             [text, needle])]


def reference_predicate(text: str) -> tuple[str, list[Any]]:
    """The same question asked of the evidence itself (no search column): the definition the
    column must agree with, for tests."""
    return ("(title ILIKE ? ESCAPE '\\' OR alert_id IN (SELECT alert_id FROM evidence_rows "
            "WHERE CAST(event AS VARCHAR) ILIKE ? ESCAPE '\\'))",
            [like_pattern(text), like_pattern(json_text(text))])
