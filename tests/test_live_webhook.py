"""Webhook delivery against a real HTTP receiver on 127.0.0.1: down then up, crashes of the sender
(kill -9 of a real process), dead letters, and the chat payloads' escaping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from scmwatch.live.webhook import WebhookDelivery, WebhookError, payload, slack_escape, teams_escape


class Receiver:
    """A webhook receiver that records every POST by its Idempotency-Key (the dedupe a real
    receiver would do) and answers ``status`` (settable), optionally slowly."""

    def __init__(self, port: int = 0, status: int = 200, delay: float = 0.0) -> None:
        self.keys: Counter[str] = Counter()
        self.bodies: dict[str, dict] = {}
        self.status = status
        self.delay = delay
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.delay:
                    time.sleep(outer.delay)
                key = self.headers["Idempotency-Key"]
                if outer.status == 200:
                    outer.keys[key] += 1
                    outer.bodies[key] = orjson.loads(body)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alert(i: int, **extra) -> tuple[str, dict]:
    return f"a{i:04d}", {"rule_id": "r1", "title": "PsExec service", "level": "high", "host": "ws1",
                         "timestamp": "2026-01-01T00:00:00Z", "source": "x.json", "record_id": i,
                         "event": {"ServiceName": "PSEXESVC"}, **extra}


def test_receiver_down_then_up_every_alert_once(tmp_path):
    port = free_port()  # nothing listens yet: connection refused
    msgs: list[str] = []
    d = WebhookDelivery(str(tmp_path), f"http://127.0.0.1:{port}/hook", base_delay=0.05, max_delay=0.3,
                        report=msgs.append, seed=1)
    d.start()
    try:
        assert d.submit_many([alert(i) for i in range(30)]) == 30
        time.sleep(0.8)
        assert d.pending() == 30 and d.stats.attempts_failed >= 2
        rec = Receiver(port)
        try:
            assert d.wait_idle(20)
        finally:
            rec.close()
    finally:
        d.close()
    assert sorted(rec.keys) == [f"a{i:04d}" for i in range(30)]
    assert max(rec.keys.values()) == 1  # no duplicate, none lost
    assert rec.bodies["a0003"]["alert_id"] == "a0003" and rec.bodies["a0003"]["record_id"] == 3
    assert any("retrying alert a0000" in m for m in msgs)
    assert not os.path.exists(tmp_path / "dead-letter.jsonl")
    # a restarted watcher re-emitting the same alerts sends nothing again
    d2 = WebhookDelivery(str(tmp_path), f"http://127.0.0.1:{port}/hook")
    assert d2.submit_many([alert(i) for i in range(30)]) == 0 and d2.pending() == 0
    assert d2.delivered_ids() == set(rec.keys)


CHILD = textwrap.dedent("""
    import sys
    from scmwatch.live.webhook import WebhookDelivery
    d = WebhookDelivery(sys.argv[1], sys.argv[2], base_delay=0.05, max_delay=0.2, report=lambda m: None)
    d.start()
    d.submit_many([(f"a{i:04d}", {"rule_id": "r", "record_id": i}) for i in range(int(sys.argv[3]))])
    d.wait_idle(60)
    d.close()
