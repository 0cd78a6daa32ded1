"""pySigma condition trees → Python predicates over a flat event dict.

A predicate is ``pred(fields, low) -> bool`` where ``fields`` is ``Event.fields`` and ``low`` a
per-event :class:`Low` cache of lower-cased string values (each field is lower-cased at most
once per event, however many rules look at it).

Semantics, all decided here (tests/test_sigma_semantics.py has a positive and a near miss for each):

* strings are case-insensitive unless ``|cased``; ``*``/``?`` wildcards, escapes already
  resolved by pySigma (we read ``SigmaString.s``, never the original text);
* a list of values is OR (``|all`` → AND), a map is AND, a list of maps is OR — pySigma already
  turned these into ``ConditionOR``/``ConditionAND`` nodes; OR-ed string values on one field are
  grouped here into one set / tuple-``startswith`` / tuple-``endswith`` check;
* ``|re`` uses RE2 (linear time), case-sensitive unless ``|i``; ``m``/``s`` flags honoured;
  unanchored (search);
* ``null`` matches a missing field, ``None`` or ``""``; ``''`` matches only a present empty
  string; ``|exists`` tests key presence; ``not`` over a missing field is True;
* numbers match ints and numeric strings both ways (``EventID: 4688`` vs ``"4688"``), but a
  string counts as a number only when written as a plain ASCII decimal (no whitespace, ``+``,
  leading zero, exponent, ``inf``); ``gt``/``gte``/``lt``/``lte`` parse the same way, hex only on
  fields a source declares hex; booleans match ``true``/``false`` (any case), never trimmed;
  time-part modifiers (``|hour`` ...) compare the part of the field's timestamp, not the field;
* ``|re`` follows PCRE for ``$`` (also before a final newline), see ``values.pcre_dollar``;
* ``cidr`` parses the value, untrimmed, as an IP address (IPv4-mapped IPv6 does not match an IPv4 net);
* ``fieldref`` compares two fields case-insensitively (equals / startswith / endswith / contains);
* keyword (field-less) values, numbers included, are substring matches over the text of every
  non-System field value; ``|re`` keywords keep their flags;
* ``expand`` placeholders take values from the placeholder config; unresolved ones fail the
  rule with a one-line reason instead of silently matching or not matching.

Alternate sources (Security 4688 for process_creation) compile the same tree with a
:class:`~scmwatch.sigma.logsource.FieldMap`: fields renamed, and leaves on unavailable fields
replaced by the constant that makes the rule *certainly* true only when it would be whatever the
missing value is (False in positive position, True under ``not``). The folded result tells
whether the rule can fire on that source at all.

Alongside each predicate the compiler derives a *necessary-literal set*: lower-cased strings of
which at least one must occur in the event's text for the rule to match (None: no such set).
The index uses it as an Aho-Corasick prefilter.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sigma.types import (
    CompareOperators,
    Placeholder,
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
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from scmwatch.events.model import parse_time
from scmwatch.native import pure_python
from scmwatch.sigma.logsource import FieldMap
from scmwatch.sigma.values import (
    CompileError,
    as_text,
    classify,
    compile_re2,
    globs_matcher,
    lower_parts,
    necessary_literal,
    re2_searcher,
    regex_literals,
    regex_needs,
    regex_prefilter,
    strict_number,
    string_parts,
    text_matcher,
)


def _conditions() -> None:
    """Bind pySigma's condition node classes here, at the first compilation.

    ``sigma.conditions`` imports pyparsing (~35 ms), and a start from the rule cache compiles
    nothing: the stored predicates need only this module's helpers. Every entry point that
    walks condition trees calls this first (the trees' classes are loaded by then anyway)."""
    global ConditionAND, ConditionFieldEqualsValueExpression, ConditionNOT, ConditionOR
    global ConditionValueExpression
    from sigma.conditions import (
        ConditionAND,
        ConditionFieldEqualsValueExpression,
        ConditionNOT,
        ConditionOR,
        ConditionValueExpression,
    )


Pred = Callable[[dict, "Low"], bool]
Node = Any  # a Code expression while compiling, a Pred once emitted, or a folded constant bool

# Fields a keyword search does not look at: System metadata, not message content.
SYSTEM_FIELDS = frozenset({
    "EventID", "EventID_Qualifiers", "Channel", "Provider_Name", "Provider_Guid",
    "Provider_EventSourceName", "Computer", "EventRecordID", "TimeCreated", "TimeCreated_SystemTime",
    "ProcessID", "ThreadID", "Execution_ProcessID", "Execution_ThreadID", "UserID", "Security_UserID",
    "Level", "Task", "Opcode", "Keywords", "Version", "Correlation_ActivityID",
    "Correlation_RelatedActivityID",
})
# Literals on these fields say nothing once the index has gated on channel/EventID.
GATE_FIELDS = frozenset({"EventID", "Channel", "Provider_Name", "Provider_Guid", "EventType"})
MIN_LITERAL = 3
# Two-character literals made only of these are rare enough in event text to gate on
# (cmd obfuscation: '^^', ',;', '(,' ...); letters, spaces, quotes, slashes and '%' are not.
RARE_PUNCT = frozenset("^,;|()`~{}[]$@!#+=<>&")
# Substrings present in most Windows events: poor prefilter keys.
COMMON_LITERALS = frozenset({
    "c:\\", "\\windows\\", "windows", "\\system32\\", "system32", ".exe", "\\appdata\\", ".dll",
    "\\users\\", "\\program files", "microsoft", "\\microsoft\\", "software", "hklm\\", "\\software\\",
    "\\currentversion\\", "cmd.exe", "\\cmd.exe", "powershell",
})


def _rare_pair(lit: str) -> bool:
    return len(lit) == 2 and lit[0] in RARE_PUNCT and lit[1] in RARE_PUNCT


class PyLow(dict):
    """Per-event cache: field name → lower-cased value (None unless the value is a str).

    ``Low`` is this class, or its C twin from ``sigma/_text.c`` (the same, without a Python
    frame per first lookup of a field)."""

    __slots__ = ("f",)

    def __init__(self, fields: dict) -> None:
        self.f = fields

    def __missing__(self, key: str) -> str | None:
        v = self.f.get(key)
        r = v.lower() if v.__class__ is str else None
        self[key] = r
        return r


Low: type[dict] = PyLow
tagged_join: Callable[..., str | None] | None = None  # sigma/_text.c; tagged.py says what it makes
if not pure_python():
    try:  # optional C extension
        from scmwatch.sigma._text import Low, tagged_join
    except ImportError:  # pragma: no cover - built without a C compiler
        pass
Prog: Callable[..., Pred] | None = None  # sigma/_prog.c: a predicate's tree run in C
if not pure_python():
    try:  # optional C extension
        from scmwatch.sigma._prog import Prog
    except ImportError:  # pragma: no cover - built without a C compiler
        pass


@dataclass
class Compiled:
    """A compiled detection: its predicate and what must be in an event for it to match."""

    pred: Node
    literals: Gates  # all gates must be hit for the rule to be able to match; () = always run
    unavailable_used: set[str] = field(default_factory=set)
    literal_fields: frozenset[str] | None = None  # where literals can occur (None: any field)
    requirement: Req = True  # over atoms (``atom_of``): False when it is, the rule cannot match


def _slow(v: Any, test: Callable[[str], bool], lower: bool = True) -> bool:
    """Non-str field values: lists are any-of, numbers/bools compare as their text."""
    if v is None:
        return False
    if isinstance(v, list | tuple):
        for x in v:
            t = x if isinstance(x, str) else as_text(x)
            if t is not None and test(t.lower() if lower else t):
                return True
        return False
    t = as_text(v)
    return t is not None and test(t.lower() if lower else t)


# ----------------------------------------------------------------------------- code generation
#
# A rule's whole condition becomes ONE generated function ``lambda f, low: <expr>``: AND/OR/NOT
# are Python's own ``and``/``or``/``not`` and the common string tests are inlined
# (``(_v.endswith(T3) if (_v := low['Image']) is not None else slow(...))``), so evaluating a
# candidate rule costs no call per condition node. Anything unusual (regex, cidr, keywords ...)
# is a call to a small closure kept in the function's namespace. Measured ~2x fewer us per
# candidate than nested closures.


class Code:
    """A boolean Python expression over ``f`` and ``low``; names refer to the emitter's namespace.

    ``prog`` is the same expression as program text for ``_prog.Prog`` (``sigma/_prog.c`` has its
    grammar): prefix notation over the emitter's namespace keys (``k12`` is 12)."""

    __slots__ = ("expr", "depth", "prog")

    def __init__(self, expr: str, depth: int, prog: str) -> None:
        self.expr = expr
        self.depth = depth
        self.prog = prog


MAX_DEPTH = 40  # deeper subtrees are split into helper functions (the parser limits nesting)


class Emitter:
    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_slow": _slow}
        self.n = 0

    def name(self, obj: Any) -> str:
        self.n += 1
        key = f"k{self.n}"
        self.ns[key] = obj
        return key

    def call(self, pred: Pred) -> Code:
        key = self.name(pred)
        return Code(f"{key}(f, low)", 0, f"p{key[1:]}")

    def function(self, node: Node) -> Node:
        """Turn a node into a callable (constants stay constants)."""
        if node is True or node is False:
            return node
        return eval(f"lambda f, low: {node.expr}", self.ns)  # noqa: S307 - our own generated code

    def split(self, node: Code) -> Code:
        if node.depth <= MAX_DEPTH:
            return node
        helper = self.call(self.function(node))
        helper.prog = node.prog  # C has no nesting limit to split for
        return helper


def _junction(children: list, em: Emitter, word: str, absorbing: bool) -> Node:
    """``and`` (absorbing False) / ``or`` (absorbing True) of compiled children, constants folded."""
    parts = []
    for c in children:
        if c is absorbing:
            return absorbing
        if c is not (not absorbing):
            parts.append(c)
    if not parts:
        return not absorbing
    if len(parts) == 1:
        return parts[0]
    expr = "(" + f" {word} ".join(p.expr for p in parts) + ")"
    prog = f"{'|' if absorbing else '&'}{len(parts)} " + " ".join(p.prog for p in parts)
    return em.split(Code(expr, 1 + max(p.depth for p in parts), prog))


def _and(children: list, em: Emitter) -> Node:
    return _junction(children, em, "and", False)


def _or(children: list, em: Emitter) -> Node:
    return _junction(children, em, "or", True)


def _not(child: Node, em: Emitter) -> Node:
    if child is True or child is False:
        return not child
    return em.split(Code(f"(not {child.expr})", child.depth + 1, "! " + child.prog))


# Literal requirements ("gates"): a tuple of literal sets that must ALL be hit, each by at least
# one of its literals. () = no requirement (always evaluate); (frozenset(),) = can never match.
Gates = tuple[frozenset[str], ...]
MAX_GATES = 3  # per rule: more gates cost more per-event bookkeeping than they save


def _gates(x: frozenset[str] | Gates | None) -> Gates:
    if x is None:
        return ()
    if isinstance(x, frozenset):
        return (x,)
    return x


def _lit_and(sets: list) -> Gates:
    """Every child's gates are necessary for an AND; keep the most selective few."""
    allg = {g for x in sets for g in _gates(x)}
    if frozenset() in allg:
        return (frozenset(),)
    return tuple(sorted(allg, key=lambda g: (-_lit_score(g), sorted(g)))[:MAX_GATES])


def _lit_or(sets: list) -> Gates:
    """An OR needs one of its children: the union of each child's best gate."""
    out: set[str] = set()
    for x in sets:
        gs = _gates(x)
        if not gs:
            return ()
        out |= max(gs, key=_lit_score)
    return (frozenset(out),)


def _lit_score(s: frozenset[str]) -> float:
    if not s:
        return 1e9
    worst = min((len(x) - (8 if x in COMMON_LITERALS else 0)) for x in s)
    return worst - 0.05 * len(s)


# ----------------------------------------------------------------------------- atoms
#
# An *atom* is one OR-group of case-insensitive string tests on one field (what ``_ci_code``
# emits): ``Image|endswith: ['\\cmd.exe', '\\pwsh.exe']``. The same atom appears in many rules
# (Sysmon process creation: 1,416 rules, ~2,960 distinct atoms), so atoms are numbered once per
# process, and a rule's *requirement* is the positive part of its condition over atoms: AND/OR
# kept, every NOT subtree and every other leaf (regex, numbers, keywords ...) replaced by True.
# The requirement is therefore necessary: whenever the rule matches, it holds. ``tagged.py``
# picks a gate from it and scans all atoms of a bucket at once.

Req = Any  # True (no requirement) | False (impossible) | atom id | ("&" | "|", tuple of Req)
ATOM_KINDS = frozenset({"eq", "starts", "ends", "contains", "any", "num", "re", "glob"})
# The frame characters of the tagged text (``tagged.py``): an atom whose text holds one is not
# scanned.
TAG_CHARS = frozenset(chr(c) for c in range(0x10, 0x20))
_atom_ids: dict[tuple, int] = {}
ATOMS: list[tuple[str, tuple[tuple[str, Any], ...]]] = []  # atom id -> (field, specs)


def atom_of(fname: str, specs: list[tuple[str, Any]]) -> int | None:
    """The atom id of an OR-group of (kind, lower-cased text) tests on ``fname`` (a glob's
    payload: its parts); None when a test cannot be written as a scan pattern (delimiter
    characters)."""
    canon = []
    for kind, payload in specs:
        texts = [p for p in payload if isinstance(p, str)] if kind == "glob" else [payload or ""]
        if kind not in ATOM_KINDS or any(not TAG_CHARS.isdisjoint(t) for t in texts):
            return None
        canon.append((kind, tuple(payload) if kind == "glob" else payload or ""))
    key = (fname, tuple(sorted(set(canon), key=_canon_order)))
    aid = _atom_ids.get(key)
    if aid is None:
        aid = _atom_ids[key] = len(ATOMS)
        ATOMS.append(key)
    return aid


def _canon_order(spec: tuple[str, Any]) -> tuple[str, str]:
    kind, payload = spec
    return kind, payload if isinstance(payload, str) else repr(payload)


def atom_pred(aid: int) -> Pred:
    """The exact test an atom stands for (what the sampled gate choice counts with)."""
    fname, specs = ATOMS[aid]
    if specs and specs[0][0] == "num":
        return _numbers_pred(fname, frozenset(int(t) for _, t in specs), False)
    if specs and specs[0][0] == "re":  # its prefilter pattern over the lower-cased value
        search = compile_re2(specs[0][1], "s").search

        def test(v: str) -> bool:
            return search(v) is not None

        def pred(f, low):
            v = low[fname]
            return _slow(f.get(fname), test) if v is None else test(v)

        return pred
    return _ci_group(fname, list(specs))


def req_export(req: Req) -> Any:
    """A requirement with atom keys (field, tests) in place of this process's atom ids."""
    if req is True or req is False:
        return req
    if isinstance(req, int):
        return ("atom", ATOMS[req])
    return (req[0], tuple(req_export(r) for r in req[1]))


def req_import(data: Any) -> Req:
    """``req_export``'s output with atom ids of this process again."""
    if data is True or data is False:
        return data
    if data[0] != "atom":
        return (data[0], tuple(req_import(r) for r in data[1]))
    key = data[1]
    aid = _atom_ids.get(key)
    if aid is None:
        aid = _atom_ids[key] = len(ATOMS)
        ATOMS.append(key)
    return aid


def _req_junction(reqs: list, op: str, absorbing: bool) -> Req:
    out: list = []
    for r in reqs:
        if r is absorbing:
            return absorbing
        if r is not (not absorbing):
            if isinstance(r, tuple) and r[0] == op:
                out.extend(r[1])
            elif r not in out:
                out.append(r)
    if not out:
        return not absorbing
    return out[0] if len(out) == 1 else (op, tuple(out))


def req_and(reqs: list) -> Req:
    """Requirement of an AND: every child's."""
    return _req_junction(reqs, "&", False)


def req_or(reqs: list) -> Req:
    """Requirement of an OR: one child's (no requirement when a child has none)."""
    return _req_junction(reqs, "|", True)


# ----------------------------------------------------------------------------- string groups

AC_MIN = 6  # from this many OR-ed substrings on one field, use the grouped matcher below


def _contains_any(needles: tuple[str, ...]) -> Callable[[str], bool]:
    """``v -> bool``: does any needle occur in ``v``.

    Needles with non-ASCII characters (emoji, homoglyph, RTL-override rules list hundreds) are
    skipped in O(1) for ASCII values (``str.isascii`` reads a flag), which almost all command
    lines are; otherwise single characters become one ``frozenset.isdisjoint`` pass (3 us on 300
    chars, where a 400-way ``re`` character class took 195 us and pyahocorasick 77 us: its
    per-node child lookup is linear in the fan-out). Other needles: ``in`` one by one (C find).
    """
    ascii_n = tuple(n for n in needles if n.isascii())
    wide = [n for n in needles if not n.isascii()]
    chars = frozenset(n for n in wide if len(n) == 1)
    longer = tuple(n for n in wide if len(n) != 1)
    isdisjoint = chars.isdisjoint

    def test(v: str) -> bool:
        for c in ascii_n:
            if c in v:
                return True
        if v.isascii():
            return False
        if chars and not isdisjoint(v):
            return True
        for c in longer:
            if c in v:
                return True
        return False

    return test


def _ci_group(fname: str, specs: list[tuple[str, Any]]) -> Pred:
    """One predicate for OR-ed case-insensitive string values on one field."""
    eqs = frozenset(p for k, p in specs if k == "eq")
    starts = tuple(p for k, p in specs if k == "starts")
    ends = tuple(p for k, p in specs if k == "ends")
    contains = tuple(p for k, p in specs if k == "contains")
    glob_any = globs_matcher([p for k, p in specs if k == "glob"])
    globs = (glob_any,) if glob_any is not None else ()
    anyv = any(k == "any" for k, _ in specs)
    kinds = sum(bool(x) for x in (eqs, starts, ends, contains, globs))
    if anyv:
        def test(v: str) -> bool:
            return True
    elif kinds == 1 and eqs:
        if len(eqs) == 1:
            (e,) = eqs
            test = e.__eq__
        else:
            test = eqs.__contains__
    elif kinds == 1 and starts:
        def test(v: str) -> bool:
            return v.startswith(starts)
    elif kinds == 1 and ends:
        def test(v: str) -> bool:
            return v.endswith(ends)
    elif kinds == 1 and len(contains) == 1:
        (c0,) = contains

        def test(v: str) -> bool:
            return c0 in v
    elif kinds == 1 and len(contains) >= AC_MIN:
        test = _contains_any(contains)
    elif kinds == 1 and contains:
        def test(v: str) -> bool:
            for c in contains:
                if c in v:
                    return True
            return False
    else:
        has_contains = _contains_any(contains) if len(contains) >= AC_MIN else None

        def test(v: str) -> bool:
            if v in eqs or v.startswith(starts) or v.endswith(ends):
                return True
            if has_contains is not None:
                if has_contains(v):
                    return True
            else:
                for c in contains:
                    if c in v:
                        return True
            for g in globs:
                if g(v):
                    return True
            return False

    def pred(f, low):
        v = low[fname]
        if v is None:
            return _slow(f.get(fname), test)
        return test(v)

    pred.test = test  # type: ignore[attr-defined]
    return pred


NATIVE_ORDER = ("eq", "starts", "ends", "contains")  # string tests a Prog runs itself
NATIVE_KINDS = frozenset(NATIVE_ORDER)
NATIVE_NODES = frozenset("cfnzer")  # program nodes C evaluates itself (the others call Python)


PROG_KEY = "__scm_prog__"  # a generated namespace's program text (in the namespace: no function attribute)


def c_program(pred: Pred | bool) -> Pred | bool:
    """The predicate as a ``_prog.Prog`` when the C extension is there and the predicate is a
    generated function with string tests (its namespace holds the program text), else the
    predicate itself: what an index's hot loop runs.

    The generated lambda spends its time in bytecode around CPython's string calls (a frame,
    global loads, ``low[...]``, a method call per tuple test); the Prog makes the same calls
    from C. Measured (all SigmaHQ): Sysmon process creation's predicates 6.8 -> 5.2-5.5 us per
    event (``bench/match_buckets.py``, alternate runs), the attack corpus x5 with ``--jobs 1``
    5,465M -> 5,301M instructions (callgrind). The text rides in the namespace the rule cache
    stores anyway, one short str per predicate: a tree of tuples as a function attribute made
    reading the x5 hunt's predicates cost 84M more instructions (callgrind)."""
    ns = getattr(pred, "__globals__", None)
    text = ns.get(PROG_KEY) if ns is not None else None
    if Prog is None or text is None:
        return pred
    return Prog(text, ns, _slow)


# Per program node: which of its comma-apart numbers name namespace keys (the others are flags,
# counts and lengths; see ``sigma/_prog.c``).
_KEY_PLACES = {"c": range(6), "f": range(3), "n": range(3), "z": range(1), "e": range(1), "r": range(4),
               "p": range(1), "&": range(0), "|": range(0), "!": range(0)}
_DATA = (str, int, float, bool, type(None))


def _is_data(v: Any) -> bool:
    return type(v) in _DATA or (type(v) in (tuple, frozenset) and all(type(x) in _DATA for x in v))


def program_parts(pred: Pred | bool) -> tuple[str, dict[str, Any], tuple[str, ...]] | None:
    """What a ``Prog`` of ``pred`` is made of, apart: its text, the strings, numbers and tuples
    or frozensets of them its text names (by namespace key), and the keys of the callables it
    names (the Python tests C calls only for what it cannot answer itself). None when ``pred``
    has no program, or names something that is neither.

    Why: a process that runs a rule from the cache needs only the program; its callables (RE2
    matchers, ``_ci_group`` closures, the lambda itself) are what made reading a stored
    predicate cost (``predpickle``): the data alone, plainly pickled, reads in about a third of
    the time (``ruleset.lite_program``)."""
    ns = getattr(pred, "__globals__", None)
    text = ns.get(PROG_KEY) if ns is not None else None
    if type(text) is not str:
        return None
    data: dict[str, Any] = {}
    calls: list[str] = []
    for token in text.split():
        places = _KEY_PLACES.get(token[0])
        if places is None:
            return None
        nums = token[1:].split(",")
        for k in places:
            if k >= len(nums) or not nums[k].isdigit():
                return None
            if nums[k] == "0":
                continue
            key = f"k{nums[k]}"
            if key in data or key in calls:
                continue
            v = ns.get(key)
            if _is_data(v) and key in ns:
                data[key] = v
            elif callable(v):
                calls.append(key)
            else:
                return None
    return text, data, tuple(calls)


def _ci_code(fname: str, specs: list[tuple[str, Any]], em: Emitter) -> Code:
    """Inline expression for OR-ed case-insensitive strings on one field (see ``_ci_group``)."""
    test = _ci_group(fname, specs).test  # type: ignore[attr-defined]
    tk = em.name(test)
    kinds = {k for k, _ in specs}
    vals = [p for _, p in specs]
    keys: dict[str, str] = {}  # kind -> namespace key of its strings, for the program text
    if kinds == {"eq"} and len(vals) == 1:
        keys["eq"] = em.name(vals[0])
        inline = f"_v == {keys['eq']}"
    elif kinds == {"eq"}:
        keys["eq"] = em.name(frozenset(vals))
        inline = f"_v in {keys['eq']}"
    elif kinds == {"starts"}:
        keys["starts"] = em.name(tuple(vals))
        inline = f"_v.startswith({keys['starts']})"
    elif kinds == {"ends"}:
        keys["ends"] = em.name(tuple(vals))
        inline = f"_v.endswith({keys['ends']})"
    elif kinds == {"contains"} and len(vals) == 1:
        keys["contains"] = em.name(vals[0])
        inline = f"{keys['contains']} in _v"
    else:
        inline = f"{tk}(_v)"
    native = kinds <= NATIVE_KINDS
    if native:
        for kind in NATIVE_ORDER:
            group = [p for k, p in specs if k == kind]
            if group and kind not in keys:
                keys[kind] = em.name(frozenset(group) if kind == "eq" else tuple(group))
    fk = em.name(fname)
    return Code(f"(({inline}) if (_v := low[{fk}]) is not None else _slow(f.get({fk}), {tk}))", 0,
                f"c{fk[1:]},{','.join(keys[k][1:] if k in keys else '0' for k in NATIVE_ORDER)},{tk[1:]},"
                f"{int(native)}")


def _raw_pred(fname: str, test: Callable[[str], bool]) -> Pred:
    """``test`` on the field's value as written (not lower-cased): ``|cased`` and ``|re``."""

    def pred(f, low):
        v = f.get(fname)
        if v.__class__ is str:
            return test(v)
        return _slow(v, test, lower=False)

    return pred


def _regex_test(val: SigmaRegularExpression) -> Callable[[str], bool]:
    """``|re`` value → search test, with its ``i``/``m``/``s`` flags (on keywords too)."""
    flags = ""
    if SigmaRegularExpressionFlag.IGNORECASE in val.flags:
        flags += "i"
    if SigmaRegularExpressionFlag.MULTILINE in val.flags:
        flags += "m"
    if SigmaRegularExpressionFlag.DOTALL in val.flags:
        flags += "s"
    if val.regexp.contains_placeholder():
        raise CompileError("placeholders inside regular expressions are not supported")
    return re2_searcher(str(val.regexp), flags)


def _cased_pred(fname: str, specs: list[tuple[str, Any]]) -> Pred:
    tests = [text_matcher(k, p) for k, p in specs]

    def test(v: str) -> bool:
        return any(t(v) for t in tests)

    return _raw_pred(fname, test)


# ----------------------------------------------------------------------------- compiler


class _Compiler:
    def __init__(self, fieldmap: FieldMap | None, placeholders: dict[str, list[str]] | None) -> None:
        _conditions()
        self.fm = fieldmap
        self.placeholders = placeholders or {}
        self.unavailable_used: set[str] = set()
        self.em = Emitter()
        # Fields whose values can hold a literal of this rule's set (None: keywords, any field
        # but the System ones, which a keyword search skips).
        self.lit_fields: set[str] | None = set()
        self.system_lits = False  # a literal comes from a System field

    # -- fields
    def field(self, name: str) -> str | None:
        """Mapped field name for this source, or None when the source lacks it.

        Spaces are dropped, as the readers drop them from EventData names (Defender's
        ``Threat Name`` is ``ThreatName`` in events), so either spelling in a rule matches."""
        if " " in name:
            name = name.replace(" ", "")
        if self.fm is None:
            return name
        if name in self.fm.unavailable:
            self.unavailable_used.add(name)
            return None
        return self.fm.rename.get(name, name)

    def atom(self, fname: str, specs: list[tuple[str, Any]]) -> Req:
        """Requirement of a string group on a (mapped) field: its atom, or True when unscannable."""
        if fname in GATE_FIELDS:  # the index gated on these already
            return True
        aid = atom_of(fname, specs)
        return True if aid is None else aid

    def note_fields(self, fname: str, lits: frozenset[str] | None) -> None:
        if not lits:
            return
        if fname in SYSTEM_FIELDS:
            self.system_lits = True
        if self.lit_fields is not None:
            self.lit_fields.add(fname)

    # -- values
    def expand_placeholders(self, s: SigmaString) -> list[SigmaString]:
        if not s.contains_placeholder():
            return [s]
        missing = [p.name for p in s.s if isinstance(p, Placeholder) and p.name not in self.placeholders]
        if missing:
            raise CompileError(f"unresolved placeholder %{missing[0]}% (give values with --placeholders)")

        def cb(p):
            for v in self.placeholders[p.name]:
                yield SigmaString(str(v))

        return s.replace_placeholders(cb)

    def string_specs(self, val: Any) -> list[tuple[str, Any]] | None:
        """(kind, lower-cased payload) list for a case-insensitive string value, else None."""
        if isinstance(val, SigmaExpansion):
            out: list[tuple[str, Any]] = []
            for v in val.values:
                sub = self.string_specs(v)
                if sub is None:
                    return None
                out.extend(sub)
            return out
        if isinstance(val, SigmaString) and not isinstance(val, SigmaCasedString):
            return [classify(lower_parts(string_parts(s))) for s in self.expand_placeholders(val)]
        if isinstance(val, SigmaBool):
            # what a bool leaf holds for is exactly the case-insensitive string test: a bool
            # value as "true"/"false" (``as_text``), a str lower-cased, lists any-of, nothing else
            return [("eq", "true" if val.boolean else "false")]
        return None

    @staticmethod
    def spec_literals(specs: list[tuple[str, Any]]) -> frozenset[str] | None:
        lits = set()
        for kind, payload in specs:
            if kind == "any":
                return None
            lit = necessary_literal(payload) if kind == "glob" else payload
            if len(lit) < MIN_LITERAL and not _rare_pair(lit):
                return None
            lits.add(lit)
        return frozenset(lits)

    # -- nodes
    def node(self, n: Any, positive: bool) -> tuple[Node, frozenset[str] | None, Req]:
        """(code, necessary literals, requirement over atoms) of a condition node."""
        if isinstance(n, ConditionAND):
            # Filters (NOT) last: selections usually reject first and cheaper.
            args = sorted(n.args, key=lambda a: isinstance(a, ConditionNOT))
            parts = [self.node(a, positive) for a in args]
            return (_and([p for p, _, _ in parts], self.em), _lit_and([lit for _, lit, _ in parts]),
                    req_and([r for _, _, r in parts]))
        if isinstance(n, ConditionOR):
            return self.or_node(n.args, positive)
        if isinstance(n, ConditionNOT):
            inner, _, _ = self.node(n.args[0], not positive)
            return _not(inner, self.em), None, True
        if isinstance(n, ConditionFieldEqualsValueExpression):
            return self.leaf(n.field, n.value, positive)
        if isinstance(n, ConditionValueExpression):
            return self.keyword(n.value)
        raise CompileError(f"unsupported condition element {type(n).__name__}")

    def or_node(self, args: list, positive: bool) -> tuple[Node, frozenset[str] | None, Req]:
        groups: dict[str, list[tuple[str, Any]]] = {}
        others: list[tuple[Node, frozenset[str] | None, Req]] = []
        plain = [a for a in args if isinstance(a, ConditionValueExpression)
                 and isinstance(a.value, SigmaString | SigmaExpansion)
                 and not isinstance(a.value, SigmaCasedString)]
        if len(plain) > 1:  # OR-ed keywords: one pass over the values for all of them
            others.append(self.keywords([a.value for a in plain]))
            args = [a for a in args if all(a is not p for p in plain)]
        numbers: dict[str, list[int | float]] = {}
        for a in args:
            if isinstance(a, ConditionFieldEqualsValueExpression) and a.field is not None \
                    and type(a.value) is SigmaNumber:
                numbers.setdefault(a.field, []).append(a.value.number)
                continue
            if isinstance(a, ConditionFieldEqualsValueExpression) and a.field is not None:
                specs = self.string_specs(a.value)
                if specs is not None:
                    mapped = self.field(a.field)
                    if mapped is None:
                        others.append((not positive, frozenset() if positive else None, not positive))
                    else:
                        groups.setdefault(mapped, []).extend(specs)
                    continue
            others.append(self.node(a, positive))
        for fname, specs in groups.items():
            lits = None if fname in GATE_FIELDS else self.spec_literals(specs)
            self.note_fields(fname, lits)
            others.append((_ci_code(fname, specs, self.em), lits, self.atom(fname, specs)))
        for fname, nums in numbers.items():
            others.append(self.numbers(fname, nums, positive))
        return (_or([p for p, _, _ in others], self.em), _lit_or([lit for _, lit, _ in others]),
                req_or([r for _, _, r in others]))

    def leaf(self, fname: str, val: Any, positive: bool) -> tuple[Node, frozenset[str] | None, Req]:
        specs = self.string_specs(val)
        mapped = self.field(fname)
        if mapped is None:
            return (not positive), (frozenset() if positive else None), not positive
        if specs is not None:
            lits = None if mapped in GATE_FIELDS else self.spec_literals(specs)
            self.note_fields(mapped, lits)
            return _ci_code(mapped, specs, self.em), lits, self.atom(mapped, specs)
        if type(val) is SigmaNumber:
            return self.numbers(fname, [val.number], positive)
        if isinstance(val, SigmaExpansion):
            parts = [self.leaf(fname, v, positive) for v in val.values]
            return (_or([p for p, _, _ in parts], self.em), _lit_or([lit for _, lit, _ in parts]),
                    req_or([r for _, _, r in parts]))
        if isinstance(val, SigmaCasedString):
            specs = [classify(string_parts(s)) for s in self.expand_placeholders(val)]
            lits = self.spec_literals([(k, lower_parts(p) if k == "glob" else p.lower() if p else p)
                                       for k, p in specs])
            self.note_fields(mapped, lits)
            return self.em.call(_cased_pred(mapped, specs)), lits, True
        hexok = self.fm is not None and mapped in self.fm.hex_fields
        if isinstance(val, SigmaFieldReference) and not val.starts_with and not val.ends_with:
            return self.same_fields(mapped, val.field), None, True
        lits = None
        req: Req = True
        if isinstance(val, SigmaRegularExpression) and mapped not in GATE_FIELDS:
            lits = regex_literals(str(val.regexp))
            self.note_fields(mapped, lits)
            # the case-free substrings every match holds: the lower-cased value holds them too;
            # and the regex itself as a prefilter pattern over the lower-cased value
            req = req_and([self.atom(mapped, [("contains", run)]) for run in regex_needs(str(val.regexp))[0]])
            rx = regex_prefilter(str(val.regexp))
            if rx is not None:
                req = req_and([req, self.atom(mapped, [("re", rx)])])
        if isinstance(val, SigmaRegularExpression):
            return self.regex_code(mapped, val), lits, req
        code = self.em.call(self.typed_leaf(mapped, val, hexok))
        if isinstance(val, SigmaNull):
            code.prog = f"z{self.em.name(mapped)[1:]}"
        elif isinstance(val, SigmaExists):
            code.prog = f"e{self.em.name(mapped)[1:]},{int(val.exists)}"
        return code, lits, req

    def numbers(self, fname: str, nums: list[int | float],
                positive: bool) -> tuple[Node, frozenset[str] | None, Req]:
        """OR-ed numbers on one (unmapped) field: one set test, and an atom (``num``) when they
        are all ints on a field not read as hex. Measured: ``Potentially Suspicious Malware
        Callback Communication`` (52 ports) cost 4.8 us per Sysmon network event it was
        evaluated on as 52 leaves."""
        mapped = self.field(fname)
        if mapped is None:
            return (not positive), (frozenset() if positive else None), not positive
        hexok = self.fm is not None and mapped in self.fm.hex_fields
        numset = frozenset(nums)
        code = self.em.call(_numbers_pred(mapped, numset, hexok))
        code.prog = f"n{self.em.name(mapped)[1:]},{self.em.name(numset)[1:]},{code.prog[1:]}"
        req: Req = True
        if not hexok and mapped not in GATE_FIELDS and all(type(n) is int for n in nums):
            aid = atom_of(mapped, [("num", str(n)) for n in nums])
            req = True if aid is None else aid
        return code, None, req

    def same_fields(self, fname: str, ref: str) -> Code:
        """``fname|fieldref: ref`` inline when both are str (the common case, compared as the
        ``_fieldref_leaf`` call would), that call otherwise. ``Potentially Suspicious Child
        Process Of ... Itself`` runs on every Sysmon process creation (it has no atom)."""
        other = self.field(ref)
        if other is None:
            raise CompileError(f"fieldref to unavailable field {ref}")
        a, b = self.em.name(fname), self.em.name(other)
        slow = self.em.name(_fieldref_leaf(fname, other, False, False))
        return Code(f"((_v == _w) if (_v := low[{a}]) is not None and (_w := low[{b}]) is not None "
                    f"else {slow}(f, low))", 0, f"f{a[1:]},{b[1:]},{slow[1:]}")

    def typed_leaf(self, fname: str, val: Any, hexok: bool) -> Pred:
        if isinstance(val, SigmaTimestampPart):  # before SigmaNumber: it subclasses it
            return _timepart_leaf(fname, val.timestamp_part, val.number)
        if isinstance(val, SigmaNumber):
            return _numbers_pred(fname, frozenset([val.number]), hexok)
        if isinstance(val, SigmaCompareExpression):
            return _compare_leaf(fname, val.op, val.number.number, hexok)
        if isinstance(val, SigmaNull):
            return lambda f, low: f.get(fname) in (None, "")
        if isinstance(val, SigmaExists):
            want = val.exists
            return lambda f, low: (fname in f) is want
        if isinstance(val, SigmaCIDRExpression):
            return _cidr_leaf(fname, val.network)
        if isinstance(val, SigmaFieldReference):
            other = self.field(val.field)
            if other is None:
                raise CompileError(f"fieldref to unavailable field {val.field}")
            return _fieldref_leaf(fname, other, val.starts_with, val.ends_with)
        raise CompileError(f"unsupported value type {type(val).__name__} on field {fname}")

    def regex_code(self, fname: str, val: SigmaRegularExpression) -> Code:
        """``fname|re: val``: a call of its ``_raw_pred``, and for the program an ``r`` node that
        makes the test's own length and substring checks (``values.regex_needs``) in C before
        calling the test. The attack corpus x5 (``--jobs 1``) made 11,255 predicate and 11,450
        test calls (two Python frames each) for its regexes; now 71 and 2,247."""
        test = _regex_test(val)
        code = self.em.call(_raw_pred(fname, test))
        needs = getattr(test, "needs", ())
        nk = self.em.name(needs)[1:] if needs else "0"
        code.prog = (f"r{self.em.name(fname)[1:]},{nk},{self.em.name(test)[1:]},{code.prog[1:]},"
                     f"{getattr(test, 'min_len', 0)}")
        return code

    def keyword(self, val: Any) -> tuple[Node, frozenset[str] | None, Req]:
        """Field-less value: substring (wildcards honoured) over every non-System value."""
        return self.keywords([val])

    def keywords(self, vals: list) -> tuple[Node, frozenset[str] | None, Req]:
        """OR-ed field-less values (a regex alone; otherwise all cased or none): one pass over
        the event's values for all of them. A keyword list is an OR of one leaf per value, and
        each leaf went over every field: Mimikatz Keywords (20 values) cost 113 us per Sysmon
        process-creation event it was evaluated on, 20 us as one pass with plain substrings as
        one ``_contains_any`` test per value."""
        val = vals[0]
        cased = isinstance(val, SigmaCasedString)
        test: Callable[[str], bool]
        specs: list[tuple[str, Any]] = []
        if isinstance(val, SigmaRegularExpression):
            tests = [_regex_test(val)]
            lits = regex_literals(str(val.regexp))
            cased = True
        else:
            values = [v for val in vals for v in (val.values if isinstance(val, SigmaExpansion) else [val])]
            for v in values:
                if not isinstance(v, SigmaString):
                    # a number or boolean keyword is a substring of a value's text like any other
                    raw = getattr(v, "number", getattr(v, "boolean", v))
                    specs.append(("contains", (as_text(raw) or "").lower()))
                    continue
                for s in self.expand_placeholders(v):
                    parts = string_parts(s)
                    parts = parts if cased else lower_parts(parts)
                    if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
                        parts = [SpecialChars.WILDCARD_MULTI, *parts]
                    if parts[-1] is not SpecialChars.WILDCARD_MULTI:
                        parts = [*parts, SpecialChars.WILDCARD_MULTI]
                    specs.append(classify(parts))
            tests = [text_matcher(k, p) for k, p in specs]
            if specs and all(k == "contains" for k, _ in specs):
                tests = [_contains_any(tuple(p for _, p in specs))]
            lits = self.spec_literals([(k, p if k == "glob" or not p else p.lower()) for k, p in specs])
        if lits:
            self.lit_fields = None  # keyword literals may sit in any field but the System ones
        if len(tests) == 1:
            test = tests[0]
        else:
            def test(v: str) -> bool:
                for t in tests:
                    if t(v):
                        return True
                return False

        lower = not cased

        def pred(f, low):
            for k, v in f.items():
                if k in SYSTEM_FIELDS:
                    continue
                if v.__class__ is str:
                    if test(low[k] if lower else v):
                        return True
                elif v is not None and _slow(v, test, lower):
                    return True
            return False

        if lower and tagged_join is not None and specs and all(
                k == "contains" and p and TAG_CHARS.isdisjoint(p) and "\x00" not in p for k, p in specs):
            return self.em.call(_joined_keywords(tests[0], pred)), lits, True
        return self.em.call(pred), lits, True


def _joined_keywords(contains: Callable[[str], bool], each_value: Pred) -> Pred:
    """Case-insensitive substring keywords over one text of all non-System values.

    The atom prefilter's tagged text with every field in one frame number (``tagged.py``) holds
    each value lower-cased as the per-value test sees it (a bool as "true", an int as digits,
    list items apart), between frame characters no needle holds, so a needle occurs in it iff it
    occurs in one value; an event whose text is not clean (a float, a frame character ...)
    takes ``each_value``, the per-value loop. Measured: ``NotPetya Ransomware Activity``
    (keyword ``\\perfc.dat``) cost 11 us per Sysmon process-creation event it was evaluated on,
    each field lower-cased on its own; one joined text is ~1.5 us."""
    join = tagged_join

    def pred(f, low):
        text = join(f, _NO_INDEX, 0, False, SYSTEM_FIELDS)
        if text is None:
            return each_value(f, low)
        return contains(text)

    return pred


_NO_INDEX: dict[str, int] = {}


# ----------------------------------------------------------------------------- typed leaves


def _numbers_pred(fname: str, nums: frozenset, hexok: bool) -> Pred:
    """Does the field equal any of ``nums``: an int as is, a str written as a plain decimal
    (``strict_number``), lists any-of. One set test for the whole OR (a number equals a set
    member iff it equals one of them: int/float hashing agrees with ``==``)."""
    texts = frozenset(str(n) for n in nums)

    def one(v: Any) -> bool:
        if v.__class__ is str and v in texts:
            return True
        x = strict_number(v, hexok)
        return x is not None and x in nums

    def pred(f, low):
        v = f.get(fname)
        if v.__class__ is int:
            return v in nums
        if v is None:
            return False
        if isinstance(v, list):
            return any(one(x) for x in v)
        return one(v)

    return pred


_OPS = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
}
if hasattr(CompareOperators, "NEQ"):
    _OPS[CompareOperators.NEQ] = lambda a, b: a != b


