"""Alert delivery: where a watcher's alerts go, each exactly once across crashes.

A **delivery target** has four methods (:class:`DeliveryTarget`):

* ``start(saved) -> set[str]``: resume. ``saved`` is what its ``sync`` returned at the last
  checkpoint (None on the first run); it returns the ids of alerts it already holds that the
  checkpoint does not know about -- delivered after the checkpoint, before a crash. The JSONL
  file reads them back from the part of the file past the checkpointed size (and cuts a line
  a crash left half-written); the case has them as committed rows.
* ``deliver(alert_id, alert)``: one new alert with its stable id (the same alert replayed after
  a restart has the same id; :func:`scmwatch.alerts.alert_id`).
* ``sync() -> dict``: make everything delivered so far durable (flush + fsync, commit) and
  return the JSON-able state the next checkpoint stores for this target. Called before every
  checkpoint is written.
* ``close()``.

:class:`Deliveries` fans each alert out to every target, skipping per target the ids that
target reported in ``start`` and, for all targets, the ids the checkpoint records as delivered
(recent ones, pruned by event time). A target that delivers asynchronously (a webhook with
retries and a dead-letter file) keeps its queue in the state ``sync`` returns.
"""

from __future__ import annotations

import os
from typing import IO, Any, Protocol

import orjson

from scmwatch.alerts import Alert
from scmwatch.sinks.jsonl import json_line

# Alert ids the checkpoint remembers as delivered, at most (the oldest by event time go first).
MAX_DELIVERED = 100_000


class DeliveryTarget(Protocol):
    name: str

    def start(self, saved: dict[str, Any] | None) -> set[str]: ...

    def deliver(self, aid: str, alert: Alert) -> None: ...

    def sync(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def alert_line(aid: str, alert: Alert) -> bytes:
    """The JSONL form of a watched alert: the hunt contract plus its ``alert_id``."""
    out = alert.to_dict()
    out["alert_id"] = aid
    return json_line(out)


class JsonlFile:
    """Appends alerts to a JSONL file; recovers what it wrote after the last checkpoint."""

    def __init__(self, path: str) -> None:
        self.name = f"jsonl:{path}"
        self.path = path
        self.fd = -1
        self.count = 0
        self.notes: list[str] = []

    def start(self, saved: dict[str, Any] | None) -> set[str]:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self.fd).st_size
        since = int(saved.get("size", 0)) if saved else size
        if size < since:
            self.notes.append(f"{self.path}: shorter than at the last checkpoint (truncated by someone?): "
                              "appending")
            return set()
        ids: set[str] = set()
        with open(self.path, "rb") as fh:
            fh.seek(since)
            tail = fh.read()
        cut = tail.rfind(b"\n") + 1
        if cut < len(tail):  # a line a crash left half-written: it is delivered again, whole
            os.truncate(self.path, since + cut)
        for line in tail[:cut].splitlines():
            try:
                aid = orjson.loads(line).get("alert_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(aid, str):
                ids.add(aid)
        return ids

    def deliver(self, aid: str, alert: Alert) -> None:
        data = memoryview(alert_line(aid, alert))
        while data:  # O_APPEND: each write lands at the end, whoever else appends
            data = data[os.write(self.fd, data):]
        self.count += 1

    def sync(self) -> dict[str, Any]:
        os.fsync(self.fd)
        return {"size": os.fstat(self.fd).st_size}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StreamOutput:
    """Alerts as JSONL on a stream (stdout): cannot be read back, so a restart after a crash
    may repeat the alerts of the last checkpoint interval here (at-least-once)."""

    def __init__(self, stream: IO[Any]) -> None:
        self.name = "stdout"
        self.stream = stream
        self.count = 0

    def start(self, saved: dict[str, Any] | None) -> set[str]:
        return set()

    def deliver(self, aid: str, alert: Alert) -> None:
        buf = getattr(self.stream, "buffer", None)
        line = alert_line(aid, alert)
        if buf is not None:
            buf.write(line)
            buf.flush()
        else:
            self.stream.write(line.decode("utf-8"))
            self.stream.flush()
        self.count += 1

    def sync(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.stream.flush()


class CaseStore:
    """Alerts into a case file (``--case``): committed at every checkpoint; the case's unique
    alert ids make a replayed alert add nothing."""

    def __init__(self, writer: Any) -> None:
        self.name = f"case:{writer.path}"
        self.writer = writer

    def start(self, saved: dict[str, Any] | None) -> set[str]:
        return set()  # the writer itself skips the ids the case already holds

    def deliver(self, aid: str, alert: Alert) -> None:
        self.writer.write(alert, aid)

    def sync(self) -> dict[str, Any]:
        self.writer.commit()
        return {"run_id": self.writer.run_id}

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self.writer.close(summary)


class Deliveries:
    """Every target of one watch, and the ids already delivered."""

    def __init__(self, targets: list[DeliveryTarget]) -> None:
        self.targets = targets
        self.delivered: dict[str, float] = {}  # alert id -> alert time (checkpointed, pruned)
        # target name -> ids it holds that ``delivered`` does not (yet): reported by its start()
        # after a crash; each is dropped when the replay produces that alert again
        self.have: dict[str, set[str]] = {}
        self.duplicates = 0  # alerts produced again (replay after a restart) and not re-sent
        self.count = 0

    def start(self, saved: dict[str, Any] | None) -> None:
        saved = saved or {}
        self.delivered = dict(saved.get("delivered", {}))
        states = saved.get("targets", {})
        have = saved.get("have", {})
        for t in self.targets:
            self.have[t.name] = set(have.get(t.name, ())) | t.start(states.get(t.name))

    def emit(self, aid: str, alert: Alert) -> bool:
        """Deliver one alert to every target that does not have it; False if all had it."""
        if aid in self.delivered:
            self.duplicates += 1
            return False
        new = False
        for t in self.targets:
            held = self.have[t.name]
            if aid in held:
                held.discard(aid)
                continue
            t.deliver(aid, alert)
            new = True
        self.delivered[aid] = alert.time
        if new:
            self.count += 1
        else:
            self.duplicates += 1
        return new

    def sync(self, horizon: float) -> dict[str, Any]:
        """Make every target durable; the state the checkpoint stores. Ids of alerts older than
        ``horizon`` (event time) are forgotten: no replay can produce them again."""
        states = {t.name: t.sync() for t in self.targets}
        if len(self.delivered) > MAX_DELIVERED or horizon > 0:
            keep = sorted(((t, a) for a, t in self.delivered.items() if t >= horizon), reverse=True)
            self.delivered = {a: t for t, a in keep[:MAX_DELIVERED]}
        have = {name: sorted(ids)[:MAX_DELIVERED] for name, ids in self.have.items() if ids}
        return {"delivered": dict(self.delivered), "have": have, "targets": states}

    def close(self) -> None:
        for t in self.targets:
            t.close()
