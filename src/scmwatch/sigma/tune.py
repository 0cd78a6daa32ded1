"""Tuning file (``hunt --tune FILE``): drop rules, override levels, exclude events by field value.

An analyst's answer to noise that should not need a hand-written Sigma filter and the pack's
source path::

    drop:                            # rules whose alerts are not wanted at all
      - 3f0e0a4c-0b7e-4c1f-9a0b-6f1d2e3c4b5a
      - "*Random Service Name*"
    levels:                          # rule -> new level
      "Service Installed From Unusual Path": low
    exclude:                         # rule -> events it must not fire on
      "Suspicious Service*":
        ServiceName: [GoogleUpdater*, MicrosoftEdgeUpdate*]
      "*":                           # every single-event rule
        - Computer: BUILD-*
        - ImagePath: 'C:\\Program Files\\Acme\\*'
          AccountName: LocalSystem

A rule is named by its id, its ``name:``, or a glob over its title (case-insensitive); a name
that selects no loaded rule is an error, so a typo cannot silently tune nothing. An exclusion
is a map (every field must match: AND) or a list of maps (any: OR), like a Sigma detection;
field names are the events' own (``scmwatch events`` shows them), case-sensitive as in Sigma; a
field's values are case-insensitive :mod:`fnmatch` globs (any of a list), compared with the
value's text (for a list value: any item).

Where it applies, and why: the engine (``Engine.match_in``) leaves a rule out of an event's
matches when the rule's exclusion holds, so the tuned-out event neither alerts nor feeds a
correlation that references the rule -- tuning means "this is not the thing the rule looks for".
A dropped rule is removed from the rule set before the engine is built: it does not run, and a
correlation that needs it can no longer fire (:func:`apply_tune` warns which). A dropped
correlation is removed too, unless another correlation builds on it (an error). Level overrides
rewrite the rule's level before ``--min-level`` and the filters see it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase, translate
from typing import Any

import yaml

from scmwatch.alerts import LEVELS

KEYS = ("drop", "levels", "exclude")
Exclusion = Callable[[dict], bool]


class TuneError(ValueError):
    """A tuning file that cannot be used: ``problems`` are one-line messages naming the file."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0] if problems else "bad tuning file")
        self.problems = problems


@dataclass
class Tune:
    """A parsed tuning file (selectors not yet resolved against a rule set)."""

    path: str
    drop: list[str] = field(default_factory=list)
    levels: dict[str, str] = field(default_factory=dict)
    # selector -> alternatives (OR) -> (field, globs) pairs (AND)
    exclude: dict[str, list[list[tuple[str, tuple[str, ...]]]]] = field(default_factory=dict)


def load_tune(path: str | os.PathLike) -> Tune:
    """Read and check a tuning file; raises :class:`TuneError`."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise TuneError([f"{name}: cannot read tuning file: {why}"]) from None
    return parse_tune(text, name)


def parse_tune(text: str, name: str = "<tune>") -> Tune:
    """A tuning file's text as a :class:`Tune`; raises :class:`TuneError` with every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TuneError([f"{name}: not valid YAML{where}: {what}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TuneError([f"{name}: expected a mapping with keys {', '.join(KEYS)}"])
    tune = Tune(name)
    problems = [f"{name}: unknown key {k!r} (known: {', '.join(KEYS)})" for k in data if k not in KEYS]
    drop = data.get("drop") or []
    if not isinstance(drop, list) or not all(_is_name(x) for x in drop):
        problems.append(f"{name}: drop: expected a list of rule ids or titles")
    else:
        tune.drop = [str(x) for x in drop]
    levels = data.get("levels") or {}
    if not isinstance(levels, dict):
        problems.append(f"{name}: levels: expected a mapping rule -> level")
    else:
        for sel, level in levels.items():
            if not _is_name(sel) or not isinstance(level, str) or level.lower() not in LEVELS:
                problems.append(f"{name}: levels: {sel!r}: {level!r} is not a level ({', '.join(LEVELS)})")
            else:
                tune.levels[str(sel)] = level.lower()
    exclude = data.get("exclude") or {}
    if not isinstance(exclude, dict):
        problems.append(f"{name}: exclude: expected a mapping rule -> field -> values")
    else:
        for sel, spec in exclude.items():
            alts = _alternatives(spec)
            if not _is_name(sel) or alts is None:
                problems.append(f"{name}: exclude: {sel!r}: expected a mapping FIELD: value or [values] "
                                "(or a list of such mappings), values text or numbers")
            else:
                tune.exclude[str(sel)] = alts
    if problems:
        raise TuneError(problems)
    return tune


def _is_name(x: Any) -> bool:
    return isinstance(x, str | int) and not isinstance(x, bool) and str(x) != ""


def _alternatives(spec: Any) -> list[list[tuple[str, tuple[str, ...]]]] | None:
    maps = spec if isinstance(spec, list) else [spec]
    out = []
    for m in maps:
        if not isinstance(m, dict) or not m:
            return None
        pairs = []
        for fname, values in m.items():
            vals = values if isinstance(values, list) else [values]
            if not isinstance(fname, str) or not fname or not vals or not all(
                    isinstance(v, str | int | float) and not isinstance(v, bool) for v in vals):
                return None
            pairs.append((fname, tuple(str(v) for v in vals)))
        out.append(pairs)
    return out or None


