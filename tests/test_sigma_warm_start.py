"""A bucket whose Hyperscan databases and static plan are cached starts on them (the C path from
its first event, with the prefilter its last trials kept), buckets of the same units are one,
and none of it changes a match: cold, warm and at-once engines answer alike."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine_pairs import SYSMON, brute, tool_rules
from scmwatch.sigma import index, plancache, tagged
from scmwatch.sigma.index import Engine
from scmwatch.sigma.ruleset import load_rules

pytestmark = pytest.mark.skipif(index.hyperscan is None, reason="Hyperscan is not installed")

KEYWORD = """title: Keyword
id: 9e0b6a54-0000-4000-8000-000000000100
status: test
level: high
logsource:
  product: windows
  service: security
detection:
  keywords: ['mimikatz', 'sekurlsa::']
  condition: keywords
"""
# enough for the cold run's ramp (HS_MIN_SCANS) and both prefilters' trials to end
EVENTS = index.HS_MIN_SCANS + 2 * index.TRIALS + 20


def _events(n: int = EVENTS, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    pool = ["C:\\bin\\tool1.exe", "c:\\BIN\\TOOL2.EXE", "tool3 --run -x3 ", "x --RUN -x1 ", "", None, 7,
            ["a", "tool4 --run"], "ΣΊΣΥΦΟΣ.EXE", "a\x1eb --run -x2 "]
    return [{"Channel": SYSMON[0], "EventID": 1, "Image": rng.choice(pool), "CommandLine": rng.choice(pool),
             "ParentImage": rng.choice(pool)} for _ in range(n)]



@pytest.fixture
def rules(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    return tool_rules(tmp_path / "rules")


def _ids(engine: Engine, events: list[dict]) -> list[list[str]]:
    return [[r.id for r in engine.match_fields(f)] for f in events]


def _cold_run(rules: Path) -> list[list[str]]:
    """A first hunt: the bucket ramps to Hyperscan (compiled, stored) and times both prefilters."""
    engine = Engine(load_rules(rules))
    b = engine.bucket(*SYSMON)
    assert b.upgrade_in > 0 and b.lit_matcher is None  # nothing cached: the ramp
    got = _ids(engine, _events())
    assert b.upgrade_in == -1 and b.trials == 0
    return got


def _trial_files(rules: Path) -> list[Path]:
    return sorted((rules.parent / "cache" / "plans").glob("*.trial"))


def test_warm_bucket_takes_the_c_path_from_its_first_event(rules: Path, monkeypatch) -> None:
    cold = _cold_run(rules)
    assert len(_trial_files(rules)) == 1  # the trials' choice, for the next run
    rs = load_rules(rules)
    literal = Engine(rs, use_hyperscan=False)
    engine = Engine(rs)
    b = engine.bucket(*SYSMON)
    assert b.upgrade_in == -1 and b.trials == 0
    if index.LiteralMatcher is not None:  # with the C extension: the Python path is never taken
        assert (b.matcher if b.atom_scan is not None else b.lit_matcher) is not None

        def python_path(*a, **k):
            raise AssertionError("took the Python path")

        clean = [f for f in _events() if not any(isinstance(v, str) and "\x1e" in v for v in f.values())]
        monkeypatch.setattr(engine, "_match", python_path)
        assert _ids(engine, clean) == [brute(literal, f) for f in clean]
        assert b.seen == len(clean)  # sampled for the replan beside the C call
        monkeypatch.undo()
    warm = Engine(load_rules(rules))
    assert _ids(warm, _events()) == cold == [brute(literal, f) for f in _events()]


@pytest.mark.parametrize("atoms", [True, False])
def test_warm_bucket_keeps_the_stored_choice(rules: Path, atoms: bool, monkeypatch) -> None:
    """... and loads the atom database only when the choice is the atom prefilter."""
    _cold_run(rules)
    (stored,) = _trial_files(rules)
    key = stored.name.split(".")[0]
    plancache.write_choice(key, index.TRIAL_FLAVOUR, atoms)
    rs = load_rules(rules)
    units = Engine(rs, hyperscan_after=10**9).bucket(*SYSMON).units
    static, name = plancache.read_plan(plancache.plan_key(units), len(units))
    atom_db = index._db_name(list(static.patterns), True) + ".hsdb"
    assert name + ".hsdb" == atom_db
    loaded = []
    load = index._hs_load
    monkeypatch.setattr(index, "_hs_load", lambda path: loaded.append(Path(path).name) or load(path))
    engine = Engine(rs)
    b = engine.bucket(*SYSMON)
    assert b.upgrade_in == -1 and b.trials == 0 and (b.atom_scan is not None) == atoms
    # one database: the atoms' for the atom prefilter (the literal one waits until it is used),
    # else the literal one
    assert (atom_db in loaded) == atoms and len(loaded) == 1
    assert (b.lit_matcher is None) == (atoms or index.LiteralMatcher is None)
    literal = Engine(engine.ruleset, use_hyperscan=False)
    # events whose tagged text C can make (no \x1e in a value): the atom prefilter alone ran
    clean = [f for f in _events(200, seed=9)
             if not any(isinstance(v, str) and "\x1e" in v for v in f.values())]
    assert _ids(engine, clean) == [brute(literal, f) for f in clean]
    assert len(loaded) == 1
    # the others take the literal prefilter, which loads its database now
    assert _ids(engine, _events(200, seed=9)) == [brute(literal, f) for f in _events(200, seed=9)]
    assert len(loaded) == 2 - (not atoms)


def test_kept_atoms_load_the_literal_database_when_trials_need_it(rules: Path, monkeypatch) -> None:
    """A bucket that starts on the atom prefilter its last trials kept, its literal database not
    loaded, loads it when it times both prefilters again after choosing its gates from its
    sample (``Engine._replan``), and answers alike all along."""
    _cold_run(rules)
    (stored,) = _trial_files(rules)
    plancache.write_choice(stored.name.split(".")[0], index.TRIAL_FLAVOUR, True)
    loaded = []
    load = index._hs_load
    monkeypatch.setattr(index, "_hs_load", lambda path: loaded.append(Path(path).name) or load(path))
    rs = load_rules(rules)
    engine = Engine(rs, replan_after=40)
    b = engine.bucket(*SYSMON)
    assert b.atom_scan is not None and type(b.scan) is index._LazyScan and len(loaded) == 1
    literal = Engine(rs, use_hyperscan=False)
    events = _events(seed=11)
    replanned = []
    replan = engine._replan
    monkeypatch.setattr(engine, "_replan", lambda bucket: replanned.append(bucket.trials) or replan(bucket))
    assert _ids(engine, events) == [brute(literal, f) for f in events]
    assert replanned == [0]
    assert b.timings != ([], []) or b.trials == 0
    assert len(loaded) == 3  # the new plan's atom database and, for the trials, the literal one
    assert (b.lit_matcher is not None) == (index.LiteralMatcher is not None)


def test_kept_atoms_dropped_by_a_replan_choice_take_the_c_literal_path(rules: Path) -> None:
    """... and when its replan's stored choice is the literal prefilter, the bucket drops the
    atoms at the replan and makes its C literal path then, its answers unchanged."""
    _cold_run(rules)
    (stored,) = _trial_files(rules)
    key = stored.name.split(".")[0]
    plancache.write_choice(key, index.TRIAL_FLAVOUR, True)
    plancache.write_choice(key + index.REPLANNED, index.TRIAL_FLAVOUR, False)
    rs = load_rules(rules)
    engine = Engine(rs, replan_after=40)
    b = engine.bucket(*SYSMON)
    assert b.atom_scan is not None and b.lit_matcher is None and type(b.scan) is index._LazyScan
    literal = Engine(rs, use_hyperscan=False)
    events = _events(seed=12)
    assert _ids(engine, events) == [brute(literal, f) for f in events]
    assert b.atom_scan is None and b.trials == 0
    assert (b.lit_matcher is not None) == (index.LiteralMatcher is not None)


@pytest.mark.parametrize("damage", [b"", b"atoms", b"scmwatch-plan-1 00000000\nmaybe"])
def test_absent_or_damaged_choice_means_trials(rules: Path, damage: bytes) -> None:
    _cold_run(rules)
    (stored,) = _trial_files(rules)
    stored.write_bytes(damage)
    b = Engine(load_rules(rules)).bucket(*SYSMON)
    assert b.upgrade_in == -1 and b.trials == 2 * index.TRIALS
    stored.unlink()
    b = Engine(load_rules(rules)).bucket(*SYSMON)
    assert b.upgrade_in == -1 and b.trials == 2 * index.TRIALS


@pytest.mark.parametrize("choice", [None, False])
def test_missing_atom_database_means_the_ramp(rules: Path, choice: bool | None) -> None:
    """Compiling is what the ramp spares a rare bucket: a static plan whose atom database is
    not cached does not move the bucket at once, though its literal database is cached (also
    when its stored choice is the literal prefilter, which does not load the atom database)."""
    _cold_run(rules)
    (stored,) = _trial_files(rules)
    if choice is not None:
        plancache.write_choice(stored.name.split(".")[0], index.TRIAL_FLAVOUR, choice)
    rs = load_rules(rules)
    units = Engine(rs).bucket(*SYSMON).units
    got = plancache.read_plan(plancache.plan_key(units), len(units))
    assert got is not plancache.MISSING
    static, _ = got
    assert static.patterns
    db = rules.parent / "cache" / "hyperscan" / (index._db_name(list(static.patterns), True) + ".hsdb")
    db.unlink()
    engine = Engine(rs)
    b = engine.bucket(*SYSMON)
    assert b.upgrade_in > 0 and b.atom_scan is None and b.scan.scan_db is not None
    # its cached literal database: the C literal path on the ramp, counting its events there
    assert (b.lit_matcher is not None) == (index.LiteralMatcher is not None)
    literal = Engine(rs, use_hyperscan=False)
    assert _ids(engine, _events()) == [brute(literal, f) for f in _events()]
    assert b.upgrade_in == -1 and db.exists()  # moved on, and compiled the atom database


def test_told_when_to_move_no_warm_start(rules: Path) -> None:
    _cold_run(rules)
    rs = load_rules(rules)
    assert Engine(rs, hyperscan_after=50).bucket(*SYSMON).upgrade_in == 50
    assert Engine(rs, replan_after=0).bucket(*SYSMON).upgrade_in > 0  # gates from this run's events
    assert Engine(rs, atoms=False).bucket(*SYSMON).upgrade_in == -1


def test_pairs_of_the_same_units_share_one_bucket(tmp_path: Path) -> None:
    (tmp_path / "k.yml").write_text(KEYWORD, encoding="utf-8")
    (tmp_path / "l.yml").write_text(KEYWORD.replace("000000000100", "000000000101")
                                    .replace("keywords: ['mimikatz', 'sekurlsa::']",
                                             "sel:\n    EventID: 4688\n    CommandLine|contains: psexec")
                                    .replace("condition: keywords", "condition: sel"), encoding="utf-8")
    engine = Engine(load_rules(tmp_path))
    a = engine.bucket("Security", 4624)
    assert engine.bucket("Security", 4625) is a and engine.bucket("security", "4624") is a
    assert len(a.units) == 1 and len(engine.bucket("Security", 4688).units) == 2
    ev = {"Channel": "Security", "EventID": 4625, "Data": "run MIMIKATZ"}
    assert [r.title for r in engine.match_fields(ev)] == ["Keyword"]
    assert [r.title for r in engine.match_fields({**ev, "EventID": 4624})] == ["Keyword"]


def _systematic(events: list[dict]) -> list[dict]:
    """The sample ``Engine._keep`` is to keep of ``events``: every stride-th, the stride doubling
    (every other kept one dropped) whenever 2 * SAMPLE are kept."""
    sample: list[dict] = []
    stride = 1
    for seen, f in enumerate(events, 1):
        if seen % stride == 0:
            sample.append(f)
            if len(sample) >= 2 * index.SAMPLE:
                del sample[::2]
                stride *= 2
    return sample


@pytest.mark.parametrize("replan_after", [None, 700])
def test_sampling_asks_keep_only_when_it_has_something_to_do(rules: Path, monkeypatch,
                                                             replan_after: int | None) -> None:
    """A sampling bucket counts its events in ``match_in`` and calls ``_keep`` only for those it
    keeps and for its replan: the same sample as one call per event, far fewer calls, and the
    replan (here at the 700th event) still where it was."""
    _cold_run(rules)
    engine = Engine(load_rules(rules), replan_after=replan_after)
    b = engine.bucket(*SYSMON)
    assert b.sample == [] and b.trials == 0 and b.replan_at > 0
    calls = []
    keep = engine._keep
    monkeypatch.setattr(engine, "_keep", lambda b, f: (calls.append(b.seen), keep(b, f)))
    events = _events(3_000, seed=11)
    literal = Engine(engine.ruleset, use_hyperscan=False)
    for n, f in enumerate(events, 1):
        assert [r.id for r in engine.match_fields(f)] == brute(literal, f)
        if b.sample is not None:
            assert b.seen == n and b.sample == _systematic(events[:n])
    if replan_after is None:  # a short hunt: no replan, all sampled
        assert b.replan_at > len(events) and b.sample == _systematic(events)
    else:
        assert b.sample is None and b.replan_at == -1 and calls[-1] == replan_after
    assert len(calls) < len(events) // 4 and len(set(calls)) == len(calls)


def _held_apart(n: int, seed: int) -> list[dict]:
    """Events whose command lines all hold the tools' shared needle but whose binaries are no
    tool's: a sample of them gates the rules by their binaries (the static plan: by command line)."""
    rng = random.Random(seed)
    return [{"Channel": SYSMON[0], "EventID": 1, "Image": rng.choice(["C:\\bin\\a.exe", "b.exe", ""]),
             "CommandLine": f"go --run {rng.randrange(99)}", "ParentImage": "p.exe"} for _ in range(n)]


