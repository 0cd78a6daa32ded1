"""The atom prefilter (sigma/tagged.py) against the plain per-rule predicates.

Differential tests: whatever the events hold, the engine with the atom prefilter must return
exactly what evaluating every rule of the bucket returns, and what the literal prefilter
returns. Hostile values on purpose: non-ASCII case folding (final sigma, dotted I, sharp s),
the frame characters themselves, NUL, lists, ints, bools, floats, None, empty and huge values.
"""

from __future__ import annotations

import dataclasses
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scmwatch.sigma.values as sigma_values
from engine_pairs import StandInUnit, brute, engine_pair
from paths import SIGMAHQ
from scmwatch.events.model import Event, ReadStats
from scmwatch.events.read import discover, read_input
from scmwatch.sigma import Engine, load_rules, tagged
from scmwatch.sigma import index as sigma_index
from scmwatch.sigma.compile import ATOMS, SYSTEM_FIELDS, Low, PyLow, _ci_group, atom_of, req_and, req_or
from scmwatch.sigma.values import (
    CompileError,
    _raw_matcher,
    compile_re2,
    glob_matcher,
    globs_matcher,
    pcre_dollar,
    re2_searcher,
)

needs_hyperscan = pytest.mark.skipif(sigma_index.hyperscan is None, reason="Hyperscan is not installed")
SYSMON = "Microsoft-Windows-Sysmon/Operational"

# characters that stress case mapping, the frames and the encodings
TRICKY = "aAzZ09 -_\\/.:'\"`${}()<>|*?ΣσςİıßẞǅKkſ\u0307\u202e😀\x00\x09\x0a\x10\x1b\x1d\x1e\x1f\udc80é"
text_values = st.text(alphabet=TRICKY, max_size=12)
scalars = st.one_of(text_values, st.integers(-10**12, 10**12), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.one_of(scalars, st.lists(scalars, max_size=3))
FIELDS = ["Image", "CommandLine", "ParentImage", "User", "Hashes"]


# ----------------------------------------------------------------------------- the tagged text


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS + ["Other", "Channel"]), values, max_size=7),
       st.lists(st.sampled_from(FIELDS), unique=True, max_size=5), st.booleans())
def test_tagged_text_c_equals_python(fields, names, rest):
    index = {n: i for i, n in enumerate(names)}
    rest_num = len(index) if rest else -1
    want = tagged.tagged_text_py(fields, index, rest_num)
    if tagged.tagged_join is not None:
        assert tagged.tagged_text(fields, index, rest_num) == want
        # the bytes the scan reads: the text's UTF-8 (lone surrogates passed through)
        want_bytes = None if want is None else want.encode("utf-8", "surrogatepass")
        assert tagged.tagged_join(fields, index, rest_num, True, SYSTEM_FIELDS) == want_bytes
        # without a skip set the System fields are framed as ``rest`` too
        assert tagged.tagged_join(fields, index, rest_num) == tagged.tagged_text_py(fields, index, rest_num,
                                                                                    frozenset())
    if want is None:
        return
    # every frame holds exactly its value's str.lower(): no case mapping looks across frames
    frames = re.findall(r"\x1e(..)([^\x10-\x1f]*)\x1d\1", want)
    assert "".join(f"\x1e{n}{v}\x1d{n}" for n, v in frames) == want
    expected = []
    pairs = index.items() if not rest else ((k, index.get(k, rest_num)) for k in fields
                                            if k in index or k not in SYSTEM_FIELDS)
    for name, i in pairs:
        v = fields.get(name)
        for x in (v if isinstance(v, list) else [] if v is None else [v]):
            expected.append((tagged.num(i), str(x).lower()))
    assert frames == expected


@pytest.mark.skipif(tagged.tagged_join is None, reason="the C extension is not built")
def test_latin1_values_lowered_into_the_scanned_bytes():
    """Latin-1 values (Sysmon's Product "Microsoft® Windows®") take the C table, not str.lower:
    every code point below U+0100 outside the frame characters, alone and beside ASCII and wider
    text, gives the bytes of the Python text's UTF-8."""
    latin1 = "".join(chr(c) for c in range(0x20, 0x100))
    values = [latin1, latin1.upper(), "Microsoft® Windows® Operating System", "ÀÉÎÕÜÞ×ßÿµ",
              ["Ä", "b", 7], "Ωmega İ À"]
    for k, v in enumerate(values):
        fields = {"A": v, "B": "ASCII Only", "C": values[k - 1]}
        for index, rest in (({"A": 0}, -1), ({"A": 0, "C": 1}, 2), ({}, 0)):
            want = tagged.tagged_text_py(fields, index, rest)
            assert want is not None
            assert tagged.tagged_join(fields, index, rest, True, SYSTEM_FIELDS) == want.encode("utf-8")


def test_unclean_values_leave_the_atom_path():
    index = {"A": 0}
    for bad in ["x\x1ey", "\x10", 1.5, [None], [["x"]], {"k": "v"}, ("x",)]:
        assert tagged.tagged_text_py({"A": bad}, index, -1) is None, bad
        if tagged.tagged_join is not None:
            assert tagged.tagged_join({"A": bad}, index, -1) is None, bad
    assert tagged.tagged_text_py({"A": ["X", 7], "B": None}, {"A": 0, "B": 1}, -1) == \
        "\x1e\x10\x10x\x1d\x10\x10\x1e\x10\x107\x1d\x10\x10"
    # a bool is clean: its text lower-cased is what a predicate compares (``values.as_text``)
    for fields in ({"A": True}, {"A": [False, "X"]}):
        want = tagged.tagged_text_py(fields, index, -1)
        assert want is not None and "true" in want or "false" in want
        if tagged.tagged_join is not None:
            assert tagged.tagged_join(fields, index, -1) == want


