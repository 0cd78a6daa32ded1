"""The alert list's question as SQL: filters from the query string, the sort, keyset paging.

Every value from the URL is a bound parameter, never spliced into the SQL. Paging is by keyset
(``after``/``before`` carry the sort key of the page's last/first row, opaque to the browser):
a page deep in a million alerts costs one top-N scan like the first page, where ``OFFSET`` would
have to sort everything before it. The position shown ("401-500 of N") is a count of the rows
before the page's first row, one more scan without sorting.

The filter names are the console's link vocabulary (other pages link to the list with them):
``level``, ``rule`` (rule id), ``kind`` (``event`` or ``correlation``), ``tag`` (a tag, or a
technique such as ``T1569.002``), ``host`` (short or full name), ``status``, ``from``/``to``
(UTC, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]``; a date alone in ``to`` means to the end of
that day), ``q`` (text in the title or in any field of any evidence event, case-insensitive).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb
import orjson

from scmwatch.case import search
from scmwatch.correlate.links import short_host

FILTER_KEYS = ("level", "rule", "kind", "tag", "host", "status", "from", "to", "q")
MAX_PARAM = 500
_TECHNIQUE = re.compile(r"(?i)t\d{4}(\.\d{3})?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# sort name -> (key expression, follows the chosen direction?) ...; alert_id last makes it total.
SORTS: dict[str, tuple[tuple[str, bool], ...]] = {
    "time": (("coalesce(epoch_us(time), 0)", True), ("alert_id", True)),
    "level": (("coalesce(level_rank, 0)", True), ("coalesce(epoch_us(time), 0)", False), ("alert_id", False)),
    "rule": (("coalesce(rule_id, '')", True), ("coalesce(epoch_us(time), 0)", False), ("alert_id", False)),
    "host": (("coalesce(host_key, '')", True), ("coalesce(epoch_us(time), 0)", False), ("alert_id", False)),
}
DEFAULT_SORT = ("level", "desc")


class FilterError(ValueError):
    """A filter or cursor the list cannot use; ``str()`` is the one-line message."""


@dataclass(frozen=True)
class Query:
    """One view of the alert list: filters, sort and direction (no position)."""

    chosen: dict[str, str]
    sort: str = DEFAULT_SORT[0]
    desc: bool = True
    where: str = ""
    args: list[Any] = field(default_factory=list)
    # the filters but free text, and the text: a scan of the search column, after which page
    # and count come from one materialized scan (the status filter gains nothing from that:
    # 1M alerts, status=new materializes 775k rows, ~300 vs ~210 ms)
    other: tuple[str, list[Any]] = ("", [])
    text: str = ""

    def params(self, **extra: Any) -> dict[str, str]:
        """The query-string parameters that give this view back (for links and forms)."""
        out = {k: v for k, v in self.chosen.items() if v}
        if (self.sort, "desc" if self.desc else "asc") != DEFAULT_SORT:
            out["sort"], out["dir"] = self.sort, "desc" if self.desc else "asc"
        out.update({k: str(v) for k, v in extra.items() if v is not None})
        return out

    def keys(self) -> list[tuple[str, bool]]:
        """(expression, descending?) in order."""
        return [(expr, self.desc if follows else False) for expr, follows in SORTS[self.sort]]

    def order_by(self, reverse: bool = False) -> str:
        return ", ".join(f"{e} {'DESC' if d != reverse else 'ASC'}" for e, d in self.keys())


def _when(name: str, value: str) -> tuple[datetime, bool]:
    """A from/to value as a datetime, and whether it was a date alone."""
    text = value.strip().replace(" ", "T")
    try:
        if _DATE.fullmatch(text):
            return datetime.fromisoformat(text), True
        if "T" in text and _DATE.fullmatch(text[:10]):
            when = datetime.fromisoformat(text.removesuffix("Z"))
            if when.tzinfo is None:
                return when, False
    except ValueError:
        pass
    raise FilterError(f"{name}: not a UTC date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS])")


def parse(params: Mapping[str, str], statuses: tuple[str, ...] = ()) -> Query:
    """The list's view from the query string. Raises :class:`FilterError`."""
    chosen = {k: str(params.get(k, "") or "")[:MAX_PARAM].strip() for k in FILTER_KEYS}
    where: list[str] = []
    args: list[Any] = []
    if chosen["level"]:
        where.append("level = ?")
        args.append(chosen["level"].lower())
    if chosen["rule"]:
        where.append("rule_id = ?")
        args.append(chosen["rule"])
    if chosen["kind"]:
        where.append("kind = ?")
        args.append(chosen["kind"])
    if chosen["tag"]:
        tag = chosen["tag"].lower()
        if _TECHNIQUE.fullmatch(tag):
            tag = "attack." + tag
        where.append("list_contains(tags, ?)")
        args.append(tag)
    if chosen["host"]:
        where.append("(host_key = ? OR lower(host) = ?)")
        args += [short_host(chosen["host"]) or chosen["host"].lower(), chosen["host"].lower()]
    if chosen["status"]:
        if statuses and chosen["status"] not in statuses:
            raise FilterError(f"status: one of {', '.join(statuses)}")
        # a semi-join on the decisions rather than the alerts view's join: the list then reads
        # the base table only
        if chosen["status"] == "new":
            where.append("alert_id NOT IN (SELECT entity_id FROM triage_latest WHERE entity = 'alert' "
                         "AND status <> 'new')")
        else:
            where.append("alert_id IN (SELECT entity_id FROM triage_latest WHERE entity = 'alert' "
                         "AND status = ?)")
            args.append(chosen["status"])
    if chosen["from"]:
        where.append("time >= ?")
        args.append(_when("from", chosen["from"])[0])
    if chosen["to"]:
        end, day = _when("to", chosen["to"])
        where.append("time < ?" if day else "time <= ?")
        args.append(end + timedelta(days=1) if day else end)
    other = (" AND ".join(where), list(args))
    if chosen["q"]:
        sql, more = search.predicate(chosen["q"])
        where.append(sql)
        args += more
    sort = str(params.get("sort", "") or DEFAULT_SORT[0])
    if sort not in SORTS:
        raise FilterError(f"sort: one of {', '.join(SORTS)}")
    direction = str(params.get("dir", "") or ("desc" if sort in ("level", "time") else "asc"))
    if direction not in ("asc", "desc"):
        raise FilterError("dir: asc or desc")
    return Query(chosen, sort, direction == "desc", " AND ".join(where), args, other, chosen["q"])


