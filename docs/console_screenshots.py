"""The README's console screenshots (docs/img/console-*.png), from the bundled demo.

Hunts ``examples/demo`` into a fresh case with ``--keep-events`` (what ``make run`` reads), records
two decisions as an analyst would (the PsExec link from ws9001 to sql01 malicious, dc01 under
investigation), serves the case with ``scmwatch serve`` on 127.0.0.1 and photographs the
overview, the lateral-movement graph, that link's page and dc01's timeline in Debian's headless
Chromium (Playwright for Python with ``executable_path``; no browser download).

    make screenshots        # or: .venv/bin/python docs/console_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from scmwatch.case.store import open_case
from scmwatch.case.triage import edge_id, set_status
from scmwatch.cli import main as scmwatch

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ANALYST = "analyst"


def _case(path: Path) -> None:
    if scmwatch(["hunt", str(ROOT / "examples" / "demo"), "--case", str(path), "--keep-events",
                 "-o", os.devnull]) != 0:
        raise SystemExit("hunting the demo failed")
    con = open_case(str(path), write=True)
    try:
        set_status(con, "edge", edge_id("ws9001", "sql01"), "malicious",
                   "PsExec service from the jump host, change CHG-42 does not cover it", ANALYST)
        set_status(con, "host", "dc01", "investigating", "service installs at 09:12, asked the admins",
                   ANALYST)
    finally:
        con.close()


def _serve(path: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "scmwatch", "serve", str(path), "--port", "0",
                             "--analyst", ANALYST], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"http://\S+", proc.stderr.readline())
        if m:
            return proc, m.group(0)
    proc.terminate()
    raise SystemExit("scmwatch serve did not start")


def _shot(page: Page, path: Path, selector: str, width: int = 1100, height: int = 700) -> None:
    """The page from its top down to the end of ``selector`` (at most ``height`` px)."""
    box = page.locator(selector).bounding_box()
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width,
                                          "height": min(height, box["y"] + box["height"] + 10)})
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="directory for the PNG files")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scmwatch-shots-") as tmp:
        path = Path(tmp) / "demo.duckdb"
        _case(path)
        proc, url = _serve(path)
        base = url.split("/?", 1)[0]
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
                try:
                    page = browser.new_page(viewport={"width": 1100, "height": 760})
                    page.goto(url)
                    _shot(page, out / "console-overview.png", "#timeline")
                    page.goto(base + "/lateral")
                    _shot(page, out / "console-lateral.png", "#graph", width=940, height=1000)
                    page.goto(base + "/lateral/edge?source=ws9001&target=sql01")
                    _shot(page, out / "console-edge.png", "#edge-alerts tbody tr:nth-child(5)")
                    page.goto(base + "/host?name=dc01")
                    _shot(page, out / "console-host.png", "#activity")
                finally:
                    browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
