"""Triage filters on the alert stream: host, time, tag, rule, status and level (``hunt --include-host`` …).

They run on the final, merged alert stream, after correlation: every event still feeds the
correlator, so a lateral-movement chain whose first step is on an excluded host or before
``--from`` is still found (and shown when its own alert passes). Matching is case-insensitive;
globs are :mod:`fnmatch` patterns.
"""

from __future__ import annotations

import functools
import re
import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fnmatch import translate
from typing import Any

from scmwatch.alerts import Alert

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Sigma's rule ``status`` values (specification v2)
STATUSES = ("stable", "test", "experimental", "deprecated", "unsupported")


class FilterError(ValueError):
    """A filter value that cannot be understood (the message is one line)."""


def parse_time(text: str, *, end: bool = False, now: float | None = None) -> float:
    """``text`` as epoch seconds: ISO 8601 (no zone = UTC), a date, or ``2d``/``3h``/``30m``/``1w``/``45s``
    ago. A bare date as the end (``end=True``) means the end of that day, so ``--to 2024-05-01``
    keeps all of 1 May."""
    m = _RELATIVE.match(text)
    if m:
        return (_time.time() if now is None else now) - float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    raw = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            day = datetime.combine(date.fromisoformat(raw), datetime.min.time(), tzinfo=UTC)
            return (day + timedelta(days=1) if end else day).timestamp() - (1e-6 if end else 0)
        parsed = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise FilterError(f"{text!r} is not a time (ISO 8601, YYYY-MM-DD, or relative like 2d, 3h, "
                          "30m)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _globs(patterns: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(p.casefold() for p in patterns or () if p)


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], Any]:
    """One regex for a flag's globs: a call per value, not per value and glob (the filters ran
    at ~20 us per alert with :func:`fnmatch.fnmatchcase` per pair, ~4 % of a hunt that writes
    every alert)."""
    return re.compile("|".join(translate(p) for p in patterns), re.DOTALL).match


def _any(values: Sequence[str], patterns: tuple[str, ...]) -> bool:
    match = _matcher(patterns)
    return any(match(v) is not None for v in values)


@dataclass(slots=True)
class AlertFilter:
    """What ``hunt`` keeps; an empty filter keeps everything. ``dropped`` counts what it did not."""

    include_hosts: tuple[str, ...] = ()
    exclude_hosts: tuple[str, ...] = ()
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    include_rules: tuple[str, ...] = ()
    exclude_rules: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    include_status: tuple[str, ...] = ()
    exclude_status: tuple[str, ...] = ()
    # rule id -> its Sigma status (lower-case, "" when the rule has none); see :meth:`with_statuses`
    status_of: Mapping[str, str] = field(default_factory=dict)
    dropped: int = 0

    @classmethod
    def build(cls, *, include_hosts: Sequence[str] | None = None, exclude_hosts: Sequence[str] | None = None,
              include_tags: Sequence[str] | None = None, exclude_tags: Sequence[str] | None = None,
              include_rules: Sequence[str] | None = None, exclude_rules: Sequence[str] | None = None,
              levels: Sequence[str] | None = None, start: str | None = None, end: str | None = None,
              include_status: Sequence[str] | None = None, exclude_status: Sequence[str] | None = None,
              now: float | None = None) -> AlertFilter:
        """From command-line values; raises :class:`FilterError` for a time it cannot read, an
        unknown status or an empty range."""
        for s in (*(include_status or ()), *(exclude_status or ())):
            if s.casefold() not in STATUSES:
                raise FilterError(f"{s!r} is not a Sigma rule status ({', '.join(STATUSES)})")
        f = cls(_globs(include_hosts), _globs(exclude_hosts), _globs(include_tags), _globs(exclude_tags),
                _globs(include_rules), _globs(exclude_rules), _globs(levels),
                parse_time(start, now=now) if start else None,
                parse_time(end, end=True, now=now) if end else None,
                _globs(include_status), _globs(exclude_status))
        if f.start is not None and f.end is not None and f.start > f.end:
            raise FilterError("--from is after --to: nothing could match")
        return f

    @property
    def active(self) -> bool:
        return bool(self.include_hosts or self.exclude_hosts or self.include_tags or self.exclude_tags
                    or self.include_rules or self.exclude_rules or self.levels
                    or self.include_status or self.exclude_status
                    or self.start is not None or self.end is not None)

    def with_statuses(self, ruleset: Any) -> AlertFilter:
        """Learn each rule's and correlation's Sigma ``status`` from a loaded rule set (the
        alert does not carry it); a rule without one has status ``""``, which no
        ``--include-status`` keeps."""
        if self.include_status or self.exclude_status:
            status = {r.id: (r.status or "") for r in ruleset.rules}
            for c in ruleset.correlations:
                status[str(c.id)] = str(getattr(c.status, "name", "") or "").casefold()
            self.status_of = status
        return self

    def __call__(self, alert: Alert) -> bool:
        if self.passes(alert):
            return True
        self.dropped += 1
        return False

    def passes(self, alert: Alert) -> bool:
        if self.levels and alert.level.casefold() not in self.levels:
            return False
        if self.include_status or self.exclude_status:
            status = self.status_of.get(alert.rule_id, "")
            if self.include_status and status not in self.include_status:
                return False
            if self.exclude_status and status in self.exclude_status:
                return False
        if self.start is not None or self.end is not None:
            t = alert.time
            if not t or (self.start is not None and t < self.start) or (
                    self.end is not None and t > self.end):
                return False  # an alert without a time cannot be shown to lie in the range
        if self.include_hosts or self.exclude_hosts:
            fqdn = alert.host.casefold()
            names = (fqdn, fqdn.split(".", 1)[0])
            if self.include_hosts and not _any(names, self.include_hosts):
                return False
            if self.exclude_hosts and _any(names, self.exclude_hosts):
                return False
        if self.include_tags or self.exclude_tags:
            tags = [t.casefold() for t in alert.tags]
            tags += [t.removeprefix("attack.") for t in tags if t.startswith("attack.")]
            if self.include_tags and not _any(tags, self.include_tags):
                return False
            if self.exclude_tags and _any(tags, self.exclude_tags):
                return False
        if self.include_rules or self.exclude_rules:
            names = (alert.rule_id.casefold(), alert.title.casefold())
            if self.include_rules and not _any(names, self.include_rules):
                return False
            if self.exclude_rules and _any(names, self.exclude_rules):
                return False
        return True
