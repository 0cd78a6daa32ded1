"""The console's overview, hosts, lateral-movement, readiness and files pages, over a real
``scmwatch serve`` on 127.0.0.1 and in Debian's headless Chromium.

The case is the bundled demo hunted with ``--keep-events``; hostile strings are planted where
an attacker puts them: event fields (a service install and a logon), a host name and an edge
(link rows), an alert title, a file path and its error kind, and the readiness summary. Every
page must show them as text, run no script (dialogs, console errors, CSP violations and a
``window.__pwned`` marker are watched) and carry no element they could have injected.
"""

from __future__ import annotations

import os
import re
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
from scmwatch.cli.serve import exposure_warning  # noqa: E402
from test_web import CHROMIUM, CHROMIUM_ARGS, Server, _csrf  # noqa: E402

TAGS = "<script>window.__pwned=1</script>\"><img src=x onerror=\"window.__pwned=2\">"
SVG = "<svg onload=\"window.__pwned=3\"><script>window.__pwned=4</script></svg>"
JS_URL = "javascript:window.__pwned=5"
BIDI = "\u202eexe.cod\x1b[31m\u200b"
HOSTILE = TAGS + SVG + BIDI
SHOWN = TAGS + SVG + "\\u202eexe.cod\\x1b[31m\\u200b"  # as a page shows it: controls made visible
HOST_TAGS = "<b>ws666</b>\"><img src=x onerror=\"window.__pwned=6\">"
HOST_JS = JS_URL
MARKUP = ("<script", "<img", "<svg onload", "onerror=\"window", "href=\"javascript", "\u202e", "\x1b")
INIT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def _plant(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        q = con.execute
        for eid, field in ((7045, "ServiceName"), (4624, "TargetUserName")):
            seq, data = q("SELECT seq, data FROM event_rows WHERE EventID = ? AND lower(Computer) "
                          "LIKE 'dc01.%' ORDER BY time LIMIT 1", [eid]).fetchone()
            data = orjson.loads(data)
            data[field] = HOSTILE
            data["ImagePath" if eid == 7045 else "WorkstationName"] = JS_URL
            q("UPDATE event_rows SET data = ? WHERE EventID = ? AND seq = ? AND lower(Computer) "
              "LIKE 'dc01.%'", [orjson.dumps(data).decode(), eid, seq])
        alert_id, time = q("SELECT alert_id, time FROM alert_rows WHERE host_key = 'dc01' ORDER BY time "
                           "LIMIT 1").fetchone()
        q("UPDATE alert_rows SET title = ? WHERE alert_id = ?", [HOSTILE, alert_id])
        for host in (HOST_TAGS, HOST_JS):
            q("INSERT INTO link_rows VALUES (?, ?, ?, NULL, 'dc01', ?, 'inbound')",
              [alert_id, time, host, SVG])
        q("UPDATE alert_rows SET host_key = ?, host = ? WHERE alert_id = (SELECT alert_id FROM alert_rows "
          "WHERE host_key = 'ws0002' ORDER BY alert_id LIMIT 1)", [HOST_TAGS, HOST_TAGS])
        q("INSERT INTO file_rows VALUES (1, 999, ?, 10, 'ab', 'evtx', 0, ?, false)",
          [HOSTILE + ".evtx", orjson.dumps({TAGS: 3, "truncated chunk": 1}).decode()])
        summary = orjson.loads(q("SELECT summary FROM runs_t WHERE run_id = 1").fetchone()[0])
        gap = {"needs": [TAGS], "advice": [JS_URL], "rules": [{"title": HOSTILE, "level": "high"}]}
        summary["readiness"] = {"rules_ready": 100, "rules_blind": 1, "correlations_blind": [SVG],
                                "missing": [gap]}
        q("UPDATE runs_t SET summary = ? WHERE run_id = 1", [orjson.dumps(summary).decode()])
    finally:
        con.close()


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("web_pages") / "demo.duckdb"
    assert main(["hunt", str(ROOT / "examples" / "demo"), "--case", str(path), "--keep-events"]) == 0
    _plant(path)
    return path


@pytest.fixture
def server(case) -> Iterator[Server]:
    s = Server(case)
    try:
        s.login()
        yield s
    finally:
        s.stop()


def _host(name: str) -> str:
    return "/host?" + urlencode({"name": name})


def _edge(source: str, target: str) -> str:
    return "/lateral/edge?" + urlencode({"source": source, "target": target})


PAGES = ("/", "/hosts", _host("dc01"), _host(HOST_TAGS), _host(HOST_JS), "/lateral",
         _edge(HOST_TAGS, "dc01"), _edge(HOST_JS, "dc01"), _edge("ws9001", "dc01"), "/readiness",
         "/files", "/files?problems=1")


def test_pages_escape_hostile_strings(server):
    for path in PAGES:
        status, headers, body = server.request("GET", path)
        assert status == 200, path
        body = body.replace('<script src="/static/lateral.js"></script>', "", 1)
        for bad in MARKUP:
            assert bad not in body, (path, bad)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        expected = "script-src 'self'" if path == "/lateral" else "script-src 'none'"
        assert expected in csp, path
    _, _, host = server.request("GET", _host("dc01"))
    assert host.count("&lt;script&gt;window.__pwned=1&lt;/script&gt;") >= 2  # install and logon
    assert SHOWN.replace('"', "&#34;").replace("<", "&lt;").replace(">", "&gt;") in host and JS_URL in host
    _, _, lateral = server.request("GET", "/lateral")
    assert '<script src="/static/lateral.js"></script>' in lateral
    assert lateral.count("<script") == 1
    assert "&lt;b&gt;ws666&lt;/b&gt;" in lateral
    assert 'href="/lateral/edge?source=javascript%3Awindow.__pwned%3D5&amp;target=dc01"' in lateral
    _, _, files = server.request("GET", "/files?problems=1")
    assert "&lt;img src=x onerror=&#34;window.__pwned=2&#34;&gt;: 3" in files
    _, _, ready = server.request("GET", "/readiness")
    assert "could not fire" in ready and "&lt;svg onload=&#34;window.__pwned=3&#34;&gt;" in ready


def test_no_path_reaches_the_file_system(server):
    for path in ("/static/../../../../etc/passwd", "/static/report.css", "/static/%2e%2e/%2e%2e/etc/passwd",
                 "/static/lateral.js/../../console.py", _host("../../../../etc/passwd"), "/lateral.js"):
        status, _, body = server.request("GET", path)
        assert status == 404 and "root:x:0" not in body, path
    status, _, body = server.request("GET", "/files?path=/etc/passwd")
    assert status == 200 and "root:x:0" not in body
    status, headers, body = server.request("GET", "/static/lateral.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in body and "eval(" not in body


def test_overview_numbers_link_to_the_filtered_list(server):
    _, _, body = server.request("GET", "/")
    cells = re.findall(r'<td class="cell h\d"><a href="(/alerts\?rule=[^"]+&amp;host=[^"]+)">(\d+)</a>', body)
    assert cells
    for href, n in cells[:5]:
        status, _, listed = server.request("GET", href.replace("&amp;", "&"))
        assert status == 200
        assert re.search(rf"\b{n} alerts?;", listed), href
    cards = re.findall(r'<a class="card lv-(\w+)" href="/alerts\?level=\1"><span class="n">([\d,]+)<', body)
    assert len(cards) == 4
    for level, n in cards:
        _, _, listed = server.request("GET", f"/alerts?level={level}")
        assert f"{n} alert" in listed
    n = re.search(r'href="/alerts\?kind=correlation"><span class="n">([\d,]+)<', body).group(1)
    assert f"{n} alert" in server.request("GET", "/alerts?kind=correlation")[2]
    bar = r'<a href="(/alerts\?level=\w+&amp;from=[^"]+)"><rect [^>]*><title>[^<]*: ([\d,]+) \w+<'
    bars = re.findall(bar, body)
    assert len(bars) > 10
    for href, n in bars[:4] + bars[-4:]:  # the last bar has no "to"
        _, _, listed = server.request("GET", href.replace("&amp;", "&"))
        assert re.search(rf"\b{n} alerts?;", listed), href


def test_edge_and_host_triage_need_csrf_and_are_stored(server, case):
    status, _, page = server.request("GET", _edge("ws9001", "dc01"))
    token = _csrf(page)
    form = {"source": "ws9001", "target": "dc01", "status": "investigating", "note": "<i>ask</i> the admin"}
    post = "/lateral/edge/triage"
    assert server.request("POST", post, form)[0] == 403
    assert server.request("POST", post, {**form, "csrf": "x" * 43})[0] == 403
    assert server.request("POST", post, {**form, "status": "owned", "csrf": token})[0] == 400
    assert server.request("POST", post, {**form, "target": "nowhere", "csrf": token})[0] == 404
    status, headers, _ = server.request("POST", post, {**form, "csrf": token})
    assert status == 303 and headers["location"] == _edge("ws9001", "dc01")
    _, _, page = server.request("GET", _edge("ws9001", "dc01"))
    assert 'id="status">investigating<' in page and "&lt;i&gt;ask&lt;/i&gt; the admin" in page
    host_form = {"name": HOST_TAGS, "status": "benign", "note": "lab box"}
    assert server.request("POST", "/host/triage", host_form)[0] == 403
    status, headers, _ = server.request("POST", "/host/triage", {**host_form, "csrf": token})
    assert status == 303 and headers["location"] == _host(HOST_TAGS)
    con = duckdb.connect(str(case), read_only=True)
    try:
        edge = con.execute("SELECT status FROM lateral_edges WHERE source_host = 'ws9001' "
                           "AND target_host = 'dc01'").fetchone()
        host = con.execute("SELECT status, note FROM hosts WHERE host = ?", [HOST_TAGS]).fetchone()
    finally:
        con.close()
    assert edge == ("investigating",) and host == ("benign", "lab box")


def test_exposure_warning():
    assert exposure_warning("127.0.0.1") is None and exposure_warning("::1") is None
    assert exposure_warning("localhost") is None and exposure_warning("127.0.0.2") is None
    assert "every interface" in exposure_warning("0.0.0.0") and "every interface" in exposure_warning("::")
    assert "not loopback" in exposure_warning("192.0.2.7")
    assert "\x1b" not in exposure_warning("evil\x1b[2J")


def _click_edge(page, selector: str) -> None:
    """A real mouse click on a point of the edge's line where no other edge or host lies on top."""
    page.locator(selector).scroll_into_view_if_needed()
    point = page.evaluate("""(sel) => {
      const a = document.querySelector(sel), line = a.querySelector("line.edge");
      const len = line.getTotalLength(), m = line.getScreenCTM();
      for (let f = 0.5; f > 0.05; f -= 0.05) {
        for (const g of [f, 1 - f]) {
          const p = new DOMPoint(line.getPointAtLength(len * g).x, line.getPointAtLength(len * g).y)
            .matrixTransform(m);
          const hit = document.elementFromPoint(p.x, p.y);
          if (hit && hit.closest("a") === a) { return [p.x, p.y]; }
        }
      }
      return null;
    }""", selector)
    assert point, f"no free point on {selector}"
    page.mouse.click(*point)


def _watched(browser, errors: list[str], dialogs: list[str]):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.set_default_timeout(30_000)
    page.add_init_script(INIT)
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    return page


def _shot(page, path: Path, selector: str, width: int = 1100) -> None:
    """A screenshot of the page from its top down to the end of ``selector`` (at most 700 px)."""
    box = page.locator(selector).bounding_box()
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width,
                                          "height": min(700, box["y"] + box["height"] + 10)})


def _clean(page) -> None:
    assert page.evaluate("window.__pwned === undefined")
    assert page.evaluate("window.__csp") == []
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed, foreignObject').length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") <= 1


def test_pages_in_chromium(server, tmp_path):
    """Follow a matrix number to its alerts, click a graph edge to its alerts, move the time slider,
    set the edge's status; visit every page with the hostile strings and see them as text."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (.ci/run installs it)")
    shots = Path(os.environ.get("SCMWATCH_SCREENSHOTS") or tmp_path)
    base = f"http://{server.host}:{server.port}"
    errors: list[str] = []
    dialogs: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = _watched(browser, errors, dialogs)
            page.goto(server.url)
            assert urlsplit(page.url).path == "/"
            _shot(page, shots / "console-overview.png", "#timeline")
            cell = page.locator("table.matrix td.cell a").first
            n = int(cell.inner_text())
            cell.click()
            page.wait_for_url("**/alerts?rule=*")
            assert f"{n} alert" in page.inner_text("body")
            assert page.locator("#alert-list tbody tr").count() == n

            page.goto(base + "/lateral")
            _clean(page)
            assert page.inner_text("#slider-count") == "21 of 21 links drawn"
            page.focus("#slider")
            page.keyboard.press("Home")
            drawn = int(page.inner_text("#slider-count").split()[0])
            assert 0 < drawn < 21
            assert page.locator("a.edge-link.later").count() == 21 - drawn
            page.keyboard.press("End")
            assert page.inner_text("#slider-count") == "21 of 21 links drawn"
            _shot(page, shots / "console-lateral.png", "#graph", width=940)
            _click_edge(page, "a.edge-link[data-source='ws9001'][data-target='sql01']")
            page.wait_for_url("**/lateral/edge?source=ws9001&target=sql01")
            rows = page.locator("#edge-alerts tbody tr")
            assert rows.count() == 17
            assert "PsExec" in page.inner_text("#edge-alerts")
            page.check("input[name=status][value=closed]")
            page.fill("textarea[name=note]", "change window CHG-42")
            page.click("#triage button:text('save')")
            page.wait_for_url("**/lateral/edge?source=ws9001&target=sql01")
            assert page.inner_text("#status") == "closed"
            assert page.inner_text("#note") == "change window CHG-42"
            _shot(page, shots / "console-edge.png", "#edge-alerts tbody tr:nth-child(5)")
            page.goto(base + "/lateral")
            closed = page.locator("a.edge-link.st-closed[data-source='ws9001'][data-target='sql01']")
            assert closed.count() == 1

            page.goto(base + _host("dc01"))
            _shot(page, shots / "console-host.png", "#activity")
            for path in PAGES:
                page.goto(base + path)
                _clean(page)
            page.goto(base + _host("dc01"))
            assert SHOWN in page.inner_text("#installs") and SHOWN in page.inner_text("#logons")
            page.goto(base + _host(HOST_TAGS))
            assert page.inner_text("#host-name") == HOST_TAGS
            page.goto(base + "/lateral")
            assert HOST_TAGS in page.inner_text("#edge-list") and JS_URL in page.inner_text("#edge-list")
            _click_edge(page, f"a.edge-link[data-source='{HOST_JS}']")
            page.wait_for_url("**/lateral/edge?source=javascript*")
            assert page.inner_text("#edge-name") == f"{JS_URL} → dc01"
            page.goto(base + "/files?problems=1")
            assert f"{TAGS}: 3" in page.inner_text("#file-list")
            assert HOSTILE.replace(BIDI, "") in page.inner_text("#file-list")
            page.goto(base + "/readiness")
            assert TAGS in page.inner_text("#readiness") and JS_URL in page.inner_text("#readiness")
            _clean(page)
        finally:
            browser.close()
    assert dialogs == [] and errors == []
