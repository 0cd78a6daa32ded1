"""A rule's condition run in C (``sigma/_prog.c``) against its generated Python predicate.

Differential: every SigmaHQ rule's ``Prog`` must answer what its lambda answers, on the attack
corpus events and on events made from the rule's own strings with hostile twists (case
folding that changes length or is not ASCII: 'İ', 'ß', 'ſ', the Kelvin sign; empty, huge,
None, numbers, lists, missing fields). The Python predicate is the twin that
``SCMWATCH_PURE_PYTHON=1`` runs.
"""

from __future__ import annotations

import random
import textwrap

import pytest

from paths import ATTACK_SAMPLES, SIGMAHQ
from scmwatch.events.model import ReadStats
from scmwatch.events.read import discover, read_input
from scmwatch.sigma import compile as sigma_compile
from scmwatch.sigma import load_rules
from scmwatch.sigma.compile import PROG_KEY, Low, _slow, compile_condition
from scmwatch.sigma.ruleset import hot_predicates

_prog = pytest.importorskip("scmwatch.sigma._prog")
Prog = _prog.Prog

RULE_DIRS = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
TWISTS = ["İ", "ß", "ẞ", "ſ", "K", "ı", "é", "\u0307", "😀", "\x00", " ", "\\", "*"]


def _rule_file(tmp_path, detection: str):
    """A process-creation rule with ``detection`` (YAML, any indentation), written to a file."""
    path = tmp_path / "r.yml"
    path.write_text(textwrap.dedent("""\
        title: t
        id: 6f0f9f4e-3a3c-4c0e-9a59-0d6c2a1b7e11
        status: test
        logsource: {product: windows, category: process_creation}
        detection:
        """) + textwrap.indent(textwrap.dedent(detection), "    "), encoding="utf-8")
    return path


def _trees(tmp_path, detection: str):
    rs = load_rules([_rule_file(tmp_path, detection)])
    assert not rs.rejected, rs.rejected
    (rule,) = rs.rules
    return rule.sigma.detection.parsed_condition


def _compiled(tmp_path, detection: str):
    trees = [c.parsed for c in _trees(tmp_path, detection)]
    pred = compile_condition(trees).pred
    return pred, Prog(pred.__globals__[PROG_KEY], pred.__globals__, _slow)


def _agree(pred, prog, f: dict) -> bool:
    want = bool(pred(f, Low(f)))
    assert prog(f, Low(f)) is want, f
    return want


def _needles(ns: dict) -> dict[str, set[str]]:
    """Field -> the strings a program text tests it with (both fields of a fieldref)."""
    out: dict[str, set[str]] = {}
    for token in ns[PROG_KEY].split():
        if token[0] not in "cfnzer":
            continue
        numbers = token[1:].split(",")
        if token[0] == "e":
            numbers = numbers[:1]  # then the presence asked for
        elif token[0] == "r":
            numbers = numbers[:2]  # then the test, the predicate and the least length
        keys = [ns[f"k{k}"] if k != "0" else None for k in numbers]
        if token[0] == "r":  # the substrings every match holds, as written: near misses from them
            out.setdefault(keys[0], set()).update(keys[1] or ())
        elif token[0] == "c":
            strings = out.setdefault(keys[0], set())
            for x in keys[1:5]:
                if x is not None:
                    strings.update([x] if isinstance(x, str) else x)
        elif token[0] == "n":
            out.setdefault(keys[0], set()).update(str(n) for n in keys[1])
        else:
            out.setdefault(keys[0], set())
            if token[0] == "f":
                out.setdefault(keys[1], set())
    return out


