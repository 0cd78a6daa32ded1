"""Streaming Sigma correlation (all eight correlation types) with entity links.

How the hunt loop (:mod:`scmwatch.hunt`) uses it:

1. ``CorrelationStage.for_ruleset(ruleset, lateness=...)`` builds the stage (None when the
   rule set has no correlation);
2. per unit of input (in a ``--jobs`` worker or inline), after single-event matching, ask
   ``stage.selector.select(event, matched_rules, unit_index, position)`` for a
   :class:`Candidate` -- ``None`` for the vast majority of events, so the correlator never sees
   the whole stream;
3. drop single-event alerts of ``stage.suppressed_rule_ids(rules)`` (``generate: false``);
4. after all units, merge their candidates by ``Candidate.sort_key`` and stream them through
   ``stage.correlate(merged)``; ``stage.summary()`` goes into the hunt summary under
   ``correlation``.

Because the same per-unit streams are always merged in the same ``(time, unit, position)``
order, ``--jobs N`` gives exactly the alerts of ``--jobs 1``.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from scmwatch.alerts import Alert
from scmwatch.correlate.engine import Correlator
from scmwatch.correlate.links import (
    DERIVED_FIELDS,
    LINK_EVENT_IDS,
    NAME_EVENT_IDS,
    NEEDS,
    SESSION_EVENT_IDS,
    EntityLinks,
    extract_fact,
)
from scmwatch.correlate.spec import CorrSpec, rule_key, spec_from_sigma, specs_from_sigma
from scmwatch.correlate.stream import MAX_HELD, Candidate, ReorderBuffer, time_us, when_us
from scmwatch.events.model import Event

__all__ = [
    "DERIVED_FIELDS",
    "LINK_EVENT_IDS",
    "Candidate",
    "CandidateSelector",
    "CorrSpec",
    "CorrelationStage",
    "Correlator",
    "EntityLinks",
    "LinkEvents",
    "ReorderBuffer",
    "extract_fact",
    "rule_key",
    "spec_from_sigma",
    "specs_from_sigma",
    "time_us",
]


def _link_needs(specs: Iterable[CorrSpec]) -> set[str]:
    """Which learned maps ("sessions", "names") the correlations' derived fields need."""
    need: set[str] = set()
    for spec in specs:
        names = list(spec.group_by) + [spec.field or ""]
        for mapping in spec.aliases.values():
            names.extend(mapping.values())
        for n in names:
            need.update(NEEDS.get(n, ()))
    return need


def _gate(ids: Iterable[int]) -> frozenset:
    # readers give EventID as int (EVTX, most JSON) or as a string (some exports)
    ids = list(ids)
    return frozenset(ids) | frozenset(str(i) for i in ids)


# the raw fields whose repetition skips an address -> name event (the per-file dedup's key)
_NAME_RAW = ("EventID", "Computer", "IpAddress", "WorkstationName", "SourceIp", "DestinationIp",
             "DestinationHostname", "QueryName")
# every field extract_fact reads for address -> name facts: equal values, equal fact
_NAME_FIELDS = (*_NAME_RAW, "Channel", "SourceHostname", "Initiated", "QueryResults")
# distinct address -> name events whose fact a selector remembers (then it starts over)
_NAME_MEMO = 65_536


# A link fact as one range of a split file selects it, before the per-file dedup:
# ``(RANGE_FACT, raw, fact)`` in a candidate record's fact slot. ``raw`` is the event's
# _NAME_RAW values (names-only selection) or None; ``fact`` what ``extract_fact`` gave (None:
# nothing, but the raw values still count as seen). The merge step replays :class:`FactDedup`
# over the file's ranges in order (:meth:`FactDedup.replay`), so the facts that reach the
# correlator are exactly those of the unsplit file. A plain tuple, not a NamedTuple: pickling
# one took 2.3x as long and loading it 3.5x (50,000 records: 0.145 vs 0.062 s, 0.132 vs 0.037 s).
RANGE_FACT = "range"


def _raw_key(fields: dict[str, Any]) -> tuple:
    """The event's _NAME_RAW values, hashable: a list or object where a name belongs (odd JSON
    exports) stands as its repr."""
    raw = tuple(map(fields.get, _NAME_RAW))
    try:
        hash(raw)
    except TypeError:
        return tuple(v if v.__hash__ is not None else repr(v) for v in raw)
    return raw