def _held_together(n: int, seed: int) -> list[dict]:
    """Events on which binaries and command lines each show up half the time: a sample of them
    gates the rules by both."""
    rng = random.Random(seed)
    return [{"Channel": SYSMON[0], "EventID": 1,
             "Image": f"C:\\bin\\tool{rng.randrange(6)}.exe" if rng.random() < 0.5 else "C:\\bin\\other.exe",
             "CommandLine": "go --run now" if rng.random() < 0.5 else "plain", "ParentImage": "p.exe"}
            for _ in range(n)]


REPLAN_AT = 700


def _replanned(rules: Path, events: list[dict]) -> Engine:
    """A warm hunt of ``events`` that replans its bucket at the REPLAN_AT-th, every match checked."""
    engine = Engine(load_rules(rules), replan_after=REPLAN_AT)
    literal = Engine(engine.ruleset, use_hyperscan=False)
    assert _ids(engine, events) == [brute(literal, f) for f in events]
    return engine


def test_replan_takes_the_last_stored_plan_instead_of_compiling(rules: Path, monkeypatch) -> None:
    """A replan whose own database is not cached takes the bucket's last compiled replan (its
    database is), so that split hunts, whose processes sample different ranges, compile nothing
    on a warm cache; the prefilter that replan's trials kept is kept without timing again."""
    _cold_run(rules)
    b = _replanned(rules, _held_apart(REPLAN_AT + 2 * index.TRIALS + 50, seed=1)).bucket(*SYSMON)
    key = b.key + index.REPLANNED
    got = plancache.read_plan(key, len(b.units))
    assert got is not plancache.MISSING and got[0].patterns and b.trials == 0
    first = got[0].patterns
    assert plancache.read_choice(key, index.TRIAL_FLAVOUR) is not None  # its trials' choice, stored
    plancache.write_choice(key, index.TRIAL_FLAVOUR, True)

    events = _held_together(REPLAN_AT + 100, seed=2)
    own = tagged.plan(b.units, index._spread(_systematic(events[:REPLAN_AT])))
    assert own.patterns != first and not index.is_cached(list(own.patterns), regex=True)
    compiled = []
    compile_regex = index._hs_compile_regex
    monkeypatch.setattr(index, "_hs_compile_regex", lambda pats: compiled.append(pats) or compile_regex(pats))
    b = _replanned(rules, events).bucket(*SYSMON)
    assert b.sample is None and b.atoms is not None and b.atoms.patterns == first
    assert compiled == [] and b.trials == 0


def test_replan_whose_last_trials_kept_the_literal_prefilter_plans_nothing(rules: Path, monkeypatch) -> None:
    """... and where they kept the literal prefilter, no gates are chosen and no database loaded."""
    _cold_run(rules)
    b = _replanned(rules, _held_apart(REPLAN_AT + 2 * index.TRIALS + 50, seed=1)).bucket(*SYSMON)
    plancache.write_choice(b.key + index.REPLANNED, index.TRIAL_FLAVOUR, False)
    planned = []
    plan = index.plan
    monkeypatch.setattr(index, "plan",
                        lambda units, sample=(): planned.append(len(sample)) or plan(units, sample))
    b = _replanned(rules, _held_together(REPLAN_AT + 100, seed=2)).bucket(*SYSMON)
    assert b.sample is None and b.replan_at == -1 and b.atoms is None and b.atom_scan is None
    assert not any(planned) and b.trials == 0
