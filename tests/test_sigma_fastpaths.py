"""Fast paths of the Sigma compiler against the plain predicate path they replace.

Differential tests: numbers grouped into one set test (and their ``num`` atom), bools as the
strings "true"/"false", keywords over one joined text. Each must answer exactly what the
plain per-leaf / per-value code answers, whatever the event holds (hostile values on purpose:
non-ASCII case folding, frame characters, floats, lists, None).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sigma.types import SigmaString

from engine_pairs import StandInUnit, brute, engine_pair
from scmwatch.sigma import compile, load_rules, tagged
from scmwatch.sigma import index as sigma_index
from scmwatch.sigma.compile import ATOMS, Low, _Compiler, _numbers_pred, atom_of, atom_pred
from scmwatch.sigma.values import as_text, strict_number

needs_hyperscan = pytest.mark.skipif(sigma_index.hyperscan is None, reason="Hyperscan is not installed")
SYSMON = "Microsoft-Windows-Sysmon/Operational"
TRICKY = "aAzZ09 -_\\/.:'\"`${}()<>|*?ΣσςİıßẞǅKkſ\u0307\u202e😀\x00\x09\x0a\x10\x1b\x1d\x1e\x1f\udc80é"

number_texts = st.one_of(st.integers(-3, 700).map(str), st.sampled_from(
    ["0", "-0", "00", "0100", "100.0", "100.5", "99.99999999999999999", "-0.0", " 100", "100 ", "+100", "1e2",
     "0x64", "１００", "100\x1d", "-5", "-5.00", "", "true"]))
number_values = st.one_of(st.integers(-3, 700), number_texts, st.booleans(), st.none(),
                          st.floats(-10, 700, allow_nan=False),
                          st.lists(st.one_of(st.integers(0, 200), number_texts), max_size=3))


def _one_number(v, n, hexok):
    """The plain per-number leaf: an int as is, a str as its digits or a plain decimal."""
    def one(x):
        if x.__class__ is str and x == str(n):
            return True
        y = strict_number(x, hexok)
        return y is not None and y == n

    if v.__class__ is int:
        return v == n
    if v is None:
        return False
    if isinstance(v, list):
        return any(one(x) for x in v)
    return one(v)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.integers(-3, 700), st.sampled_from([0, 100, 1.5, -5])), min_size=1, max_size=6),
       number_values, st.booleans())
def test_number_set_equals_each_number(nums, value, hexok):
    want = any(_one_number(value, n, hexok) for n in nums)
    f = {"DestinationPort": value}
    assert _numbers_pred("DestinationPort", frozenset(nums), hexok)(f, Low(f)) == want


@needs_hyperscan
@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 700), min_size=1, max_size=45), number_values)
def test_number_atom_holds_whenever_the_numbers_do(nums, value):
    """The ``num`` pattern over the tagged text: a superset of the number test, exact on ints
    and on text without a decimal point."""
    aid = atom_of("DestinationPort", [("num", str(n)) for n in nums])
    p = tagged.plan([StandInUnit(aid)])
    scan = sigma_index._scan_function(sigma_index._hs_database(list(p.patterns), regex=True))
    f = {"DestinationPort": value, "Other": "1"}
    text = tagged.tagged_text(f, p.index, p.rest)
    holds = atom_pred(aid)(f, Low(f))
    assert holds == any(_one_number(value, n, False) for n in nums)
    if text is None:  # not clean: the event takes the literal prefilter
        return
    hit = bool(scan(text))
    assert holds <= hit, (value, nums)
    items = value if isinstance(value, list) else [value]
    if not any(isinstance(x, str) and "." in x for x in items):
        assert hit == holds, (value, nums)


def test_numbers_and_bools_are_atoms():
    """OR-ed ports become one ``num`` atom, a bool an ``eq`` atom; a hex field or a float
    keeps the plain test without an atom."""
    c = _Compiler(None, None)
    from sigma.conditions import ConditionFieldEqualsValueExpression as Leaf
    from sigma.types import SigmaBool, SigmaNumber

    _, _, req = c.or_node([Leaf("DestinationPort", SigmaNumber(n)) for n in (4444, 8080)], True)
    assert ATOMS[req] == ("DestinationPort", (("num", "4444"), ("num", "8080")))
    _, lits, req = c.leaf("Initiated", SigmaBool(True), True)
    assert ATOMS[req] == ("Initiated", (("eq", "true"),)) and lits == frozenset({"true"})
    _, _, req = c.or_node([Leaf("X", SigmaNumber(1.5)), Leaf("X", SigmaNumber(2))], True)
    assert req is True


RULES = {
    "ports": "sel:\n  Initiated: true\n  DestinationPort: [4444, 8080, 0, 65535]\ncondition: sel",
    "not_port": "sel:\n  Image|endswith: '.exe'\nfilter:\n  DestinationPort: 443\n"
                "condition: sel and not filter",
    "bool_false": "sel:\n  Initiated: false\n  Image|contains: 'x'\ncondition: sel",
    "keywords": "keywords:\n  - 'perfc.dat'\n  - 'Σσ'\n  - 4444\ncondition: keywords",
    "keyword_one": "keywords:\n  - '\\\\perfc.dat'\ncondition: keywords",
    # enough literals for the bucket to move to Hyperscan (and so to the atom prefilter)
    "images": "sel:\n  Image|endswith: ['\\\\a1.exe', '\\\\b2.exe', '\\\\c3.exe', '\\\\d4.exe',"
              " '\\\\e5.exe']\ncondition: sel",
}


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return engine_pair(tmp_path_factory.mktemp("fast-rules"), RULES, "network_connection", "6e0b6a54")


def _plain(rule_title, f):
    """The plain reading of each test rule, written out."""
    def text(v):
        return v.lower() if isinstance(v, str) else as_text(v).lower() if as_text(v) is not None else None

    def texts(v):
        items = v if isinstance(v, list) else [v]
        return [t for t in (text(x) for x in items if x is not None) if t is not None]

    def is_bool(v, b):
        items = v if isinstance(v, list) else [v]
        return any((x is b) if isinstance(x, bool) else isinstance(x, str) and x.lower() == str(b).lower()
                   for x in items)

    def port(v, ns):
        return any(_one_number(v, n, False) for n in ns)

    values = [texts(v) for k, v in f.items() if k not in compile.SYSTEM_FIELDS]
    if rule_title == "ports":
        return is_bool(f.get("Initiated"), True) and port(f.get("DestinationPort"), (4444, 8080, 0, 65535))
    if rule_title == "not_port":
        return (any(t.endswith(".exe") for t in texts(f.get("Image")))
                and not port(f.get("DestinationPort"), [443]))
    if rule_title == "bool_false":
        return is_bool(f.get("Initiated"), False) and any("x" in t for t in texts(f.get("Image")))
    if rule_title == "images":
        return any(t.endswith(("\\a1.exe", "\\b2.exe", "\\c3.exe", "\\d4.exe", "\\e5.exe"))
                   for t in texts(f.get("Image")))
    needles = ["perfc.dat", "σσ", "4444"] if rule_title == "keywords" else ["\\perfc.dat"]
    return any(n in t for ts in values for t in ts for n in needles)


event_values = st.one_of(st.text(alphabet=TRICKY + "perfc.datxe", max_size=16), number_values,
                         st.sampled_from(["C:\\x\\perfc.dat", "PERFC.DAT", "a.EXE", "ΣΣ", "4444", "TRUE",
                                          "False"]),
                         st.lists(st.one_of(st.text(alphabet="perfc.dat\\ΣTRUE", max_size=10), st.booleans(),
                                            st.integers(4440, 4450)), max_size=3))


@needs_hyperscan
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["Initiated", "DestinationPort", "Image", "Other", "Computer"]),
                       event_values, max_size=5))
def test_fast_paths_equal_the_plain_reading(engines, fields):
    atom_engine, literal_engine = engines
    f = {"Channel": SYSMON, "EventID": 3, **fields}
    b = atom_engine.bucket(SYSMON, 3)
    assert b.atom_scan is not None
    titles = {r.id: r.title for r in literal_engine.ruleset.rules}
    want = [r.id for r in literal_engine.ruleset.rules if _plain(r.title, f)]
    assert sorted(brute(literal_engine, f)) == sorted(want), [titles[i] for i in want]
    assert [r.id for r in atom_engine.match_fields(f)] == brute(literal_engine, f)
    assert [r.id for r in literal_engine.match_fields(f)] == brute(literal_engine, f)


keyword_words = st.lists(st.sampled_from(["mimikatz", "sekurlsa::", "Σσ", "ß", "😀", "4688", "tRuE", "perfc",
                                          "İ", "k", "a b"]), min_size=1, max_size=5)


@pytest.mark.skipif(compile.tagged_join is None, reason="the C extension is not built")
@settings(max_examples=400, deadline=None)
@given(keyword_words,
       st.dictionaries(st.sampled_from(["CommandLine", "Data", "Computer", "Other", "EventID"]),
                       st.one_of(st.text(alphabet=TRICKY + "mikatzperfc", max_size=12), st.integers(0, 5000),
                                 st.booleans(), st.none(), st.floats(allow_nan=False),
                                 st.lists(st.one_of(st.text(alphabet=TRICKY, max_size=6), st.none(),
                                                    st.integers(4680, 4690)), max_size=2)), max_size=4))
def test_joined_keywords_equal_the_value_loop(words, fields):
    """Keywords over the joined text answer what the loop over each value answers."""
    vals = [SigmaString(w) for w in words]
    fast, _, _ = (c := _Compiler(None, None)).keywords(vals)
    fast_pred = c.em.function(fast)
    join, compile.tagged_join = compile.tagged_join, None
    try:
        plain, _, _ = (p := _Compiler(None, None)).keywords(vals)
    finally:
        compile.tagged_join = join
    plain_pred = p.em.function(plain)
    assert fast_pred(fields, Low(fields)) == plain_pred(fields, Low(fields))


# ----------------------------------------------------------------------------- regex atoms

regex_blocks = st.sampled_from(["`", "\\$\\{", "-f", "a", "A", "\\s", "\\S", ".", "\\d{2,3}", "(?:ab|c-d)",
                                "[0-9]+", "(x`)?", "(?:\\{\\d\\})+", "\\w+", "\\W", "^", "$", "\\b", "\\.",
                                "[ \"']{1}",
                                "[^a-z]", "[^\\\\]", "[^A]", "[A-Z]{2}", "k", "K", "(?i)", "(?i:Us)", "(?s)",
                                "[^\\W]", "\\D", "x{3,}", "y{0,200}", ".{150,}", "(a)\\1", "(?=b)", "(?!c)",
                                "[\\u212a]", "[^\\x00-\\x1f]", "net", "|", "\\x41", "[nN]", "e?"])
regex_subjects = st.text(alphabet="aAbcdkKx`${}-f0129 .\"'\n\tUusSyY\\\u212a_", max_size=40)


def _regex_and_prefilter(pattern: str, flags: str):
    """The rule's RE2 search and its prefilter pattern; ``(None, None)`` when RE2 refuses it."""
    from scmwatch.sigma.values import CompileError, re2_searcher, regex_prefilter

    try:
        search = re2_searcher(pattern, flags)
    except CompileError:
        return None, None
    return search, regex_prefilter(pattern)


