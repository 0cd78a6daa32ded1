"""Compiled predicates survive the rule cache (``sigma/predpickle.py``): generated code and
closures by value, module attributes by reference, and the same matches as freshly compiled."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from paths import ATTACK_SAMPLES, SIGMAHQ
from scmwatch.sigma import Engine, load_rules, predpickle
from scmwatch.sigma.values import re2_searcher

SENTINEL = object()
TABLE = {"a": 1}


def _roundtrip(obj):
    return predpickle.loads(predpickle.dumps(obj, predpickle.module_attributes(__name__)))


def _make(prefix: str):
    missing = SENTINEL
    seen = []

    def test(v):
        got = TABLE.get(v, missing)
        seen.append(v)
        return got is missing and str(v).startswith(prefix)

    return test


def test_closures_keep_their_cells_and_module_objects_their_identity() -> None:
    f = _roundtrip(_make("x"))
    assert f("xyz") and not f("a") and not f("yz")
    cells = dict(zip(f.__code__.co_freevars, (c.cell_contents for c in f.__closure__), strict=True))
    assert cells["seen"] == ["xyz", "a", "yz"]  # a cell of its own, by value
    assert cells["missing"] is SENTINEL  # a module attribute: by reference, compared with ``is``
    g = f.__globals__
    assert g is globals() and g["SENTINEL"] is SENTINEL  # module globals by reference


def test_generated_functions_share_their_namespace_and_may_refer_to_themselves() -> None:
    ns: dict = {"k1": frozenset({"cmd.exe"})}
    exec("def helper(f, low):\n    return low.get('Image') in k1\n", ns)  # noqa: S102
    ns["k2"] = ns["helper"]
    top = eval("lambda f, low: k2(f, low) or low.get('x') == 'y'", ns)  # noqa: S307
    ns["self"] = top  # a cycle through the namespace
    back = _roundtrip({"src": top})["src"]
    assert back({}, {"Image": "cmd.exe"}) and back({}, {"x": "y"}) and not back({}, {"Image": "a"})
    assert back.__globals__["k2"].__globals__ is back.__globals__
    assert back.__globals__["self"] is back
    assert "__builtins__" not in back.__globals__ or back.__globals__["__builtins__"]


def test_nested_functions_share_their_code_with_the_module() -> None:
    """A closure's code is a reference to its code in the module, not a copy: every predicate
    that holds one shares the one code object (and the stored bytes leave it out)."""
    a, b = _make("x"), _make("y")
    back = _roundtrip({"a": a, "b": b})
    assert back["a"].__code__ is a.__code__ and back["b"].__code__ is a.__code__
    assert back["a"]("xz") and not back["b"]("xz") and back["b"]("yz")
    copied = predpickle.dumps(a, {})  # no references: the code marshalled
    by_ref = predpickle.dumps(a, predpickle.module_attributes(__name__))
    assert len(by_ref) < len(copied) - len(a.__code__.co_code)
    assert predpickle.loads(copied).__code__ is not a.__code__


class _Maker:
    @staticmethod
    def make(prefix: str):
        return lambda v: str(v).startswith(prefix)


_renamed = _make  # a second name: the module table finds _make's nested code while _make is rebound


def test_a_nested_code_is_found_under_its_function_without_the_module_table(monkeypatch) -> None:
    """A stored reference to a nested function's code is resolved from the code of the
    function its qualname names (``f`` of ``f.<locals>.g``, a static method ``C.m``), without
    walking the whole module for its table, and gives the object that table gives."""
    import sys

    walked = []
    table = predpickle._nested_codes
    monkeypatch.setattr(predpickle, "_nested_codes", lambda mod: walked.append(mod) or table(mod))
    monkeypatch.setattr(predpickle, "_codes", {})
    mod = sys.modules[__name__]
    whole = table(mod)
    for f in (_make("x"), _Maker.make("x")):
        code = f.__code__
        assert whole[(code.co_qualname, code.co_firstlineno)] is code
        assert predpickle._nested_code(__name__, code.co_qualname, code.co_firstlineno) is code
    assert walked == []


def test_a_nested_code_not_found_under_its_function_comes_from_the_module_table(monkeypatch) -> None:
    """Where the qualname's function is not the module attribute of that name (here: the name
    rebound to something else), the module's table decides, as before."""
    code = _make("x").__code__
    assert predpickle._code_under(__import__(__name__), code.co_qualname, code.co_firstlineno) is code
    monkeypatch.setattr(predpickle, "_codes", {})
    monkeypatch.setitem(globals(), "_make", SENTINEL)
    assert predpickle._code_under(__import__(__name__), code.co_qualname, code.co_firstlineno) is None
    assert predpickle._nested_code(__name__, code.co_qualname, code.co_firstlineno) is code
    with pytest.raises(pickle.UnpicklingError):
        predpickle._nested_code(__name__, code.co_qualname, code.co_firstlineno + 1)


