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
from typing import Any

from scmwatch.events.lineage import (
    BOOT_EVENTS,
    SCM_EVENT_IDS,
    SERVICES_EXE,
    Fact,
    LineageTable,
    facts_of,
    missing_parent,
)
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
PROCESS_CREATIONS = frozenset({("security", 4688), ("microsoft-windows-sysmon/operational", 1)})
# (channel, EventID) pairs the enricher reads: the read gate must not skip them
WANTED = (frozenset(SERVICE_NAME_FIELDS) | PROCESS_CREATIONS | BOOT_EVENTS
          | {("system", eid) for eid in SCM_EVENT_IDS})
MAX_FACTS = 100_000  # SCM PIDs and boots one unit hands to the merge (a few per host and boot)


@dataclass
class LineageFacts:
    """What a unit learned that other units may need: the SCM's PIDs and the boots, per host."""

    scm: set[tuple[str, int, float]] = field(default_factory=set)  # (host, pid, a time it was seen)
    boots: set[tuple[str, float]] = field(default_factory=set)
    dropped: int = 0


def wants(channel: Any, event_id: Any) -> bool:
    """Does the enricher read events of this (Channel, EventID) pair?"""
    return (str(channel or "").lower(), event_id) in WANTED


class Enricher:
    """Per-unit enrichment state; one per :func:`scmwatch.hunt.hunt_unit` call."""

    def __init__(self) -> None:
        self.table = LineageTable()
        self.facts = LineageFacts()
        self._scm_seen: dict[tuple[str, int], float] = {}

    def enrich(self, fields: dict[str, Any], time: float) -> tuple[tuple[str, ...], str | None]:
        """Add derived fields to ``fields``; returns (derived names, parent field left unresolved).

        The second value names the parent field of a process creation whose creator PID this
        unit could not resolve (the caller may defer it to the merge step), else None.
        """
        key = (str(fields.get("Channel") or "").lower(), fields.get("EventID"))
        derived: tuple[str, ...] = ()
        pending = None
        name_field = SERVICE_NAME_FIELDS.get(key)
        if name_field is not None:
            name = fields.get(name_field)
            if looks_random(name):
                fields[RANDOM_NAME] = name
                derived = (RANDOM_NAME,)
        if key in PROCESS_CREATIONS:
            need = missing_parent(fields)
            if need is not None:
                host, pid, parent_field = need
                image = self.table.image(host, pid, time)
                if image is not None:
                    fields[parent_field] = image
                    derived += (parent_field,)
                else:
                    pending = parent_field
        self._learn(fields, time)
        return derived, pending

    def _learn(self, fields: dict[str, Any], time: float) -> None:
        facts, boot = facts_of(fields, time)
        host = fields.get("Computer")
        if boot and isinstance(host, str):
            self.table.add_boot(host.lower(), time)
            self._keep(self.facts.boots, (host.lower(), time))
        for f in facts:
            self.table.add(f)
            if f.scm:
                # one fact per (host, pid) and hour is enough to place it between boots
                last = self._scm_seen.get((f.host, f.pid))
                if last is None or abs(f.time - last) >= 3600:
                    self._scm_seen[(f.host, f.pid)] = f.time
                    self._keep(self.facts.scm, (f.host, f.pid, f.time))

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
