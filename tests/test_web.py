"""``scmwatch serve``: the triage console as a real uvicorn server on 127.0.0.1, over a case
hunted from the bundled demo, driven over HTTP and in Debian's headless Chromium.

A hostile string is planted in one alert's event (the fields an attacker controls); the pages
must show it as text. Requests without the token's cookie get 401, a POST without the CSRF
token 403, and a triage decision survives a server restart.
"""

from __future__ import annotations

import csv
import html
import http.client
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import duckdb  # noqa: E402
import orjson  # noqa: E402

from paths import ROOT  # noqa: E402
from scmwatch.case import search  # noqa: E402
from scmwatch.cli import main  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HOSTILE = "<script>window.__pwned=1</script>\"><img src=x onerror=\"window.__pwned=2\">"
SVG_SERVICE = "svc\"><svg onload=\"window.__pwned=3\"></svg>\u202e"
HOSTILE_REFS = ["javascript:window.__pwned=4", "https://ok.example/a?b=1&c=2", "data:text/html,<b>x</b>",
                "http://x.example/\" onmouseover=\"window.__pwned=5", "//evil.example/x"]
FORMULA = "=HYPERLINK(\"http://x.example/\",\"\u202eclick\")"
START_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, str, str]:
    """The demo hunted into a case: one critical alert's event carries ``HOSTILE`` and its title
    a spreadsheet formula; the correlation with the most evidence has a hostile service name in
    its first evidence event and hostile references and YAML in its rule."""
    path = tmp_path_factory.mktemp("web") / "tmp.duckdb"
    assert main(["hunt", str(ROOT / "examples" / "demo"), "--case", str(path)]) == 0
    con = duckdb.connect(str(path))
    try:
        alert_id, event = con.execute(
            "SELECT alert_id, event FROM alert_rows WHERE level = 'critical' ORDER BY alert_id LIMIT 1"
        ).fetchone()
        event = orjson.loads(event)
        event["ImagePath"] = HOSTILE
        con.execute("UPDATE alert_rows SET event = ?, title = ? WHERE alert_id = ?",
                    [orjson.dumps(event).decode(), FORMULA, alert_id])
        corr_id, rule_id = con.execute(
            "SELECT alert_id, rule_id FROM alert_rows WHERE kind = 'correlation' "
            "ORDER BY evidence_count DESC, alert_id LIMIT 1").fetchone()
        first = orjson.loads(con.execute("SELECT event FROM evidence_rows WHERE alert_id = ? AND seq = 0",
                                         [corr_id]).fetchone()[0])
        first["ServiceName"] = SVG_SERVICE
        con.execute("UPDATE evidence_rows SET event = ? WHERE alert_id = ? AND seq = 0",
                    [orjson.dumps(first).decode(), corr_id])
        search.refill(con, [corr_id])  # the search text follows the edited evidence
        con.execute("UPDATE rule_rows SET refs = ?, yaml = yaml || ? WHERE rule_id = ?",
                    [HOSTILE_REFS, "\n# " + HOSTILE + " \u202egnp.exe", rule_id])
    finally:
        con.close()
    return path, alert_id, corr_id