def _recursive():
    def walk(v, depth=0):
        return depth if not isinstance(v, list) else max((walk(x, depth + 1) for x in v), default=depth + 1)

    return walk


def test_a_closure_that_refers_to_itself_is_stored_in_two_steps() -> None:
    """A function in its own cell (a recursive closure) cannot be made in one call: its
    arguments would hold it before it exists. It is stored with its cells filled afterwards."""
    walk = _recursive()
    assert walk.__closure__[0].cell_contents is walk
    back = _roundtrip(walk)
    assert back.__closure__[0].cell_contents is back
    assert back([[1, [2]], 3]) == walk([[1, [2]], 3]) == 3


def test_a_function_says_how_to_rebuild_what_cannot_be_pickled() -> None:
    m = re2_searcher(r"psexe(c|svc)\.exe$", "i")
    with pytest.raises((TypeError, pickle.PicklingError)):
        pickle.dumps(m.__closure__)  # the compiled RE2 object
    back = _roundtrip(m)
    for v in (r"C:\Windows\PSEXESVC.exe", "psexec.exe", "psexec.exe.bak", "other"):
        assert back(v) == m(v)
    # the prechecks that keep most values away from RE2 survive too
    cells = dict(zip(back.__code__.co_freevars, (c.cell_contents for c in back.__closure__), strict=True))
    assert cells["needs"] == (".",) and cells["min_bytes"] == 10


def test_references_are_resolved_once_per_process_and_functions_made_in_c() -> None:
    """What a piece refers to (module attributes, module dictionaries, nested code) is a
    persistent id, resolved on first use and then found with one lookup; functions and their
    cells are made by ``FunctionType`` and ``CellType`` themselves: no Python call per piece
    (~20 % fewer instructions reading an x5 hunt's 809 predicates, callgrind)."""
    import pickletools

    by_ref = predpickle.module_attributes(__name__)
    data = predpickle.dumps({"a": _make("x"), "b": _make("y")}, by_ref)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert ("BINPERSID", None) in ops
    names = [arg for name, arg in ops if isinstance(arg, str)]
    assert not [n for n in names if "scmwatch" in n]  # no helper of predpickle is called
    calls = []
    real = predpickle._module
    predpickle._module = lambda name: calls.append(name) or real(name)
    try:
        predpickle._REFS.clear()
        predpickle._REFS.update({v: k for k, v in predpickle._BUILTINS.items()})
        first = predpickle.loads(data)
        resolved = len(calls)
        second = predpickle.loads(data)
    finally:
        predpickle._module = real
    assert resolved and len(calls) == resolved  # the second piece resolved nothing again
    assert first["a"]("xz") and second["b"]("yz") and not second["a"]("yz")
    assert second["a"].__code__ is first["a"].__code__ and second["a"].__globals__ is globals()


def test_a_reference_that_no_longer_resolves_fails_to_load() -> None:
    """A stored reference to a module attribute or a nested function that is gone (the code
    moved) raises ``UnpicklingError``: the rule cache then compiles the rule again."""
    f = _make("x")
    for pid in ("a\x00test_sigma_predpickle\x00NO_SUCH_NAME",
                "c\x00test_sigma_predpickle\x00_make.<locals>.test\x001",
                "a\x00no_such_module_anywhere\x00x", "z\x00what"):
        data = predpickle.dumps(f, {id(SENTINEL): pid})
        with pytest.raises(pickle.UnpicklingError):
            predpickle.loads(data)


