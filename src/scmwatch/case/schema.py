"""The case file's schema: base tables, the documented views, the version and its migrations.

A case is one DuckDB file. Its *base tables* (``*_rows``, ``runs_t`` ...) may change from one
schema version to the next; the *views* (``alerts``, ``evidence``, ``events``, ``hosts``,
``links``, ``lateral_edges``, ``files``, ``runs``, ``rules``, ``triage_state``) are the interface that
``query``, ``report`` and the web console read, documented in the README ("Keep a case").
Views are dropped and recreated on every open for writing, so a view can grow a column
without a migration; a base-table change needs one (``MIGRATIONS``).

``case_meta`` holds ``format = scmwatch-case`` (what tells a case from any other DuckDB file)
and ``schema_version``. A file from a newer scmwatch (a higher version) is refused rather than
half understood.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from scmwatch.case import search

FORMAT = "scmwatch-case"
SCHEMA_VERSION = 6

# Version 1: runs, input files, alerts with their evidence and entity links.
_V1 = """
CREATE TABLE case_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE runs_t (
    run_id INTEGER PRIMARY KEY, kind VARCHAR, started TIMESTAMP, finished TIMESTAMP,
    command VARCHAR, scmwatch_version VARCHAR, rulepack VARCHAR, ruleset_hash VARCHAR,
    rules_loaded INTEGER, correlations_loaded INTEGER, files INTEGER, events BIGINT,
    alerts INTEGER, alerts_new INTEGER, errors JSON, summary JSON);
CREATE TABLE file_rows (
    run_id INTEGER, file_no INTEGER, path VARCHAR, size BIGINT, sha256 VARCHAR,
    format VARCHAR, events BIGINT, errors JSON, PRIMARY KEY (run_id, file_no));
CREATE TABLE alert_rows (
    alert_id VARCHAR PRIMARY KEY, run_id INTEGER, rule_id VARCHAR, title VARCHAR,
    level VARCHAR, level_rank INTEGER, description VARCHAR, tags VARCHAR[], time TIMESTAMP,
    host VARCHAR, host_key VARCHAR, source VARCHAR, record_id BIGINT, kind VARCHAR,
    correlation JSON, extra JSON, event JSON, evidence_count INTEGER);
CREATE TABLE evidence_rows (
    alert_id VARCHAR, seq INTEGER, time TIMESTAMP, host VARCHAR, event_id INTEGER,
    channel VARCHAR, source VARCHAR, record_id BIGINT, event JSON);
CREATE TABLE link_rows (
    alert_id VARCHAR, time TIMESTAMP, source_host VARCHAR, source_ip VARCHAR,
    target_host VARCHAR, service VARCHAR, how VARCHAR);
"""

# Version 2: the events themselves (--keep-events) and the analyst's triage decisions.
_V2 = """
CREATE TABLE event_rows (
    file_sha256 VARCHAR, seq BIGINT, source VARCHAR, record_id BIGINT, format VARCHAR,
    time TIMESTAMP, EventID INTEGER, Channel VARCHAR, Provider_Name VARCHAR, Computer VARCHAR,
    EventRecordID BIGINT, TimeCreated VARCHAR, ProcessID BIGINT, ThreadID BIGINT,
    UserID VARCHAR, data JSON);
ALTER TABLE file_rows ADD COLUMN events_kept BOOLEAN DEFAULT false;
CREATE TABLE triage_t (
    entity VARCHAR, entity_id VARCHAR, status VARCHAR, note VARCHAR, analyst VARCHAR,
    time TIMESTAMP);
"""

# Version 3: the rules a hunt ran (their text, for the console's alert page), and the triage
# vocabulary of the console (true-positive -> malicious, false-positive -> benign).
_V3 = """
CREATE TABLE rule_rows (
    rule_id VARCHAR PRIMARY KEY, run_id INTEGER, kind VARCHAR, title VARCHAR, level VARCHAR,
    description VARCHAR, refs VARCHAR[], falsepositives VARCHAR[], tags VARCHAR[],
    path VARCHAR, yaml VARCHAR);
