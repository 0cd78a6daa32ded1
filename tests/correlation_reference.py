"""A brute-force reference for Sigma correlation, written from the README "Correlation" rules.

It shares nothing with ``scmwatch.correlate.engine`` but the rule objects (``CorrSpec``): no
streaming, no reorder buffer, no hold-back heap, no sweep, no incremental counters. Every
correlation sees its whole input at once, sorted, and every window is recomputed from scratch.

The rules it implements:

* inputs of a correlation: each event matching any of its rules, once, as the first of them in
  the ``rules`` list; each alert of a referenced correlation as one input at the alert's time
  (the latest contributing entry), carrying that correlation's group values; sorted by
  ``(time, base events before inner alerts, stream position / production order)``;
* group key: the group-by values after aliases, strings lower-cased, numbers (and strings that
  are plain ASCII decimals) as their decimal text, booleans as ``true``/``false``; an input
  without a group value (missing or ``""``) is skipped, likewise one without its value field;
* eager conditions (all operators ``gt``/``gte``, boolean conditions without ``not``): after each
  input, the window is every input of the group since the last alert within ``[t - T, t]``; when
  the condition holds, the alert carries that window (``temporal_ordered``: the chain below)
  and the group starts afresh;
* at-close conditions: the group's first input opens a window ``[s, s + T]``; the first input
  past its end closes it (evaluated once) and opens the next; end of input closes the last;
* ``temporal_ordered``: entries in ``(time, position in rules list, stream order)`` order; with a
  count, the longest subsequence of distinct rules in list order, and as evidence the
  lexicographically first such subsequence; with a boolean condition, each rule's first entry
  after the previous rule's pick;
* percentile: linear interpolation between closest ranks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_CMP = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
}


@dataclass
class RefEvent:
    """One base event: when, where in the merged stream, which rule keys it matched."""

    t: int
    seq: int
    ident: int
    keys: frozenset[str]
    fields: dict[str, Any]


@dataclass
class RefAlert:
    key: str
    title: str
    t: int
    group: tuple
    evidence: frozenset[int]
    refs: tuple[str, ...]
    fields: dict[str, Any] = field(default_factory=dict)


def number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and _DECIMAL.fullmatch(v):
        return float(v)
    return None


def canon(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return tuple(canon(x) for x in v)
    n = number(v)
    if n is not None:
        return str(int(n)) if n == int(n) else repr(n)
    if isinstance(v, str):
        return v.lower()
    return repr(v)


def _eval_expr(node: Any, present: set[str]) -> bool:
    kind = node[0]
    if kind == "ref":
        return node[1] in present
    if kind == "not":
        return not _eval_expr(node[1], present)
    vals = [_eval_expr(a, present) for a in node[1:]]
    return all(vals) if kind == "and" else any(vals)


def _has_not(node: Any) -> bool:
    return node[0] == "not" or (node[0] != "ref" and any(_has_not(a) for a in node[1:]))


def _holds(spec: Any, measure: float) -> bool:
    return all(_CMP[op](measure, thr) for op, thr in ((spec.op, spec.threshold), *spec.also))


def _percentile(values: list[float], pct: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * pct / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _judge(spec: Any, window: list[dict]) -> list[dict] | None:
    """The contributing inputs if the condition holds on ``window``, else None."""
    refs = list(spec.refs)
    if spec.type == "temporal_ordered":
        walk = sorted(window, key=lambda x: (x["t"], refs.index(x["ref"]), x["order"]))
        if spec.expr is not None:
            chain, pos = [], -1
            for ref in refs:
                nxt = next((j for j in range(pos + 1, len(walk)) if walk[j]["ref"] == ref), None)
                if nxt is not None:
                    chain.append(walk[nxt])
                    pos = nxt
            if not _eval_expr(spec.expr, {x["ref"] for x in chain}):
                return None
            return chain or walk
        for k in range(len(refs), 0, -1):
            for combo in combinations(range(len(walk)), k):
                positions = [refs.index(walk[j]["ref"]) for j in combo]
                if all(a < b for a, b in zip(positions, positions[1:], strict=False)):
                    return [walk[j] for j in combo] if _holds(spec, float(k)) else None
        return None
    if spec.type == "temporal":
        present = {x["ref"] for x in window}
        ok = _eval_expr(spec.expr, present) if spec.expr is not None else _holds(spec, float(len(present)))
        return window if ok else None
    if spec.type == "event_count":
        measure = float(len(window))
    elif spec.type == "value_count":
        measure = float(len({x["value"] for x in window}))
    else:
        vals = [x["value"] for x in window]
        if spec.type == "value_sum":
            measure = sum(vals)
        elif spec.type == "value_avg":
            measure = sum(vals) / len(vals)
        else:
            measure = _percentile(vals, spec.percentile or 50.0)
    return window if _holds(spec, measure) else None


def _alert(spec: Any, group: tuple, chosen: list[dict]) -> RefAlert:
    evidence: set[int] = set()
    for x in chosen:
        evidence |= x["evidence"]
    return RefAlert(spec.key, spec.title, max(x["t"] for x in chosen), group, frozenset(evidence),
                    tuple(x["ref"] for x in chosen), dict(chosen[0]["group_fields"]))


def correlate(specs: list[Any], events: list[RefEvent]) -> list[RefAlert]:
    """All alerts of all correlations (including suppressed inner ones) for ``events``."""
    by_key = {s.key: s for s in specs}
    done: dict[str, list[RefAlert]] = {}

    def run(spec: Any) -> list[RefAlert]:
        if spec.key in done:
            return done[spec.key]
        inputs = []
        for ev in sorted(events, key=lambda e: e.seq):
            ref = next((r for r in spec.refs if spec.ref_keys[r] in ev.keys), None)
            if ref is not None:
                inputs.append((ev.t, 0, ev.seq, ref, ev.fields, frozenset([ev.ident])))
        for ref in spec.refs:
            inner = by_key.get(spec.ref_keys[ref])
            if inner is not None:
                for n, a in enumerate(run(inner)):
                    inputs.append((a.t, 1, n, ref, a.fields, a.evidence))
        inputs.sort(key=lambda x: x[:3])
        groups: dict[tuple, list[dict]] = {}
        order = 0
        for t, _, _, ref, fields, evidence in inputs:
            names = [spec.aliases.get(g, {}).get(ref, g) for g in spec.group_by]
            raw = [fields.get(n) for n in names]
            if any(v is None or v == "" for v in raw):
                continue
            value = None
            if spec.field is not None and spec.type != "temporal" and spec.type != "temporal_ordered":
                fname = spec.aliases.get(spec.field, {}).get(ref, spec.field)
                v = fields.get(fname)
                value = number(v) if spec.type != "value_count" else (None if v in (None, "") else canon(v))
                if value is None:
                    continue
            order += 1
            groups.setdefault(tuple(canon(v) for v in raw), []).append(
                {"t": t, "ref": ref, "value": value, "evidence": evidence, "order": order,
                 "group_fields": dict(zip(spec.group_by, raw, strict=True))})
        eager = (spec.expr is not None and not _has_not(spec.expr)) or (
            spec.op is not None and all(op in ("gt", "gte") for op, _ in ((spec.op, 0), *spec.also)))
        out: list[RefAlert] = []
        for group, items in groups.items():
            if eager:
                live: list[dict] = []
                for x in items:
                    live.append(x)
                    newest = max(y["t"] for y in live)
                    live = [y for y in live if y["t"] >= newest - spec.timespan_us]
                    chosen = _judge(spec, live)
                    if chosen is not None:
                        out.append(_alert(spec, group, chosen))
                        live = []
            else:
                window: list[dict] = []
                for x in items:
                    if window and x["t"] > window[0]["t"] + spec.timespan_us:
                        chosen = _judge(spec, window)
                        if chosen is not None:
                            out.append(_alert(spec, group, chosen))
                        window = []
                    window.append(x)
                if window:
                    chosen = _judge(spec, window)
                    if chosen is not None:
                        out.append(_alert(spec, group, chosen))
        out.sort(key=lambda a: (a.t, a.group))
        done[spec.key] = out
        return out

    alerts: list[RefAlert] = []
    for spec in specs:
        alerts.extend(run(spec))
    return alerts
