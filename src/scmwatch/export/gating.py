"""scmwatch's logsource gating written into each rule, so an exported query sees the same events.

Our engine gates every rule by ``logsource`` before it looks at the condition
(:mod:`scmwatch.sigma.logsource`): a ``process_creation`` rule runs on Sysmon 1 *and* on Security
4688 (fields renamed, Sysmon-only fields unavailable), a ``service: system`` rule only on the
System channel. A backend left to itself drops the logsource, so the exported query would match
other events than our engine does. Instead of a processing pipeline (pipelines can add a
condition but not duplicate a condition under other field names), the rule itself is rewritten:

* detection ``_scm_gate``: ``Channel`` (and ``EventID``, ``EventType`` for categories) of the
  source, in the names scmwatch's events carry; a target's field-mapping pipeline renames them
  (``winlog.channel``, ``event.code``, ...) like any other field;
* ``process_creation``: ``(_scm_gate and (condition)) or (_scm_gate_4688 and (condition'))``,
  where ``condition'`` is the same tree with the 4688 field names and with every leaf on a
  Sysmon-only field folded to the constant the engine uses (False in positive position, True
  under ``not``); a branch that folds to False is left out, with a note.

Selectors (``1 of sel_*``, ``all of them``) are expanded to identifiers so the rewritten condition
does not depend on pattern matching over the new ``_scm_`` identifiers.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from sigma.conditions import ConditionAND, ConditionIdentifier, ConditionNOT, ConditionOR, ConditionSelector
from sigma.pipelines.common import windows_logsource_mapping
from sigma.rule import SigmaRule

from scmwatch.sigma.logsource import CATEGORY_EXTRA, CATEGORY_SOURCES, SECURITY_4688, FieldMap

GATE = "_scm_gate"
GATE_4688 = "_scm_gate_4688"
PREFIX_4688 = "_scm4688_"
_IDENT = re.compile(r"[A-Za-z0-9_-]+")  # pySigma's condition grammar for identifiers
_KEYWORDS = frozenset({"and", "or", "not", "of", "all", "any", "them", "1"})
# CATEGORY_EXTRA holds lower-cased values (the engine compares case-insensitively); SIEM keyword
# fields are often case-sensitive, so the values go out as Sysmon writes them.
_EXTRA_CASE = {"createkey": "CreateKey", "deletekey": "DeleteKey", "deletevalue": "DeleteValue"}


class NotExpressible(Exception):
    """The rule (or one of its sources) has no query form that means what the engine does."""


@dataclass
class Gated:
    """A rule rewritten with its gating, plus what the reader of the export must know."""

    rule: dict[str, Any]
    notes: list[str] = field(default_factory=list)


Node = Any  # ("and"|"or", [Node]) | ("not", Node) | ("id", name) | bool


def gate_items(logsource: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The ``_scm_gate`` detection for a logsource, or ``(None, note)`` when none applies."""
    product = (logsource.product or "").lower()
    category = (logsource.category or "").lower()
    service = (logsource.service or "").lower()
    if product == "zeek" and service:
        return {"Channel": f"zeek:{service}"}, (
            "Zeek log gated as Channel 'zeek:<log>' (scmwatch's Zeek reader); map it to your Zeek index")
    if product != "windows":
        return None, f"logsource product '{product or 'none'}' has no scmwatch event source: exported ungated"
    if category:
        if category not in CATEGORY_SOURCES:
            return None, f"category '{category}' has no event-log channel: exported ungated"
        channels, eids = CATEGORY_SOURCES[category]
        items: dict[str, Any] = {"Channel": _one(list(channels)), "EventID": _one(list(eids))}
        for fname, values in CATEGORY_EXTRA.get(category, {}).items():
            items[fname] = _one(sorted(_EXTRA_CASE.get(v, v) for v in values))
        return items, None
    if service:
        channels = windows_logsource_mapping.get(service)
        if channels is None:
            return None, f"service '{service}' is not in the Windows channel mapping: exported ungated"
        return {"Channel": _one([channels] if isinstance(channels, str) else list(channels))}, None
    return None, None


