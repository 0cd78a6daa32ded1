"""`scmwatch watch` as a real process with its network side: batches POSTed over HTTP (gzip,
oversize, garbage) and sent over TCP become the alerts a batch hunt finds in the same events; a
webhook receiver that is down, then up, gets every alert once, also across kill -9 of the
watcher; a receiver that stays down fills the dead-letter file; the metrics endpoint is scraped."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from test_live_webhook import Receiver, free_port

SCMWATCH = [sys.executable, "-m", "scmwatch"]


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> list[bytes]:
    """A simulated multi-host attack stream (every scenario) as NDJSON lines, in time order."""
    out = tmp_path_factory.mktemp("sim")
    subprocess.run([*SCMWATCH, "simulate", "all", "--events", "1500", "--hosts", "3", "--seed", "7",
                    "--format", "jsonl", "--out", str(out), "--telemetry", "sysmon,security,system"],
                   check=True, capture_output=True, timeout=120)
    lines = [ln for p in sorted(out.rglob("*.jsonl")) if p.name != "labels.jsonl"
             for ln in p.read_bytes().splitlines() if ln.strip()]
    return sorted(lines, key=lambda ln: orjson.loads(ln)["TimeCreated"])


class Watch:
    """A `scmwatch watch` process; its listening ports are read from its stderr."""

    def __init__(self, tmp: Path, *extra: str, listen: bool = True) -> None:
        self.output = tmp / "alerts.jsonl"
        self.state = tmp / "state"
        args = [*SCMWATCH, "watch", "--state", str(self.state), "-o", str(self.output),
                "--metrics", "127.0.0.1:0", "--status-interval", "0", "--checkpoint-interval", "0.5", *extra]
        if listen:
            args += ["--listen-http", "127.0.0.1:0", "--listen-tcp", "127.0.0.1:0"]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode()
            if not line:
                raise AssertionError("watch ended: " + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r"listening for (HTTP|TCP) on 127\.0\.0\.1:(\d+)|metrics on http://127\.0\.0\.1:(\d+)",
                          line)
            if m:
                self.ports[(m.group(1) or "metrics").lower()] = int(m.group(2) or m.group(3))
            if "following" in line:
                break
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.decode())

    def post(self, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=30)
        try:
            conn.request("POST", "/", body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, (orjson.loads(data) if data else {})
        finally:
            conn.close()

    def metrics(self, path: str = "/metrics.json") -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["metrics"], timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def value(self, name: str, **labels: str) -> float:
        fam = orjson.loads(self.metrics()).get(name, {"samples": []})
        return sum(s["value"] for s in fam["samples"]
                   if all(s["labels"].get(k) == v for k, v in labels.items()))

    def wait_for(self, cond, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.1)
        raise AssertionError("timed out; stderr:\n" + "".join(self.lines[-20:]))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def alerts(path: Path) -> list[dict]:
    return [orjson.loads(ln) for ln in path.read_bytes().splitlines()] if path.exists() else []


def single_event_keys(rows: list[dict]) -> Counter:
    return Counter((a["rule_id"], a["host"], a["event"].get("EventRecordID"))
                   for a in rows if "correlation" not in a)


def test_http_and_tcp_batches_become_alerts(tmp_path, events):
    w = Watch(tmp_path)
    try:
        half = len(events) // 2
        http_part, tcp_part = events[:half], events[half:]
        sent = 0
        for i in range(0, len(http_part), 200):  # gzip'd batches with a garbage line in each
            chunk = http_part[i:i + 200]
            body = gzip.compress(b"\n".join(chunk[:1] + [b"{not json"] + chunk[1:]) + b"\n")
            status, resp = w.post(body, {"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"})
            assert status == 200 and resp == {"accepted": len(chunk), "rejected": 1}
            sent += len(chunk)
        assert w.post(b"{}\n" * (20 << 20))[0] == 413  # over --max-body
        with socket.create_connection(("127.0.0.1", w.ports["tcp"]), timeout=30) as s:
            data = b"\n".join(tcp_part) + b"\n"
            for i in range(0, len(data), 65536):
                s.sendall(data[i:i + 65536])
        w.wait_for(lambda: w.value("scmwatch_events_total") >= len(events))
        text = w.metrics("/metrics").decode()
        batches = len(range(0, len(http_part), 200))
        rejected = r'scmwatch_listen_lines_total\{listener="http:[^"]+",outcome="rejected"\} '
        assert re.search(rejected + str(batches), text)
        assert re.search(r'scmwatch_listen_refused_total\{listener="http:[^"]+",status="413"\} 1', text)
        assert "scmwatch_alerts_total" in text and "scmwatch_source_lag_bytes" in text
    finally:
        assert w.stop() == 0
    got = alerts(w.output)
    assert got and len({a["alert_id"] for a in got}) == len(got)
    # the batch hunt of the same events finds the same single-event alerts
    ref = tmp_path / "ref.ndjson"
    ref.write_bytes(b"\n".join(events) + b"\n")
    hunt = subprocess.run([*SCMWATCH, "hunt", str(ref), "--format", "jsonl"], capture_output=True, check=True)
    expected = [orjson.loads(ln) for ln in hunt.stdout.splitlines()]
    assert single_event_keys(got) == single_event_keys(expected)


def test_webhook_down_then_up_and_kill_9(tmp_path, events):
    """The receiver is down while alerts are raised, the watcher is killed with -9 in the middle
    of delivering them to a slow receiver, then restarted: the receiver's dedupe by Idempotency-Key
    holds every alert of the output file, none twice beyond the one POST in flight per kill."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    w = Watch(tmp_path, "--webhook", url)
    body = b"\n".join(events) + b"\n"
    assert w.post(gzip.compress(body), {"Content-Encoding": "gzip"})[0] == 200
    w.wait_for(lambda: w.value("scmwatch_webhook_attempts_total", outcome="failed") >= 2)
    rec = Receiver(port, delay=0.02)
    try:
        w.wait_for(lambda: sum(rec.keys.values()) >= 5)
        w.proc.send_signal(signal.SIGKILL)  # kill -9 mid-delivery
        w.proc.wait(30)
        w2 = Watch(tmp_path, "--webhook", url)
        try:
            def settled() -> bool:
                ids = {a["alert_id"] for a in alerts(w2.output)}
                return bool(ids) and w2.value("scmwatch_webhook_queue") == 0 and set(rec.keys) >= ids

            w2.wait_for(settled, timeout=120)
        finally:
            assert w2.stop() == 0
    finally:
        rec.close()
    ids = [a["alert_id"] for a in alerts(w.output)]
    assert len(ids) == len(set(ids))
    assert set(rec.keys) == set(ids)  # none lost, none that the output does not have
    assert sum(rec.keys.values()) - len(ids) <= 1  # at most the one POST in flight at the kill
    assert rec.bodies[ids[0]]["alert_id"] == ids[0]


