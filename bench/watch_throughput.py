"""``scmwatch watch`` speed on loopback: sustained events/s, event-to-alert latency, RSS over time.

Prints, for the built-in pack and (when ../shared is there) all SigmaHQ rules:
  file   events/s of a watcher following a file that holds --events events (written before the
         watcher starts, so the watcher is the bottleneck; counted by its metrics endpoint);
  http   events/s with a client POSTing NDJSON batches of --batch lines over keep-alive HTTP as
         fast as the watcher acknowledges them (acks/s and processed events/s both shown);
  latency p50/p99 (built-in pack) from a batch being sent (HTTP) or appended (file) to its
         alert line appearing in the --output file, at half the sustained rate measured above;
  rss    the watcher's RSS after every tenth of --rss-events events followed from a file (the
         curve, to show it is flat).
The baseline in the same run is the batch ``hunt --jobs 1`` of the same events (events/s): only
ratios are comparable between machines.

Every phase is bounded by --timeout seconds; the event stream is the simulator's (all scenarios,
seed 1), repeated with its timestamps shifted forward so event time advances like a live log.

    python bench/watch_throughput.py [--events 200000] [--rss-events 1000000] [--timeout 300]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
SIGMAHQ = SHARED / "sigmahq"
SCMWATCH = [sys.executable, "-m", "scmwatch"]
_TIME = re.compile(rb'"TimeCreated":"([^"]+)"')
_RID = re.compile(rb'"EventRecordID":(\d+)')
MARK = 900_000_000  # EventRecordID of latency markers: MARK + i


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event_pool(tmp: str) -> tuple[list[bytes], float, bytes]:
    """The simulator's Windows events as NDJSON lines in time order, their time span in seconds,
    and one line the built-in pack alerts on (the latency marker's template)."""
    out = os.path.join(tmp, "sim")
    subprocess.run([*SCMWATCH, "simulate", "all", "--events", "20000", "--format", "jsonl", "--out", out,
                    "--telemetry", "sysmon,security,system,powershell"], check=True, capture_output=True)
    lines = []
    for p in sorted(Path(out).rglob("*.jsonl")):
        if p.name != "labels.jsonl":
            lines += [ln for ln in p.read_bytes().splitlines() if ln.strip()]
    lines.sort(key=lambda ln: _TIME.search(ln).group(1))
    t0, t1 = (_parse(_TIME.search(lines[i]).group(1)) for i in (0, -1))
    alerts = subprocess.run([*SCMWATCH, "hunt", out, "--format", "jsonl"], capture_output=True,
                            check=True).stdout
    marker = b""
    for a in alerts.splitlines():
        rec = orjson.loads(a)
        if rec.get("event", {}).get("EventID") == 7045 and "correlation" not in rec:
            marker = orjson.dumps(rec["event"])
            break
    if not marker:
        raise SystemExit("no 7045 alert in the simulated stream to use as a latency marker")
    return lines, (t1 - t0).total_seconds() + 1.0, marker


def _parse(ts: bytes) -> datetime:
    return datetime.fromisoformat(ts.decode().replace("Z", "+00:00"))


def stream(pool: list[bytes], span: float, n: int, start_round: int = 0):
    """``n`` lines: the pool repeated, each repetition ``span`` seconds later than the last."""
    sent = 0
    k = start_round
    while sent < n:
        shift = timedelta(seconds=span * k)
        for line in pool:
            if sent >= n:
                return
            old = _TIME.search(line).group(1)
            new = (_parse(old) + shift).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            yield line.replace(old, new, 1)
            sent += 1
        k += 1


class Watch:
    """A ``scmwatch watch`` process with its metrics endpoint."""

    def __init__(self, tmp: str, name: str, sources: list[str], rules: list[str],
                 listen: bool = False) -> None:
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.output = os.path.join(self.dir, "alerts.jsonl")
        self.mport = free_port()
        self.hport = free_port() if listen else None
        args = [*SCMWATCH, "watch", *sources, "--state", os.path.join(self.dir, "state"),
                "--output", self.output, "--metrics", f"127.0.0.1:{self.mport}", "--status-interval", "0",
                *rules]
        if listen:
            args += ["--listen-http", f"127.0.0.1:{self.hport}"]
        self.err = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.err)
        self.wait_up()

    def wait_up(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"watch exited: {open(self.err.name).read()[-2000:]}")
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("watch did not come up")

    def metrics(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.mport, timeout=10)
        try:
            conn.request("GET", "/metrics.json")
            return orjson.loads(conn.getresponse().read())
        finally:
            conn.close()

    def events(self) -> int:
        return int(self.metrics()["scmwatch_events_total"]["samples"][0]["value"])

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def wait_events(self, n: int, timeout: float, every: int = 0) -> tuple[float, list[tuple[int, int]]]:
        """Seconds from the first counted event to ``n`` events; RSS samples every ``every`` events."""
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        curve: list[tuple[int, int]] = []
        next_mark = every
        while time.monotonic() < deadline:
            e = self.events()
            now = time.monotonic()
            if e and first is None:
                first = (now, e)
            while every and e >= next_mark:
                curve.append((e, self.rss_kb()))
                next_mark += every
            if e >= n:
                assert first is not None
                return (now - first[0]) * n / max(1, n - first[1]), curve
            time.sleep(0.2)
        raise SystemExit(f"timed out at {self.events()} of {n} events")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.err.close()


