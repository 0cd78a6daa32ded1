"""``scmwatch rules list | test | coverage``: the rule-pack side of ``scmwatch rules``.

Registered into the ``rules`` subparser group by :mod:`scmwatch.cli.rules`. Without PATH each
command works on the built-in pack (``scmwatch/rules``); with PATH on the user's own rules, so a
detection engineer can list, test and measure a pack the same way the project does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from scmwatch import coverage as cov
from scmwatch.escape import terminal
from scmwatch.packtest import inherited_attrs, run_pack
from scmwatch.readiness import describe, rule_keys
from scmwatch.rules import PACK_DIR, pack_paths
from scmwatch.sigma import load_rules


def _paths(args: argparse.Namespace) -> list[str]:
    return list(args.paths) if args.paths else pack_paths()


def _techniques(tags: list[str]) -> str:
    return ",".join(t.split(".", 1)[1].upper() for t in tags if t.startswith("attack.t"))


def _sources(rule: Any) -> str:
    labels: list[str] = []
    for k in rule_keys(rule):
        label = describe(k)[0]
        if label not in labels:
            labels.append(label)
    return " | ".join(labels) or "-"


def run_list(args: argparse.Namespace) -> int:
    rs = load_rules(_paths(args))
    for path, reason in rs.rejected:
        print(f"scmwatch: {terminal(path)}: rule rejected: {terminal(reason)}", file=sys.stderr)
    rows = []
    inherited = inherited_attrs(rs, "maxpatrol_rule")
    for r in rs.rules:
        mp = str(r.custom.get("maxpatrol_rule", ""))
        if not mp:
            via = sorted(set().union(*(inherited.get(k, set()) for k in (r.name, r.id) if k)))
            mp = f"(via correlation) {'; '.join(via)}" if via else ""
        rows.append({
            "id": r.id, "name": r.name, "title": r.title, "level": r.level,
            "techniques": _techniques(r.tags), "sources": _sources(r),
            "maxpatrol_rule": mp, "path": r.path,
        })
    for c in rs.correlations:
        ca = c.custom_attributes or {}
        rows.append({
            "id": str(c.id), "name": c.name, "title": c.title, "level": str(c.level or "").lower(),
            "techniques": _techniques([f"{t.namespace}.{t.name}" for t in (c.tags or [])]),
            "sources": f"correlation {c.type.value if hasattr(c.type, 'value') else c.type} of "
                       + ", ".join(ref.reference for ref in c.rules),
            "maxpatrol_rule": str(ca.get("maxpatrol_rule", "")), "path": str(c.source or ""),
        })
    if args.format == "jsonl":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    else:
        print("\t".join(("id", "level", "techniques", "maxpatrol_rule", "title", "data sources")))
        for row in rows:
            # terminal(): a title with a tab or newline would break the columns, ESC the terminal
            cells = (row["id"], row["level"], row["techniques"], row["maxpatrol_rule"] or "-", row["title"],
                     row["sources"])
            print("\t".join(map(terminal, cells)))
    print(f"scmwatch: {len(rs.rules)} rules, {len(rs.correlations)} correlations, "
          f"{len(rs.rejected)} rejected", file=sys.stderr)
    return 1 if not rs.rules and not rs.correlations else 0


def run_test(args: argparse.Namespace) -> int:
    builtin = not args.paths
    required = list(args.require_attr or [])
    if builtin and "maxpatrol_rule" not in required:
        required.append("maxpatrol_rule")
    report = run_pack(_paths(args) if not builtin else [str(PACK_DIR)], required)
    if not report.files:
        print("scmwatch: no rule files found", file=sys.stderr)
        return 1
    for f in report.files:
        status = "ok  " if f.ok else "FAIL"
        extra = f", {f.correlations} correlations (not fixture-tested)" if f.correlations else ""
        print(f"{status} {terminal(f.rule_file)}: {f.rules} rules, {f.fixtures} fixtures "
              f"({f.positives} positive, {f.near_misses} near-miss){extra}")
        for problem in f.failures:
            print(f"     - {terminal(problem)}")
    t = report.totals()
    print(f"scmwatch: {t['rule_files']} files, {t['rules']} rules, {t['fixtures']} fixtures: "
          f"{t['failures']} failures", file=sys.stderr)
    return 0 if report.ok else 1


def run_coverage(args: argparse.Namespace) -> int:
    rs = load_rules(_paths(args))
    c = cov.compute(rs)
    if args.format == "json":
        print(json.dumps(c.to_dict(), indent=2, ensure_ascii=False))
        return 0
    covered = sum(s.covered for s in c.seeds)
    print(f"MaxPatrol T1569.002 seed rules + MITRE analytic: {covered}/{len(c.seeds)} covered")
    for s in c.seeds:
        mark = "yes" if s.covered else "NO "
        label = s.name if s.seed == cov.MITRE else f"{s.seed} {s.name}"
        print(f"  [{mark}] {label}  ({s.section}): {len(s.rules)} rules, {len(s.correlations)} correlations")
        if s.sources:
            print(f"        sources: {', '.join(s.sources)}")
        if s.limits:
            print(f"        limits: {s.limits}")
    print("\nATT&CK data components for T1569.002 (DET0421):")
    for comp in cov.T1569_COMPONENTS:
        n = len(c.components.get(comp, []))
        print(f"  [{'yes' if n else 'NO '}] {comp}: {n} rules")
    others = sorted(k for k in c.components if k not in cov.T1569_COMPONENTS)
    if others:
        print("Other data components read: " + ", ".join(f"{k} ({len(c.components[k])})" for k in others))
    print(f"\nService-execution variants: {sum(v.covered for v in c.variants)}/{len(c.variants)} covered")
    for v in c.variants:
        print(f"  [{'yes' if v.covered else 'NO '}] {v.what}: {len(v.present)} rules")
        print(f"        needs: {v.needs}")
        if v.limits:
            print(f"        limits: {v.limits}")
    if c.unattributed:
        print(f"Rules naming no seed rule: {', '.join(r.name or r.id for r in c.unattributed)}")
    if c.zeek:
        print("\nZeek rules and the Zeek settings they need (default: what a stock Zeek logs):")
        for name, settings in c.zeek:
            print(f"  {name}: {settings}")
    return 0


def _register_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list rules: id, level, techniques, data sources, MaxPatrol rule",
                       description="List the rules of the built-in pack (or of PATH).")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.set_defaults(func=run_list)


def _register_test(sub: Any) -> None:
    p = sub.add_parser(
        "test", help="run a pack's fixtures through the engine (exit 1 on failure)",
        description="For every rule file X.yml, run the fixtures in tests/X.jsonl (one flat JSON event per "
        "line with _expect / _near lists of rule names or ids) through the engine. Every rule needs a "
        "positive and a near-miss fixture, a level and an ATT&CK tag. The built-in pack also requires the "
        "maxpatrol_rule attribute.")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--require-attr", action="append", metavar="NAME",
                   help="custom attribute every rule must carry (repeatable)")
    p.set_defaults(func=run_test)


def _register_coverage(sub: Any) -> None:
    p = sub.add_parser("coverage", help="which MaxPatrol seed rules and ATT&CK data components are covered",
                       description="Coverage of the loaded rules against the 18 MaxPatrol T1569.002 seed "
                       "rules plus the MITRE analytic, and the ATT&CK data components their event sources "
                       "belong to.")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run_coverage)


REGISTER = [_register_list, _register_test, _register_coverage]
