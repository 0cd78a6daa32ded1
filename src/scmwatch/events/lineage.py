"""Process lineage where the log lacks it: fill the parent image of process creations by PID.

Security 4688 before Windows 10 / Server 2016 (event version 0 and 1) has no
``ParentProcessName``; every rule about the parent ("services.exe starts a shell", the MITRE
analytic of T1569.002) is blind on Windows 7 / 2008 R2 logs. The creator's PID is always there
(``ProcessId``), so a per-host table of PID -> image answers the question:

* a process creation (Sysmon 1 ``ProcessId``/``Image``, 4688 ``NewProcessId``/``NewProcessName``)
  teaches that the PID runs that image from the event's time on;
* an event the Service Control Manager writes itself (System 7000-7045 from the provider
  ``Service Control Manager``) carries services.exe's PID as the System ``ProcessID``, so that PID
  is ``C:\\Windows\\System32\\services.exe`` for the whole boot it was seen in;
* a boot (Security 4608, System 6005/6009, Kernel-General 12) ends every PID of that host.

A PID is reused after its process ends, so an entry answers only between its start and the next
process creation for the same PID or the next boot. An SCM fact is valid backwards too (services.exe
runs from boot to shutdown), which is what lets it resolve a 4688 read before the System log.

The table is a bounded LRU of hosts (``max_hosts``) with at most ``max_pids`` entries per host;
each entry is a few dozen bytes, so memory stays flat however long the input.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from scmwatch.events.model import parse_time

SERVICES_EXE = "C:\\Windows\\System32\\services.exe"
SCM_PROVIDER = "service control manager"
# System events written by services.exe itself (their Execution ProcessID is the SCM's PID)
SCM_EVENT_IDS = frozenset({7000, 7001, 7009, 7011, 7022, 7023, 7024, 7026, 7030, 7031, 7032, 7034,
                           7035, 7036, 7040, 7042, 7043, 7045})
BOOT_EVENTS = frozenset({("security", 4608), ("system", 6005), ("system", 6009), ("system", 12)})


class Fact(NamedTuple):
    """One thing learned: on ``host``, ``pid`` ran ``image`` from ``time`` (SCM facts: ``scm``).

    ``time`` is POSIX seconds, or the event's raw ``TimeCreated`` text: parsing every process
    creation's time cost more than the whole lineage otherwise (bench/enrich_cost.py), and only
    the few PIDs ever looked up need it, so the table parses those on demand.
    """

    host: str
    pid: int
    image: str
    time: float | str
    scm: bool = False


def pid_value(value: Any) -> int | None:
    """Sysmon writes decimal PIDs, 4688 hex strings (``0x1f0``); anything else is no PID."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
        except ValueError:
            return None
    return None


@dataclass
class _Host:
    """One host's boots and processes by pid."""

    boots: list[float] = field(default_factory=list)  # sorted boot times
    # pid -> list of (start, image, scm); start may be raw text until the PID is looked up
    pids: OrderedDict = field(default_factory=OrderedDict)


class LineageTable:
    """Per-host PID -> image over time; answers "which image had PID p on host h at time t".

    ``parse`` turns a raw time text into POSIX seconds (0.0 when it cannot).
    """

    def __init__(self, max_hosts: int = 4096, max_pids: int = 65536,
                 parse: Callable[[Any], float] = parse_time) -> None:
        self.max_hosts = max_hosts
        self.max_pids = max_pids
        self.parse = parse
        self._hosts: OrderedDict[str, _Host] = OrderedDict()

    def _get(self, host: str) -> _Host:
        h = self._hosts.get(host)
        if h is None:
            h = self._hosts[host] = _Host()
            if len(self._hosts) > self.max_hosts:
                self._hosts.popitem(last=False)
        else:
            self._hosts.move_to_end(host)
        return h

    def add(self, fact: Fact) -> None:
        self.add_use(*fact)

    def add_use(self, host: str, pid: int, image: str, time: float | str, scm: bool = False) -> None:
        """:meth:`add` of a fact given by its parts: every process creation adds one, and building
        the Fact and a call to ``_get`` per event took its enrichment from 1.15-1.17 to 1.55-1.78 us
        (the attack corpus' 1,543 enriched events, 1,491 of them Sysmon process creations,
        minimum of 30 passes, three interleaved runs)."""
        hosts = self._hosts
        h = hosts.get(host)
        if h is None:
            h = self._get(host)
        else:
            hosts.move_to_end(host)
        pids = h.pids
        entries = pids.get(pid)
        if entries is None:
            entries = pids[pid] = []
            if len(pids) > self.max_pids:
                pids.popitem(last=False)
        entries.append((time, image, scm))
        if len(entries) > 8:  # a PID is reused rarely enough that the last few uses suffice
            del entries[:-8]

    def _entries(self, h: _Host, pid: int) -> list[tuple[float, str, bool]]:
        """The PID's uses with parsed times, sorted (parsed once, when first looked up)."""
        entries = h.pids.get(pid)
        if not entries:
            return []
        if any(type(e[0]) is not float for e in entries):
            parse = self.parse
            entries[:] = sorted({(e[0] if type(e[0]) is float else parse(e[0]), e[1], e[2]) for e in entries})
        return entries

    def add_boot(self, host: str, time: float) -> None:
        boots = self._get(host).boots
        i = bisect_right(boots, time)
        if not (i and boots[i - 1] == time):
            boots.insert(i, time)
            del boots[:-64]

    def image(self, host: str, pid: int, time: float) -> str | None:
        """The image PID ``pid`` had on ``host`` at ``time``, or None when unknown."""
        h = self._hosts.get(host)
        if h is None or not time:
            return None
        entries = self._entries(h, pid)
        if not entries:
            return None
        boot_before = _last_le(h.boots, time)
        i = bisect_right(entries, (time, "\uffff"))
        if i:  # the newest use of the PID that started at or before the event
            start, image, scm = entries[i - 1]
            if boot_before is None or start >= boot_before:
                return image
        # an SCM fact seen after the event still holds if no boot lies between (services.exe
        # runs for the whole boot) and no other process took the PID in between
        if i < len(entries):
            start, image, scm = entries[i]
            if scm and not _boot_between(h.boots, time, start):
                return image
        return None


def _last_le(sorted_times: list[float], t: float) -> float | None:
    i = bisect_right(sorted_times, t)
    return sorted_times[i - 1] if i else None


def _boot_between(boots: list[float], a: float, b: float) -> bool:
    i = bisect_right(boots, a)
    return i < len(boots) and boots[i] <= b
