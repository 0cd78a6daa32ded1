"""Proof that an exported rule means what it means in scmwatch: the same events, both sides.

``verify`` loads events (a pack's fixtures: every ``tests/<stem>.jsonl`` beside the rule files,
positive and near-miss; plus any event files given, e.g. the multi-event correlation fixtures)
once through scmwatch's normalizer, runs them through the engine, and writes the same flat events
into an in-memory SQLite table the way the sqlite backend expects (one column per field,
``TEXT COLLATE NOCASE`` like Zircolite's layout, ``timestamp`` from ``TimeCreated``). Every
query the ``sqlite`` target exported runs over that table; per rule the set of matching events
must equal the engine's. Each difference is reported with the event's file and line.
Correlations the target exported run the same way: the engine's correlator (the stage ``hunt``
uses) over the same events in time order gives alerts per group-by value; the backend's SQL gives
rows with ``group_keys``; per correlation the two *sets* of alerting groups must be equal. How
often a group re-alerts is not compared, only counted (``correlation_count_notes``): scmwatch
alerts once and starts a new window (10 installs in 450 s with ``gte: 5`` give 2 alerts), the
SQLite backend returns one row per occurrence of a sliding window (6 rows).

Correlations grouped by scmwatch's derived ``link.*`` fields are not exportable, but the table
carries those fields as columns (learned in event-time order by the correlator's own
:class:`~scmwatch.correlate.links.EntityLinks`), so they are compared too, as a cross-check of
the correlator against an independent implementation, reported apart (``linked_*``, not part of
``ok``). Two semantic differences of the SQLite backend show there (:data:`KNOWN_DIFFERENCES`).

Representation choices (documented, not hidden): a list value (unnamed ``<Data>`` items) is one
newline-joined text, so ``contains``/``re`` see every item as the engine's any-of does, while
``=``/``startswith``/``endswith`` on a multi-item list would differ; SQLite folds case for ASCII
only (the engine folds Unicode); ``REGEXP`` is Python's ``re.search``, as the engine's.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from scmwatch.correlate import DERIVED_FIELDS, CorrelationStage
from scmwatch.correlate.links import EntityLinks, extract_fact
from scmwatch.events.model import Event, ReadStats
from scmwatch.events.read import iter_events
from scmwatch.export.convert import Export, export_rules
from scmwatch.packtest import fixture_event, fixture_file_for, load_fixtures, rule_files
from scmwatch.sigma import Engine, load_rules

TABLE = "logs"
# Where the SQLite backend's correlation semantics differ from scmwatch's (found by verify on the
# pack's correlation fixtures; theirs, documented in the README).
KNOWN_DIFFERENCES = {
    "corr_785_modify_and_start": "a chained correlation whose inner correlation has an absence "
    "('not') is dated at the end of the inner window by the SQLite backend, at its positive event "
    "by scmwatch, so an outer temporal_ordered sees a later event as earlier there and never fires",
    "corr_778_hidden_service": "the SQLite backend looks for an absent event only after the "
    "positive one (window [t, t+timespan]); scmwatch within the timespan on both sides, so an SCM "
    "install 3 s before a 4657 cancels the alert in scmwatch only",
}
ROW = "_scm_row"
_MISSING_COLUMN = re.compile(r"no such column: (.+)$")


@dataclass
class Difference:
    rule: str
    event: str  # file:line
    engine: bool
    sqlite: bool


@dataclass
class Verification:
    events: int = 0
    rules_compared: int = 0
    rules_equal: int = 0
    differences: list[Difference] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a query SQLite could not run
    matches: int = 0  # (rule, event) pairs both sides matched
    skipped: list[str] = field(default_factory=list)  # not exported: nothing to compare
    # exported but never run by the engine (no scmwatch event source: Linux, macOS, cloud ...;
    # or not compiled): the ungated query may match events the engine never shows the rule
    not_run: list[str] = field(default_factory=list)
    correlations_compared: int = 0
    # Correlations on link.* fields cannot be exported; with the fields as columns they still
    # compare scmwatch's correlator with an independent one. Reported apart: not part of ``ok``.
    linked_compared: int = 0
    linked_equal: int = 0
    linked_differences: list[str] = field(default_factory=list)
    linked_count_notes: list[str] = field(default_factory=list)
    correlations_equal: int = 0
    correlation_alerts: int = 0  # alerts both sides raised
    correlation_differences: list[str] = field(default_factory=list)
    correlation_count_notes: list[str] = field(default_factory=list)  # same groups, other alert counts

    @property
    def ok(self) -> bool:
        return (not self.differences and not self.correlation_differences and not self.errors
                and self.events > 0)


def fixture_events(paths: Iterable[str | os.PathLike]) -> list[Event]:
    """The ``rules test`` fixtures of every rule file under ``paths``, as the engine sees them."""
    out: list[Event] = []
    for f in rule_files(paths):
        fx = fixture_file_for(f)
        if not fx.exists():
            continue
        items, _problems = load_fixtures(fx)
        out.extend(fixture_event(obj, str(fx), lineno) for lineno, obj in items)
    return out


def _cell(value: object) -> object:
    if isinstance(value, bool):  # Sysmon writes "true"/"false"; JSON exports may carry booleans
        return "true" if value else "false"
    if value is None or isinstance(value, int | float | str):
        return value
    if isinstance(value, list):
        return "\n".join("" if v is None else str(v) for v in value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _regexp(pattern: str, value: object) -> bool:
    if value is None:
        return False
    rx = _regex(pattern)
    return bool(rx and rx.search(str(value)))


def link_values(events: list[Event]) -> list[dict[str, str | None]]:
    """scmwatch's derived ``link.*`` fields of each event, learned in event-time order as the
    correlator learns them (correlate/links.py)."""
    links = EntityLinks()
    out: list[dict[str, str | None]] = [{} for _ in events]
    for i in sorted(range(len(events)), key=lambda i: (events[i].time, i)):
        fields = events[i].fields
        fact = extract_fact(fields)
        if fact is not None:
            links.apply(fact)
        out[i] = {name: links.derive(fields, name) for name in DERIVED_FIELDS}
    return out


def build_table(events: list[Event], with_links: bool = False) -> sqlite3.Connection:
    """An in-memory SQLite database with the events as table ``logs`` (row i = events[i]);
    ``with_links`` adds the ``link.*`` columns (:func:`link_values`)."""
    conn = sqlite3.connect(":memory:")
    conn.create_function("regexp", 2, _regexp, deterministic=True)
    links = link_values(events) if with_links else None
    columns: dict[str, str] = {name: name for name in DERIVED_FIELDS} if with_links else {}
    for ev in events:
        for k in ev.fields:
            columns.setdefault(k.lower(), k)
    names = [ROW, "timestamp", *sorted(columns.values())]
    conn.execute(f"CREATE TABLE {TABLE} ({ROW} INTEGER PRIMARY KEY, timestamp TEXT, "
                 + ", ".join(f"{_quote(c)} TEXT COLLATE NOCASE" for c in names[2:]) + ")")
    place = ", ".join("?" for _ in names)
    rows = []
    for i, ev in enumerate(events):
        # SQLite column names ignore case, so 'path' (Zeek) and 'Path' share a column
        by_lower = {k.lower(): v for k, v in ev.fields.items()}
        if links is not None:
            by_lower.update(links[i])
        row: list[object] = [i, _cell(ev.fields.get("TimeCreated"))]
        row.extend(_cell(by_lower.get(c.lower())) for c in names[2:])
        rows.append(row)
    conn.executemany(f"INSERT INTO {TABLE} ({', '.join(_quote(n) for n in names)}) VALUES ({place})", rows)
    return conn


def run_query(conn: sqlite3.Connection, query: str) -> set[int]:
    """Row numbers a ``SELECT * FROM logs WHERE ...`` query returns; absent columns added as NULL."""
    return {r[0] for r in _rows(conn, f"SELECT {ROW} FROM ({query})")}


def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple]:
    """All rows of ``sql``; columns the table lacks are added as NULL (one more per round)."""
    for _ in range(64):  # bounded
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            m = _MISSING_COLUMN.search(str(exc))
            if not m:
                raise
            column = _quote(m.group(1))
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} TEXT COLLATE NOCASE")
    raise sqlite3.OperationalError("too many missing columns")


def verify(paths: Iterable[str | os.PathLike], extra_events: Iterable[str] = (),
           exported: Export | None = None) -> Verification:
    """Compare scmwatch's engine with the exported SQLite queries on the same events."""
    paths = [str(p) for p in paths]
    events = fixture_events(paths)
    if extra_events:
        events.extend(iter_events(list(extra_events), ReadStats()))
    res = Verification(events=len(events))
    exp = exported or export_rules(paths, "sqlite")
    ruleset = load_rules(paths)
    engine = Engine(ruleset)
    engine_hits: dict[str, set[int]] = {}
    matched = []
    for i, ev in enumerate(events):
        matched.append(engine.match(ev))
        for r in matched[-1]:
            engine_hits.setdefault(r.id, set()).add(i)
    conn = build_table(events, with_links=True)
    runs = {r.id for r in ruleset.rules} - {r.id for r, _reason in ruleset.not_run}
    for e in exp.entries:
        if e.kind != "rule":
            continue
        if not e.exported:
            res.skipped.append(e.label)
            continue
        if e.id not in runs:
            res.not_run.append(e.label)
            continue
        got: set[int] = set()
        try:
            for q in e.queries:
                got |= run_query(conn, q)
        except sqlite3.Error as exc:
            res.errors.append(f"{e.label}: SQLite: {exc}")
            continue
        want = engine_hits.get(e.id, set())
        res.rules_compared += 1
        res.matches += len(got & want)
        if got == want:
            res.rules_equal += 1
            continue
        for i in sorted(got ^ want):
            ev = events[i]
            where = f"{Path(ev.source).name}:{ev.record_id}"
            res.differences.append(Difference(e.label, where, i in want, i in got))
    corrs = [e for e in exp.entries if e.kind == "correlation" and e.exported]
    blocked = {e.id for e in exp.entries if e.kind == "correlation" and not e.exported}
    linked = []
    if blocked and events:
        linked = [e for e in export_rules(paths, "sqlite", derived_ok=True).entries
                  if e.kind == "correlation" and e.exported and e.id in blocked]
    if corrs or linked:
        want, suppressed = engine_correlation_alerts(ruleset, events, matched)
        # a correlation used only inside another (generate: false) never alerts on its own
        out = _compare_correlations(res, [e for e in corrs if e.id not in suppressed], conn, want)
        res.correlations_compared, res.correlations_equal = out
        lout = _compare_correlations(res, [e for e in linked if e.id not in suppressed], conn, want, True)
        res.linked_compared, res.linked_equal = lout
    conn.close()
    return res


