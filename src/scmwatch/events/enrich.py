"""Enrichment between reading and matching: fields a rule needs that the log does not carry.

Two enrichments, both marked as *derived* in the alerts they lead to (``"derived": [...]``), so
an analyst knows the value was inferred, not logged:

* **Process lineage** (:mod:`scmwatch.events.lineage`): a process creation without its parent
  image (Security 4688 before Windows 10 / 2016) gets ``ParentProcessName`` (``ParentImage`` for
  Sysmon 1) from the per-host PID table. What one unit of input cannot resolve is handed to the
  merge step, which knows the Service Control Manager's PIDs from every unit
  (:class:`Deferred`, :class:`LineageFacts`), so the answer does not depend on file order or
  on ``--jobs``.
* **Random service names** (:mod:`scmwatch.events.names`): installs and SCM start failures of a
  service whose name looks machine-generated get ``derived.random_service_name`` (the name), for
  rules about throw-away services of Metasploit-style tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from scmwatch.events.lineage import (
    BOOT_EVENTS,
    SCM_EVENT_IDS,
    SCM_PROVIDER,
    SERVICES_EXE,
    Fact,
    LineageTable,
    pid_value,
)
from scmwatch.events.model import Event
from scmwatch.events.names import looks_random

RANDOM_NAME = "derived.random_service_name"
# where each event keeps the service's name: (channel, EventID) -> field
SERVICE_NAME_FIELDS = {
    ("system", 7045): "ServiceName",
    ("security", 4697): "ServiceName",
    ("system", 7000): "param1",
    ("system", 7009): "param2",
    ("system", 7011): "param2",
    ("system", 7034): "param1",
}
MAX_FACTS = 100_000  # SCM PIDs and boots one unit hands to the merge (a few per host and boot)

# What the enricher does with an event, by its (Channel, EventID) pair: a bit mask, computed once
# per pair (classify) so the per-event path does no string work. NAME: check the service name;
# SYSMON1 / SEC4688: a process creation; SCM: maybe written by services.exe; BOOT: a boot.
NAME, SYSMON1, SEC4688, SCM, BOOT = 1, 2, 4, 8, 16
TIMED = SYSMON1 | SEC4688 | SCM | BOOT  # kinds that need the event time
# process creations: (pid, image, creator pid, parent image) field names
PROCESS_FIELDS = {
    SEC4688: ("NewProcessId", "NewProcessName", "ProcessId", "ParentProcessName"),
    SYSMON1: ("ProcessId", "Image", "ParentProcessId", "ParentImage"),
}


def classify(channel: Any, event_id: Any) -> int:
    """The enrichment kind of a (Channel, EventID) pair (0: the enricher ignores it)."""
    key = (str(channel or "").lower(), event_id)
    kind = NAME if key in SERVICE_NAME_FIELDS else 0
    if key == ("microsoft-windows-sysmon/operational", 1):
        kind |= SYSMON1
    elif key == ("security", 4688):
        kind |= SEC4688
    if key[0] == "system" and event_id in SCM_EVENT_IDS:
        kind |= SCM
    if key in BOOT_EVENTS:
        kind |= BOOT
    return kind


class Pending(NamedTuple):
    """A process creation whose parent the unit could not tell: which field, host and PID."""

    parent_field: str
    host: str
    pid: int


@dataclass
class LineageFacts:
    """What a unit learned that other units may need: the SCM's PIDs and the boots, per host."""

    scm: set[tuple[str, int, float]] = field(default_factory=set)  # (host, pid, a time it was seen)
    boots: set[tuple[str, float]] = field(default_factory=set)
    dropped: int = 0


class Enricher:
    """Per-unit enrichment state; one per :func:`scmwatch.hunt.hunt_unit` call.

    Measured on the shared corpus x20 with the built-in pack (bench/enrich_cost.py): 1.036 x the
    hunt without enrichment. What keeps it there: kinds computed once per (Channel, EventID),
    process-creation times kept as text until a PID is looked up, and SCM facts taken at the first
    and every 64th sighting; the first version parsed every time it saw and cost 1.17 x.
    """

    def __init__(self) -> None:
        self.table = LineageTable()
        self.facts = LineageFacts()
        self._scm_seen: dict[tuple[str, int], int] = {}
        self.lookups = 0  # parents looked up in this unit's table (a split file's range needs none)

    def enrich(self, ev: Event, kind: int) -> tuple[tuple[str, ...], Pending | None]:
        """Add derived fields to ``ev.fields``; returns (derived names, unresolved parent).

        ``kind`` is :func:`classify` of the event's pair. The second value is set for a process
        creation whose creator PID this unit could not resolve (the caller may defer it to the
        merge step). The event time is parsed only when a lookup or a rare fact needs it.
        """
        fields = ev.fields
        derived: tuple[str, ...] = ()
        pending = None
        if kind & NAME:
            key = (str(fields.get("Channel") or "").lower(), fields.get("EventID"))
            name = fields.get(SERVICE_NAME_FIELDS[key])
            if looks_random(name):
                fields[RANDOM_NAME] = name
                derived = (RANDOM_NAME,)
        if not kind & TIMED:
            return derived, None
        host = fields.get("Computer")
        if not isinstance(host, str) or not host:
            return derived, None
        host = host.lower()
        table = self.table
        if kind & (SYSMON1 | SEC4688):
            pid_f, image_f, creator_f, parent_f = PROCESS_FIELDS[kind & (SYSMON1 | SEC4688)]
            get = fields.get
            if get(parent_f) in (None, "", "-"):
                creator = pid_value(get(creator_f))
                if creator is not None and ev.time:
                    self.lookups += 1
                    image = table.image(host, creator, ev.time)
                    if image is not None:
                        fields[parent_f] = image
                        derived += (parent_f,)
                    else:
                        pending = Pending(parent_f, host, creator)
            pid, image = pid_value(get(pid_f)), get(image_f)
            start = get("TimeCreated")
            if pid is not None and isinstance(image, str) and start:
                table.add_use(host, pid, image, ev._epoch if ev._epoch is not None else start)
        elif kind & SCM:
            if str(fields.get("Provider_Name") or "").lower() == SCM_PROVIDER:
                pid = pid_value(fields.get("ProcessID"))
                seen = self._scm_seen.get((host, pid), 0) if pid else -1
                if seen >= 0:
                    # the first sighting of a (host, pid) and every 64th: enough to place it
                    # between boots, without parsing the time of every SCM event
                    self._scm_seen[(host, pid)] = seen + 1
                    if seen % 64 == 0 and ev.time:
                        table.add(Fact(host, pid, SERVICES_EXE, ev.time, scm=True))
                        self._keep(self.facts.scm, (host, pid, ev.time))
        elif kind & BOOT and ev.time:
            table.add_boot(host, ev.time)
            self._keep(self.facts.boots, (host, ev.time))
        return derived, pending

    def _keep(self, bucket: set, item: tuple) -> None:
        if len(self.facts.scm) + len(self.facts.boots) < MAX_FACTS:
            bucket.add(item)
        else:
            self.facts.dropped += 1


def global_table(all_facts: list[LineageFacts]) -> LineageTable:
    """The merge step's view: every unit's SCM PIDs and boots in one table."""
    table = LineageTable(max_pids=1 << 20)
    for facts in all_facts:
        for host, t in facts.boots:
            table.add_boot(host, t)
        for host, pid, t in facts.scm:
            table.add(Fact(host, pid, SERVICES_EXE, t, scm=True))
    return table
