"""Streaming Sigma correlation (all eight correlation types) with entity links.

How the hunt loop uses it (see :class:`CorrelationStage`):

1. per file (in a ``--jobs`` worker or inline), after single-event matching, ask
   ``stage.selector.select(event, matched_rules, file_index, position)`` for a
   :class:`Candidate` -- ``None`` for the vast majority of events, so the correlator never sees
   the whole stream;
2. drop single-event alerts of rules in ``stage.suppressed`` (``generate: false``);
3. after all files, ``stage.run(per_file_candidate_lists)`` merges the lists by time and
   returns the correlation alerts; ``stage.summary()`` goes into the hunt summary under
   ``correlation``.

Because the parent always merges the same per-file lists in the same ``(time, file,
position)`` order, ``--jobs N`` gives exactly the alerts of ``--jobs 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scmwatch.alerts import Alert
from scmwatch.correlate.engine import Correlator
from scmwatch.correlate.links import DERIVED_FIELDS, LINK_EVENT_IDS, EntityLinks, extract_fact
from scmwatch.correlate.spec import CorrSpec, rule_key, spec_from_sigma, specs_from_sigma
from scmwatch.correlate.stream import Candidate, ReorderBuffer, merge_by_time, time_us
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
    "ReorderBuffer",
    "extract_fact",
    "merge_by_time",
    "rule_key",
    "spec_from_sigma",
    "specs_from_sigma",
    "time_us",
]


def _uses_links(specs: Iterable[CorrSpec]) -> bool:
    for spec in specs:
        names = list(spec.group_by) + [spec.field or ""]
        for mapping in spec.aliases.values():
            names.extend(mapping.values())
        if any(n.startswith("link.") for n in names):
            return True
    return False


@dataclass(frozen=True, slots=True)
class CandidateSelector:
    """The worker-side gate: small and picklable (it travels to ``--jobs`` workers)."""

    keys: frozenset[str]  # rule keys some correlation references
    links: bool  # whether any correlation uses a derived link.* field

    def select(
        self, event: Event, matched: Iterable[Any], file_index: int, position: int
    ) -> Candidate | None:
        keys: tuple[str, ...] = ()
        if matched and self.keys:
            keys = tuple(k for k in (rule_key(r) for r in matched) if k in self.keys)
        fact = None
        if self.links and event.fields.get("EventID") in _LINK_GATE:
            fact = extract_fact(event.fields)
        if not keys and fact is None:
            return None
        return Candidate(time_us(event), file_index, position, event if keys else None, keys, fact)


# EventID gate for link facts: readers give ints (EVTX) or strings (some JSON exports).
_LINK_GATE = frozenset(LINK_EVENT_IDS) | frozenset(str(i) for i in LINK_EVENT_IDS)


class CorrelationStage:
    """Everything the hunt loop needs from correlation, built from loaded pySigma objects."""

    def __init__(
        self,
        correlations: Iterable[Any],
        *,
        lateness: float = 300.0,
        max_groups: int = 200_000,
        max_entries_per_group: int = 10_000,
    ) -> None:
        items = list(correlations)
        specs = [c for c in items if isinstance(c, CorrSpec)]
        converted, self.rejected = specs_from_sigma(c for c in items if not isinstance(c, CorrSpec))
        self.specs = specs + converted
        self.correlator = Correlator(
            self.specs, lateness=lateness, max_groups=max_groups, max_entries_per_group=max_entries_per_group
        )
        self.selector = CandidateSelector(self.correlator.referenced_keys, _uses_links(self.specs))

    @property
    def active(self) -> bool:
        return bool(self.specs)

    @property
    def suppressed(self) -> frozenset[str]:
        """Rule keys (see :func:`rule_key`) whose own alerts ``generate: false`` suppresses."""
        return self.correlator.suppressed

    def is_suppressed(self, rule: Any) -> bool:
        return rule_key(rule) in self.correlator.suppressed

    def run(self, per_file: Iterable[Iterable[Candidate]]) -> list[Alert]:
        """Merge per-file candidate streams by time and correlate them; returns the alerts."""
        out: list[Alert] = []
        for cand in merge_by_time(per_file):
            out.extend(self.correlator.push(cand))
        out.extend(self.correlator.finish())
        return out

    def summary(self) -> dict[str, Any]:
        data = self.correlator.summary()
        if self.rejected:
            data["rejected"] = [{"title": t, "reason": r} for t, r in self.rejected]
        return data
