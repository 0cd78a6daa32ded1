"""The results summary: what a hunt found, counted while the alerts stream past.

Shown under the table (:meth:`Results.lines`, fitted to the terminal, 80 columns when not a
terminal) and kept as ``results`` in ``--summary`` (:meth:`Results.to_dict`): alerts by
level, by rule and by host (top N), by ATT&CK technique; the time span of the alerted events;
each host's first and last alert; and the lateral-movement links the alerts' own evidence shows
(source host -> target host, :func:`scmwatch.correlate.lateral.links_of`, the same edges a case
keeps in its ``lateral_edges`` view).

Memory stays bounded whatever the input: at most ``max_keys`` distinct rules, hosts, techniques
and links are tracked; alerts beyond that are still counted (``untracked``).

A hunt writing JSON lines does not feed its single-event alerts one by one: the workers gather
what :meth:`Results.add` would count of them into a :class:`Tally` while they hunt, and the
parent adds up the tallies (:meth:`Results.absorb`), see :class:`Tally`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any

from scmwatch.alerts import LEVEL_RANK, LEVELS, Alert, HitLine
from scmwatch.correlate.lateral import Link, links_of
from scmwatch.displaytime import show_time, zone_label
from scmwatch.escape import terminal
from scmwatch.events.model import format_time

_TECHNIQUE = re.compile(r"attack\.(t\d{4}(?:\.\d{3})?)", re.IGNORECASE)
MAX_KEYS = 10_000
TOP = 10  # rows per section under the table
TOP_JSON = 50  # rows per ranked section in --summary
MAX_ADDRESSES = 8  # source addresses kept per link


@dataclass
class _Span:
    """How many, and the first and last event time."""

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
    """A rule's alerts."""

    title: str
    level: str
    count: int = 0


@dataclass
class _Link:
    """A lateral-movement link: when, from which addresses, which services."""

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
            if a.links:
                self._link(a.links, 1)
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
        for tech in self._techniques(rule_id, tags):
            if self._room(self.techniques, tech):
                self.techniques[tech] += n

    def _span(self, t: float) -> None:
        if t:
            self.first = t if not self.first else min(self.first, t)
            self.last = max(self.last, t)

    def _add_links(self, evidence: list[Any], n: int = 1) -> None:
        self._link(links_of(evidence), n)

    def _link(self, links: Iterable[Link], n: int) -> None:
        for link in links:
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

    def absorbable(self, tally: Tally) -> bool:
        """Can :meth:`absorb` take ``tally``: this summary has counted nothing yet, the tally is
        complete (not ``overflow``) and every key of it fits under ``max_keys`` (so in-order
        adds would have tracked them all)?"""
        if self.total or tally.overflow:
            return False
        rules: set[str] = set()
        techs: set[str] = set()
        for (rule_id, _, _, tags), _ in sorted(tally.rules.items(), key=_FIRST):
            rules.add(rule_id)
            techs.update(self._techniques(rule_id, tags))  # its first alert's tags, as add
        return max(len(rules), len(tally.hosts), len(tally.links), len(techs)) <= self.max_keys

    def absorb(self, tally: Tally, checked: bool = False) -> None:
        """Count the alerts of ``tally`` as :meth:`add` would have, one by one in merge order
        (only when :meth:`absorbable`): what the order decides (a rule's title, level and
        tags, a link's first addresses and services) the tally kept by merge key. ``checked``:
        :meth:`absorbable` said yes of this tally already (it sorts and reads every rule of
        it: 1.6M instructions of the parent's tail on x5 when asked twice, callgrind)."""
        if not checked and not self.absorbable(tally):
            raise ValueError("absorb needs an empty summary and a complete tally that fits max_keys")
        for (rule_id, title, level, _), (count, _) in sorted(tally.rules.items(), key=_FIRST):
            self.total += count
            self.by_level[level] += count
            rule = self.rules.get(rule_id)
            if rule is None:
                rule = self.rules[rule_id] = _Rule(title, level)
            rule.count += count
            for tech in self._techs[rule_id]:  # its first alert's tags (absorbable read them)
                self.techniques[tech] += count
        for host, (count, first_t, last_t) in tally.hosts.items():
            self.hosts[host] = _Span(count, first_t, last_t)
        for key, (count, first_t, last_t, addresses, services) in tally.links.items():
            self.links[key] = _Link(_Span(count, first_t, last_t), _in_order(addresses), _in_order(services))
        self.first, self.last = tally.first, tally.last

    def _techniques(self, rule_id: str, tags: Iterable[str]) -> list[str]:
        techs = self._techs.get(rule_id)
        if techs is None:
            techs = self._techs[rule_id] = sorted({m.upper() for tag in tags
                                                   for m in _TECHNIQUE.findall(str(tag))})
        return techs

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
            import textwrap  # only for the table: ~1.7 ms of every hunt's start when imported at the top

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