class Server:
    """``scmwatch serve CASE --port 0`` in a subprocess; ``url`` is the printed URL."""

    def __init__(self, case_path: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scmwatch", "serve", str(case_path), "--port", "0", *extra],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "serving" in line or not line:
                break
        m = re.search(r"http://\S+", line)
        if not m:
            self.stop()
            raise AssertionError(f"serve did not start: {line!r}")
        self.url = m.group(0)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        self.cookie = ""

    def request(self, method: str, path: str, body: dict[str, str] | None = None,
                cookie: bool = True) -> tuple[int, dict[str, str], str]:
        con = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {"Cookie": self.cookie} if cookie and self.cookie else {}
        data = None
        if body is not None:
            data = urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            con.request(method, path, body=data, headers=headers)
            r = con.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            con.close()

    def login(self) -> None:
        parts = urlsplit(self.url)
        status, headers, _ = self.request("GET", f"{parts.path}?{parts.query}", cookie=False)
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        self.cookie = cookie.split(";", 1)[0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stderr.close()


@pytest.fixture
def server(case) -> Iterator[Server]:
    s = Server(case[0])
    try:
        yield s
    finally:
        s.stop()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_token_cookie_and_headers(server):
    assert server.host == "127.0.0.1"
    for path in ("/", "/alerts", "/alerts?token=wrong", "/alerts/export?format=csv", "/alerts/x"):
        status, _, body = server.request("GET", path, cookie=False)
        assert status == 401, path
        assert "alert" not in body.lower()
    status, _, _ = server.request("POST", "/alerts/bulk", {"set_status": "benign", "confirm": "1"},
                                  cookie=False)
    assert status == 401
    server.login()
    status, headers, body = server.request("GET", "/")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'none'" in csp and "form-action 'self'" in csp
    assert "<script" not in body
    assert 'href="/alerts?level=critical"' in body


def _total(body: str) -> int:
    return int(re.search(r'id="count">([\d,]+) alerts?', body).group(1).replace(",", ""))


def _ids(body: str) -> list[str]:
    return re.findall(r'<td><a href="/alerts/([0-9a-f]+)">', body)


def _link(body: str, rel: str) -> str | None:
    m = re.search(rf'<a href="([^"]+)" rel="{rel}">', body)
    return html.unescape(m.group(1)) if m else None


def test_list_filters_paging_and_escaping(server, case):
    server.login()
    _, _, body = server.request("GET", "/alerts?level=critical")
    critical = _total(body)
    assert 0 < critical < 100
    assert body.count('class="badge lv-critical"') == critical
    assert 'class="badge lv-high"' not in body
    # keyset pages: following "next" visits every alert once, "previous" comes back
    _, _, page = server.request("GET", "/alerts")
    total = _total(page)
    assert total > 300 and len(_ids(page)) == 100 and _link(page, "prev") is None
    seen, pages = _ids(page), [page]
    while (nxt := _link(page, "next")) is not None:
        _, _, page = server.request("GET", nxt)
        seen += _ids(page)
        pages.append(page)
        assert len(pages) < 20
    assert len(seen) == len(set(seen)) == total
    assert f"showing {100 * (len(pages) - 1) + 1:,}–{total:,}" in pages[-1]
    _, _, back = server.request("GET", _link(pages[-1], "prev"))
    assert _ids(back) == _ids(pages[-2])
    _, _, last = server.request("GET", "/alerts?last=1")
    assert _ids(last) == seen[-100:] and f"showing {total - 99:,}–{total:,}" in last
    status, _, detail = server.request("GET", f"/alerts/{case[1]}")
    assert status == 200
    assert HOSTILE not in detail and "<img" not in detail
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in detail
    assert server.request("GET", "/alerts/nope")[0] == 404


def _sql(path: Path, sql: str, args: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, args or []).fetchall()
    finally:
        con.close()


def test_every_filter_and_sort_against_sql(server, case):
    """Each filter's count is the one SQL gives over the alerts view; sorts order as asked."""
    server.login()
    path = case[0]
    rule, host = _sql(path, "SELECT rule_id, host_key FROM alerts WHERE kind = 'correlation' "
                            "GROUP BY ALL ORDER BY count(*) DESC, 1, 2 LIMIT 1")[0]
    t0 = _sql(path, "SELECT min(time) + INTERVAL 30 MINUTE FROM alerts")[0][0]
    checks = {
        f"rule={rule}": ("rule_id = ?", [rule]),
        f"host={host.upper()}.corp.example.com": ("host_key = ?", [host]),
        "tag=T1569.002": ("list_contains(tags, 'attack.t1569.002')", []),
        f"to={t0:%Y-%m-%dT%H:%M:%S}": ("time <= ?", [t0.replace(microsecond=0)]),
        f"from={t0:%Y-%m-%dT%H:%M:%S}&level=high": ("time >= ? AND level = 'high'",
                                                    [t0.replace(microsecond=0)]),
        "q=PSEXESVC": ("lower(title) LIKE '%psexesvc%' OR alert_id IN (SELECT alert_id FROM evidence "
                       "WHERE lower(CAST(event AS VARCHAR)) LIKE '%psexesvc%')", []),
        "q=Lateral": ("lower(title) LIKE '%lateral%' OR alert_id IN (SELECT alert_id FROM evidence "
                      "WHERE lower(CAST(event AS VARCHAR)) LIKE '%lateral%')", []),
        "q=10.1.10.251": ("alert_id IN (SELECT alert_id FROM evidence WHERE CAST(event AS VARCHAR) "
                          "LIKE '%10.1.10.251%')", []),
        "status=new": ("status = 'new'", []),
    }
    for query, (where, args) in checks.items():
        want = _sql(path, f"SELECT count(*) FROM alerts WHERE {where}", args)[0][0]
        status, _, body = server.request("GET", "/alerts?" + query.replace("+", "%2B"))
        assert status == 200, query
        assert _total(body) == want and want > 0, query
    # sorts: the first page in the order SQL gives
    for sort, order in (("time&dir=asc", "time, alert_id"), ("time&dir=desc", "time DESC, alert_id DESC"),
                        ("host&dir=asc", "host_key, time, alert_id"),
                        ("rule&dir=desc", "rule_id DESC, time, alert_id"),
                        ("level&dir=asc", "level_rank, time, alert_id")):
        want = [r[0] for r in _sql(path, f"SELECT alert_id FROM alerts ORDER BY {order} LIMIT 100")]
        _, _, body = server.request("GET", f"/alerts?sort={sort}")
        assert _ids(body) == want, sort
    # text in most alerts that the token index cannot answer (no letter or digit): pages found
    # among the view's first rows are not counted until asked; they are the counted list's pages
    want = _sql(path, "SELECT count(*) FROM alerts WHERE title LIKE '%:%' OR alert_id IN "
                      "(SELECT alert_id FROM evidence WHERE CAST(event AS VARCHAR) LIKE '%:%')")[0][0]
    _, _, body = server.request("GET", "/alerts?q=%3A")
    assert "not counted" in body and len(_ids(body)) == 100
    counted = html.unescape(re.search(r'<a href="([^"]+)" id="count-all">', body).group(1))
    _, _, exact = server.request("GET", counted)
    assert _total(exact) == want > 200 and _ids(exact) == _ids(body)
    _, _, second = server.request("GET", _link(body, "next"))
    _, _, second_exact = server.request("GET", _link(exact, "next"))
    assert "showing" not in second and "101–200 and more" in second
    assert _ids(second) == _ids(second_exact) and len(_ids(second)) == 100
    assert 'id="bulk"' in second and "Set the status of all matching alerts" in second
    for bad in ("from=yesterday", "to=2024-13-45", "sort=evil", "dir=sideways", "status=owned",
                "after=%21%21", "tag=x&after=WzEsMl0"):
        status, _, body = server.request("GET", "/alerts?" + bad)
        assert status == 400 and 'class="error"' in body, bad


def test_export_csv_and_jsonl(server, case):
    """The export has every alert of the filtered view; CSV cells cannot start a formula."""
    server.login()
    status, headers, body = server.request("GET", "/alerts/export?format=csv&level=critical")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(body)))
    want = _sql(case[0], "SELECT count(*) FROM alerts WHERE level = 'critical'")[0][0]
    assert len(rows) == want and {r["level"] for r in rows} == {"critical"}
    planted = next(r for r in rows if r["alert_id"] == case[1])
    assert planted["title"] == "'" + FORMULA
    for r in rows:
        assert not any(v[:1] in ("=", "+", "-", "@") for v in r.values()), r
    status, headers, body = server.request("GET", "/alerts/export?format=jsonl")
    lines = [orjson.loads(line) for line in body.splitlines()]
    assert len(lines) == _sql(case[0], "SELECT count(*) FROM alerts")[0][0]
    assert len({r["alert_id"] for r in lines}) == len(lines)
    hostile = next(r for r in lines if r["alert_id"] == case[1])
    assert hostile["event"]["ImagePath"] == HOSTILE and hostile["title"] == FORMULA
    assert server.request("GET", "/alerts/export?format=xls")[0] == 400