def post_all(port: int, lines, batch: int, deadline: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = 0
    buf: list[bytes] = []
    for line in lines:
        buf.append(line)
        if len(buf) == batch:
            _post(conn, buf)
            sent += len(buf)
            buf = []
            if time.monotonic() > deadline:
                break
    if buf:
        _post(conn, buf)
        sent += len(buf)
    conn.close()
    return sent


def _post(conn: http.client.HTTPConnection, lines: list[bytes]) -> None:
    conn.request("POST", "/", body=b"\n".join(lines) + b"\n",
                 headers={"Content-Type": "application/x-ndjson"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"POST answered {resp.status}")


def hunt_baseline(tmp: str, lines_path: str, rules: list[str]) -> float:
    """Seconds the batch hunt (one process, like the watcher) spends on the events: its run on
    them minus its run on one event (start-up and rule loading, which the watcher's rate leaves
    out too)."""
    one = os.path.join(tmp, "one.ndjson")
    with open(lines_path, "rb") as f, open(one, "wb") as g:
        g.write(f.readline())
    spent = []
    for path in (one, lines_path):
        t = time.perf_counter()
        subprocess.run([*SCMWATCH, "hunt", path, "--format", "jsonl", "--jobs", "1", *rules], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spent.append(time.perf_counter() - t)
    return spent[1] - spent[0]


def follow_alerts(path: str, seen: dict[int, float], stop: threading.Event) -> None:
    """Record when each marker's alert line appears in the output file."""
    while not os.path.exists(path) and not stop.is_set():
        time.sleep(0.005)
    with open(path, "rb") as f:
        buf = b""
        while not stop.is_set():
            chunk = f.read()
            if not chunk:
                time.sleep(0.002)
                continue
            now = time.monotonic()
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for line in complete:
                m = _RID.search(line)
                if m and int(m.group(1)) >= MARK:
                    seen.setdefault(int(m.group(1)) - MARK, now)


def latency(tmp: str, name: str, pool, span, marker: bytes, rate: float, seconds: float,
            via: str) -> list[float]:
    """Send at ``rate`` events/s for ``seconds`` in 20 batches a second (one line of each a marker
    that alerts, stamped with the wall clock); returns each marker's latency in seconds."""
    src = os.path.join(tmp, f"{name}-src")
    os.makedirs(src)
    path = os.path.join(src, "live.ndjson")
    open(path, "wb").close()
    w = Watch(tmp, name, [src], [], listen=via == "http")
    sent_at: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()
    t = threading.Thread(target=follow_alerts, args=(w.output, seen, stop), daemon=True)
    t.start()
    per_batch = max(20, int(rate / 20))  # 20 batches (and markers) a second, as shippers batch
    interval = per_batch / rate
    lines = stream(pool, span, 10**12)
    conn = http.client.HTTPConnection("127.0.0.1", w.hport, timeout=60) if via == "http" else None
    out = open(path, "ab") if via == "file" else None
    i = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            now_ts = (datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            mark = _RID.sub(b'"EventRecordID":%d' % (MARK + i), marker, 1)
            mark = _TIME.sub(b'"TimeCreated":"' + now_ts + b'"', mark, 1)
            batch = [next(lines) for _ in range(per_batch - 1)] + [mark]
            sent_at[i] = time.monotonic()
            if conn is not None:
                _post(conn, batch)
            else:
                out.write(b"\n".join(batch) + b"\n")
                out.flush()
            i += 1
            time.sleep(max(0.0, start + i * interval - time.monotonic()))
        deadline = time.monotonic() + 30
        while len(seen) < len(sent_at) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        if conn is not None:
            conn.close()
        if out is not None:
            out.close()
        w.stop()
    lat = [seen[k] - sent_at[k] for k in sent_at if k in seen]
    if len(lat) < len(sent_at):
        print(f"  {name}: {len(sent_at) - len(lat)} of {len(sent_at)} markers without an alert", flush=True)
    return lat


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rss-events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--sigmahq", type=Path, default=SIGMAHQ)
    ap.add_argument("--skip-sigmahq", action="store_true")
    args = ap.parse_args()
    rulesets = {"builtin": []}
    if args.sigmahq.is_dir() and not args.skip_sigmahq:
        rulesets["sigmahq"] = ["--rules", *(str(args.sigmahq / d) for d in
                                            ("rules", "rules-emerging-threats", "rules-threat-hunting"))]
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp:
        pool, span, marker = event_pool(tmp)
        print(f"stream: {len(pool):,} simulated events repeated, span {span:,.0f} s per repetition")
        data = os.path.join(tmp, "events.ndjson")
        with open(data, "wb") as f:
            for line in stream(pool, span, args.events):
                f.write(line + b"\n")
        rates = {}
        for name, rules in rulesets.items():
            base = hunt_baseline(tmp, data, rules)
            print(f"[{name}] hunt baseline (batch, same events): {args.events / base:,.0f} events/s")
            src = os.path.join(tmp, f"{name}-file")
            os.makedirs(src)
            w = Watch(tmp, f"{name}-watch-file", [src], rules)
            os.link(data, os.path.join(src, "events.ndjson"))
            secs, _ = w.wait_events(args.events, args.timeout)
            w.stop()
            print(f"[{name}] file: {args.events / secs:,.0f} events/s ({args.events:,} events in "
                  f"{secs:.1f} s; {base / secs:.2f}x the hunt)", flush=True)
            hsrc = os.path.join(tmp, f"{name}-http-src")
            os.makedirs(hsrc)
            w = Watch(tmp, f"{name}-watch-http", [hsrc], rules, listen=True)
            t0 = time.monotonic()
            sent = post_all(w.hport, stream(pool, span, args.events), args.batch, t0 + args.timeout)
            acked = time.monotonic() - t0
            secs, _ = w.wait_events(sent, args.timeout)
            w.stop()
            rates[name] = sent / secs
            print(f"[{name}] http: {sent / secs:,.0f} events/s processed ({sent / acked:,.0f}/s "
                  f"acknowledged, batches of {args.batch}; {base * sent / args.events / secs:.2f}x the hunt)",
                  flush=True)
        half = rates["builtin"] / 2
        for via in ("http", "file"):
            lat = latency(tmp, f"lat-{via}", pool, span, marker, half, args.latency_seconds, via)
            print(f"[builtin] latency via {via} at {half:,.0f} events/s: p50 {pct(lat, 50) * 1000:.0f} ms, "
                  f"p99 {pct(lat, 99) * 1000:.0f} ms ({len(lat)} alerts)", flush=True)
        src = os.path.join(tmp, "rss-src")
        os.makedirs(src)
        w = Watch(tmp, "rss", [src], [])
        path = os.path.join(src, "big.ndjson")
        writer = threading.Thread(target=_write_big, args=(path, pool, span, args.rss_events), daemon=True)
        writer.start()
        secs, curve = w.wait_events(args.rss_events, args.timeout * 4, every=max(1, args.rss_events // 10))
        w.stop()
        print(f"[builtin] rss after N events (followed file, {args.rss_events / secs:,.0f} events/s): "
              + ", ".join(f"{n:,}: {kb / 1024:.0f} MB" for n, kb in curve))


def _write_big(path: str, pool, span, n: int) -> None:
    with open(path, "ab") as f:
        buf = []
        for line in stream(pool, span, n):
            buf.append(line)
            if len(buf) == 10000:
                f.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            f.write(b"\n".join(buf) + b"\n")


if __name__ == "__main__":
    main()