# ----------------------------------------------------------------------------- atom patterns

kinds = st.sampled_from(["eq", "starts", "ends", "contains", "any"])
spec_texts = st.text(alphabet="ab\\.Σσςİi\u0307ß😀 ", max_size=20)


@needs_hyperscan
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FIELDS[:2]), st.lists(st.tuples(kinds, spec_texts), min_size=1,
                                                                       max_size=3)), min_size=1, max_size=4),
       st.dictionaries(st.sampled_from(FIELDS[:3]), st.one_of(st.text(alphabet="ab\\.ΣσİIiß😀 ", max_size=24),
                                                               st.lists(st.text(alphabet="ab.Σ", max_size=6),
                                                                        max_size=2)), max_size=3))
def test_atom_patterns_equal_the_predicates(groups, fields):
    """An atom's pattern matches the tagged text iff its string group holds (``contains`` texts
    of SCOPED_CONTAINS characters or more: whenever it holds)."""
    specs_of = {}
    for fname, specs in groups:
        specs = [(k, "" if k == "any" else t.lower()) for k, t in specs]
        aid = atom_of(fname, specs)
        assert aid is not None
        specs_of[aid] = (fname, specs)
    units = [StandInUnit(a) for a in specs_of]
    p = tagged.plan(units)
    scan = sigma_index._scan_function(sigma_index._hs_database(list(p.patterns), regex=True))
    text = tagged.tagged_text(fields, p.index, p.rest)
    assert text is not None
    hit = tagged.candidates(p, scan(text))
    for pos, aid in enumerate(specs_of):
        fname, specs = specs_of[aid]
        holds = _ci_group(fname, specs)(fields, Low(fields))
        exact = all(k != "contains" or len(t) < tagged.SCOPED_CONTAINS for k, t in ATOMS[aid][1])
        if exact:
            assert (pos in hit) == holds, (ATOMS[aid], fields)
        else:
            assert holds <= (pos in hit), (ATOMS[aid], fields)


def test_requirements_keep_and_or_drop_not():
    a, b, c = (atom_of("F", [("eq", x)]) for x in "abc")
    assert req_and([a, True, req_or([b, c])]) == ("&", (a, ("|", (b, c))))
    assert req_or([a, True]) is True
    assert req_and([a, False]) is False
    assert tagged.requirement_gates(("&", (a, ("|", (b, c))))) == [frozenset({a}), frozenset({b, c})]
    assert tagged.requirement_gates(("|", (a, True))) == []


# ----------------------------------------------------------------------------- whole engines

RULES = {
    "img_ends": "sel:\n  Image|endswith: ['\\\\cmd.exe', '\\\\pwsh.exe']\ncondition: sel",
    "img_cli": "sel:\n  Image|endswith: '\\\\ping.exe'\n  CommandLine|contains: ' -n '\ncondition: sel",
    "eq_or_start": "sel:\n  - OriginalFileName: 'Σίσυφος.exe'\n  - ParentImage|startswith: 'c:\\\\temp\\\\'\n"
                   "condition: sel",
    "not_filter": "sel:\n  CommandLine|contains: 'vssadmin'\nfilter:\n  User|contains: 'AUTHORI'\n"
                  "condition: sel and not filter",
    "glob": "sel:\n  CommandLine|contains: ['>?%TEMP%\\\\', 'a*b?c']\ncondition: sel",
    "regex": "sel:\n  CommandLine|re: '\\w+`\\w+`'\n  Image|contains: 'powershell'\ncondition: sel",
    "any_value": "sel:\n  Hashes: '*'\n  Image|endswith: '.exe'\ncondition: sel",
    "null_empty": "sel:\n  ParentImage: null\n  Image|endswith: '\\\\rundll32.exe'\ncondition: sel",
    "empty_eq": "sel:\n  CommandLine: ''\n  Image|contains: 'İ'\ncondition: sel",
    "long_contains": "sel:\n  CommandLine|contains: 'invoke-mimikatz -dumpcreds'\ncondition: sel",
    "list_all": "sel:\n  CommandLine|contains|all: ['σ', 'ß']\ncondition: sel",
    "emoji": "sel:\n  CommandLine|contains: ['😀', '\u202e']\ncondition: sel",
    "keyword": "keywords:\n  - 'sekurlsa::'\n  - 'Σ'\ncondition: keywords",
    "bool_text": "sel:\n  Hashes: 'TRUE'\n  User|startswith: 'fal'\ncondition: sel",  # bools as text
    # no literal run its match needs: the regex atom is its gate (non-ASCII values let it through)
    "regex_alt": "sel:\n  CommandLine|re: '\\w(?:`|\\$)\\w'\ncondition: sel",
}


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return engine_pair(tmp_path_factory.mktemp("atom-rules"), RULES, "process_creation", "5d0b6a54")


event_values = st.one_of(st.text(alphabet=TRICKY + "cmdexepingvsadmintTEMP%", max_size=30),
                         st.sampled_from(["C:\\Windows\\System32\\cmd.exe", "c:\\temp\\x.exe", "ΣΊΣΥΦΟΣ.EXE",
                                          "vssadmin delete shadows", ">?%temp%\\x", "PING.EXE -n 1",
                                          "x\\PING.exe", "", "İ", "Invoke-Mimikatz -DumpCreds", "😀"]),
                         st.integers(), st.none(), st.lists(text_values, max_size=2), st.booleans())


