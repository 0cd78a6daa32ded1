"""Fixture tests for Sigma rule packs: ``scmwatch rules test [PATH ...]``.

Convention (the same for the built-in pack and for anyone's own rules):

* next to each rule file ``<dir>/<stem>.yml`` lives ``<dir>/tests/<stem>.jsonl``;
* one JSON object per line: a **flat event** exactly as the flat NDJSON reader accepts it
  (``EventID``, ``Channel``, ``Computer``, ``TimeCreated`` and the EventData fields at top level),
  plus the test keys, which start with ``_``:

  - ``"_expect": ["rule name or id", ...]`` — the rules *of this file* that must fire on the event
    (exactly these: any other rule of the file firing is a failure; ``[]`` means none);
  - ``"_near": ["rule name or id", ...]`` — the event is a near-miss for these rules (it carries
    the tell-tale strings but must not fire them);
  - ``"_note": "..."`` — free text (why the event is built this way; "unverified" artifacts).

* every single-event rule of the file needs at least one positive (``_expect``) and one near-miss
  (``_near``) fixture, a ``level`` and an ATT&CK technique tag, plus any attribute named in
  ``required_attrs`` (the built-in pack requires ``maxpatrol_rule``; a building block used only by
  correlations inherits it from the correlations that reference it).

All rule files are loaded together (correlations reference rules across files). Each fixture
line goes through the reader's flat normalizer (``from_flat``: types of System fields, time
format) and then through the real :class:`~scmwatch.sigma.Engine`; only the rules *of the
fixture's own file* are compared, so a fixture tests its own rules. Correlation documents are not
exercised here (they need event sequences; see the correlation tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scmwatch.events.enrich import Enricher, classify
from scmwatch.events.model import Event
from scmwatch.events.normalize import from_flat
from scmwatch.sigma import CompiledRule, Engine, load_rules

RULE_SUFFIXES = (".yml", ".yaml")
FIXTURE_DIR = "tests"
FIXTURE_SUFFIX = ".jsonl"


@dataclass
class FileReport:
    """The outcome for one rule file."""

    rule_file: str
    fixture_file: str | None
    rules: int = 0
    fixtures: int = 0
    positives: int = 0
    near_misses: int = 0
    correlations: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class PackReport:
    files: list[FileReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.files) and all(f.ok for f in self.files)

    @property
    def failures(self) -> int:
        return sum(len(f.failures) for f in self.files)

    def totals(self) -> dict[str, int]:
        return {
            "rule_files": len(self.files),
            "rules": sum(f.rules for f in self.files),
            "fixtures": sum(f.fixtures for f in self.files),
            "positives": sum(f.positives for f in self.files),
            "near_misses": sum(f.near_misses for f in self.files),
            "failures": self.failures,
        }


def rule_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Rule files under ``paths`` (files as given; directories walked, skipping ``tests/``)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.suffix.lower() in RULE_SUFFIXES and FIXTURE_DIR not in q.relative_to(p).parts[:-1]:
                    out.append(q)
        else:
            out.append(p)
    return out


def fixture_file_for(rule_file: Path) -> Path:
    return rule_file.parent / FIXTURE_DIR / (rule_file.stem + FIXTURE_SUFFIX)


def _ref(rule: CompiledRule) -> set[str]:
    return {x for x in (rule.id, rule.name) if x}


def check_metadata(rule: CompiledRule, required_attrs: Sequence[str] = ()) -> list[str]:
    """What a pack rule must carry: level, ATT&CK tags, status, and the required custom attributes."""
    problems = []
    if not rule.sigma.level:
        problems.append("no level")
    if not any(t.startswith("attack.t") for t in rule.tags):
        problems.append("no ATT&CK technique tag (attack.tNNNN)")
    for attr in required_attrs:
        if not str(rule.custom.get(attr, "")).strip():
            problems.append(f"no '{attr}' attribute")
    return problems


def load_fixtures(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """Parse a fixture file into (line number, object) pairs plus problems found."""
    items: list[tuple[int, dict]] = []
    problems: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.lstrip().startswith("//"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}:{lineno}: not JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{path.name}:{lineno}: not a JSON object")
                continue
            items.append((lineno, obj))
    return items, problems


def fixture_event(obj: dict, source: str, lineno: int) -> Event:
    """A fixture object (test keys removed) as the flat reader would produce it, enriched as the
    hunt enriches it (derived fields such as ``derived.random_service_name``)."""
    fields = from_flat({k: v for k, v in obj.items() if not k.startswith("_")})
    ev = Event(fields, source, lineno, "json")
    Enricher().enrich(ev, classify(fields.get("Channel"), fields.get("EventID")))
    return ev


def inherited_attrs(ruleset, attr: str) -> dict[str, set[str]]:
    """Rule name/id -> values of ``attr`` inherited from the correlations that reference it.

    A building block (a single-event rule used only inside correlations, alerts suppressed by
    ``generate: false``) is attributed through the correlation chain that uses it, so it needs no
    attribute of its own.
    """
    out: dict[str, set[str]] = {}

    def walk(corr, value: str, seen: set[int]) -> None:
        if id(corr) in seen:
            return
        seen.add(id(corr))
        for ref in getattr(corr, "rules", []) or []:
            target = getattr(ref, "rule", None)
            for key in (getattr(ref, "reference", None), getattr(target, "name", None),
                        str(getattr(target, "id", "") or "") or None):
                if key:
                    out.setdefault(key, set()).add(value)
            if target is not None and hasattr(target, "rules"):
                walk(target, value, seen)

    for corr in ruleset.correlations:
        value = str((corr.custom_attributes or {}).get(attr, "")).strip()
        if value:
            walk(corr, value, set())
    return out


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def run_pack(paths: Iterable[str | os.PathLike], required_attrs: Sequence[str] = ()) -> PackReport:
    """Load every rule file under ``paths`` together (correlations may reference rules of other
    files), then check each file's single-event rules against its own fixtures."""
    files = rule_files(paths)
    report = PackReport()
    if not files:
        return report
    ruleset = load_rules(files)
    engine = Engine(ruleset)
    inherited = {a: inherited_attrs(ruleset, a) for a in required_attrs}
    for f in files:
        report.files.append(_run_file(f, ruleset, engine, required_attrs, inherited))
    placed = {os.path.realpath(f) for f in files}
    for path, reason in ruleset.rejected:
        if os.path.realpath(path) not in placed and report.files:
            report.files[0].failures.append(f"{path}: rule rejected: {reason}")
    return report