class FactDedup:
    """The per-file dedup of link facts (see :class:`CandidateSelector`): its state for one file."""

    __slots__ = ("raw_seen", "seen")

    def __init__(self) -> None:
        self.raw_seen: dict[tuple, int] = {}
        self.seen: dict[str, tuple[str, int]] = {}

    def raw_fresh(self, raw: tuple, position: int, refresh: int) -> bool:
        """Should the address->name event with these raw values at ``position`` be parsed
        (``refresh``: :attr:`CandidateSelector.RAW_REFRESH`)?"""
        last = self.raw_seen.get(raw)
        if last is not None and position - last < refresh:
            return False
        if len(self.raw_seen) >= 2 * refresh:
            # an entry RAW_REFRESH events old acts as absent: drop those (same output, and the
            # map stays ~RAW_REFRESH entries however long the file)
            horizon = position - refresh
            self.raw_seen = {k: v for k, v in self.raw_seen.items() if v > horizon}
        self.raw_seen[raw] = position
        return True

    def fresh(self, fact: tuple, t: int, refresh_us: int) -> tuple | None:
        """The fact without the address->name parts emitted less than ``refresh_us``
        (:attr:`CandidateSelector.FACT_REFRESH_US`) ago."""
        parts = fact[1:] if fact[0] == "multi" else (fact,)
        keep = []
        seen = self.seen
        for f in parts:
            if f[0] == "ipname":
                last = seen.get(f[1])  # address -> (name, time emitted)
                if last is not None and last[0] == f[2] and 0 <= t - last[1] < refresh_us:
                    continue
                if len(seen) > 100_000:
                    seen.clear()
                seen[f[1]] = (f[2], t)
            keep.append(f)
        if not keep:
            return None
        return keep[0] if len(keep) == 1 else ("multi", *keep)

    def decide(self, raw: tuple | None, fact: tuple | None, t: int, position: int) -> tuple | None:
        """What :meth:`CandidateSelector.select` would have kept of a link event's fact
        (``raw``, ``fact`` as :meth:`CandidateSelector.select_range` selected them, event time
        ``t``) at ``position`` in the whole file, given every earlier one: the fact or None."""
        if raw is not None and not self.raw_fresh(raw, position, CandidateSelector.RAW_REFRESH):
            return None
        if fact is not None:
            fact = self.fresh(fact, t, CandidateSelector.FACT_REFRESH_US)
        return fact

    def replay(self, record: tuple, position: int) -> tuple | None:
        """A candidate record of a split file's range (:meth:`CandidateSelector.select_range`)
        as :meth:`CandidateSelector.select` would have made it from the whole file, or None.
        ``position``: the event's position in the whole file."""
        rf = record[4]
        if rf is None or rf[0] != RANGE_FACT:
            return record
        fact = self.decide(rf[1], rf[2], record[0], position)
        if not record[3] and fact is None:
            return None
        return (*record[:4], fact, *record[5:])


