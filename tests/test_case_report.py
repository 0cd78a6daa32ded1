"""``scmwatch report``: a self-contained HTML file, rendered in a real headless Chromium.

Hostile strings are planted in the fields an attacker controls (service name, image path,
command line, host names, correlation group values); the page must show them as text, run
nothing, load nothing, and carry a CSP that would stop an injected script anyway.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("jinja2")

from scmwatch.cli import main  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

HOSTILE = {
    "script": "<script>window.__pwned=1</script>",
    "close": "</script><script>window.__pwned=2</script>",
    "js_url": "javascript:window.__pwned=3",
    "svg": "<svg onload=\"window.__pwned=4\"><circle r=9></circle></svg>",
    "img": "<img src=x onerror=\"window.__pwned=5\">",
    "attr": "\" onmouseover=\"window.__pwned=6\" x=\"",
    "comment": "<!-- </style><style>body{display:none}</style>",
    "controls": "red\x1b[31m\x00nul\x07bell\u202eevil\u2028sep",
    "json": "\u2029</script><!--",
}
HOST = "<svg/onload=window.__pwned=7>"  # a host name (UNC target on a command line)
HOST_NODE = "<svg/onload=window"  # its short name (cut at the first dot), a node of the graph

RULES = {
    "svc.yml": """
title: 'Service installed <b>bold</b> & "quoted"'
id: 7c1f4a52-0000-4000-8000-000000000001
name: t_svc
status: test
level: high
logsource: {product: windows, service: system}
detection:
  sel: {EventID: 7045}
  condition: sel
""",
    "psexec.yml": """
title: PsExec run against a remote host
id: 7c1f4a52-0000-4000-8000-000000000002
name: t_psexec
status: test
level: critical
logsource: {product: windows, category: process_creation}
detection:
  sel: {Image|endswith: '\\psexec.exe'}
  condition: sel
""",
    "corr.yml": """
title: Two services on one host
id: 7c1f4a52-0000-4000-8000-000000000003
name: t_corr
status: test
level: medium
correlation:
  type: event_count
  rules: [t_svc]
  group-by: [ServiceName]
  timespan: 1h
  condition: {gte: 2}
  generate: true
