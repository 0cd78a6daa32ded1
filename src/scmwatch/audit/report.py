"""Audit results: per-host summaries, the fleet view, and the table / JSONL / HTML renderings.

The fleet view answers the two questions an administrator of many hosts asks first: which hosts
do not block PsExec-style execution (ASR rule), and which services are weak on every host that
has them (a bad installer or GPO, to fix once at the source).
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from scmwatch.audit.checks import ASR_PSEXEC_WMI, CHECKS, asr_state, audit_host
from scmwatch.audit.model import SEVERITIES, Finding, HostData
from scmwatch.escape import terminal


@dataclass
class HostResult:
    data: HostData
    findings: list[Finding]

    def summary(self) -> dict[str, Any]:
        sev = Counter(f.severity for f in self.findings)
        d = self.data
        return {
            "type": "host",
            "host": d.host,
            "os_caption": d.os_caption,
            "os_version": d.os_version,
            "collected_at": d.collected_at,
            "sources": d.sources,
            "services": len(d.services),
            "services_with_dacl": sum(1 for s in d.services.values() if s.sddl),
            "scm_dacl": d.scm_sddl is not None,
            "paths_with_acl": sum(1 for p in d.paths.values() if p.sddl),
            "asr_psexec_wmi": asr_state(d),
            "findings": len(self.findings),
            "by_severity": {s: sev.get(s, 0) for s in SEVERITIES},
            "input_errors": len(d.errors),
        }


@dataclass
class AuditResult:
    hosts: list[HostResult]
    input_errors: int = 0
    files_failed: int = 0
    fleet: dict[str, Any] = field(default_factory=dict)


def run_audit(hosts: list[HostData], input_errors: int = 0, files_failed: int = 0) -> AuditResult:
    res = AuditResult(
        [HostResult(h, audit_host(h)) for h in sorted(hosts, key=lambda h: h.host.lower())],
        input_errors,
        files_failed,
    )
    res.fleet = fleet_view(res)
    return res


def fleet_view(res: AuditResult) -> dict[str, Any]:
    asr: dict[str, list[str]] = defaultdict(list)
    for hr in res.hosts:
        asr[asr_state(hr.data)].append(hr.data.host)
    present: dict[str, set[str]] = defaultdict(set)  # service -> hosts that have it
    display: dict[str, str] = {}
    for hr in res.hosts:
        for key, svc in hr.data.services.items():
            present[key].add(hr.data.host)
            display.setdefault(key, svc.name)
    weak: dict[tuple[str, str], set[str]] = defaultdict(set)
    for hr in res.hosts:
        for f in hr.findings:
            if f.target.lower() in present:
                weak[(f.check, f.target.lower())].add(f.host)
    weak_rows = []
    for (check, key), hs in weak.items():
        n_present = len(present[key])
        weak_rows.append(
            {
                "check": check,
                "title": CHECKS[check].title,
                "service": display[key],
                "hosts": sorted(hs),
                "weak_on": len(hs),
                "present_on": n_present,
                "everywhere": len(hs) == n_present and n_present >= 2,
            }
        )
    weak_rows.sort(key=lambda r: (-r["everywhere"], -r["weak_on"], r["check"], r["service"].lower()))
    scm = sorted({f.host for hr in res.hosts for f in hr.findings if f.check == "AUD-M1026-002"})
    return {
        "type": "fleet",
        "hosts": len(res.hosts),
        "asr_rule": ASR_PSEXEC_WMI,
        "asr_not_blocking": {k: sorted(v) for k, v in sorted(asr.items()) if k != "block"},
        "asr_blocking": sorted(asr.get("block", [])),
        "weak_services": weak_rows,
        "scm_create_service_by_non_admins": scm,
        "findings_by_check": dict(sorted(Counter(f.check for hr in res.hosts for f in hr.findings).items())),
        "input_errors": res.input_errors,
        "files_failed": res.files_failed,
    }


# ---- renderings ------------------------------------------------------------------------------


def render_jsonl(res: AuditResult) -> str:
    lines = []
    for hr in res.hosts:
        lines.append(json.dumps(hr.summary(), ensure_ascii=False))
        lines += [json.dumps(f.to_dict(), ensure_ascii=False) for f in hr.findings]
    lines.append(json.dumps(res.fleet, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def render_table(res: AuditResult) -> str:
    out: list[str] = []
    for hr in res.hosts:
        s = hr.summary()
        sev = " ".join(f"{k}={v}" for k, v in s["by_severity"].items() if v) or "none"
        out.append(f"== {s['host']}  {s['os_caption'] or ''} {s['os_version'] or ''}".rstrip())
        out.append(
            f"   services={s['services']} (DACL known: {s['services_with_dacl']})  "
            f"SCM DACL: {'yes' if s['scm_dacl'] else 'no'}  file ACLs: {s['paths_with_acl']}  "
            f"ASR PsExec/WMI: {s['asr_psexec_wmi']}  input errors: {s['input_errors']}"
        )
        out.append(f"   findings: {s['findings']} ({sev})")
        for f in hr.findings:
            out.append(f"   [{f.severity.upper():8}] {f.check} {f.mitigation} {f.target}: {f.title}")
            out.append(f"              evidence: {f.evidence}")
            out.append(f"              fix: {f.fix}")
        out.append("")
    fl = res.fleet
    out.append(f"== fleet: {fl['hosts']} host(s)")
    if fl["asr_not_blocking"]:
        out.append(f"   ASR rule {ASR_PSEXEC_WMI} not blocking:")
        for state, hosts in fl["asr_not_blocking"].items():
            label = "not collected" if state == "unknown" else state
            out.append(f"     {label:14} {len(hosts)}: {', '.join(hosts)}")
    else:
        out.append("   ASR rule blocking on every host")
    if fl["scm_create_service_by_non_admins"]:
        out.append(
            f"   SCM lets non-admins create services on: {', '.join(fl['scm_create_service_by_non_admins'])}"
        )
    multi = [r for r in fl["weak_services"] if r["everywhere"] or r["weak_on"] >= 2]
    if multi:
        out.append("   services weak on several hosts (weak on / hosts that have it):")
        for r in multi:
            tag = "  EVERYWHERE" if r["everywhere"] else ""
            out.append(
                f"     {r['service']:24} {r['check']} {r['weak_on']}/{r['present_on']}{tag}  "
                f"{', '.join(r['hosts'])}"
            )
    single = len(fl["weak_services"]) - len(multi)
    if single:
        out.append(f"   {single} other service weakness(es) on a single host (see the host sections)")
    if fl["input_errors"]:
        out.append(
            f"   input problems: {fl['input_errors']} (see stderr); files unreadable: {fl['files_failed']}"
        )
    return "\n".join(map(terminal, out)) + "\n"  # host, service and path names come from the hosts


_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}th{background:#f3f3f3}
.critical{background:#f8d0d0}.high{background:#fbe3c8}.medium{background:#fdf5c4}.low{background:#e8f1fb}
code{font-size:12px;word-break:break-all}h2{margin-top:2em}"""