def _hostile(rng: random.Random, needles: list[str]) -> object:
    n = rng.choice(needles) if needles else "x"
    twist = rng.choice(TWISTS)
    if n.lstrip("-").isdigit() and rng.random() < 0.5:  # a number's value: as int, float, text ...
        return rng.choice([int(n), float(n), int(n) + 1, n, " " + n, "0" + n, [n], [int(n)], True, None])
    return rng.choice([
        n, n.upper(), n.title(), n.swapcase(), "pre" + n + "post", n[1:], n[:-1], twist + n, n + twist,
        n.replace("i", "İ"), n.replace("s", "ſ"), n.replace("ss", "ß"), n.replace("k", "K"), n.upper() * 50,
        "", None, 4688, 1.5, True, [n, "x"], [twist], twist,
    ])


def test_prog_matches_lambda_on_hostile_values(tmp_path):
    pred, prog = _compiled(tmp_path, """\
        sel:
            Image|endswith: ['\\\\cmd.exe', '\\\\pwsh.exe']
            CommandLine|contains|all: ['-enc', 'İx']
        alt:
            ParentImage|startswith: 'c:\\\\straße\\\\'
            User: ['SYSTEM', 'nt authority\\\\system']
        dash:
            CommandLine|windash|contains: ' -exec bypass'
        same:
            ParentImage|fieldref: Image
        filter:
            OriginalFileName: null
        condition: (sel or alt or dash or same) and not filter
        """)
    assert pred.__globals__[PROG_KEY].startswith("&")
    rng = random.Random(13)
    needles = ["\\cmd.exe", "\\pwsh.exe", "-enc", "İx", "c:\\straße\\", "system", " -exec bypass",
               " /exec bypass"]
    fields = ["Image", "CommandLine", "ParentImage", "User", "OriginalFileName"]
    hits = 0
    for _ in range(3000):
        f = {k: _hostile(rng, needles) for k in fields if rng.random() < 0.85}
        hits += _agree(pred, prog, f)
    assert 50 < hits < 2950
    for f in ({"Image": "C:\\X\\CMD.EXE", "CommandLine": "A -ENC İX", "OriginalFileName": "cmd.exe"},
              {"Image": "C:\\X\\CMD.EXE", "CommandLine": "a -enc i̇x", "OriginalFileName": "x"},
              {"ParentImage": "C:\\STRASSE\\a", "User": "system", "OriginalFileName": "y"},
              {"ParentImage": "C:\\STRAẞE\\a", "User": "SYSTEM", "OriginalFileName": "y"},
              {"CommandLine": "x \u2013exec bypass", "OriginalFileName": "y"},
              {"Image": "A", "ParentImage": "a", "OriginalFileName": "y"},
              {"Image": "A", "ParentImage": "a", "OriginalFileName": ""}):
        _agree(pred, prog, f)


def test_prog_string_tests_are_exact(tmp_path):
    """Positives and near misses of each native test, answered by C and by Python alike."""
    pred, prog = _compiled(tmp_path, """\
        a:
            Image|endswith: '\\\\evil.exe'
        b:
            CommandLine|startswith: 'whoami'
        c:
            Product: 'ß'
        d:
            Description|contains: 'κόσμε'
        condition: 1 of them
        """)
    assert _agree(pred, prog, {"Image": "C:\\EVIL.exe"})
    assert not _agree(pred, prog, {"Image": "C:\\EVIL.exe "})
    assert _agree(pred, prog, {"CommandLine": "WhoAmI /all"})
    assert not _agree(pred, prog, {"CommandLine": " whoami"})
    assert _agree(pred, prog, {"Product": "ß"})
    assert not _agree(pred, prog, {"Product": "ẞ"}) or "ẞ".lower() == "ß"
    assert _agree(pred, prog, {"Description": "ΚΌΣΜΕ"})
    assert not _agree(pred, prog, {"Description": "kosme"})
    assert _agree(pred, prog, {"Image": ["x", "c:\\evil.exe"]})  # a list: any of its items
    assert not _agree(pred, prog, {"Image": None})
    assert not _agree(pred, prog, {})


