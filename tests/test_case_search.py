"""Free text over a case (``case/search.py``): the precomputed search column and its token index
find exactly the alerts the definition (``ILIKE`` over the title and every evidence event's JSON)
finds, on hostile and Unicode text, across the writer's batches and runs (tokens turning common,
rows a watch committed before indexing them), and after migrating an older case."""

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


def _write_run(path: Path, alerts: list) -> None:
    """One hunt's run into the case at ``path``: ``alerts`` written, the run closed."""
    writer = CaseWriter(str(path), command="test")
    for a in alerts:
        writer.write(a)
    writer.close({"events": 0})


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("search") / "c.duckdb"
    _write_run(path, _alerts(len(VALUES) * 10))
    return path


def _agrees(con: duckdb.DuckDBPyConnection, texts: list[str]) -> tuple[int, int]:
    """Every text's branches are disjoint and find what the definition finds; returns how many
    texts matched something and how many the index answered."""
    found = answered = 0
    for text in texts:
        want = _ids(con, *search.reference_predicate(text))
        assert _ids(con, *search.predicate(text)) == want, repr(text)
        parts = [_ids(con, *branch) for branch in search.branches(con, text)[0]]
        assert set().union(*parts) == want, repr(text)
        assert sum(map(len, parts)) == len(want), repr(text)  # disjoint
        found += bool(want)
        answered += search.indexed(con, search.needle(con, text)) is not None
    return found, answered


def _index_is_exact(con: duckdb.DuckDBPyConnection) -> None:
    """The index holds, for every row up to ``search_indexed``, exactly the tokens of its text:
    each token's alert count, and the postings of every token in at most ``COMMON`` alerts."""
    done = int(con.execute("SELECT value FROM case_meta WHERE key = 'search_indexed'").fetchone()[0])
    truth = f"""SELECT DISTINCT unnest(regexp_extract_all(search, '{search.TOKEN}')) AS token, rowid AS r
                FROM alert_rows WHERE rowid <= {done}"""
    counts = dict(con.execute(f"SELECT token, count(*) FROM ({truth}) GROUP BY 1").fetchall())
    tokens = {t: (a, p) for t, a, p in
              con.execute("SELECT token, alerts, postings FROM search_tokens").fetchall()}
    assert {t: a for t, (a, _) in tokens.items()} == counts
    assert all((p is None) == (a > search.COMMON) and p in (None, a) for a, p in tokens.values())
    want = set(con.execute(f"SELECT token, r FROM ({truth}) WHERE token IN "
                           "(SELECT token FROM search_tokens WHERE postings IS NOT NULL)").fetchall())
    have = con.execute("SELECT token, r FROM search_postings").fetchall()
    assert len(have) == len(set(have)) and set(have) == want


def test_search_column_finds_what_ilike_finds(case):
    con = open_case(str(case))
    try:
        texts = NEEDLES + [a + b for a, b in itertools.islice(itertools.permutations(VALUES[:8], 2), 20)]
        found, answered = _agrees(con, texts)
        assert found > len(NEEDLES) // 2  # the needles do match things
        assert answered > len(texts) // 4  # ... and the index answers many of them
        _index_is_exact(con)
        # the console's list (one materialized scan for page and count) agrees too
        probed = 0
        for text in ("\u212a", "\"", "\\", "\u00e9", "7045"):
            q = alert_query.parse({"q": text, "sort": "host", "level": "high"}, schema.TRIAGE_STATUSES)
            want = _ids(con, *search.reference_predicate(text)) & _ids(con, "level = 'high'", [])
            pages = [alert_query.fetch(con, q, 40, counted=True)]
            while pages[-1].next and len(pages) < 50:
                pages.append(alert_query.fetch(con, q, 40, after=pages[-1].next, counted=True))
            seen = [r["alert_id"] for p in pages for r in p.rows]
            assert pages[0].total == len(want) == len(seen) and set(seen) == want, repr(text)
            # uncounted (the probe of the view's first rows, where it finds a page): the same
            # pages at the same positions
            fast = [alert_query.fetch(con, q, 40)]
            while fast[-1].next and len(fast) < 50:
                fast.append(alert_query.fetch(con, q, 40, after=fast[-1].next,
                                              position=fast[-1].first + len(fast[-1].rows)))
            assert [[r["alert_id"] for r in p.rows] for p in fast] == \
                [[r["alert_id"] for r in p.rows] for p in pages], repr(text)
            assert [p.first for p in fast] == [p.first for p in pages]
            assert all(p.total in (None, len(want)) for p in fast)
            probed += fast[0].total is None
            assert all(r["title"] is not None and r["status"] == "new" for p in pages for r in p.rows)
            if len(pages) > 1:  # back from the last page: the one before it, at its position
                back = alert_query.fetch(con, q, 40, before=pages[-1].prev)
                assert [r["alert_id"] for r in back.rows] == [r["alert_id"] for r in pages[-2].rows]
                assert back.first == pages[-2].first
        assert probed >= 2
    finally:
        con.close()