# -- keyset cursors --------------------------------------------------------------------------

def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(text: str, q: Query) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError):
        raise FilterError("page cursor: not one this console made (open the list again)") from None
    if not isinstance(values, list) or len(values) != len(SORTS[q.sort]) or not all(
            isinstance(v, int | str) and not isinstance(v, bool) for v in values):
        raise FilterError("page cursor: not one this console made (open the list again)")
    return values


def _beyond(q: Query, values: list[Any], before: bool, names: list[str] | None = None
            ) -> tuple[str, list[Any]]:
    """Rows strictly after (or before) the row whose sort key is ``values``; ``names`` are the
    key columns when they are selected already (``_k0`` ...), else their expressions."""
    ors, args = [], []
    keys = [(n, d) for n, (_, d) in zip(names, q.keys(), strict=True)] if names else q.keys()
    for i, (expr, desc) in enumerate(keys):
        ands = [f"{e} = ?" for e, _ in keys[:i]]
        ands.append(f"{expr} {'<' if desc != before else '>'} ?")
        ors.append("(" + " AND ".join(ands) + ")")
        args += [*values[:i], values[i]]
    return "(" + " OR ".join(ors) + ")", args


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int | None  # None: not counted (free text answered by the probe, ``_probe``)
    first: int  # 1-based position of the first row (0 when empty)
    prev: str | None  # cursor for the page before (``before=``), None on the first page
    next: str | None  # cursor for the page after (``after=``), None on the last page


LIST_COLUMNS = "alert_id, time, level, rule_id, title, host, host_key, kind, tags, evidence_count"
_HEX_ID = re.compile(r"[0-9a-f]{1,64}")


def _key_select(q: Query) -> str:
    return ", ".join(f"{e} AS _k{i}" for i, (e, _) in enumerate(SORTS[q.sort]))