@needs_hyperscan
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(FIELDS + ["OriginalFileName", "Other"]), event_values, max_size=6))
def test_atom_path_equals_every_predicate(engines, fields):
    atom_engine, literal_engine = engines
    f = {"Channel": SYSMON, "EventID": 1, **fields}
    bucket = atom_engine.bucket(SYSMON, 1)
    assert bucket.atom_scan is not None  # the atom path is what runs
    assert (bucket.gather is not None) is (sigma_index.Gather is not None)  # its C handler, when built
    assert (bucket.matcher is not None) is (sigma_index.Matcher is not None)  # the C atom path, when built
    want = brute(literal_engine, f)
    assert [r.id for r in atom_engine.match_fields(f)] == want
    assert [r.id for r in literal_engine.match_fields(f)] == want


def _python_atom_path(engine: Engine, b: sigma_index.Bucket, f: dict) -> list[str] | None:
    """What ``Engine._match`` computes on the atom path without the C Matcher (None: not clean)."""
    text = tagged.tagged_text_py(f, b.atoms.index, b.atoms.rest)
    if text is None:
        return None
    cand = tagged.candidates(b.atoms, b.atom_scan(text)) | tagged.non_ascii(f, b.atoms.ascii_only)
    low = PyLow(f)
    out = [b.rules[i] for i in sorted(cand) if b.preds[i] is True or b.preds[i](f, low)]
    return [r.id for r in dict.fromkeys(out)]


@needs_hyperscan
@pytest.mark.skipif(sigma_index.Matcher is None, reason="the C extension is not built")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(FIELDS + ["OriginalFileName", "Other"]), event_values, max_size=6))
def test_matcher_equals_the_python_atom_path(engines, fields):
    """``_text.Matcher`` (tagged bytes, scan, candidates with the non-ASCII ones, predicates in one
    C call) answers what the Python atom path answers, None exactly when the text is not clean,
    and leaves nothing behind for the next event."""
    atom_engine, _ = engines
    f = {"Channel": SYSMON, "EventID": 1, **fields}
    b = atom_engine.bucket(SYSMON, 1)
    assert b.atoms.ascii_only  # the regex rule's atom: non-ASCII values add its unit
    want = _python_atom_path(atom_engine, b, f)
    got = b.matcher(f)
    assert (None if got is None else [r.id for r in got]) == want
    quiet = {"Channel": SYSMON, "EventID": 1}
    assert [r.id for r in b.matcher(quiet)] == _python_atom_path(atom_engine, b, quiet)


GATED_RULES = {
    **RULES,
    "two_gates": "sel:\n  CommandLine|contains: 'vssadmin delete'\n"
                 "  ParentImage|endswith: '\\\\wmiprvse.exe'\ncondition: sel",
    "three_gates": "sel:\n  CommandLine|contains: 'ping -n'\n  Image|endswith: '\\\\ping.exe'\n"
                   "  User|contains: 'authority'\ncondition: sel",
    "no_literal": "sel:\n  User: null\ncondition: sel",
}


@pytest.fixture(scope="module")
def gated_engines(tmp_path_factory):
    """(rules with one to three literal gates on the literal prefilter, moved to Hyperscan at
    once: with the C extension its buckets match through ``_text.LiteralMatcher``; the same
    rules without Hyperscan)."""
    tmp = tmp_path_factory.mktemp("gated-rules")
    _, plain = engine_pair(tmp, GATED_RULES, "process_creation", "5d0b6a55")
    # the compiler gives one gate per rule (a condition is an OR of its parts); the index takes
    # up to three, each necessary: give the three-gate rule its three
    three = next(r for r in plain.ruleset.rules if r.title == "three_gates")
    three.units = [dataclasses.replace(u, literals=(frozenset({"ping -n"}), frozenset({"\\ping.exe"}),
                                                    frozenset({"authority"})),
                                       literal_fields=frozenset({"CommandLine", "Image", "User"}))
                   for u in three.units]
    for u in three.units:
        u.pred  # noqa: B018 - compiled before the copy is made
    return Engine(plain.ruleset, hyperscan_after=0, atoms=False), Engine(plain.ruleset, use_hyperscan=False)


@needs_hyperscan
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(FIELDS + ["OriginalFileName", "Other"]), event_values, max_size=6))
def test_literal_matcher_equals_every_predicate(gated_engines, fields):
    """The literal path in C (Hyperscan's scan with the C handler over the literals' gates, one
    gate or several per rule) answers what evaluating every rule of the bucket answers."""
    hs_engine, plain = gated_engines
    f = {"Channel": SYSMON, "EventID": 1, **fields}
    b = hs_engine.bucket(SYSMON, 1)
    assert b.atom_scan is None and b.upgrade_in == -1
    assert (b.lit_matcher is not None) is (sigma_index.LiteralMatcher is not None)
    assert max(b.need) == 3 and b.always  # units with three gates, and one without any
    want = brute(plain, f)
    assert [r.id for r in hs_engine.match_fields(f)] == want
    assert [r.id for r in plain.match_fields(f)] == want
    hit = {"Channel": SYSMON, "EventID": 1, "CommandLine": "PING -n 1 x", "Image": "C:\\W\\PING.EXE",
           "User": "NT AUTHORITY\\SYSTEM", "ParentImage": "C:\\wmiprvse.exe"}
    assert "three_gates" in {r.title for r in hs_engine.match_fields(hit)}
    assert "three_gates" not in {r.title for r in hs_engine.match_fields({**hit, "User": "bob"})}