@settings(max_examples=600, deadline=None)
@given(st.lists(regex_blocks, min_size=1, max_size=6), st.sampled_from(["", "i", "m", "s", "is"]),
       regex_subjects)
def test_regex_prefilter_holds_whenever_the_regex_does(blocks, flags, value):
    """``values.regex_prefilter``: whenever the rule's regex (RE2, its flags) matches a value
    whose lower-cased text is ASCII, the prefilter pattern matches that lower-cased text
    (checked with RE2 here, with Hyperscan below)."""
    import re2

    pattern = "".join(blocks)
    search, rendered = _regex_and_prefilter(pattern, flags)
    if rendered is None or not search(value):
        return
    assert value.lower().isascii()
    assert re2.search(rendered, value.lower()) is not None, (pattern, flags, value, rendered)


@needs_hyperscan
@settings(max_examples=150, deadline=None)
@given(st.lists(regex_blocks, min_size=1, max_size=5), st.sampled_from(["", "i", "s"]),
       st.lists(regex_subjects, min_size=1, max_size=6))
def test_regex_prefilter_in_hyperscan(blocks, flags, values):
    """The same through Hyperscan's prefilter mode, as the atom scan runs it (no value is lost)."""
    pattern = "".join(blocks)
    search, rendered = _regex_and_prefilter(pattern, flags)
    if rendered is None:
        return
    scan = sigma_index._scan_function(sigma_index._hs_database([tagged.PREFILTER + rendered], regex=True))
    for v in values:
        if search(v):
            assert scan(v.lower()), (pattern, flags, v, rendered)


