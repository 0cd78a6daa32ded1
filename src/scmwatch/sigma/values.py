"""Sigma value objects (pySigma types) → small matchers over one field value.

Everything here runs once per rule at compile time and returns closures that run per event.
Case-insensitive strings are compared against the *lower-cased* field value that the engine
computes once per event (``low``); cased strings and regexes see the original value.

Why not one big regex per value: plain equality / startswith / endswith / ``in`` are 10-50x
cheaper in CPython than any regex call, and ~95 % of SigmaHQ values have one of those shapes.
Only values with inner wildcards fall back to a glob matcher (``*``-only: sequential ``find``,
linear time) or an RE2 full match (with ``?``). User regexes (``|re``) and globs always go
through RE2, never Python's backtracking ``re``, so that a hostile rule cannot hang a run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import re2
from sigma.types import Placeholder, SigmaString, SpecialChars

WILD = SpecialChars.WILDCARD_MULTI
ONE = SpecialChars.WILDCARD_SINGLE

# Most wildcards (``*`` and ``?``) one value may hold; SigmaHQ's most is 13. Matching is linear
# anyway; a value beyond this is a hostile or broken rule and is rejected with this reason.
MAX_WILDCARDS = 64

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.never_capture = True  # we only ask "does it match"


class CompileError(Exception):
    """A rule (or one of its values) cannot be turned into a matcher; the message is one line."""


def compile_re2(pattern: str, flags: str = ""):
    """Compile a user regex with RE2 (linear time). Flags are Sigma's ``i``/``m``/``s``."""
    prefix = f"(?{flags})" if flags else ""
    try:
        return re2.compile(prefix + pattern, _RE2_OPTIONS)
    except Exception as exc:  # re2.error carries bytes
        msg = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise CompileError(f"regex {pattern!r} rejected by RE2 (safe engine): {msg}") from None


_INLINE_M = re.compile(r"\(\?[a-zA-Z]*m")


def pcre_dollar(pattern: str, flags: str = "") -> str:
    """``pattern`` with PCRE's ``$`` spelled for RE2.

    Sigma's regex flavour is PCRE, where ``$`` (without ``m``) also matches before a final
    newline: ``^whoami$`` matches ``"whoami\\n"``. RE2's ``$`` is end of text only, so an
    attacker could append a newline to slip past an anchored rule. Each ``$`` outside a
    character class and not escaped becomes ``(?:\\n?\\z)``. Under ``m`` (flag or inline) RE2's
    ``$`` already matches before every newline, so the pattern is left alone. Limit: a ``$``
    followed by more pattern that can itself match the final newline (``a$\\n``) no longer
    matches, which PCRE would allow.
    """
    if "$" not in pattern or "m" in flags or _INLINE_M.search(pattern):
        return pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a ']' right after '[' or '[^' is a literal member, not the end of the class
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        elif c == "$":
            out.append("(?:\\n?\\z)")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def re2_searcher(pattern: str, flags: str = "") -> Callable[[str], bool]:
    """``v -> bool``: does the RE2 regex match anywhere in ``v``.

    google-re2's ``search`` spends ~4 us per call in Python (offset bookkeeping for match
    objects we never use); calling the compiled RE2 object directly on UTF-8 bytes costs ~1 us.
    """
    rx = compile_re2(pcre_dollar(pattern, flags), flags)
    run = _LINE_RUN.fullmatch(pattern)
    if run is not None:
        return _line_run_matcher(rx.pattern, int(run.group(1)), "s" in flags)
    needs, min_bytes = regex_needs(pattern, cased="i" not in flags)
    return _raw_matcher(rx, "UNANCHORED", needs, min_bytes)


# ``.{n}``, ``.{n,}``, ``.{n,m}``: RE2 accepted it (compile_re2 ran first), so n <= m <= 1000.
_LINE_RUN = re.compile(r"\.\{([0-9]+)(?:,[0-9]*)?\}")


