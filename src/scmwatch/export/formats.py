"""Writers: the plain listing, the not-exported list, and each target's saved-search form.

Splunk, Elastic and Sentinel forms are written here rather than with the backends' own output
formats: those carry no rule id or level (Splunk ``savedsearches``) or fetch MITRE ATT&CK data
from the network while writing (Elastic ``siem_rule_ndjson``), and the Kusto backend has none.
Loki's ``ruler`` and SQLite's ``zircolite`` formats come from the backends themselves.
Every writer returns text; nothing here touches the file system.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import yaml

from scmwatch.export.convert import Entry, Export
from scmwatch.export.targets import make_backend

SPLUNK_SEVERITY = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
ELASTIC_RISK = {"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}
ELASTIC_SEVERITY = {"informational": "low", "low": "low", "medium": "medium", "high": "high",
                    "critical": "critical"}
SENTINEL_SEVERITY = {"informational": "Informational", "low": "Low", "medium": "Medium", "high": "High",
                     "critical": "High"}
# ATT&CK tactic tags (attack.<tactic>) as Sentinel names them
SENTINEL_TACTICS = {
    "initial-access": "InitialAccess", "execution": "Execution", "persistence": "Persistence",
    "privilege-escalation": "PrivilegeEscalation", "defense-evasion": "DefenseEvasion",
    "credential-access": "CredentialAccess", "discovery": "Discovery", "lateral-movement": "LateralMovement",
    "collection": "Collection", "command-and-control": "CommandAndControl", "exfiltration": "Exfiltration",
    "impact": "Impact",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _exported(exp: Export) -> list[Entry]:
    return [e for e in exp.entries if e.exported]


def _techniques(tags: list[str]) -> list[str]:
    return [t.split(".", 1)[1].upper() for t in tags if t.startswith("attack.t")]


def listing(exp: Export) -> str:
    """One block per exported rule: a comment line (id, name, level, title, notes), then its query."""
    out = []
    for e in _exported(exp):
        out.append(f"# {e.id}  {e.label}  [{e.level}]  {_one_line(e.title)}")
        out.extend(f"#   note: {n}" for n in e.notes)
        out.extend(e.queries)
        out.append("")
    return "\n".join(out)


def not_exported(exp: Export) -> str:
    """Tab-separated: kind, id, name, reason, note (equivalent exported instead). Header first."""
    rows = ["kind\tid\tname\treason\tnote"]
    for e in exp.entries:
        if not e.exported:
            rows.append("\t".join((e.kind, e.id, e.label, _one_line(e.reason or ""),
                                   _one_line("; ".join(e.notes)))))
    for path, reason in exp.rejected:
        rows.append("\t".join(("file", "", path, _one_line(f"did not load: {reason}"), "")))
    return "\n".join(rows) + "\n"


def splunk_savedsearches(exp: Export) -> str:
    out = []
    for e in _exported(exp):
        for i, q in enumerate(e.queries):
            suffix = f" #{i + 1}" if len(e.queries) > 1 else ""
            out.append(f"# scmwatch rule {e.id} ({e.label}), level {e.level}")
            # a stanza name ends at the first ']'
            name = _one_line(e.title).replace("[", "(").replace("]", ")")
            out.append(f"[{name} ({e.id[:8]}){suffix}]")
            out.append(f"description = {_conf(e.description or e.title)}")
            out.append(f"search = {_conf(q)}")
            out.append(f"alert.severity = {SPLUNK_SEVERITY.get(e.level, 3)}")
            out.append("alert.track = 1")
            out.append("counttype = number of events")
            out.append("relation = greater than")
            out.append("quantity = 0")
            out.append("cron_schedule = */5 * * * *")
            out.append("dispatch.earliest_time = -10m")
            out.append("dispatch.latest_time = now")
            out.append("enableSched = 1")
            out.append("")
    return "\n".join(out)


def _conf(text: str) -> str:
    """A savedsearches.conf value: one line (a value continues over lines only with a trailing \\)."""
    return " \\\n".join(text.strip().splitlines())


def elastic_ndjson(exp: Export) -> str:
    language = {"lucene": "lucene", "esql": "esql", "eql": "eql"}[exp.target.name]
    rule_type = {"lucene": "query", "esql": "esql", "eql": "eql"}[exp.target.name]
    lines = []
    for e in _exported(exp):
        for i, q in enumerate(e.queries):
            doc = {
                "rule_id": e.id if i == 0 else f"{e.id}-{i}",
                "name": e.title,
                "description": _one_line(e.description or e.title),
                "type": rule_type,
                "language": language,
                "query": q,
                "risk_score": ELASTIC_RISK.get(e.level, 47),
                "severity": ELASTIC_SEVERITY.get(e.level, "medium"),
                "tags": ["scmwatch", *e.tags],
                "interval": "5m",
                "from": "now-6m",
                "enabled": False,
            }
            if rule_type != "esql":
                doc["index"] = ["winlogbeat-*", "logs-windows.*", "logs-system.*"]
            lines.append(json.dumps(doc, ensure_ascii=False, sort_keys=True))
    return "\n".join(lines) + ("\n" if lines else "")


def sentinel_yaml(exp: Export) -> str:
    docs = []
    for e in _exported(exp):
        tactics = [SENTINEL_TACTICS[t.split(".", 1)[1]] for t in e.tags
                   if t.startswith("attack.") and t.split(".", 1)[1] in SENTINEL_TACTICS]
        docs.append({
            "id": e.id,
            "name": e.title,
            "description": _one_line(e.description or e.title),
            "severity": SENTINEL_SEVERITY.get(e.level, "Medium"),
            "requiredDataConnectors": [{"connectorId": "WindowsForwardedEvents",
                                        "dataTypes": ["WindowsEvent"]}],
            "queryFrequency": "5m",
            "queryPeriod": "5m",
            "triggerOperator": "gt",
            "triggerThreshold": 0,
            "tactics": sorted(set(tactics)),
            "relevantTechniques": _techniques(e.tags),
            "query": _kql_union(e.queries),
            "kind": "Scheduled",
            "version": "1.0.0",
        })
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=100)


def _kql_union(queries: list[str]) -> str:
    return queries[0] if len(queries) == 1 else "union " + ", ".join(f"({q})" for q in queries)


def backend_format(exp: Export) -> str:
    """The backend's own saved-search output format over every exported rule and correlation."""
    backend = make_backend(exp.target, exp.pipelines)
    out = backend.convert(exp.collection(), output_format=exp.target.saved_format)
    return out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, indent=1)


SAVED: dict[str, Callable[[Export], str]] = {
    "splunk": splunk_savedsearches,
    "lucene": elastic_ndjson,
    "esql": elastic_ndjson,
    "eql": elastic_ndjson,
    "kusto": sentinel_yaml,
    "loki": backend_format,
    "sqlite": backend_format,
}


def saved_form(exp: Export) -> str:
    return SAVED[exp.target.name](exp)