def _group(values: dict) -> tuple:
    return tuple(sorted((str(k), str(v).lower()) for k, v in values.items()))


def engine_correlation_alerts(ruleset, events: list[Event],
                              matched: list[list]) -> tuple[dict[str, Counter], frozenset[str]]:
    """Correlation id -> groups the engine alerts on (as ``hunt`` would, events in time order),
    and the ids of correlations whose alerts ``generate: false`` suppresses."""
    stage = CorrelationStage.for_ruleset(ruleset)
    out: dict[str, Counter] = {}
    if stage is None:
        return out, frozenset()
    candidates = []
    for i, (ev, rules) in enumerate(zip(events, matched, strict=True)):
        c = stage.selector.select(ev, rules, 0, i)
        if c is not None:
            candidates.append(c)
    candidates.sort(key=lambda c: c.sort_key())
    for alert in stage.correlate(candidates):
        group = (alert.to_dict().get("correlation") or {}).get("group_by") or {}
        out.setdefault(alert.rule_id, Counter())[_group(group)] += 1
    return out, frozenset(stage.suppressed)


def _compare_correlations(res: Verification, corrs: list, conn: sqlite3.Connection,
                          want: dict[str, Counter], linked: bool = False) -> tuple[int, int]:
    """(compared, equal); differences and re-alert notes go into ``res`` (linked: apart)."""
    diffs = res.linked_differences if linked else res.correlation_differences
    notes = res.linked_count_notes if linked else res.correlation_count_notes
    compared = equal = 0
    for e in corrs:
        try:
            rows = [r for q in e.queries for r in _rows(conn, q)]
        except sqlite3.Error as exc:
            res.errors.append(f"{e.label}: SQLite: {exc}")
            continue
        got: Counter = Counter()
        for row in rows:
            try:
                keys = json.loads(row[1])
            except (TypeError, ValueError, IndexError):
                keys = None
            if not isinstance(keys, dict):
                res.errors.append(f"{e.label}: SQLite row without group_keys: {str(row)[:80]}")
                break
            got[_group(keys)] += 1
        expected = want.get(e.id, Counter())
        compared += 1
        if not linked:
            res.correlation_alerts += len(set(got) & set(expected))
        for group in sorted(set(got) | set(expected)):
            label = ", ".join(f"{k}={v}" for k, v in group) or "(no group)"
            line = f"{e.label}: group {label}: engine {expected[group]} alert(s), SQLite {got[group]}"
            if bool(got[group]) != bool(expected[group]):
                diffs.append(line)
            elif got[group] != expected[group]:
                notes.append(line)
        if set(got) == set(expected):
            equal += 1
    return compared, equal