@pytest.mark.skipif(sigma_index.evaluate is None, reason="the C extension is not built")
def test_evaluate_equals_the_python_loop():
    """``_text.evaluate``: the rules whose predicate is True or returns a true value, in ``order``,
    each rule once; a stand-in that replaces itself in ``preds`` is read as replaced; a
    predicate's exception reaches the caller; one Low per call, made only when needed."""
    lows = []

    def seen(f, low):
        lows.append(low)
        return "yes"

    preds = [True, seen, lambda f, low: 0, lambda f, low: [], lambda f, low: low["Image"] == "a.exe", None]

    def stand_in(f, low):
        preds[5] = lambda f, low: True
        return False

    preds[5] = stand_in
    rules = ("r0", "r1", "r2", "r3", "r4", "r1")
    f = {"Image": "A.EXE"}
    assert sigma_index.evaluate(f, [0, 1, 2, 3, 4, 5], preds, rules) == ["r0", "r1", "r4"]
    assert len(lows) == 1 and lows[0]["Image"] == "a.exe"
    assert sigma_index.evaluate(f, (1, 5), preds, rules) == ["r1"]  # r1 once, though two units hold
    assert sigma_index.evaluate(f, [0], preds, rules) == ["r0"] and len(lows) == 2  # True: no Low made
    assert sigma_index.evaluate(f, [], preds, rules) == []

    def boom(f, low):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        sigma_index.evaluate(f, [0, 1], [True, boom], ("a", "b"))
    with pytest.raises(IndexError):
        sigma_index.evaluate(f, [2], [True, True], ("a", "b"))
    with pytest.raises(IndexError):
        sigma_index.evaluate(f, [-1], [True], ("a",))


@pytest.mark.skipif(sigma_index.Gather is None, reason="the C extension is not built")
@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=10).flatmap(lambda need: st.tuples(
    st.just(need),
    st.lists(st.lists(st.sampled_from([u * tagged.GATE_SLOTS + k for u, n in enumerate(need)
                                       for k in range(n)] or [None]), max_size=4), min_size=1, max_size=12),
    st.lists(st.integers(0, len(need) - 1), max_size=4),
    st.lists(st.lists(st.integers(0, 11), max_size=6), max_size=3))))
def test_gather_equals_the_python_candidates(case):
    """The C match handler gives, per scan, the sorted units whose every gate (``need`` of them)
    a matched pattern hit, and the always ones; and forgets them for the next scan
    (``tagged.candidates`` is its Python twin)."""
    need, pattern_gates, always, scans = case
    gates = tuple(tuple(sorted(set(g) - {None})) for g in pattern_gates)  # gate k < need[u]
    always_t = tuple(sorted(set(always)))
    p = tagged.Plan({}, -1, ("",) * len(gates), gates, always_t, tuple(need))
    gather = sigma_index.Gather(gates, always_t, tuple(need))
    for ids in scans:
        ids = [i for i in ids if i < len(gates)]
        for i in ids:
            assert gather(i, 0, 5, 0, None) is None  # None: Hyperscan scans on
        assert gather.take() == sorted(tagged.candidates(p, ids))
    with pytest.raises(ValueError):
        gather(len(gates), 0, 0, 0, None)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        gather("x", 0, 0, 0, None)
    with pytest.raises(ValueError):  # a gate id past the units' slots
        sigma_index.Gather(((len(need) * tagged.GATE_SLOTS,),), (), tuple(need))


@pytest.mark.skipif(sigma_index.Gather is None, reason="the C extension is not built")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=10).flatmap(lambda need: st.tuples(
    st.just(need),
    st.lists(st.lists(st.integers(0, len(need) - 1), max_size=4), min_size=1, max_size=12),
    st.lists(st.integers(0, len(need) - 1), max_size=4),
    st.lists(st.lists(st.integers(0, 11), max_size=6), max_size=3))))
def test_gather_shift_takes_unit_positions_as_their_gate_0(case):
    """``Gather(..., shift=GATE_BITS)`` over unit positions (a single-gate bucket's literal path)
    gathers exactly what it does over their gate ids, and rejects a position past the units."""
    need, positions, always, scans = case
    lists = tuple(tuple(sorted(set(us))) for us in positions)
    ids = tuple(tuple(u * tagged.GATE_SLOTS for u in us) for us in lists)
    always_t = tuple(sorted(set(always)))
    shifted = sigma_index.Gather(lists, always_t, tuple(need), tagged.GATE_BITS)
    plain = sigma_index.Gather(ids, always_t, tuple(need))
    for hits in scans:
        hits = [i for i in hits if i < len(lists)]
        for i in hits:
            shifted(i, 0, 5, 0, None)
            plain(i, 0, 5, 0, None)
        assert shifted.take() == plain.take()
    with pytest.raises(ValueError):
        sigma_index.Gather(((len(need),),), (), tuple(need), tagged.GATE_BITS)
    with pytest.raises(ValueError):
        sigma_index.Gather((), (), tuple(need), 1)


@needs_hyperscan
def test_bools_take_the_atom_path_as_text(engines):
    """A bool is clean tagged text ("true"/"false"), matched as the predicates match it."""
    atom_engine, literal_engine = engines
    cases = (({"Hashes": True, "User": False}, True), ({"Hashes": [False, True], "User": [False]}, True),
             ({"Hashes": False, "User": False}, False), ({"Hashes": "true", "User": True}, False))
    for fields, hit in cases:
        f = {"Channel": SYSMON, "EventID": 1, **fields}
        b = atom_engine.bucket(SYSMON, 1)
        assert tagged.tagged_text(f, b.atoms.index, b.atoms.rest) is not None
        want = brute(literal_engine, f)
        assert [r.id for r in atom_engine.match_fields(f)] == want
        assert ("5d0b6a54-0000-4000-8000-000000000013" in want) is hit


@needs_hyperscan
def test_hostile_huge_values(engines):
    atom_engine, literal_engine = engines
    for v in ["a" * 200_000, "Σ" * 50_000 + "\\cmd.exe", "x\\PING.exe" + " -n " * 20_000, ["İ" * 1000] * 50]:
        f = {"Channel": SYSMON, "EventID": 1, "Image": v, "CommandLine": v, "ParentImage": None}
        assert [r.id for r in atom_engine.match_fields(f)] == brute(literal_engine, f)


