"""Correlation partitioned by group-by key: many correlators, the alerts of one.

One correlator over every candidate of a hunt is serial work in one process (the client of a
cluster hunt): measured, it saturates at 8-9 workers (README, "Run on a cluster"). A
correlation's state is per ``(correlation, group)``, so the candidates can be cut into ``P``
partitions and correlated by ``P`` correlators in parallel -- the same :class:`Correlator` code,
each owning the groups hashed to it -- and the alerts merged by time.

What can be cut where (:class:`Plan`):

* **By group key** (``keyed``): a correlation that no other correlation references and that
  references only rules, whose group-by (and value) fields come from the event itself --
  its own fields or ``link.host`` / ``link.service`` / ``link.target_dir``. Its group key is
  computed where the event was matched, and ``hash(correlation, key) % P`` names the partition.
* **Whole, by family** (``home``): a correlation whose group-by needs the entity links learned
  from *all* events (``link.source_ip``, ``link.source_host``, ``link.target_host``: sessions and
  address -> name maps that cross hosts and files), and every correlation of a chain (the
  outer one's groups are fed by the inner one's alerts). Such a family runs whole in one
  partition, ``hash(family) % P``: families spread over the partitions, the groups of one do
  not. The link facts go (broadcast) to exactly the partitions of families that need them.

Why the alerts equal one correlator's: every partition sees its candidates in the same
``(time, unit, position)`` order (the reorder buffer releases that order whatever the merge),
the facts it needs in full, and a group's life does not depend on when sweeps run
(``Correlator._add`` decides an idle group on arrival).

*Late* candidates (older than what the reorder buffer already released) would be judged by a
partition against its own newest candidate, not the newest of all. So the runner asks first
whether any candidate can be late at all (:func:`late_possible`): every stream is a file's
candidates in file order, and the k-way merge puts a candidate ``c`` after only records whose key
is below some record of ``c``'s own file up to ``c``. If no candidate of a file is behind an
earlier one of the same file by ``--lateness`` or more, the newest time any correlator has seen
when ``c`` arrives is less than ``c``'s time plus the lateness, so ``c`` is never late -- for one
correlator or for any partition (a partition sees a subsequence of the same streams). The one
other way to release early, the buffer's cap (``MAX_HELD``), cannot fire when all files together
never hold that many candidates within one lateness window; and in time-ordered streams nothing is
late even then. When a candidate can be late, the candidates are correlated by one correlator
(one partition), exactly as locally.

The state caps (``max_groups``, ``max_state``, a chain's held inputs) and the reorder buffer's cap
hold over the whole run, as for one correlator: each partition reports peaks whose sums bound what
one correlator would hold (:func:`caps_reached`); when they reach a cap, the runner correlates the
candidates again with one correlator. The summary's peaks are the largest partition's.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any, NamedTuple

from scmwatch.alerts import Alert
from scmwatch.correlate import CorrelationStage, _link_needs
from scmwatch.correlate.spec import CorrSpec
from scmwatch.correlate.stream import Candidate
from scmwatch.events.model import Event

_CAND_KEY = itemgetter(0, 1, 2)  # candidate records (Candidate.to_record): (time_us, unit, position, ...)
# summary counts that add up over partitions; the others are peaks or caps (the largest partition's)
_SUMMED = ("alerts", "late_events", "reorder_overflow", "groups_evicted", "entries_truncated",
           "held_released_early", "missing_group_field", "missing_value_field", "untimed_events")


# what a partition reports only for caps_reached, not in the hunt summary
_BOUNDS = ("bound_peak", "chain_peak")


def _hash(value: Any) -> int:
    """A hash that is the same in every process (``hash(str)`` is salted per process)."""
    return zlib.crc32(repr(value).encode("utf-8", "backslashreplace"))


class Plan:
    """Which partition owns which ``(correlation, group)``; the same in every process."""

    def __init__(self, specs: Iterable[CorrSpec], partitions: int) -> None:
        specs = list(specs)
        self.partitions = max(1, partitions)
        by_key = {s.key: s for s in specs}
        family = {k: k for k in by_key}

        def root(k: str) -> str:
            while family[k] != k:
                k = family[k]
            return k

        chained: set[str] = set()
        for s in specs:
            for ref in s.refs:
                inner = s.ref_keys[ref]
                if inner in by_key:
                    chained |= {s.key, inner}
                    a, b = sorted((root(s.key), root(inner)))
                    family[b] = a
        self.keyed = frozenset(k for k, s in by_key.items() if k not in chained and not _link_needs([s]))
        self.home = {k: _hash(root(k)) % self.partitions for k in by_key}
        # partitions whose correlations derive fields from the learned links: they get every fact
        self.fact_parts = tuple(sorted({self.home[k] for k, s in by_key.items()
                                        if k not in self.keyed and _link_needs([s])}))

    def partition(self, spec_key: str, key: tuple | None) -> int:
        """The partition of correlation ``spec_key``'s group ``key`` (None: a missing group-by
        field, counted once, by the correlation's home partition)."""
        if key is None or spec_key not in self.keyed:
            return self.home[spec_key]
        return _hash((spec_key, key)) % self.partitions

    def owner(self, p: int) -> Callable[[str, tuple | None], bool]:
        """The ``Correlator(owns=...)`` predicate of partition ``p``."""
        keyed, home, n = self.keyed, self.home, self.partitions
        if n == 1:
            return lambda spec_key, key: True

        def owns(spec_key: str, key: tuple | None) -> bool:
            if key is None or spec_key not in keyed:
                return home[spec_key] == p
            return _hash((spec_key, key)) % n == p

        return owns

    def describe(self) -> dict[str, Any]:
        """For the summary: how the correlations were partitioned."""
        return {"partitions": self.partitions, "by_group_key": len(self.keyed),
                "whole": len(self.home) - len(self.keyed), "fact_partitions": len(self.fact_parts)}