def test_regex_prefilter_refuses_what_it_cannot_read():
    from scmwatch.sigma.values import regex_prefilter

    assert regex_prefilter("a{,3}") is None  # RE2 reads it as text, Python as a repeat
    assert regex_prefilter("[[:alpha:]]x") is None  # RE2's POSIX class, Python's nested set
    assert regex_prefilter("x|") is None  # matches the empty string: no gate
    assert regex_prefilter("é") is None
    want = "\\x6e\\x65\\x74(?:[\\x09-\\x0d\\x20]){1,}\\x75\\x73\\x65\\x72"
    assert regex_prefilter("\\bnet\\s+user$") == want  # anchors and boundaries dropped


@needs_hyperscan
def test_sigmahq_regex_prefilters_compile():
    """Every regex of SigmaHQ's rules that gets a prefilter pattern compiles in Hyperscan."""
    from paths import SIGMAHQ

    if not (SIGMAHQ / "rules").is_dir():
        pytest.skip("../shared/corpora/sigmahq absent")
    rs = load_rules([SIGMAHQ / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")])
    seen = {spec[1] for _, specs in list(ATOMS) for spec in specs if spec[0] == "re"}
    assert len(seen) > 80 and rs.rules
    sigma_index._hs_compile_regex([tagged.PREFILTER + p for p in sorted(seen)])


REGEX_RULES = {
    "single_dot": "sel:\n  CommandLine|re: '\\\\[a-zA-Z0-9]{1,32}\\.[a-zA-Z0-9]{1,6}\\.[ \"'']{1}'\n"
                  "condition: sel",
    "hex_args": "sel:\n  CommandLine|re: '\\s[a-fA-F0-9]{8}\\s'\ncondition: sel",
    "user_case": "sel:\n  Image|re: '(?i)\\\\NET[^a-z]EXE$'\ncondition: sel",
    "images": RULES["images"],
}


@pytest.fixture(scope="module")
def regex_engines(tmp_path_factory):
    return engine_pair(tmp_path_factory.mktemp("regex-rules"), REGEX_RULES, "process_creation", "7e0b6a54")


regex_event_values = st.one_of(
    st.text(alphabet="aAbK\u212ak\\. \"'0129fF\tİß®x", max_size=30),
    st.sampled_from(["C:\\x\\a.b.c ", "c:\\X\\FOO.BAR.\"", "x 0123abcd y", "X 0123ABCD\tY", "\\net.exe",
                     "\\NET_EXE", "\\NE\u212aT.EXE", "® \\x\\a.b.c ", "\\net-exe\n"]),
    st.integers(), st.booleans(), st.none(),
    st.lists(st.text(alphabet="\\a.b \u212a®", max_size=10), max_size=3))


@needs_hyperscan
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["CommandLine", "Image", "Product", "Other"]), regex_event_values,
                       max_size=4))
