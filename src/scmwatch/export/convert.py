"""Convert a rule set for one target: every rule and correlation exported or listed with a reason.

Flow: load with scmwatch's loader (the same rejections ``hunt`` reports) → write scmwatch's
gating into each rule (:mod:`scmwatch.export.gating`) → check each correlation for what no SIEM
field can hold (scmwatch's derived ``link.*`` fields) → convert with the target's pySigma
backend, rule by rule, so one rule the backend refuses is listed with the backend's reason and the
rest still export. A correlation that cannot be expressed keeps an equivalent: its base rules are
exported on their own, and its entry says so.

pySigma pipelines mutate the rule they process, so every conversion builds a fresh collection
from the gated rule dicts (converting one object twice would map its fields twice).
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from scmwatch.export.gating import NotExpressible, gate_rule
from scmwatch.export.targets import TARGETS, Target, make_backend
from scmwatch.sigma.load import load_sigma, one_line

LINK_PREFIX = "link."
# Backend output known to be wrong (found by the golden tests): (target, marker in the query, why).
DEFECTS = [
    ("eql", re.compile(r"\] by\s+with runs="),
     "the EQL backend writes this correlation as an invalid sequence ('by' without fields, 'with runs')"),
]
# What each derived field is (correlate/links.py); none of them is a field of a stored event.
DERIVED = {
    "link.host": "short lower-case host name",
    "link.service": "service key name from TargetObject/ObjectName/ServiceName",
    "link.target_dir": "directory of TargetFilename",
    "link.source_ip": "client address learned from logon sessions",
    "link.source_host": "client name learned from logons and DNS",
    "link.target_host": "remote host named on a command line, resolved through logged addresses",
}


@dataclass
class Entry:
    """One rule or correlation in an export."""

    kind: str  # "rule" | "correlation"
    id: str
    name: str | None
    title: str
    level: str
    path: str
    queries: list[str] = field(default_factory=list)
    reason: str | None = None  # why it is not exported
    notes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def exported(self) -> bool:
        return bool(self.queries)

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass
class Export:
    target: Target
    pipelines: list[str] | None
    entries: list[Entry] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # did not load: (path, reason)
    dicts: list[dict[str, Any]] = field(default_factory=list)  # gated rules + expressible correlations

    def collection(self) -> SigmaCollection:
        """A fresh pySigma collection of everything exportable (see module doc)."""
        return SigmaCollection.from_dicts([copy.deepcopy(d) for d in self.dicts])

    def counts(self) -> dict[str, int]:
        return {
            "rules": sum(1 for e in self.entries if e.kind == "rule"),
            "correlations": sum(1 for e in self.entries if e.kind == "correlation"),
            "exported": sum(1 for e in self.entries if e.exported),
            "not_exported": sum(1 for e in self.entries if not e.exported),
            "rejected": len(self.rejected),
        }


def _tags(item: Any) -> list[str]:
    return [f"{t.namespace}.{t.name}" for t in (getattr(item, "tags", None) or [])]


def _level(item: Any) -> str:
    lv = getattr(item, "level", None)
    return str(getattr(lv, "name", lv) or "informational").lower()


def _entry(kind: str, item: Any, path: str) -> Entry:
    return Entry(kind, str(item.id or ""), getattr(item, "name", None), str(item.title or ""), _level(item),
                 path, tags=_tags(item), description=str(getattr(item, "description", "") or ""))


def _path(item: Any) -> str:
    src = getattr(item, "source", None)
    return str(getattr(src, "path", "") or "")


def correlation_fields(corr: SigmaCorrelationRule) -> set[str]:
    """Every field a correlation names: group-by, alias targets, the condition's field."""
    names = set(corr.group_by or [])
    for alias in (corr.aliases.aliases.values() if corr.aliases else []):
        names.update(alias.mapping.values())
    fieldref = getattr(corr.condition, "fieldref", None)
    if fieldref:
        names.update([fieldref] if isinstance(fieldref, str) else fieldref)
    return names


def _base_rules(corr: SigmaCorrelationRule) -> list[str]:
    out: list[str] = []
    for ref in corr.rules:
        target = ref.rule
        if isinstance(target, SigmaCorrelationRule):
            out.extend(n for n in _base_rules(target) if n not in out)
        else:
            name = getattr(target, "name", None) or ref.reference
            if name not in out:
                out.append(name)
    return out


def correlation_obstacle(corr: SigmaCorrelationRule, blocked: dict[str, str],
                         derived_ok: bool = False) -> str | None:
    """Why a correlation cannot mean in a SIEM what it means in scmwatch, or None."""
    derived = sorted(f for f in correlation_fields(corr) if f.startswith(LINK_PREFIX))
    if derived and not derived_ok:
        what = "; ".join(f"{f}: {DERIVED.get(f, 'derived by scmwatch')}" for f in derived)
        return f"groups events by fields scmwatch derives ({what}); no SIEM event carries them"
    for ref in corr.rules:
        target = ref.rule
        key = getattr(target, "name", None) or str(getattr(target, "id", "") or ref.reference)
        if key in blocked:
            return f"references '{ref.reference}', which cannot be exported ({blocked[key]})"
    return None


