"""``--webhook URL``: every alert POSTed once, surviving a receiver that is down and a watcher crash.

What "once" means here, exactly:

* **Durable hand-over.** :meth:`WebhookDelivery.submit` appends the alert to
  ``STATE_DIR/webhook/outbox.jsonl`` and fsyncs before it returns; from then on the alert is
  delivered or dead-lettered whatever happens to the process. Submitting an id already known
  (pending, delivered or dead-lettered) does nothing, so a watcher that re-emits alerts after a
  restart (the ones after its last checkpoint) does not send them twice.
* **At-least-once transport, idempotency key.** An alert is marked delivered in
  ``STATE_DIR/webhook/done.jsonl`` (fsynced) after the receiver answered 2xx. A crash between the
  receiver's 2xx and that mark makes the restarted watcher POST that one alert again, with the
  same ``Idempotency-Key: <alert id>`` header (and ``alert_id`` in the generic JSON body): a
  receiver that keeps the keys it has seen shows every alert exactly once. A receiver that
  ignores the key (Slack, Teams) can show such an alert twice; at most the alerts in flight at
  the crash, one with this sender.
* **Bounded retrying.** Connection errors, 408, 425, 429 and 5xx are retried with exponential
  backoff and full jitter (``Retry-After`` honoured up to the cap). An alert not delivered
  ``give_up_after`` seconds after it was submitted (counted across restarts), or refused with
  another status (4xx: the receiver will not take it however often it is sent; 3xx: redirects are
  not followed), goes to ``STATE_DIR/dead-letter.jsonl`` with the reason, and delivery goes on
  with the next alert. Alerts are delivered in submission order, one at a time.

Memory and disk stay bounded: the outbox is rewritten without settled alerts every
``COMPACT_EVERY`` settlements, and the ids remembered for de-duplication are the last
``KEEP_IDS`` settled ones (far more than a watcher re-emits after a crash: the alerts since its
last checkpoint).
"""

from __future__ import annotations

import http.client
import os
import random
import sys
import threading
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from scmwatch.escape import terminal
from scmwatch.live.metrics import Sample
from scmwatch.live.spool import cut_torn_tail
from scmwatch.sinks.jsonl import json_line

FORMATS = ("json", "slack", "teams")
TIMEOUT = 10.0  # seconds for one POST
BASE_DELAY = 0.5  # first retry after at most this many seconds
MAX_DELAY = 60.0  # backoff cap
GIVE_UP_AFTER = 600.0  # seconds after submission an undelivered alert is dead-lettered
COMPACT_EVERY = 1000
KEEP_IDS = 100_000
TRANSIENT = {408, 425, 429}
# event fields shown in the chat formats, in this order, when the alert's event has them
CHAT_FIELDS = ("ServiceName", "ImagePath", "ServiceFileName", "CommandLine", "Image", "ParentImage",
               "SubjectUserName", "TargetUserName", "IpAddress", "ShareName", "RelativeTargetName")
CHAT_VALUE_MAX = 300


class WebhookError(ValueError):
    pass


def check_url(url: str) -> None:
    """A one-line reason why ``url`` cannot be a webhook, or nothing."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"{url!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError as exc:
        raise WebhookError(f"{url!r}: {exc}") from exc


# ---- payloads -------------------------------------------------------------------------------

def _short(value: Any) -> str:
    text = terminal(value)  # no newline can forge a second line of the message
    return text if len(text) <= CHAT_VALUE_MAX else text[:CHAT_VALUE_MAX] + "…"


def slack_escape(value: Any) -> str:
    """A log value inside a Slack mrkdwn code span: ``& < >`` as entities (Slack's control
    characters: ``<!channel>``, ``<http://x|text>``), a backtick (which would end the span and let
    ``*_~`` format the rest) as U+02CB."""
    text = _short(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`" + text.replace("`", "\u02cb") + "`"


_MD_SPECIAL = set("\\`*_{}[]()#+-.!|~<>&")


def teams_escape(value: Any) -> str:
    """A log value in an Adaptive Card TextBlock: every Markdown punctuation backslash-escaped,
    so a value cannot make a link, emphasis or a list."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in _short(value))


