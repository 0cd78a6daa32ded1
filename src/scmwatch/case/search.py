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

Reading that column is still ~130 ms of a page with no other load (285 MB of text at a million
alerts) and its p95 under load was over 300 ms. So the case also keeps a token index (schema 6):
``search_tokens`` lists every maximal run of ``[a-z0-9]`` in the column's text (a *token*) with
the number of alerts it occurs in, and ``search_postings`` the row ids of those alerts, except
for tokens in more than ``COMMON`` alerts (``postings`` NULL: too common to narrow anything).
Text matching is by substring, so a needle's runs say which tokens a matching alert must hold:
a run with a separator on both sides within the needle is a whole token, one at the needle's
end the start of a token, one at its start the end of a token, a needle that is one run any
token containing it. Candidates are the alerts holding such a token for every run whose tokens
are all indexed; the alerts of a needle that is one run are exactly its candidates, any other
needle's candidates are checked against the column (:func:`indexed`). Rows above
``case_meta.search_indexed`` (what a watch committed since it last extended the index) are
scanned. 1M alerts:
the index is 5.1M postings and 1.3M tokens, ~30 MB in the file (~80 MB with the tokens' primary
key), built in ~40 s; a one-run needle matching 2k alerts is answered in ~25 ms instead of the
column scan's ~140 ms (no other load).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import duckdb

from scmwatch.sinks.jsonl import json_line


def text(evidence: str) -> str:
    """The search text of one alert as SQL: an aggregate over its rows of ``evidence`` (a table
    or alias with ``event`` and ``seq``)."""
    return f"string_agg(lower(CAST({evidence}.event AS VARCHAR)), chr(10) ORDER BY {evidence}.seq)"


def refill(con: duckdb.DuckDBPyConnection, alert_ids: list[str]) -> None:
    """Write the search text of ``alert_ids`` again, after their evidence rows were changed
    (and the token index anew: only tests edit evidence)."""
    con.execute(f"UPDATE alert_rows SET search = (SELECT {text('e')} FROM evidence_rows e "
                "WHERE e.alert_id = alert_rows.alert_id) WHERE alert_id = ANY(?::VARCHAR[])", [alert_ids])
    con.execute("DELETE FROM search_tokens")
    con.execute("DELETE FROM search_postings")
    con.execute("UPDATE case_meta SET value = '-1' WHERE key = 'search_indexed'")
    extend_index(con)


# -- the token index -------------------------------------------------------------------------

TOKEN = "[a-z0-9]+"
_TOKEN = re.compile(TOKEN)
# A token in more alerts than this gets no postings. 1M alerts: 5.1M postings (the tokens
# below it) where every token would take 27M; the tokens above it are JSON keys, common values
# and short numbers, which narrow a search to no less than 1% of a million alerts.
COMMON = 10_000
# A run matching more postings than this is not read: fetching the keys of the rows a row-id
# list names costs ~60 ms for 20k rows and ~400 ms for 200k, where the scan costs ~130 ms.
POSTINGS_MAX = 20_000
# ... nor one matching more tokens than this (a short number inside a million others).
TOKENS_MAX = 5_000
# Candidates checked against their text (a needle that is not one run), at most: ~8 ms for 500.
CHECK_MAX = 2_000

INDEX_TABLES = """
CREATE TABLE search_tokens (token VARCHAR PRIMARY KEY, alerts INTEGER, postings INTEGER);
CREATE TABLE search_postings (token VARCHAR, r BIGINT);
INSERT INTO case_meta VALUES ('search_indexed', '-1');
"""