def test_prog_calls_python_for_regex_and_numbers(tmp_path):
    pred, prog = _compiled(tmp_path, """\
        sel:
            CommandLine|contains: 'net '
            CommandLine|re: 'user\\s+/add'
        num:
            LogonType: 3
        condition: sel or num
        """)
    assert _agree(pred, prog, {"CommandLine": "NET user  /add"})
    assert not _agree(pred, prog, {"CommandLine": "NET USER /ADD"})  # re is case-sensitive
    assert _agree(pred, prog, {"LogonType": "3"})
    assert not _agree(pred, prog, {"LogonType": "03"})


def test_prog_regex_checks_run_in_c(tmp_path):
    """A ``|re`` node makes the test's length and substring checks in C: a value they turn away
    never calls the Python test, and every other answer is the test's."""
    pred, prog = _compiled(tmp_path, """\
        sel:
            CommandLine|re: 'user\\s+/add'
        ci:
            ParentCommandLine|re|i: '^whoami /(all|priv)$'
        condition: sel or ci
        """)
    ns = dict(pred.__globals__)
    tokens = [t for t in ns[PROG_KEY].split() if t[0] == "r"]
    assert len(tokens) == 2
    calls = []
    for t in tokens:
        key = f"k{t[1:].split(',')[2]}"
        test = ns[key]
        assert test.needs and test.min_len > 0
        ns[key] = lambda v, test=test: calls.append(v) or test(v)
    counted = Prog(ns[PROG_KEY], ns, _slow)
    turned_away = [{"CommandLine": "net user x"}, {"CommandLine": "u/add"}, {"CommandLine": ""},
                   {"CommandLine": "NET USER /ADD"},  # a case-sensitive regex needs its letters
                   {"ParentCommandLine": "whoami"}, {"ParentCommandLine": "WHOAMI ALL"}, {}]
    for f in turned_away:
        assert counted(f, Low(f)) is False
        _agree(pred, prog, f)
    assert calls == []
    reached = [{"CommandLine": "net user bob /add"}, {"CommandLine": "user /addx"},
               {"ParentCommandLine": "WhoAmI /PRIV"}, {"ParentCommandLine": "whoami /all\n"},
               {"ParentCommandLine": "whoami /allx"}]
    for f in reached:
        assert counted(f, Low(f)) is _agree(pred, prog, f)
    assert len(calls) == len(reached)
    assert [_agree(pred, prog, f) for f in reached] == [False, True, True, True, False]
    for v in (["x", "user  /add"], ["user /ad"], 7, None, True, "user\t/add", "user /add" * 1000,
              "İuser /add", "user /add\x00", "whoami /all", "\u0130whoami /all"):
        for f in ({"CommandLine": v}, {"ParentCommandLine": v}):
            _agree(pred, prog, f)


def test_prog_string_tests_on_bools_stay_in_c(tmp_path):
    """A bool value is tested as its text ("true" / "false") in C, without the Python ``slow``
    path; any other value that is not a str still takes it, and C answers as Python does."""
    pred, prog = _compiled(tmp_path, """\
        sel:
            Initiated: 'true'
        alt:
            SourceIsIpv6|contains: ['als', 'x']
        condition: sel or alt
        """)
    ns = pred.__globals__
    calls = []

    def slow(v, test):
        calls.append(v)
        return _slow(v, test)

    counted = Prog(ns[PROG_KEY], ns, slow)
    for f, want in (({"Initiated": True}, True), ({"Initiated": False}, False),
                    ({"Initiated": False, "SourceIsIpv6": False}, True), ({"SourceIsIpv6": True}, False)):
        assert counted(f, Low(f)) is want
        assert _agree(pred, prog, f) is want
    assert calls == []
    for v in (1, 0, 1.0, [True], ["TRUE"], None, {"a": 1}):
        f = {"Initiated": v, "SourceIsIpv6": v}
        assert counted(f, Low(f)) is _agree(pred, prog, f)
    assert len(calls) == 14 and not any(isinstance(v, bool) for v in calls)  # two tests each