def test_webhook_dead_letter(tmp_path, events):
    rec = Receiver(status=503)
    try:
        w = Watch(tmp_path, "--webhook", rec.url, "--webhook-give-up", "1")
        try:
            assert w.post(b"\n".join(events) + b"\n")[0] == 200
            w.wait_for(lambda: w.value("scmwatch_webhook_dead_letters_total") > 0
                       and w.value("scmwatch_webhook_queue") == 0)
        finally:
            assert w.stop() == 0
    finally:
        rec.close()
    ids = {a["alert_id"] for a in alerts(w.output)}
    dead = [orjson.loads(ln) for ln in (w.state / "dead-letter.jsonl").read_bytes().splitlines()]
    assert ids and {d["id"] for d in dead} == ids
    assert all("HTTP 503" in d["reason"] for d in dead)
    assert any("dead-lettered" in line for line in w.lines)


def test_bad_network_options(tmp_path):
    for args, msg in ((["--listen-http", "nohost:1"], "--listen-http"),
                      (["x", "--webhook", "ftp://a"], "--webhook"), ([], "name a SOURCE")):
        r = subprocess.run([*SCMWATCH, "watch", "--state", str(tmp_path / "s"), *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = subprocess.run([*SCMWATCH, "watch", "--state", str(tmp_path / "s2"), "--listen-http",
                            f"127.0.0.1:{s.getsockname()[1]}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    assert os.path.isdir(tmp_path / "s2")