def catch_up(con: duckdb.DuckDBPyConnection, rows: int = 1) -> None:
    """:func:`extend_index` in a transaction of its own, after the alerts were committed (rows
    appended in an open transaction have row ids of their own until it commits), when at least
    ``rows`` rows are not indexed. The writer calls this after it committed a run (and a watch's
    commit once 50k rows wait), the migration to schema 6 after it committed; rows it has not
    reached are scanned."""
    if _indexed_up_to(con) + rows > (con.execute("SELECT max(rowid) FROM alert_rows").fetchone()[0] or -1):
        return
    con.execute("BEGIN TRANSACTION")
    try:
        extend_index(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def extend_index(con: duckdb.DuckDBPyConnection) -> None:
    """Index the committed alert rows above ``case_meta.search_indexed``. A token passing
    ``COMMON`` alerts loses its postings."""
    done = _indexed_up_to(con)
    top = con.execute("SELECT max(rowid) FROM alert_rows").fetchone()[0]
    if top is None or top <= done:
        return
    con.execute(f"""CREATE OR REPLACE TEMP TABLE search_new AS SELECT DISTINCT
        unnest(regexp_extract_all(search, '{TOKEN}')) AS token, rowid AS r
        FROM alert_rows WHERE rowid > ? AND rowid <= ?""", [done, top])
    con.execute("""CREATE OR REPLACE TEMP TABLE search_count AS
        SELECT n.token, n.alerts + coalesce(t.alerts, 0) AS alerts, t.token IS NOT NULL AS known,
               t.token IS NOT NULL AND t.postings IS NULL AS common
        FROM (SELECT token, count(*) AS alerts FROM search_new GROUP BY token) n
        LEFT JOIN search_tokens t USING (token)""")
    con.execute("DELETE FROM search_postings WHERE token IN (SELECT token FROM search_count "
                "WHERE known AND NOT common AND alerts > ?)", [COMMON])
    con.execute("""UPDATE search_tokens SET alerts = c.alerts,
        postings = CASE WHEN c.common OR c.alerts > ? THEN NULL ELSE c.alerts END
        FROM search_count c WHERE c.known AND search_tokens.token = c.token""", [COMMON])
    con.execute("INSERT INTO search_tokens SELECT token, alerts, CASE WHEN alerts > ? THEN NULL "
                "ELSE alerts END FROM search_count WHERE NOT known ORDER BY token", [COMMON])
    con.execute("INSERT INTO search_postings SELECT n.token, n.r FROM search_new n JOIN search_count c "
                "USING (token) WHERE NOT c.common AND c.alerts <= ? ORDER BY n.token, n.r", [COMMON])
    con.execute("UPDATE case_meta SET value = ? WHERE key = 'search_indexed'", [str(top)])
    con.execute("DROP TABLE search_new")
    con.execute("DROP TABLE search_count")


def _indexed_up_to(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT value FROM case_meta WHERE key = 'search_indexed'").fetchone()[0])


def _holds(token: str, run: str, left: bool, right: bool) -> bool:
    """Could an occurrence of the run lie in ``token`` (:func:`_run_condition` in Python)?"""
    if left and right:
        return token == run
    if left:
        return token.startswith(run)
    if right:
        return token.endswith(run)
    return run in token


def _run_condition(run: str, left: bool, right: bool) -> str:
    """SQL over ``token`` (bound ``?``: the run) for tokens an occurrence of the run lies in;
    ``left``/``right``: a separator precedes/follows the run within the needle."""
    if left and right:
        return "token = ?"
    if left:
        return "starts_with(token, ?)"
    if right:
        return "suffix(token, ?)"
    return "contains(token, ?)"


def indexed(con: duckdb.DuckDBPyConnection, needle: str) -> list[int] | None:
    """The row ids, up to ``case_meta.search_indexed``, of the alerts whose search text contains
    ``needle`` (lower-cased JSON text), from the index; None when the column must be scanned:
    the needle has no run, every run has a common token or too many postings, or the candidates
    to check are too many. A needle that is not one run has its candidates checked here against
    their text, fetched by row-id list (a point fetch for each row: ~8 ms for 500, where
    ``contains`` beside the list reads the column of every row group)."""
    runs = [(m.group(), m.start() > 0, m.end() < len(needle)) for m in _TOKEN.finditer(needle)]
    exact = len(runs) == 1 and runs[0][0] == needle
    common: list[str] | None = None
    sets: list[set[int]] = []
    for run, left, right in runs:
        if len(runs) > 1 and not left:
            # an ending or an inner part is a scan of every token (1M alerts: ~20-80 ms), so
            # one a common token (88 at 1M alerts) holds is not looked for
            if common is None:
                common = [t for (t,) in con.execute(
                    "SELECT token FROM search_tokens WHERE postings IS NULL").fetchall()]
            if any(_holds(t, run, left, right) for t in common):
                continue
        cond = _run_condition(run, left, right)
        tokens = con.execute(f"SELECT token, postings FROM search_tokens WHERE {cond} LIMIT ?",
                             [run, TOKENS_MAX + 1]).fetchall()
        if len(tokens) > TOKENS_MAX or any(p is None for _, p in tokens) or \
                sum(p for _, p in tokens) > POSTINGS_MAX:
            continue
        rows = con.execute("SELECT r FROM search_postings WHERE token = ANY(?::VARCHAR[])",
                           [[t for t, _ in tokens]]).fetchall()
        sets.append({r for (r,) in rows})
    if not sets:
        return None
    found = set.intersection(*sets)
    if not exact:
        if len(found) > CHECK_MAX:
            return None
        texts = con.execute("SELECT rowid, search FROM alert_rows WHERE rowid = ANY(?::BIGINT[])",
                            [sorted(found)]).fetchall()
        found = {r for r, text in texts if text is not None and needle in text}
    return sorted(found)


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


def needle(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """``text`` as the search column holds it: its JSON text, lower-cased by DuckDB."""
    return str(con.execute("SELECT lower(?)", [json_text(text)]).fetchone()[0])


class Branches(NamedTuple):
    """Free text as disjoint conditions over ``alert_rows`` (SQL, arguments), and at most how
    many alerts they match when the index answered (None: they scan the column)."""

    parts: list[tuple[str, list[Any]]]
    known: int | None


def branches(con: duckdb.DuckDBPyConnection, text: str) -> Branches:
    """:func:`predicate` as disjoint conditions that DuckDB pushes into the scan, so the other
    columns are read only for matching rows: the evidence matches (from the index, :func:`indexed`,
    and a scan of the rows above it; else a scan of the column); the title matches and the
    evidence does not. The title test is ``contains(lower(title), lower(text))`` (what ``ILIKE``
    does) because DuckDB pushes that one first; with ``ILIKE ... ESCAPE`` it pushed the search
    test and scanned the column twice (1M alerts, fresh connection: ~400 vs ~660 ms)."""
    low = needle(con, text)
    title = "contains(lower(title), lower(?))"
    found = indexed(con, low)
    if found is None:
        return Branches([("contains(search, ?)", [low]),
                         (f"{title} AND NOT coalesce(contains(search, ?), false)", [text, low])], None)
    done = _indexed_up_to(con)
    titles = con.execute(f"SELECT count(*) FROM alert_rows WHERE {title}", [text]).fetchone()[0]
    return Branches([("rowid = ANY(?::BIGINT[])", [found]),
                     ("rowid > ? AND contains(search, ?)", [done, low]),
                     (f"{title} AND NOT (rowid = ANY(?::BIGINT[])) AND NOT (rowid > ? AND "
                      "coalesce(contains(search, ?), false))", [text, found, done, low])],
                    len(found) + int(titles))


def reference_predicate(text: str) -> tuple[str, list[Any]]:
    """The same question asked of the evidence itself (no search column): the definition the
    column must agree with, for tests."""
    return ("(title ILIKE ? ESCAPE '\\' OR alert_id IN (SELECT alert_id FROM evidence_rows "
            "WHERE CAST(event AS VARCHAR) ILIKE ? ESCAPE '\\'))",
            [like_pattern(text), like_pattern(json_text(text))])
