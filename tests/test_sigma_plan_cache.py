"""A bucket's static atom plan is cached on disk: reused while its rules are unchanged, planned
again when a rule is edited, when the stored plan is damaged or does not fit, and when the cache
cannot be written."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest

from engine_pairs import SYSMON, brute, tool_rules
from scmwatch.sigma import index, plancache, tagged
from scmwatch.sigma.ruleset import load_rules

pytestmark = pytest.mark.skipif(index.hyperscan is None, reason="Hyperscan is not installed")




def _events() -> list[dict]:
    return [{"Channel": SYSMON[0], "EventID": 1, "Image": f"C:\\bin\\tool{i % 7}.exe",
             "CommandLine": f"tool{i % 7} {'--run' if i % 3 else '--walk'} -x{i % 6} "} for i in range(40)]


def _plans(root: Path) -> list[Path]:
    return sorted((root / "plans").glob("*.plan"))


def _engine_plan(rules: Path):
    """The static plan an atom engine's Sysmon process-creation bucket takes, and whether its
    matches equal brute force."""
    rs = load_rules(rules)
    engine = index.Engine(rs, hyperscan_after=0, atoms=True)
    literal = index.Engine(rs, use_hyperscan=False)
    same = all([r.id for r in engine.match_fields(f)] == brute(literal, f) for f in _events())
    return engine.bucket(*SYSMON).atoms, same


def test_plan_is_stored_then_read_not_planned_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, same = _engine_plan(rules)
    assert first is not None and same
    (stored,) = _plans(tmp_path / "c")

    def no_planning(*a, **k):
        raise AssertionError("planned again")

    monkeypatch.setattr(index, "plan", no_planning)
    again, same = _engine_plan(rules)
    assert again == first and same
    assert _plans(tmp_path / "c") == [stored]


def test_edited_rule_gets_a_plan_of_its_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, _ = _engine_plan(rules)
    tool_rules(rules, needle="--walk")
    edited, same = _engine_plan(rules)
    assert same and edited.patterns != first.patterns
    assert len(_plans(tmp_path / "c")) == 2


FIELDS = ("index", "rest", "patterns", "pattern_gates", "always", "need", "ascii_only")


def _stored(body: bytes) -> tuple[str, dict]:
    """A stored plan's database name and its fields, made mutable (lists for tuples)."""
    name, p = marshal.loads(body)
    doc = dict(zip(FIELDS, p, strict=True))
    doc.update(patterns=list(doc["patterns"]), pattern_gates=[list(g) for g in doc["pattern_gates"]],
               always=list(doc["always"]), need=list(doc["need"]),
               ascii_only=[[x, list(us)] for x, us in doc["ascii_only"]])
    return name, doc


def _body(name: str, doc: dict) -> bytes:
    """:func:`_stored` undone: the plan as ``write_plan`` lays it out, tuples again."""
    p = (doc["index"], doc["rest"], tuple(doc["patterns"]), tuple(map(tuple, doc["pattern_gates"])),
         tuple(doc["always"]), tuple(doc["need"]), tuple((x, tuple(us)) for x, us in doc["ascii_only"]))
    return marshal.dumps((name, p))


# well-formed, checksum right, but a gate id, position or count the bucket cannot have
MISFITS = {
    "gate_unit": lambda p: p["pattern_gates"][0].append(99 << tagged.GATE_BITS),
    "gate_negative": lambda p: p["pattern_gates"][-1].append(-1),
    "need_bool": lambda p: p["need"].__setitem__(0, True),
    "gate_float": lambda p: p["pattern_gates"][0].__setitem__(0, 0.0),
    "ascii_name": lambda p: p["ascii_only"].append([7, [0]]),
    "rest_text": lambda p: p.__setitem__("rest", "-1"),
    "positions": lambda p: p["always"].append(99),
    "pattern_bytes": lambda p: p["patterns"].__setitem__(0, p["patterns"][0].encode()),
    "index_value": lambda p: p["index"].__setitem__("Image", "1"),
}


@pytest.mark.parametrize("damage", [b"", b"\x00not marshal", marshal.dumps(("", {"index": 3})),
                                    marshal.dumps((7, None)), marshal.dumps(("", (1, 2))), "pattern",
                                    "old_format", *MISFITS])