def test_writer_batches_give_every_alert_its_text(tmp_path):
    """Across the writer's batches (alerts loaded after their evidence) and a second run, the
    column holds exactly the text of each alert's stored evidence."""
    path = tmp_path / "c.duckdb"
    alerts = _alerts(_ALERT_BATCH + 700)
    for part in (alerts[: _ALERT_BATCH + 300], alerts[300:]):
        _write_run(path, part)
    con = open_case(str(path))
    try:
        assert con.execute("SELECT count(*) FROM alert_rows").fetchone()[0] == len(alerts)
        wrong = con.execute(f"""SELECT count(*) FROM alert_rows a WHERE search IS DISTINCT FROM
            (SELECT {search.text('e')} FROM evidence_rows e WHERE e.alert_id = a.alert_id)""").fetchone()[0]
        assert wrong == 0
        assert con.execute("SELECT count(*) FROM alert_rows WHERE search IS NULL").fetchone()[0] == 0
    finally:
        con.close()


def test_index_across_runs_common_tokens_and_an_unindexed_tail(tmp_path, monkeypatch):
    """Three runs into one case with a small ``COMMON``: tokens turn common as later runs add
    alerts (their postings go), a watch's commit leaves rows above the indexed ones (scanned),
    and every needle still finds what the definition finds."""
    monkeypatch.setattr(search, "COMMON", 25)
    monkeypatch.setattr(search, "CHECK_MAX", 60)
    path = tmp_path / "c.duckdb"
    alerts = _alerts(len(VALUES) * 8)
    texts = NEEDLES + ["ws3", "ws3.corp", "logs/chain", "servicename\":\"caf", "\":7045,", "a\\u0000b"]
    for part in (alerts[:40], alerts[40:120]):
        _write_run(path, part)
        con = open_case(str(path))
        try:
            _index_is_exact(con)
            assert _agrees(con, texts)[1] > 10
        finally:
            con.close()
    writer = CaseWriter(str(path), command="test")
    for a in alerts[120:]:
        writer.write(a)
    writer.commit()
    try:
        con = writer.con
        done = int(con.execute("SELECT value FROM case_meta WHERE key = 'search_indexed'").fetchone()[0])
        assert con.execute("SELECT count(*) FROM alert_rows WHERE rowid > ?", [done]).fetchone()[0] == \
            len(alerts) - 120
        assert con.execute("SELECT count(*) FROM search_tokens WHERE postings IS NULL").fetchone()[0] > 5
        _index_is_exact(con)
        _agrees(con, texts)
    finally:
        writer.close({"events": 0})
    con = open_case(str(path))
    try:
        _index_is_exact(con)
        assert con.execute("SELECT (SELECT value::BIGINT FROM case_meta WHERE key = 'search_indexed') "
                           "= max(rowid) FROM alert_rows").fetchone()[0]
    finally:
        con.close()


def test_migration_to_schema_6_builds_the_index(tmp_path):
    """A schema-5 case (a search column, no index) gets its index on the first open."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    schema.create(con, version=5)
    con.execute("""INSERT INTO alert_rows (alert_id, rule_id, title, level, level_rank, kind, evidence_count,
        search) VALUES ('a1', 'r1', 'Old alert', 'high', 3, 'event', 1, '{"servicename":"psexesvc"}'),
        ('a2', 'r1', 'Other', 'high', 3, 'event', 1, '{"servicename":"psexesvc2","x":"c:\\\\temp"}'),
        ('a3', 'r1', 'Third', 'high', 3, 'event', 0, NULL)""")
    con.execute("""INSERT INTO evidence_rows (alert_id, seq, event) VALUES
        ('a1', 0, '{"ServiceName":"PSEXESVC"}'), ('a2', 0, '{"ServiceName":"PSEXESVC2","x":"C:\\\\Temp"}')""")
    con.close()
    con = open_case(str(path))
    try:
        _index_is_exact(con)
        for text, want in (("psexesvc", {"a1", "a2"}), ("PSEXESVC2", {"a2"}), ("exesvc", {"a1", "a2"}),
                           ("c:\\temp", {"a2"}), ("third", {"a3"}), ("zzz", set())):
            assert _ids(con, *search.reference_predicate(text)) == want, text
            assert set().union(*(_ids(con, *b) for b in search.branches(con, text)[0])) == want, text
        assert search.indexed(con, "psexesvc") is not None
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
