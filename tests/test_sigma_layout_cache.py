"""A bucket's literal-prefilter layout is cached beside its plan: read back while its rules are
unchanged (not laid out again), laid out again when a rule is edited, when the stored layout is
damaged or does not fit, when a unit is already known never to match, and when the cache cannot
be written."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest

from engine_pairs import SYSMON, brute, tool_rules
from scmwatch.sigma import index, plancache
from scmwatch.sigma.ruleset import load_rules

EVENTS = [{"Channel": SYSMON[0], "EventID": 1, "Image": f"C:\\bin\\tool{i % 7}.exe",
           "CommandLine": f"tool{i % 7} {'--run' if i % 3 else '--walk'} -x{i % 6} "} for i in range(40)]


def _layouts(root: Path) -> list[Path]:
    return sorted((root / "plans").glob("*.layout"))


def _shape(b: index.Bucket) -> tuple:
    return b.always, b.need, b.single_gate, b.literals, b.lit_units, b.text_fields, b.text_skip, b.anchors


def _bucket(rules: Path) -> tuple[tuple, bool]:
    """The layout of a fresh engine's Sysmon process-creation bucket, and whether its matches
    equal brute force on EVENTS."""
    rs = load_rules(rules)
    engine = index.Engine(rs)
    literal = index.Engine(rs, use_hyperscan=False)
    same = all([r.id for r in engine.match_fields(f)] == brute(literal, f) for f in EVENTS)
    return _shape(engine.bucket(*SYSMON)), same


def test_layout_is_stored_then_read_not_laid_out_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, same = _bucket(rules)
    assert same and first[3]  # literals: a prefilter to lay out
    (stored,) = _layouts(tmp_path / "c")
    body = stored.read_bytes()

    def no_layout(*a, **k):
        raise AssertionError("laid out again")

    monkeypatch.setattr(index, "layout", no_layout)
    again, same = _bucket(rules)
    assert again == first and same
    assert _layouts(tmp_path / "c") == [stored] and stored.read_bytes() == body


def test_edited_rule_gets_a_layout_of_its_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, _ = _bucket(rules)
    rule = rules / "t0.yml"
    rule.write_text(rule.read_text(encoding="utf-8").replace("tool0.exe", "tool9.exe"), encoding="utf-8")
    edited, same = _bucket(rules)
    assert same and "\\tool9.exe" in edited[3] and "\\tool0.exe" not in edited[3]
    assert "\\tool0.exe" in first[3]
    assert len(_layouts(tmp_path / "c")) == 2


def _resealed(body: bytes) -> bytes:
    return plancache._header(body, plancache.LAYOUT_FORMAT) + b"\n" + body


def _altered(fields: tuple, i: int, value: object) -> bytes:
    return _resealed(marshal.dumps(fields[:i] + (value,) + fields[i + 1:]))


def _first(seq: tuple, value: object) -> tuple:
    return (value, *seq[1:])


# checksum right, lengths right, but not a layout this bucket can have: (field index, new value
# from the stored fields)
MISFITS = {
    "always_beyond": (0, lambda f: (99,)),
    "always_negative": (0, lambda f: (-1,)),
    "need_short": (1, lambda f: f[1][1:]),
    "need_too_many_gates": (1, lambda f: _first(f[1], 4)),
    "need_text": (1, lambda f: _first(f[1], "1")),
    "single_gate_int": (2, lambda f: 1),
    "literal_bytes": (3, lambda f: _first(f[3], b"x")),
    "literals_short": (3, lambda f: f[3][1:]),
    "gate_beyond": (4, lambda f: _first(f[4], (99,))),
    "gate_negative": (4, lambda f: _first(f[4], (-1,))),
    "gate_float": (4, lambda f: _first(f[4], (0.0,))),
    "gate_text": (4, lambda f: _first(f[4], ("0",))),
    "gates_not_tuples": (4, lambda f: _first(f[4], [0])),
    "field_int": (6, lambda f: (1,)),
}


@pytest.mark.parametrize("damage", ["empty", "truncated", "byte", "not_marshal", "short_tuple", *MISFITS])
def test_damaged_or_misfit_layout_is_laid_out_again(tmp_path: Path, monkeypatch, damage) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, _ = _bucket(rules)
    (stored,) = _layouts(tmp_path / "c")
    good = stored.read_bytes()
    head, body = good.split(b"\n", 1)
    fields = marshal.loads(body)
    if damage == "empty":
        bad = b""
    elif damage == "truncated":
        bad = good[:-3]
    elif damage == "byte":  # one byte of a literal altered: the checksum catches it
        bad = head + b"\n" + body.replace(b"tool", b"tooL", 1)
    elif damage == "not_marshal":
        bad = _resealed(b"\xff\x00 no")
    elif damage == "short_tuple":
        bad = _resealed(marshal.dumps(fields[:-1]))
    else:
        i, new = MISFITS[damage]
        bad = _altered(fields, i, new(fields))
    assert bad != good
    stored.write_bytes(bad)
    again, same = _bucket(rules)
    assert again == first and same
    assert stored.read_bytes() == good


def test_unit_known_never_to_match_is_left_out_and_not_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, _ = _bucket(rules)
    (stored,) = _layouts(tmp_path / "c")
    good = stored.read_bytes()
    rs = load_rules(rules)
    units = [u for r in rs.rules for u in r.units]
    units[0].pred, units[0].unread = False, False  # read, and never matches
    b = index.Engine(rs).bucket(*SYSMON)
    gone = b.units.index(units[0])
    assert b.need[gone] == 0 and gone not in b.always
    assert all(gone not in us for us in b.lit_units)
    assert _shape(b) != first and stored.read_bytes() == good


def test_unwritable_or_disabled_cache_still_lays_out(tmp_path: Path, monkeypatch) -> None:
    rules = tool_rules(tmp_path / "r")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    expected, _ = _bucket(rules)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(blocker))
    shape, same = _bucket(rules)
    assert shape == expected and same
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    shape, same = _bucket(rules)
    assert shape == expected and same


def test_read_only_plan_directory_is_ignored(tmp_path: Path, monkeypatch) -> None:
    if os.getuid() == 0:
        pytest.skip("root writes into a read-only directory")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    (tmp_path / "c" / "plans").mkdir(parents=True)
    (tmp_path / "c" / "plans").chmod(0o500)
    shape, same = _bucket(tool_rules(tmp_path / "r"))
    assert shape[3] and same and not _layouts(tmp_path / "c")


@pytest.mark.skipif(index.hyperscan is None, reason="Hyperscan is not installed")
@pytest.mark.parametrize("stale", [False, True])
def test_literal_database_found_by_the_stored_name(tmp_path: Path, monkeypatch, stale: bool) -> None:
    """A cached layout names its literals' database, so it is found without hashing them; a name
    that finds nothing (another Hyperscan version's) falls back to the name worked out."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rs = load_rules(tool_rules(tmp_path / "r"))
    index.Engine(rs, hyperscan_after=0).bucket(*SYSMON)  # compiles and stores the literal database
    (stored,) = _layouts(tmp_path / "c")
    fields = marshal.loads(stored.read_bytes().split(b"\n", 1)[1])
    assert fields[-1] == index._db_name(list(fields[3]), False)
    if stale:
        stored.write_bytes(_altered(fields, len(fields) - 1, "0" * 64))
    named = []
    db_name = index._db_name
    monkeypatch.setattr(index, "_db_name", lambda lits, regex: named.append(regex) or db_name(lits, regex))
    b = index.Engine(rs).bucket(*SYSMON)
    assert b.scan.scan_db is not None  # the cached database, no automaton
    assert named.count(False) == stale
    literal = index.Engine(rs, use_hyperscan=False)
    assert all([r.id for r in index.Engine(rs).match_fields(f)] == brute(literal, f) for f in EVENTS)
