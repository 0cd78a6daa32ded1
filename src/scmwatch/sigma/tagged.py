"""The atom prefilter: the field-scoped string tests of a whole bucket in one Hyperscan scan.

Rules share their string tests: SigmaHQ's Sysmon process-creation bucket has 1,416 rules over
~2,960 distinct *atoms* (``compile.py``: an OR-group of string tests on one field, such as
``Image|endswith: ['\\cmd.exe', '\\pwsh.exe']``). Each atom a bucket needs becomes one
Hyperscan pattern over the event's *field-tagged text*, where a value of the i-th field is
framed as ``"\x1e" + num(i) + value + "\x1d" + num(i)`` (one frame per list item; ``num`` is
two characters from 0x10-0x1b), all lower-cased, so that the tests are field-scoped:

* ``eq``: open(i) + text + close(i)      * ``starts``: open(i) + text
* ``ends``: text + close(i)              * ``any`` (``*``): open(i)
* ``contains``: text + ``[^\x1d]*`` + close(i); texts of ``SCOPED_CONTAINS`` characters or
  more: text anywhere in the event (a superset of "in its field")
* ``glob`` (inner wildcards): ``*`` as ``[^\x1d]*``, ``?`` as one to four bytes, framed
  like the kinds above (``_glob_pattern``)
* ``num`` (OR-ed ints, ``compile._Compiler.numbers``): open(i) + digits + close(i), or any
  decimal with a fraction
* ``re`` (a ``|re`` value): its prefilter pattern (``values.regex_prefilter``) anywhere in the
  event, in Hyperscan's prefilter mode; a unit gated by one is let through whenever that field
  is not ASCII (``non_ascii``). Measured with all SigmaHQ on the attack-sample corpus (atom
  gates from data): Sysmon process creation 12.0 -> 9.5 candidates and 25-28 -> 21.3-21.7 us
  per event, old and new code alternately

An atom is scanned once per event however many rules share it. From its *requirement*
(``compile.py``: the positive part of its condition over atoms, necessary for a match) each rule
takes one *gate*, an OR of atoms that must hold; a rule without one (regex-only and keyword
rules) takes its literal gate from ``compile.py`` instead. Only rules whose gate was hit run
their predicate. Measured on the attack-sample corpus, Sysmon process creation with all
SigmaHQ: 36 predicates per event behind the literal prefilter, 17.6 behind this, ~15 % less
time per event (``bench/hunt_throughput.py`` for the whole hunt).

Which gate: first by a static score of how likely it is to hold (below); once the bucket has
seen enough events to repay compiling a new Hyperscan database (``index.REPLAN_PER_PATTERN``),
the one that held on the fewest of a sample of them (64, spread over all it saw; ``plan``).
The selection naming the binary (``Image|endswith:
'\\cmd.exe'``, ``OriginalFileName: cmd.exe``) or a low-cardinality field (IntegrityLevel,
Company, User, LogonId ...) holds on a large share of events, while the command-line selection
beside it rarely does; ``FIELD_PRIOR`` encodes that. One gate per rule, not all: every pattern
that matches costs a Hyperscan callback (~0.25-0.45 us); two gates per rule cut the
candidates from 25 to 15 but tripled the matches (7 to 22 per event).

Exact by construction: a value holding a character from 0x10-0x1f, or one that is neither str,
int, bool nor a list of them, makes the text "not clean" (None) and the event takes the literal
prefilter path, so no value can forge a frame. ``str.lower`` of the joined text equals the
per-value ``lower`` the predicates use: the frame characters are neither cased nor
case-ignorable, so no case mapping looks across them (``tests/test_sigma_atoms.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scmwatch.native import pure_python
from scmwatch.sigma.compile import ATOMS, COMMON_LITERALS, SYSTEM_FIELDS, Low, Req, atom_pred
from scmwatch.sigma.values import ONE, WILD, necessary_literal, prefilter_run

try:  # optional C extension (sigma/_text.c)
    from scmwatch.sigma._text import tagged_join
except ImportError:  # pragma: no cover - built without a C compiler
    tagged_join = None
if pure_python():
    tagged_join = None

RESERVED = frozenset(chr(c) for c in range(0x10, 0x20))
MAX_FIELDS = 144  # two base-12 digits; a bucket needing more keeps the literal prefilter

# Score adjustments per field: low-cardinality fields and the binary's name hold on many events.
FIELD_PRIOR = {
    "IntegrityLevel": -20, "Company": -20, "Product": -20, "LogonId": -20, "TerminalSessionId": -20,
    "Signed": -20, "SignatureStatus": -20, "EventType": -20, "Description": -15, "User": -15,
    "FileVersion": -15, "Signature": -15, "ParentUser": -15, "ParentImage": -10, "Image": -8,
    "OriginalFileName": -8, "CurrentDirectory": -5,
}
# A regex atom is scored by its prefilter pattern's longest literal run (``values.prefilter_run``),
# never shorter than the runs of the case-free ``contains`` atoms compiled beside it
# (``values.regex_needs``), which it implies: its bonus above theirs makes it win at equal length.
# With -4 (scan cost), the OR of PowerShell token obfuscation's three regexes took its backticks
# as gate instead, a candidate on 584 of the attack corpus' 1,491 process creations, not 2.
KIND_BONUS = {"eq": 4, "starts": 2, "ends": 2, "contains": 0, "any": -100, "num": 4, "re": 1, "glob": 0}
# A pattern starting with this is a regex atom's prefilter pattern (``values.regex_prefilter``):
# compiled in Hyperscan's prefilter mode, and only relied on for ASCII text (``Plan.ascii_only``).
PREFILTER = "\x00prefilter:"


def num(i: int) -> str:
    return chr(0x10 + i // 12) + chr(0x10 + i % 12)


def _clean_text(x: Any) -> str | None:
    c = x.__class__
    if c is str:
        return x if RESERVED.isdisjoint(x) else None
    # a bool lower-cased is what the predicates compare ("true"): Sysmon network events carry
    # three, and were never clean (their bucket: 9.0-10.1 -> 7.0 us per event)
    if c is int or c is bool:
        return str(x)
    return None


def tagged_text(f: dict, index: dict[str, int], rest: int) -> str | None:
    """The field-tagged, lower-cased text of ``f``: the fields in ``index`` (name -> number), and
    with ``rest`` >= 0 every other field but the System ones too, numbered ``rest`` (only keyword
    literals are looked for there, and a keyword search skips the System fields: on Sysmon
    process creation 1,144 -> 874 characters, text and scan 11.0 -> 9.9 us per event). None
    when not clean."""
    if tagged_join is not None:
        return tagged_join(f, index, rest, False, SYSTEM_FIELDS)
    return tagged_text_py(f, index, rest)


def tagged_text_py(f: dict, index: dict[str, int], rest: int,
                   skip: frozenset[str] = SYSTEM_FIELDS) -> str | None:
    """``tagged_text`` in Python (the C extension's twin); ``skip``: the fields ``rest`` leaves out."""
    parts: list[str] = []
    pairs = index.items() if rest < 0 else ((k, index.get(k, rest)) for k in f if k in index or k not in skip)
    for name, i in pairs:
        v = f.get(name)
        if v is None:
            continue
        frame = num(i)
        for x in (v if v.__class__ is list else (v,)):
            t = _clean_text(x)
            if t is None:
                return None
            parts.append(f"\x1e{frame}{t}\x1d{frame}")
    return "".join(parts).lower()


# ----------------------------------------------------------------------------- gates


def _atom_score(a: int) -> float:
    fname, specs = ATOMS[a]
    texts = [(k, necessary_literal(list(t)) if k == "glob" else prefilter_run(t) if k == "re" else t)
             for k, t in specs]
    return min(KIND_BONUS[k] + min(len(t), 12) - (8 if t in COMMON_LITERALS else 0) for k, t in texts) \
        + FIELD_PRIOR.get(fname, 0)


def _literal_score(lit: str) -> float:
    return min(len(lit), 12) - (8 if lit in COMMON_LITERALS else 0)


def _score(gate: frozenset) -> float:
    """Higher: less likely to hold. Atoms are ints, literals strs."""
    if not gate:
        return 1e9
    return min(_atom_score(x) if isinstance(x, int) else _literal_score(x) for x in gate) - 0.3 * len(gate)


def requirement_gates(req: Req) -> list[frozenset[int]]:
    """Necessary ORs of atoms (all must hold) from a requirement; [] when none,
    [frozenset()] when it cannot hold."""
    if req is True:
        return []
    if req is False:
        return [frozenset()]
    if isinstance(req, int):
        return [frozenset((req,))]
    if req[0] == "&":
        return [g for r in req[1] for g in requirement_gates(r)]
    out: set[int] = set()
    for r in req[1]:
        gs = requirement_gates(r)
        if not gs:
            return []
        out |= max(gs, key=_score)
    return [frozenset(out)]


def _esc(text: str) -> str:
    return "".join(f"\\x{b:02x}" for b in text.encode("utf-8", "surrogatepass"))


def _alt(texts: list[str]) -> str:
    return "(?:" + "|".join(_esc(t) for t in texts) + ")"


CHUNK = 40  # tests per pattern: Hyperscan limits a pattern's length
# ``contains`` texts this long are matched anywhere in the event (a superset of "in its field"):
# rare enough that the difference lets few rules through, and the scoped form of the 3,000+
# hash IOCs took 7.7 s of Hyperscan compilation for one bucket.
SCOPED_CONTAINS = 16
# Gate ids: unit position * GATE_SLOTS + the gate's index (``_text.Gather`` has the same).
GATE_BITS = 2
GATE_SLOTS = 1 << GATE_BITS
# A sampled choice counts a regex atom in a gate as if the gate held on this share of the
# sampled events more. A regex atom's prefilter pattern costs scan time on every event: the 38
# of Sysmon process creation with all SigmaHQ took 1.7 of its 6.1 us of scan (load 4.8), where
# most of them let through rules a plain atom beside them also held back.
REGEX_HELD = 0.05
# A second gate is looked for only when the first held on this many sampled events. Two gates
# per rule (both must hold, counted by ``_text.Gather``) against one, the choice from the
# sample, old and new alternately in one process (attack-sample corpus, load 2.7-2.8):
# Sysmon process creation 19.0-19.3 -> 16.8-18.0 us per event, with REGEX_HELD.
SECOND_MIN = 2


def _patterns(x: int | str, index: dict[str, int]) -> list[str]:
    """Hyperscan regexes (over the UTF-8 tagged text) of which one matches iff the atom holds,
    or iff the literal occurs somewhere (a literal gate's literal)."""
    if isinstance(x, str):
        return [_esc(x)]
    fname, specs = ATOMS[x]
    if specs[0][0] == "re":  # anywhere in the event: a superset of "in its field"
        return [PREFILTER + specs[0][1]]
    frame = num(index[fname])
    opened, closed = _esc("\x1e" + frame), _esc("\x1d" + frame)
    out = []
    for start in range(0, len(specs), CHUNK):
        by: dict[str, list[str]] = {}
        for kind, text in specs[start:start + CHUNK]:
            by.setdefault(kind, []).append(text)
        parts = []
        if "any" in by:
            parts.append(opened)
        if "eq" in by:
            parts.append(opened + _alt(by["eq"]) + closed)
        if "starts" in by:
            parts.append(opened + _alt(by["starts"]))
        if "ends" in by:
            parts.append(_alt(by["ends"]) + closed)
        short = [t for t in by.get("contains", ()) if len(t) < SCOPED_CONTAINS]
        long = [t for t in by.get("contains", ()) if len(t) >= SCOPED_CONTAINS]
        if short:  # no frame character between the text and its field's close
            parts.append(_alt(short) + "[^\\x1d]*" + closed)
        if long:
            parts.append(_alt(long))
        for glob in by.get("glob", ()):
            parts.append(_glob_pattern(glob, opened, closed))
        if "num" in by:
            # a str counts as a number when written as a plain decimal (``strict_number``): the
            # int's own digits ("-0" too for 0), or any decimal with a fraction (its float may
            # round to the int): a superset of the number test, exact on ints and integer text
            nums = [("(?:\\x2d)?" if t == "0" else "") + _esc(t) for t in by["num"]]
            parts.append(opened + "(?:" + "|".join(nums) + "|(?:\\x2d)?[0-9]+\\x2e[0-9]+)" + closed)
        out.append("|".join(parts))
    return out


def _glob_pattern(glob: tuple, opened: str, closed: str) -> str:
    """A wildcard value within its field: ``*`` any run of the field's text, ``?`` one
    character of it (one to four UTF-8 bytes: a superset), the value's start / end framed
    unless it starts / ends with ``*``. No frame character can be crossed, so with ``*`` only
    the pattern is exact."""
    out = [] if glob[0] is WILD else [opened]
    for p in glob[1 if glob[0] is WILD else 0:]:
        out.append("[^\\x1d]*" if p is WILD else "[^\\x1d]{1,4}" if p is ONE else _esc(p))
    out.append(closed)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the atom prefilter of one bucket scans for."""

    index: dict[str, int]  # field name -> frame number
    rest: int  # frame number of all other fields; -1: they are left out
    patterns: tuple[str, ...]  # Hyperscan regexes (ASCII, over the UTF-8 tagged text)
    # pattern id -> the gate ids it hits (unit position * GATE_SLOTS + gate index)
    pattern_gates: tuple[tuple[int, ...], ...]
    always: tuple[int, ...]  # unit positions without a gate
    # per unit position: how many of its gates must be hit (0: none; ungated or never)
    need: tuple[int, ...] = ()
    # (field, unit positions whose gate holds a regex atom on it): candidates whenever the
    # field's value is not ASCII (``non_ascii``)
    ascii_only: tuple[tuple[str, tuple[int, ...]], ...] = ()


def gated(pattern_gates: Sequence[Sequence[int]], hits: Iterable[int], need: Sequence[int],
          bits: int = GATE_BITS) -> set[int]:
    """The unit positions whose every gate one of the matched pattern ids ``hits`` hit: a pattern
    lists the gates (``unit << bits | gate``) it satisfies, a unit needs ``need[unit]`` of them
    (the literal prefilter numbers its gates with its own ``bits``)."""
    gates: set[int] = set()
    for i in hits:
        gates.update(pattern_gates[i])
    count: dict[int, int] = {}
    for g in gates:
        u = g >> bits
        count[u] = count.get(u, 0) + 1
    return {u for u, c in count.items() if c == need[u]}


def candidates(p: Plan, hits: Sequence[int]) -> set[int]:
    """The unit positions the scan's matched pattern ids ``hits`` let through: those whose every
    gate was hit, and the ungated ones (``_text.Gather`` is the C twin)."""
    cand = gated(p.pattern_gates, hits, p.need)
    cand.update(p.always)
    return cand


class _SampleHits:
    """How many events of a sample each gate holds on: atoms by their exact string test
    (``compile.atom_pred``), literals as substrings of the lower-cased values of their fields."""

    def __init__(self, sample: Sequence[dict]) -> None:
        self.sample = sample
        self.lows = [Low(f) for f in sample]
        self.atom_rows: dict[int, list[bool]] = {}
        self.texts: dict[frozenset[str] | None, list[str]] = {}

    def atom_row(self, a: int) -> list[bool]:
        row = self.atom_rows.get(a)
        if row is None:
            test = atom_pred(a)
            row = self.atom_rows[a] = [test(f, low) for f, low in zip(self.sample, self.lows, strict=True)]
        return row

    def literal_row(self, lit: str, fields: frozenset[str] | None) -> list[bool]:
        texts = self.texts.get(fields)
        if texts is None:
            names = tuple(sorted(fields)) if fields is not None else None
            texts = self.texts[fields] = [_lower_text(f, names) for f in self.sample]
        return [lit in t for t in texts]

    def row(self, gate: frozenset, fields: frozenset[str] | None) -> list[bool]:
        """Per sampled event: does the gate (an OR) hold."""
        held = [False] * len(self.sample)
        for x in gate:
            row = self.atom_row(x) if isinstance(x, int) else self.literal_row(x, fields)
            held = [a or b for a, b in zip(held, row, strict=True)]
        return held


def _lower_text(f: dict, names: tuple[str, ...] | None) -> str:
    values = (v for k, v in f.items() if k not in SYSTEM_FIELDS) if names is None else map(f.get, names)
    out = []
    for v in values:
        for x in (v if v.__class__ is list else (v,)):
            if x is not None:
                out.append(x if x.__class__ is str else str(x))
    return "\x00".join(out).lower()


def _gate_key(gate: frozenset) -> list[str]:
    """What breaks a tie between equally scored gates: their atoms' tests (``repr`` of
    ``ATOMS[x]``) and literals, never the atom ids, which are numbered per process in the order
    requirements are read (a fresh compile and a rule-cache load number them differently, and a
    cached rule's requirements are read as buckets are met). Ties broken by id gave the Sysmon
    process-creation bucket another static plan after the rule cache was written, so the
    second hunt compiled its Hyperscan database again (1.1 s of CPU in each ``--jobs`` worker,
    measured on 100k simulated events), and two inputs meeting buckets in another order could
    each pay for one of their own."""
    return sorted(_atom_key(x) if isinstance(x, int) else x for x in gate)


_atom_keys: dict[int, str] = {}


def _atom_key(a: int) -> str:
    key = _atom_keys.get(a)
    if key is None:
        key = _atom_keys[a] = repr(ATOMS[a])
    return key


def plan(units: Sequence[Any], sample: Sequence[dict] = ()) -> Plan | None:
    """The atom prefilter for a bucket's units (``ruleset.Unit``), or None when it cannot have
    one (too many fields).

    Each unit's gates are among the necessary ORs its requirement gives, or its literal gates
    (a literal anywhere in the fields its literals come from); it is a candidate when all its
    chosen gates hold. With a ``sample`` of the bucket's events, the gate that held on the
    fewest of them wins (the static score breaks ties; a regex atom counts as REGEX_HELD of the
    sampled events held more, for its scan), and a second gate joins it when both held together
    on at most half the events the first held on; without one, the best
    static score among the requirement's gates (the literal gates only when it has none). Any
    choice is exact: every gate is necessary for the rule to match. Measured on the
    attack-sample corpus, Sysmon process creation with all SigmaHQ and 64 sampled events:
    19.6 predicates per event with the static choice, 10.9 with the sampled one (9.7 for the
    best choice in hindsight)."""
    chosen: dict[int, list[frozenset]] = {}
    always = []
    fields: set[str] = set()
    rest = False
    hits = _SampleHits(sample) if sample else None
    for pos, u in enumerate(units):
        if u.never:
            continue
        gates: list[frozenset] = requirement_gates(u.requirement)
        if not gates or (hits is not None and u.literal_fields is not None):
            gates = gates + [g for g in u.literals if all(lit and RESERVED.isdisjoint(lit) for lit in g)]
        if not gates:
            always.append(pos)
            continue
        if hits is None or len(gates) == 1:
            picked = [max(gates, key=lambda g: (_score(g), _gate_key(g)))]
        else:
            picked = _sampled_gates(gates, hits, u.literal_fields)
        chosen[pos] = picked
        for gate in picked:
            for x in gate:
                if isinstance(x, int):
                    fields.add(ATOMS[x][0])
                elif u.literal_fields is None:
                    rest = True
                else:
                    fields |= u.literal_fields
    if len(fields) + rest > MAX_FIELDS:
        return None
    index = {name: i for i, name in enumerate(sorted(fields))}
    by_pattern: dict[str, set[int]] = {}
    ascii_only: dict[str, set[int]] = {}
    need = [0] * len(units)
    for pos, picked in chosen.items():
        need[pos] = len(picked)
        for k, gate in enumerate(picked):
            for x in gate:
                for p in _patterns(x, index):
                    by_pattern.setdefault(p, set()).add(pos << GATE_BITS | k)
                    if p.startswith(PREFILTER):
                        ascii_only.setdefault(ATOMS[x][0], set()).add(pos)
    patterns = tuple(sorted(by_pattern))
    return Plan(index, len(index) if rest else -1, patterns,
                tuple(tuple(sorted(by_pattern[p])) for p in patterns), tuple(always), tuple(need),
                tuple((k, tuple(sorted(v))) for k, v in sorted(ascii_only.items())))


def _regex_atoms(gate: frozenset) -> int:
    return sum(1 for x in gate if isinstance(x, int) and ATOMS[x][1][0][0] == "re")


def _sampled_gates(gates: list[frozenset], hits: _SampleHits,
                   fields: frozenset[str] | None) -> list[frozenset]:
    """The gates of one unit chosen by a sample: the one that held least (a regex atom's scan
    counted in), and a second one when the two held together on at most half the sampled
    events the first held on (both must then hold: ``candidates``)."""
    rows = {g: hits.row(g, fields) for g in gates}
    n = len(hits.sample)

    def cost(held: int, g: frozenset) -> float:
        return held + REGEX_HELD * n * _regex_atoms(g)

    def key(g: frozenset) -> tuple:
        return (-cost(sum(rows[g]), g), _score(g), _gate_key(g))

    first = max(gates, key=key)
    held = sum(rows[first])
    if held < SECOND_MIN:
        return [first]
    row = rows[first]
    both = {g: sum(a and b for a, b in zip(row, rows[g], strict=True)) for g in gates if g != first}
    if not both:
        return [first]
    second = max(both, key=lambda g: (-cost(both[g], g), _score(g), _gate_key(g)))
    if cost(both[second], second) * 2 > held:
        return [first]
    return [first, second]


def non_ascii(f: dict, ascii_only: tuple[tuple[str, tuple[int, ...]], ...]) -> set[int]:
    """The unit positions whose regex atom cannot be relied on for event ``f``: those on a
    field with a non-ASCII str value (``values.regex_prefilter`` holds for ASCII values only;
    Sysmon's ``Product`` is "Microsoft® Windows® ...", so the whole text is seldom ASCII)."""
    out: set[int] = set()
    for name, units in ascii_only:
        v = f.get(name)
        if v.__class__ is str:
            if not v.isascii():
                out.update(units)
        elif v.__class__ is list and not all(x.isascii() for x in v if x.__class__ is str):
            out.update(units)
    return out