class Router:
    """Where a candidate record goes: the partitions owning its groups, and its link fact to the
    partitions that learn links. Runs where the unit was matched (a cluster worker)."""

    def __init__(self, stage: CorrelationStage, plan: Plan) -> None:
        self.plan = plan
        self.correlator = stage.correlator  # only its routes and group keys: no state is touched
        self.keyed = plan.keyed

    def targets(self, rec: tuple) -> set[int]:
        """Partitions that must see the whole record (its event feeds groups they own)."""
        out: set[int] = set()
        if not rec[3] or rec[5] is None:
            return out
        plan, corr = self.plan, self.correlator
        ev = None
        for st, ref in corr.targets(rec[3]):
            spec = st.spec
            if spec.key not in self.keyed:
                out.add(plan.home[spec.key])
                continue
            if ev is None:
                ev = Event(rec[5], rec[6], rec[7], rec[8], rec[9])
            grouped = corr.group(spec, ref, ev)
            out.add(plan.partition(spec.key, grouped[0] if grouped is not None else None))
        return out

    def split(self, records: Iterable[tuple]) -> list[list[tuple]]:
        """One unit's candidate records (in unit order) as ``P`` lists, each in unit order."""
        parts: list[list[tuple]] = [[] for _ in range(self.plan.partitions)]
        fact_parts = self.plan.fact_parts
        for rec in records:
            owners = self.targets(rec)
            for p in owners:
                parts[p].append(rec)
            if rec[4] is not None:
                bare = None
                for p in fact_parts:
                    if p not in owners:
                        if bare is None:  # keys None: a copy for the facts, not a candidate of its own
                            bare = (rec[0], rec[1], rec[2], None if rec[3] else (), rec[4], None)
                        parts[p].append(bare)
        return parts


def correlate_partition(stage: CorrelationStage, plan: Plan, p: int,
                        streams: Iterable[Iterable[tuple]]) -> tuple[list[Alert], dict[str, Any]]:
    """Correlate partition ``p``: its per-unit candidate streams merged by time, through a fresh
    ``stage`` whose correlator owns only this partition's groups. Returns the alerts in the
    order they were decided and the correlation summary of this partition."""
    stage.correlator.owns = plan.owner(p)
    merged = heapq.merge(*streams, key=_CAND_KEY)
    if p:  # an untimed record is counted once, by partition 0 (facts of it still replayed)
        merged = (r for r in merged if r[0] > 0)
    alerts = list(stage.correlate(map(Candidate.from_record, merged)))
    summary = stage.summary()
    summary.update(stage.correlator.cap_bounds())
    return alerts, summary