UPDATE triage_t SET status = 'malicious' WHERE status = 'true-positive';
UPDATE triage_t SET status = 'benign' WHERE status = 'false-positive';
"""

# Version 4: the latest decision per entity kept beside the log (``triage_t``) by
# ``triage.set_status``, so the console filters a million alerts by status without grouping the
# whole log. The views keep reading the log (``triage_state``): DuckDB 2.0 drops the LIMIT of a
# query whose LEFT JOIN meets a table it knows to be empty, and a fresh case has no decisions.
_V4 = """
CREATE TABLE triage_latest (
    entity VARCHAR, entity_id VARCHAR, status VARCHAR, note VARCHAR, analyst VARCHAR,
    time TIMESTAMP, PRIMARY KEY (entity, entity_id));
INSERT INTO triage_latest SELECT entity, entity_id, status, note, analyst, time FROM (
    SELECT *, row_number() OVER (PARTITION BY entity, entity_id ORDER BY time DESC, rowid DESC) AS n
    FROM triage_t) WHERE n = 1;
"""

# Version 5: each alert's evidence as lower-case text for the console's free-text filter
# (``case/search.py``). The table is rebuilt rather than updated: an UPDATE writing the text of
# a million alerts does not fit DuckDB's 256 MB (SCMWATCH_CASE_MEMORY), nor does aggregating all
# of it at once; an INSERT per slice of ~32 MB of evidence JSON does (1M alerts: 16 s, once).
_V5 = """
CREATE TABLE alert_rows_v5 (
    alert_id VARCHAR PRIMARY KEY, run_id INTEGER, rule_id VARCHAR, title VARCHAR,
    level VARCHAR, level_rank INTEGER, description VARCHAR, tags VARCHAR[], time TIMESTAMP,
    host VARCHAR, host_key VARCHAR, source VARCHAR, record_id BIGINT, kind VARCHAR,
    correlation JSON, extra JSON, event JSON, evidence_count INTEGER, search VARCHAR);
"""
_V5_SLICE = f"""
INSERT INTO alert_rows_v5 SELECT a.*, s.search FROM alert_rows a LEFT JOIN (
    SELECT e.alert_id, {search.text("e")} AS search FROM evidence_rows e
    WHERE hash(e.alert_id) % $slices = $slice GROUP BY e.alert_id) s USING (alert_id)
WHERE hash(a.alert_id) % $slices = $slice
"""
_V5_SLICE_BYTES = 32 << 20

# Version 6: the token index of the search text (``case/search.py``), built over the whole
# table once (1M alerts: ~38 s), then extended by each run's writer.

VIEWS = """
CREATE OR REPLACE VIEW runs AS SELECT * FROM runs_t;
CREATE OR REPLACE VIEW files AS
    SELECT run_id, file_no, path, size, sha256, format, events, errors, events_kept FROM file_rows;
CREATE OR REPLACE VIEW triage_state AS
    SELECT entity, entity_id, status, note, analyst, time FROM (
        SELECT *, row_number() OVER (PARTITION BY entity, entity_id ORDER BY time DESC, rowid DESC) AS n
        FROM triage_t) WHERE n = 1;
CREATE OR REPLACE VIEW alerts AS
    SELECT a.alert_id, a.time, a.level, a.level_rank, a.rule_id, a.title, a.host, a.host_key,
           a.kind, a.source, a.record_id, a.tags, a.description, a.correlation, a.extra, a.event,
           a.evidence_count, coalesce(t.status, 'new') AS status, t.note, t.analyst, a.run_id
    FROM alert_rows a
    LEFT JOIN triage_state t ON t.entity = 'alert' AND t.entity_id = a.alert_id;
CREATE OR REPLACE VIEW evidence AS
    SELECT alert_id, seq, time, host, event_id, channel, source, record_id, event FROM evidence_rows;
CREATE OR REPLACE VIEW links AS
    SELECT alert_id, time, source_host, source_ip, target_host, service, how FROM link_rows;
CREATE OR REPLACE VIEW lateral_edges AS
    SELECT l.source_host, l.target_host, count(DISTINCT l.alert_id) AS alerts,
           min(l.time) AS first_seen, max(l.time) AS last_seen,
           list_sort(list_distinct(list(l.service) FILTER (l.service IS NOT NULL))) AS services,
           list_sort(list_distinct(list(l.source_ip) FILTER (l.source_ip IS NOT NULL))) AS source_ips,
           coalesce(any_value(t.status), 'new') AS status, any_value(t.analyst) AS analyst
    FROM link_rows l
    LEFT JOIN triage_state t ON t.entity = 'edge' AND t.entity_id = l.source_host || ' -> ' || l.target_host
    GROUP BY l.source_host, l.target_host;