def test_damaged_or_misfit_plan_is_planned_again_and_rewritten(tmp_path: Path, monkeypatch, damage) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, _ = _engine_plan(rules)
    (stored,) = _plans(tmp_path / "c")
    good = stored.read_bytes()
    head, body = good.split(b"\n", 1)
    assert marshal.loads(_body(*_stored(body))) == marshal.loads(body)  # laid out as stored
    if damage == "pattern":  # one byte of a pattern altered: the checksum catches it
        damage = head + b"\n" + body.replace(b"x7", b"x6", 1)
    elif damage == "old_format":  # the same body under another format's header, checksum right
        damage = plancache._header(body, "scmwatch-plan-1") + b"\n" + body
    elif damage in MISFITS:
        name, doc = _stored(body)
        MISFITS[damage](doc)
        body = _body(name, doc)
        damage = plancache._header(body, plancache.PLAN_FORMAT) + b"\n" + body
    elif damage:
        damage = plancache._header(damage, plancache.PLAN_FORMAT) + b"\n" + damage
    assert damage != good
    stored.write_bytes(damage)
    again, same = _engine_plan(rules)
    assert again == first and same
    assert stored.read_bytes() == good


@pytest.mark.parametrize("stale", [False, True])
def test_atom_database_found_by_the_stored_name(tmp_path: Path, monkeypatch, stale: bool) -> None:
    """A stored plan names its patterns' Hyperscan database, so a warm start finds it without
    hashing the patterns; a name that finds nothing (another Hyperscan version's) falls back to
    the name worked out."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, _ = _engine_plan(rules)  # plans, compiles and stores the atom database
    (stored,) = _plans(tmp_path / "c")
    name, doc = _stored(stored.read_bytes().split(b"\n", 1)[1])
    assert name == index._db_name(list(first.patterns), True)
    if stale:
        body = _body("0" * 64, doc)
        stored.write_bytes(plancache._header(body, plancache.PLAN_FORMAT) + b"\n" + body)
    rs = load_rules(rules)
    named = []
    db_name = index._db_name
    monkeypatch.setattr(index, "_db_name", lambda lits, regex: named.append(regex) or db_name(lits, regex))
    engine = index.Engine(rs, atoms=True)  # warm start: every database cached
    b = engine.bucket(*SYSMON)
    assert b.atoms == first and b.upgrade_in == -1
    assert named.count(True) == stale
    literal = index.Engine(rs, use_hyperscan=False)
    assert all([r.id for r in engine.match_fields(f)] == brute(literal, f) for f in _events())


def test_repeated_gates_are_stored_once(tmp_path: Path, monkeypatch) -> None:
    """Equal gate tuples of a stored plan or layout come back as one object (``marshal``
    references repeats): what makes reading the plans and layouts of all SigmaHQ cheap."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    gates = tuple(tuple([g]) for g in (0, 4, 0, 0, 5))  # five objects, three values
    p = tagged.Plan(index={"Image": 0}, rest=1, patterns=("a", "b", "c", "d", "e"), pattern_gates=gates,
                    always=(), need=(1, 1))
    plancache.write_plan("k", p, "name")
    got, name = plancache.read_plan("k", 2)
    assert got == p and name == "name"
    assert len({id(g) for g in got.pattern_gates}) == 3
    lay = plancache.Layout((), (1, 1), True, ("a", "b", "c"), tuple(tuple([i]) for i in (0, 1, 1)), None, (),
                           None, "")
    plancache.write_layout("k", lay)
    got = plancache.read_layout("k", 2)
    assert got == lay and len({id(us) for us in got.lit_units}) == 2


def test_unwritable_or_disabled_cache_still_plans(tmp_path: Path, monkeypatch) -> None:
    rules = tool_rules(tmp_path / "r")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(blocker))
    plan, same = _engine_plan(rules)
    assert plan is not None and same
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    plan, same = _engine_plan(rules)
    assert plan is not None and same


def test_read_only_plan_directory_is_ignored(tmp_path: Path, monkeypatch) -> None:
    if os.getuid() == 0:
        pytest.skip("root writes into a read-only directory")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    (tmp_path / "c" / "plans").mkdir(parents=True)
    (tmp_path / "c" / "plans").chmod(0o500)
    plan, same = _engine_plan(tool_rules(tmp_path / "r"))
    assert plan is not None and same and not _plans(tmp_path / "c")


def test_units_of_no_cache_entry_have_no_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    rs = load_rules(tool_rules(tmp_path / "r"))
    units = index.Engine(rs).bucket(*SYSMON).units
    assert units and plancache.plan_key(units) is None
    assert tagged.plan(units) is not None
