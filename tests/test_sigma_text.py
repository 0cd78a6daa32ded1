"""The prefilter text: the C ``lower_join`` must equal the Python join + lower exactly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmwatch.sigma import index

CASES = [
    ({"A": "Hello", "B": "WORLD"}, ("A", "B")),
    ({"A": "Hello", "B": None, "C": "x"}, ("A", "B", "C", "Missing")),
    ({"A": "C:\\Windows\\System32\\CMD.EXE", "B": ""}, None),
    ({"A": "Microsoft\u00ae Windows\u00ae", "B": "ÄÖÜ", "C": "ASCII"}, ("A", "B", "C")),
    ({"A": "\u0130stanbul"}, ("A",)),  # İ lower-cases to two code points
    ({"A": "ΟΔΟΣ", "B": "Σ"}, ("A", "B")),  # final sigma depends on the context
    ({"A": 4688, "B": "x"}, ("A", "B")),  # not a str: the Python code
    ({"A": ["a", "B", 3], "B": "x"}, None),
    ({"A": "x\x00y", "B": "Z"}, ("A", "B")),
    ({}, None),
    ({"A": None}, None),
    ({f"F{i}": f"V{i}" for i in range(100)}, None),  # more values than the C buffer holds
]


def python_text(f: dict, names) -> str:
    saved, index.lower_join = index.lower_join, None
    try:
        return index.prefilter_text(f, names)
    finally:
        index.lower_join = saved


@pytest.mark.parametrize(("fields", "names"), CASES)
def test_c_text_equals_python_text(fields, names) -> None:
    expected = "\x00".join(
        v if isinstance(v, str) else index._as_text(v)
        for v in (fields.values() if names is None else (fields.get(n) for n in names))
        if v is not None
    ).lower()
    assert python_text(fields, names) == expected
    if index.lower_join is None:
        pytest.skip("the C extension was not built")
    got = index.lower_join(fields, names)
    assert got is None or got == expected
    assert index.prefilter_text(fields, names) == expected
    if all(isinstance(v, str) or v is None for v in fields.values()) and len(fields) <= 64:
        assert got is not None  # every str case is handled in C


NON_STR = [
    ({"A": 4688, "B": "x", "C": 2.5, "D": True}, True),  # EVTX gives ints for many Sysmon fields
    ({"A": ["a", "B", 3, None, 1.0], "B": []}, True),
    ({"A": {"nested": "Obj"}, "B": "ÄÖ", "C": 7}, True),
    ({"A": [str(i) for i in range(300)]}, False),  # more pieces than the C buffer holds: Python
]


@pytest.mark.parametrize(("fields", "in_c"), NON_STR)
def test_c_text_takes_non_str_values_too(fields, in_c) -> None:
    if index.lower_join is None:
        pytest.skip("the C extension was not built")
    expected = python_text(fields, None)
    for names in (None, tuple(fields), ("Missing", *fields)):
        got = index.lower_join(fields, names)
        assert got == (expected if in_c else None)
        assert index.prefilter_text(fields, names) == expected


@pytest.mark.parametrize(("fields", "names"), [c for c in CASES if c[1] is None])
@pytest.mark.parametrize("skip", [frozenset(), frozenset({"A"}), frozenset({"B", "Missing"}),
                                  frozenset({"F3"})])
def test_skipped_fields_are_left_out(fields, names, skip) -> None:
    """All fields but ``skip`` (the System fields a keyword literal never comes from)."""
    expected = python_text({k: v for k, v in fields.items() if k not in skip}, None)
    saved, index.lower_join = index.lower_join, None
    try:
        assert index.prefilter_text(fields, None, skip) == expected
    finally:
        index.lower_join = saved
    if index.lower_join is None:
        pytest.skip("the C extension was not built")
    got = index.lower_join(fields, None, skip)
    assert got is None or got == expected
    assert index.prefilter_text(fields, None, skip) == expected
    with pytest.raises(TypeError):
        index.lower_join(fields, None, ["A"])  # a set, not any container


def _byte_texts() -> list[str]:
    """Every character below U+0100 at each place of a 16-byte step and past it (the C code
    lowers ASCII 16 bytes at a time and tests for the tagged text's frame bytes the same way)."""
    out = []
    for n in (15, 16, 17, 31, 32, 33, 40):
        for c in range(256):
            at = c % n
            out.append("Ab" * (n // 2) + "Z" * (n % 2))
            out.append(out[-1][:at] + chr(c) + out[-1][at + 1:])
    return out


@pytest.mark.skipif(index.lower_join is None, reason="the C extension is not built")
def test_c_lower_casing_equals_str_lower_on_every_byte() -> None:
    from scmwatch.sigma import tagged
    from scmwatch.sigma.compile import SYSTEM_FIELDS, Low, PyLow

    for t in _byte_texts():
        pair = {"A": t, "B": t[::-1]}
        assert index.lower_join(pair, ("A", "B")) == python_text(pair, ("A", "B"))
        assert Low({"A": t})["A"] == PyLow({"A": t})["A"] == t.lower()
        fields, numbers = {"A": t, "B": [t.upper(), "x"]}, {"A": 0, "B": 1}
        want = tagged.tagged_text_py(fields, numbers, -1)
        assert want is None or want.isascii() == t.isascii()
        assert tagged.tagged_join(fields, numbers, -1) == want
        got = tagged.tagged_join(fields, numbers, -1, True, SYSTEM_FIELDS)
        assert got == (None if want is None else want.encode("utf-8"))


def _wide_texts() -> list[str]:
    """Texts past Latin-1 beside ASCII: characters whose lower case is ASCII (KELVIN SIGN), two
    code points (İ), another width (ẞ, Deseret), none (CJK, lone surrogates), and capital sigma in
    every kind of neighbourhood (its lower case depends on the letters around it)."""
    chars = ["\u212a", "\u0130", "\u1e9e", "\U00010400", "\u4e2d", "\ud800", "\u0391", "\u03a3", "\u1f88",
             "\u2c6f", "\uff21", "\u0100", "\u00c4", "\u0345", "\u00df"]
    out = []
    for c in chars:
        out += [c, "A" + c, c + "Z", "Ab" + c + "Cd", "x\x00" + c, c * 3, f"PowerShell {c} -EncodedCommand"]
    out += ["\u039f\u0394\u039f\u03a3 \u03a3", "A\u03a3\u0301", "\u03a3\u0391", "\u212a\U00010400\u0130"]
    return out


@pytest.mark.skipif(index.lower_join is None, reason="the C extension is not built")
def test_c_lower_casing_equals_str_lower_past_latin1() -> None:
    from scmwatch.sigma import tagged
    from scmwatch.sigma.compile import SYSTEM_FIELDS, Low, PyLow

    for t in _wide_texts():
        pair = {"A": t, "B": "CMD.EXE", "C": t[::-1]}
        assert index.lower_join(pair, ("A", "B", "C")) == "\x00".join((t, "CMD.EXE", t[::-1])).lower()
        assert index.lower_join(pair, None) == python_text(pair, None)
        assert Low({"A": t})["A"] == PyLow({"A": t})["A"] == t.lower()
        fields, numbers = {"A": t, "B": [t.upper(), "x"]}, {"A": 0, "B": 1}
        want = tagged.tagged_text_py(fields, numbers, -1)
        assert tagged.tagged_join(fields, numbers, -1) == want
        got = tagged.tagged_join(fields, numbers, -1, True, SYSTEM_FIELDS)
        assert got == (None if want is None else want.encode("utf-8", "surrogatepass"))


@pytest.mark.skipif(index.lower_join is None, reason="the C extension is not built")
def test_matchers_intern_the_field_names_they_are_given() -> None:
    """Events are keyed by interned names (the readers intern them): the C matchers take the
    interned objects of their field names, so their lookups stop at the identity test."""
    import sys

    from scmwatch.sigma._text import Gather, LiteralMatcher, Matcher

    def fresh(tag: str) -> str:
        return "".join(["ScmText", tag, "Field"])  # made at run time: not interned yet

    index_name, skip_name, name, lit_skip = fresh("Index"), fresh("Skip"), fresh("Name"), fresh("LitSkip")
    Matcher(Gather((), (), ()), None, {index_name: 0}, -1, frozenset({skip_name}), (), [], ())
    LiteralMatcher(Gather((), (), ()), None, (name,), frozenset({lit_skip}), [], ())
    for tag, made in (("Index", index_name), ("Skip", skip_name), ("Name", name), ("LitSkip", lit_skip)):
        assert sys.intern(fresh(tag)) is made


LITERALS = ("evil", "bad", "0x1")
KEYS = ("Channel", "Computer", "CommandLine", "Image", "User", "Pid")


@pytest.mark.skipif(index.lower_join is None, reason="the C extension is not built")
@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(["EVIL x", "bad", "ok", 1, None])),
                         max_size=6).map(dict), min_size=1, max_size=8),
       st.sampled_from([None, ("e", "b", "0")]))