CREATE OR REPLACE VIEW hosts AS
    WITH a AS (
        SELECT host_key AS host, min(host) AS computer, count(*) AS alerts,
               max(level_rank) AS max_level_rank, min(time) AS first_alert, max(time) AS last_alert
        FROM alert_rows WHERE host_key IS NOT NULL GROUP BY host_key),
    lo AS (SELECT source_host AS host, count(*) AS links_out FROM link_rows GROUP BY 1),
    li AS (SELECT target_host AS host, count(*) AS links_in FROM link_rows GROUP BY 1),
    k AS (SELECT host FROM a UNION SELECT host FROM lo UNION SELECT host FROM li)
    SELECT k.host, a.computer, coalesce(a.alerts, 0) AS alerts, a.max_level_rank, a.first_alert,
           a.last_alert, coalesce(lo.links_out, 0) AS links_out, coalesce(li.links_in, 0) AS links_in,
           coalesce(t.status, 'new') AS status, t.note, t.analyst
    FROM k LEFT JOIN a USING (host) LEFT JOIN lo USING (host) LEFT JOIN li USING (host)
    LEFT JOIN triage_state t ON t.entity = 'host' AND t.entity_id = k.host;
CREATE OR REPLACE VIEW rules AS
    SELECT rule_id, kind, title, level, description, refs, falsepositives, tags, path, yaml,
           run_id FROM rule_rows;
CREATE OR REPLACE VIEW events AS
    SELECT source, record_id, format, time, EventID, Channel, Provider_Name, Computer,
           EventRecordID, TimeCreated, ProcessID, ThreadID, UserID, data, file_sha256, seq
    FROM event_rows;