def _line_run_matcher(pattern: str, n: int, dotall: bool) -> Callable[[str], bool]:
    """``v -> bool`` for a regex that is only ``.{n,...}``: does ``v`` hold n characters in a
    row that ``.`` matches (any but a newline; any with ``s``), i.e. a line of n or more.

    Why: RE2 runs a counted repetition as n states per position. SigmaHQ's PowerShell abnormal
    command-line size (``CommandLine|re: '.{1000,}'``) took 236 us per command line of 1,000+
    characters (12 per pass of the NDJSON attack corpus x4: 2.8 ms of the 10 ms RE2 took in
    all). An ASCII value is answered by its lengths (a character is a byte); any other value
    goes to RE2 (``pattern``: the compiled one, flags inline), whose UTF-8 view of a lone
    surrogate is not Python's."""
    slow: Callable[[str], bool] | None = None

    def matches(v: str) -> bool:
        nonlocal slow
        if len(v) < n:
            return False
        if v.isascii():
            return dotall or "\n" not in v or max(map(len, v.split("\n"))) >= n
        if slow is None:
            slow = _raw_matcher(re2.compile(pattern, _RE2_OPTIONS), "UNANCHORED", (), n)
        return slow(v)

    matches.__rebuild__ = (_line_run_matcher, (pattern, n, dotall))  # type: ignore[attr-defined]
    matches.needs, matches.min_len = (), n  # type: ignore[attr-defined]
    return matches


def re2_fullmatcher(pattern: str) -> Callable[[str], bool]:
    """``v -> bool``: does the RE2 regex (``.`` matching newlines too) match all of ``v``."""
    rx = compile_re2(pattern, "s")
    return _raw_matcher(rx, "ANCHOR_BOTH")


def _raw_matcher(rx: Any, anchor_name: str, needs: tuple[str, ...] = (),
                 min_bytes: int = 0) -> Callable[[str], bool]:
    """``v -> bool`` calling the compiled RE2 object directly with ``anchor_name``
    (``UNANCHORED``: search, ``ANCHOR_BOTH``: full match); the public API where google-re2's
    internal layout differs. ``needs`` / ``min_bytes``: necessary conditions (``regex_needs``)
    checked first, so most values never reach RE2."""
    raw = getattr(rx, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), anchor_name, None)
    if raw is None or anchor is None:
        api = rx.search if anchor_name == "UNANCHORED" else rx.fullmatch

        def matches(v: str) -> bool:
            if len(v) < min_bytes:
                return False
            for s in needs:
                if s not in v:
                    return False
            return len(v.encode("utf-8", "surrogatepass")) >= min_bytes and api(v) is not None

        matches.needs, matches.min_len = needs, min_bytes  # type: ignore[attr-defined]
        return matches
    match = raw.Match

    def matches(v: str) -> bool:
        if len(v) < min_bytes:  # every character is at least one byte: no encoding needed
            return False
        for s in needs:
            if s not in v:
                return False
        b = v.encode("utf-8", "surrogatepass")
        return len(b) >= min_bytes and match(anchor, b, 0, len(b))[0][0] != -1

    # how the rule cache stores it (sigma/predpickle.py): the compiled RE2 object cannot be
    # pickled, its pattern can; the prechecks come along (without them a rule from the cache
    # ran RE2 on every value its gate let through)
    matches.__rebuild__ = (_stored_matcher, (rx.pattern, anchor_name, needs, min_bytes))  # type: ignore[attr-defined]
    # what a regex program node checks in C before calling ``matches`` (``compile.regex_code``)
    matches.needs, matches.min_len = needs, min_bytes  # type: ignore[attr-defined]
    return matches


