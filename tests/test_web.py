"""``scmwatch serve``: the triage console as a real uvicorn server on 127.0.0.1, over a case
hunted from the bundled demo, driven over HTTP and in Debian's headless Chromium.

A hostile string is planted in one alert's event (the fields an attacker controls); the pages
must show it as text. Requests without the token's cookie get 401, a POST without the CSRF
token 403, and a triage decision survives a server restart.
"""

from __future__ import annotations

import http.client
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
        con.execute("UPDATE alert_rows SET event = ? WHERE alert_id = ?",
                    [orjson.dumps(event).decode(), alert_id])
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


def test_list_filters_paging_and_escaping(server, case):
    server.login()
    _, _, body = server.request("GET", "/alerts?level=critical")
    m = re.search(r"([\d,]+) alerts?;", body)
    critical = int(m.group(1).replace(",", ""))
    assert 0 < critical < 100
    assert body.count('class="badge lv-critical"') == critical
    assert 'class="badge lv-high"' not in body
    _, _, everything = server.request("GET", "/alerts")
    total = int(re.search(r"([\d,]+) alerts?;", everything).group(1).replace(",", ""))
    assert total > 100 and everything.count("<tr><td>") == 100 and "next</a>" in everything
    _, _, last = server.request("GET", f"/alerts?page={-(-total // 100)}")
    assert last.count("<tr><td>") == total - 100 * (-(-total // 100) - 1)
    status, _, detail = server.request("GET", f"/alerts/{case[1]}")
    assert status == 200
    assert HOSTILE not in detail and "<img" not in detail
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in detail
    assert server.request("GET", "/alerts/nope")[0] == 404


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
