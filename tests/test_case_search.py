"""Free text over a case (``case/search.py``): the precomputed search column finds exactly the
alerts the definition (``ILIKE`` over the title and every evidence event's JSON) finds, on
hostile and Unicode text, across the writer's batches, and after migrating an older case."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

duckdb = pytest.importorskip("duckdb")

from scmwatch.alerts import Alert  # noqa: E402
from scmwatch.case import CaseWriter, schema, search  # noqa: E402
from scmwatch.case.store import open_case  # noqa: E402
from scmwatch.case.writer import _ALERT_BATCH  # noqa: E402
from scmwatch.events.model import Event  # noqa: E402
from scmwatch.web import alert_query  # noqa: E402

VALUES = [
    "\u212a\u212aelvin", "\u0130stanbul", "STRA\u00dfE", "\u1e9e", "\u03a3\u0391\u03a3 \u03c2", "\ufb00",
    "\u01c4\u01c5", "e\u0301t\u00c9", "\uff21\uff22\uff23", "\u202egnp.exe\u202c", "\u200b\u200d",
    "\U0001f600 smile", "a\x00b", "\x1b[31mred", "tab\there", "line\nbreak\r\n", "quote\"inside",
    "back\\slash\\", "C:\\Windows\\Temp\\x.exe", "100% _under_", "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>", "javascript:alert(1)", "\",\"ImagePath\":\"", "\\\"",
    "\ud800lone", "caf\u00e9 CAF\u00c9",
]
NEEDLES = [
    "k", "K", "\u212a", "kelvin", "i\u0307", "\u0307", "\u0130", "istanbul", "stra\u00dfe", "strasse",
    "\u00df", "\u1e9e", "\u03c3", "\u03c2", "\u03a3", "ff", "\u01c6", "\u00e9", "\u00c9", "e\u0301",
    "\uff41\uff42\uff43", "\u202e", "gnp", "\u200d", "\U0001f600", "\x00", "a\x00b", "\x1b", "\x1b[31m",
    "\t", "\n", "line\nbreak", "\r\n", "\"", "quote\"in", "\\", "back\\slash", "\\\\", "x.exe",
    "100%", "%", "_", "_under_", "<script>", "onerror=", "javascript:", "\",\"", "\":\"", "ImagePath",
    "imagepath\":\"", "\"}", "{\"", ",", ":", "7045", "\\\"", "\ufffd", "lone", "smile", "caf\u00e9",
    "\u00c9 smile", "servicename", "title \u212a", "no such text anywhere",
]


def _alerts(n: int) -> list[Alert]:
    """Alerts whose titles and event fields carry ``VALUES``; every fifth a chain of events."""
    out = []
    for i in range(n):
        value = VALUES[i % len(VALUES)]
        fields = {"EventID": 7045, "Computer": f"WS{i % 7}.corp", "ServiceName": value,
                  "ImagePath": VALUES[(i * 7 + 3) % len(VALUES)], "Nested": {"list": [value, i]}}
        ev = Event(fields, f"logs/{i % 3}.evtx", i, "evtx", 1_714_982_400.0 + i)
        title = f"title {VALUES[(i * 3) % len(VALUES)]}" if i % 4 == 0 else "Plain rule"
        if i % 5:
            out.append(Alert(f"rule-{i % 9}", title, "high", "d", ["attack.t1569.002"], ev))
            continue
        chain = [Event({"EventID": 1, "CommandLine": VALUES[(i + k) % len(VALUES)], "k": k},
                       "logs/chain.evtx", i * 10 + k, "evtx", 1_714_982_400.0 + i - k) for k in (2, 1)]
        out.append(Alert("corr", title, "critical", "d", [], ev, events=[*chain, ev],
                         correlation={"type": "temporal"}))
    return out


def _ids(con: duckdb.DuckDBPyConnection, where: str, args: list) -> set[str]:
    return {r[0] for r in con.execute(f"SELECT alert_id FROM alert_rows WHERE {where}", args).fetchall()}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("search") / "c.duckdb"
    writer = CaseWriter(str(path), command="test")
    for a in _alerts(len(VALUES) * 10):
        writer.write(a)
    writer.close({"events": 0})
    return path


def test_search_column_finds_what_ilike_finds(case):
    con = open_case(str(case))
    try:
        found = 0
        for text in NEEDLES + [a + b for a, b in itertools.islice(itertools.permutations(VALUES[:8], 2), 20)]:
            want = _ids(con, *search.reference_predicate(text))
            assert _ids(con, *search.predicate(text)) == want, repr(text)
            parts = [_ids(con, *branch) for branch in search.branches(text)]
            assert parts[0] | parts[1] == want and not parts[0] & parts[1], repr(text)
            found += bool(want)
        assert found > len(NEEDLES) // 2  # the needles do match things
        # the console's list (one materialized scan for page and count) agrees too
        for text in ("\u212a", "\"", "\\", "\u00e9", "7045"):
            q = alert_query.parse({"q": text, "sort": "host", "level": "high"}, schema.TRIAGE_STATUSES)
            want = _ids(con, *search.reference_predicate(text)) & _ids(con, "level = 'high'", [])
            pages = [alert_query.fetch(con, q, 40)]
            while pages[-1].next and len(pages) < 50:
                pages.append(alert_query.fetch(con, q, 40, after=pages[-1].next))
            seen = [r["alert_id"] for p in pages for r in p.rows]
            assert pages[0].total == len(want) == len(seen) and set(seen) == want, repr(text)
            assert all(r["title"] is not None and r["status"] == "new" for p in pages for r in p.rows)
            if len(pages) > 1:  # back from the last page: the one before it, at its position
                back = alert_query.fetch(con, q, 40, before=pages[-1].prev)
                assert [r["alert_id"] for r in back.rows] == [r["alert_id"] for r in pages[-2].rows]
                assert back.first == pages[-2].first
    finally:
        con.close()


def test_writer_batches_give_every_alert_its_text(tmp_path):
    """Across the writer's batches (alerts loaded after their evidence) and a second run, the
    column holds exactly the text of each alert's stored evidence."""
    path = tmp_path / "c.duckdb"
    alerts = _alerts(_ALERT_BATCH + 700)
    for part in (alerts[: _ALERT_BATCH + 300], alerts[300:]):
        writer = CaseWriter(str(path), command="test")
        for a in part:
            writer.write(a)
        writer.close({"events": 0})
    con = open_case(str(path))
    try:
        assert con.execute("SELECT count(*) FROM alert_rows").fetchone()[0] == len(alerts)
        wrong = con.execute(f"""SELECT count(*) FROM alert_rows a WHERE search IS DISTINCT FROM
            (SELECT {search.text('e')} FROM evidence_rows e WHERE e.alert_id = a.alert_id)""").fetchone()[0]
        assert wrong == 0
        assert con.execute("SELECT count(*) FROM alert_rows WHERE search IS NULL").fetchone()[0] == 0
    finally:
        con.close()