def _selects(selector: str, rid: str, name: str | None, title: str) -> bool:
    sel = selector.casefold()
    return sel == rid.casefold() or (name is not None and sel == name.casefold()) or fnmatchcase(
        title.casefold(), sel)


def _corr_names(corr: Any) -> tuple[str, str | None, str]:
    return str(corr.id), corr.name, str(corr.title or "")


def check_tune(ruleset: Any, tune: Tune) -> list[str]:
    """Problems of ``tune`` against a loaded rule set (names that select nothing, exclusions
    on correlations, a dropped correlation another one needs); [] when it can be applied."""
    rules = [(r.id, r.name, r.title) for r in ruleset.rules]
    corrs = [_corr_names(c) for c in ruleset.correlations]
    problems = []
    for key, sels, pool in (("drop", tune.drop, rules + corrs), ("levels", tune.levels, rules + corrs),
                            ("exclude", tune.exclude, rules)):
        for sel in sels:
            if not any(_selects(sel, *item) for item in pool):
                why = "no loaded rule or correlation" if key != "exclude" else "no loaded single-event rule"
                if key == "exclude" and any(_selects(sel, *c) for c in corrs):
                    why = ("only correlations, and a correlation has no event of its own: exclude on "
                           "the rules it references")
                problems.append(f"{tune.path}: {key}: {sel!r} selects {why}")
    dropped = {id(c) for c in ruleset.correlations if any(_selects(s, *_corr_names(c)) for s in tune.drop)}
    for c in ruleset.correlations:
        if id(c) in dropped:
            continue
        for ref in c.rules or []:
            target = getattr(ref, "rule", None)
            if target is not None and id(target) in dropped:
                problems.append(f"{tune.path}: drop: correlation {str(target.title)!r} feeds correlation "
                                f"{str(c.title)!r}; drop that one too")
    return problems


def apply_tune(ruleset: Any, tune: Tune) -> list[str]:
    """Apply ``tune`` to a loaded rule set in place (before an engine is built from it); the
    warnings worth telling. Raises :class:`TuneError` when :func:`check_tune` finds problems."""
    problems = check_tune(ruleset, tune)
    if problems:
        raise TuneError(problems)
    from sigma.rule import SigmaLevel, SigmaRule

    def picked(items: Iterable[Any], sels: Iterable[str], names: Callable[[Any], tuple]) -> list[Any]:
        sels = list(sels)
        return [x for x in items if any(_selects(s, *names(x)) for s in sels)]

    def rule_names(r: Any) -> tuple[str, str | None, str]:
        return r.id, r.name, r.title

    warnings = []
    for sel, level in tune.levels.items():
        for r in picked(ruleset.rules, [sel], rule_names):
            r.level = level
        for c in picked(ruleset.correlations, [sel], _corr_names):
            c.level = SigmaLevel[level.upper()]
    gone = picked(ruleset.rules, tune.drop, rule_names)
    gone_ids = {id(r) for r in gone}
    gone_keys = {k for r in gone for k in (r.id, r.name) if k}
    if gone:
        ruleset.rules[:] = [r for r in ruleset.rules if id(r) not in gone_ids]
        ruleset.not_run[:] = [(r, why) for r, why in ruleset.not_run if id(r) not in gone_ids]
    dropped_corrs = {id(c) for c in picked(ruleset.correlations, tune.drop, _corr_names)}
    ruleset.correlations[:] = [c for c in ruleset.correlations if id(c) not in dropped_corrs]
    for c in ruleset.correlations:
        refs = [getattr(ref, "rule", None) for ref in c.rules or []]
        lost = [str(r.title) for r in refs if isinstance(r, SigmaRule)
                and (str(r.id) in gone_keys or r.name in gone_keys)]
        if lost:
            warnings.append(f"{tune.path}: dropping {', '.join(map(repr, lost))} leaves correlation "
                            f"{str(c.title)!r} without that input")
    for sel, alts in tune.exclude.items():
        test = _compile(alts)
        for r in picked(ruleset.rules, [sel], rule_names):
            before = ruleset.exclusions.get(r.id)
            ruleset.exclusions[r.id] = test if before is None else _either(before, test)
    ruleset.tuned = {"rules_dropped": len(gone), "correlations_dropped": len(dropped_corrs),
                     "levels_changed": sum(len(picked(ruleset.rules, [s], rule_names))
                                           + len(picked(ruleset.correlations, [s], _corr_names))
                                           for s in tune.levels),
                     "rules_with_exclusions": len(ruleset.exclusions)}
    return warnings


def _either(a: Exclusion, b: Exclusion) -> Exclusion:
    return lambda f: a(f) or b(f)


def _compile(alts: list[list[tuple[str, tuple[str, ...]]]]) -> Exclusion:
    """The exclusion test: any alternative whose every field has a value matching one of its globs."""
    compiled = [[(name, re.compile("|".join(translate(g) for g in globs), re.DOTALL | re.IGNORECASE).match)
                 for name, globs in pairs] for pairs in alts]

    def excluded(f: dict) -> bool:
        get = f.get
        for pairs in compiled:
            for name, match in pairs:
                v = get(name)
                if v.__class__ is str:
                    if match(v) is None:
                        break
                elif not _value_matches(v, match):
                    break
            else:
                return True
        return False

    return excluded


def _value_matches(v: Any, match: Callable[[str], Any]) -> bool:
    if v is None:
        return False
    if isinstance(v, list):
        return any(_value_matches(x, match) for x in v)
    return match(v if isinstance(v, str) else str(v)) is not None