def export_rules(paths: Iterable[str | os.PathLike], target: str | Target,
                 pipelines: list[str] | None = None, derived_ok: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> Export:
    """Convert every rule under ``paths`` for ``target`` (a name from :data:`TARGETS`).

    ``derived_ok``: convert correlations on scmwatch's ``link.*`` fields as if events carried
    them -- only for :mod:`~scmwatch.export.verify`, whose table has them as columns."""
    tgt = TARGETS[target] if isinstance(target, str) else target
    make_backend(tgt, pipelines)  # BackendMissing / PipelineError before any work
    loaded = load_sigma(paths)
    exp = Export(tgt, pipelines, rejected=list(loaded.rejected))
    blocked: dict[str, str] = {}
    rule_entries: list[tuple[Entry, dict]] = []
    for rule, path, _trees in loaded.rules:
        e = _entry("rule", rule, path)
        try:
            gated = gate_rule(rule)
        except NotExpressible as exc:
            e.reason = str(exc)
        else:
            e.notes.extend(gated.notes)
            rule_entries.append((e, gated.rule))
        exp.entries.append(e)
        if e.reason:
            blocked[e.name or e.id] = e.reason
    corr_entries: list[tuple[Entry, dict]] = []
    # chains: a correlation on a blocked correlation is blocked too (references resolve in order)
    for corr in _dependency_order(loaded.correlations):
        e = _entry("correlation", corr, _path(corr))
        reason = correlation_obstacle(corr, blocked, derived_ok)
        if reason:
            e.reason = reason
            blocked[corr.name or str(corr.id)] = reason
        else:
            corr_entries.append((e, corr.to_dict()))
        exp.entries.append(e)

    total = len(rule_entries) + len(corr_entries)
    for n, (e, d) in enumerate(rule_entries, 1):
        _convert_one(lambda: make_backend(tgt, pipelines), e, [d], "rule", tgt.name)
        if progress and n % 100 == 0:
            progress(n, total)
    for e, d in corr_entries:
        needed = _needed_dicts(d, rule_entries, corr_entries)
        _convert_one(lambda: make_backend(tgt, pipelines), e, needed + [d], "correlation", tgt.name)
        if not e.exported:
            blocked[e.name or e.id] = e.reason or "not converted"
    for e in exp.entries:
        if e.kind == "correlation" and not e.exported:
            corr = next(c for c in loaded.correlations if str(c.id) == e.id)
            bases = _base_rules(corr)
            e.notes.append("equivalent exported: its base rules " + ", ".join(bases)
                           + f" on their own; join them in the SIEM by {', '.join(corr.group_by or ['-'])} "
                           f"within {corr.timespan.spec}")
    exp.dicts = [d for e, d in rule_entries if e.exported] + [d for e, d in corr_entries if e.exported]
    return exp


def _dependency_order(corrs: list[SigmaCorrelationRule]) -> list[SigmaCorrelationRule]:
    done: list[SigmaCorrelationRule] = []
    seen: set[int] = set()

    def visit(c: SigmaCorrelationRule) -> None:
        if id(c) in seen:
            return
        seen.add(id(c))
        for ref in c.rules:
            if isinstance(ref.rule, SigmaCorrelationRule):
                visit(ref.rule)
        done.append(c)

    for c in corrs:
        visit(c)
    return [c for c in done if any(c is x for x in corrs)]


def _needed_dicts(corr: dict, rules: list[tuple[Entry, dict]], corrs: list[tuple[Entry, dict]]) -> list[dict]:
    """The rule and correlation dicts a correlation dict references (transitively)."""
    by_ref: dict[str, dict] = {}
    for _e, d in [*rules, *corrs]:
        for k in (d.get("name"), str(d.get("id", ""))):
            if k:
                by_ref[k] = d
    out: list[dict] = []

    def walk(d: dict) -> None:
        for ref in (d.get("correlation") or {}).get("rules", []) or []:
            dep = by_ref.get(str(ref))
            if dep is not None and all(dep is not x for x in out):
                walk(dep)
                out.append(dep)

    walk(corr)
    return out


def _convert_one(backend_factory, entry: Entry, dicts: list[dict], kind: str, target: str) -> None:
    backend = backend_factory()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            col = SigmaCollection.from_dicts([copy.deepcopy(d) for d in dicts])
            # what backend.convert does, one rule at a time: a correlation's rules are converted
            # first (the backend keeps their conversion state), their queries are not output
            backend.init_processing_pipeline(None)
            col.resolve_rule_references()
            *deps, item = col.rules
            for dep in deps:
                if isinstance(dep, SigmaCorrelationRule):
                    backend.convert_correlation_rule(dep)
                else:
                    backend.convert_rule(dep)
            if kind == "rule":
                queries = backend.convert_rule(item)
            else:
                queries = backend.convert_correlation_rule(item)
        entry.notes.extend(f"backend: {one_line(str(w.message))}" for w in caught)
    except Exception as exc:  # a backend may raise anything for a rule it cannot express
        entry.reason = f"{type(exc).__name__}: {one_line(exc)}"
        return
    errors = getattr(backend, "errors", None) or []
    if errors:
        entry.reason = f"{type(errors[0][1]).__name__}: {one_line(errors[0][1])}"
        return
    queries = [q if isinstance(q, str) else str(q) for q in (queries or [])]
    if not queries:
        entry.reason = "the backend produced no query"
        return
    for name, marker, why in DEFECTS:
        if name == target and any(marker.search(q) for q in queries):
            entry.reason = why
            return
    entry.queries = queries