def _run_file(rule_file: Path, ruleset, engine: Engine, required_attrs: Sequence[str],
              inherited: dict[str, dict[str, set[str]]]) -> FileReport:
    fx = fixture_file_for(rule_file)
    rep = FileReport(str(rule_file), str(fx) if fx.exists() else None)
    for path, reason in ruleset.rejected:
        if _same(path, rule_file):
            rep.failures.append(f"rule rejected: {reason}")
    rules = [r for r in ruleset.rules if _same(r.path, rule_file)]
    for rule, reason in ruleset.not_run:
        if _same(rule.path, rule_file):
            rep.failures.append(f"'{rule.name or rule.title}' cannot run: {reason}")
    rep.rules = len(rules)
    rep.correlations = sum(1 for c in ruleset.correlations
                           if getattr(c, "source", None) is not None and _same(str(c.source), rule_file))
    for rule in rules:
        own = [a for a in required_attrs
               if not any(inherited[a].get(k) for k in _ref(rule))]
        for problem in check_metadata(rule, own):
            rep.failures.append(f"'{rule.name or rule.title}': {problem}")
    if not rules:
        if not rep.correlations and not rep.failures:
            rep.failures.append("no rules in file")
        return rep
    if not fx.exists():
        rep.failures.append(f"no fixture file {fx}")
        return rep

    by_ref: dict[str, CompiledRule] = {}
    for rule in rules:
        for ref in _ref(rule):
            by_ref[ref] = rule
    mine = {r.id for r in rules}
    name = {r.id: r.name or r.id for r in rules}
    positives: dict[str, int] = {r.id: 0 for r in rules}
    nears: dict[str, int] = {r.id: 0 for r in rules}
    items, problems = load_fixtures(fx)
    rep.failures.extend(problems)
    for lineno, obj in items:
        rep.fixtures += 1
        where = f"{fx.name}:{lineno}"
        expect_refs = obj.get("_expect")
        near_refs = obj.get("_near", [])
        if not isinstance(expect_refs, list) or not isinstance(near_refs, list):
            rep.failures.append(f"{where}: '_expect' (list) is required; '_near' must be a list")
            continue
        unknown = [r for r in [*expect_refs, *near_refs] if r not in by_ref]
        if unknown:
            rep.failures.append(f"{where}: unknown rule(s) {', '.join(map(str, unknown))} (not in this file)")
            continue
        # Zeek records have no EventID: the reader names them Channel "zeek:<log>" and gating uses that
        zeek = str(obj.get("Channel", "")).startswith("zeek:")
        if "Channel" not in obj or ("EventID" not in obj and not zeek):
            rep.failures.append(
                f"{where}: fixture needs Channel, and EventID unless it is a Zeek record "
                "(Channel 'zeek:<log>'; logsource gating uses them)"
            )
            continue
        expected = {by_ref[r].id for r in expect_refs}
        near = {by_ref[r].id for r in near_refs}
        if expected & near:
            rep.failures.append(f"{where}: a rule is both expected and near-miss")
            continue
        fired = {r.id for r in engine.match(fixture_event(obj, str(fx), lineno))} & mine
        for rid in expected:
            positives[rid] += 1
        for rid in near:
            nears[rid] += 1
        rep.positives += bool(expected)
        rep.near_misses += bool(near)
        missing = expected - fired
        extra = fired - expected
        if missing:
            rep.failures.append(f"{where}: expected {', '.join(sorted(name[i] for i in missing))} to fire")
        if extra:
            kind = "near-miss fired" if extra & near else "unexpected"
            rep.failures.append(f"{where}: {kind}: {', '.join(sorted(name[i] for i in extra))}")
    for rule in rules:
        label = rule.name or rule.id
        if not positives[rule.id]:
            rep.failures.append(f"'{label}': no positive fixture (_expect)")
        if not nears[rule.id]:
            rep.failures.append(f"'{label}': no near-miss fixture (_near)")
    return rep