def _stored_matcher(pattern: str, anchor_name: str, needs: tuple[str, ...],
                    min_bytes: int) -> Callable[[str], bool]:
    """:func:`_raw_matcher`'s test as the rule cache reads it (``pattern``: the compiled one,
    flags inline), its regex compiled when a value first passes the prechecks. Compiling the
    regexes on reading (pickled RE2 objects: ``re2.Options`` set attribute by attribute, then
    RE2's own compilation) was ~30M of the ~110M instructions reading an x5 hunt's predicates
    took (callgrind), for the 83 regexes of 104 matchers, most of which never see a value."""
    compiled: Callable[[str], bool] | None = None

    def matches(v: str) -> bool:
        nonlocal compiled
        if len(v) < min_bytes:
            return False
        for s in needs:
            if s not in v:
                return False
        if compiled is None:
            compiled = _raw_matcher(re2.compile(pattern, _RE2_OPTIONS), anchor_name, (), min_bytes)
        return compiled(v)

    matches.__rebuild__ = (_stored_matcher, (pattern, anchor_name, needs, min_bytes))  # type: ignore[attr-defined]
    matches.needs, matches.min_len = needs, min_bytes  # type: ignore[attr-defined]
    return matches


# Characters a regex gate may require: ASCII digits, punctuation and space. They have no case
# partner in any flag combination and no escape of them means something else in RE2.
_GATE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F) if not chr(c).isalpha())
# ``cased``: printable ASCII, letters too (a case-sensitive regex needs its letters as written).
_CASED_GATE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F))
# An inline flag group that may switch on case-insensitivity somewhere: ``(?i)``, ``(?si:``...
_INLINE_I = re.compile(r"\(\?[a-zA-Z]*i")


def regex_needs(pattern: str, cased: bool = False) -> tuple[tuple[str, ...], int]:
    """Necessary conditions for ``pattern`` to match a value: substrings that every match
    contains (runs of mandatory literal digits/punctuation/space: case-free, so they hold
    whatever the flags) and a minimum length in characters (so in UTF-8 bytes too).

    ``cased``: the regex runs without ``i`` on the value as written, so runs may hold ASCII
    letters too, unless an inline flag group could make some part case-insensitive.

    Measured: ``Powershell Token Obfuscation`` (three regexes on CommandLine, run on every Sysmon
    process creation because no prefilter literal exists) cost 3.5 us per event; with these
    checks RE2 runs only on command lines holding a backtick, ``"{``/``}"`` or ``${``. With the
    letters of case-sensitive regexes (``net\\s+user\\s+`` needs ``net`` and ``user``), RE2
    runs on 15 % instead of 35 % of (value, regex) pairs (the 97 regexes of the Sysmon
    process-creation rules on every such event of the attack-sample corpus). The
    pattern is read with Python's parser (RE2's syntax for what rules use is a subset); a
    pattern it cannot read gets no conditions."""
    gate_chars = _CASED_GATE_CHARS if cased and not _INLINE_I.search(pattern) else _GATE_CHARS
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]
        from re._constants import LITERAL, MAX_REPEAT, MIN_REPEAT, SUBPATTERN  # type: ignore
    except ImportError:  # pragma: no cover - older layouts
        return (), 0
    try:
        tree = sre_parse.parse(pattern)
        min_width = tree.getwidth()[0]
    except Exception:
        return (), 0
    runs: list[str] = []

    def walk(items) -> None:
        run = ""
        for op, av in items:
            if op is LITERAL and chr(av) in gate_chars:
                run += chr(av)
                continue
            if run:
                runs.append(run)
                run = ""
            if op is SUBPATTERN:
                walk(av[-1])
            elif op in (MAX_REPEAT, MIN_REPEAT) and av[0] >= 1:
                walk(av[2])
        if run:
            runs.append(run)

    try:
        walk(tree)
    except Exception:
        return (), 0
    needs = tuple(sorted(set(runs), key=lambda r: (-len(r), r)))
    return needs, min(min_width, 1 << 20)


