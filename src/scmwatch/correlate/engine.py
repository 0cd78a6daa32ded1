"""Streaming evaluation of Sigma correlation rules in event time.

State is kept per ``(correlation, group)`` where the group is the tuple of ``group-by`` values
(after ``aliases``; compared like rule matching compares values: strings case-insensitively,
numbers as their decimal text). An event counts once per correlation. Each group
holds the window's entries ``(time, seq, reference, event, value, evidence)`` in time order.

Windows (``timespan`` T, integer microseconds so edges are exact):

* *eager* rules (``gt``/``gte``, boolean conditions without ``not``) evaluate the sliding
  window ``[t - T, t]`` ending at every new entry -- an entry exactly T older still counts.
  When the condition holds the alert is emitted with every entry that contributed and the
  group is cleared, so one burst gives one alert and the next alert needs fresh evidence.
* *at-close* rules (``lt``/``lte``/``eq``/``neq``, conditions with ``not``) use a window that
  opens at the group's first entry and closes at ``start + T``; it is evaluated when an entry
  past its end arrives, when the group idles out, or at the end of input.

Chains: an inner alert is one entry of the outer rule at the inner alert's time, but it may be
decided up to two inner timespans (plus one sweep) after that time. A correlation that
references correlations therefore holds all its input back by that much and replays it in
``(time, base events before inner alerts, arrival)`` order, so late inner alerts land in the
window their time belongs to; tests/test_oracle_correlation.py checks this against a brute
force that sees every input at once.

Memory: a group whose newest entry is older than T (relative to the newest event processed)
is finished and dropped; groups live in insertion-ordered dicts (least recently updated first)
so the sweep is O(expired). Hard caps (``max_groups``, ``max_entries_per_group``, which also
bounds a chained correlation's hold-back heap, and
``max_state`` window entries over all groups, since 200,000 groups of 10,000 entries would
bound nothing) protect against adversarial cardinality; evictions (least recently updated
group first) are counted in :meth:`Correlator.summary`, and the high-water mark of retained
entries/groups is reported as ``state_peak``/``groups_peak``.
"""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from scmwatch.alerts import Alert
from scmwatch.correlate.links import EntityLinks
from scmwatch.correlate.spec import (
    NUMERIC_TYPES,
    VALUE_TYPES,
    CorrSpec,
    eval_expr,
)
from scmwatch.correlate.stream import MAX_HELD, Candidate, ReorderBuffer
from scmwatch.events.model import Event, format_time
from scmwatch.sigma.values import as_text, strict_number

# entry tuple indexes
_T, _SEQ, _REF, _EV, _VAL, _EVID = range(6)
SWEEP_US = 1_000_000  # idle groups are swept at most this late (event time)


class _Group:
    __slots__ = ("entries", "start", "last", "display", "counts", "total")

    def __init__(self, display: dict[str, Any]) -> None:
        self.entries: deque = deque()
        self.start = 0
        self.last = 0
        self.display = display  # group-by values as first seen (for the alert)
        self.counts: dict = {}  # value_count: values; temporal: references (-> occurrences)
        self.total = 0.0  # value_sum / value_avg running sum


@dataclass
class _SpecState:
    """One correlation's open groups and the correlations it feeds."""

    spec: CorrSpec
    # least recently updated first; an OrderedDict because a plain dict slows down finding its
    # first live key after many deletions at the front (the sweep does exactly that)
    groups: OrderedDict = field(default_factory=OrderedDict)
    # outer correlations fed by this one (chained): list of (outer state, reference name)
    parents: list[tuple[_SpecState, str]] = field(default_factory=list)
    emit: bool = True  # False when only chained with generate: false
    fired: int = 0
    order: dict[str, int] = field(default_factory=dict)  # reference name -> list position
    # A correlation fed by correlations holds its input back (``held``, a heap) by ``lag`` µs:
    # an inner alert may be decided up to 2 timespans + one sweep after its event time.
    buffered: bool = False
    lag: int = 0
    held: list = field(default_factory=list)
    # the buffered correlations this one feeds, directly or through others (cap_bounds)
    above: list[_SpecState] = field(default_factory=list)
    # the correlations that feed this one, directly or through others
    below: list[_SpecState] = field(default_factory=list)