def test_regex_atoms_equal_the_predicates(regex_engines, fields):
    """Regex atoms in the scan: exactly the rules brute force gives, non-ASCII values included."""
    atom_engine, literal_engine = regex_engines
    f = {"Channel": SYSMON, "EventID": 1, **fields}
    b = atom_engine.bucket(SYSMON, 1)
    assert b.atom_scan is not None and any(p.startswith(tagged.PREFILTER) for p in b.atoms.patterns)
    want = brute(literal_engine, f)
    assert [r.id for r in atom_engine.match_fields(f)] == want
    assert [r.id for r in literal_engine.match_fields(f)] == want


# ----------------------------------------------------------------------------- glob atoms

glob_tokens = st.lists(st.sampled_from(["a", "b", "|", "find", "σ", "İ", "*", "?"]), min_size=1, max_size=6)
glob_values = st.one_of(st.text(alphabet="abAB|findFINDσΣİi\u0307ß😀 ", max_size=14),
                        st.lists(st.text(alphabet="ab|find", max_size=6), max_size=2), st.integers(0, 99),
                        st.booleans(), st.none())


@needs_hyperscan
@settings(max_examples=300, deadline=None)
@given(st.lists(glob_tokens, min_size=1, max_size=3), glob_values)
def test_glob_atom_holds_whenever_the_glob_does(globs, value):
    """A wildcard value's pattern: whenever the value matches (``compile._ci_group``), the
    pattern matches the tagged text; with ``*`` alone, exactly then."""
    from sigma.types import SpecialChars

    from scmwatch.sigma.compile import _ci_group
    from scmwatch.sigma.values import classify, lower_parts

    specs = []
    for tokens in globs:
        parts = [SpecialChars.WILDCARD_MULTI if t == "*" else SpecialChars.WILDCARD_SINGLE if t == "?" else t
                 for t in tokens]
        specs.append(classify(lower_parts(parts)))
    aid = atom_of("CommandLine", specs)
    assert aid is not None
    p = tagged.plan([StandInUnit(aid)])
    scan = sigma_index._scan_function(sigma_index._hs_database(list(p.patterns), regex=True))
    f = {"CommandLine": value, "Image": "find|a"}
    text = tagged.tagged_text(f, p.index, p.rest)
    if text is None:
        return
    holds = _ci_group("CommandLine", specs)(f, Low(f))
    hit = bool(scan(text))
    assert holds <= hit, (specs, value)
    if all(k != "glob" or SpecialChars.WILDCARD_SINGLE not in g for k, g in specs) and \
            all(k != "contains" or len(t) < tagged.SCOPED_CONTAINS for k, t in specs):
        assert hit == holds, (specs, value)


# ----------------------------------------------------------------------------- fieldref inline

ref_values = st.one_of(st.sampled_from(["C:\\X\\a.exe", "c:\\x\\A.EXE", "İ", "i\u0307", "Σ", "ς", ""]),
                       st.integers(0, 3), st.booleans(), st.none(), st.floats(0, 2),
                       st.lists(st.sampled_from(["a", "A", 1]), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["Image", "ParentImage", "Other"]), ref_values, max_size=3))
def test_inline_fieldref_equals_the_call(fields):
    from scmwatch.sigma.compile import _fieldref_leaf

    c = _Compiler(None, None)
    inline = c.em.function(c.same_fields("Image", "ParentImage"))
    call = _fieldref_leaf("Image", "ParentImage", False, False)
    assert inline(fields, Low(fields)) == call(fields, Low(fields))