def test_what_cannot_be_stored_is_refused() -> None:
    import threading

    lock = threading.Lock()
    with pytest.raises((TypeError, pickle.PicklingError)):
        predpickle.dumps(lambda f, low: lock.locked(), {})


@pytest.mark.skipif(not (SIGMAHQ / "rules").is_dir(), reason="../shared/corpora/sigmahq absent")
def test_sigmahq_from_the_cache_matches_like_compiled(tmp_path: Path, monkeypatch) -> None:
    """All SigmaHQ rules: predicates read from the cache match the regression data and the
    attack corpus exactly as freshly compiled ones, and none had to be compiled again."""
    from scmwatch.events.model import ReadStats
    from scmwatch.events.read import discover, read_input

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = [SIGMAHQ / "rules"]
    fresh = load_rules(rules)  # compiles everything and writes the entry
    cached = load_rules(rules)
    stats = ReadStats()
    roots = [str(SIGMAHQ / "regression_data")] + ([str(ATTACK_SAMPLES)] if ATTACK_SAMPLES.is_dir() else [])
    events = [ev for inp in discover(roots, stats) for ev in read_input(inp, stats)]
    assert len(events) > 1000
    a, b = Engine(fresh), Engine(cached)
    want = [sorted(r.id for r in a.match(ev)) for ev in events]
    got = [sorted(r.id for r in b.match(ev)) for ev in events]
    assert got == want and sum(map(len, want)) > 500
    assert not [r for r in cached.rules if "sigma" in r.__dict__]  # no rule compiled again
    assert not [f for r in cached.rules for f in r.flags if "rule cache" in f]
    assert os.listdir(tmp_path / "c" / "rules")


def test_generated_code_is_read_on_the_first_call() -> None:
    """A generated function comes back running a stand-in that unmarshals its code on the first
    call and puts it in place: the hunt runs a rule's ``Prog``, hardly ever its lambda."""
    ns: dict = {"k1": frozenset({"cmd.exe"})}
    top = eval("lambda f, low, extra=2: low.get('Image') in k1 and extra == 2", ns)  # noqa: S307
    data = predpickle.dumps(top, {})
    assert len(predpickle.dumps(predpickle.loads(data), {})) == len(data)  # uncalled: stored alike
    back = predpickle.loads(data)
    assert back.__code__ is predpickle._trampoline.__code__
    assert back.__name__ == back.__qualname__ == "<lambda>" and back.__globals__["k1"] == ns["k1"]
    assert back({}, {"Image": "cmd.exe"}) and not back({}, {"Image": "a"})
    assert back.__code__ is not predpickle._trampoline.__code__
    assert back.__code__.co_code == top.__code__.co_code
    assert back.__defaults__ == (2,) and back.__kwdefaults__ is None
    assert not back({}, {"Image": "cmd.exe"}, 3)


def test_a_stored_regex_is_compiled_when_a_value_first_passes_its_prechecks() -> None:
    """The RE2 matcher from the cache keeps its prechecks and compiles its regex only when a
    value passes them: most regexes of a hunt's predicates never see one."""
    m = re2_searcher(r"\\psexe(c|svc)\.exe$", "i")
    back = _roundtrip(m)

    def compiled():
        cells = dict(zip(back.__code__.co_freevars, (c.cell_contents for c in back.__closure__), strict=True))
        return cells["compiled"]

    assert back.needs == m.needs and back.min_len == m.min_len
    assert back.needs == (".", "\\") and back.min_len == 11
    assert not back("short.exe") and not back("C:/Windows/system32/cmd.exe")  # too short; no "\\"
    assert compiled() is None
    for v in (r"C:\Windows\PSEXESVC.exe", r"C:\psexec.exe", "psexec.exe", r"C:\psexec.exe.bak",
              "C:\\psexec.exe\n", "C:\\other.exe"):
        assert back(v) == m(v)
    assert compiled() is not None
    again = _roundtrip(back)
    assert again(r"C:\psexec.exe") and not again("psexec.exe")