class LinkEvents:
    """A range's link events, for the parent's replay of the per-file fact dedup (``scmwatch.split``),
    column by column: position in the range, time (``when``: the event's ``TimeCreated`` text,
    parsed by :func:`when_us` only for the events the replay keeps, or its time in us), raw
    values and fact as indexes into ``raws`` / ``facts`` (each distinct value stored once;
    index 0 is None), and whether the event is also in the range's candidate stream
    (``keyed``: it matched a rule a correlation references).

    A range selects every link event (:meth:`CandidateSelector.select_range`): the dedup that
    drops most of them in a whole-file read depends on the events before the range. As one
    Candidate, tuple and spill record each, a link event cost a range 7.6 us against 4.0 us
    for the whole file's select (13,253 link events of simulated NDJSON, best of 3), ~0.8 s of
    worker CPU per GB; as columns, whose arrays pickle as bytes, see the docstring of
    :meth:`CandidateSelector.select_range`. Held in memory: a range is at most
    ``scmwatch.split.RANGE_BYTES``, ~25 bytes per link event.

    An address -> name event that matched no rule keeps its fact unparsed (a negative fact
    index ``~j``: ``rest[j]``, the ``_NAME_FIELDS`` values after its raw ones), parsed by
    :meth:`fact_of` only where the replay keeps it: the whole file's raw dedup parses those
    alone, while a range, which cannot know them, parsed every distinct event (983 MB of
    simulated NDJSON: 55k ``extract_fact`` calls over the ranges against 14k for the whole
    file)."""

    __slots__ = ("_facts", "_keys", "_raws", "fact", "facts", "keyed", "pos", "raw", "raws", "rest", "when")

    def __init__(self) -> None:
        self.pos = array("q")
        self.when: list[str | int] = []
        self.raw = array("l")
        self.fact = array("l")
        self.keyed = bytearray()
        self.raws: list[tuple | None] = [None]
        self.facts: list[tuple | None] = [None]
        self.rest: list[tuple] = []  # the unparsed facts' other _NAME_FIELDS values
        self._keys: dict[tuple, tuple[int, int]] = {}  # _NAME_FIELDS values -> (raw, fact) indexes
        self._raws: dict[tuple, int] = {}
        self._facts: dict[tuple, int] = {}

    def __len__(self) -> int:
        return len(self.pos)

    def __getstate__(self) -> tuple:
        return (self.pos, self.when, self.raw, self.fact, self.keyed, self.raws, self.facts, self.rest)

    def __setstate__(self, state: tuple) -> None:
        self.pos, self.when, self.raw, self.fact, self.keyed, self.raws, self.facts, self.rest = state
        self._keys, self._raws, self._facts = {}, {}, {}

    def index(self, raw: tuple | None, fact: tuple | None) -> tuple[int, int]:
        """(raw index, fact index), each value added to its table when new."""
        return self._index(raw, self.raws, self._raws), self._index(fact, self.facts, self._facts)

    def unparsed(self, key: tuple) -> tuple[int, int]:
        """(raw index, unparsed fact index) of an address -> name event's ``_NAME_FIELDS`` values."""
        self.rest.append(key[len(_NAME_RAW):])
        return self._index(key[:len(_NAME_RAW)], self.raws, self._raws), ~(len(self.rest) - 1)

    def fact_of(self, ri: int, fi: int) -> tuple | None:
        """The fact at index ``fi`` of an event with raw index ``ri``, parsed now if it is not yet."""
        if fi >= 0:
            return self.facts[fi]
        return name_fact(self.raws[ri] + self.rest[~fi])  # type: ignore[operator]

    @staticmethod
    def _index(value: tuple | None, table: list, ids: dict) -> int:
        if value is None:
            return 0
        try:
            i = ids.get(value)
        except TypeError:  # an unhashable fact part (odd JSON): stored as it is
            table.append(value)
            return len(table) - 1
        if i is None:
            i = ids[value] = len(table)
            table.append(value)
        return i

    def add(self, position: int, when: str | int, ids: tuple[int, int], keyed: bool) -> None:
        self.pos.append(position)
        self.when.append(when)
        self.raw.append(ids[0])
        self.fact.append(ids[1])
        self.keyed.append(keyed)

    def rows(self) -> Iterator[tuple[int, int, tuple | None, tuple | None, bool]]:
        """``(position, time_us, raw, fact, keyed)`` per link event, in range order."""
        raws, fact_of = self.raws, self.fact_of
        columns = (self.pos, self.when, self.raw, self.fact, self.keyed)
        for pos, when, ri, fi, keyed in zip(*columns, strict=True):
            yield pos, when_us(when), raws[ri], fact_of(ri, fi), bool(keyed)


def name_fact(key: tuple) -> tuple | None:
    """``extract_fact(fields, False, True)`` of an event from its ``_NAME_FIELDS`` values: they
    are every field it reads, and it reads them with ``get`` (absent and None are alike)."""
    return extract_fact(dict(zip(_NAME_FIELDS, key, strict=True)), False, True)