def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _decisions(con: duckdb.DuckDBPyConnection, ids: list[str]
               ) -> dict[str, tuple[str, str | None, str | None]]:
    """(status, note, analyst) of the alerts among ``ids`` that have a decision. Ids the case made (hex)
    are listed as literals (answered from the primary key of ``triage_latest``)."""
    if not ids:
        return {}
    if all(_HEX_ID.fullmatch(i) for i in ids):
        listed = ", ".join(f"'{i}'" for i in ids)
        cur = con.execute("SELECT entity_id, status, note, analyst FROM triage_latest WHERE entity = 'alert' "
                          f"AND entity_id IN ({listed})")
    else:
        cur = con.execute("SELECT entity_id, status, note, analyst FROM triage_latest WHERE entity = 'alert' "
                          "AND entity_id = ANY(?::VARCHAR[])", [ids])
    return {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}


def _decide(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    """Give each row its ``status``, ``note`` and ``analyst``."""
    decided = _decisions(con, [r["alert_id"] for r in rows])
    for r in rows:
        r["status"], r["note"], r["analyst"] = decided.get(r["alert_id"], ("new", None, None))


def count(con: duckdb.DuckDBPyConnection, q: Query) -> int:
    """Alerts in the view."""
    where = " WHERE " + q.where if q.where else ""
    return int(con.execute(f"SELECT count(*) FROM alert_rows{where}", q.args).fetchone()[0])


class _Source:
    """Where a page is read from: ``alert_rows`` with the filters in the WHERE clause, or, for
    free text, a CTE ``m`` holding the matching rows' row ids and sort keys (the union of
    ``search.branches``), scanned once for the page and the count; the page's columns are then
    read by row id (:func:`_by_rowid`). 1M alerts, fresh connection: ~330 ms where text
    matching every alert materialized with all its columns took ~650 ms and two scans ~600 ms."""

    def __init__(self, q: Query, columns: str, branches: list[tuple[str, list[Any]]]) -> None:
        self.q = q
        n = len(SORTS[q.sort])
        if q.text:
            other, other_args = q.other
            parts, self.head_args = [], []
            for sql, args in branches:
                parts.append(f"SELECT rowid AS _r, {_key_select(q)} FROM alert_rows WHERE {sql}"
                             + (f" AND {other}" if other else ""))
                self.head_args += [*args, *other_args]
            self.head = f"WITH m AS MATERIALIZED ({' UNION ALL '.join(parts)}) "
            self.table, self.select, self.names = "m", "*", [f"_k{i}" for i in range(n)]
            self.clauses: list[str] = []
            self.args: list[Any] = []
        else:
            self.head, self.head_args = "", []
            self.table, self.select, self.names = "alert_rows", f"{columns}, {_key_select(q)}", None
            self.clauses, self.args = ([q.where], list(q.args)) if q.where else ([], [])

    def order_by(self, reverse: bool) -> str:
        if self.names is None:
            return self.q.order_by(reverse)
        return ", ".join(f"{n} {'DESC' if d != reverse else 'ASC'}"
                         for n, (_, d) in zip(self.names, self.q.keys(), strict=True))

    def beyond(self, values: list[Any], before: bool) -> tuple[list[str], list[Any]]:
        sql, more = _beyond(self.q, values, before, self.names)
        return [*self.clauses, sql], [*self.args, *more]

    def count(self, con: duckdb.DuckDBPyConnection, clauses: list[str], args: list[Any]) -> int:
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return int(con.execute(f"{self.head}SELECT count(*) FROM {self.table}{where}",
                               [*self.head_args, *args]).fetchone()[0])


def _by_rowid(con: duckdb.DuckDBPyConnection, rowids: list[int], columns: str) -> list[dict[str, Any]]:
    """The ``columns`` of the rows ``rowids`` (of this connection's snapshot), in that order. A
    list parameter is a point fetch of each row (1M alerts, 100 rows: ~5 ms; ``rowid IN (...)``
    read every row group a row is in: ~35 ms)."""
    if not rowids:
        return []
    found = {r.pop("_r"): r for r in _rows(con.execute(
        f"SELECT rowid AS _r, {columns} FROM alert_rows WHERE rowid = ANY(?::BIGINT[])", [rowids]))}
    return [found[r] for r in rowids]


# Rows, in the view's order, whose text is checked before free text the index cannot answer
# scans the whole column: when they hold a page of matches, that page is shown uncounted.
# 1M alerts, text in every alert: ~60 ms (the top 500 keys, then 500 texts fetched by row id)
# where scanning and sorting every match took ~390 ms.
PROBE = 500
# ... also tried when the index found more matches than this (sorting them costs more).
PROBE_ABOVE = 20_000


def _probe(con: duckdb.DuckDBPyConnection, q: Query, size: int, after: str | None
           ) -> list[tuple[int, list[Any]]] | None:
    """The first ``size`` + 1 matches of the free text in the view's order, as (row id, sort key),
    when they are among the first ``PROBE`` rows the other filters give; else None."""
    other, args = q.other
    clauses = [other] if other else []
    if after:
        sql, more = _beyond(q, decode_cursor(after, q), before=False)
        clauses.append(sql)
        args = [*args, *more]
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    n = len(SORTS[q.sort])
    top = con.execute(f"SELECT rowid, {_key_select(q)} FROM alert_rows{where} "
                      f"ORDER BY {q.order_by()} LIMIT ?", [*args, PROBE]).fetchall()
    hit = dict(con.execute(
        "SELECT rowid, contains(lower(title), lower(?)) OR coalesce(contains(search, ?), false) "
        "FROM alert_rows WHERE rowid = ANY(?::BIGINT[])",
        [q.text, search.needle(con, q.text), [r[0] for r in top]]).fetchall())
    found = [(r[0], list(r[1:1 + n])) for r in top if hit[r[0]]]
    return found[:size + 1] if len(found) > size else None


def fetch(con: duckdb.DuckDBPyConnection, q: Query, size: int, after: str | None = None,
          before: str | None = None, last: bool = False, columns: str = LIST_COLUMNS,
          position: int | None = None, counted: bool = False) -> Page:
    """One page of the view: the first, the one after/before a cursor, or the last; rows carry
    ``status``, ``note`` and ``analyst``. One top-N scan gives the page (at 1M alerts, selecting the shown
    columns in it costs less than looking the page's ids up in the primary key afterwards:
    ~60 vs ~105 ms from a fresh connection). ``position`` (1-based, from the link that led
    here) is only shown; a page reached without it (``before``) counts it. Free text that the
    index cannot answer (or finds in many alerts), going forward from a known position, is first
    tried on the view's first rows (``_probe``) unless ``counted``; a page found there has
    ``total`` None."""
    branches = search.branches(con, q.text) if q.text else search.Branches([], 0)
    if (branches.known is None or branches.known > PROBE_ABOVE) and not counted and \
            not (before or last) and (position is not None or not after):
        found = _probe(con, q, size, after)
        if found is not None:
            page = found[:size]
            rows = _by_rowid(con, [r for r, _ in page], columns)
            _decide(con, rows)
            return Page(rows, None, position if after and position is not None else 1,
                        encode_cursor(page[0][1]) if after else None, encode_cursor(page[-1][1]))
    src = _Source(q, columns, branches.parts)
    backward = bool(before) or last
    clauses, args = src.clauses, src.args
    if after or before:
        clauses, args = src.beyond(decode_cursor(after or before or "", q), before=backward)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    total_col = ", (SELECT count(*) FROM m) AS _total" if q.text else ""
    rows = _rows(con.execute(f"{src.head}SELECT {src.select}{total_col} FROM {src.table}{where} "
                             f"ORDER BY {src.order_by(reverse=backward)} LIMIT ?",
                             [*src.head_args, *args, size + 1]))
    more_rows = len(rows) > size
    rows = rows[:size]
    if backward:
        rows.reverse()
    keys = [[r.pop(f"_k{i}") for i in range(len(SORTS[q.sort]))] for r in rows]
    totals = {r.pop("_total") for r in rows} if q.text else set()
    if q.text:
        rows = _by_rowid(con, [r["_r"] for r in rows], columns)
    _decide(con, rows)
    if totals:
        total = int(totals.pop())
    elif not q.text:
        total = count(con, q)
    else:
        total = src.count(con, src.clauses, src.args)
    first = 0
    if rows:
        if last:
            first = total - len(rows) + 1
        elif not (after or before):
            first = 1
        elif position is not None and after:
            first = max(1, min(position, total))
        else:
            first = 1 + src.count(con, *src.beyond(keys[0], before=True))
    has_prev = more_rows if backward else bool(after)
    has_next = bool(before) and not last if backward else more_rows
    return Page(rows, total, first,
                encode_cursor(keys[0]) if rows and has_prev and first > 1 else None,
                encode_cursor(keys[-1]) if rows and has_next else None)