def _one(values: list) -> Any:
    return values[0] if len(values) == 1 else values


DERIVED_PREFIX = "derived."


def _detection_keys(node: Any) -> list[str]:
    """Every field key (with its modifiers) named anywhere in a detection dict."""
    if isinstance(node, dict):
        return [k for k in node] + [x for v in node.values() for x in _detection_keys(v)]
    if isinstance(node, list):
        return [x for v in node for x in _detection_keys(v)]
    return []


def gate_rule(rule: SigmaRule) -> Gated:
    """``rule`` as a Sigma dict whose condition carries scmwatch's gating (see module doc)."""
    d = rule.to_dict()
    detection = dict(d["detection"])
    detection.pop("condition")
    derived = sorted({str(k).split("|")[0] for k in _detection_keys(detection)
                      if str(k).startswith(DERIVED_PREFIX)})
    if derived:
        raise NotExpressible(f"uses {', '.join(derived)}, a field scmwatch derives while hunting "
                             "(scmwatch.events.enrich); no stored event carries it")
    trees = [c.parse(postprocess=False) for c in rule.detection.parsed_condition]
    tree: Node = _from_pysigma(trees[0] if len(trees) == 1 else ConditionOR(trees), rule)
    # Names only a selector reached (`select_x|endswith`, `filter_a.conf`) are not valid in a
    # written-out condition: such detections get a plain name.
    safe = {name: name if _IDENT.fullmatch(name) and name.lower() not in _KEYWORDS else f"_scm_d{i}"
            for i, name in enumerate(detection)}
    detection = {safe[k]: v for k, v in detection.items()}
    tree = _renamed(tree, safe)
    notes: list[str] = []
    gate, note = gate_items(rule.logsource)
    if note:
        notes.append(note)
    out_det = dict(detection)
    if gate is None:
        cond = _text(tree)
    else:
        out_det[GATE] = gate
        cond = f"{GATE} and ({_text(tree)})"
        if (rule.logsource.category or "").lower() == "process_creation":
            alt, alt_note = _alternate(tree, detection, SECURITY_4688)
            if alt_note:
                notes.append(alt_note)
            if alt is not None:
                alt_tree, alt_det = alt
                out_det.update({PREFIX_4688 + k: v for k, v in alt_det.items()})
                out_det[GATE_4688] = {"Channel": "Security", "EventID": 4688}
                cond = f"({cond}) or ({GATE_4688} and ({_text(alt_tree, PREFIX_4688)}))"
    out_det["condition"] = cond
    d["detection"] = out_det
    return Gated(d, notes)


def _renamed(node: Node, names: dict[str, str]) -> Node:
    if node[0] == "id":
        return ("id", names[node[1]])
    if node[0] == "not":
        return ("not", _renamed(node[1], names))
    return (node[0], [_renamed(a, names) for a in node[1]])


def _from_pysigma(node: Any, rule: SigmaRule) -> Node:
    if isinstance(node, ConditionIdentifier):
        return ("id", node.identifier)
    if isinstance(node, ConditionSelector):
        ids = [("id", i.identifier) for i in node.resolve_referenced_detections(rule.detection)]
        return ("or" if node.cond_class is ConditionOR else "and", ids)
    if isinstance(node, ConditionNOT):
        return ("not", _from_pysigma(node.args[0], rule))
    if isinstance(node, ConditionAND | ConditionOR):
        kind = "and" if isinstance(node, ConditionAND) else "or"
        return (kind, [_from_pysigma(a, rule) for a in node.args])
    raise NotExpressible(f"condition element {type(node).__name__} not understood")