class CandidateSelector:
    """The worker-side gate; small and picklable (it travels to ``--jobs`` workers).

    Most events match no referenced rule and are no link event: one dict lookup and one set
    lookup. Link facts are emitted only for the maps some correlation needs. Background traffic
    repeats the same host/address pairs endlessly, so an address->name event whose raw values
    were seen in the last ``RAW_REFRESH`` events of the same file is skipped before any parsing,
    and a fact identical to one emitted from the same file less than ``FACT_REFRESH`` seconds
    earlier (event time) is dropped; a *changed* mapping is always emitted. The dedupe state is
    per file (:class:`FactDedup`), so ``--jobs N`` (whole files per worker) selects exactly what
    ``--jobs 1`` selects; a range of a split file selects with :meth:`select_range` instead.
    """

    FACT_REFRESH_US = 60_000_000
    RAW_REFRESH = 5_000  # events

    def __init__(self, keys: frozenset[str], needs: Iterable[str] = ()) -> None:
        self.keys = keys
        self.needs = frozenset(needs)
        self.sessions = "sessions" in self.needs
        self.names = "names" in self.needs
        ids: set[int] = set()
        if self.sessions:
            ids |= SESSION_EVENT_IDS
        if self.names:
            ids |= NAME_EVENT_IDS
        self.gate = _gate(ids)
        self._key_cache: dict[Any, str | None] = {}
        self._file = -1
        self._dedup = FactDedup()
        self._names: dict[tuple, tuple | None] = {}  # _NAME_FIELDS values -> extract_fact's answer

    def reset(self) -> None:
        """Forget the dedup state: the next :meth:`select` starts a file afresh, whatever its
        index (a cluster worker's process outlives a hunt, and the next hunt's indexes repeat)."""
        self._file = -1
        self._dedup = FactDedup()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_key_cache"] = {}
        state["_dedup"] = FactDedup()
        state["_names"] = {}
        return state

    def key_fact(self, key: tuple) -> tuple | None:
        """:func:`name_fact`, remembered as :meth:`_name_fact` remembers it."""
        fact = self._names.get(key, self._names)
        if fact is self._names:
            fact = self._name_fact(dict(zip(_NAME_FIELDS, key, strict=True)), key)
        return fact  # type: ignore[return-value]

    def _name_fact(self, fields: dict[str, Any], key: tuple | None = None) -> tuple | None:
        """``extract_fact(fields, False, True)``, remembered by the values it reads (``key``:
        those values when the caller has them already): the same few host/address pairs fill
        background traffic (a 41 MB range of simulated NDJSON: 9,527 address -> name events,
        2,566 distinct), and a range parses every one of them. The same tuple comes back each
        time, so a spill block pickles it once."""
        memo = self._names
        try:
            if key is None:
                key = tuple(map(fields.get, _NAME_FIELDS))
            fact = memo.get(key, memo)
        except TypeError:  # a list or object where a name belongs (odd JSON exports)
            return extract_fact(fields, False, True)
        if fact is memo:
            if len(memo) >= _NAME_MEMO:
                memo.clear()
            fact = memo[key] = extract_fact(fields, False, True)
        return fact  # type: ignore[return-value]

    def _keys(self, matched: Iterable[Any]) -> tuple[str, ...]:
        cache = self._key_cache
        found = []
        for r in matched:
            k = cache.get(r, False)
            if k is False:
                k = rule_key(r)
                k = cache[r] = k if k in self.keys else None
            if k is not None:
                found.append(k)
        return tuple(found)

    def select(
        self, event: Event, matched: Iterable[Any], file_index: int, position: int
    ) -> Candidate | None:
        keys: tuple[str, ...] = self._keys(matched) if matched and self.keys else ()
        fact = None
        t = -1
        fields = event.fields
        eid = fields.get("EventID")
        if self.gate and eid.__class__ in (int, str) and eid in self.gate:
            if file_index != self._file:
                self._file = file_index
                self._dedup = FactDedup()
            if self.sessions:
                fact = extract_fact(fields, True, self.names)
            elif self._dedup.raw_fresh(_raw_key(fields), position, self.RAW_REFRESH):
                # Address -> name facts repeat endlessly (the same host/address pairs): an event
                # whose raw values were seen in the last RAW_REFRESH events of this file is skipped.
                fact = self._name_fact(fields)
            if fact is not None:
                t = time_us(event)
                fact = self._dedup.fresh(fact, t, self.FACT_REFRESH_US)
        if not keys and fact is None:
            return None
        if t < 0:
            t = time_us(event)
        return Candidate(t, file_index, position, event if keys else None, keys, fact)

    def select_range(
        self, links: LinkEvents, event: Event, matched: Iterable[Any], file_index: int, position: int
    ) -> Candidate | None:
        """:meth:`select` for one range of a split file (``links`` first, so that the hunt binds it
        with a positional ``partial``: one bound by keyword copied its keywords into a new dict
        per event): the per-file dedup depends on the events
        before the range, so every link event goes into ``links`` with what the dedup needs (its
        raw values, its fact), and the merge step replays the dedup in file order. The candidate
        of a link event that matched a referenced rule carries ``(RANGE_FACT, raw, fact)``;
        a link event that matched none gives no candidate (the replay judges its time: a range
        with a link fact kept and no usable time for it is not trusted).

        The raw values and the fact are looked up once per distinct ``_NAME_FIELDS`` values in
        the range (the same few host/address pairs fill background traffic), and those values
        are read once per link event: reading them again for the fact's memo cost 7 % of this
        method (250 MB of simulated NDJSON, 58,160 link events: 0.55 vs 0.51 s, median of 5)."""
        keys: tuple[str, ...] = self._keys(matched) if matched and self.keys else ()
        fields = event.fields
        eid = fields.get("EventID")
        if self.gate and eid.__class__ in (int, str) and eid in self.gate:
            if self.sessions:
                fact = extract_fact(fields, True, self.names)
                if fact is None and not keys:
                    return None
                ids = links.index(None, fact)
            else:
                known = links._keys
                try:
                    key: tuple | None = tuple(map(fields.get, _NAME_FIELDS))
                    ids = known.get(key)  # type: ignore[arg-type]
                except TypeError:  # a list or object where a name belongs (odd JSON exports)
                    key = ids = None
                if ids is None:
                    if key is None:
                        ids = links.index(_raw_key(fields), self._name_fact(fields))
                    else:
                        ids = known[key] = links.unparsed(key)
                if keys and ids[1] < 0:  # its candidate carries the fact
                    ids = links.index(links.raws[ids[0]], self._name_fact(fields, key))
            if keys:
                t = time_us(event)
                links.add(position, t, ids, True)
                return Candidate(t, file_index, position, event, keys,
                                 (RANGE_FACT, links.raws[ids[0]], links.facts[ids[1]]))
            when = fields.get("TimeCreated")
            links.add(position, when if when.__class__ is str and event._epoch is None else time_us(event),
                      ids, False)
            return None
        if not keys:
            return None
        return Candidate(time_us(event), file_index, position, event, keys, None)


