"""The alert: what every detection produces and every sink writes.

The JSON form (``Alert.to_dict``) is the machine-readable contract (its keys are listed in
docs/architecture.md); tools and benchmarks depend on them, so change it only deliberately.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from scmwatch.events.model import Event, format_time

LEVELS = ("informational", "low", "medium", "high", "critical")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}


def event_dict(event: Event) -> dict[str, Any]:
    """An event as it appears inside an alert: its fields plus where it came from.

    Provenance never overwrites a field: an event that has its own ``source`` (Zeek's
    ``files.log`` column) or ``record_id`` keeps it, and provenance goes under ``_source`` /
    ``_record_id`` instead.
    """
    out = dict(event.fields)
    out["_source" if "source" in out else "source"] = event.source
    out["_record_id" if "record_id" in out else "record_id"] = event.record_id
    return out


def alert_sort_key(a: Alert) -> tuple:
    """The order alerts are reported in: (time, source, record id or -1, rule id)."""
    return (a.time, a.event.source, a.event.record_id if a.event.record_id is not None else -1, a.rule_id)


class Repeat(NamedTuple):
    """``hunt --dedup``: how many alerts one row stands for, and their first and last time."""

    count: int
    first: float
    last: float


@dataclass(slots=True)
class Alert:
    """One alert: a rule's match on one event, or a correlation's on several."""

    rule_id: str
    title: str
    level: str
    description: str
    tags: list[str]
    event: Event  # the matching event (for correlations: the last one)
    events: list[Event] | None = None  # correlations only, time ordered
    correlation: dict[str, Any] | None = None  # correlations only: type, group_by, window
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. maxpatrol_rule, rule path
    repeat: Repeat | None = None  # --dedup: the alerts this row stands for (scmwatch.dedup)

    @property
    def time(self) -> float:
        return self.event.time

    @property
    def host(self) -> str:
        return str(self.event.fields.get("Computer") or "")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule_id": self.rule_id,
            "title": self.title,
            "level": self.level,
            "description": self.description,
            "tags": list(self.tags),
            "timestamp": format_time(self.event.time) if self.event.time else None,
            "host": self.host,
            "source": self.event.source,
            "record_id": self.event.record_id,
            "event": dict(self.event.fields),
        }
        if self.events is not None:
            out["events"] = [event_dict(e) for e in self.events]
        if self.correlation is not None:
            out["correlation"] = self.correlation
        if self.repeat is not None:
            out["count"] = self.repeat.count
            out["first_timestamp"] = format_time(self.repeat.first) if self.repeat.first else None
            out["last_timestamp"] = format_time(self.repeat.last) if self.repeat.last else None
        if self.extra:
            out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


class HitLine(NamedTuple):
    """A single-event alert already written as its ``--format jsonl`` line (``Alert.to_dict``'s
    JSON, :class:`scmwatch.sinks.jsonl.HitLines`), with what the run's counts and results
    summary read of it: what hunt streams instead of an :class:`Alert` when its sink takes lines."""

    line: bytes
    rule_id: str
    title: str
    level: str
    tags: list[str]
    time: float
    host: str
    source: str
    links: tuple | None  # the lateral links its event shows (correlate.lateral.Link), when any


def evidence_of(alert: Alert) -> list[Event]:
    """The events an alert rests on: every contributing event for a correlation, else its one."""
    return list(alert.events) if alert.events else [alert.event]


def alert_id(alert: Alert, evidence: list[Event], identity: Callable[[str], str]) -> str:
    """``sha256(rule id, (content identity of the source, record id) per evidence event)``."""
    h = hashlib.sha256(alert.rule_id.encode("utf-8", "surrogatepass"))
    for ev in evidence:
        rid = ev.record_id
        h.update(b"\x00")
        h.update(identity(ev.source).encode("utf-8", "surrogatepass"))
        h.update(b"#" + str(rid if rid is not None else ev.fields.get("TimeCreated")).encode(
            "utf-8", "surrogatepass"))
    return h.hexdigest()[:32]
