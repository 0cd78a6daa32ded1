"""The matcher: (Channel, EventID) index → Aho-Corasick necessary-literal prefilter → predicates.

Per event the engine does only what depends on the event: one dict lookup for its bucket (built
once per distinct (Channel, EventID) and cached), one lower-cased join of the event's values
scanned by the bucket's automaton, and the predicates of the rules whose literals occurred (plus
the few rules without a necessary-literal set). Measured effect of each stage: notes §3.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import ahocorasick

from scmwatch.events.model import Event
from scmwatch.sigma.compile import Low
from scmwatch.sigma.ruleset import CompiledRule, RuleSet, Unit


@dataclass(slots=True)
class Bucket:
    """Everything the rules of one (Channel, EventID) need, built once."""

    units: tuple[Unit, ...]
    always: tuple[int, ...]  # positions of units evaluated on every event of this key
    automaton: object | None  # literal -> tuple of unit positions
    empty: bool


EMPTY = Bucket((), (), None, True)


class Engine:
    """Single-event matching over a :class:`RuleSet`. ``match(event)`` → matching rules."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.by_key: dict[tuple, list[Unit]] = {}
        for rule in ruleset.rules:
            for u in rule.units:
                for k in u.keys:
                    self.by_key.setdefault(k, []).append(u)
        self._buckets: dict[tuple, Bucket] = {}
        self.stats_candidates = 0  # predicates evaluated (for benchmarks / tuning)

    # ------------------------------------------------------------------ index
    def bucket(self, channel: object, eid: object) -> Bucket:
        key = (channel, eid)
        b = self._buckets.get(key)
        if b is None:
            b = self._build(channel, eid)
            self._buckets[key] = b
        return b

    def _build(self, channel: object, eid: object) -> Bucket:
        ch = channel.lower() if isinstance(channel, str) else None
        try:
            e = int(eid) if eid is not None and not isinstance(eid, bool) else None
        except (TypeError, ValueError):
            e = None
        seen: dict[int, Unit] = {}
        for k in ((ch, e), (ch, None), (None, e), (None, None)):
            for u in self.by_key.get(k, ()):
                seen[id(u)] = u
        if not seen:
            return EMPTY
        units = tuple(sorted(seen.values(), key=lambda u: u.order))
        always = []
        by_lit: dict[str, list[int]] = {}
        for i, u in enumerate(units):
            if u.pred is False:
                continue
            if u.literals is None:
                always.append(i)
            else:
                for lit in u.literals:
                    by_lit.setdefault(lit, []).append(i)
        automaton = None
        if by_lit:
            automaton = ahocorasick.Automaton()
            for lit, idx in by_lit.items():
                automaton.add_word(lit, tuple(idx))
            automaton.make_automaton()
        return Bucket(units, tuple(always), automaton, False)

    # ------------------------------------------------------------------ matching
    def match(self, event: Event) -> list[CompiledRule]:
        return self.match_fields(event.fields)

    def match_fields(self, f: dict) -> list[CompiledRule]:
        b = self.bucket(f.get("Channel"), f.get("EventID"))
        if b.empty:
            return []
        cand: set[int] | list[int]
        if b.automaton is not None:
            parts = []
            for v in f.values():
                if v.__class__ is str:
                    parts.append(v)
                elif v is not None:
                    if v.__class__ is list:
                        parts.extend(x if x.__class__ is str else str(x) for x in v)
                    else:
                        parts.append(str(v))
            text = "\x00".join(parts).lower()
            cand = set(b.always)
            for _, idx in b.automaton.iter(text):
                cand.update(idx)
            if not cand:
                return []
            order = sorted(cand)
        else:
            order = b.always
        low = Low(f)
        units = b.units
        out = []
        self.stats_candidates += len(order)
        for i in order:
            u = units[i]
            p = u.pred
            if p is True or p(f, low):
                out.append(u.rule)
        if len(out) > 1:
            # One rule, several sources can never both apply to one event, but stay safe.
            out = list(dict.fromkeys(out))
        return out
