"""A small reference evaluator for single-event Sigma rules, written from the specification and
the README "Sigma engine" choices, sharing nothing with ``scmwatch.sigma.compile``/``values``
but pySigma's parse (condition trees and typed values).

Deliberately naive: every string value becomes one Python ``re`` pattern matched against the
lower-cased event text, regexes run in Python's ``re`` (whose ``$`` is PCRE's: it matches
before a final newline), numbers are parsed by one regular expression, no grouping, no
prefilter, no index, no code generation.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

SYSTEM = {"EventID", "Channel", "Computer", "Provider_Name", "TimeCreated", "EventRecordID"}
DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


def text_of(v: Any) -> list[str]:
    """The texts a string comparison sees for a field value (lists: each item)."""
    if v is None or isinstance(v, dict):
        return []
    if isinstance(v, list):
        return [t for x in v for t in text_of(x)]
    if isinstance(v, bool):
        return ["true" if v else "false"]
    if isinstance(v, float) and v == int(v):
        return [str(int(v))]
    return [str(v)]


def number_of(v: Any) -> list[float]:
    if isinstance(v, list):
        return [n for x in v for n in number_of(x)]
    if isinstance(v, bool) or v is None:
        return []
    if isinstance(v, int | float):
        return [float(v)]
    if isinstance(v, str) and DECIMAL.fullmatch(v):
        return [float(v)]
    return []


def glob_regex(s: SigmaString, cased: bool) -> re.Pattern:
    out = []
    for p in s.s:
        if p is SpecialChars.WILDCARD_MULTI:
            out.append(".*")
        elif p is SpecialChars.WILDCARD_SINGLE:
            out.append(".")
        else:
            out.append(re.escape(p if cased else p.lower()))
    return re.compile("".join(out), re.S)


def string_match(s: SigmaString, v: Any, keyword: bool = False) -> bool:
    cased = isinstance(s, SigmaCasedString)
    rx = glob_regex(s, cased)
    for t in text_of(v):
        t = t if cased else t.lower()
        if (rx.search(t) if keyword else rx.fullmatch(t)) is not None:
            return True
    return False


def regex_match(val: SigmaRegularExpression, v: Any) -> bool:
    flags = 0
    if SigmaRegularExpressionFlag.IGNORECASE in val.flags:
        flags |= re.I
    if SigmaRegularExpressionFlag.MULTILINE in val.flags:
        flags |= re.M
    if SigmaRegularExpressionFlag.DOTALL in val.flags:
        flags |= re.S
    rx = re.compile(str(val.regexp), flags)
    return any(rx.search(t) for t in text_of(v))


def value_match(val: Any, event: dict, name: str) -> bool:
    present = name in event
    v = event.get(name)
    if isinstance(val, SigmaExpansion):
        return any(value_match(x, event, name) for x in val.values)
    if isinstance(val, SigmaRegularExpression):
        return regex_match(val, v)
    if isinstance(val, SigmaString):
        return string_match(val, v)
    if isinstance(val, SigmaNull):
        return v is None or v == ""
    if isinstance(val, SigmaExists):
        return present == val.exists
    if isinstance(val, SigmaBool):
        word = "true" if val.boolean else "false"
        vals = v if isinstance(v, list) else [v]
        return any((x is val.boolean) if isinstance(x, bool) else isinstance(x, str) and x.lower() == word
                   for x in vals)
    if isinstance(val, SigmaNumber):
        return any(n == float(val.number) for n in number_of(v))
    if isinstance(val, SigmaCompareExpression):
        op = {CompareOperators.LT: float.__lt__, CompareOperators.LTE: float.__le__,
              CompareOperators.GT: float.__gt__, CompareOperators.GTE: float.__ge__}[val.op]
        return any(op(n, float(val.number.number)) for n in number_of(v))
    if isinstance(val, SigmaCIDRExpression):
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, str):
                try:
                    if ipaddress.ip_address(x) in val.network:
                        return True
                except ValueError:
                    pass
        return False
    if isinstance(val, SigmaFieldReference):
        a = [t.lower() for t in text_of(v)]
        b = [t.lower() for t in text_of(event.get(val.field))]
        if not a or not b:
            return False
        x, y = a[0], b[0]
        if val.starts_with and val.ends_with:
            return y in x
        if val.starts_with:
            return x.startswith(y)
        if val.ends_with:
            return x.endswith(y)
        return x == y
    raise NotImplementedError(type(val).__name__)


def keyword_match(val: Any, event: dict) -> bool:
    values = val.values if isinstance(val, SigmaExpansion) else [val]
    for x in values:
        for k, v in event.items():
            if k in SYSTEM:
                continue
            if isinstance(x, SigmaRegularExpression):
                if regex_match(x, v):
                    return True
            elif isinstance(x, SigmaString):
                if string_match(x, v, keyword=True):
                    return True
            else:  # number / boolean keyword: a substring of the value's text
                needle = text_of(getattr(x, "number", getattr(x, "boolean", None)))[0].lower()
                if any(needle in t.lower() for t in text_of(v)):
                    return True
    return False


def evaluate(node: Any, event: dict) -> bool:
    if isinstance(node, ConditionAND):
        return all(evaluate(a, event) for a in node.args)
    if isinstance(node, ConditionOR):
        return any(evaluate(a, event) for a in node.args)
    if isinstance(node, ConditionNOT):
        return not evaluate(node.args[0], event)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return value_match(node.value, event, node.field.replace(" ", ""))
    if isinstance(node, ConditionValueExpression):
        return keyword_match(node.value, event)
    raise NotImplementedError(type(node).__name__)


def rule_matches(trees: list, event: dict) -> bool:
    return any(evaluate(t, event) for t in trees)
