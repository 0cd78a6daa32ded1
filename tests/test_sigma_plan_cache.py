"""A bucket's static atom plan is cached on disk: reused while its rules are unchanged, planned
again when a rule is edited, when the stored plan is damaged or does not fit, and when the cache
cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from engine_pairs import SYSMON, brute, tool_rules
from scmwatch.sigma import index, plancache, tagged
from scmwatch.sigma.ruleset import load_rules

pytestmark = pytest.mark.skipif(index.hyperscan is None, reason="Hyperscan is not installed")




def _events() -> list[dict]:
    return [{"Channel": SYSMON[0], "EventID": 1, "Image": f"C:\\bin\\tool{i % 7}.exe",
             "CommandLine": f"tool{i % 7} {'--run' if i % 3 else '--walk'} -x{i % 6} "} for i in range(40)]


def _plans(root: Path) -> list[Path]:
    return sorted((root / "plans").glob("*.json"))


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


# well-formed, checksum right, but a gate id, position or count the bucket cannot have
MISFITS = {
    "gate_unit": lambda p: p["pattern_gates"][0].append(99 << tagged.GATE_BITS),
    "gate_negative": lambda p: p["pattern_gates"][-1].append(-1),
    "need_bool": lambda p: p["need"].__setitem__(0, True),
    "gate_float": lambda p: p["pattern_gates"][0].__setitem__(0, 0.0),
    "ascii_name": lambda p: p["ascii_only"].append([7, [0]]),
    "rest_text": lambda p: p.__setitem__("rest", "-1"),
}


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"plan": {"index": 3}}', "positions", "pattern",
                                    *MISFITS])
def test_damaged_or_misfit_plan_is_planned_again_and_rewritten(tmp_path: Path, monkeypatch, damage) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tool_rules(tmp_path / "r")
    first, _ = _engine_plan(rules)
    (stored,) = _plans(tmp_path / "c")
    good = stored.read_bytes()
    head, body = good.split(b"\n", 1)
    if damage == "positions":  # well-formed, checksum right, but naming a unit the bucket lacks
        body = body.replace(b'"always":[]', b'"always":[99]')
        damage = plancache._header(body) + b"\n" + body
    elif damage == "pattern":  # one byte of a pattern altered: the checksum catches it
        damage = head + b"\n" + body.replace(b"x7", b"x6", 1)
    elif damage in MISFITS:
        doc = orjson.loads(body)
        MISFITS[damage](doc["plan"])
        body = orjson.dumps(doc)
        damage = plancache._header(body) + b"\n" + body
    elif damage.startswith(b"{"):
        damage = plancache._header(damage) + b"\n" + damage
    assert damage != good
    stored.write_bytes(damage)
    again, same = _engine_plan(rules)
    assert again == first and same
    assert stored.read_bytes() == good


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
