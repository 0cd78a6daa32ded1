"""Time ordering for the correlator: candidates, the per-file merge and the reorder buffer.

The correlator only sees *candidates*: events that matched a rule some correlation references,
plus compact link facts (see :mod:`scmwatch.correlate.links`). Each input file yields its
candidates in record order, which is close to -- but not exactly -- time order (writers buffer,
clocks step). :func:`merge_by_time` merges the per-file streams with ``heapq.merge`` and
:class:`ReorderBuffer` repairs the residual disorder: it holds candidates until the newest time
seen is ``lateness`` past them and releases them in ``(time, file, position)`` order. A
candidate older than what was already released is *late*: it is counted (and a few are kept as
examples for the summary) but not correlated, because the windows it belonged to may already
have been decided.

The sort key includes ``(file index, position)`` so that a run with ``--jobs N`` (workers
return per-file candidate lists) releases exactly the same sequence as ``--jobs 1``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from scmwatch.events.model import Event


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


def time_us(event: Event) -> int:
    """Event time in integer microseconds; 0 when the record has no usable time."""
    return int(round(event.time * 1_000_000))


def merge_by_time(streams: Iterable[Iterable[Candidate]]) -> Iterator[Candidate]:
    """Merge per-file candidate streams by ``(time, file, position)``."""
    return heapq.merge(*streams, key=Candidate.sort_key)


class ReorderBuffer:
    """Bounded-lateness reordering: push in any order, pop in time order.

    Memory is bounded by the number of candidates within ``lateness`` of the newest one.
    """

    def __init__(self, lateness: float = 300.0, max_examples: int = 20) -> None:
        self.lateness_us = int(lateness * 1_000_000)
        self._heap: list[tuple] = []
        self._n = 0
        self._newest = None  # newest time pushed
        self._released: tuple[int, int, int] | None = None
        self.late = 0
        self.late_examples: list[dict[str, Any]] = []
        self.max_examples = max_examples
        self.peak = 0

    def push(self, cand: Candidate) -> Iterator[Candidate]:
        """Add one candidate; yields the candidates that are now safe to process."""
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
            return
        heap = self._heap
        self._n += 1
        # plain tuples: comparing ints is much cheaper than calling __lt__ on dataclasses
        heapq.heappush(heap, (cand.time_us, cand.file_index, cand.position, self._n, cand))
        if len(heap) > self.peak:
            self.peak = len(heap)
        if self._newest is None or cand.time_us > self._newest:
            self._newest = cand.time_us
        horizon = self._newest - self.lateness_us
        while heap and heap[0][0] <= horizon:
            item = heapq.heappop(heap)
            self._released = item[:3]
            yield item[4]

    def drain(self) -> Iterator[Candidate]:
        """End of input: release everything still held."""
        heap = self._heap
        while heap:
            item = heapq.heappop(heap)
            self._released = item[:3]
            yield item[4]

    def __len__(self) -> int:
        return len(self._heap)