def caps_reached(summaries: list[dict[str, Any]], stage: CorrelationStage) -> bool:
    """Could one correlator over every candidate have reached a state cap that the partitions
    (``summaries``, from :func:`correlate_partition`) did not show? Then the candidates must be
    correlated again by one correlator, for its alerts and counts (module docstring).

    Each partition processes its candidates in the order one correlator would, with a clock
    that is never ahead of that correlator's (it sees fewer candidates), and drops an idle
    group only from the start of a sweep step that the correlator of all has reached too
    (``Correlator._sweep``). So at every point what the correlator of all holds of a partition's
    groups, the partition holds as well, or holds at an earlier stage (an input not released
    yet, an inner window not closed yet): each cap's quantity over all is at most the sum of the
    partitions' peaks of it -- groups plus held inputs (``bound_peak``) for ``max_groups``,
    entries (``state_peak``) for ``max_state``, the reorder buffers' peaks for its cap -- and a
    chain's held inputs at most what feeds them in its one partition (``chain_peak``) for the
    per-correlation cap. Below every cap, the partitions' alerts and counts are exact."""
    corr = stage.correlator

    def total(key: str) -> int:
        return sum(s[key] for s in summaries)

    if any(s["groups_evicted"] or s["held_released_early"] or s["reorder_overflow"] for s in summaries):
        return True
    return (total("bound_peak") >= corr.max_groups or total("state_peak") >= corr.max_state
            or total("reorder_peak") >= corr.buffer.max_held
            or max(s["chain_peak"] for s in summaries) >= corr.max_entries)


class StreamOrder(NamedTuple):
    """How far candidate streams (files' candidates in file order) are out of time order."""

    disorder_us: int  # the most a candidate's time is behind an earlier one's of its stream
    window: int  # the most candidates within one lateness window (summed over streams)
    low_us: int  # the earliest and latest candidate time
    high_us: int


def stream_order(records: list[tuple], lateness_us: int) -> StreamOrder | None:
    """The order of one stream of candidate records (untimed ones never reach the reorder
    buffer: left out); None when it has no timed record."""
    times = [r[0] for r in records if r[0] > 0]
    if not times:
        return None
    disorder = 0
    high = times[0]
    for t in times:
        if t > high:
            high = t
        elif high - t > disorder:
            disorder = high - t
    ordered = sorted(times)
    window = lo = 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - lateness_us:
            lo += 1
        window = max(window, hi - lo + 1)
    return StreamOrder(disorder, window, ordered[0], high)


def chained(orders: Iterable[StreamOrder | None]) -> StreamOrder | None:
    """One file's order from its ranges' (in file order): a range's candidates also trail every
    earlier range's latest."""
    out = None
    for o in orders:
        if o is None:
            continue
        out = o if out is None else StreamOrder(max(out.disorder_us, o.disorder_us, out.high_us - o.low_us),
                                                out.window + o.window, min(out.low_us, o.low_us),
                                                max(out.high_us, o.high_us))
    return out


def together(orders: Iterable[StreamOrder | None]) -> StreamOrder | None:
    """The order of separate streams (a batch's files): the worst disorder, windows summed."""
    out = None
    for o in orders:
        if o is None:
            continue
        out = o if out is None else StreamOrder(max(out.disorder_us, o.disorder_us), out.window + o.window,
                                                min(out.low_us, o.low_us), max(out.high_us, o.high_us))
    return out


def late_possible(orders: Iterable[StreamOrder | None], sorted_extra: int, lateness_us: int,
                  max_held: int) -> bool:
    """Could a reorder buffer judge any candidate late (module docstring)? ``sorted_extra``:
    records of time-ordered streams besides (the merge step's decided process creations)."""
    o = together(orders)
    if o is None or o.disorder_us == 0:
        return False
    return o.disorder_us >= lateness_us or o.window + sorted_extra > max_held


def merged_summary(summaries: list[dict[str, Any]], plan: Plan, candidates: int) -> dict[str, Any]:
    """The hunt summary's ``correlation`` object from the partitions' own: counts added up,
    peaks the largest partition's, ``candidates`` the records the units selected."""
    summaries = [{k: v for k, v in s.items() if k not in _BOUNDS} for s in summaries]
    out = dict(summaries[0])
    for s in summaries[1:]:
        for k, v in s.items():
            if k in _SUMMED:
                out[k] = out.get(k, 0) + v
            elif k == "late_examples":
                out[k] = (out[k] + v)[:20]
            elif isinstance(v, int | float) and not isinstance(v, bool) and k != "rules":
                out[k] = max(out.get(k, 0), v)
    out["candidates"] = candidates
    out["partitioned"] = plan.describe()
    return out
