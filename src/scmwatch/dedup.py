"""``hunt --dedup``: collapse repeated alerts into one row with a count, first and last time.

Two alerts are the same finding when they come from the same rule on the same host with the same
values of the rule's key fields: its ``fields:`` when it names them, else the fields its
condition tests (less the gating ``EventID``/``Channel``/``Provider_Name``), else the key fields of
the event's kind (:data:`scmwatch.sinks.explain.KEY_FIELDS`: 7045 → ServiceName, ImagePath, ...),
else the fields that usually tell a service story (:data:`scmwatch.sinks.explain.FALLBACK`).
The row kept is the first alert (its event, source and record id), with
:class:`~scmwatch.alerts.Repeat` telling how many there were and when the last one was. A
correlation alert is never collapsed: its chain of evidence is the point.

Every group's first alert is held until the stream ends (rows come out in the order of their
first alert, so still time-sorted): memory grows with the distinct findings, not the alerts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from scmwatch.alerts import Alert, Repeat
from scmwatch.sinks.explain import FALLBACK, GATING, key_fields


def rule_key_fields(rule: Any | None) -> tuple[str, ...]:
    """The fields whose values tell two alerts of ``rule`` apart; ``()`` when the rule names
    none (it matches on EventID alone): then the event's kind says (:func:`event_key_fields`)."""
    if rule is None:
        return ()
    if rule.fields:
        return tuple(rule.fields)
    return tuple(f for f in dict.fromkeys(rule.detection_fields) if f not in GATING)


def event_key_fields(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """The key fields of an event's (Channel, EventID), else the general fallback."""
    return key_fields(fields) or FALLBACK


def _hashable(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return repr(v)


class Dedup:
    """Feed it the (time-sorted) alert stream with :meth:`add`, then take the rows from :meth:`alerts`.

    ``collapsed`` counts the alerts folded into an earlier row.
    """

    def __init__(self, rules: Mapping[str, Any]) -> None:
        self.rules = rules
        self.groups: dict[tuple, list] = {}  # key -> [first alert, count, last time]
        self.collapsed = 0
        self._names: dict[str, tuple[str, ...]] = {}

    def add(self, a: Alert) -> None:
        if a.correlation is not None or a.events is not None:
            self.groups[(None, len(self.groups))] = [a, 1, a.time]
            return
        names = self._names.get(a.rule_id)
        if names is None:
            names = self._names[a.rule_id] = rule_key_fields(self.rules.get(a.rule_id))
        f = a.event.fields
        if not names:
            names = event_key_fields(f)
        key = (a.rule_id, a.host.casefold(),
               tuple([v if v is None or v.__class__ is str else _hashable(v) for v in map(f.get, names)]))
        g = self.groups.get(key)
        if g is None:
            self.groups[key] = [a, 1, a.time]
        else:
            g[1] += 1
            if a.time > g[2]:
                g[2] = a.time
            self.collapsed += 1

    def alerts(self) -> Iterator[Alert]:
        """One alert per group, each with its :class:`Repeat`, in the order of first appearance."""
        groups, self.groups = self.groups, {}
        for a, n, last in groups.values():
            a.repeat = Repeat(n, a.time, last)
            yield a
