"""Lateral-movement edges an alert's own evidence shows (source host -> target host).

Derived from the alert's evidence only (never from the whole stream), so they are the same
whatever else was hunted with it: the case store keeps them per alert (``links`` view) and the
results summary counts them.

* a source-side command line naming a remote host (``psexec \\\\B``, ``sc \\\\B create``):
  edge from the event's host to that host (``how = command-line``);
* an inbound event with a remote address or workstation (5145, 4624, 4697 by its logon
  session): edge from that source to the event's host (``how = inbound``).

Host names are the short lower-case form of :mod:`scmwatch.correlate.links`, so ``WS1`` and
``ws1.example.corp`` are one node of the lateral-movement graph.
"""

from __future__ import annotations

from typing import NamedTuple

from scmwatch.correlate.links import EntityLinks, extract_fact, service_name, short_host
from scmwatch.events.model import Event


class Link(NamedTuple):
    time: float
    source_host: str
    source_ip: str | None
    target_host: str
    service: str | None
    how: str


def links_of(evidence: list[Event]) -> list[Link]:
    """Source -> target host edges this evidence shows, one per (source, target) pair."""
    maps = EntityLinks(max_entries=1024)
    for ev in evidence:
        fact = extract_fact(ev.fields)
        if fact is not None:
            maps.apply(fact)
    service = next((s for s in map(service_name, (e.fields for e in evidence)) if s), None)
    out: dict[tuple[str, str], Link] = {}
    for ev in evidence:
        f = ev.fields
        host = short_host(f.get("Computer"))
        if not host:
            continue
        target = maps.target_host(f)
        if target and target != host:
            _add(out, Link(ev.time, host, None, target, service, "command-line"))
            continue
        src_ip = maps.derive(f, "link.source_ip")
        src = maps.derive(f, "link.source_host") or src_ip
        if src and src != host:
            _add(out, Link(ev.time, src, src_ip, host, service, "inbound"))
    return list(out.values())


def _add(out: dict[tuple[str, str], Link], link: Link) -> None:
    key = (link.source_host, link.target_host)
    old = out.get(key)
    if old is None:
        out[key] = link
    elif old.source_ip is None and link.source_ip is not None:
        out[key] = old._replace(source_ip=link.source_ip)