def render_html(res: AuditResult) -> str:
    e = html.escape
    fl = res.fleet
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>scmwatch audit</title>",
        f"<style>{_CSS}</style></head><body><h1>scmwatch mitigation audit</h1>",
        f"<h2>Fleet ({fl['hosts']} hosts)</h2>",
        f"<table><tr><th>ASR rule {e(ASR_PSEXEC_WMI)}</th><th>hosts</th></tr>",
    ]
    for state, hosts in fl["asr_not_blocking"].items():
        parts.append(
            f"<tr><td>{e('not collected' if state == 'unknown' else state)}</td>"
            f"<td>{e(', '.join(hosts))}</td></tr>"
        )
    parts.append(f"<tr><td>block</td><td>{e(', '.join(fl['asr_blocking']))}</td></tr></table>")
    if fl["weak_services"]:
        parts.append(
            "<table><tr><th>service</th><th>check</th><th>weak on / present on</th><th>hosts</th></tr>"
        )
        for r in fl["weak_services"]:
            parts.append(
                f"<tr><td>{e(r['service'])}</td><td>{e(r['check'])} {e(r['title'])}</td>"
                f"<td>{r['weak_on']}/{r['present_on']}{' <b>everywhere</b>' if r['everywhere'] else ''}"
                f"</td><td>{e(', '.join(r['hosts']))}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<h2>Hosts</h2><table><tr><th>host</th><th>OS</th><th>services (DACL known)</th><th>ASR</th>"
        + "".join(f"<th>{s}</th>" for s in SEVERITIES)
        + "<th>input errors</th></tr>"
    )
    for hr in res.hosts:
        s = hr.summary()
        parts.append(
            f"<tr><td><a href='#h-{e(s['host'])}'>{e(s['host'])}</a></td>"
            f"<td>{e(str(s['os_caption'] or ''))} {e(str(s['os_version'] or ''))}</td>"
            f"<td>{s['services']} ({s['services_with_dacl']})</td><td>{e(s['asr_psexec_wmi'])}</td>"
            + "".join(f"<td>{s['by_severity'][k]}</td>" for k in SEVERITIES)
            + f"<td>{s['input_errors']}</td></tr>"
        )
    parts.append("</table>")
    for hr in res.hosts:
        parts.append(f"<h2 id='h-{e(hr.data.host)}'>{e(hr.data.host)}</h2>")
        if hr.data.errors:
            parts.append(
                "<p>Input problems:</p><ul>" + "".join(f"<li>{e(x)}</li>" for x in hr.data.errors) + "</ul>"
            )
        if not hr.findings:
            parts.append("<p>No findings.</p>")
            continue
        parts.append(
            "<table><tr><th>severity</th><th>check</th><th>target</th><th>evidence</th><th>fix</th></tr>"
        )
        for f in hr.findings:
            parts.append(
                f"<tr class='{e(f.severity)}'><td>{e(f.severity)}</td><td>{e(f.check)} ({e(f.mitigation)})"
                f"<br>{e(f.title)}</td><td>{e(f.target)}</td><td>{e(f.evidence)}</td>"
                f"<td><code>{e(f.fix)}</code></td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


RENDERERS = {"table": render_table, "jsonl": render_jsonl, "html": render_html}