# ----------------------------------------------------------------------------- SigmaHQ


@pytest.fixture(scope="module")
def sigmahq():
    if not (SIGMAHQ / "regression_data").is_dir():
        pytest.skip("../shared/corpora/sigmahq absent")
    rs = load_rules([SIGMAHQ / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")])
    stats = ReadStats()
    found = discover([str(SIGMAHQ / "regression_data")], stats)
    inputs = [inp for inp in found if inp.path.endswith(".evtx")]
    events = [ev for inp in inputs for ev in read_input(inp, stats)]
    return rs, events


def _mutations(f: dict, rng: random.Random) -> list[dict]:
    """Hostile variants of a real event: case, non-ASCII, frame characters, types, sizes."""
    out = []
    for _ in range(3):
        g = dict(f)
        for k in rng.sample(sorted(g), k=min(4, len(g))):
            if k in ("Channel", "EventID"):
                continue
            v = g[k]
            s = v if isinstance(v, str) else str(v)
            g[k] = rng.choice([s.upper(), s + "Σ", "İ" + s, s + "\x1e", [s, s.swapcase()], None, "",
                               s * 200, int(s) if s.isdigit() else s + " ", s.replace("\\", "/"), 7, True])
        out.append(g)
    return out


@needs_hyperscan
def test_sigmahq_atom_path_equals_predicates(sigmahq):
    """Every SigmaHQ regression event and hostile variants of it: the atom path, the literal
    prefilter and brute force (every rule of the bucket) give the same rules, in order."""
    rs, events = sigmahq
    assert len(events) >= 238
    atom_engine = Engine(rs, hyperscan_after=0, atoms=True)
    literal_engine = Engine(rs, use_hyperscan=False)
    rng = random.Random(13)
    checked = 0
    for ev in events:
        for f in [ev.fields, *_mutations(ev.fields, rng)]:
            want = brute(literal_engine, f)
            assert [r.id for r in atom_engine.match_fields(f)] == want, (ev.source, ev.record_id)
            assert [r.id for r in literal_engine.match_fields(f)] == want
            checked += bool(want)
    assert checked > 200
    b = atom_engine.bucket(SYSMON, 1)
    assert b.atom_scan is not None and len(b.atoms.patterns) > 1000


@needs_hyperscan
def test_sigmahq_sampled_gates_equal_predicates(sigmahq):
    """Gates chosen from a sample of the bucket's events (``tagged.plan``): the same rules as
    brute force on every regression event and hostile variant, before and after the choice."""
    rs, events = sigmahq
    engine = Engine(rs, hyperscan_after=40, atoms=True, replan_after=300)
    literal_engine = Engine(rs, use_hyperscan=False)
    rng = random.Random(7)
    variants = [f for ev in events for f in [ev.fields, *_mutations(ev.fields, rng)]]
    b = engine.bucket(SYSMON, 1)
    static = None
    for f in variants + variants:
        assert [r.id for r in engine.match_fields(f)] == brute(literal_engine, f)
        if static is None and b.atoms is not None:
            static = b.atoms.patterns
    assert b.atom_scan is not None and b.sample is None  # sampled, and chosen again from it
    assert static is not None and b.atoms.patterns != static
    assert max(b.atoms.need) == 2  # some rules got a second gate


def test_sampled_gate_is_the_one_that_held_least():
    img = atom_of("Image", [("ends", "\\updater.exe")])
    cli = atom_of("CommandLine", [("contains", " -x ")])

    class Unit(StandInUnit):
        def __init__(self):
            super().__init__(("&", (img, cli)))

    sample = [{"Image": "C:\\Tools\\Updater.exe", "CommandLine": f"updater -y {i}"} for i in range(10)]
    static = tagged.plan([Unit()])
    sampled = tagged.plan([Unit()], sample)
    assert set(static.index) == {"Image"}  # the binary's name scores better without data ...
    assert set(sampled.index) == {"CommandLine"}  # ... but held on every sampled event


def test_gate_ties_are_broken_by_the_tests_not_the_atom_ids():
    """Atom ids are numbered per process as requirements are read (a fresh compile and a
    rule-cache load differ), so two equally scored gates must be told apart by their tests:
    otherwise the static plan, and the Hyperscan database cached for it, changes between runs."""
    chosen = []
    for first, second in (("-qqq-1", "-aaa-1"), ("-aaa-2", "-qqq-2")):  # created in either order
        a = atom_of("CommandLine", [("contains", first)])
        b = atom_of("CommandLine", [("contains", second)])

        class Unit(StandInUnit):
            def __init__(self, a=a, b=b):
                super().__init__(("&", (a, b)))

        p = tagged.plan([Unit()])
        chosen.append([t for t in (first, second) if any(tagged._esc(t) in x for x in p.patterns)])
    assert chosen == [["-qqq-1"], ["-qqq-2"]]


@needs_hyperscan
def test_second_gate_both_must_hold():
    """A second gate joins when the two held together on few sampled events: the unit is then a
    candidate only when both hold (and still whenever it can match)."""
    img = atom_of("Image", [("ends", "\\updater.exe")])
    cli = atom_of("CommandLine", [("contains", " -x ")])
    sample = [{"Image": "C:\\Tools\\Updater.exe", "CommandLine": f"updater -y {i}"} for i in range(8)]
    sample += [{"Image": "C:\\a.exe", "CommandLine": "a -x now"}] * 4
    p = tagged.plan([StandInUnit(("&", (img, cli)))], sample)
    assert p.need == (2,) and set(p.index) == {"Image", "CommandLine"}
    scan = sigma_index._scan_function(sigma_index._hs_database(list(p.patterns), regex=True))
    for f, cand in (({"Image": "C:\\a.exe", "CommandLine": "a -x now"}, set()),
                    ({"Image": "C:\\Updater.exe", "CommandLine": "updater -y"}, set()),
                    ({"Image": "C:\\Updater.exe", "CommandLine": "UPDATER -X now"}, {0})):
        assert tagged.candidates(p, scan(tagged.tagged_text(f, p.index, p.rest))) == cand
    one = tagged.plan([StandInUnit(("&", (img, cli)))], sample[:8])  # cli never held: one is enough
    assert one.need == (1,) and set(one.index) == {"CommandLine"}


def test_static_choice_scores_a_regex_atom_by_its_literal_run():
    """The static gate choice scores a regex atom by the longest literal run its prefilter
    pattern needs, not by the pattern's escaped text: a one-character regex loses to the
    binary's name (SigmaHQ's regedit/regini ADS rules: ``CommandLine|re: ':[^ \\]'``, which
    holds on almost every process creation), a regex needing a long run still wins."""
    from scmwatch.sigma.values import prefilter_run, regex_prefilter

    colon = regex_prefilter(":[^ \\\\]")
    werfault = regex_prefilter("(?i)\\.exe[\"']?\\s+[^\"]{0,64}werfaultsecure\\.exe")
    assert prefilter_run(colon) == ":" and prefilter_run(werfault) == "werfaultsecure.exe"
    assert prefilter_run(regex_prefilter("[0-9a-f]{8}")) == ""
    img = atom_of("Image", [("ends", "\\regedit.exe")])
    for rx, wins in ((colon, False), (werfault, True)):
        p = tagged.plan([StandInUnit(("&", (img, atom_of("CommandLine", [("re", rx)]))))])
        assert set(p.index) == ({"CommandLine"} if wins else {"Image"}), rx
        assert any(x.startswith(tagged.PREFILTER) for x in p.patterns) is wins
    # a regex outscores the case-free substring its match needs (it implies it): an OR of such
    # selections keeps the regexes, not their backticks
    ticks = [("&", (atom_of("CommandLine", [("contains", "`")]), atom_of("CommandLine", [("re", x)])))
             for x in (regex_prefilter("\\w+`\\w+`"), regex_prefilter("\\$\\{`e`n`v"))]
    (gate,) = tagged.requirement_gates(("|", tuple(ticks)))
    assert {tagged.ATOMS[a][1][0][0] for a in gate} == {"re"}


def test_sampled_choice_counts_a_regex_atoms_scan():
    """Of two gates that held equally seldom, the plain one wins over a regex atom's prefilter
    pattern (its scan costs on every event); a regex gate that saves enough still wins."""
    rx = atom_of("CommandLine", [("re", "net[\\x09-\\x0d\\x20]+user")])
    img = atom_of("Image", [("ends", "\\net.exe")])
    unit = StandInUnit(("&", (rx, img)))
    quiet = [{"Image": "C:\\x.exe", "CommandLine": "x"}] * 20
    assert set(tagged.plan([unit], quiet).index) == {"Image"}
    busy = [{"Image": "C:\\net.exe", "CommandLine": "net group"}] * 20
    sampled = tagged.plan([unit], busy)
    assert sampled.need == (1,) and any(x.startswith(tagged.PREFILTER) for x in sampled.patterns)


# ----------------------------------------------------------------------------- regexes and globs

regex_blocks = st.sampled_from(["`", "\\$\\{", "-f", "a", "A", "\\s", ".", "\\d{2,3}", "(?:ab|c-d)", "[0-9]+",
                                "(x`)?", "(?:\\{\\d\\})+", "\\w+", "^", "$", "\\.", "[ \"']{1}", "ß", "σ",
                                # letters: runs a case-sensitive regex needs as written, unless an
                                # inline flag makes part of it case-insensitive
                                "net", "Us", "(?i)", "(?i:Us)", "(?s)", "(?-i:x)", "\\x41", "[nN]", "e?"])
subjects = st.text(alphabet="aAbcdx`${}-f0129 .\"'\nßΣσ\udc80netNETUusS", max_size=24)


@settings(max_examples=400, deadline=None)
@given(st.lists(regex_blocks, min_size=1, max_size=6), st.sampled_from(["", "i", "m", "s", "is"]), subjects)
def test_regex_prechecks_never_change_the_answer(blocks, flags, value):
    pattern = "".join(blocks)
    try:
        rx = compile_re2(pcre_dollar(pattern, flags), flags)
    except CompileError:
        return
    plain = _raw_matcher(rx, "UNANCHORED")  # no prechecks
    searcher = re2_searcher(pattern, flags)
    rebuild, args = searcher.__rebuild__  # as the rule cache reads it: compiled when first needed
    assert searcher(value) == plain(value) == rebuild(*args)(value)


line_runs = st.sampled_from([".{3}", ".{3,}", ".{3,5}", ".{0,}", ".{1000,}", ".{4,4}"])
run_subjects = st.text(alphabet="ab \n\r\tσ\udc80\u2028", max_size=12) | st.sampled_from(
    ["a" * 1000, "a" * 999, "a" * 999 + "\n" + "b" * 999, "b" * 10 + "\n" + "a" * 1000, "σ" * 1000])


@settings(max_examples=300, deadline=None)
@given(line_runs, st.sampled_from(["", "i", "m", "s", "ms"]), run_subjects)
def test_a_line_run_regex_answers_as_re2(pattern, flags, value):
    """``.{n,...}`` is answered by line lengths (no RE2 for ASCII values), as RE2 answers."""
    rx = compile_re2(pcre_dollar(pattern, flags), flags)
    searcher = re2_searcher(pattern, flags)
    rebuild, args = searcher.__rebuild__
    assert searcher(value) == _raw_matcher(rx, "UNANCHORED")(value) == rebuild(*args)(value)


def test_a_line_run_regex_runs_no_re2_on_ascii(monkeypatch):
    rebuild, args = re2_searcher(".{1000,}").__rebuild__
    searcher = rebuild(*args)  # as the rule cache reads it
    monkeypatch.setattr(sigma_values.re2, "compile", lambda *a, **k: pytest.fail("RE2 compiled"))
    assert searcher("x" * 400 + "\n" + "y" * 1000)
    assert not searcher("x" * 999 + "\n" + "y" * 999)
    assert searcher.min_len == 1000


glob_parts = st.lists(st.sampled_from(["a", "b", "%temp%\\", ">", "σ", "*", "?"]), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(glob_parts, min_size=1, max_size=5), st.text(alphabet="ab>%temp\\σΣ\n", max_size=16))
def test_grouped_globs_equal_each_glob(globs, value):
    from sigma.types import SpecialChars

    def parts(tokens):
        return [SpecialChars.WILDCARD_MULTI if t == "*" else SpecialChars.WILDCARD_SINGLE if t == "?" else t
                for t in tokens]

    patterns = [parts(g) for g in globs]
    alone = any(glob_matcher(p)(value) for p in patterns)
    assert globs_matcher(patterns)(value) == alone


def test_event_model_unchanged_for_atoms(engines):
    """The public entry point (``Engine.match``) takes the atom path too."""
    atom_engine, _ = engines
    ev = Event({"Channel": SYSMON, "EventID": 1, "Image": "C:\\x\\PING.EXE", "CommandLine": "ping -n 1 x"},
               "t", 1, "json")
    assert [r.title for r in atom_engine.match(ev)] == ["img_cli"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=5),
       st.lists(st.sampled_from([*FIELDS, "x"])))
def test_low_c_equals_python(fields, keys):
    """The per-event lower-case cache: the C type and the Python class fill the same entries."""
    c, py = Low(fields), PyLow(fields)
    assert [c[k] for k in keys] == [py[k] for k in keys]
    assert dict(c) == dict(py) and c.f is fields and py.f is fields


@needs_hyperscan
def test_trials_pick_a_prefilter_without_changing_matches(engines):
    """By default a bucket times both prefilters on its first events, alternately, then keeps
    one; every answer on the way is the plain predicates' answer."""
    _, literal_engine = engines
    auto = Engine(literal_engine.ruleset, hyperscan_after=0)
    rng = random.Random(5)
    pool = ["C:\\Windows\\System32\\cmd.exe", "x\\PING.exe", "ping -n 1 x", "vssadmin delete", "", None,
            "ΣΊΣΥΦΟΣ.EXE", "Invoke-Mimikatz -DumpCreds", "a\x1eb", 5, ["İ", "x"]]
    b = auto.bucket(SYSMON, 1)
    assert b.trials == 2 * sigma_index.TRIALS and b.atom_scan is not None
    for _ in range(2 * sigma_index.TRIALS + 5):
        f = {"Channel": SYSMON, "EventID": 1, **{k: rng.choice(pool) for k in FIELDS}}
        assert [r.id for r in auto.match_fields(f)] == brute(literal_engine, f)
    assert b.trials == 0 and b.timings == ([], [])


keyword_values = st.lists(st.sampled_from(["mimikatz", "sekurlsa::", "a*b?c", "Σσ", "ß", "😀", "x\\*y", "*",
                                           "İ", "4688", "tRuE", ""]), min_size=2, max_size=6)


@settings(max_examples=300, deadline=None)
@given(keyword_values, st.dictionaries(st.sampled_from(["CommandLine", "Data", "Computer", "Other"]),
                                       st.one_of(text_values, st.integers(0, 5000), st.booleans(), st.none(),
                                                 st.lists(text_values, max_size=2)), max_size=4))
def test_grouped_keywords_equal_one_leaf_each(words, fields):
    """An OR of keywords is one pass over the values (``_Compiler.keywords``): it must match
    exactly when one of the leaves alone (``_Compiler.keyword``) does."""
    from sigma.types import SigmaString

    from scmwatch.sigma.compile import _Compiler

    c = _Compiler(None, None)
    vals = [SigmaString(w) for w in words]
    grouped, _, _ = c.keywords(vals)
    leaves = [c.keyword(v)[0] for v in vals]
    low = Low(fields)
    want = any(c.em.function(leaf)(fields, low) for leaf in leaves)
    assert c.em.function(grouped)(fields, Low(fields)) == want


# ----------------------------------------------------------------------------- keyword anchors

MIMIKATZ = ["dpapi::masterkey", "eo.oe.kiwi", "event::clear", "gentilkiwi.com", "kiwi legit printer",
            "lsadump::", "mimidrv.sys", "\\mimilib.dll", "sekurlsa::"]


def test_keyword_anchors_of_the_mimikatz_keywords():
    assert sigma_index.keyword_anchors(MIMIKATZ) == ("::", "kiwi", "mimi")
    assert sigma_index.keyword_anchors(["abc", "sekurlsa::"]) is None  # "abc" holds no anchor
    assert sigma_index.keyword_anchors(["σσσσσ"]) is None  # no ASCII anchor


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab:c-Σ ", min_size=3, max_size=9).map(str.lower), min_size=1, max_size=12))
def test_keyword_anchors_cover_every_literal(literals):
    anchors = sigma_index.keyword_anchors(literals)
    if anchors is not None:
        assert 1 <= len(anchors) <= sigma_index.MAX_ANCHORS
        assert all(any(a in lit for a in anchors) for lit in literals)
        assert all(a.isascii() and a == a.lower() for a in anchors)


anchor_values = st.one_of(st.text(alphabet=TRICKY + "KIWImimi:", max_size=14), st.integers(), st.none(),
                          st.booleans(), st.lists(st.one_of(st.text(alphabet="kiwiMIMI:Σ", max_size=6),
                                                            st.integers(), st.none()), max_size=3))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["CommandLine", "Data", "Computer", "EventID", "Other"]),
                       anchor_values, max_size=5), st.booleans())