def test_prog_numbers_null_exists(tmp_path):
    """Number sets, ``null`` and ``|exists`` run in C: every kind of value answers as in Python."""
    pred, prog = _compiled(tmp_path, """\
        sel:
            LogonType: [3, 10]
            TargetUserName|exists: true
        nul:
            SubjectUserName: null
        gone:
            IpAddress|exists: false
        condition: sel or (nul and gone)
        """)
    assert {t[0] for t in pred.__globals__[PROG_KEY].split()} >= {"n", "z", "e"}
    values = [3, 10, 4, 3.0, "3", "03", " 3", "10", True, False, None, "", [3], ["x", "10"], [], 0, "x",
              {"a": 1}, 2**70]
    hits = 0
    for lt in values:
        for name in values[:4] + ["Administrator", "", None]:
            for f in ({"LogonType": lt, "TargetUserName": name}, {"LogonType": lt},
                      {"SubjectUserName": name}, {"SubjectUserName": lt, "IpAddress": name},
                      {"LogonType": lt, "SubjectUserName": name, "TargetUserName": lt}):
                hits += _agree(pred, prog, f)
    assert _agree(pred, prog, {"LogonType": 10, "TargetUserName": None})
    assert not _agree(pred, prog, {"LogonType": "03", "TargetUserName": "a", "SubjectUserName": "x"})
    assert _agree(pred, prog, {"SubjectUserName": ""})
    assert not _agree(pred, prog, {"SubjectUserName": "", "IpAddress": None})
    assert 20 < hits < 600


def test_prog_rejects_malformed_texts():
    ns = {"k1": "Image", "k2": ("\\x.exe",), "k3": str.isascii, "k4": 3, "k5": (1,)}
    assert Prog("c1,0,0,2,0,3,1", ns, _slow)({"Image": "A\\X.EXE"}, Low({"Image": "A\\X.EXE"})) is True
    assert Prog("r1,2,3,3,7", ns, _slow)({"Image": "a\\x.exe"}, Low({})) is True
    assert Prog("r1,2,3,3,8", ns, _slow)({"Image": "a\\x.exe"}, Low({})) is False  # shorter than 8
    for bad in ["", "&", "&2 p3", "c1,0,0,2,0,3", "c1,0,0,5,0,3,1", "c1,0,0,2,0,0,1", "p4", "p9", "?1",
                "p3 p3", "p3p3", "!", "f1,2,3", "&1  p3 x", "c1,0,0,2,0,3,1,", "p99999999999", "z3", "z1,2",
                "e1", "n1,2,3", "n1,5,3", "e3,1", "r1,2,3,3", "r1,4,3,3,0", "r1,0,4,3,0", "r4,0,3,3,0",
                "r1,5,3,3,0", "r1,2,3,3,-1"]:
        with pytest.raises(ValueError):
            Prog(bad, ns, _slow)
    with pytest.raises(TypeError):
        Prog("p3", ns, 3)
    with pytest.raises(TypeError):
        Prog("p3", (), _slow)


def test_hot_loop_runs_progs(tmp_path):
    """An index's predicates are Progs where C is on (the feature), lambdas in pure Python."""
    path = _rule_file(tmp_path, """\
        sel: {Image|endswith: '\\\\x.exe'}
        condition: sel
        """)
    units = [u for r in load_rules([path]).rules for u in r.units]
    preds = hot_predicates(units)
    kinds = {type(p) for p in preds}
    assert kinds == ({Prog} if sigma_compile.Prog is not None else {type(_slow)})
    f = {"Image": "C:\\X.EXE", "NewProcessName": "C:\\X.EXE"}  # Sysmon's and Security 4688's field
    assert len(preds) == 2 and all(p(f, Low(f)) for p in preds)


@pytest.fixture(scope="module")
def sigmahq():
    if not (SIGMAHQ / "rules").is_dir():
        pytest.skip("../shared/corpora/sigmahq absent")
    return load_rules([SIGMAHQ / d for d in RULE_DIRS])


