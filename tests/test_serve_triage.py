"""``scmwatch serve`` over the bundled demo (hunted with ``--keep-events``, nothing planted):
host and edge decisions made in Debian's headless Chromium survive a real re-hunt into the case
and a restart, each names its analyst; ``--host 0.0.0.0`` warns through the real CLI."""

from __future__ import annotations

import getpass
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import duckdb  # noqa: E402

from paths import ROOT  # noqa: E402
from scmwatch.case import search  # noqa: E402
from scmwatch.cli import main  # noqa: E402
from test_web import CHROMIUM, CHROMIUM_ARGS, START_TIMEOUT, Server, _csrf  # noqa: E402

DEMO = ROOT / "examples" / "demo"
ANALYST = "r.ivanova <b>&amp;</b>\u202e"  # shown escaped, controls made visible


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve_triage") / "demo.duckdb"
    assert main(["hunt", str(DEMO), "--case", str(path), "--keep-events", "-o", os.devnull]) == 0
    return path


def _views(path: Path, sql: str, args: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, args or []).fetchall()
    finally:
        con.close()


def test_host_and_edge_triage_survive_a_rehunt(case, tmp_path):
    """Mark a host and a host-to-host link in the browser; a real ``hunt --case`` of the same
    logs and a server restart keep both decisions, their notes and who made them."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (.ci/run installs it)")
    path = tmp_path / "c.duckdb"
    shutil.copy(case, path)
    alerts = _views(path, "SELECT count(*) FROM alerts")[0][0]
    errors: list[str] = []
    server = Server(path, "--analyst", ANALYST)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.set_default_timeout(30_000)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            page.click("nav.top >> text=Hosts")
            page.click("#host-list a[href='/host?name=dc01']")
            page.check("#triage input[name=status][value=malicious]")
            page.fill("#triage textarea[name=note]", "domain controller: <i>PsExec</i> target")
            page.click("#triage button:text('save')")
            page.wait_for_url("**/host?name=dc01")
            assert page.inner_text("#status") == "malicious"
            assert page.inner_text("#note") == "domain controller: <i>PsExec</i> target"
            assert page.inner_text("#triage .history td.analyst") == ANALYST.replace("\u202e", "\\u202e")
            base = f"http://{server.host}:{server.port}"
            page.goto(base + "/lateral/edge?source=ws9001&target=sql01")
            page.check("#triage input[name=status][value=benign]")
            page.click("#triage button:text('save')")
            page.wait_for_url("**/lateral/edge?source=ws9001&target=sql01")
            assert page.inner_text("#status") == "benign"
            server.stop()
            hunt = subprocess.run([sys.executable, "-m", "scmwatch", "hunt", str(DEMO), "--case", str(path),
                                   "--keep-events", "-o", os.devnull], capture_output=True, text=True,
                                  timeout=300)
            assert hunt.returncode == 0, hunt.stderr
            server = Server(path)
            page.goto(server.url)
            page.goto(f"http://{server.host}:{server.port}/host?name=dc01")
            assert page.inner_text("#status") == "malicious"
            page.goto(f"http://{server.host}:{server.port}/lateral/edge?source=ws9001&target=sql01")
            assert page.inner_text("#status") == "benign"
            page.goto(f"http://{server.host}:{server.port}/hosts")
            row = page.locator("#host-list tr", has=page.locator("a[href='/host?name=dc01']"))
            assert "malicious" in row.inner_text()
        finally:
            browser.close()
            server.stop()
    assert errors == []
    assert _views(path, "SELECT count(*), max(run_id) FROM runs")[0] == (2, 2)
    assert _views(path, "SELECT count(*) FROM alerts")[0][0] == alerts
    assert _views(path, "SELECT status, note, analyst FROM hosts WHERE host = 'dc01'") == [
        ("malicious", "domain controller: <i>PsExec</i> target", ANALYST)]
    assert _views(path, "SELECT status, analyst FROM lateral_edges WHERE source_host = 'ws9001' "
                        "AND target_host = 'sql01'") == [("benign", ANALYST)]


def test_serving_every_interface_warns(case, tmp_path):
    """``serve --host 0.0.0.0`` as a real process: the warning names the exposure on stderr
    before the URL; the console answers on loopback (the token still required) and is stopped
    at once (the one test that binds beyond 127.0.0.1, for the second it takes)."""
    proc = subprocess.Popen([sys.executable, "-m", "scmwatch", "serve", str(case), "--host", "0.0.0.0",
                             "--port", "0"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not any("http://" in x for x in lines):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
        warning = [x for x in lines if "warning" in x]
        assert len(warning) == 1 and lines.index(warning[0]) < len(lines) - 1, lines
        assert "0.0.0.0 (every interface), not loopback" in warning[0]
        url = re.search(r"http://\S+", lines[-1]).group(0)
        parts = urlsplit(url)
        assert parts.hostname == "0.0.0.0"
        for query, want in (("", 401), ("?" + parts.query, 303)):
            con = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=10)
            try:
                con.request("GET", "/" + query)
                assert con.getresponse().status == want
            finally:
                con.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


def test_decisions_name_their_analyst_everywhere(case, tmp_path, capsys):
    """Each decision records who made it: the OS user by default, ``--analyst`` otherwise (also
    for a bulk decision over free text); the alert page, ``query`` and the report show the name,
    escaped."""
    path = tmp_path / "c.duckdb"
    shutil.copy(case, path)
    alert_id = _views(path, "SELECT alert_id FROM alert_rows WHERE level = 'critical' ORDER BY alert_id "
                            "LIMIT 1")[0][0]
    me = getpass.getuser()
    for extra, status in (((), "investigating"), (("--analyst", ANALYST), "malicious")):
        server = Server(path, *extra)
        try:
            server.login()
            _, _, page = server.request("GET", f"/alerts/{alert_id}")
            form = {"status": status, "note": "seen", "csrf": _csrf(page)}
            assert server.request("POST", f"/alerts/{alert_id}/triage", form)[0] == 303
            _, _, page = server.request("GET", f"/alerts/{alert_id}")
        finally:
            server.stop()
    assert 'id="analyst">r.ivanova &lt;b&gt;&amp;amp;&lt;/b&gt;\\u202e<' in page
    assert f'<td class="analyst">{me}</td>' in page and "<b>" not in page
    server = Server(path, "--analyst", ANALYST)
    try:
        server.login()
        form = {"q": "psexesvc", "set_status": "closed", "csrf": _csrf(server.request("GET", "/alerts")[2])}
        _, _, confirm = server.request("POST", "/alerts/bulk", form)
        n = int(re.search(r'name="confirm" value="(\d+)"', confirm).group(1))
        assert server.request("POST", "/alerts/bulk", {**form, "confirm": str(n)})[0] == 303
    finally:
        server.stop()
    where, args = search.reference_predicate("psexesvc")
    assert n == _views(path, f"SELECT count(*) FROM alert_rows WHERE {where}", args)[0][0] > 0
    assert _views(path, "SELECT count(*) FROM alerts WHERE status = 'closed' AND analyst = ?", [ANALYST]
                  )[0][0] == n
    assert re.fullmatch("[0-9a-f]+", alert_id)
    assert main(["query", str(path), f"SELECT analyst FROM triage_t WHERE entity_id = '{alert_id}'"]) == 0
    out = capsys.readouterr().out
    assert me in out and "r.ivanova <b>&amp;</b>\\u202e" in out and "\u202e" not in out
    report = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(report)]) == 0
    html = report.read_text(encoding="utf-8")
    assert 'class="analyst">r.ivanova &lt;b&gt;&amp;amp;&lt;/b&gt;\\u202e<' in html and "<b>&amp;" not in html