def _text(node: Node, prefix: str = "") -> str:
    kind = node[0]
    if kind == "id":
        return prefix + node[1]
    if kind == "not":
        return f"not ({_text(node[1], prefix)})"
    joiner = f" {kind} "
    return joiner.join(f"({_text(a, prefix)})" if a[0] in ("and", "or") else _text(a, prefix)
                       for a in node[1])


# ------------------------------------------------------------------ the Security 4688 branch


def _field(key: str) -> str:
    return key.split("|", 1)[0].replace(" ", "")


def _fold_detection(value: Any, fm: FieldMap, positive: bool) -> Any:
    """A detection's value with unavailable-field items folded: True, False or the reduced value."""
    if isinstance(value, dict):
        kept = {k: v for k, v in value.items() if _field(k) not in fm.unavailable}
        if len(kept) == len(value):
            return value
        if positive:
            return False
        return kept if kept else True
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        out = []
        for m in value:
            r = _fold_detection(m, fm, positive)
            if r is True:
                return True
            if r is not False:
                out.append(r)
        return out if out else False
    return value


def _rename(value: Any, fm: FieldMap) -> Any:
    if isinstance(value, dict):
        return {_rename_key(k, fm): v for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, fm) for v in value]
    return value


def _rename_key(key: str, fm: FieldMap) -> str:
    name, _, mods = key.partition("|")
    new = fm.rename.get(name.replace(" ", ""), name)
    return f"{new}|{mods}" if mods else new


def _polarities(node: Node, neg: bool, out: dict[str, set[bool]]) -> None:
    if node[0] == "id":
        out.setdefault(node[1], set()).add(not neg)
    elif node[0] == "not":
        _polarities(node[1], not neg, out)
    else:
        for a in node[1]:
            _polarities(a, neg, out)


def _fold(node: Node, values: dict[str, Any]) -> Node:
    kind = node[0]
    if kind == "id":
        v = values[node[1]]
        return v if isinstance(v, bool) else node
    if kind == "not":
        inner = _fold(node[1], values)
        return (not inner) if isinstance(inner, bool) else ("not", inner)
    args = []
    for a in node[1]:
        f = _fold(a, values)
        if isinstance(f, bool):
            if f == (kind == "or"):
                return f
            continue
        args.append(f)
    if not args:
        return kind == "and"
    return args[0] if len(args) == 1 else (kind, args)


def _alternate(tree: Node, detection: dict[str, Any],
               fm: FieldMap) -> tuple[tuple[Node, dict] | None, str | None]:
    """The condition and detections for an alternate source, or (None, why not)."""
    pol: dict[str, set[bool]] = {}
    _polarities(tree, False, pol)
    values: dict[str, Any] = {}
    missing: set[str] = set()
    for name in pol:
        det = detection[name]
        fields = _fields_of(det)
        lacking = fields & fm.unavailable
        if not lacking:
            values[name] = _rename(copy.deepcopy(det), fm)
            continue
        missing |= lacking
        folded = {p: _fold_detection(det, fm, p) for p in pol[name]}
        if len(folded) > 1 and folded[True] != folded[False]:
            raise NotExpressible(f"detection '{name}' uses {', '.join(sorted(lacking))} (absent on "
                                 f"{fm.name}) both negated and not")
        v = next(iter(folded.values()))
        values[name] = v if isinstance(v, bool) else _rename(v, fm)
    folded_tree = _fold(tree, values)
    lack = ", ".join(sorted(missing))
    if folded_tree is False:
        return None, f"never fires on {fm.name} (needs {lack}), as in scmwatch"
    if folded_tree is True:
        raise NotExpressible(f"on {fm.name} the condition folds to 'always' once {lack} are dropped")
    used: dict[str, set[bool]] = {}
    _polarities(folded_tree, False, used)
    note = f"on {fm.name}: {lack} absent there, folded as scmwatch does" if missing else None
    return (folded_tree, {k: values[k] for k in used}), note


def _fields_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {_field(k) for k in value}
    if isinstance(value, list):
        return set().union(*(_fields_of(v) for v in value)) if value else set()
    return set()
