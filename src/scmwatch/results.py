"""The results summary: what a hunt found, counted while the alerts stream past.

Shown under the table (:meth:`Results.lines`, fitted to the terminal, 80 columns when not a
terminal) and kept as ``results`` in ``--summary`` (:meth:`Results.to_dict`): alerts by
level, by rule and by host (top N), by ATT&CK technique; the time span of the alerted events;
each host's first and last alert; and the lateral-movement links the alerts' own evidence shows
(source host -> target host, :func:`scmwatch.correlate.lateral.links_of`, the same edges a case
keeps in its ``lateral_edges`` view).

Memory stays bounded whatever the input: at most ``max_keys`` distinct rules, hosts, techniques
and links are tracked; alerts beyond that are still counted (``untracked``).
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any

from scmwatch.alerts import LEVEL_RANK, LEVELS, Alert, HitLine
from scmwatch.correlate.lateral import links_of
from scmwatch.displaytime import show_time, zone_label
from scmwatch.escape import terminal
from scmwatch.events.model import Event, format_time

_TECHNIQUE = re.compile(r"attack\.(t\d{4}(?:\.\d{3})?)", re.IGNORECASE)
MAX_KEYS = 10_000
TOP = 10  # rows per section under the table
TOP_JSON = 50  # rows per ranked section in --summary
MAX_ADDRESSES = 8  # source addresses kept per link


@dataclass
class _Span:
    count: int = 0
    first: float = 0.0
    last: float = 0.0

    def add(self, t: float, n: int = 1) -> None:
        self.count += n
        if t:
            self.first = t if not self.first else min(self.first, t)
            self.last = max(self.last, t)


@dataclass
class _Rule:
    title: str
    level: str
    count: int = 0


@dataclass
class _Link:
    span: _Span = field(default_factory=_Span)
    addresses: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)


class Results:
    """Feed every alert written to :meth:`add`; read :meth:`to_dict` / :meth:`lines` at the end."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.total = 0
        self.rows = 0  # --dedup: the rows written (``total`` counts the alerts they stand for)
        self.by_level: Counter = Counter()
        self.rules: dict[str, _Rule] = {}
        self.hosts: dict[str, _Span] = {}
        self.techniques: Counter = Counter()
        self.links: dict[tuple[str, str], _Link] = {}
        self.first = 0.0  # earliest and latest time of an alerted event (evidence included)
        self.last = 0.0
        self.untracked = 0
        self._techs: dict[str, list[str]] = {}  # rule id -> its technique ids (tags are per rule)

    def _room(self, table: dict | Counter, key: Any) -> bool:
        if key in table or len(table) < self.max_keys:
            return True
        self.untracked += 1
        return False

    def add(self, a: Alert | HitLine) -> None:
        """Count an alert; a ``--dedup`` row counts as the alerts it stands for."""
        if type(a) is HitLine:
            self._count(a.rule_id, a.title, a.level, a.tags, a.host, a.time, 1)
            self._span(a.time)
            if a.link_fields is not None:
                self._add_links([Event(a.link_fields, a.source, None, "", a.time)])
            return
        n = 1
        if a.repeat is not None:
            n = a.repeat.count
            self.rows += 1
        self._count(a.rule_id, a.title, a.level, a.tags, a.host, a.time, n)
        if n > 1:
            span = self.hosts.get(a.host or "-")
            if span is not None:
                span.add(a.repeat.last, 0)
        evidence = a.events if a.events else [a.event]
        for ev in evidence:
            self._span(ev.time)
        if n > 1:
            self.last = max(self.last, a.repeat.last)
        if a.events or may_link(a.event.fields):
            self._add_links(evidence, n)

    def _count(self, rule_id: str, title: str, level: str, tags: list[str], host: str, t: float,
               n: int) -> None:
        self.total += n
        self.by_level[level] += n
        if self._room(self.rules, rule_id):
            rule = self.rules.get(rule_id)
            if rule is None:
                rule = self.rules[rule_id] = _Rule(title, level)
            rule.count += n
        host = host or "-"
        if self._room(self.hosts, host):
            span = self.hosts.get(host)
            if span is None:
                span = self.hosts[host] = _Span()
            span.add(t, n)
        techs = self._techs.get(rule_id)
        if techs is None:
            techs = self._techs[rule_id] = sorted({m.upper() for tag in tags
                                                   for m in _TECHNIQUE.findall(str(tag))})
        for tech in techs:
            if self._room(self.techniques, tech):
                self.techniques[tech] += n

    def _span(self, t: float) -> None:
        if t:
            self.first = t if not self.first else min(self.first, t)
            self.last = max(self.last, t)

    def _add_links(self, evidence: list[Any], n: int = 1) -> None:
        for link in links_of(evidence):
            key = (link.source_host, link.target_host)
            if not self._room(self.links, key):
                continue
            item = self.links.get(key)
            if item is None:
                item = self.links[key] = _Link()
            item.span.add(link.time, n)
            for value, into in ((link.source_ip, item.addresses), (link.service, item.services)):
                if value and value not in into and len(into) < MAX_ADDRESSES:
                    into.append(value)

    # -- reading ----------------------------------------------------------------------------

    def _ranked_rules(self) -> list[tuple[str, _Rule]]:
        return sorted(self.rules.items(), key=lambda kv: (-kv[1].count, -LEVEL_RANK.get(kv[1].level, 0),
                                                          kv[1].title, kv[0]))

    def _ranked_hosts(self) -> list[tuple[str, _Span]]:
        return sorted(self.hosts.items(), key=lambda kv: (-kv[1].count, kv[0]))

    def _ranked_links(self) -> list[tuple[tuple[str, str], _Link]]:
        return sorted(self.links.items(), key=lambda kv: (-kv[1].span.count, kv[0]))

    def to_dict(self, top: int = TOP_JSON) -> dict[str, Any]:
        """The ``results`` object of ``--summary`` (times in UTC, ISO 8601)."""
        def iso(t: float) -> str | None:
            return format_time(t) if t else None

        return {
            "alerts": self.total,
            **({"rows": self.rows} if self.rows else {}),
            "by_level": {lvl: self.by_level[lvl] for lvl in reversed(LEVELS) if self.by_level[lvl]},
            "rules": len(self.rules),
            "top_rules": [{"rule_id": rid, "title": r.title, "level": r.level, "alerts": r.count}
                          for rid, r in self._ranked_rules()[:top]],
            "hosts": len(self.hosts),
            "top_hosts": [{"host": h, "alerts": span.count, "first_alert": iso(span.first),
                           "last_alert": iso(span.last)} for h, span in self._ranked_hosts()[:top]],
            "by_technique": dict(sorted(self.techniques.items(), key=lambda kv: (-kv[1], kv[0]))),
            "first_event": iso(self.first),
            "last_event": iso(self.last),
            "lateral_movement": [
                {"source_host": src, "target_host": dst, "alerts": item.span.count,
                 "first_seen": iso(item.span.first), "last_seen": iso(item.span.last),
                 "source_ips": sorted(item.addresses), "services": sorted(item.services)}
                for (src, dst), item in self._ranked_links()],
            "untracked": self.untracked,
        }

    def lines(self, tz: tzinfo = UTC, width: int = 80, top: int = TOP) -> list[str]:
        """The summary as text lines of at most ``width`` terminal cells (log text escaped)."""
        if not self.total:
            return []
        zone = zone_label(tz)
        out = ["", "Results summary", "  alerts: " + f"{self.total:,} (" + ", ".join(
            f"{lvl} {self.by_level[lvl]:,}" for lvl in reversed(LEVELS) if self.by_level[lvl]) + ")"]
        if self.rows:
            out.append(f"  --dedup: {self.rows:,} rows above; every count here is of alerts")
        if self.first:
            first, last = show_time(self.first, tz, 0), show_time(self.last, tz, 0)
            out.append(f"  alerted events: {first} .. {last} ({zone})")
        out.append(f"  top rules ({min(top, len(self.rules))} of {len(self.rules):,}):")
        for _, r in self._ranked_rules()[:top]:
            out.append(f"  {r.count:>7,}  {r.level[:8]:<8}  {terminal(r.title)}")
        shown = min(top, len(self.hosts))
        out.append(f"  top hosts ({shown} of {len(self.hosts):,}): alerts, first and last alert ({zone}):")
        for h, span in self._ranked_hosts()[:top]:
            first, last = show_time(span.first, tz, 0), show_time(span.last, tz, 0)
            out.append(f"  {span.count:>7,}  {first}  {last}  {terminal(h)}")
        if self.techniques:
            techs = sorted(self.techniques.items(), key=lambda kv: (-kv[1], kv[0]))
            text = ", ".join(f"{t} {n:,}" for t, n in techs[:top])
            text += f", +{len(techs) - top} more" if len(techs) > top else ""
            out.extend(textwrap.wrap(text, max(20, width), initial_indent="  ATT&CK: ",
                                     subsequent_indent="          ", break_on_hyphens=False))
        if self.links:
            out.append(f"  lateral movement ({len(self.links):,} links, source -> target, alerts):")
            for (src, dst), item in self._ranked_links()[:top]:
                shown = [ip for ip in item.addresses[:2] if ip != src]
                via = f"  ({', '.join(shown)})" if shown else ""
                out.append(f"  {item.span.count:>7,}  {terminal(src)} -> {terminal(dst)}{via}")
            if len(self.links) > top:
                out.append(f"  … {len(self.links) - top:,} more links (--summary FILE has them all)")
        if self.untracked:
            out.append(f"  ({self.untracked:,} alerts beyond {self.max_keys:,} distinct keys: counted only)")
        return [fit(line, width) for line in out]


def may_link(f: dict[str, Any]) -> bool:
    """Can one event alone show a lateral link (links_of)? A remote address or workstation, or
    a UNC host on a command line. Cheap, and false for most single-event alerts: it took
    :meth:`Results.add` on the demo's alerts from 51 to 22 µs per alert."""
    if f.get("IpAddress") or f.get("WorkstationName") or f.get("SourceIp"):
        return True
    cmd = f.get("CommandLine") or f.get("ScriptBlockText")
    return bool(cmd) and "\\\\" in str(cmd)


def fit(line: str, width: int) -> str:
    """``line`` cut to ``width`` terminal cells, ending in … when cut (Rich is imported only for
    the table and this footer: ~15 ms that a JSON-lines hunt does not pay)."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(line) <= width:
        return line
    return set_cell_size(line, width - 1) + "…"
