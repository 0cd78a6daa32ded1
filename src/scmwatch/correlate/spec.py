"""Correlation rules as the streaming evaluator needs them.

pySigma parses and validates Sigma correlation documents (``SigmaCorrelationRule``); this
module turns each one into a small, immutable :class:`CorrSpec` so the hot path never walks
pySigma objects. The conversion also settles the semantic choices the specification leaves
open (documented in the README section "Correlation"):

* **References** are keyed by :func:`rule_key` (the rule UUID, else ``name:<name>``), the
  same key the hunt loop computes for a matched single-event rule, so an engine result and a
  correlation reference meet without name lookups.
* **Eager vs. at-close evaluation.** Conditions that can only become *more* true as events
  arrive (``gt``/``gte``; temporal boolean conditions without ``not``) are tested on the
  sliding window that ends at each new event and fire as soon as they hold. Conditions an
  incomplete window could satisfy vacuously (``lt``/``lte``/``eq``/``neq``; boolean
  conditions containing ``not``) are tested once per window, when it closes.
* **Ranges.** The specification allows several operators in one condition (``gt: 1`` and
  ``lte: 3``, all must hold); pySigma 2 rejects that ("exactly one condition item"), so
  :func:`split_range_condition` hands pySigma the first operator and keeps the others in a
  private attribute that :func:`spec_from_sigma` reads back. A range is eager only when every
  operator is ``gt``/``gte``.
* **value_percentile** needs ``percentile:``; the specification gives no default, and guessing
  one (50 would make it a median) would change what the rule means, so it is rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where correlation rules are converted: pySigma's correlations
    # module (and pyparsing, YAML) cost ~25 ms of a start with no correlation rule to convert
    from sigma.correlations import SigmaCorrelationRule

TYPES = (
    "event_count",
    "value_count",
    "temporal",
    "temporal_ordered",
    "value_sum",
    "value_avg",
    "value_percentile",
    "value_median",
)
VALUE_TYPES = frozenset({"value_count", "value_sum", "value_avg", "value_percentile", "value_median"})
NUMERIC_TYPES = frozenset({"value_sum", "value_avg", "value_percentile", "value_median"})

OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
}
MONOTONE_OPS = frozenset({"gt", "gte"})
RANGE_KEY = "x-scmwatch-range"  # custom attribute holding a range condition's further operators


def split_range_condition(doc: dict[str, Any]) -> dict[str, Any]:
    """A correlation document pySigma can load: a condition with several operators keeps its
    first one, the others move to :data:`RANGE_KEY` (``{op: count}``). Other documents are
    returned unchanged."""
    body = doc.get("correlation")
    cond = body.get("condition") if isinstance(body, dict) else None
    if not isinstance(cond, dict):
        return doc
    ops = [k for k in cond if k in OPS]
    if len(ops) < 2:
        return doc
    first = {k: v for k, v in cond.items() if k not in ops[1:]}
    return {**doc, "correlation": {**body, "condition": first}, RANGE_KEY: {k: cond[k] for k in ops[1:]}}


def _range_ops(raw: Any) -> tuple[tuple[str, float], ...]:
    if not raw:
        return ()
    out = []
    for op, count in dict(raw).items():
        if op not in OPS or isinstance(count, bool):
            raise ValueError(f"invalid range condition item {op!r}")
        try:
            value = float(count)
        except (TypeError, ValueError):
            raise ValueError(f"{count!r} is no valid correlation condition count") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{count!r} is no valid correlation condition count")
        out.append((op, value))
    return tuple(out)


def rule_key(rule: Any) -> str:
    """The join key between a rule (pySigma or compiled) and correlation references.

    The UUID when the rule has one (what alerts carry as ``rule_id``), else its ``name``, else
    its title: Sigma lets a correlation reference a rule by either id or name, and both sides
    of the join must compute the same string. A compiled rule (``scmwatch.sigma.CompiledRule``)
    is keyed by its ``join_key``, the key of the pySigma rule it was built from (whose ``id``
    may be absent where the compiled rule made one up), kept so that keying a rule from the
    rule cache needs no pySigma rule: unpickling the built-in pack's 144 for it cost ~43 ms of
    every start with the pack.
    """
    own = getattr(rule, "join_key", None)  # a compiled rule knows it without its pySigma rule
    if own is not None:
        return own
    sig = getattr(rule, "sigma", None)
    if sig is not None:
        rule = sig
    rid = getattr(rule, "id", None)
    if rid:
        return str(rid)
    name = getattr(rule, "name", None)
    if name:
        return f"name:{name}"
    return f"title:{getattr(rule, 'title', '')}"


@dataclass(frozen=True, slots=True)
class CorrSpec:
    """One correlation rule, flattened for evaluation."""

    key: str  # rule_key of the correlation itself (chained correlations reference it)
    title: str
    level: str
    description: str
    tags: tuple[str, ...]
    type: str  # one of TYPES
    refs: tuple[str, ...]  # reference names in rule-list order (temporal_ordered order)
    ref_keys: dict[str, str]  # reference name -> rule_key of the referenced rule
    group_by: tuple[str, ...]
    timespan_us: int
    generate: bool
    aliases: dict[str, dict[str, str]]  # alias -> {reference name: field}
    op: str | None  # numeric condition operator, None for boolean conditions
    threshold: float | None
    also: tuple[tuple[str, float], ...]  # further (op, threshold) of a range; all must hold
    field: str | None  # condition field (value_* types)
    percentile: float | None
    expr: Any = None  # boolean condition tree: ("ref", name) / ("and"|"or", ...) / ("not", x)
    eager: bool = True  # see module docstring
    extra: dict[str, Any] = field(default_factory=dict)  # custom attributes (maxpatrol_rule, ...)
    path: str | None = None
    label: str = ""  # what reports call it: its name, else its id
    # (reference, referenced rule's name or "") of every single-event rule it needs, through
    # chained correlations too (:func:`leaf_references`)
    leaves: tuple[tuple[str, str], ...] = ()

    @property
    def timespan(self) -> float:
        return self.timespan_us / 1_000_000

    def field_for(self, name: str, ref: str) -> str:
        """The event field that feeds group-by/condition ``name`` for events of ``ref``."""
        alias = self.aliases.get(name)
        if alias is not None:
            return alias.get(ref, name)
        return name

    def holds(self, measure: float) -> bool:
        """The numeric condition (with every operator of a range) holds for ``measure``."""
        if not OPS[self.op](measure, self.threshold):  # type: ignore[index,arg-type]
            return False
        for op, threshold in self.also:
            if not OPS[op](measure, threshold):
                return False
        return True

    def describe_condition(self) -> str:
        if self.expr is not None:
            return _expr_text(self.expr)
        subject = {"event_count": "count", "temporal": "rules", "temporal_ordered": "rules in order"}.get(
            self.type, f"{self.type.removeprefix('value_')}({self.field})"
        )
        if self.type == "value_percentile":
            subject = f"p{self.percentile:g}({self.field})"
        return " and ".join(f"{subject} {op} {thr:g}" for op, thr in ((self.op, self.threshold), *self.also))


def _expr_text(node: Any) -> str:
    kind = node[0]
    if kind == "ref":
        return node[1]
    if kind == "not":
        return f"not {_expr_text(node[1])}"
    return "(" + f" {kind} ".join(_expr_text(a) for a in node[1:]) + ")"


def _convert_expr(node: Any) -> Any:
    from sigma.correlations import (
        CorrelationConditionAND,
        CorrelationConditionNOT,
        CorrelationConditionOR,
        SigmaRuleReference,
    )

    if isinstance(node, SigmaRuleReference):
        return ("ref", node.reference)
    if isinstance(node, CorrelationConditionNOT):
        return ("not", _convert_expr(node.args[0]))
    if isinstance(node, CorrelationConditionAND):
        return ("and", *(_convert_expr(a) for a in node.args))
    if isinstance(node, CorrelationConditionOR):
        return ("or", *(_convert_expr(a) for a in node.args))
    raise ValueError(f"unsupported correlation condition node {node!r}")


def _has_not(node: Any) -> bool:
    if node[0] == "ref":
        return False
    if node[0] == "not":
        return True
    return any(_has_not(a) for a in node[1:])


def eval_expr(node: Any, present: set[str] | frozenset[str]) -> bool:
    kind = node[0]
    if kind == "ref":
        return node[1] in present
    if kind == "not":
        return not eval_expr(node[1], present)
    if kind == "and":
        return all(eval_expr(a, present) for a in node[1:])
    return any(eval_expr(a, present) for a in node[1:])


def _tag_text(tag: Any) -> str:
    ns = getattr(tag, "namespace", None)
    name = getattr(tag, "name", None)
    return f"{ns}.{name}" if ns and name else str(tag)


def leaf_references(corr: Any) -> tuple[tuple[str, str], ...]:
    """``(reference, the referenced rule's name or "")`` of every single-event rule reference of
    ``corr`` (a pySigma correlation), in order, following references to other correlations
    (each correlation once): what the readiness report looks rules up by (a rule by the
    reference, else by the name of the rule it resolved to)."""
    out: list[tuple[str, str]] = []
    seen: set[int] = set()

    def walk(c: Any) -> None:
        if id(c) in seen:
            return
        seen.add(id(c))
        for ref in getattr(c, "rules", []) or []:
            target = getattr(ref, "rule", None)
            if target is not None and hasattr(target, "rules") and not hasattr(target, "detection"):
                walk(target)
                continue
            out.append((getattr(ref, "reference", "") or "", getattr(target, "name", "") or ""))

    walk(corr)
    return tuple(out)


def spec_from_sigma(rule: SigmaCorrelationRule) -> CorrSpec:
    """Flatten one pySigma correlation rule (its references must already be resolved)."""
    from sigma.correlations import SigmaCorrelationCondition, SigmaExtendedCorrelationCondition

    ctype = str(rule.type.name).lower()
    if ctype not in TYPES:
        raise ValueError(f"unsupported correlation type {ctype}")
    refs_objs = list(rule.referenced_rules or rule.rules or [])
    refs = tuple(r.reference for r in refs_objs)
    ref_keys: dict[str, str] = {}
    for r in refs_objs:
        target = getattr(r, "rule", None)
        if target is None:
            raise ValueError(f"correlation {rule.title!r}: reference {r.reference!r} is not resolved")
        ref_keys[r.reference] = rule_key(target)
    aliases = {a.alias: {ref.reference: fld for ref, fld in a.mapping.items()} for a in (rule.aliases or [])}
    op = threshold = fieldref = percentile = expr = None
    custom_all = getattr(rule, "custom_attributes", None) or {}
    also = _range_ops(custom_all.get(RANGE_KEY))
    cond = rule.condition
    eager = True
    if isinstance(cond, SigmaExtendedCorrelationCondition):
        expr = _convert_expr(cond.parsed)
        eager = not _has_not(expr)
    elif isinstance(cond, SigmaCorrelationCondition):
        op = cond.op.name.lower()
        threshold = float(cond.count)
        fr = cond.fieldref
        if isinstance(fr, list):
            # pySigma allows a list; the spec's value_* types aggregate one field.
            fr = fr[0] if fr else None
        fieldref = fr
        percentile = float(cond.percentile) if cond.percentile is not None else None
        if percentile is not None and not 0 < percentile <= 100:
            raise ValueError(f"correlation {rule.title!r}: percentile {cond.percentile} is not in 1-100")
        eager = op in MONOTONE_OPS and all(o in MONOTONE_OPS for o, _ in also)
    if also and op is None:
        raise ValueError(f"correlation {rule.title!r}: a range needs a numeric condition")
    if ctype == "value_median":
        percentile = 50.0
    if ctype == "value_percentile" and percentile is None:
        raise ValueError(f"correlation {rule.title!r}: value_percentile needs 'percentile:' (1-100);"
                         " the specification gives no default")
    if ctype in VALUE_TYPES and not fieldref:
        raise ValueError(f"correlation {rule.title!r}: {ctype} needs a condition field")
    level = getattr(rule.level, "name", None)
    custom = {k: v for k, v in custom_all.items() if k not in ("correlation", RANGE_KEY)}
    source = getattr(rule, "source", None)
    path = str(getattr(source, "path", "") or "") or None
    return CorrSpec(
        key=rule_key(rule),
        title=str(rule.title or ""),
        level=str(level).lower() if level else "medium",
        description=str(rule.description or ""),
        tags=tuple(_tag_text(t) for t in (rule.tags or [])),
        type=ctype,
        refs=refs,
        ref_keys=ref_keys,
        group_by=tuple(rule.group_by or ()),
        timespan_us=int(rule.timespan.seconds) * 1_000_000,
        generate=bool(rule.generate),
        aliases=aliases,
        op=op,
        threshold=threshold,
        also=also,
        field=fieldref,
        percentile=percentile,
        expr=expr,
        eager=eager,
        extra=custom,
        path=path,
        label=rule.name or str(rule.id),
        leaves=leaf_references(rule),
    )


def specs_from_sigma(rules: Iterable[SigmaCorrelationRule]) -> tuple[list[CorrSpec], list[tuple[str, str]]]:
    """Convert all correlations; returns (specs, rejected) where rejected is (title, reason)."""
    specs: list[CorrSpec] = []
    rejected: list[tuple[str, str]] = []
    for rule in rules:
        try:
            specs.append(spec_from_sigma(rule))
        except (ValueError, AttributeError, TypeError) as exc:
            rejected.append((str(getattr(rule, "title", "?")), str(exc)))
    return specs, rejected
