"""ECS: NDJSON in the Elastic Common Schema (``--format ecs``), one alert per line.

ECS names carry the alert (``@timestamp``, ``message``, ``event.kind: alert``, ``rule.*``,
``threat.*`` from the ATT&CK tags, ``host.name``, ``log.*``, ``source.ip``/``destination.ip``
where the event names a valid address); the raw Windows event goes where Winlogbeat puts it
(``winlog.channel``, ``winlog.event_id``, ``winlog.record_id``, ``winlog.computer_name``,
``winlog.provider_name``, every other field in ``winlog.event_data`` as text), so no log field
can land in ECS ``event.*``. Other events (Zeek) and a correlation's chain go under the custom
``scmwatch`` namespace, which ECS does not use. Field names and types are checked against ECS
9.4.0 (tests/fixtures/ecs/ecs_subset.yml).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from scmwatch.alerts import LEVEL_RANK, Alert
from scmwatch.correlate.links import norm_ip
from scmwatch.events.model import format_time
from scmwatch.sinks.explain import explain
from scmwatch.sinks.jsonl import as_text

ECS_VERSION = "9.4.0"
_TECHNIQUE = re.compile(r"attack\.(t\d{4})(\.\d{3})?", re.IGNORECASE)
# ATT&CK Enterprise tactics by their Sigma tag (``attack.lateral-movement``; ``_`` in older rules)
TACTICS = {name.lower().replace(" ", "-"): name for name in (
    "Reconnaissance", "Resource Development", "Initial Access", "Execution", "Persistence",
    "Privilege Escalation", "Defense Evasion", "Stealth", "Defense Impairment", "Credential Access",
    "Discovery", "Lateral Movement", "Collection", "Command and Control", "Exfiltration", "Impact")}
# the fields Winlogbeat lifts out of event_data into winlog.* (the reader's names for them)
_WINLOG = {"Channel": "channel", "EventID": "event_id", "Computer": "computer_name",
           "Provider_Name": "provider_name"}
_DROPPED = frozenset({"EventRecordID", "TimeCreated"})  # winlog.record_id, @timestamp
_UNSAFE_KEY = re.compile(r"[.\x00-\x1f]+")


@lru_cache(maxsize=4096)  # field names repeat on every event of a kind
def _key(name: str) -> str:
    """A log field name as one object key (a dot would nest it; an empty name is refused)."""
    return _UNSAFE_KEY.sub("_", name) or "_"


def _put(into: dict[str, Any], key: str, value: Any) -> None:
    """``into[key] = value``; a key already taken (``a.b`` and ``a_b`` both became ``a_b``) gets
    ``_2``, ``_3`` ... so no value is lost."""
    if key in into:
        n = 2
        while f"{key}_{n}" in into:
            n += 1
        key = f"{key}_{n}"
    into[key] = value


def threat(tags: list[str]) -> dict[str, Any] | None:
    """``threat.*`` from ATT&CK tags: technique ids, sub-technique ids, tactic names."""
    techniques, subs, tactics = _attack(tuple(str(t) for t in tags))
    if not (techniques or tactics):
        return None
    out: dict[str, Any] = {"framework": "MITRE ATT&CK"}
    if techniques:
        out["technique"] = {"id": list(techniques)}
        if subs:
            out["technique"]["subtechnique"] = {"id": list(subs)}
    if tactics:
        out["tactic"] = {"name": list(tactics)}
    return out


@lru_cache(maxsize=1024)  # one tag list per rule
def _attack(tags: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(technique ids, sub-technique ids, tactic names) of a rule's tags."""
    techniques: list[str] = []
    subs: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        text = str(tag).lower()
        m = _TECHNIQUE.fullmatch(text)
        if m:
            tech = m.group(1).upper()
            if tech not in techniques:
                techniques.append(tech)
            if m.group(2) and tech + m.group(2) not in subs:
                subs.append(tech + m.group(2))
            continue
        if not text.startswith("attack."):
            continue
        name = TACTICS.get(text.removeprefix("attack.").replace("_", "-"))
        if name and name not in tactics:
            tactics.append(name)
    return tuple(techniques), tuple(subs), tuple(tactics)


def ecs_document(a: Alert, rule: Any | None) -> dict[str, Any]:
    """The ECS document for one alert (nested objects, as Elasticsearch stores them)."""
    f = a.event.fields
    why = "; ".join(f"{k}={v}" for k, v in explain(a, rule))
    doc: dict[str, Any] = {}
    if a.time:
        doc["@timestamp"] = format_time(a.time)
    doc["message"] = f"{a.title}" + (f" on {a.host}" if a.host else "") + (f": {why}" if why else "")
    doc["ecs"] = {"version": ECS_VERSION}
    event: dict[str, Any] = {"kind": "alert", "severity": LEVEL_RANK.get(a.level, 0) + 1}
    eid = as_text(f.get("EventID"))
    if eid:
        event["code"] = eid
    provider = as_text(f.get("Provider_Name"))
    if provider:
        event["provider"] = provider
    if a.repeat is not None:  # hunt --dedup: the row's first and last alert; the count is ours
        if a.repeat.first:
            event["start"] = format_time(a.repeat.first)
        if a.repeat.last:
            event["end"] = format_time(a.repeat.last)
    doc["event"] = event
    doc["log"] = {"level": a.level, "file": {"path": a.event.source}}
    if a.host:
        doc["host"] = {"name": a.host}
    doc["rule"] = {"id": a.rule_id, "name": a.title, "description": a.description, "ruleset": "sigma"}
    th = threat(a.tags)
    if th is not None:
        doc["threat"] = th
    if a.tags:
        doc["tags"] = [str(t) for t in a.tags]
    src = norm_ip(f.get("IpAddress") or f.get("SourceIp") or f.get("id.orig_h"))
    if src:
        doc["source"] = {"ip": src}
    dst = norm_ip(f.get("DestinationIp") or f.get("id.resp_h"))
    if dst:
        doc["destination"] = {"ip": dst}
    custom: dict[str, Any] = {}
    if eid is not None and f.get("Channel") is not None and not str(f.get("Channel")).startswith("zeek"):
        doc["winlog"] = _winlog(a)
    else:
        raw: dict[str, Any] = {}
        for k, v in f.items():
            _put(raw, _key(str(k)), as_text(v))
        custom["event"] = raw
    if a.events:
        custom["evidence"] = [
            {"time": format_time(ev.time) if ev.time else None, "host": as_text(ev.fields.get("Computer")),
             "event_id": as_text(ev.fields.get("EventID")), "channel": as_text(ev.fields.get("Channel")),
             "source": ev.source, "record_id": ev.record_id} for ev in a.events]
    if a.correlation:
        custom["correlation"] = a.correlation
    if a.repeat is not None:
        custom["count"] = a.repeat.count
    if custom:
        doc["scmwatch"] = custom
    return doc


def _winlog(a: Alert) -> dict[str, Any]:
    f = a.event.fields
    out: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name, value in f.items():
        target = _WINLOG.get(name)
        if target is not None:
            text = as_text(value)
            if text is not None:
                out[target] = text
        elif name not in _DROPPED and value is not None:
            _put(data, _key(str(name)), as_text(value))
    rid = a.event.record_id if a.event.record_id is not None else f.get("EventRecordID")
    if rid is not None:
        out["record_id"] = str(rid)
    if data:
        out["event_data"] = data
    return out
