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
from scmwatch.cli import main  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HOSTILE = "<script>window.__pwned=1</script>\"><img src=x onerror=\"window.__pwned=2\">"
FORMULA = "=HYPERLINK(\"http://x.example/\",\"\u202eclick\")"
START_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, str]:
    """The demo hunted into a case, one critical alert's event carrying ``HOSTILE``."""
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
    finally:
        con.close()
    return path, alert_id


class Server:
    """``scmwatch serve CASE --port 0`` in a subprocess; ``url`` is the printed URL."""

    def __init__(self, case_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scmwatch", "serve", str(case_path), "--port", "0"],
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
    for path in ("/", "/alerts", "/alerts?token=wrong"):
        status, _, body = server.request("GET", path, cookie=False)
        assert status == 401, path
        assert "alert" not in body.lower()
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
        f"from={t0:%Y-%m-%dT%H:%M:%S}&level=high": ("time >= ? AND level = 'high'", [t0.replace(microsecond=0)]),
        "q=PSEXESVC": ("lower(title) LIKE '%psexesvc%' OR alert_id IN (SELECT alert_id FROM evidence "
                       "WHERE lower(CAST(event AS VARCHAR)) LIKE '%psexesvc%')", []),
        "q=Lateral": ("lower(title) LIKE '%lateral%' OR alert_id IN (SELECT alert_id FROM evidence "
                      "WHERE lower(CAST(event AS VARCHAR)) LIKE '%lateral%')", []),
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


def test_triage_needs_csrf_and_survives_restart(case):
    path, alert_id = case
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
            page.click("text=/^critical /")
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