def _facts(alert: dict[str, Any]) -> list[tuple[str, Any]]:
    facts: list[tuple[str, Any]] = [("Host", alert.get("host")), ("Time", alert.get("timestamp")),
                                    ("Level", alert.get("level")), ("Rule", alert.get("rule_id"))]
    corr = alert.get("correlation")
    if isinstance(corr, dict) and corr.get("group_by"):
        facts.append(("Group", corr.get("group_by")))
    event = alert.get("event") or {}
    if isinstance(event, dict):
        facts += [(k, event[k]) for k in CHAT_FIELDS if event.get(k) not in (None, "")]
    facts.append(("Source", f"{alert.get('source')}:{alert.get('record_id')}"))
    return [(k, v) for k, v in facts if v not in (None, "")]


def payload(alert_id: str, alert: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON body POSTed for one alert in ``fmt`` (json | slack | teams)."""
    if fmt == "json":
        return {"alert_id": alert_id, **{k: v for k, v in alert.items() if k != "alert_id"}}
    title = alert.get("title") or alert.get("rule_id") or "scmwatch alert"
    facts = _facts(alert)
    if fmt == "slack":
        lines = [f"*scmwatch [{_short(alert.get('level', '')).upper()}]* {slack_escape(title)}"]
        lines += [f"• {k}: {slack_escape(v)}" for k, v in facts]
        lines.append(f"• alert id: `{alert_id}`")
        return {"text": "\n".join(lines)}
    body = [{"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": True,
             "text": f"scmwatch [{teams_escape(str(alert.get('level', '')).upper())}] {teams_escape(title)}"},
            {"type": "FactSet", "facts": [{"title": k, "value": teams_escape(v)} for k, v in facts]
             + [{"title": "alert id", "value": alert_id}]}]
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
        "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                    "version": "1.4", "body": body}}]}


# ---- delivery -------------------------------------------------------------------------------

@dataclass(slots=True)
class Pending:
    id: str
    alert: dict[str, Any]
    queued_at: float  # wall clock, persisted: the give-up bound counts across restarts
    attempts: int = 0
    last_error: str = ""


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    dead: int = 0
    attempts_ok: int = 0
    attempts_failed: int = 0
    duplicates: int = 0  # submits of an id already known
    resumed: int = 0  # pending alerts found in the outbox at start


def _outbox_line(p: Pending) -> bytes:
    return json_line({"id": p.id, "queued_at": p.queued_at, "alert": p.alert})


def _append(fd: int, lines: list[bytes], durable: bool = True) -> None:
    view = memoryview(b"".join(lines))
    while view:
        view = view[os.write(fd, view):]
    if durable:
        os.fsync(fd)


def _append_durable(path: str, lines: list[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        _append(fd, lines)
    finally:
        os.close(fd)


def _read_jsonl(path: str, report: Callable[[str], None]) -> list[dict[str, Any]]:
    """The records of one of our own JSONL files. A torn last line (a crash inside a write: that
    alert was never handed over, the watcher replays it) is cut off, so the next append starts
    on a line of its own."""
    try:
        torn = cut_torn_tail(path)
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    if torn:
        report(f"{path}: a last line cut short by a crash removed ({torn} bytes)")
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            report(f"{path}: line {n} unreadable (a write cut short by a crash), skipped")
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            out.append(rec)
    return out


def _write_atomic(path: str, lines: list[bytes]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WebhookDelivery:
    """The outbox, its worker thread and the dead-letter file for one webhook URL."""

    def __init__(self, state_dir: str, url: str, fmt: str = "json", *, give_up_after: float = GIVE_UP_AFTER,
                 timeout: float = TIMEOUT, base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY,
                 report: Callable[[str], None] | None = None, seed: int | None = None) -> None:
        check_url(url)
        if fmt not in FORMATS:
            raise WebhookError(f"unknown webhook format {fmt!r} (one of {', '.join(FORMATS)})")
        self.url = url
        self.fmt = fmt
        self.give_up_after = give_up_after
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.report = report or (lambda msg: print(f"scmwatch: {msg}", file=sys.stderr))
        self.stats = DeliveryStats()
        self._rng = random.Random(seed)
        self.dir = os.path.join(state_dir, "webhook")
        os.makedirs(self.dir, exist_ok=True)
        self.outbox_path = os.path.join(self.dir, "outbox.jsonl")
        self.done_path = os.path.join(self.dir, "done.jsonl")
        self.dead_path = os.path.join(state_dir, "dead-letter.jsonl")
        self._cond = threading.Condition()
        self._queue: deque[Pending] = deque()
        self._pending_ids: set[str] = set()
        self._settled: OrderedDict[str, str] = OrderedDict()  # id -> delivered | dead, last KEEP_IDS
        self._since_compact = 0
        self._stopping = False
        self._conn: http.client.HTTPConnection | None = None
        self._outbox_fd = -1
        self._thread = threading.Thread(target=self._run, name="scmwatch-webhook", daemon=True)
        self._load()

    # -- state --

    def _load(self) -> None:
        for rec in _read_jsonl(self.done_path, self.report):
            self._settled[rec["id"]] = str(rec.get("status", "delivered"))
            self._settled.move_to_end(rec["id"])
        while len(self._settled) > KEEP_IDS:
            self._settled.popitem(last=False)
        for rec in _read_jsonl(self.outbox_path, self.report):
            if rec["id"] in self._settled or rec["id"] in self._pending_ids:
                continue
            queued_at = float(rec.get("queued_at") or time.time())
            self._queue.append(Pending(rec["id"], rec.get("alert") or {}, queued_at))
            self._pending_ids.add(rec["id"])
        self.stats.resumed = len(self._queue)
        self._compact()

    def _compact(self) -> None:
        """Outbox first (pending only), then the settled ids: a crash between the two leaves a
        done file that still knows every id the outbox no longer holds."""
        if self._outbox_fd >= 0:
            os.fsync(self._outbox_fd)
            os.close(self._outbox_fd)
        _write_atomic(self.outbox_path, [_outbox_line(p) for p in self._queue])
        _write_atomic(self.done_path, [json_line({"id": i, "status": s}) for i, s in self._settled.items()])
        self._outbox_fd = os.open(self.outbox_path, os.O_WRONLY | os.O_APPEND, 0o600)
        self._since_compact = 0

    def sync(self) -> None:
        """Make every submitted alert durable (after ``submit_many(..., durable=False)``)."""
        with self._cond:
            os.fsync(self._outbox_fd)

    def known(self, alert_id: str) -> bool:
        """True when ``alert_id`` was submitted before (pending, delivered or dead-lettered)."""
        with self._cond:
            return alert_id in self._pending_ids or alert_id in self._settled

    def delivered_ids(self) -> set[str]:
        with self._cond:
            return {i for i, s in self._settled.items() if s == "delivered"}

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, alert_id: str, alert: dict[str, Any]) -> bool:
        """Hand one alert over (durable on return); False when the id was already known."""
        return self.submit_many([(alert_id, alert)]) == 1

    def submit_many(self, alerts: list[tuple[str, dict[str, Any]]], durable: bool = True) -> int:
        """Hand alerts over (one fsync for all, or none with ``durable=False``: then :meth:`sync`
        makes them durable, and until it has the caller must be able to produce them again);
        returns how many were new."""
        now = time.time()
        with self._cond:
            new = []
            for alert_id, alert in alerts:
                if alert_id in self._pending_ids or alert_id in self._settled:
                    self.stats.duplicates += 1
                    continue
                self._pending_ids.add(alert_id)
                new.append(Pending(alert_id, alert, now))
            if not new:
                return 0
            _append(self._outbox_fd, [_outbox_line(p) for p in new], durable)
            self._queue.extend(new)
            self._cond.notify_all()
        return len(new)

    def _settle(self, p: Pending, status: str, reason: str = "") -> None:
        if status == "dead":
            _append_durable(self.dead_path, [json_line({
                "id": p.id, "reason": reason, "attempts": p.attempts, "url": self.url,
                "queued_at": p.queued_at, "dead_at": time.time(), "alert": p.alert})])
            self.stats.dead += 1
            self.report(f"webhook: alert {terminal(p.id)} dead-lettered after {p.attempts} attempt(s): "
                        f"{terminal(reason)}")
        else:
            self.stats.delivered += 1
        _append_durable(self.done_path, [json_line({"id": p.id, "status": status})])
        with self._cond:
            self._queue.popleft()
            self._pending_ids.discard(p.id)
            self._settled[p.id] = status
            while len(self._settled) > KEEP_IDS:
                self._settled.popitem(last=False)
            self._since_compact += 1
            if self._since_compact >= COMPACT_EVERY:
                self._compact()
            self._cond.notify_all()

    # -- the worker --

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the POST in progress (at most ``timeout`` s more); what is still pending
        stays in the outbox for the next run."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout + self.timeout)
        if self._conn is not None:
            self._conn.close()
        with self._cond:
            if self._outbox_fd >= 0:
                os.fsync(self._outbox_fd)
                os.close(self._outbox_fd)
                self._outbox_fd = -1

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending (tests, graceful shutdown); True when idle."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                p = self._queue[0]
            status, reason, retry_after = self._post(p)
            p.attempts += 1
            if status == "ok":
                self.stats.attempts_ok += 1
                self._settle(p, "delivered")
                continue
            self.stats.attempts_failed += 1
            p.last_error = reason
            age = time.time() - p.queued_at
            if status == "permanent":
                self._settle(p, "dead", reason)
                continue
            if age >= self.give_up_after:
                self._settle(p, "dead", f"receiver not reachable for {age:.0f} s: {reason}")
                continue
            delay = self._rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** min(p.attempts, 30)))
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_delay))
            delay = min(delay, max(0.0, self.give_up_after - age))
            if p.attempts == 1 or p.attempts % 10 == 0:
                self.report(f"webhook: POST failed ({terminal(reason)}); retrying alert {p.id} "
                            f"(attempt {p.attempts + 1} in {delay:.1f} s)")
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, delay):
                    return

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urllib.parse.urlsplit(self.url)
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(parts.hostname, parts.port, timeout=self.timeout)
        return self._conn

    def _post(self, p: Pending) -> tuple[str, str, float | None]:
        """One POST: ("ok" | "transient" | "permanent", reason, Retry-After seconds or None)."""
        parts = urllib.parse.urlsplit(self.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = json_line(payload(p.id, p.alert, self.fmt))
        headers = {"Content-Type": "application/json", "Idempotency-Key": p.id,
                   "User-Agent": "scmwatch-watch"}
        try:
            conn = self._connection()
            conn.request("POST", target, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(1 << 16)
            code = resp.status
            retry_after = resp.getheader("Retry-After")
            if resp.will_close:
                conn.close()
                self._conn = None
        except (OSError, http.client.HTTPException) as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return "transient", f"{type(exc).__name__}: {exc}", None
        if 200 <= code < 300:
            return "ok", "", None
        ra = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        if code in TRANSIENT or code >= 500:
            return "transient", f"HTTP {code}", ra
        return "permanent", f"HTTP {code}", None

    def samples(self) -> list[Sample]:
        st = self.stats
        return [Sample("scmwatch_webhook_queue", self.pending()),
                Sample("scmwatch_webhook_delivered_total", st.delivered),
                Sample("scmwatch_webhook_attempts_total", st.attempts_ok, {"outcome": "ok"}),
                Sample("scmwatch_webhook_attempts_total", st.attempts_failed, {"outcome": "failed"}),
                Sample("scmwatch_webhook_dead_letters_total", st.dead)]


class WebhookTarget:
    """The webhook as one of the watcher's delivery targets (``scmwatch.live.deliver``):
    ``deliver`` writes the alert to the outbox without an fsync, ``sync`` (run before every
    checkpoint) fsyncs it, so an alert the checkpoint counts as delivered is durably queued and
    one it does not count is produced again by the replay and handed over again (a known id is
    ignored). The POSTs run on the delivery thread, never in the watcher's loop."""

    def __init__(self, delivery: WebhookDelivery) -> None:
        self.name = f"webhook:{delivery.url}"
        self.delivery = delivery
        self.count = 0

    def start(self, saved: dict[str, Any] | None) -> set[str]:
        self.delivery.start()
        return set()  # the outbox itself ignores ids it already holds

    def deliver(self, aid: str, alert: Any) -> None:
        if self.delivery.submit_many([(aid, {**alert.to_dict(), "alert_id": aid})], durable=False):
            self.count += 1

    def sync(self) -> dict[str, Any]:
        self.delivery.sync()
        return {"pending": self.delivery.pending()}

    def close(self) -> None:
        self.delivery.close()