@pytest.fixture(scope="module")
def attack_events() -> list[dict]:
    """The attack corpus's events as field dicts (none when it is absent)."""
    if not ATTACK_SAMPLES.is_dir():
        return []
    stats = ReadStats()
    return [ev.fields for inp in discover([str(ATTACK_SAMPLES)], stats) for ev in read_input(inp, stats)]


def _made_events(rng: random.Random, ns: dict, n: int) -> list[dict]:
    """``n`` hostile events made from a program's own strings (each field present 9 times in 10)."""
    fields = _needles(ns)
    return [{k: _hostile(rng, sorted(v)) for k, v in fields.items() if rng.random() < 0.9} for _ in range(n)]


def test_every_sigmahq_prog_matches_its_lambda(sigmahq, attack_events):
    """All SigmaHQ rules: C and Python agree on the attack corpus and on hostile events made
    from each rule's own strings."""
    rng = random.Random(2026)
    progs = checked = hits = 0
    for rule in sigmahq.rules:
        for u in rule.units:
            pred = u.pred
            ns = getattr(pred, "__globals__", {})
            if PROG_KEY not in ns:
                continue
            progs += 1
            prog = Prog(ns[PROG_KEY], ns, _slow)
            for f in attack_events[progs % 17::97] + _made_events(rng, ns, 24):
                want = bool(pred(f, Low(f)))
                assert prog(f, Low(f)) is want, (rule.path, f)
                hits += want
                checked += 1
    assert progs > 3500
    assert hits > 1000, hits  # the made events reach the positive paths too
    assert checked > 100_000


def test_prog_field_names_are_interned():
    """The readers intern every field name, so a program's lookups meet the event's own key
    object; a field name the program is given becomes the interned one."""
    import sys

    field = "".join(["Scm", "Prog", "Field"])  # made at run time: not interned yet
    ns = {"k1": field, "k2": ("\\x.exe",), "k3": str.isascii}
    prog = Prog("c1,0,0,2,0,3,1", ns, _slow)
    assert sys.intern("".join(["ScmProg", "Field"])) is field
    event = {sys.intern("".join(["Scm", "ProgField"])): "A\\X.EXE"}
    assert prog(event, Low(event)) is True


def test_every_sigmahq_program_from_the_cache_matches_its_lambda(sigmahq, attack_events):
    """All SigmaHQ rules from the rule cache: the ``Prog`` a bucket makes from a unit's stored
    program parts (``ruleset.lite_program``: its Python tests read with the predicate on their
    first call) answers what the freshly compiled lambda answers, on attack-corpus events and on
    hostile events made from the rule's own strings; most answer without reading the predicate."""
    from scmwatch.sigma.ruleset import lite_program

    if sigma_compile.Prog is None:
        pytest.skip("no C extensions: programs are not made")
    cached = load_rules([SIGMAHQ / d for d in RULE_DIRS])  # the fixture's load stored the entry
    assert all("_source" in r.__dict__ for r in cached.rules)
    assert [r.id for r in cached.rules] == [r.id for r in sigmahq.rules]
    rng = random.Random(2027)
    progs = checked = unread = 0
    for fresh, rule in zip(sigmahq.rules, cached.rules, strict=True):
        for fu, u in zip(fresh.units, rule.units, strict=True):
            pred = fu.pred
            ns = getattr(pred, "__globals__", {})
            if PROG_KEY not in ns:
                continue
            progs += 1
            preds: list = [None]
            prog = lite_program(u, preds, 0)
            assert type(prog) is Prog and preds == [None], rule.path
            for f in attack_events[progs % 29::211] + _made_events(rng, ns, 6):
                want = bool(pred(f, Low(f)))
                run = prog if preds[0] is None else preds[0]  # the predicate's own, once read
                assert run(f, Low(f)) is want, (rule.path, f)
                checked += 1
            unread += u.unread
    assert progs > 3500 and checked > 25_000
    assert unread > progs // 10, (unread, progs)  # C alone answered all of these (863 of 4,102)