"""

TRIAGE_STATUSES = ("new", "investigating", "benign", "malicious", "closed")


def _migrate_1_to_2(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_V2)


def _migrate_2_to_3(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_V3)


def _migrate_3_to_4(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_V4)


def _migrate_4_to_5(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_V5)
    size = con.execute("SELECT coalesce(sum(strlen(CAST(event AS VARCHAR))), 0) FROM evidence_rows"
                       ).fetchone()[0]
    slices = 1 + int(size) // _V5_SLICE_BYTES
    for i in range(slices):
        con.execute(_V5_SLICE, {"slices": slices, "slice": i})
    con.execute("DROP TABLE alert_rows")
    con.execute("ALTER TABLE alert_rows_v5 RENAME TO alert_rows")


def _migrate_5_to_6(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(search.INDEX_TABLES)  # filled by ``migrate`` once the rows are committed


# from version N to N+1
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {
    1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4, 4: _migrate_4_to_5, 5: _migrate_5_to_6}


def create(con: duckdb.DuckDBPyConnection, version: int = SCHEMA_VERSION) -> None:
    """A fresh case at ``version`` (older versions only to test migrations from them)."""
    con.execute(_V1)
    con.execute("INSERT INTO case_meta VALUES ('format', ?), ('schema_version', '1')", [FORMAT])
    migrate(con, 1, version)


def migrate(con: duckdb.DuckDBPyConnection, have: int, want: int = SCHEMA_VERSION) -> None:
    """Bring a case from schema ``have`` to ``want``, one step per version, in one transaction."""
    if have >= want:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        for v in range(have, want):
            MIGRATIONS[v](con)
        con.execute("UPDATE case_meta SET value = ? WHERE key = 'schema_version'", [str(want)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if have < 6 <= want:
        search.catch_up(con)


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(VIEWS)

# The views' columns, in order, with what they mean: the interface README documents and the
# web console builds on (tests check the views against this table).
VIEW_COLUMNS: dict[str, dict[str, str]] = {
    "alerts": {
        "alert_id": "deterministic id: sha256 of rule id + (input sha256, record id) of each evidence event",
        "time": "time of the (last) matching event, UTC",
        "level": "rule level", "level_rank": "0 informational .. 4 critical",
        "rule_id": "Sigma rule or correlation id", "title": "rule title",
        "host": "Computer of the event", "host_key": "short lower-case host name (joins hosts, links)",
        "kind": "'event' (single-event rule) or 'correlation'",
        "source": "input file of the event", "record_id": "record id / line in that file",
        "tags": "rule tags (list)", "description": "rule description",
        "correlation": "JSON: type, group_by, window, condition, rules (correlations only)",
        "extra": "JSON: rule custom attributes", "event": "JSON: the matching event's fields",
        "evidence_count": "rows in evidence for this alert",
        "status": "triage status (triage_state), 'new' if none", "note": "triage note",
        "analyst": "who made the decision (serve --analyst)", "run_id": "run that first found it",
    },
    "evidence": {
        "alert_id": "the alert", "seq": "0.. in time order", "time": "event time, UTC",
        "host": "Computer", "event_id": "EventID", "channel": "Channel",
        "source": "input file", "record_id": "record id / line", "event": "JSON: all fields",
    },
    "events": {
        "source": "input file", "record_id": "record id / line", "format": "evtx, json, xml, zeek",
        "time": "event time, UTC", "EventID": "System/EventID", "Channel": "System/Channel",
        "Provider_Name": "System/Provider", "Computer": "System/Computer",
        "EventRecordID": "System/EventRecordID", "TimeCreated": "as written",
        "ProcessID": "System/Execution", "ThreadID": "System/Execution", "UserID": "System/Security",
        "data": "JSON: every other field (EventData, UserData, ...)",
        "file_sha256": "sha256 of the input file", "seq": "position of the record in its file",
    },
    "hosts": {
        "host": "short lower-case name (or address)", "computer": "a full Computer name seen",
        "alerts": "alerts on it", "max_level_rank": "highest level_rank", "first_alert": "UTC",
        "last_alert": "UTC", "links_out": "link rows with it as source",
        "links_in": "link rows with it as target", "status": "triage status", "note": "triage note",
        "analyst": "who decided",
    },
    "links": {
        "alert_id": "the alert whose evidence shows it", "time": "UTC",
        "source_host": "short name or address", "source_ip": "address, when known",
        "target_host": "short name", "service": "service name involved, when known",
        "how": "'inbound' (target-side event names the source) or 'command-line' (source names target)",
    },
    "lateral_edges": {
        "source_host": "from", "target_host": "to", "alerts": "distinct alerts",
        "first_seen": "UTC", "last_seen": "UTC", "services": "list", "source_ips": "list",
        "status": "triage status of 'SOURCE -> TARGET'", "analyst": "who decided",
    },
    "files": {
        "run_id": "run", "file_no": "1.. in discovery order", "path": "input (archive!member)",
        "size": "bytes", "sha256": "content hash", "format": "evtx, json, xml, zeek",
        "events": "events read", "errors": "JSON: read errors by kind",
        "events_kept": "its events are in events",
    },
    "runs": {
        "run_id": "1..", "kind": "'hunt' or 'retro-hunt'", "started": "UTC",
        "finished": "UTC (a run is committed whole)", "command": "command line",
        "scmwatch_version": "version",
        "rulepack": "built-in pack version, if used", "ruleset_hash": "sha256 over the rule files",
        "rules_loaded": "rules", "correlations_loaded": "correlations", "files": "inputs",
        "events": "events read", "alerts": "alerts found", "alerts_new": "of those, new to the case",
        "errors": "JSON: read errors by kind", "summary": "JSON: the hunt summary",
    },
    "rules": {
        "rule_id": "as alerts.rule_id", "kind": "'rule' or 'correlation'", "title": "title",
        "level": "level", "description": "description", "refs": "the rule's references (list)",
        "falsepositives": "list", "tags": "list", "path": "rule file it was loaded from",
        "yaml": "the rule's YAML document (as written in its file)",
        "run_id": "the latest run that loaded it",
    },
    "triage_state": {
        "entity": "'alert', 'edge' or 'host'", "entity_id": "alert_id, 'SOURCE -> TARGET' or host",
        "status": "one of TRIAGE_STATUSES", "note": "free text", "analyst": "who", "time": "UTC",
    },
}