def test_alert_detail_rule_chain_and_pivots(server, case):
    """A correlation's page: its rule as written (only http(s) references become links), its
    evidence with file and record, the chain on a time axis, pivots that lead back to it."""
    server.login()
    path, _, corr_id = case
    status, _, page = server.request("GET", f"/alerts/{corr_id}")
    assert status == 200
    n = _sql(path, "SELECT evidence_count FROM alerts WHERE alert_id = ?", [corr_id])[0][0]
    assert n > 2
    chain = re.search(r'<section id="chain">.*?</section>', page, re.S).group(0)
    assert chain.count("<circle") == n and chain.count("#") >= n
    xs = [float(x) for x in re.findall(r'<circle [^>]*cx="([\d.]+)"', chain)]
    assert xs == sorted(xs) and xs[0] < xs[-1]  # evidence in time order, spread on the axis
    for src, rec in _sql(path, "SELECT source, record_id FROM evidence WHERE alert_id = ?", [corr_id]):
        assert f"file {html.escape(src, quote=True)} record {rec}" in page
    rule = re.search(r'<section id="rule">.*?</section>', page, re.S).group(0)
    assert "correlation:" in rule and "group-by" in rule
    assert re.findall(r'<a href="([^"]*)"', rule) == ["https://ok.example/a?b=1&amp;c=2"]
    assert "javascript:window.__pwned=4" in rule and "&lt;b&gt;x&lt;/b&gt;" in rule  # shown as text
    assert "<svg onload" not in page and "\u202e" not in page and "\\u202e" in page
    pivots = re.search(r'<section id="pivots">.*?</section>', page, re.S).group(0)
    hrefs = [html.unescape(h) for h in re.findall(r'<a href="(/alerts\?[^"]+)"', pivots)]
    around = next(h for h in hrefs if "host=" in h and "from=" in h)
    _, _, listed = server.request("GET", around.replace(" ", "%20"))
    assert corr_id in _ids(listed) or _total(listed) > 100
    service = next(h for h in hrefs if "svg" in urllib.parse.unquote_plus(h))
    _, _, listed = server.request("GET", service)
    assert _ids(listed) == [corr_id]  # the planted service name is in this alert's evidence only