def test_any_anchor_c_equals_python_and_the_join(fields, named):
    """``_text.has_anchor`` answers as its Python twin, and never False where the joined,
    lower-cased prefilter text holds an anchor (what makes the gate safe)."""
    anchors = ("::", "kiwi", "mimi")
    names = ("CommandLine", "Data") if named else None
    skip = frozenset() if named else SYSTEM_FIELDS
    c_has, sigma_index.has_anchor = sigma_index.has_anchor, None
    try:
        want = sigma_index.any_anchor(fields, names, skip, anchors)
    finally:
        sigma_index.has_anchor = c_has
    assert sigma_index.any_anchor(fields, names, skip, anchors) == want
    text = sigma_index.prefilter_text(fields, names, skip)
    if any(a in text for a in anchors):
        assert want


KEYWORD_RULES = {"keywords": "keywords:\n  - 'sekurlsa::'\n  - 'gentilkiwi.com'\n  - '\\\\mimilib.dll'\n"
                             "  - 'Kiwi Legit Printer'\ncondition: keywords"}


@pytest.fixture(scope="module")
def keyword_engines(tmp_path_factory):
    """A bucket whose one rule searches keywords: (Hyperscan literal path, the default engine,
    no Hyperscan)."""
    tmp = tmp_path_factory.mktemp("keyword-rules")
    _, plain = engine_pair(tmp, KEYWORD_RULES, "process_creation", "5d0b6a56")
    return (Engine(plain.ruleset, hyperscan_after=0, atoms=False), Engine(plain.ruleset),
            Engine(plain.ruleset, use_hyperscan=False))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["CommandLine", "Data", "Computer", "Other", "Image"]), anchor_values,
                       max_size=5))