@functools.lru_cache(maxsize=4096)
def prefilter_run(prefilter: str) -> str:
    """The longest run of characters that every text ``prefilter`` (a :func:`regex_prefilter`
    pattern) matches holds ("" when none): what the static gate choice (``tagged._atom_score``)
    scores a regex atom by, as it scores a string test by its text. The pattern runs over
    lower-cased ASCII text and holds no case-folding flag, so letters count too.

    Why: it scored the pattern's own text, ``\\xHH`` escapes and all, so every regex atom
    looked as selective as a 12-character literal. Sysmon process creation's static plan (all
    SigmaHQ) chose ``CommandLine|re: ':[^ \\]'`` (one character) over ``Image|endswith:
    '\\regedit.exe'`` for two rules: it held on every event of the attack-sample corpus, and
    its prefilter-mode pattern cost ~2 of the plan's ~10 us of scan per event."""
    needs, _ = regex_needs(prefilter, cased=True)
    return needs[0] if needs else ""


_ASCII = frozenset(range(128))
_KELVIN = 0x212A  # the one non-ASCII character whose ``lower()`` is ASCII ("k")
_WORD = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_DIGIT = frozenset(b"0123456789")
_SPACE = frozenset(b"\t\n\v\f\r ")  # Python's \s; RE2's lacks \v: as a member set, the larger
_RE2_SPACE = frozenset(b"\t\n\f\r ")  # as a complement (\S), the smaller
MAX_PREFILTER_REPEAT = 100  # larger repeat counts become "at least min(lo, this)"


class _Unrenderable(Exception):
    pass


def regex_prefilter(pattern: str) -> str | None:
    """A Hyperscan pattern (ASCII, ``\\xHH`` escapes) that matches the *lower-cased* text of
    every ASCII value ``pattern`` matches anywhere, whatever its flags; None when the pattern
    cannot be read safely or would hold on the empty string.

    Why: a rule whose only positive test is a regex (Raspberry Robin's single-dot file, SNAKE's
    hex arguments, PowerShell token obfuscation ...) had no selective atom, so its predicate ran
    RE2 on most process creations. This pattern is scanned with the bucket's other atoms
    (``tagged.py``, Hyperscan's prefilter mode), so such rules run only where it matched.

    Necessary by construction, never exact: each single-character item becomes the set of
    lower-cased ASCII characters its original set can match (both cases collapse to one, so
    the regex's own flags do not matter; a negated set or ``.`` also takes ``k``, the lower
    case of the Kelvin sign), anchors, word boundaries and lookarounds become empty,
    back-references any text, repeats above MAX_PREFILTER_REPEAT "at least". Only events whose
    tagged text is ASCII may rely on it (the caller lets the rest through): there lowering maps
    one character to one, so a match of the regex maps to a match of this. Read with Python's
    parser, whose syntax equals RE2's for what it accepts here; the spellings where the two
    differ (``{,n}``, POSIX classes ``[:alpha:]``) are refused."""
    if "{," in pattern or "[:" in pattern:
        return None
    try:
        from re import _constants as sre_c  # type: ignore[attr-defined]
        from re import _parser as sre_parse  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - older layouts
        return None
    try:
        tree = sre_parse.parse(pattern)
        if tree.getwidth()[0] == 0:
            return None
        out = _render(tree, sre_c)
    except (_Unrenderable, Exception):  # noqa: BLE001 - anything unexpected: no prefilter
        return None
    return out or None


def _class(codes: set[int], wide: bool) -> str:
    """A character class of the lower-cased images of ``codes`` (ASCII); ``wide``: the original
    set can match a non-ASCII character, so "k" (Kelvin sign) is in."""
    low = {ord(chr(c).lower()) for c in codes}
    if wide:
        low.add(ord("k"))
    if not low:
        raise _Unrenderable("empty set")
    if len(low) == 1:
        return f"\\x{low.pop():02x}"
    runs: list[list[int]] = []
    for x in sorted(low):
        if runs and runs[-1][1] == x - 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return "[" + "".join(f"\\x{a:02x}" if a == b else f"\\x{a:02x}-\\x{b:02x}" for a, b in runs) + "]"