def test_literal_matcher_answers_as_the_python_join_over_events_of_any_key_order(events, anchors) -> None:
    """A LiteralMatcher keeps the keys of the last event and whether ``skip`` leaves each out,
    and asks the set only for a key that is not the one at its position last time: events
    whose keys come in another order, or where another key takes a skipped one's place, must
    be joined as the Python text is."""
    from scmwatch.sigma._text import Gather, LiteralMatcher

    skip = frozenset({"Channel", "Computer"})

    def scan(data: bytes, gather) -> None:  # what Hyperscan reports for these literals
        for i, lit in enumerate(LITERALS):
            if lit.encode() in data:
                gather(i, 0, 0, 0, None)

    gather = Gather(tuple((i,) for i in range(len(LITERALS))), (), (1,) * len(LITERALS), 2)  # unit positions
    m = LiteralMatcher(gather, scan, None, skip, [True] * len(LITERALS), LITERALS, anchors)
    for f in events:
        text = python_text({k: v for k, v in f.items() if k not in skip}, None)
        assert m(f) == type(m).__call__(m, f) == [lit for lit in LITERALS if lit in text]  # both call paths


@pytest.mark.skipif(index.lower_join is None, reason="the C extension is not built")
def test_matchers_called_with_anything_but_one_dict_raise_as_before() -> None:
    """The matchers and the match handler take their arguments without a tuple (vectorcall);
    every other way of calling them still gets the tp_call's answers."""
    from scmwatch.sigma._text import Gather, LiteralMatcher, Matcher

    gather = Gather(((0,),), (), (1,), 2)
    lit = LiteralMatcher(gather, lambda data, g: g(0, 0, 0, 0, None), None, frozenset(), [True], ("r",))
    atom = Matcher(gather, lambda data, g: None, {"A": 0}, -1, frozenset(), (), [True], ("r",))
    for m in (lit, atom):
        for args, kwargs in (((), {}), (({}, {}), {}), (([],), {}), ((), {"fields": {}})):
            with pytest.raises(TypeError, match="takes one dict|must be dict|exactly 1 argument"):
                m(*args, **kwargs)
            with pytest.raises(TypeError, match="takes one dict|must be dict|exactly 1 argument"):
                type(m).__call__(m, *args, **kwargs)
    assert lit({"A": "x"}) == ["r"] and atom({"A": "x"}) == []
    gather(0, 0, 0, 0, None, extra=1)  # the handler ignores keywords, as it always did
    assert gather.take() == [0]
    with pytest.raises(TypeError, match="needs a pattern id"):
        gather()
    with pytest.raises(ValueError, match="out of range"):
        gather(5)
    uninitialised = Gather.__new__(Gather)
    with pytest.raises(TypeError, match="needs a pattern id"):
        uninitialised(0)
