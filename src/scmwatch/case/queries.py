"""Read-only SQL over a case, and the saved questions ``scmwatch query --list`` offers.

A query runs on a read-only connection with external access switched off (no ``read_csv`` of
other files, no ``ATTACH``, no ``COPY TO``) and the setting locked, so ``query`` can neither
change the case nor reach past it, whatever SQL it is given. Saved questions are plain SQL
over the documented views; their ``?`` parameters are bound from the command line, never
pasted into the text.

Questions about events read the stored events (``--keep-events``) together with the evidence
of alerts, so they answer something on every case and more on one that kept its events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import duckdb
import orjson

from scmwatch.case.store import open_case


class Question(NamedTuple):
    name: str
    params: tuple[str, ...]
    help: str
    sql: str


# Every event the case has, stored or evidence of an alert, once, with its fields as JSON.
_ALL_EVENTS = """
    (SELECT source, record_id, time, Computer AS host, EventID AS event_id,
            json_merge_patch(json_object('EventID', EventID, 'Channel', Channel,
                'Computer', Computer, 'ProcessID', ProcessID), data) AS event
     FROM events
     UNION ALL
     SELECT DISTINCT ON (source, record_id) source, record_id, time, host, event_id, event
     FROM evidence v
     WHERE NOT EXISTS (SELECT 1 FROM events s WHERE s.source = v.source AND s.record_id = v.record_id))
"""

QUESTIONS: tuple[Question, ...] = (
    Question("services", (), "every service installed (7045, 4697, Sysmon 13 ImagePath), by host", f"""
        SELECT min(time) AS first_seen, host, event_id,
               coalesce(event->>'ServiceName', regexp_extract(event->>'TargetObject',
                        '(?i)\\\\services\\\\([^\\\\]+)', 1)) AS service,
               coalesce(event->>'ImagePath', event->>'ServiceFileName', event->>'Details') AS image,
               count(*) AS events
        FROM {_ALL_EVENTS}
        WHERE event_id IN (7045, 4697) OR (event_id = 13 AND event->>'TargetObject' ILIKE '%\\ImagePath')
        GROUP BY ALL ORDER BY first_seen"""),
    Question("host-services", ("HOST",), "services installed on one host (name as in Computer, any case)",
             f"""
        SELECT time, event_id, coalesce(event->>'ServiceName', event->>'TargetObject') AS service,
               coalesce(event->>'ImagePath', event->>'ServiceFileName', event->>'Details') AS image,
               event->>'AccountName' AS account, source, record_id
        FROM {_ALL_EVENTS}
        WHERE (event_id IN (7045, 4697) OR (event_id = 13 AND event->>'TargetObject' ILIKE '%\\ImagePath'))
          AND (lower(host) = lower($1) OR lower(split_part(host, '.', 1)) = lower($1))
        ORDER BY time"""),
    Question("service-children", (), "process tree under services.exe (Sysmon 1 / 4688), two levels deep",
             f"""
        WITH p AS (
            SELECT time, host, event->>'ProcessGuid' AS guid, event->>'ParentProcessGuid' AS parent_guid,
                   coalesce(event->>'Image', event->>'NewProcessName') AS image,
                   coalesce(event->>'ParentImage', event->>'ParentProcessName') AS parent_image,
                   event->>'CommandLine' AS command_line
            FROM {_ALL_EVENTS} WHERE event_id IN (1, 4688)),
        children AS (SELECT 1 AS depth, * FROM p WHERE parent_image ILIKE '%\\services.exe'),
        grandchildren AS (
            SELECT 2 AS depth, p.* FROM p JOIN children c ON p.parent_guid = c.guid AND p.host = c.host)
        SELECT depth, time, host, parent_image, image, command_line
        FROM (SELECT * FROM children UNION ALL SELECT * FROM grandchildren)
        ORDER BY host, time, depth"""),
    Question("reached-from", ("HOST",), "hosts reached from HOST, directly or in further hops (links)", """
        WITH RECURSIVE reach(host, hops, path) AS (
            SELECT lower($1), 0, [lower($1)]
            UNION
            SELECT e.target_host, r.hops + 1, list_append(r.path, e.target_host)
            FROM reach r JOIN lateral_edges e ON e.source_host = r.host
            WHERE NOT list_contains(r.path, e.target_host) AND r.hops < 16)
        SELECT host, min(hops) AS hops, arg_min(array_to_string(path, ' -> '), hops) AS path
        FROM reach WHERE hops > 0 GROUP BY host ORDER BY hops, host"""),
    Question("alerts-by-rule", (), "alert counts per rule and level, with hosts", """
        SELECT level, title, count(*) AS alerts, count(DISTINCT host) AS hosts,
               min(time) AS first_seen, max(time) AS last_seen
        FROM alerts GROUP BY level, level_rank, title ORDER BY level_rank DESC, alerts DESC"""),
    Question("host-timeline", ("HOST",), "every alert on HOST in time order", """
        SELECT time, level, title, kind, status, source, record_id FROM alerts
        WHERE lower(host) = lower($1) OR lower(split_part(host, '.', 1)) = lower($1)
        ORDER BY time"""),
    Question("untriaged", (), "alerts nobody has triaged yet, most severe first", """
        SELECT alert_id, time, level, host, title FROM alerts WHERE status = 'new'
        ORDER BY level_rank DESC, time"""),
)

BY_NAME = {q.name: q for q in QUESTIONS}


class QueryError(Exception):
    """Bad SQL or bad parameters: ``str()`` is the one-line message."""


def connect_read_only(path: str) -> duckdb.DuckDBPyConnection:
    """A read-only connection that cannot reach other files (raises CaseError)."""
    con = open_case(path)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()
        ) -> tuple[list[str], Iterator[tuple]]:
    """Columns and a row iterator (fetched in batches: memory stays flat on big results).
    Values of JSON columns come back parsed (dicts, lists), not as JSON text."""
    q = BY_NAME.get(sql.strip())
    if q is not None:
        if len(params) != len(q.params):
            want = " ".join(q.params) or "no arguments"
            raise QueryError(f"saved question {q.name!r} takes {want}")
        sql = q.sql
    elif params:
        raise QueryError("arguments are only for saved questions (see --list)")
    try:
        cur = con.execute(sql, list(params)) if params else con.execute(sql)
    except duckdb.Error as exc:
        raise QueryError(" ".join(str(exc).split())[:400]) from None
    if cur.description is None:
        return [], iter(())
    cols = [d[0] for d in cur.description]
    json_cols = [i for i, d in enumerate(cur.description) if str(d[1]) == "JSON"]

    def parsed(row: tuple) -> tuple:
        if not json_cols:
            return row
        out = list(row)
        for i in json_cols:
            if out[i] is not None:
                out[i] = orjson.loads(out[i])
        return tuple(out)

    def rows() -> Iterator[tuple]:
        while True:
            try:
                batch = cur.fetchmany(4096)
            except duckdb.Error as exc:
                raise QueryError(" ".join(str(exc).split())[:400]) from None
            if not batch:
                return
            yield from map(parsed, batch)

    return cols, rows()
