"""Loading Sigma files with pySigma: files, directories, multi-document YAML, filters, correlations.

Why this path: ``yaml.load_all`` with pySigma's ``SigmaYAMLLoader`` is
the C loader *with* a duplicate-key check (``SigmaCollection.from_yaml`` silently keeps the last
duplicate), ~4x faster than the pure-Python loader; ``from_dicts(collect_errors=True)`` per file
keeps one broken rule from sinking the rest; ``merge`` resolves correlation references across
files and applies filters. Condition parsing in pySigma is lazy, so it is forced here: a rule
whose condition cannot parse is rejected at load, not at the first event.

Every rejected document is reported as ``(path, one-line reason)``; the rest are used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule
from sigma.rule.base import SigmaYAMLLoader

from scmwatch.correlate.spec import split_range_condition
from scmwatch.sigma.files import rule_files


@dataclass
class LoadedSigma:
    """pySigma objects that loaded, plus what did not (before compilation)."""

    rules: list[tuple[SigmaRule, str, list]] = field(default_factory=list)  # (rule, path, trees)
    correlations: list[SigmaCorrelationRule] = field(default_factory=list)
    filters: list[SigmaFilter] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0


def one_line(exc: BaseException | str) -> str:
    """A message fit for one line: first line, without pySigma's trailing location suffix
    (`` in /abs/path.yml:line``): the caller names the file once, and :func:`located` adds
    the line."""
    if isinstance(exc, SigmaError) and exc.args:
        exc = str(exc.args[0])
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def located(exc: BaseException | str, path: str, title: str | None = None) -> str:
    """:func:`one_line` plus ``(line N)`` of the rule file: pySigma's own location when it has
    one (it rarely does), else the first line, after the rule's ``title:``, that holds a name the
    message quotes (an unknown modifier, an undefined detection, a field)."""
    msg = one_line(exc)
    src = getattr(exc, "source", None)
    line = getattr(src, "line", None)
    if line is None:
        line = _line_of(path, msg, title)
    return f"{msg} (line {line})" if line else msg


def _line_of(path: str, msg: str, title: str | None) -> int | None:
    names = [n for n in re.findall(r"'([^'\n]{1,100})'", msg) if n != title]
    if not names:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    start = 0
    if title:
        start = next((i for i, t in enumerate(lines) if t.startswith("title:") and title in t), 0)
    for i in range(start, len(lines)):
        if any(n in lines[i] for n in names):
            return i + 1
    return None


def _path_of(item: Any, fallback: str) -> str:
    src = getattr(item, "source", None)
    return str(src.path) if src is not None and getattr(src, "path", None) else fallback


def load_sigma(paths: Iterable[str | os.PathLike]) -> LoadedSigma:
    """Parse every rule file; reject per document; merge; force condition parsing."""
    res = LoadedSigma()
    collections: list[SigmaCollection] = []
    for p in rule_files(paths, res.rejected):
        res.files += 1
        path = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            res.rejected.append((path, f"unreadable: {one_line(exc)}"))
            continue
        try:
            docs = [d for d in yaml.load_all(text, Loader=SigmaYAMLLoader) if d is not None]
        except yaml.YAMLError as exc:
            res.rejected.append((path, f"YAML error: {_yaml_reason(exc)}"))
            continue
        except Exception as exc:  # e.g. duplicate key raised by SigmaYAMLLoader as another type
            res.rejected.append((path, f"YAML error: {one_line(exc)}"))
            continue
        bad = [d for d in docs if not isinstance(d, dict)]
        if bad:
            res.rejected.append((path, "YAML document is not a mapping (not a Sigma rule)"))
        docs = [split_range_condition(d) for d in docs if isinstance(d, dict)]
        if not docs:
            continue
        try:
            col = SigmaCollection.from_dicts(docs, collect_errors=True, source=SigmaRuleLocation(p),
                                             collect_filters=True, resolve_references=False)
        except Exception as exc:
            res.rejected.append((path, located(exc, path)))
            continue
        good = []
        for item in [*col.rules, *col.filters]:
            errs = getattr(item, "errors", None) or []
            if errs:
                res.rejected.append((path, _describe(item) + located(errs[0], path, _title(item))))
            else:
                good.append(item)
        # Collection-level errors not attached to a rule (unknown action, alias bombs...).
        items = [*col.rules, *col.filters]
        item_errs = {id(e) for item in items for e in (getattr(item, "errors", None) or [])}
        for e in col.errors:
            if id(e) not in item_errs:
                res.rejected.append((path, located(e, path)))
        if good:
            collections.append(
                SigmaCollection(init_rules=good, collect_filters=True, resolve_references=False))

    merged = _merge(collections, res)
    seen_ids: dict[str, str] = {}
    for item in merged.rules:
        path = _path_of(item, "?")
        if isinstance(item, SigmaCorrelationRule):
            res.correlations.append(item)
            continue
        rid = str(item.id) if item.id else None
        try:
            trees = [c.parsed for c in item.detection.parsed_condition]
        except SigmaError as exc:
            res.rejected.append((path, _describe(item) + f"condition: {located(exc, path, _title(item))}"))
            continue
        except Exception as exc:
            why = f"condition: {type(exc).__name__}: {located(exc, path, _title(item))}"
            res.rejected.append((path, _describe(item) + why))
            continue
        if rid is not None:
            if rid in seen_ids:
                res.warnings.append(f"{path}: rule id {rid} also used by {seen_ids[rid]}")
            seen_ids.setdefault(rid, path)
        res.rules.append((item, path, trees))
    res.correlations = _without_cycles(res.correlations, res.rejected)
    res.filters = list(merged.filters)
    return res


def _without_cycles(corrs: list[SigmaCorrelationRule], rejected: list[tuple[str, str]]) -> list:
    """Drop correlations that reference themselves, directly or through other correlations.

    Such a rule waits for its own alert and can never fire; pySigma resolves the references
    without complaint. Each one on a cycle is rejected with the cycle named, and so is every
    correlation that depends on one (iterative walk: a hostile chain must not hit the
    recursion limit).
    """
    by_id = {id(c): c for c in corrs}

    def inner(c: SigmaCorrelationRule) -> list[SigmaCorrelationRule]:
        return [r.rule for r in (c.rules or []) if id(getattr(r, "rule", None)) in by_id]

    reason: dict[int, str] = {}
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for root in corrs:
        if id(root) in state:
            continue
        path: list[SigmaCorrelationRule] = [root]
        todo = [iter(inner(root))]
        state[id(root)] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[id(path.pop())] = 2
                todo.pop()
            elif state.get(id(nxt)) == 1:
                cycle = path[path.index(nxt):]
                names = [_ref_name(c) for c in cycle]
                first = names.index(min(names))  # the same text whatever the file order
                text = " -> ".join([*names[first:], *names[:first], names[first]])
                for c in cycle:
                    reason.setdefault(id(c), f"circular correlation (can never fire): {text}")
            elif id(nxt) not in state:
                state[id(nxt)] = 1
                path.append(nxt)
                todo.append(iter(inner(nxt)))
    users: dict[int, list[SigmaCorrelationRule]] = {}
    for c in corrs:
        for t in inner(c):
            users.setdefault(id(t), []).append(c)
    queue = [c for c in corrs if id(c) in reason]
    while queue:
        bad = queue.pop()
        for c in users.get(id(bad), ()):
            if id(c) not in reason:
                reason[id(c)] = f"references the circular correlation {_ref_name(bad)} (can never fire)"
                queue.append(c)
    for c in corrs:
        if id(c) in reason:
            rejected.append((_path_of(c, "?"), _describe(c) + reason[id(c)]))
    return [c for c in corrs if id(c) not in reason]


def _ref_name(rule: Any) -> str:
    return str(rule.name or rule.id or rule.title)


def _merge(collections: list[SigmaCollection], res: LoadedSigma) -> SigmaCollection:
    """Merge per-file collections; correlations with unresolvable references are rejected."""
    try:
        return SigmaCollection.merge(collections)
    except Exception:
        pass
    # Find the culprits one by one: resolve each correlation against everything else.
    plain = SigmaCollection.merge(
        [SigmaCollection(init_rules=[r for r in c.rules if not isinstance(r, SigmaCorrelationRule)]
                         + list(c.filters), collect_filters=True, resolve_references=False)
         for c in collections], resolve_references=False)
    ok_corr: list = []
    all_corr = [r for c in collections for r in c.rules if isinstance(r, SigmaCorrelationRule)]
    for corr in all_corr:
        trial = SigmaCollection(init_rules=[*plain.rules, *ok_corr, *all_corr], resolve_references=False)
        try:
            corr.resolve_rule_references(trial)
            ok_corr.append(corr)
        except Exception as exc:
            where = _path_of(corr, "?")
            why = f"correlation: {located(exc, where, _title(corr))}"
            res.rejected.append((where, _describe(corr) + why))
    bad = {id(c) for c in all_corr} - {id(c) for c in ok_corr}
    kept = [SigmaCollection(init_rules=[r for r in c.rules if id(r) not in bad] + list(c.filters),
                            collect_filters=True, resolve_references=False) for c in collections]
    try:
        return SigmaCollection.merge(kept)
    except Exception as exc:
        res.rejected.append(("(correlations)", f"cannot resolve rule references: {one_line(exc)}"))
        return SigmaCollection.merge(
            [SigmaCollection(init_rules=[r for r in c.rules if not isinstance(r, SigmaCorrelationRule)]
                             + list(c.filters), collect_filters=True, resolve_references=False)
             for c in collections])


def _title(item: Any) -> str | None:
    title = getattr(item, "title", None)
    return str(title) if title else None


def _describe(item: Any) -> str:
    title = _title(item)
    return f"'{title}': " if title else ""


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or one_line(exc)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def load_placeholders(source: str | os.PathLike | dict | None) -> dict[str, list[str]]:
    """Placeholder values for ``|expand``: a YAML/JSON mapping ``name: [value, ...]`` (or a dict).

    Names are given without the surrounding ``%``; a scalar value is a one-element list. Values
    are Sigma strings, so ``*``/``?`` are wildcards and ``\\*`` a literal star.
    """
    if source is None:
        return {}
    data = source if isinstance(source, dict) else yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("placeholder file must be a mapping of name -> list of values")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        name = str(k).strip("%")
        vals = v if isinstance(v, list) else [v]
        out[name] = [str(x) for x in vals]
    return out