def _category(cat: Any, c: Any) -> tuple[set[int], bool]:
    if cat is c.CATEGORY_DIGIT:
        return set(_DIGIT), False
    if cat is c.CATEGORY_NOT_DIGIT:
        return set(_ASCII - _DIGIT), True
    if cat is c.CATEGORY_WORD:
        return set(_WORD), False
    if cat is c.CATEGORY_NOT_WORD:
        return set(_ASCII - _WORD), True
    if cat is c.CATEGORY_SPACE:
        return set(_SPACE), False
    if cat is c.CATEGORY_NOT_SPACE:
        return set(_ASCII - _RE2_SPACE), True
    raise _Unrenderable(str(cat))


def _in(items: list, c: Any) -> str:
    codes: set[int] = set()
    wide = False
    negate = False
    for op, av in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            if av < 128:
                codes.add(av)
            else:
                wide = True
        elif op is c.RANGE:
            lo, hi = av
            codes.update(range(lo, min(hi, 127) + 1))
            wide = wide or hi >= 128
        elif op is c.CATEGORY:
            got, w = _category(av, c)
            codes |= got
            wide = wide or w
        else:
            raise _Unrenderable(str(op))
    if negate:
        # [^S] on the original: any character outside S, non-ASCII ones too; case is ignored,
        # so a letter of S may still be matched in the other case: leave letters in the set
        return _class(set(_ASCII - {x for x in codes if not chr(x).isalpha()}), True)
    return _class(codes, wide)


def _render(items: Any, c: Any) -> str:
    out = []
    for op, av in items:
        if op is c.LITERAL:
            if av >= 128:
                if av != _KELVIN:
                    raise _Unrenderable("non-ASCII literal")
                av = ord("k")
            out.append(_class({av}, False))
        elif op is c.NOT_LITERAL:
            keep = _ASCII - ({av} if av < 128 and not chr(av).isalpha() else set())
            out.append(_class(set(keep), True))
        elif op is c.ANY:
            out.append(_class(set(_ASCII), True))
        elif op is c.IN:
            out.append(_in(av, c))
        elif op is c.BRANCH:
            out.append("(?:" + "|".join(_render(b, c) for b in av[1]) + ")")
        elif op is c.SUBPATTERN or op is c.ATOMIC_GROUP:
            inner = _render(av[-1] if op is c.SUBPATTERN else av, c)
            if inner:
                out.append("(?:" + inner + ")")
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            lo, hi, item = av
            inner = _render(item, c)
            if not inner:
                continue
            if hi is c.MAXREPEAT or hi > MAX_PREFILTER_REPEAT:
                count = f"{{{min(lo, MAX_PREFILTER_REPEAT)},}}"
            else:
                count = f"{{{lo},{hi}}}"
            out.append(f"(?:{inner}){count}")
        elif op is c.GROUPREF:
            out.append(_class(set(_ASCII), True) + "*")
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            continue
        else:
            raise _Unrenderable(str(op))
    return "".join(out)