def test_migration_to_schema_5_fills_the_column(tmp_path):
    """A schema-4 case (no search column) gets one on its first open, read-only or not, with
    the text of its evidence; its primary key still refuses a duplicate alert id."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    schema.create(con, version=4)
    con.execute("INSERT INTO alert_rows (alert_id, rule_id, title, level, level_rank, kind, evidence_count) "
                "VALUES ('a1', 'r1', 'Old alert', 'high', 3, 'event', 2), "
                "('a2', 'r1', 'Other', 'high', 3, 'event', 0)")
    con.execute("""INSERT INTO evidence_rows (alert_id, seq, event) VALUES
        ('a1', 0, '{"ServiceName":"PSEXESVC","Note":"\u212a"}'), ('a1', 1, '{"x":"Caf\u00e9"}')""")
    con.close()
    con = open_case(str(path))
    try:
        version = con.execute("SELECT value FROM case_meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == str(schema.SCHEMA_VERSION)
        for text, want in (("psexesvc", {"a1"}), ("CAFÉ", {"a1"}), ("old", {"a1"}), ("other", {"a2"}),
                           ("\u212a", {"a1"}), ("k", {"a1"}), ("zzz", set())):
            assert _ids(con, *search.predicate(text)) == want == _ids(con, *search.reference_predicate(text))
    finally:
        con.close()
    con = open_case(str(path), write=True)
    try:
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO alert_rows (alert_id) VALUES ('a1')")
    finally:
        con.close()