_FIRST = lambda kv: kv[1][1]  # noqa: E731  (a tally entry's first merge key)


def _in_order(values: dict[str, tuple]) -> list[str]:
    return [v for v, _ in sorted(values.items(), key=lambda kv: kv[1])]


class Tally:
    """What :meth:`Results.add` would count of some alerts, gathered in any order: hunt's
    workers tally the single-event alerts they write as JSON lines, the parent adds the
    tallies up (:meth:`merge`) and the summary takes the sum (:meth:`Results.absorb`).

    The parent otherwise called :meth:`Results.add` (and hunt's own alert counts) for every
    alert in merge order, after the last worker was done: measured on all SigmaHQ over the
    EVTX attack samples x20 (23,880 alerts, ``--jobs 2``, JSON lines), the parent's CPU for
    the merge and output went from 0.164-0.172 to 0.089-0.092 s (three interleaved pairs); a
    hit costs its worker ~0.4 us more.

    Each key is counted as it comes; what the order decides is kept by the alert's merge key
    (:data:`scmwatch.hunt.Hit` ``key``): a rule's first title and level, each link's first
    ``MAX_ADDRESSES`` addresses and services (a part keeps its own first ones: a value among
    the first of all is among the first of the part it first appears in). A tally holds at most
    ``max_keys`` rules, hosts and links; one more and it is ``overflow`` and stops counting,
    since which keys in-order adds would track then depends on the order: the summary is
    then fed alert by alert as before.
    """

    __slots__ = ("first", "hosts", "last", "links", "max_keys", "overflow", "rules")

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        # (rule id, title, level, tags) -> [alerts, first merge key]: what Results.add reads of an alert
        self.rules: dict[tuple, list] = {}
        self.hosts: dict[str, list] = {}  # host or "-" -> [alerts, first time, last time]
        # (source, target) -> [alerts, first time, last time, {address: merge key}, {service: merge key}]
        self.links: dict[tuple[str, str], list] = {}
        self.first = 0.0
        self.last = 0.0
        self.overflow = False

    def add(self, key: tuple, rule: tuple, host: str, t: float, links: Iterable[Link] | None = None,
            times: Iterable[float] | None = None) -> None:
        """One alert at merge ``key`` of ``rule`` (:func:`rule_key`): its event's time ``t``,
        host and links; ``times`` of the evidence events when not only ``t``."""
        if self.overflow:
            return
        e = self.rules.get(rule)
        if e is None:
            if len(self.rules) >= self.max_keys:
                return self._overflow()
            self.rules[rule] = [1, key]
        else:
            e[0] += 1
            if key < e[1]:
                e[1] = key
        h = self.hosts.get(host or "-")
        if h is None:
            if len(self.hosts) >= self.max_keys:
                return self._overflow()
            h = self.hosts[host or "-"] = [0, 0.0, 0.0]
        h[0] += 1
        if t:
            if not h[1] or t < h[1]:
                h[1] = t
            if t > h[2]:
                h[2] = t
        for u in (t,) if times is None else times:
            if u:
                if not self.first or u < self.first:
                    self.first = u
                if u > self.last:
                    self.last = u
        for link in links or ():
            k = (link.source_host, link.target_host)
            e = self.links.get(k)
            if e is None:
                if len(self.links) >= self.max_keys:
                    return self._overflow()
                e = self.links[k] = [0, 0.0, 0.0, {}, {}]
            e[0] += 1
            if link.time:
                e[1] = link.time if not e[1] else min(e[1], link.time)
                e[2] = max(e[2], link.time)
            if link.source_ip:
                _first_values(e[3], link.source_ip, key)
            if link.service:
                _first_values(e[4], link.service, key)
        return None

    def add_rule(self, key: tuple, rule: tuple, *_: object) -> None:
        """:meth:`add` of the rule's count and first merge key only, for a run whose summary
        reads nothing else of the tally (the alert counts by rule and level): its hosts, links
        and times stay empty. Under half of :meth:`add`'s CPU (x5's 5,970 hits: 1.7-1.9 vs 3.9-4.1 ms)."""
        if self.overflow:
            return None
        e = self.rules.get(rule)
        if e is None:
            if len(self.rules) >= self.max_keys:
                return self._overflow()
            self.rules[rule] = [1, key]
        else:
            e[0] += 1
            if key < e[1]:
                e[1] = key
        return None

    def add_alert(self, key: tuple, a: Alert) -> None:
        """A single-event or correlation :class:`Alert` (not a ``--dedup`` row) at merge ``key``."""
        evidence = a.events if a.events else [a.event]
        links = links_of(evidence) if a.events or may_link(a.event.fields) else None
        rule = rule_key(a.rule_id, a.title, a.level, a.tags)
        self.add(key, rule, a.host, a.time, links, [ev.time for ev in evidence])

    def merge(self, other: Tally | None) -> None:
        """Add ``other``'s alerts (None: alerts that were not tallied, so this tally is incomplete)."""
        if self.overflow:
            return
        if other is None or other.overflow:
            return self._overflow()
        for rule, o in other.rules.items():
            e = self.rules.get(rule)
            if e is None:
                self.rules[rule] = list(o)
            else:
                e[0] += o[0]
                e[1] = min(e[1], o[1])
        for host, o in other.hosts.items():
            h = self.hosts.get(host)
            if h is None:
                self.hosts[host] = list(o)
            else:
                _span_into(h, o)
        for k, o in other.links.items():
            e = self.links.get(k)
            if e is None:
                self.links[k] = [o[0], o[1], o[2], dict(o[3]), dict(o[4])]
                continue
            _span_into(e, o)
            for mine, theirs in ((e[3], o[3]), (e[4], o[4])):
                for value, key in theirs.items():
                    _first_values(mine, value, key)
        if other.first:
            self.first = other.first if not self.first else min(self.first, other.first)
        self.last = max(self.last, other.last)
        if max(len(self.rules), len(self.hosts), len(self.links)) > self.max_keys:
            self._overflow()
        return None

    def _overflow(self) -> None:
        self.overflow = True
        self.rules, self.hosts, self.links = {}, {}, {}