def test_keyword_gate_equals_every_predicate(keyword_engines, fields):
    f = {"Channel": SYSMON, "EventID": 1, **fields}
    plain = keyword_engines[-1]
    assert plain.bucket(SYSMON, 1).anchors == ("::", "kiwi", "mimi")
    want = brute(plain, f)
    for engine in keyword_engines:
        assert [r.id for r in engine.match_fields(f)] == want
    hit = {"Channel": SYSMON, "EventID": 1, "CommandLine": "x SEKURLSA::logonpasswords"}
    assert all(len(e.match_fields(hit)) == 1 for e in keyword_engines)


@needs_hyperscan
@pytest.mark.skipif(sigma_index.Matcher is None, reason="the C extension is not built")
def test_matcher_key_order_memory_never_changes_the_answer(engines):
    """A Matcher that frames every field (``rest`` >= 0) remembers the field number of each key of
    the last event, by position (a bucket's events come with the same interned keys in the same
    order). Events one after the other through one such Matcher, each answered as evaluating
    every rule answers it: the same keys with other values, the keys in another order (an
    indexed field where another one was), fewer and more keys, a System field where an indexed
    one was, and keys equal to the indexed names but not the same objects."""
    import sys

    from scmwatch.sigma._text import Matcher

    atom_engine, literal_engine = engines
    b = atom_engine.bucket(SYSMON, 1)
    p = b.atoms
    framing_all = Matcher(b.gather, b.atom_scan_db, p.index, len(p.index), SYSTEM_FIELDS, p.ascii_only,
                          b.preds, b.rules)
    fresh = "".join(["Comm", "andLine"])  # equal to an indexed name, made at run time
    assert fresh == "CommandLine" and fresh is not sys.intern("CommandLine")
    head = {"Channel": SYSMON, "EventID": 1}
    events = [
        {**head, "Image": "C:\\x\\PING.exe", "CommandLine": "ping -n 1", "User": "NT AUTHORITY"},
        {**head, "Image": "C:\\x\\cmd.exe", "CommandLine": "vssadmin list", "User": "bob"},
        {**head, "CommandLine": "x", "Image": "C:\\x\\PING.exe -n 1", "User": "NT AUTHORITY"},
        {**head, "CommandLine": "vssadmin", "Image": "C:\\x\\pwsh.exe", "User": "NT AUTHORITY"},
        {**head, "User": "x", "Computer": "\\cmd.exe", "CommandLine": "sekurlsa::x"},
        {**head, "Computer": "sekurlsa::", "User": "x"},
        {**head, "Image": "\\pwsh.exe"},
        {**head, "Image": "C:\\x\\PING.exe", fresh: "ping -n 2", "Other": "sekurlsa::logon", "Hashes": "x"},
        {**head, "Image": "C:\\x\\PING.exe", fresh: "ping", "Other": "y", "Hashes": "x",
         "ParentImage": "c:\\temp\\a"},
        {**head, "Image": "C:\\x\\PING.exe", "CommandLine": "ping -n 3", "User": "NT AUTHORITY"},
    ]
    answers = []
    for f in events * 2:
        want = brute(literal_engine, f)
        got = framing_all(f)
        assert got is not None and [r.id for r in got] == want, f
        assert [r.id for r in b.matcher(f)] == want, f
        answers.append(want)
    assert any(answers) and not all(answers)  # events that match and events that do not