""")


def test_kill_9_during_delivery_no_alert_lost(tmp_path):
    """A sender killed at seeded random moments and restarted (re-submitting everything, as a
    watcher re-emits the alerts after its last checkpoint): the receiver's dedupe by key shows
    every alert once; re-POSTs are at most one per kill (the one in flight)."""
    import random

    rng = random.Random(19)
    rec = Receiver(delay=0.01)
    n, kills = 150, 0
    try:
        for _ in range(12):
            proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), rec.url, str(n)])
            time.sleep(rng.uniform(0.2, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(10)
        subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), rec.url, str(n)], check=True, timeout=120)
    finally:
        rec.close()
    assert kills >= 3
    assert sorted(rec.keys) == [f"a{i:04d}" for i in range(n)]
    assert sum(rec.keys.values()) - n <= kills


def test_dead_letter_when_receiver_stays_down_or_refuses(tmp_path):
    rec = Receiver(status=503)
    msgs: list[str] = []
    d = WebhookDelivery(str(tmp_path), rec.url, give_up_after=0.6, base_delay=0.05, max_delay=0.1,
                        report=msgs.append)
    d.start()
    try:
        d.submit_many([alert(i) for i in range(3)])
        assert d.wait_idle(15)
        rec.status = 400  # refused: dead at once, no retry
        d.submit(*alert(9))
        assert d.wait_idle(15)
    finally:
        d.close()
        rec.close()
    dead = [orjson.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in dead] == ["a0000", "a0001", "a0002", "a0009"]
    assert "HTTP 503" in dead[0]["reason"] and dead[0]["attempts"] >= 2
    assert dead[3]["reason"] == "HTTP 400" and dead[3]["attempts"] == 1
    assert dead[0]["alert"]["record_id"] == 0
    assert d.stats.dead == 4 and d.delivered_ids() == set()
    assert any("dead-lettered" in m for m in msgs)
    # settled: not sent again after a restart
    assert WebhookDelivery(str(tmp_path), rec.url).pending() == 0


def test_torn_outbox_line_is_skipped(tmp_path):
    d = WebhookDelivery(str(tmp_path), "http://127.0.0.1:9/")
    d.submit_many([alert(1), alert(2)])
    with open(d.outbox_path, "ab") as f:
        f.write(b'{"id": "a0003", "alert"')  # crash inside the append of a3: never handed over
    msgs: list[str] = []
    d2 = WebhookDelivery(str(tmp_path), "http://127.0.0.1:9/", report=msgs.append)
    assert d2.pending() == 2 and d2.stats.resumed == 2
    assert any("cut short by a crash" in m for m in msgs)


def test_bad_configuration():
    for url in ("ftp://x/", "http://", "localhost:80"):
        with pytest.raises(WebhookError):
            WebhookDelivery("/nonexistent", url)
    with pytest.raises(WebhookError):
        WebhookDelivery("/nonexistent", "http://127.0.0.1:1/", fmt="xml")


def test_chat_payloads_escape_log_values():
    hostile = "<!channel> *now* `x` & <http://evil|click>\nfake line"
    _, a = alert(1, title=hostile, event={"ServiceName": hostile, "ImagePath": "C:\\a_b\\[x](y)"})
    text = payload("a1", a, "slack")["text"]
    assert "<!channel>" not in text and "<http" not in text and "&lt;!channel&gt;" in text
    assert "\nfake line" not in text and "\\nfake line" in text
    assert slack_escape("a`b") == "`a\u02cbb`"  # a backtick cannot close the code span
    card = payload("a1", a, "teams")["attachments"][0]["content"]
    flat = orjson.dumps(card).decode()
    assert "[x](y)" not in flat and "\\\\[x\\\\]\\\\(y\\\\)" in flat
    assert teams_escape("*b*") == "\\*b\\*"
    assert payload("a1", a, "json")["alert_id"] == "a1"


def test_as_a_delivery_target(tmp_path):
    """The watcher's target protocol: deliver (no fsync) then sync (fsync) before a checkpoint."""
    from scmwatch.alerts import Alert
    from scmwatch.events.model import Event
    from scmwatch.live.webhook import WebhookTarget

    fields = {"EventID": 7045, "Computer": "ws1", "TimeCreated": "2026-01-01T00:00:00Z"}
    ev = Event(fields, "s.json", 4, "json")
    a = Alert("r1", "t", "high", "d", ["attack.t1569.002"], ev)
    rec = Receiver()
    target = WebhookTarget(WebhookDelivery(str(tmp_path), rec.url, base_delay=0.05))
    try:
        assert target.start(None) == set()
        target.deliver("id-1", a)
        target.deliver("id-1", a)  # replayed after a restart: not queued twice
        assert target.sync() in ({"pending": 0}, {"pending": 1})
        assert target.delivery.wait_idle(10)
    finally:
        target.close()
        rec.close()
    assert rec.keys == Counter({"id-1": 1}) and target.count == 1
    assert rec.bodies["id-1"]["alert_id"] == "id-1" and rec.bodies["id-1"]["record_id"] == 4