def _numeric(value: Any) -> float | None:
    """A value_sum/avg/percentile/median input: parsed exactly as rule matching parses numbers
    (``sigma.values.strict_number``: plain ASCII decimals, no trimming, no ``inf``/``nan``)."""
    n = strict_number(value)
    return None if n is None else float(n)


def _percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * pct / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _key_part(value: Any) -> Any:
    """A group-by or value_count value as rule matching compares it: strings case-insensitive,
    numbers equal to their decimal text (``3``, ``3.0`` and ``"3"`` are one value), booleans as
    ``true``/``false``, lists item by item."""
    if value.__class__ is str:
        if value[:1] in _NUMERIC_START:
            n = strict_number(value)
            if n is not None:
                return _number_text(n)
        return value.lower()
    if isinstance(value, list | tuple):
        return tuple(_key_part(x) for x in value)
    if isinstance(value, dict):
        return repr(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_text(value)
    text = as_text(value)
    return text.lower() if text is not None else repr(value)


_NUMERIC_START = frozenset("-0123456789")


def _number_text(n: int | float) -> str:
    if isinstance(n, float):
        return str(int(n)) if n.is_integer() else repr(n)
    return str(n)


class Correlator:
    """Feed candidates (any order within ``lateness``), collect correlation alerts.

    >>> corr = Correlator(specs)
    >>> for cand in candidates: alerts.extend(corr.push(cand))
    >>> alerts.extend(corr.finish())
    """

    def __init__(
        self,
        specs: Iterable[CorrSpec],
        *,
        lateness: float = 300.0,
        max_groups: int = 200_000,
        max_entries_per_group: int = 10_000,
        max_state: int = 200_000,
        max_held: int = MAX_HELD,
        links: EntityLinks | None = None,
        owns: Callable[[str, tuple | None], bool] | None = None,
    ) -> None:
        self.specs = list(specs)
        # (correlation key, group key or None when a group-by field is missing) -> is that group
        # this correlator's? None: every group. Partitioned correlation (correlate/partition.py)
        # gives each partition's correlator the groups hashed to it.
        self.owns = owns
        self.buffer = ReorderBuffer(lateness, max_held=max_held)
        self.links = links or EntityLinks()
        self.max_groups = max_groups
        self.max_entries = max_entries_per_group
        self.max_state = max_state
        self._states = [_SpecState(s) for s in self.specs]
        by_key = {st.spec.key: st for st in self._states}
        # rule_key -> [(state, reference name)]
        self._routes: dict[str, list[tuple[_SpecState, str]]] = {}
        referenced_by: dict[str, list[CorrSpec]] = {}
        for st in self._states:
            for ref in st.spec.refs:
                target = st.spec.ref_keys[ref]
                referenced_by.setdefault(target, []).append(st.spec)
                inner = by_key.get(target)
                if inner is not None:
                    inner.parents.append((st, ref))
                else:
                    self._routes.setdefault(target, []).append((st, ref))
        # generate: a referenced rule/correlation alerts on its own only if some correlation
        # that references it says `generate: true` (pySigma disables it as soon as one says
        # false, which makes the outcome depend on file order).
        self.suppressed: frozenset[str] = frozenset(
            k for k, specs in referenced_by.items() if not any(s.generate for s in specs)
        )
        for st in self._states:
            st.emit = st.spec.key not in self.suppressed
        self.referenced_keys: frozenset[str] = frozenset(self._routes)
        # Close windows inner-first: a chained correlation's inner rule may fire when its own
        # window closes (at a sweep or at end of input), and its parent must still be open to
        # receive that. Sorting by nesting depth makes this independent of the rules' file order.
        depth: dict[str, int] = {}

        def nesting(st: _SpecState, seen: frozenset[str] = frozenset()) -> int:
            key = st.spec.key
            if key not in depth:
                inner = [by_key[st.spec.ref_keys[r]] for r in st.spec.refs if st.spec.ref_keys[r] in by_key]
                depth[key] = 1 + max(
                    (nesting(i, seen | {key}) for i in inner if i.spec.key not in seen), default=0
                )
            return depth[key]

        self._states.sort(key=nesting)
        for st in self._states:  # inner-first, so an inner state's lag is known
            st.order = {ref: i for i, ref in enumerate(st.spec.refs)}
            inner = [by_key[st.spec.ref_keys[r]] for r in st.spec.refs if st.spec.ref_keys[r] in by_key]
            st.buffered = bool(inner)
            st.lag = max((i.lag + 2 * i.spec.timespan_us + SWEEP_US for i in inner), default=0)
        self._buffered = [st for st in self._states if st.buffered]
        for st in self._states:
            seen: dict[int, _SpecState] = {}
            todo = [p for p, _ in st.parents]
            while todo:
                p = todo.pop()
                if id(p) not in seen:
                    seen[id(p)] = p
                    todo.extend(q for q, _ in p.parents)
            st.above = [p for p in seen.values() if p.buffered]
            for p in st.above:
                p.below.append(st)
        self._held = 0  # inputs held back over all buffered correlations
        self.bound_peak = 0  # most groups + held inputs at once (cap_bounds)
        self.chain_peak = 0  # most (held inputs + what feeds them) of one buffered correlation
        self._hseq = 0
        self._seq = 0
        self._now = 0
        self._next_sweep = 0
        self._entries = 0
        self._groups = 0
        self.state_peak = 0
        self.groups_peak = 0
        self.candidates = 0
        self.untimed = 0
        self.missing_group = 0
        self.missing_value = 0
        self.groups_evicted = 0
        self.entries_truncated = 0
        self.held_released_early = 0
        self.alerts = 0

    # -- input ----------------------------------------------------------------------------

    def push(self, cand: Candidate) -> list[Alert]:
        """Add one candidate; returns the alerts that became final."""
        self.candidates += 1
        if cand.time_us <= 0:
            self.untimed += 1
            return []
        out: list[Alert] = []
        for ready in self.buffer.push(cand):
            self._process(ready, out)
        return out

    def feed(self, cands: Iterable[Candidate]) -> Iterator[Alert]:
        for cand in cands:
            yield from self.push(cand)
        yield from self.finish()

    def finish(self) -> list[Alert]:
        """End of input: release the reorder buffer, close every open window."""
        out: list[Alert] = []
        for ready in self.buffer.drain():
            self._process(ready, out)
        for st in self._states:
            if st.buffered:
                self._release(st, None, out)
            for key in list(st.groups):
                g = st.groups.get(key)
                if g is None:
                    continue
                if not st.spec.eager and g.entries:
                    self._close(st, g, out)
                self._drop(st, key)
        return out

    def flush(self) -> list[Alert]:
        """Release the reorder buffer now, windows left open: a live watcher whose sources all
        went quiet (``scmwatch.live``). A candidate older than these that arrives later is late."""
        out: list[Alert] = []
        for ready in self.buffer.drain():
            self._process(ready, out)
        return out

    def _process(self, cand: Candidate, out: list[Alert]) -> None:
        t = cand.time_us
        if t > self._now:
            self._now = t
            if t >= self._next_sweep:  # idle groups are dropped at most SWEEP_US (event time) late
                self._next_sweep = (t // SWEEP_US + 1) * SWEEP_US
                self._sweep(out)
            else:
                for st in self._buffered:
                    if st.held and st.held[0][0] < t - st.lag:
                        self._release(st, t - st.lag, out)
        if cand.fact is not None:
            self.links.apply(cand.fact)
        if cand.event is None:
            return
        for st, ref in self.targets(cand.keys):
            self._deliver(st, ref, cand.event, t, None, out)

    def targets(self, keys: tuple[str, ...]) -> list[tuple[_SpecState, str]] | tuple:
        """The (correlation, reference) pairs an event matching the rules ``keys`` feeds."""
        routes = self._routes
        if len(keys) == 1:
            targets = routes.get(keys[0], ())
            return self._once(targets) if len(targets) > 1 else targets
        return self._once([r for k in keys for r in routes.get(k, ())])

    @staticmethod
    def _once(targets: list[tuple[_SpecState, str]]) -> list[tuple[_SpecState, str]]:
        """One event counts once per correlation: when it matches several of a correlation's
        rules it counts as the first of them in the correlation's ``rules`` list."""
        best: dict[int, tuple[_SpecState, str]] = {}
        for st, ref in targets:
            prev = best.get(id(st))
            if prev is None or st.order[ref] < st.order[prev[1]]:
                best[id(st)] = (st, ref)
        return list(best.values())

    def _deliver(self, st: _SpecState, ref: str, event: Event, t: int, evidence: list[Event] | None,
                 out: list[Alert]) -> None:
        """Hand an input to a correlation, through its hold-back heap when it has one.

        Held inputs are released in ``(time, base events before inner alerts, arrival)`` order
        once the clock is ``lag`` past them, so an inner alert decided late still lands in the
        window its event time belongs to, whatever other traffic did meanwhile."""
        if not st.buffered:
            self._add(st, ref, event, t, evidence, out)
            return
        self._hseq += 1
        heapq.heappush(st.held, (t, evidence is not None, self._hseq, ref, event, evidence))
        self._entries += 1
        self._held += 1
        if self._entries > self.state_peak:
            self.state_peak = self._entries
        self._bound(st)
        if len(st.held) > self.max_entries:  # a flood: bounded memory beats exact late chains
            t, _, _, ref, event, evidence = heapq.heappop(st.held)
            self._entries -= 1
            self._held -= 1
            self.held_released_early += 1
            self._add(st, ref, event, t, evidence, out)

    def _release(self, st: _SpecState, before: int | None, out: list[Alert]) -> None:
        held = st.held
        while held and (before is None or held[0][0] < before):
            t, _, _, ref, event, evidence = heapq.heappop(held)
            self._entries -= 1
            self._held -= 1
            self._add(st, ref, event, t, evidence, out)

    # -- state ------------------------------------------------------------------------------

    def _field(self, event: Event, name: str) -> Any:
        fields = event.fields
        value = fields.get(name)
        if value is None and name.startswith("link."):
            value = self.links.derive(fields, name)
        return value

    def _add(
        self, st: _SpecState, ref: str, event: Event, t: int, evidence: list[Event] | None, out: list[Alert]
    ) -> None:
        spec = st.spec
        grouped = self.group(spec, ref, event)
        owns = self.owns
        if grouped is None:
            if owns is None or owns(spec.key, None):
                self.missing_group += 1
            return
        key, display = grouped
        if owns is not None and not owns(spec.key, key):
            return
        value = None
        if spec.type in VALUE_TYPES:
            value = self._field(event, spec.field_for(spec.field, ref))
            if spec.type in NUMERIC_TYPES:
                value = _numeric(value)
            elif value is not None:
                value = _key_part(value)
            if value is None or value == "":
                self.missing_value += 1
                return
        groups = st.groups
        span = spec.timespan_us
        g = groups.get(key)
        if g is not None and t - g.last > span:
            # Idle for longer than its timespan: finished, as the sweep would have found it had
            # it run in between. Deciding it here makes a group's life independent of when
            # sweeps run (they follow the clock of all candidates, which a partition of them
            # does not see), so partitioned correlation gives the alerts of one correlator.
            if not spec.eager and g.entries:
                self._close(st, g, out)
            self._drop(st, key)
            g = None
        if g is None:
            if self._groups >= self.max_groups:
                self._evict_one(st)
            g = _Group(display)
            groups[key] = g
            self._groups += 1
            if self._groups > self.groups_peak:
                self.groups_peak = self._groups
            self._bound(st)
        else:  # keep dict order = least recently updated first (for the sweep)
            groups.move_to_end(key)
        if not spec.eager and g.entries and t > g.start + span:
            self._close(st, g, out)
            self._clear(g)
        self._seq += 1
        entry = (t, self._seq, ref, event, value, evidence)
        if not g.entries or t < g.start:
            g.start = t
        entries = g.entries
        if entries and t < entries[-1][_T]:
            entries.insert(bisect.bisect_right(entries, t, key=lambda e: e[_T]), entry)
        else:
            entries.append(entry)
        if t > g.last:
            g.last = t
        self._count_in(spec, g, entry)
        if len(entries) > self.max_entries:
            self._count_out(spec, g, entries.popleft())
            self.entries_truncated += 1
        if self._entries > self.max_state:
            self._shed(g)
        if spec.eager:
            horizon = entries[-1][_T] - span
            while entries and entries[0][_T] < horizon:
                self._count_out(spec, g, entries.popleft())
            chosen = self._evaluate(st, g)
            if chosen is not None:
                self._fire(st, g, chosen, out)
                self._clear(g)

    def _bound(self, st: _SpecState) -> None:
        """Keep the peaks :meth:`cap_bounds` reports, after a group was added to ``st`` or an
        input held back by it."""
        n = self._groups + self._held
        if n > self.bound_peak:
            self.bound_peak = n
        for a in (st, *st.above) if st.buffered else st.above:
            n = len(a.held) + sum(len(b.groups) + len(b.held) for b in a.below)
            if n > self.chain_peak:
                self.chain_peak = n

    def cap_bounds(self) -> dict[str, int]:
        """Peaks that bound what one correlator over every candidate would hold, when this
        one correlates a partition of them (correlate/partition.py, ``caps_reached``).

        ``bound_peak``: groups plus held inputs. An input a partition still holds back, the
        correlator of all may already have released into a group (its clock is ahead).
        ``chain_peak``, per buffered correlation: its held inputs plus the groups and held
        inputs of the correlations feeding it. The correlator of all may already have closed
        such a group or released such an input, and so hold its alert here.
        """
        return {"bound_peak": self.bound_peak, "chain_peak": self.chain_peak}

    def group(self, spec: CorrSpec, ref: str, event: Event) -> tuple[tuple, dict[str, Any]] | None:
        """The group key of ``event`` as input ``ref`` of correlation ``spec`` and its group-by
        values as seen (for the alert); None when a group-by field is missing."""
        display: dict[str, Any] = {}
        key_parts = []
        for name in spec.group_by:
            value = self._field(event, spec.field_for(name, ref))
            if value is None or value == "":
                return None
            display[name] = value
            key_parts.append(_key_part(value))
        return tuple(key_parts), display

    def _count_in(self, spec: CorrSpec, g: _Group, entry: tuple) -> None:
        self._entries += 1
        if self._entries > self.state_peak:
            self.state_peak = self._entries
        typ = spec.type
        if typ == "value_count" or typ == "temporal" or typ == "temporal_ordered":
            k = entry[_VAL] if typ == "value_count" else entry[_REF]
            counts = g.counts
            counts[k] = counts.get(k, 0) + 1
        elif typ in ("value_sum", "value_avg"):
            g.total += entry[_VAL]

    def _count_out(self, spec: CorrSpec, g: _Group, entry: tuple) -> None:
        self._entries -= 1
        typ = spec.type
        if typ in ("value_count", "temporal", "temporal_ordered"):
            k = entry[_VAL] if typ == "value_count" else entry[_REF]
            n = g.counts[k] - 1
            if n:
                g.counts[k] = n
            else:
                del g.counts[k]
        elif typ in ("value_sum", "value_avg"):
            g.total -= entry[_VAL]

    def _clear(self, g: _Group) -> None:
        self._entries -= len(g.entries)
        g.entries.clear()
        g.counts.clear()
        g.total = 0.0

    def _drop(self, st: _SpecState, key: tuple) -> None:
        g = st.groups.pop(key)
        self._entries -= len(g.entries)
        self._groups -= 1

    def _evict_one(self, st: _SpecState) -> None:
        """Over the group cap: drop the least recently updated group (its own rule's first)."""
        victim = st if st.groups else max(self._states, key=lambda s: len(s.groups))
        key = next(iter(victim.groups))
        self._drop(victim, key)
        self.groups_evicted += 1

    def _shed(self, keep: _Group) -> None:
        """Over the total state cap: drop the least recently updated groups of any correlation
        (never ``keep``, the group just added to) until back under it."""
        while self._entries > self.max_state:
            victim = None
            for st in self._states:
                if st.groups:
                    key = next(iter(st.groups))
                    g = st.groups[key]
                    if g is not keep and (victim is None or g.last < victim[2].last):
                        victim = (st, key, g)
            if victim is None:  # what is left is the current group and held inputs
                return
            self._drop(victim[0], victim[1])
            self.groups_evicted += 1

    def _sweep(self, out: list[Alert]) -> None:
        """Drop groups idle for longer than their timespan (closing at-close windows first).

        Idle is judged from the start of the current SWEEP_US step of event time, not from the
        newest candidate: so a correlator that sees only some of the candidates (a partition)
        never drops a group that the correlator of all still holds (correlate/partition.py,
        ``caps_reached``). Held inputs are released by the newest time."""
        now = self._now
        step = now - now % SWEEP_US
        for st in self._states:  # inner first: their alerts reach the outer heaps before release
            if st.buffered and st.held and st.held[0][0] < now - st.lag:
                self._release(st, now - st.lag, out)
            groups = st.groups
            if not groups:
                continue
            horizon = step - st.lag - st.spec.timespan_us
            while groups:
                key = next(iter(groups))
                g = groups[key]
                if g.last >= horizon:
                    break
                if not st.spec.eager and g.entries:
                    self._close(st, g, out)
                self._drop(st, key)

    # -- evaluation ---------------------------------------------------------------------------

    def _close(self, st: _SpecState, g: _Group, out: list[Alert]) -> None:
        chosen = self._evaluate(st, g)
        if chosen is not None:
            self._fire(st, g, chosen, out)

    def _evaluate(self, st: _SpecState, g: _Group) -> list[tuple] | None:
        """The contributing entries when the condition holds on the group's window, else None."""
        spec = st.spec
        entries = g.entries
        if not entries:
            return None
        typ = spec.type
        if typ == "temporal_ordered":
            if spec.eager and not self._may_hold(spec, g.counts):
                return None
            return self._ordered(spec, st.order, entries)
        if typ == "temporal":
            present = set(g.counts)
            ok = (
                eval_expr(spec.expr, present)
                if spec.expr is not None
                else spec.holds(len(present))
            )
            return list(entries) if ok else None
        if typ == "event_count":
            measure = float(len(entries))
        elif typ == "value_count":
            measure = float(len(g.counts))
        elif typ == "value_sum":
            measure = g.total
        elif typ == "value_avg":
            measure = g.total / len(entries)
        else:  # value_percentile / value_median
            measure = _percentile([e[_VAL] for e in entries], spec.percentile or 50.0)
        return list(entries) if spec.holds(measure) else None

    @staticmethod
    def _may_hold(spec: CorrSpec, present: dict) -> bool:
        """Could an ordered chain satisfy an eager condition, given the references present in
        any order? A chain only drops references and eager conditions cannot gain from that, so
        no is final: the per-event ordered walk (which sorts the window) is skipped. Without
        this, 20,000 service installs on one host took 190 s (the window re-sorted per event)."""
        if spec.expr is not None:
            return eval_expr(spec.expr, set(present))
        return spec.holds(float(len(present)))

    def _ordered(self, spec: CorrSpec, order: dict[str, int], entries: deque) -> list[tuple] | None:
        # Equal timestamps may be taken in list order whatever their file position: entries
        # are walked by (time, list position), so ties never depend on input order.
        entries = sorted(entries, key=lambda e: (e[_T], order[e[_REF]]))
        if spec.expr is not None:
            # Boolean condition: the references found in list order (earliest first event of
            # each, each after the previous one); `not x` means x did not follow in order.
            chain: list[tuple] = []
            pos = -1
            items = list(entries)
            for ref in spec.refs:
                for j in range(pos + 1, len(items)):
                    if items[j][_REF] == ref:
                        chain.append(items[j])
                        pos = j
                        break
            present = {e[_REF] for e in chain}
            if not eval_expr(spec.expr, present):
                return None
            return chain if chain else list(entries)
        # Count condition: the length of the longest chain of distinct references in list order
        # (dynamic programming over the walk) ...
        longest = [0] * len(spec.refs)
        for entry in entries:
            i = order[entry[_REF]]
            longest[i] = max(longest[i], 1 + max(longest[:i], default=0))
        k = max(longest)
        if not spec.holds(float(k)):
            return None
        # ... and, only when it fires, which chain: the one with the earliest events
        # (lexicographically smallest positions in the walk), so the evidence is well defined.
        best: list[int] | None = None
        for subset in combinations(spec.refs, k):
            picked: list[int] = []
            j = 0
            for ref in subset:
                while j < len(entries) and entries[j][_REF] != ref:
                    j += 1
                if j == len(entries):
                    break
                picked.append(j)
                j += 1
            else:
                if best is None or picked < best:
                    best = picked
        return [entries[j] for j in best or ()]

    # -- output -------------------------------------------------------------------------------

    def _fire(self, st: _SpecState, g: _Group, chosen: list[tuple], out: list[Alert]) -> None:
        spec = st.spec
        st.fired += 1
        events: list[Event] = []
        seen: set[int] = set()
        chain: list[dict[str, Any]] = []
        for entry in chosen:
            evidence = entry[_EVID]
            if evidence is None:
                evidence = [entry[_EV]]
            else:
                chain.append(dict(entry[_EV].fields.get("_correlation") or {}))
            for ev in evidence:
                if id(ev) not in seen:
                    seen.add(id(ev))
                    events.append(ev)
        events.sort(key=lambda e: e.time)
        # the window spans the evidence (for chained rules: the inner alerts' events too)
        first_t = min(min(e[_T] for e in chosen), int(round(events[0].time * 1e6)))
        last_t = max(e[_T] for e in chosen)
        corr: dict[str, Any] = {
            "type": spec.type,
            "group_by": dict(g.display),
            "window": {
                "start": format_time(first_t / 1e6),
                "end": format_time(last_t / 1e6),
                "timespan": spec.timespan,
            },
            "condition": spec.describe_condition(),
            "rules": [
                {"ref": e[_REF], "time": format_time(e[_T] / 1e6)}
                for e in sorted(chosen, key=lambda e: (e[_T], st.order[e[_REF]], e[_SEQ]))
            ],
        }
        if chain:
            corr["chain"] = chain
        extra = dict(spec.extra)
        if spec.path:
            extra.setdefault("rule_path", spec.path)
        alert = Alert(
            rule_id=spec.key,
            title=spec.title,
            level=spec.level,
            description=spec.description,
            tags=list(spec.tags),
            event=events[-1],
            events=events,
            correlation=corr,
            extra=extra,
        )
        if st.emit:
            self.alerts += 1
            out.append(alert)
        for parent, ref in st.parents:
            fields = dict(g.display)
            fields["_correlation"] = {"rule_id": spec.key, "title": spec.title, **corr}
            synthetic = Event(fields, f"correlation:{spec.key}", None, "correlation")
            synthetic._epoch = last_t / 1e6
            self._deliver(parent, ref, synthetic, last_t, events, out)

    # -- reporting ------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The ``correlation`` object of the hunt summary."""
        return {
            "rules": len(self.specs),
            "candidates": self.candidates,
            "alerts": self.alerts,
            "late_events": self.buffer.late,
            "late_examples": list(self.buffer.late_examples),
            "untimed_events": self.untimed,
            "lateness_seconds": self.buffer.lateness_us / 1e6,
            "reorder_peak": self.buffer.peak,
            "reorder_cap": self.buffer.max_held,
            "reorder_overflow": self.buffer.overflow,
            "state_peak": self.state_peak,
            "groups_peak": self.groups_peak,
            "groups_evicted": self.groups_evicted,
            "state_cap": self.max_state,
            "entries_truncated": self.entries_truncated,
            "held_released_early": self.held_released_early,
            "missing_group_field": self.missing_group,
            "missing_value_field": self.missing_value,
            "link_facts": self.links.facts,
            "link_entries": self.links.size(),
        }
