"""Coverage of a loaded rule set against the T1569.002 seed list and ATT&CK data components.

The seed list is the 18 MaxPatrol SIEM rules of Positive Technologies' T1569.002 article plus the
MITRE analytic services.exe -> cmd.exe (docs/detections.md). A seed is covered by every rule
(single-event or correlation) whose ``maxpatrol_rule`` attribute names it; building blocks used
only inside correlations count for the seeds of the correlations that use them. Data components
come from the (Channel, EventID) sources each rule reads (the engine's index keys), so coverage
says what telemetry the pack actually consumes, not what its tags claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scmwatch.detections import ATTR, MITRE, SEEDS, VARIANTS, detection_key
from scmwatch.packtest import inherited_attrs
from scmwatch.readiness import SYSMON, describe, rule_keys
from scmwatch.sigma import CompiledRule, RuleSet

# ATT&CK detection strategy DET0421 (analytic AN1185) for T1569.002 names these data components.
T1569_COMPONENTS = [
    "Service Creation (DC0060)",
    "Process Creation (DC0032)",
    "Windows Registry Key Modification (DC0063)",
    "Network Connection Creation (DC0082)",
]


def component(key: tuple[str | None, int | None]) -> str:
    """ATT&CK data component of one (lower-cased channel, EventID) source."""
    ch, eid = key
    if ch == SYSMON:
        return {
            1: T1569_COMPONENTS[1], 3: T1569_COMPONENTS[3], 7: "Module Load", 11: "File Creation",
            12: T1569_COMPONENTS[2], 13: T1569_COMPONENTS[2], 14: T1569_COMPONENTS[2],
            17: "Named Pipe Metadata", 18: "Named Pipe Metadata", 22: "Network Traffic Content (DNS)",
        }.get(eid, "Sysmon (other)")
    table = {
        ("security", 4688): T1569_COMPONENTS[1],
        ("security", 4697): T1569_COMPONENTS[0],
        ("system", 7045): T1569_COMPONENTS[0],
        ("security", 4657): T1569_COMPONENTS[2],
        ("security", 5156): T1569_COMPONENTS[3],
        ("security", 5145): "Network Share Access",
        ("security", 5140): "Network Share Access",
        ("security", 4624): "Logon Session Creation",
        ("security", 4674): "Service Metadata",
        ("system", 7036): "Service Metadata",
        ("system", 7009): "Service Metadata",
        ("system", 7000): "Service Metadata",
        ("system", 7040): "Service Modification",
        ("application", 33205): "Application Log Content",
    }
    if key in table:
        return table[key]
    if ch and "powershell" in ch:
        return "Command Execution"
    if ch and "defender" in ch:
        return "Application Log Content"
    return "other"


@dataclass
class SeedCoverage:
    seed: str
    name: str
    section: str
    limits: str
    rules: list[CompiledRule] = field(default_factory=list)
    correlations: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def covered(self) -> bool:
        return bool(self.rules or self.correlations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "maxpatrol_rule": self.seed if self.seed == MITRE else f"{self.seed} {self.name}",
            "detection": self.section,
            "covered": self.covered,
            "rules": [r.name or r.id for r in self.rules],
            "correlations": self.correlations,
            "sources": self.sources,
            "limits": self.limits,
        }


ZEEK_ATTR = "zeek_settings"


@dataclass
class VariantCoverage:
    """One service-execution variant of :data:`~scmwatch.detections.VARIANTS` and its pack rules."""

    key: str
    what: str
    names: tuple[str, ...]
    needs: str
    limits: str
    present: list[str] = field(default_factory=list)  # of ``names``, those the rule set has

    @property
    def covered(self) -> bool:
        return bool(self.present)

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.key, "what": self.what, "covered": self.covered, "rules": self.present,
                "needs": self.needs, "limits": self.limits}


@dataclass
class Coverage:
    seeds: list[SeedCoverage]
    components: dict[str, list[str]]  # component -> rule names
    unattributed: list[CompiledRule]  # rules naming no seed
    variants: list[VariantCoverage] = field(default_factory=list)
    zeek: list[tuple[str, str]] = field(default_factory=list)  # (rule or correlation, Zeek settings it needs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds_covered": sum(s.covered for s in self.seeds),
            "seeds_total": len(self.seeds),
            "seeds": [s.to_dict() for s in self.seeds],
            "t1569_002_components": {c: len(self.components.get(c, [])) for c in T1569_COMPONENTS},
            "components": {c: len(v) for c, v in sorted(self.components.items())},
            "unattributed_rules": [r.name or r.id for r in self.unattributed],
            "variants": [v.to_dict() for v in self.variants],
            "zeek_settings": dict(self.zeek),
        }


def compute(ruleset: RuleSet) -> Coverage:
    seeds = {s[0]: SeedCoverage(*s) for s in SEEDS}
    inherited = inherited_attrs(ruleset, ATTR)
    components: dict[str, list[str]] = {}
    unattributed: list[CompiledRule] = []
    for rule in ruleset.rules:
        values = {rule.custom.get(ATTR)} if rule.custom.get(ATTR) else set()
        for ref in (rule.name, rule.id):
            if ref:
                values |= inherited.get(ref, set())
        ids = {detection_key(v) for v in values} - {None}
        if not ids:
            unattributed.append(rule)
        keys = rule_keys(rule)
        for sid in ids:
            if sid in seeds:
                sc = seeds[sid]
                if rule.custom.get(ATTR):
                    sc.rules.append(rule)
                for k in keys:
                    label = describe(k)[0]
                    if label not in sc.sources:
                        sc.sources.append(label)
        for k in keys:
            names = components.setdefault(component(k), [])
            if (rule.name or rule.id) not in names:
                names.append(rule.name or rule.id)
    for corr in ruleset.correlations:
        sid = detection_key((corr.custom_attributes or {}).get(ATTR))
        if sid in seeds:
            seeds[sid].correlations.append(corr.name or str(corr.id))
    names = {r.name for r in ruleset.rules} | {c.name for c in ruleset.correlations}
    variants = [VariantCoverage(*v, present=[n for n in v[2] if n in names]) for v in VARIANTS]
    return Coverage(list(seeds.values()), components, unattributed, variants, zeek_settings(ruleset))


def zeek_settings(ruleset: RuleSet) -> list[tuple[str, str]]:
    """What each Zeek rule needs from Zeek's configuration (its ``zeek_settings`` attribute):
    ``default`` for what a stock Zeek logs; e.g. ``SMB::logged_file_actions += { SMB::FILE_WRITE }``
    for the rules that match actions smb_files.log leaves out by default."""
    zeek_names = {r.name for r in ruleset.rules if r.logsource.get("product") == "zeek" and r.name}
    out = [
        (r.name or r.id, str(r.custom.get(ZEEK_ATTR) or "not stated"))
        for r in ruleset.rules
        if r.logsource.get("product") == "zeek"
    ]
    for corr in ruleset.correlations:
        attrs = corr.custom_attributes or {}
        refs = {str(getattr(ref, "reference", ref)) for ref in getattr(corr, "rules", [])}
        if ZEEK_ATTR in attrs or refs & zeek_names:
            out.append((corr.name or str(corr.id), str(attrs.get(ZEEK_ATTR) or "not stated")))
    return out