def _bulk(server: Server, form: dict[str, str]) -> tuple[int, dict[str, str], str]:
    return server.request("POST", "/alerts/bulk", form)


def test_bulk_triage_confirms_the_count(case, tmp_path):
    path = tmp_path / "bulk.duckdb"
    shutil.copy(case[0], path)
    host = _sql(path, "SELECT host_key FROM alerts GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0][0]
    want = _sql(path, "SELECT count(*) FROM alerts WHERE host_key = ? AND level = 'high'", [host])[0][0]
    s = Server(path)
    try:
        s.login()
        _, _, listed = s.request("GET", f"/alerts?host={host}&level=high")
        csrf = _csrf(listed)
        form = {"host": host, "level": "high", "set_status": "benign", "note": "=1+1 patch window"}
        assert _bulk(s, form)[0] == 403  # no CSRF token
        status, _, confirm = _bulk(s, {**form, "csrf": csrf})
        assert status == 200 and f'id="bulk-count">{want:,}<' in confirm
        assert _sql(path, "SELECT count(*) FROM triage_t")[0][0] == 0  # the preview writes nothing
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm))
        assert hidden["confirm"] == str(want) and hidden["host"] == host
        status, _, refused = _bulk(s, {**hidden, "confirm": str(want + 1)})
        assert status == 409 and "nothing changed" in refused
        status, headers, _ = _bulk(s, {k: html.unescape(v) for k, v in hidden.items()})
        assert status == 303 and headers["location"] == f"/alerts?level=high&host={host}"
        _, _, after = s.request("GET", "/alerts?status=benign")
        assert _total(after) == want
        _, _, csv_text = s.request("GET", "/alerts/export?format=csv&status=benign")
        notes = {r["note"] for r in csv.DictReader(io.StringIO(csv_text))}
        assert notes == {"'=1+1 patch window"}
    finally:
        s.stop()
    assert _sql(path, "SELECT count(*) FROM alerts WHERE status = 'benign'")[0][0] == want