def _compare_leaf(fname: str, op: Any, n: int | float, hexok: bool) -> Pred:
    cmp = _OPS[op]

    def one(v: Any) -> bool:
        x = strict_number(v, hexok)
        return x is not None and cmp(x, n)

    def pred(f, low):
        v = f.get(fname)
        if v is None:
            return False
        if isinstance(v, list):
            return any(one(x) for x in v)
        return one(v)

    return pred


def _cidr_leaf(fname: str, net: Any) -> Pred:
    cache: dict[str, bool] = {}

    def one(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        r = cache.get(v)
        if r is None:
            try:
                r = ipaddress.ip_address(v) in net
            except ValueError:
                r = False
            if len(cache) < 4096:
                cache[v] = r
        return r

    def pred(f, low):
        v = f.get(fname)
        if isinstance(v, list):
            return any(one(x) for x in v)
        return one(v)

    return pred


def _fieldref_leaf(fname: str, other: str, starts: bool, ends: bool) -> Pred:
    def text(f, low, name):
        v = low[name]
        if v is None:
            t = as_text(f.get(name))
            return t.lower() if t is not None else None
        return v

    def pred(f, low):
        a = text(f, low, fname)
        b = text(f, low, other)
        if a is None or b is None:
            return False
        if starts and ends:
            return b in a
        if starts:
            return a.startswith(b)
        if ends:
            return a.endswith(b)
        return a == b

    return pred


def _timepart_leaf(fname: str, part: TimestampPart, n: int) -> Pred:
    def pred(f, low):
        t = parse_time(f.get(fname))
        if not t:
            return False
        d = datetime.fromtimestamp(t, UTC)
        got = {
            TimestampPart.MINUTE: d.minute,
            TimestampPart.HOUR: d.hour,
            TimestampPart.DAY: d.day,
            TimestampPart.WEEK: d.isocalendar()[1],
            TimestampPart.MONTH: d.month,
            TimestampPart.YEAR: d.year,
        }[part]
        return got == n

    return pred


# ----------------------------------------------------------------------------- entry points


def compile_condition(trees: list, fieldmap: FieldMap | None = None,
                      placeholders: dict[str, list[str]] | None = None) -> Compiled:
    """Compile a rule's parsed condition trees (a condition list is OR) for one source."""
    c = _Compiler(fieldmap, placeholders)
    parts = [c.node(t, True) for t in trees]
    lits = _lit_or([lit for _, lit, _ in parts])
    node = _or([p for p, _, _ in parts], c.em)
    req = req_or([r for _, _, r in parts])
    if lits == (frozenset(),) and node is not False:
        lits = ()  # defensive: never gate a rule that can match behind an impossible requirement
    if req is False and node is not False:
        req = True
    fields = frozenset(c.lit_fields) if c.lit_fields is not None else None
    if fields is None and c.system_lits:
        # "any field" leaves the System fields out (keywords never look there): a rule whose
        # literals also come from one is evaluated without a literal gate instead
        lits = ()
    if node is not True and node is not False and any(t[0] in NATIVE_NODES for t in node.prog.split()):
        c.em.ns[PROG_KEY] = node.prog
    return Compiled(c.em.function(node), lits, c.unavailable_used, fields, req)


def required_eventids(trees: list) -> set[int] | None:
    """EventIDs a rule's condition requires (equality, ∩ over AND, ∪ over OR); None if unknown."""
    _conditions()

    def walk(n: Any) -> set[int] | None:
        if isinstance(n, ConditionFieldEqualsValueExpression):
            if n.field != "EventID":
                return None
            vals = n.value.values if isinstance(n.value, SigmaExpansion) else [n.value]
            out = set()
            for v in vals:
                if isinstance(v, SigmaNumber) and not isinstance(v, SigmaTimestampPart):
                    out.add(int(v.number))
                elif isinstance(v, SigmaString) and not v.contains_special():
                    try:
                        out.add(int(str(v)))
                    except ValueError:
                        return None
                else:
                    return None
            return out
        if isinstance(n, ConditionOR):
            out = set()
            for a in n.args:
                s = walk(a)
                if s is None:
                    return None
                out |= s
            return out
        if isinstance(n, ConditionAND):
            sets = [s for s in (walk(a) for a in n.args) if s is not None]
            if not sets:
                return None
            out = sets[0]
            for s in sets[1:]:
                out = out & s
            return out
        return None

    total: set[int] = set()
    for t in trees:
        s = walk(t)
        if s is None:
            return None
        total |= s
    return total


def condition_fields(trees: list) -> list[str]:
    """Field names a condition tests, in first-seen order (what explains a hit)."""
    _conditions()
    out: dict[str, None] = {}

    def walk(n: Any) -> None:
        if isinstance(n, ConditionFieldEqualsValueExpression):
            if n.field:
                out.setdefault(n.field, None)
            return
        for a in getattr(n, "args", None) or []:
            walk(a)

    for t in trees:
        walk(t)
    return list(out)


def empty_value_fields(trees: list) -> list[str]:
    """Fields a condition compares with ``''``: Winlogbeat/Elastic exports drop empty EventData
    values, so there such a test sees a missing field (``rules check -v`` says so)."""
    _conditions()
    out: dict[str, None] = {}

    def walk(n: Any) -> None:
        if isinstance(n, ConditionFieldEqualsValueExpression):
            if n.field and isinstance(n.value, SigmaString) and not n.value.s:
                out.setdefault(n.field, None)
            return
        for a in getattr(n, "args", None) or []:
            walk(a)

    for t in trees:
        walk(t)
    return list(out)