def regex_literals(pattern: str) -> frozenset[str] | None:
    """Lower-cased strings of which one must occur in any text the regex matches (None: unknown).

    Walks Python's parse of the pattern (RE2 syntax is a subset for everything SigmaHQ uses):
    runs of literal characters in the top-level sequence, groups inlined, alternations → the
    union of each branch's best literal. Only used for the prefilter, never for matching.
    """
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]
        from re._constants import BRANCH, LITERAL, MAX_REPEAT, MIN_REPEAT, SUBPATTERN  # type: ignore
    except ImportError:  # pragma: no cover - older layouts
        return None
    try:
        tree = sre_parse.parse(pattern)
    except Exception:
        return None

    def seq(items) -> frozenset[str] | None:
        """Best necessary set of a sequence: longest literal run, or a required sub-item's set."""
        best: frozenset[str] | None = None
        run: list[str] = []

        def take(cand: frozenset[str] | None) -> None:
            nonlocal best
            if cand and min(len(x) for x in cand) >= 3 and (
                best is None or min(len(x) for x in cand) > min(len(x) for x in best)
            ):
                best = cand

        for op, av in items:
            if op is LITERAL:
                run.append(chr(av))
                continue
            take(frozenset(["".join(run).lower()]) if run else None)
            run = []
            if op is SUBPATTERN:
                take(seq(av[-1]))
            elif op is BRANCH:
                parts = [seq(b) for b in av[1]]
                if all(parts):
                    take(frozenset().union(*parts))  # type: ignore[arg-type]
            elif op in (MAX_REPEAT, MIN_REPEAT) and av[0] >= 1:
                take(seq(av[2]))
        take(frozenset(["".join(run).lower()]) if run else None)
        return best

    try:
        return seq(tree)
    except Exception:
        return None


def string_parts(s: SigmaString) -> list:
    """The parts of a SigmaString; raises for an unresolved placeholder."""
    for p in s.s:
        if isinstance(p, Placeholder):
            raise CompileError(f"unresolved placeholder %{p.name}% (give a value with --placeholders)")
    return list(s.s)


def merge_parts(parts: list) -> list:
    """Join adjacent text parts and collapse runs of ``*``."""
    out: list = []
    for p in parts:
        if isinstance(p, str):
            if out and isinstance(out[-1], str):
                out[-1] += p
            elif p:
                out.append(p)
        elif p is WILD and out and out[-1] is WILD:
            continue
        else:
            out.append(p)
    return out


def classify(parts: list) -> tuple[str, Any]:
    """Shape of a string value: ('eq'|'starts'|'ends'|'contains', text), ('any', None) or
    ('glob', parts). ``parts`` must already be case-folded as the caller wants."""
    parts = merge_parts(parts)
    if not parts:
        return "eq", ""
    if ONE not in parts:
        texts = [p for p in parts if isinstance(p, str)]
        if not texts:
            return "any", None
        if len(texts) == 1:
            lead = parts[0] is WILD
            trail = parts[-1] is WILD
            t = texts[0]
            if lead and trail:
                return "contains", t
            if lead:
                return "ends", t
            if trail:
                return "starts", t
            return "eq", t
    return "glob", parts


def _fold_wildcards(parts: list) -> list:
    """A run of wildcards holding k ``?`` and at least one ``*`` is "k or more characters":
    rewrite it as k ``?`` then one ``*`` (``'*?' x 5000`` becomes one length test)."""
    out: list = []
    run: list = []
    for p in [*parts, ""]:
        if p is WILD or p is ONE:
            run.append(p)
            continue
        if run:
            ones = run.count(ONE)
            out.extend([ONE] * ones + ([WILD] if len(run) > ones else []))
            run = []
        if p != "":
            out.append(p)
    return out


def _check_wildcards(parts: list) -> None:
    wildcards = sum(1 for p in parts if p is WILD or p is ONE)
    if wildcards > MAX_WILDCARDS:
        raise CompileError(f"value has {wildcards} wildcards (limit {MAX_WILDCARDS}): rule too complex")


def _glob_regex(parts: list) -> str:
    """RE2 syntax of a wildcard pattern (to be full-matched with ``.`` matching newlines)."""
    _check_wildcards(parts)
    return "".join(re2.escape(p) if isinstance(p, str) else (".*" if p is WILD else ".")
                   for p in _fold_wildcards(parts))