def rule_key(rule_id: str, title: str, level: str, tags: Iterable[str]) -> tuple:
    """What the results summary reads of an alert's rule, as a :class:`Tally` key."""
    return (rule_id, title, level, tuple(tags))


def tally_sum(tallies: Iterable[Tally | None]) -> Tally | None:
    """Tallies of parts added up: None when no part is tallied, ``overflow`` when some are not."""
    parts = list(tallies)
    if all(t is None for t in parts):
        return None
    out = Tally()
    for t in parts:
        out.merge(t)
    return out


def _span_into(into: list, other: list) -> None:
    """[count, first time, last time, ...] of ``other`` added to ``into``'s (as :class:`_Span`)."""
    into[0] += other[0]
    if other[1]:
        into[1] = other[1] if not into[1] else min(into[1], other[1])
    into[2] = max(into[2], other[2])


def _first_values(values: dict[str, tuple], value: str, key: tuple) -> None:
    """Keep ``value`` at its smallest merge key among the ``MAX_ADDRESSES`` first values."""
    old = values.get(value)
    if old is not None:
        if key < old:
            values[value] = key
        return
    if len(values) < MAX_ADDRESSES:
        values[value] = key
        return
    last = max(values, key=values.__getitem__)
    if key < values[last]:
        del values[last]
        values[value] = key


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