class CorrelationStage:
    """Everything the hunt loop needs from correlation, built from loaded pySigma objects."""

    @classmethod
    def for_ruleset(cls, ruleset: Any, *, lateness: float = 300.0, **caps: int) -> CorrelationStage | None:
        """The stage for a loaded rule set (``scmwatch.sigma.RuleSet``); None when it has no
        correlation that can run, so the hunt skips candidate selection altogether. ``caps``:
        the correlator's state caps (``max_groups``, ``max_entries_per_group``, ``max_state``,
        ``max_held``), when not the defaults. A rule set from the cache gives its correlations
        flattened (``RuleSet.specs``) as long as its pySigma ones are not read: a hunt with the
        built-in pack then imports no pySigma correlation code."""
        specs = getattr(ruleset, "specs", None)
        items = specs() if specs is not None else None
        if items is None:
            items = ruleset.correlations
        if not items:
            return None
        stage = cls(items, lateness=lateness, **caps)
        return stage if stage.active else None

    def __init__(
        self,
        correlations: Iterable[Any],
        *,
        lateness: float = 300.0,
        max_groups: int = 200_000,
        max_entries_per_group: int = 10_000,
        max_state: int = 200_000,
        max_held: int = MAX_HELD,
    ) -> None:
        items = list(correlations)
        specs = [c for c in items if isinstance(c, CorrSpec)]
        converted, self.rejected = specs_from_sigma(c for c in items if not isinstance(c, CorrSpec))
        self.specs = specs + converted
        self.correlator = Correlator(
            self.specs, lateness=lateness, max_groups=max_groups, max_entries_per_group=max_entries_per_group,
            max_state=max_state, max_held=max_held,
        )
        self.selector = CandidateSelector(self.correlator.referenced_keys, _link_needs(self.specs))

    @property
    def active(self) -> bool:
        return bool(self.specs)

    @property
    def suppressed(self) -> frozenset[str]:
        """Rule keys (see :func:`rule_key`) whose own alerts ``generate: false`` suppresses."""
        return self.correlator.suppressed

    def suppressed_rule_ids(self, rules: Iterable[Any]) -> frozenset[str]:
        """Ids of those ``rules`` whose own alerts ``generate: false`` suppresses (the
        correlator still sees their matches)."""
        suppressed = self.correlator.suppressed
        if not suppressed:
            return frozenset()
        return frozenset(r.id for r in rules if rule_key(r) in suppressed)

    def correlate(self, merged: Iterable[Candidate]) -> Iterator[Alert]:
        """Correlate an already merged candidate stream, yielding alerts as they become final.

        The hunt feeds it from spill files (``scmwatch.spill.merge_runs``) so neither the
        candidates nor the alerts are ever all in memory.
        """
        push = self.correlator.push
        for cand in merged:
            yield from push(cand)
        yield from self.correlator.finish()

    def summary(self) -> dict[str, Any]:
        data = self.correlator.summary()
        if self.rejected:
            data["rejected"] = [{"title": t, "reason": r} for t, r in self.rejected]
        return data
