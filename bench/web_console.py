"""``scmwatch serve`` over a case with a million alerts: every page's latency and the server's RSS.

The case is written through the real writer (``CaseWriter``, the sink ``hunt --case`` uses) from
the generated alerts of ``case_report.py`` (200 hosts, 40 rules, one alert in ten a correlation
with 2-5 evidence events), and one host's alerts are triaged ``benign`` in bulk. The console then
runs as the CLI (``scmwatch serve CASE --port 0``) in its own process on 127.0.0.1, and a bounded
loop of requests (each kind --requests times, the whole loop stopped after --seconds) measures
the latency of each page as the client sees it on loopback: median and p95. The baseline in the
same run is a request the server refuses at once (no cookie: 401), i.e. the HTTP cost alone. The
server's resident memory (VmRSS now, VmHWM peak) is read from /proc at the end.

With ``--against SRC --against-case FILE`` a second console runs from another source tree (``SRC``,
the ``src`` directory of an earlier scmwatch, e.g. from ``git archive``) over its own copy of the
case (an older scmwatch cannot open a case of a newer schema), and every request goes to both,
alternating which is asked first, so both see the same load on a shared machine: each row then
gives both and the ratio of the server medians.

    python bench/web_console.py [--alerts 1000000] [--requests 30] [--seconds 300] [--case FILE]
                                [--against SRC --against-case FILE]
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from case_report import make_alert
from scmwatch.case import CaseWriter
from scmwatch.case.store import open_case
from scmwatch.case.triage import set_status_where


class Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.cookie = ""
        status, headers, _ = self.get(f"{parts.path}?{parts.query}")
        assert status == 303, status
        self.cookie = headers["set-cookie"].split(";", 1)[0]

    def get(self, path: str, cookie: bool = True, form: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        con = http.client.HTTPConnection(self.host, self.port, timeout=120)
        headers = {"Cookie": self.cookie} if cookie and self.cookie else {}
        body = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(form)
        try:
            con.request("POST" if form is not None else "GET", path, body=body, headers=headers)
            r = con.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            con.close()


def timed(clients: list[Client], paths: list[str], deadline: float, cookie: bool = True,
          expect: int = 200) -> list[list[tuple[float, float]]]:
    """(client seconds, server seconds) per request and client, until ``deadline``; each path
    goes to every client, the first one asked alternating."""
    out: list[list[tuple[float, float]]] = [[] for _ in clients]
    for i, path in enumerate(paths):
        if time.monotonic() > deadline:
            break
        order = list(enumerate(clients))
        for k, client in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            status, headers, _ = client.get(path, cookie)
            took = time.perf_counter() - start
            out[k].append((took, server_seconds(headers, took)))
            assert status == expect, (path, status)
    return out


def server_seconds(headers: dict[str, str], default: float) -> float:
    m = re.search(r"app;dur=([\d.]+)", headers.get("server-timing", ""))
    return float(m.group(1)) / 1000 if m else default


def _stats(values: list[float]) -> tuple[float, float]:
    ms = sorted(v * 1000 for v in values)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


def row(label: str, runs: list[list[tuple[float, float]]], base: float) -> str:
    times = runs[0]
    if not times:
        return f"{label:<44} (not run: time limit)"
    (c_med, c_p95), (s_med, s_p95) = _stats([t[0] for t in times]), _stats([t[1] for t in times])
    out = (f"{label:<44} n={len(times):3d}  client median {c_med:7.1f} p95 {c_p95:7.1f} ms  "
           f"server median {s_med:7.1f} p95 {s_p95:7.1f} ms  {c_med / base:5.1f}x baseline")
    if len(runs) > 1 and runs[1]:
        o_med, o_p95 = _stats([t[1] for t in runs[1]])
        out += f"  | against: server median {o_med:7.1f} p95 {o_p95:7.1f} ms ({s_med / o_med:4.2f}x)"
    return out


def serve(case: Path, src: str | None = None) -> tuple[subprocess.Popen[str], Client]:
    """``scmwatch serve CASE`` in its own process (from ``src`` when given), logged in."""
    env = {**os.environ, "PYTHONPATH": src} if src else None
    proc = subprocess.Popen([sys.executable, "-m", "scmwatch", "serve", str(case), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    m = re.search(r"http://\S+", line)
    if not m:
        proc.terminate()
        raise SystemExit(f"serve did not start: {line.strip()}")
    return proc, Client(m.group(0))


def build(case: Path, n: int) -> str:
    rng = random.Random(7)
    hosts = [f"ws{i:04d}" for i in range(200)]
    start = time.perf_counter()
    writer = CaseWriter(str(case), command="bench/web_console.py")
    for i in range(n):
        writer.write(make_alert(rng, i, hosts))
    writer.close({"events": n})
    con = open_case(str(case), write=True)
    try:
        set_status_where(con, "host_key = ?", ["ws0003"], "benign", "bench: bulk")
    finally:
        con.close()
    return (f"case: {n:,} alerts written in {time.perf_counter() - start:.1f} s, "
            f"{case.stat().st_size / 1e6:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=30, help="requests per page kind")
    ap.add_argument("--seconds", type=float, default=300, help="stop the request loop after this")
    ap.add_argument("--case", help="keep the case in this file: written there when missing, else reused "
                    "(its alerts as an earlier run left them)")
    ap.add_argument("--build-only", action="store_true", help="write the case (--case) and stop")
    ap.add_argument("--against", metavar="SRC", help="also serve from this source tree and compare")
    ap.add_argument("--against-case", metavar="FILE", help="the case the --against console serves")
    args = ap.parse_args()
    if bool(args.against) != bool(args.against_case):
        ap.error("--against and --against-case go together")
    with tempfile.TemporaryDirectory(prefix="scmwatch-bench-web-") as tmp:
        case = Path(args.case) if args.case else Path(tmp) / "case.duckdb"
        if not case.exists():
            print(build(case, args.alerts), flush=True)
        if args.build_only:
            return
        con = open_case(str(case))
        try:
            sample = "SELECT alert_id FROM alert_rows{} USING SAMPLE 200 ROWS"
            ids = [r[0] for r in con.execute(sample.format("")).fetchall()]
            corr = [r[0] for r in con.execute(sample.format(" WHERE kind = 'correlation'")).fetchall()]
            total = con.execute("SELECT count(*) FROM alert_rows").fetchone()[0]
        finally:
            con.close()
        procs: list[subprocess.Popen[str]] = []
        try:
            clients = []
            servers = [(case, None)] + ([(Path(args.against_case), args.against)] if args.against else [])
            for where, src in servers:
                proc, client = serve(where, src)
                procs.append(proc)
                clients.append(client)
            n = args.requests
            deadline = time.monotonic() + args.seconds
            rng = random.Random(1)
            base = timed(clients, ["/alerts"] * n, deadline, cookie=False, expect=401)[0]
            b = statistics.median(t[0] for t in base) * 1000
            print(f"alerts in the case: {total:,}; baseline (401, HTTP only): median {b:.1f} ms")
            results: list[tuple[str, list[list[tuple[float, float]]]]] = []
            results.append(("overview", timed(clients, ["/"] * n, deadline)))
            results.append(("list, first page (level desc)", timed(clients, ["/alerts"] * n, deadline)))
            # deep pages: walk "next" from the start, timing each
            deep: list[list[tuple[float, float]]] = [[] for _ in clients]
            at = ["/alerts?sort=time&dir=asc"] * len(clients)
            for i in range(n):
                if time.monotonic() > deadline:
                    break
                order = list(enumerate(clients))
                for k, client in order if i % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    _, headers, body = client.get(at[k])
                    took = time.perf_counter() - start
                    deep[k].append((took, server_seconds(headers, took)))
                    nxt = re.search(rb'<a href="([^"]+)" rel="next">', body)
                    at[k] = nxt.group(1).decode().replace("&amp;", "&")
            results.append(("list, next pages (time asc)", deep))
            results.append(("list, last page", timed(clients, ["/alerts?last=1"] * n, deadline)))
            hosts = [f"ws{rng.randrange(200):04d}" for _ in range(n)]
            results.append(("filtered: host", timed(
                clients, [f"/alerts?{urlencode({'host': h})}" for h in hosts], deadline)))
            results.append(("filtered: host + level", timed(
                clients, [f"/alerts?{urlencode({'host': h, 'level': 'high'})}" for h in hosts], deadline)))
            results.append(("filtered: one day, sort by host", timed(clients, [
                f"/alerts?{urlencode({'from': f'2024-05-{d:02d}', 'to': f'2024-05-{d:02d}', 'sort': 'host'})}"
                for d in (rng.randrange(6, 13) for _ in range(n))], deadline)))
            results.append(("filtered: rule + technique tag", timed(clients, [
                f"/alerts?{urlencode({'rule': f'rule-{rng.randrange(40):02d}', 'tag': 'T1569.002'})}"
                for _ in range(n)], deadline)))
            results.append(("filtered: status=benign",
                            timed(clients, ["/alerts?status=benign"] * n, deadline)))
            results.append(("filtered: free text q=svcN (~200 alerts)", timed(clients, [
                f"/alerts?q=svc{rng.randrange(5000)}" for _ in range(n)], deadline)))
            results.append(("filtered: free text q=SVCN, sort by time", timed(clients, [
                f"/alerts?q=SVC{rng.randrange(5000)}&sort=time" for _ in range(n)], deadline)))
            results.append(("filtered: free text q=LocalSystem (all)",
                            timed(clients, ["/alerts?q=LocalSystem"] * n, deadline)))
            results.append(("filtered: free text q=LocalSystem, counted", timed(
                clients, ["/alerts?q=LocalSystem&count=1"] * n, deadline)))
            results.append(("filtered: free text q=C:\\Windows\\Temp\\N", timed(clients, [
                "/alerts?" + urlencode({"q": "C:\\Windows\\Temp\\" + str(rng.randrange(10**5))})
                for _ in range(n)], deadline)))
            results.append(("alert page (any)", timed(clients, [f"/alerts/{i}" for i in ids[:n]], deadline)))
            results.append(("alert page (correlation)",
                            timed(clients, [f"/alerts/{i}" for i in corr[:n]], deadline)))
            results.append(("hosts", timed(clients, ["/hosts"] * n, deadline)))
            results.append(("one host (timeline, alerts)", timed(
                clients, [f"/host?name=ws{rng.randrange(200):04d}" for _ in range(n)], deadline)))
            results.append(("lateral movement (graph)", timed(clients, ["/lateral"] * n, deadline)))
            # bulk triage of every high alert (~225k) through the two POSTs, then status filters
            bulk = []
            for client in clients:
                _, _, page = client.get("/alerts?level=high")
                csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
                form = {"level": "high", "set_status": "benign", "note": "bench", "csrf": csrf}
                start = time.perf_counter()
                status, _, confirm = client.get("/alerts/bulk", form=form)
                preview_s = time.perf_counter() - start
                want = re.search(rb'name="confirm" value="(\d+)"', confirm).group(1).decode()
                start = time.perf_counter()
                status, _, _ = client.get("/alerts/bulk", form={**form, "confirm": want})
                assert status == 303, status
                bulk.append((int(want), preview_s, time.perf_counter() - start))
            want = str(bulk[0][0])
            results.append((f"after bulk: status=benign ({int(want):,} + 5k)",
                            timed(clients, ["/alerts?status=benign"] * n, deadline)))
            results.append(("after bulk: status=new", timed(clients, ["/alerts?status=new"] * n, deadline)))
            results.append(("after bulk: list, first page", timed(clients, ["/alerts"] * n, deadline)))
            results.append(("after bulk: overview", timed(clients, ["/"] * n, deadline)))
            exports = []
            for client in clients:
                start = time.perf_counter()
                _, _, body = client.get("/alerts/export?format=csv&host=ws0007")
                exports.append((body, time.perf_counter() - start))
            for label, times in results:
                print(row(label, times, b))
            for name, proc, (count, preview_s, bulk_s), (body, export_s) in zip(
                    ("", "against: "), procs, bulk, exports, strict=False):
                print(f"{name}bulk triage of {count:,} alerts: preview {preview_s:.2f} s, "
                      f"confirmed write {bulk_s:.2f} s")
                rows = body.count(b"\r\n") - 1
                print(f"{name}export CSV, one host: {rows:,} rows, {len(body) / 1e6:.1f} MB "
                      f"in {export_s:.2f} s")
                status_text = Path(f"/proc/{proc.pid}/status").read_text()
                rss = {k: int(v.split()[0])
                       for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.+)$", status_text, re.M)}
                print(f"{name}server RSS {rss['VmRSS'] / 1024:.0f} MB now, peak {rss['VmHWM'] / 1024:.0f} MB")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