""",
}


def _events() -> list[dict]:
    out = []
    t = 0
    for key, value in HOSTILE.items():
        for _ in range(2):
            t += 1
            out.append({"EventID": 7045, "Channel": "System", "Provider_Name": "Service Control Manager",
                        "Computer": f"WS1{value}", "TimeCreated": f"2024-05-01T10:00:{t:02d}Z",
                        "ServiceName": value, "ImagePath": f"C:\\{key}\\{value}.exe", "AccountName": value})
    out.append({"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "WS2",
                "TimeCreated": "2024-05-01T10:01:00Z", "Image": "C:\\Tools\\psexec.exe",
                "CommandLine": f"psexec.exe \\\\{HOST} -s cmd {HOSTILE['js_url']} {HOSTILE['svg']}"})
    return out


@pytest.fixture(scope="module")
def hostile_case(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    rules = root / "rules"
    rules.mkdir()
    for name, text in RULES.items():
        (rules / name).write_text(text)
    log = root / "logs" / f"evil{HOSTILE['svg']}.ndjson".replace("/", "_")
    log.parent.mkdir()
    log.write_text("\n".join(json.dumps(e) for e in _events()) + "\n", encoding="utf-8")
    case = root / "hostile.duckdb"
    rc = main(["hunt", str(log.parent), "--rules", str(rules), "--case", str(case), "--format", "jsonl",
               "-o", str(root / "alerts.jsonl")])
    assert rc == 0
    return case


def _report(case: Path, out: Path, *extra: str) -> str:
    assert main(["report", str(case), "-o", str(out), *extra]) == 0
    return out.read_text(encoding="utf-8")


def test_report_escapes_everything(hostile_case, tmp_path, capsys):
    html = _report(hostile_case, tmp_path / "r.html")
    capsys.readouterr()
    # the only elements of these kinds are the page's own
    assert html.count("<script") == 2  # the page's script and its JSON data block
    assert html.count("<svg") == 2  # the timeline and the graph
    for raw in ("<img", "<svg onload", "<svg/onload", "<b>bold</b>", "</script><script>", "<!-- </style>",
                '" onmouseover="', 'href="j', "javascript:window.__pwned=3\""):
        assert raw not in html, raw
    assert set(re.findall(r'href="([^"]*)"', html)) <= {"#summary", "#timeline", "#matrix", "#lateral",
                                                        "#alerts", "#readiness", "#runs"}
    assert "&lt;img src=x onerror=&#34;window.__pwned=5&#34;&gt;" in html
    # control characters arrive as visible escapes, never raw
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029\u202e]", html)
    assert "\\x1b[31m" in html and "\\u202e" in html
    # the JSON block cannot be closed by data, and parses back to the values
    block = html.split('<script type="application/json" id="case-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block
    data = json.loads(block)
    assert {(e["source_host"], e["target_host"]) for e in data["edges"]} == {("ws2", HOST_NODE)}
    # strict CSP: nothing but the page's own style and script, by hash
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src &#39;none&#39;" in csp and "unsafe-inline" not in csp and "http" not in csp


def test_report_in_chromium(hostile_case, tmp_path, capsys):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (.ci/run installs it)")
    out = tmp_path / "report.html"
    _report(hostile_case, out)
    capsys.readouterr()
    console: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.hover("svg circle")  # the <title> tooltips hold hostile host names
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            text = page.inner_text("body")
            pwned = page.evaluate("window.__pwned === undefined")
            scripts = page.evaluate("document.scripts.length")
            injected = page.evaluate("document.querySelectorAll('img, iframe, object, embed').length")
            svg_handlers = page.evaluate(
                "[...document.querySelectorAll('*')].filter(e => [...e.attributes].some("
                "a => a.name.startsWith('on'))).length")
            # the page's own script ran (CSP hash matches): the level filter is shown
            filter_on = page.evaluate("document.getElementById('filter').className")
            page.emulate_media(media="print")
            pdf = page.pdf()
            # without JavaScript the page is the same, minus the optional level filter
            nojs = browser.new_context(java_script_enabled=False).new_page()
            nojs.goto(out.as_uri())
            nojs_text = nojs.inner_text("body")
            nojs_filter = nojs.is_visible("#filter")
        finally:
            browser.close()
    assert console == []
    assert requests == [out.as_uri()]
    assert pwned and scripts == 2 and injected == 0 and svg_handlers == 0
    assert filter_on == "on"
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert pdf[:4] == b"%PDF"
    # hostile strings are shown as text
    for value in (HOSTILE["script"], HOSTILE["close"], HOSTILE["js_url"], HOSTILE["img"]):
        assert value in text, value
    assert 'Service installed <b>bold</b> & "quoted"' in text
    assert HOST_NODE in text
    assert not nojs_filter and HOSTILE["script"] in nojs_text and "Lateral movement" in nojs_text


def test_report_above_the_alert_limit_summarises(hostile_case, tmp_path, capsys):
    html = _report(hostile_case, tmp_path / "small.html", "--max-alerts", "3")
    capsys.readouterr()
    assert html.count('<article class="alert') == 3
    assert "of 28 alerts are listed" in html.replace("<b>", "").replace("</b>", "")
    assert "Alerts not listed, by rule and host" in html


def test_report_never_overwrites_the_case(hostile_case, capsys):
    before = hostile_case.read_bytes()
    assert main(["report", str(hostile_case), "-o", str(hostile_case)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert hostile_case.read_bytes() == before


def test_report_bad_case_one_line(tmp_path, capsys):
    bad = tmp_path / "x.duckdb"
    bad.write_text("not a case")
    assert main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a case file" in err
    assert not (tmp_path / "r.html").exists()