def glob_matcher(parts: list) -> Callable[[str], bool]:
    """Full-match matcher for a wildcard pattern with inner wildcards, linear in the value.

    With ``?``: one RE2 full match (a DFA: linear time whatever the pattern). Python's ``re``
    backtracks: ``*a*a*a*a*a*a*a*a?b`` against 120 ``a`` ran for minutes (issue 11).
    """
    if ONE in parts:
        return re2_fullmatcher(_glob_regex(parts))
    _check_wildcards(parts)
    # '*'-only glob: prefix / suffix / ordered middle pieces, leftmost-first find is exact.
    head = parts[0] if isinstance(parts[0], str) else ""
    tail = parts[-1] if isinstance(parts[-1], str) and len(parts) > 1 else ""
    middle = [p for p in parts[1 if head else 0: len(parts) - (1 if tail else 0)] if isinstance(p, str)]
    minlen = len(head) + len(tail)

    def match(v: str) -> bool:
        if len(v) < minlen or not v.startswith(head) or not v.endswith(tail):
            return False
        pos = len(head)
        end = len(v) - len(tail)
        for m in middle:
            i = v.find(m, pos, end)
            if i < 0:
                return False
            pos = i + len(m)
        return True

    return match


def globs_matcher(patterns: list[list]) -> Callable[[str], bool] | None:
    """One matcher for OR-ed wildcard patterns (None for none): the ``?`` ones as ONE RE2 full
    match of their alternation, the ``*``-only ones with ``glob_matcher``.

    Measured: ``Potentially Suspicious CMD Shell Output Redirect`` has eight ``'>?%TEMP%\\'``
    style values, eight RE2 calls (15 us) per Sysmon cmd.exe event; one alternation is one call.
    """
    with_one = [p for p in patterns if ONE in p]
    matchers = [glob_matcher(p) for p in patterns if ONE not in p]
    if len(with_one) == 1:
        matchers.append(glob_matcher(with_one[0]))
    elif with_one:
        try:
            matchers.append(re2_fullmatcher("|".join(f"(?:{_glob_regex(p)})" for p in with_one)))
        except CompileError:  # too big for one RE2 program: one each, as alone
            matchers += [glob_matcher(p) for p in with_one]
    if len(matchers) <= 1:
        return matchers[0] if matchers else None
    group = tuple(matchers)

    def match(v: str) -> bool:
        for m in group:
            if m(v):
                return True
        return False

    return match


def text_matcher(kind: str, payload: Any) -> Callable[[str], bool]:
    """A matcher str -> bool for one classified value."""
    if kind == "eq":
        return payload.__eq__
    if kind == "starts":
        return lambda v: v.startswith(payload)
    if kind == "ends":
        return lambda v: v.endswith(payload)
    if kind == "contains":
        return lambda v: payload in v
    if kind == "any":
        return lambda v: True
    return glob_matcher(payload)


def lower_parts(parts: list) -> list:
    return [p.lower() if isinstance(p, str) else p for p in parts]


def necessary_literal(parts: list) -> str:
    """The longest wildcard-free piece of a value: any match must contain it."""
    best = ""
    for p in merge_parts(parts):
        if isinstance(p, str) and len(p) > len(best):
            best = p
    return best


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")


def strict_number(v: Any, hexok: bool = False) -> int | float | None:
    """A field value as a number, or None when it is not written as one.

    Strings must be plain ASCII decimals as Windows writes them: optional ``-``, no leading
    zeros, no ``+``, whitespace, ``_``, exponent, ``inf``/``nan`` or non-ASCII digits (Python's
    ``int``/``float`` accept all of those, so ``" 5"``, ``"05"``, ``"５"`` and ``"1e1"`` would
    otherwise equal numbers and an attacker could pad a value past an exact-match filter).
    ``0x`` hex only where a source declares the field hex (4688 PIDs). Booleans are not numbers.
    """
    c = v.__class__
    if c is int or c is float:
        return v
    if c is not str:
        return None
    if _NUMBER.fullmatch(v):
        return float(v) if "." in v else int(v)
    if hexok and _HEX.fullmatch(v):
        return int(v, 16)
    return None


def as_text(v: Any) -> str | None:
    """A non-string field value as the text a string comparison sees (None: never matches)."""
    if v is None or isinstance(v, dict):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
