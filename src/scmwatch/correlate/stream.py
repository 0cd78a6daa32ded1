"""Time ordering for the correlator: candidates and the reorder buffer.

The correlator only sees *candidates*: events that matched a rule some correlation references,
plus compact link facts (see :mod:`scmwatch.correlate.links`). Each input file yields its
candidates in record order, which is close to -- but not exactly -- time order (writers buffer,
clocks step). The hunt k-way merges the per-unit streams by :meth:`Candidate.sort_key` (as
spill records, :meth:`Candidate.to_record`) and :class:`ReorderBuffer` repairs the residual
disorder: it holds candidates until the newest time seen is ``lateness`` past them and releases
them in ``(time, unit, position)`` order. A candidate older than what was already released is
*late*: it is counted (and a few are kept as examples for the summary) but not correlated,
because the windows it belonged to may already have been decided.

The sort key includes ``(unit index, position)`` so that a run with ``--jobs N`` (workers
return per-unit candidate lists) releases exactly the same sequence as ``--jobs 1``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from scmwatch.events.model import Event, parse_time


@dataclass(slots=True)
class Candidate:
    """One correlator input: a matched event and/or a link fact, with its ordering key."""

    time_us: int  # event time, integer microseconds (exact window edges)
    file_index: int
    position: int  # index of the event within its file
    event: Event | None
    keys: tuple[str, ...]  # rule_key of every matched rule that some correlation references
    fact: tuple | None = None  # entity-link fact (links.extract_fact)

    def sort_key(self) -> tuple[int, int, int]:
        return (self.time_us, self.file_index, self.position)

    def __lt__(self, other: Candidate) -> bool:  # heap ordering
        return self.sort_key() < other.sort_key()

    def to_record(self) -> tuple:
        """A plain tuple for spill files (``scmwatch.spill``): cheaper to pickle than the object."""
        ev = self.event
        if ev is None:
            return (self.time_us, self.file_index, self.position, self.keys, self.fact, None)
        return (self.time_us, self.file_index, self.position, self.keys, self.fact,
                ev.fields, ev.source, ev.record_id, ev.fmt, ev._epoch)

    @staticmethod
    def from_record(rec: tuple) -> Candidate:
        if rec[5] is None:
            return Candidate(rec[0], rec[1], rec[2], None, rec[3], rec[4])
        ev = Event(rec[5], rec[6], rec[7], rec[8], rec[9])
        return Candidate(rec[0], rec[1], rec[2], ev, rec[3], rec[4])


def time_us(event: Event) -> int:
    """Event time in integer microseconds; 0 when the record has no usable time.

    The readers' canonical ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` is parsed by integer arithmetic
    (exact, and several times faster than ``datetime``); the event's cached epoch is set so later
    users of ``event.time`` agree. Anything else goes through ``Event.time``.
    """
    if event._epoch is None:
        text = event.fields.get("TimeCreated")
        if type(text) is str:
            us = _fast_us(text)
            if us is not None:
                event._epoch = us / 1_000_000
                return us
    return int(round(event.time * 1_000_000))


def when_us(when: str | int) -> int:
    """:func:`time_us` of an event from what a range kept of it (``LinkEvents.when``): its time
    in us, or its ``TimeCreated`` text when it had no time parsed yet (same arithmetic)."""
    if when.__class__ is int:
        return when  # type: ignore[return-value]
    us = _fast_us(when)  # type: ignore[arg-type]
    return us if us is not None else int(round(parse_time(when) * 1_000_000))


def _fast_us(s: str) -> int | None:
    n = len(s)
    if n < 20 or s[-1] != "Z" or s[16] != ":":
        return None
    hour = _HOURS.get(s[:14], _HOURS)
    if hour is _HOURS:
        hour = _hour_us(s[:14])
    if hour is None:
        return None
    try:
        mi, sec = int(s[14:16]), int(s[17:19])
        if n == 20:
            us = 0
        elif s[19] == "." and n > 21:
            us = int((s[20:-1] + "00000")[:6])
        else:
            return None
    except ValueError:
        return None
    if not (mi < 60 and sec < 61):
        return None
    return hour + (mi * 60 + sec) * 1_000_000 + us


# ``YYYY-MM-DDTHH:`` -> its microseconds since the epoch (None: not a valid prefix). Events
# of a log share few hours, and the calendar arithmetic was most of time_us (51,385 calls per
# 41 MB range of NDJSON, ~7 us each).
_HOURS: dict[str, int | None] = {}


def _hour_us(prefix: str) -> int | None:
    if len(_HOURS) >= 4096:
        _HOURS.clear()
    out = None
    if prefix[4] == "-" and prefix[7] == "-" and prefix[10] == "T" and prefix[13] == ":":
        try:
            y, mo, d, h = int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]), int(prefix[11:13])
        except ValueError:
            y = mo = 0
        if 1 <= mo <= 12 and 1 <= d <= 31 and h < 24:
            # days from civil (H. Hinnant), proleptic Gregorian, 1970-01-01 = 0
            yy = y - (mo <= 2)
            era = yy // 400
            yoe = yy - era * 400
            doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
            doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
            days = era * 146097 + doe - 719468
            out = (days * 86400 + h * 3600) * 1_000_000
    _HOURS[prefix] = out
    return out


# Most candidates (each with its event) the reorder buffer holds. The hunt feeds it a k-way
# merge by time of per-file streams, so it only repairs disorder inside files: 160 held at
# most on the bundled demo. Without a cap it held every candidate within --lateness of the
# newest: 1,000,000 (2.1 GB) for a million events crammed into a few minutes.
MAX_HELD = 50_000


class ReorderBuffer:
    """Bounded-lateness reordering: push in any order, pop in time order.

    Holds the candidates within ``lateness`` of the newest one, but never more than
    ``max_held``: beyond that the oldest is released early and counted (``overflow``), so
    memory is bounded whatever the input. An early release only matters if a candidate older
    than it arrives later: that one is then *late* (counted, with examples), as with lateness.
    """

    def __init__(self, lateness: float = 300.0, max_examples: int = 20, max_held: int = MAX_HELD) -> None:
        self.lateness_us = int(lateness * 1_000_000)
        self.max_held = max(1, max_held)
        self.overflow = 0
        self._heap: list[tuple] = []
        self._n = 0
        self._newest = None  # newest time pushed
        self._released: tuple[int, int, int] | None = None
        self.late = 0
        self.late_examples: list[dict[str, Any]] = []
        self.max_examples = max_examples
        self.peak = 0

    def push(self, cand: Candidate) -> list[Candidate]:
        """Add one candidate; returns the candidates that are now safe to process (time order)."""
        if self._released is not None and cand.sort_key() < self._released:
            self.late += 1
            if len(self.late_examples) < self.max_examples and cand.event is not None:
                self.late_examples.append(
                    {
                        "source": cand.event.source,
                        "record_id": cand.event.record_id,
                        "behind_seconds": round((self._newest - cand.time_us) / 1e6, 6),
                    }
                )
            return []
        heap = self._heap
        self._n += 1
        # plain tuples: comparing ints is much cheaper than calling __lt__ on dataclasses
        heapq.heappush(heap, (cand.time_us, cand.file_index, cand.position, self._n, cand))
        if len(heap) > self.peak:
            self.peak = min(len(heap), self.max_held)  # one over the cap is released at once
        if self._newest is None or cand.time_us > self._newest:
            self._newest = cand.time_us
        horizon = self._newest - self.lateness_us
        if heap[0][0] > horizon and len(heap) <= self.max_held:
            return []
        out = []
        while heap and heap[0][0] <= horizon:
            item = heapq.heappop(heap)
            self._released = item[:3]
            out.append(item[4])
        if len(heap) > self.max_held:  # full: the oldest goes now, whatever its time
            item = heapq.heappop(heap)
            self._released = item[:3]
            out.append(item[4])
            self.overflow += 1
        return out

    def drain(self) -> Iterator[Candidate]:
        """End of input: release everything still held."""
        heap = self._heap
        while heap:
            item = heapq.heappop(heap)
            self._released = item[:3]
            yield item[4]

    def __len__(self) -> int:
        return len(self._heap)