def test_hunt_into_the_case_while_it_is_served(case, tmp_path):
    """A real ``hunt --case`` into the served case: it waits for a request's connection rather
    than failing; pages during the hunt are 200 or a 503 naming the lock; after it, the same
    alerts (the re-hunt adds none) keep their triage state."""
    path = tmp_path / "live.duckdb"
    shutil.copy(case[0], path)
    alert_id = case[2]
    before = _sql(path, "SELECT count(*) FROM alerts")[0][0]
    s = Server(path)
    try:
        s.login()
        _, _, page = s.request("GET", f"/alerts/{alert_id}")
        assert s.request("POST", f"/alerts/{alert_id}/triage",
                         {"status": "malicious", "note": "lateral", "csrf": _csrf(page)})[0] == 303
        statuses: list[int] = []
        for _ in range(2):
            hunt = subprocess.Popen(
                [sys.executable, "-m", "scmwatch", "hunt", str(ROOT / "examples" / "demo"),
                 "--case", str(path), "-o", os.devnull], stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            while hunt.poll() is None and time.monotonic() < deadline and len(statuses) < 2000:
                status, _, body = s.request("GET", "/alerts?level=critical")
                statuses.append(status)
                assert status == 200 or (status == 503 and "locked by another" in body), (status, body[:200])
            _, err = hunt.communicate(timeout=120)
            assert hunt.returncode == 0, err
        assert 200 in statuses
        _, _, page = s.request("GET", f"/alerts/{alert_id}")
        assert 'id="status">malicious<' in page
    finally:
        s.stop()
    assert _sql(path, "SELECT count(*) FROM alerts")[0][0] == before
    assert _sql(path, "SELECT count(*), sum(alerts_new) FROM runs WHERE run_id > 1")[0] == (2, 0)
    decided = _sql(path, "SELECT status, note FROM alerts WHERE alert_id = ?", [alert_id])
    assert decided == [("malicious", "lateral")]


def test_triage_needs_csrf_and_survives_restart(case):
    path, alert_id = case[:2]
    first = Server(path)
    try:
        first.login()
        status, _, _ = first.request("POST", f"/alerts/{alert_id}/triage",
                                     {"status": "benign", "note": "refused"})
        assert status == 403
        _, _, page = first.request("GET", f"/alerts/{alert_id}")
        status, _, _ = first.request("POST", f"/alerts/{alert_id}/triage",
                                     {"status": "benign", "note": "admin's <b>test</b>", "csrf": "x" * 43})
        assert status == 403
        status, headers, _ = first.request("POST", f"/alerts/{alert_id}/triage",
                                           {"status": "benign", "note": "admin's <b>test</b>",
                                            "csrf": _csrf(page)})
        assert status == 303 and headers["location"] == f"/alerts/{alert_id}"
        assert first.request("POST", f"/alerts/{alert_id}/triage",
                             {"status": "owned", "csrf": _csrf(page)})[0] == 400
    finally:
        first.stop()
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT status, note FROM triage_t WHERE entity_id = ?", [alert_id]).fetchall()
    finally:
        con.close()
    assert rows == [("benign", "admin's <b>test</b>")]
    second = Server(path)
    try:
        second.login()
        _, _, page = second.request("GET", f"/alerts/{alert_id}")
        assert 'id="status">benign<' in page
        assert "admin&#39;s &lt;b&gt;test&lt;/b&gt;" in page
        _, _, listed = second.request("GET", "/alerts?status=benign")
        assert "1 alert;" in listed and f"/alerts/{alert_id}" in listed
    finally:
        second.stop()


def test_serve_refuses_a_non_case(tmp_path, capsys):
    bad = tmp_path / "x.duckdb"
    bad.write_text("not a case")
    assert main(["serve", str(bad)]) == 1
    assert "not a case file" in capsys.readouterr().err


def test_mark_benign_in_chromium(server, case, tmp_path):
    """Open the printed URL, go from the overview to the planted alert, mark it benign."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (.ci/run installs it)")
    alert_id = case[1]
    errors: list[str] = []
    dialogs: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server.url)
            assert urlsplit(page.url).query == ""  # the token left the address bar
            assert page.evaluate("document.cookie") == ""  # HttpOnly
            page.click("a.card.lv-critical")
            assert page.url.endswith("/alerts?level=critical")
            page.click(f"a[href='/alerts/{alert_id}']")
            assert HOSTILE in page.inner_text("#event")
            page.check("input[name=status][value=benign]")
            page.fill("textarea[name=note]", "checked with the admin")
            page.click("button:text('save')")
            page.wait_for_url(f"**/alerts/{alert_id}")
            assert page.inner_text("#status") == "benign"
            page.screenshot(path=str(tmp_path / "alert.png"), full_page=True)
            assert page.evaluate("window.__pwned === undefined")
            assert page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
            page.goto(f"http://{server.host}:{server.port}/alerts?status=benign")
            assert "checked with the admin" in page.inner_text("#alert-list")
        finally:
            browser.close()
    assert dialogs == [] and errors == []


def test_triage_flow_in_chromium(case, tmp_path):
    """Filter with the form, open the correlation, see its chain, mark it benign; the decision
    is there after a server restart and a re-hunt into the case (a real ``hunt --case``)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (.ci/run installs it)")
    path = tmp_path / "flow.duckdb"
    shutil.copy(case[0], path)
    corr_id = case[2]
    rule_id, n = _sql(path, "SELECT rule_id, evidence_count FROM alerts WHERE alert_id = ?", [corr_id])[0]
    want = _sql(path, "SELECT count(*) FROM alerts WHERE rule_id = ? "
                      "AND list_contains(tags, 'attack.t1543.003')", [rule_id])[0][0]
    errors: list[str] = []
    dialogs: list[str] = []
    server = Server(path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server.url)
            page.click("nav.top >> text=Alerts")
            page.fill("input[name=rule]", rule_id)
            page.fill("input[name=tag]", "T1543.003")
            page.select_option("select[name=sort]", "time")
            page.click("button:text('filter')")
            page.wait_for_url("**/alerts?*rule=*")
            assert page.inner_text("#count").startswith(f"{want:,} alert")
            page.screenshot(path=str(tmp_path / "alerts.png"), full_page=True)
            page.click(f"a[href='/alerts/{corr_id}']")
            assert page.locator("#chain circle").count() == n
            assert "svc\"><svg onload" in page.inner_text("#evidence")  # the planted service name, as text
            assert page.locator("#rule-refs a").count() == 1
            assert "javascript:window.__pwned=4" in page.inner_text("#rule-refs")
            page.screenshot(path=str(tmp_path / "correlation.png"), full_page=True)
            page.check("input[name=status][value=benign]")
            page.fill("textarea[name=note]", "admin's <b>jump</b> host")
            page.click("button:text('save')")
            page.wait_for_url(f"**/alerts/{corr_id}")
            assert page.inner_text("#status") == "benign"
            assert page.evaluate("window.__pwned === undefined")
            server.stop()
            hunt = subprocess.run(
                [sys.executable, "-m", "scmwatch", "hunt", str(ROOT / "examples" / "demo"),
                 "--case", str(path), "-o", os.devnull], capture_output=True, text=True, timeout=300)
            assert hunt.returncode == 0, hunt.stderr
            server = Server(path)
            page.goto(server.url)
            page.goto(f"http://{server.host}:{server.port}/alerts/{corr_id}")
            assert page.inner_text("#status") == "benign"
            assert "admin's <b>jump</b> host" in page.inner_text("#note")
            page.goto(f"http://{server.host}:{server.port}/alerts?status=benign")
            assert corr_id in page.inner_html("#alert-list")
            assert page.evaluate("window.__pwned === undefined")
        finally:
            browser.close()
            server.stop()
    assert _sql(path, "SELECT count(*) FROM runs")[0][0] == 2
    assert dialogs == [] and errors == []
