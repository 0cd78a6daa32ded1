"""The loaded rule files are cached on disk: reused when unchanged, reloaded when edited,
rebuilt when corrupt, shared safely by concurrent writers, skipped when unwritable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scmwatch.sigma import cache
from scmwatch.sigma.ruleset import Unit, load_rules

RULE = """title: Service installed {n}
id: 5f6e1b5a-0000-4000-8000-00000000000{n}
status: test
level: high
logsource:
  product: windows
  service: system
detection:
  selection:
    EventID: 7045
    ImagePath|contains: '{needle}'
  condition: selection
"""


def _rules(d: Path, needle: str = "psexesvc") -> Path:
    d.mkdir(exist_ok=True)
    (d / "a.yml").write_text(RULE.format(n=1, needle=needle))
    (d / "b.yml").write_text(RULE.format(n=2, needle="evil.exe"))
    (d / "broken.yml").write_text("title: [unclosed\n")
    return d


def _entries(root: Path) -> list[Path]:
    return sorted((root / "rules").glob("*.pickle"))


def _fires(rs, image: str) -> list[str]:
    fields = {"Channel": "System", "EventID": 7045, "ImagePath": image}
    low = {k: str(v).lower() for k, v in fields.items()}
    return sorted(u.rule.title for r in rs.rules for u in r.units
                  if (u.pred if isinstance(u.pred, bool) else u.pred(fields, low)))


def test_second_load_comes_from_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    first = load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    stamp = entry.stat().st_mtime_ns
    second = load_rules(rules)
    assert entry.stat().st_mtime_ns == stamp
    assert [r.id for r in second.rules] == [r.id for r in first.rules]
    assert second.rejected == first.rejected and len(second.rejected) == 1
    assert _fires(second, r"c:\windows\psexesvc.exe") == ["Service installed 1"]


def test_edited_rule_is_reloaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    assert _fires(load_rules(rules), r"c:\x\newname.exe") == []
    _rules(rules, needle="newname")  # same paths, new content
    assert _fires(load_rules(rules), r"c:\x\newname.exe") == ["Service installed 1"]
    assert len(_entries(tmp_path / "c")) == 2
    (rules / "b.yml").unlink()  # a removed file is a miss too
    assert [r.title for r in load_rules(rules).rules] == ["Service installed 1"]


def test_corrupt_entry_is_rebuilt(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    for garbage in (b"garbage" * 10, b"", entry.read_bytes()[:1000]):
        entry.write_bytes(garbage)
        rs = load_rules(rules)
        assert _fires(rs, r"c:\windows\psexesvc.exe") == ["Service installed 1"]
        assert entry.read_bytes() != garbage  # replaced by a good entry
    assert "Traceback" not in capsys.readouterr().err


def test_unwritable_or_disabled_cache_still_loads(tmp_path: Path, monkeypatch) -> None:
    rules = _rules(tmp_path / "r")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(blocker))  # cannot create a directory here
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    ro = tmp_path / "ro"
    (ro / "rules").mkdir(parents=True)
    (ro / "rules").chmod(0o500)  # read-only for a normal user (root writes anyway)
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(ro))
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    assert not list((ro / "rules").glob("*.tmp"))
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    assert cache.cache_root() is None
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]


def test_concurrent_writers_leave_one_good_entry(tmp_path: Path) -> None:
    rules = _rules(tmp_path / "r")
    root = tmp_path / "c"
    code = ("import sys; from scmwatch.sigma.ruleset import load_rules; "
            "rs = load_rules(sys.argv[1]); print(len(rs.rules), len(rs.rejected))")
    env = {**os.environ, "SCMWATCH_CACHE_DIR": str(root)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(rules)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o for o, _ in outs] == ["2 1\n", "2 1\n"]
    assert len(_entries(root)) == 1 and not list((root / "rules").glob("*.tmp"))
    again = subprocess.run([sys.executable, "-c", code, str(rules)], env=env, text=True,
                                     capture_output=True, timeout=120)
    assert again.stdout == "2 1\n"  # read from the entry they left


def _state(rs) -> tuple:
    """Everything a rule set says about its rules, without predicates (the requirements read
    last: from the cache, each unit's is read on first access, into this process's atom ids)."""
    return ([(r.id, r.title, r.level, r.path, r.sources, r.flags, r.detection_fields,
              [(u.source, u.keys, u.literals, u.literal_fields, u.order, u.requirement) for u in r.units])
             for r in rs.rules],
            [(c.title, str(c.type)) for c in rs.correlations], rs.rejected, rs.warnings,
            [(r.id, why) for r, why in rs.not_run], rs.files)


def test_cached_rule_set_equals_a_fresh_one_and_matches_alike(tmp_path: Path, monkeypatch) -> None:
    from scmwatch.packtest import fixture_event, fixture_file_for, load_fixtures
    from scmwatch.rules import PACK_DIR, pack_paths
    from scmwatch.sigma import Engine

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    fresh = load_rules(PACK_DIR)
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    load_rules(PACK_DIR)  # writes the entry
    cached = load_rules(PACK_DIR)
    assert all("sigma" not in r.__dict__ for r in cached.rules)  # nothing compiled yet
    assert cached.specs() == fresh.corr_specs and len(fresh.corr_specs) == len(fresh.correlations) > 5
    assert cached.correlation_count == len(fresh.correlations) and cached.read_correlations is None
    assert cached.correlations and _state(cached) == _state(fresh)
    assert cached.specs() is None  # the pySigma correlations are read: they say from now on
    fixtures = [f for f in (fixture_file_for(Path(p)) for p in pack_paths()) if f.exists()]
    events = [fixture_event(obj, str(f), n) for f in fixtures for n, obj in load_fixtures(f)[0]]
    assert len(events) > 50
    a, b = Engine(fresh), Engine(cached)
    got = [[r.id for r in b.match(ev)] for ev in events]
    assert got == [[r.id for r in a.match(ev)] for ev in events]
    assert sum(map(len, got)) > 20
    assert [r.sigma.title for r in cached.rules] == [r.title for r in fresh.rules]


def _has_predicates(rule) -> bool:
    """Are the rule's predicates there (read or compiled), without asking for them?"""
    from scmwatch.sigma.ruleset import Unit

    try:
        Unit.pred.__get__(rule.units[0], Unit)  # the slot itself: no lazy compilation
    except AttributeError:
        return False
    return True


def _made(engine, unit) -> bool:
    """Has ``engine`` made what runs ``unit`` (its predicate read, or with C its program made
    from the stored parts: ``ruleset.lite_program``), not only the stand-in that would?"""
    from scmwatch.sigma.ruleset import _UNREAD, _slot

    if _slot(unit) is not _UNREAD:
        return True
    return any(getattr(b.preds[i], "__name__", "") != "first_call"
               for b in engine._by_units.values() for i, u in enumerate(b.units) if u is unit)


def _ran(engine, rs) -> list[str]:
    return sorted(r.title for r in rs.rules if any(_made(engine, u) for u in r.units))


def test_only_the_buckets_the_input_has_are_compiled(tmp_path: Path, monkeypatch) -> None:
    from scmwatch.events.model import Event
    from scmwatch.sigma import Engine

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    proc_rule = RULE.format(n=3, needle="x").replace("service: system", "category: process_creation")
    (rules / "proc.yml").write_text(proc_rule.replace("EventID: 7045\n    ImagePath", "Image"))
    load_rules(rules)
    rs = load_rules(rules)
    engine = Engine(rs)
    ev = Event({"Channel": "System", "EventID": 7045, "ImagePath": r"C:\Windows\PSEXESVC.exe"},
               "t", 1, "json")
    assert [r.title for r in engine.match(ev)] == ["Service installed 1"]
    compiled = _ran(engine, rs)
    # only what ran: not the process_creation rule (another bucket), nor rule 2, whose literal
    # ("evil.exe") the prefilter did not find in the event
    assert compiled == ["Service installed 1"]
    assert not [r for r in rs.rules if "sigma" in r.__dict__]  # stored predicates: no pySigma needed
    for n in range(2):  # read on its first call, then called directly
        ev = Event({"Channel": "System", "EventID": 7045, "ImagePath": rf"C:\{n}\evil.exe"}, "t", 3, "json")
        assert [r.title for r in engine.match(ev)] == ["Service installed 2"]
        assert _ran(engine, rs) == ["Service installed 1", "Service installed 2"]
    bucket = engine.bucket("System", 7045)
    assert all(p is True or getattr(p, "__name__", "") != "first_call" for p in bucket.preds[:2])
    sysmon = "Microsoft-Windows-Sysmon/Operational"
    proc = Event({"Channel": sysmon, "EventID": 1, "Image": r"c:\x.exe"}, "t", 2, "json")
    assert [r.title for r in engine.match(proc)] == ["Service installed 3"]


def test_a_bucket_reads_only_its_own_source_of_a_rule(tmp_path: Path, monkeypatch) -> None:
    """A rule on two sources (Sysmon process creation and Security 4688) stores a predicate per
    source: a Sysmon event reads the Sysmon one only, a 4688 event then the other, and both
    match as the rule compiled afresh does (also when a source's piece is missing: the rule is
    compiled again, every unit)."""
    from scmwatch.events.model import Event
    from scmwatch.sigma import Engine
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = tmp_path / "r"
    rules.mkdir()
    proc = RULE.format(n=3, needle="x").replace("service: system", "category: process_creation")
    (rules / "proc.yml").write_text(proc.replace("EventID: 7045\n    ImagePath", "Image"))
    fresh = load_rules(rules)
    sysmon = Event({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
                    "Image": r"c:\evil\x.exe"}, "t", 1, "json")
    security = Event({"Channel": "Security", "EventID": 4688, "NewProcessName": r"c:\evil\x.exe"}, "t", 2,
                     "json")
    want = [[r.title for r in Engine(fresh).match(ev)] for ev in (sysmon, security)]
    assert want == [["Service installed 3"], ["Service installed 3"]]
    for missing in (False, True):
        rs = load_rules(rules)
        (rule,) = rs.rules
        assert len(rule.units) == 2 and not any("sigma" in r.__dict__ for r in rs.rules)
        if missing:  # an entry without the 4688 pieces: compiled again when it is asked for
            src, i = rule.__dict__["_source"]
            src.preds[i] = {k: v for k, v in src.preds[i].items() if "4688" not in k}
            if src.progs[i] is not None:
                src.progs[i] = {k: v for k, v in src.progs[i].items() if "4688" not in k}
        engine = Engine(rs)
        assert [r.title for r in engine.match(sysmon)] == want[0]
        assert [_made(engine, u) for u in rule.units] == [True, False]
        assert [r.title for r in engine.match(security)] == want[1]
        assert all(_made(engine, u) for u in rule.units)
        assert ("sigma" in rule.__dict__) is missing


def test_placeholder_values_are_part_of_the_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    (rules / "a.yml").write_text(RULE.format(n=1, needle="psexesvc").replace("contains: 'psexesvc'",
                                                                              "expand: '%evil%'"))
    for value, hit, miss in (("*psexesvc.exe", r"c:\windows\psexesvc.exe", r"c:\x\other.exe"),
                             ("*other.exe", r"c:\x\other.exe", r"c:\windows\psexesvc.exe")):
        for _ in range(2):  # the second load comes from the entry made for these values
            rs = load_rules(rules, placeholders={"evil": [value]})
            assert _fires(rs, hit) == ["Service installed 1"] and _fires(rs, miss) == []
    assert len(_entries(tmp_path / "c")) == 2


def _piece_spans(entry: Path, programs: bool = False) -> tuple[int, list[int], list, list[int]]:
    """Where an entry's rule part starts, its pySigma pieces' offsets, predicate spans (or,
    ``programs``, program spans) and the offsets of the rules' stored parts."""
    import pickle
    import struct

    data = entry.read_bytes()
    head = len(cache.FORMAT) + cache.HEADER.size
    skel_len, _, _ = struct.unpack_from("<QQI", data, len(cache.FORMAT))
    _, offsets, _, spans, progs, _, _, (parts, _), _ = pickle.loads(data[head:head + skel_len])  # noqa: S301
    return head + skel_len, offsets, progs if programs else spans, parts


def test_altered_rule_part_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    """A damaged piece is caught by its own CRC when it is read: its rule is compiled again
    from the files (same matches) and the entry removed, so the next load writes it anew."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    base, offsets, spans, parts = _piece_spans(entry)
    good = entry.read_bytes()
    for where in (base + [s for rule in spans if rule for s in rule.values()][0][0] + 5,  # a predicate
                  base + offsets[0] + 5,  # a rule's pySigma objects
                  base + parts[0] + 5):  # its details, literal gates and requirements
        data = bytearray(good)
        data[where] ^= 0xFF
        entry.write_bytes(bytes(data))
        rs = load_rules(rules)
        assert entry.exists()  # nothing read yet: the skeleton holds
        assert _fires(rs, r"c:\windows\psexesvc.exe") == ["Service installed 1"]
        assert rs.rules[0].path.endswith("a.yml")
        assert rs.rules[0].units[0].literals == (frozenset({"psexesvc"}),)
        assert rs.rules[0].sigma.title == "Service installed 1"
        assert not entry.exists()  # removed when the damaged piece was met
        assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
        assert entry.read_bytes() != bytes(data)  # written anew
        good = entry.read_bytes()


def test_a_damaged_program_piece_is_caught_and_the_predicate_read(tmp_path: Path, monkeypatch) -> None:
    """A program piece (``RuleSource.program``) that does not match its CRC is caught when a
    bucket first runs its unit: the entry is removed, and the unit runs its predicate, read
    from the entry (same matches)."""
    from scmwatch.sigma import Engine, compile

    if compile.Prog is None:
        pytest.skip("no C extensions: programs are not read")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    base, _, progs, _ = _piece_spans(entry, programs=True)
    spans = [s for rule in progs if rule for s in rule.values()]
    assert len(spans) == 2  # both rules have a program
    data = bytearray(entry.read_bytes())
    for a, _, _ in spans:
        data[base + a + 5] ^= 0xFF
    entry.write_bytes(bytes(data))
    rs = load_rules(rules)
    engine = Engine(rs)
    hit = {"Channel": "System", "EventID": 7045, "ImagePath": r"C:\Windows\PSEXESVC.exe"}
    assert [r.title for r in engine.match_fields(hit)] == ["Service installed 1"]
    assert not entry.exists()
    assert not rs.rules[0].units[0].unread  # its predicate read instead


def test_a_damaged_piece_leaves_an_entry_written_meanwhile(tmp_path: Path, monkeypatch) -> None:
    """The entry is removed only if it is still the file that was read: a concurrent writer's
    new entry under the same name stays."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    good = entry.read_bytes()
    base, offsets, _, _ = _piece_spans(entry)
    data = bytearray(good)
    data[base + offsets[0] + 5] ^= 0xFF
    entry.write_bytes(bytes(data))
    rs = load_rules(rules)
    replacement = tmp_path / "c" / "rules" / "new.tmp"
    replacement.write_bytes(good)
    os.replace(replacement, entry)  # as write_entry does
    assert rs.rules[0].sigma.title == "Service installed 1"  # the damaged piece, read now
    assert entry.read_bytes() == good


def test_rule_source_that_fails_loads_the_files_again(tmp_path: Path) -> None:
    rules = _rules(tmp_path / "r")
    source = cache.RuleSource(memoryview(b"not a pickle"), [0, 5, 12], [str(rules)], {})
    rule, path, trees = source.rule(1)
    assert rule.title == "Service installed 2" and path.endswith("b.yml") and trees


def test_only_the_most_recently_used_entries_are_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    (first,) = _entries(tmp_path / "c")
    for n in range(cache.KEEP + 2):
        os.utime(first, ns=(10**19, first.stat().st_mtime_ns))  # used after any new entry
        _rules(rules, needle=f"edit{n}")
        assert _fires(load_rules(rules), rf"c:\x\edit{n}.exe") == ["Service installed 1"]
    kept = _entries(tmp_path / "c")
    assert len(kept) == cache.KEEP and first in kept


def test_lasting_frees_the_compile_garbage_and_joins_a_frozen_rule_set() -> None:
    """A rule compiled mid-hunt (``lasting``): its cyclic garbage is collected at once, what it
    keeps joins the frozen generation when the process froze its rule set, and the collector's
    state is restored."""
    import gc
    import weakref

    class Node:
        pass

    def cycle() -> weakref.ref:
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    assert gc.isenabled()
    cache.freeze_gc()
    try:
        frozen = gc.get_freeze_count()
        with cache.lasting():
            assert not gc.isenabled()
            garbage = cycle()
            kept = [Node() for _ in range(10)]
        assert gc.isenabled()
        assert garbage() is None  # collected on the way out, not left for a full collection
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        cache.unfreeze_gc()
    assert gc.get_freeze_count() == 0
    with cache.lasting():  # not frozen: nothing is
        kept = [Node() for _ in range(10)]
    assert gc.get_freeze_count() == 0
    cache.freeze_gc()
    try:
        frozen = gc.get_freeze_count()
        with cache.lasting(collect=False):  # no collection on the way out: the cycle joins too
            garbage = cycle()
            read = [Node() for _ in range(10)]
        assert gc.isenabled() and garbage() is not None
        assert gc.get_freeze_count() >= frozen + len(read) + 2
    finally:
        cache.unfreeze_gc()
    gc.collect()
    assert garbage() is None


def _count_hashes(monkeypatch) -> list[str]:
    """The rule files whose content the cache key reads from now on."""
    read: list[str] = []
    real = cache.content_hash

    def counting(path: str) -> bytes | None:
        read.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(cache, "content_hash", counting)
    return read


def _same_size_edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` (as long) in the file and put its mtime back."""
    st = path.stat()
    text = path.read_text()
    assert len(old) == len(new) and old in text
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_unchanged_rule_files_are_not_read_again(tmp_path: Path, monkeypatch) -> None:
    """Stat first: a warm start reads no rule file; an edit that keeps size and mtime is still
    seen (the ctime changed), and a touched but unchanged file keeps its entry."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(cache, "RACY_NS", 0)  # the files are old enough to trust their stamp
    rules = _rules(tmp_path / "r")
    read = _count_hashes(monkeypatch)
    load_rules(rules)
    assert sorted(read) == ["a.yml", "b.yml", "broken.yml"]
    assert len(list((tmp_path / "c" / "rules").glob("*" + cache.STAMP_SUFFIX))) == 1
    read.clear()
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    assert read == []
    _same_size_edit(rules / "a.yml", "psexesvc", "evil1234")
    rs = load_rules(rules)
    assert read == ["a.yml"]
    assert _fires(rs, r"c:\x\evil1234.exe") == ["Service installed 1"]
    assert _fires(rs, r"c:\windows\psexesvc.exe") == []
    entries = _entries(tmp_path / "c")
    read.clear()
    os.utime(rules / "b.yml")  # touched: read again, same content, same entry
    assert _fires(load_rules(rules), r"c:\x\evil1234.exe") == ["Service installed 1"]
    assert read == ["b.yml"] and _entries(tmp_path / "c") == entries


def test_file_changed_in_the_tick_of_its_stamp_is_hashed_again(tmp_path: Path, monkeypatch) -> None:
    """Git's racily clean files: on a file system with whole-second mtimes and no ctime or inode
    (simulated), an edit in the second the stamp was taken keeps the file's signature; only a
    file last changed RACY_NS before its stamp is trusted, so the edit is seen."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))

    def coarse(st: os.stat_result) -> tuple[int, ...]:
        second = st.st_mtime_ns // 10**9 * 10**9
        return (st.st_size, second, second, 0, 0)

    monkeypatch.setattr(cache, "_signature", coarse)
    monkeypatch.setattr(cache, "_signatures", cache._py_signatures)  # the C twin stats exactly
    rules = _rules(tmp_path / "r")
    read = _count_hashes(monkeypatch)
    load_rules(rules)
    read.clear()
    _same_size_edit(rules / "a.yml", "psexesvc", "evil1234")  # same second, same size
    rs = load_rules(rules)
    assert "a.yml" in read
    assert _fires(rs, r"c:\x\evil1234.exe") == ["Service installed 1"]
    # Once the files are old at stamp time, the stamp is trusted (and the entry reused).
    old = 10**18  # 2001
    for f in rules.iterdir():
        os.utime(f, ns=(old, old))
    load_rules(rules)  # stamped now, every file long unchanged
    read.clear()
    assert _fires(load_rules(rules), r"c:\x\evil1234.exe") == ["Service installed 1"]
    assert read == []


def test_warm_start_reads_the_entry_while_the_files_are_stated(tmp_path: Path, monkeypatch) -> None:
    """With the stamp's files all old enough to trust, the entry they select is read while the
    files are stat'ed, and the key is not made again; a file changed meanwhile (an edit that
    keeps size and mtime) drops that entry and makes the key again, so the edit is seen."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(cache, "RACY_NS", 0)
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    keys: list = []
    read: list = []
    real_key, real_read = cache.cache_key, cache.read_entry
    monkeypatch.setattr(cache, "cache_key", lambda *a: keys.append(a) or real_key(*a))
    monkeypatch.setattr(cache, "read_entry", lambda key: read.append(key) or real_read(key))
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    assert keys == [] and len(read) == 1
    _same_size_edit(rules / "a.yml", "psexesvc", "evil1234")
    rs = load_rules(rules)
    assert len(keys) == 1 and len(read) == 3 and read[1] != read[2]  # the old entry, then the new key's
    assert _fires(rs, r"c:\x\evil1234.exe") == ["Service installed 1"]
    assert _fires(rs, r"c:\windows\psexesvc.exe") == []


def test_stat_signatures_in_c_equal_the_python_twin(tmp_path: Path) -> None:
    if cache._stat is None:
        pytest.skip("built without the C extensions")
    (tmp_path / "f.yml").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "link.yml").symlink_to(tmp_path / "f.yml")
    (tmp_path / "dangling.yml").symlink_to(tmp_path / "gone")
    paths = [str(tmp_path / n) for n in ("f.yml", "d", "link.yml", "dangling.yml", "missing", "f.yml/x")]
    got = cache._stat.signatures(paths)
    assert got == cache._py_signatures(paths)
    assert got[0] is not None and got[0] == got[2] and got[3:] == [None, None, None]
    assert cache._stat.signatures([]) == []
    with pytest.raises(TypeError):
        cache._stat.signatures([1])
    packed = cache._stat.packed(paths)
    assert packed == cache._pack(got) and cache._unpack(packed) == got
    assert packed[-3 * cache.SIG.size:] == cache.GONE * 3 and cache._stat.packed([]) == b""
    with pytest.raises(TypeError):
        cache._stat.packed([1])


def test_damaged_or_foreign_stamp_only_costs_the_hashing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(cache, "RACY_NS", 0)
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    (stamp,) = (tmp_path / "c" / "rules").glob("*" + cache.STAMP_SUFFIX)
    read = _count_hashes(monkeypatch)
    good = stamp.read_bytes()
    head, body = good.split(b"\n", 1)
    small = int(head.split()[-1])
    digest_byte = head + b"\n" + body[:small - 1] + bytes([body[small - 1] ^ 1]) + body[small:]
    old_format = b"scmwatch-stamp-2" + good[len(cache.STAMP_FORMAT):]
    long_size = head[:-len(str(small))] + str(len(body) + 1).encode() + b"\n" + body
    for garbage in (b"", b"garbage", good[:100], good[:-1], digest_byte, old_format, long_size):
        stamp.write_bytes(garbage)
        read.clear()
        assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
        assert sorted(read) == ["a.yml", "b.yml", "broken.yml"]
        assert stamp.read_bytes() != garbage  # written again
    assert len(_entries(tmp_path / "c")) == 1  # the same key all along


def test_rule_that_cannot_be_read_or_compiled_never_matches(tmp_path: Path, monkeypatch) -> None:
    """A bucket's stand-in for an unread predicate that turns out False (neither stored nor
    compilable) puts a predicate that never matches in its place, and the rule says why."""
    from scmwatch.events.model import Event
    from scmwatch.sigma import Engine, ruleset

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    rs = load_rules(rules)
    monkeypatch.setattr(cache.RuleSource, "predicates", lambda self, i, sources: None)
    monkeypatch.setattr(cache.RuleSource, "program", lambda self, i, source: None)

    def broken(*args, **kwargs):
        raise ValueError("compiler gone")

    monkeypatch.setattr(ruleset, "compile_rule", broken)
    engine = Engine(rs)
    ev = Event({"Channel": "System", "EventID": 7045, "ImagePath": r"C:\Windows\PSEXESVC.exe"},
               "t", 1, "json")
    assert engine.match(ev) == [] and engine.match(ev) == []
    (rule,) = [r for r in rs.rules if r.title == "Service installed 1"]
    assert any("cannot compile from the rule cache" in f for f in rule.flags)
    assert rule.units[0].never


def _count_walks(monkeypatch) -> list[int]:
    """How many times the cache key lists the rule directories from now on."""
    walks: list[int] = []
    real = cache.rule_paths

    def counting(*args, **kwargs):
        walks.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "rule_paths", counting)
    return walks


def _titles(rules: Path) -> list[str]:
    return sorted(r.title for r in load_rules(rules).rules)


def test_unchanged_directories_are_not_listed_again(tmp_path: Path, monkeypatch) -> None:
    """The stamp keeps the list of rule files with the signature of each directory it came
    from: a warm start lists no directory, and a file added, removed or renamed anywhere below
    (its directory's mtime changed), a new subdirectory or a symlink whose target appears is
    still seen."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(cache, "RACY_NS", 0)
    rules = _rules(tmp_path / "r")
    sub = rules / "deep" / "er"
    sub.mkdir(parents=True)
    walks = _count_walks(monkeypatch)
    assert _titles(rules) == ["Service installed 1", "Service installed 2"]
    assert len(walks) == 1
    walks.clear()
    assert _titles(rules) == ["Service installed 1", "Service installed 2"]
    assert walks == []  # from the stamp
    (sub / "c.yml").write_text(RULE.format(n=3, needle="x"))  # added deep down
    assert _titles(rules) == ["Service installed 1", "Service installed 2", "Service installed 3"]
    (sub / "c.yml").rename(sub / "c.yaml.off")  # renamed away from the rule suffixes
    assert _titles(rules) == ["Service installed 1", "Service installed 2"]
    newdir = rules / "new"
    newdir.mkdir()
    (newdir / "d.yml").write_text(RULE.format(n=4, needle="y"))
    assert _titles(rules) == ["Service installed 1", "Service installed 2", "Service installed 4"]
    target = tmp_path / "elsewhere.yml"
    (rules / "link.yml").symlink_to(target)  # dangling: not a rule file yet
    assert _titles(rules) == ["Service installed 1", "Service installed 2", "Service installed 4"]
    walks.clear()
    target.write_text(RULE.format(n=5, needle="z"))  # no directory below the rules changed
    assert _titles(rules) == ["Service installed 1", "Service installed 2", "Service installed 4",
                              "Service installed 5"]
    assert walks == [1]
    shutil.rmtree(newdir)
    (rules / "b.yml").unlink()
    assert _titles(rules) == ["Service installed 1", "Service installed 5"]


def test_directory_changed_in_the_tick_of_its_stamp_is_listed_again(tmp_path: Path, monkeypatch) -> None:
    """As for files: with whole-second times and no ctime or inode (simulated), a file added in
    the second the stamp was taken keeps its directory's signature; only a directory unchanged
    for RACY_NS before its stamp is trusted, so the new file is seen."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))

    def coarse(st: os.stat_result) -> tuple[int, ...]:
        second = st.st_mtime_ns // 10**9 * 10**9
        return (0, second, second, 0, 0)

    monkeypatch.setattr(cache, "_signature", coarse)
    monkeypatch.setattr(cache, "_signatures", cache._py_signatures)
    rules = _rules(tmp_path / "r")
    now = time.time_ns()
    os.utime(rules, ns=(now, now))
    assert _titles(rules) == ["Service installed 1", "Service installed 2"]
    (rules / "c.yml").write_text(RULE.format(n=3, needle="x"))
    os.utime(rules, ns=(now, now))  # the directory's signature is the same as when stamped
    assert _titles(rules) == ["Service installed 1", "Service installed 2", "Service installed 3"]
    # Once old at stamp time, the directory is trusted: its listing is not made again.
    old = 10**18  # 2001
    os.utime(rules, ns=(old, old))
    walks = _count_walks(monkeypatch)
    load_rules(rules)  # stamped now, the directory long unchanged
    walks.clear()
    assert _titles(rules) == ["Service installed 1", "Service installed 2", "Service installed 3"]
    assert walks == []


def test_a_rule_path_that_changes_kind_is_listed_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(cache, "RACY_NS", 0)
    rules = _rules(tmp_path / "r")
    one = tmp_path / "one.yml"
    assert _titles(rules) == ["Service installed 1", "Service installed 2"]
    rs = load_rules([rules, one])  # a rule path that does not exist yet
    assert any(p.endswith("one.yml") for p, _ in rs.rejected)
    one.write_text(RULE.format(n=3, needle="x"))
    assert sorted(r.title for r in load_rules([rules, one]).rules) == [
        "Service installed 1", "Service installed 2", "Service installed 3"]


def test_rule_details_are_read_on_first_use_and_equal_a_fresh_load(tmp_path: Path, monkeypatch) -> None:
    """What a hunt reads of a rule only when it hits (ruleset.DETAILS) is a piece of its own in
    the entry, not in the skeleton, read on first access: the same values as a fresh load, a
    value set before the others were read stays, and a cached rule pickled again keeps them."""
    import pickle

    from scmwatch.sigma.ruleset import DETAILS

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    fresh = {r.id: r for r in load_rules(rules).rules}
    cached = load_rules(rules).rules
    assert cached and not [r for r in cached if "_details" in r.__dict__ or DETAILS[0] in r.__dict__]
    for r in cached:
        assert {k: getattr(r, k) for k in DETAILS} == {k: getattr(fresh[r.id], k) for k in DETAILS}
        assert "_details" not in r.__dict__
    again = load_rules(rules).rules[0]
    again.flags = ["set first"]
    assert again.tags == fresh[again.id].tags and again.flags == ["set first"]
    other = load_rules(rules).rules[0]
    copy = pickle.loads(pickle.dumps(other))
    assert copy.description == fresh[other.id].description and copy.path == fresh[other.id].path


def test_unit_literals_are_read_on_first_use_and_equal_a_fresh_load(tmp_path: Path, monkeypatch) -> None:
    """A cached unit's literal gates and requirement are in a piece of their rule's own in the
    entry, not in the skeleton, read on first access: the same gates as a fresh load, and a
    unit pickled again before reading them keeps them."""
    import pickle

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    fresh = {r.id: r for r in load_rules(rules).rules}
    cached = load_rules(rules).rules
    units = [u for r in cached for u in r.units]
    assert units and all(u.stored_literals is None and u.stored_requirement is None for u in units)
    with pytest.raises(AttributeError):
        Unit.literals.__get__(units[0], Unit)  # the slot itself: not read yet
    copy = pickle.loads(pickle.dumps(units[0]))  # not read yet: pickled as stored
    for r in cached:
        assert [u.literals for u in r.units] == [u.literals for u in fresh[r.id].units]
    assert all(u.stored_literals is None for u in units)
    assert copy.literals == units[0].literals and frozenset({"psexesvc"}) in units[0].literals


def test_the_skeleton_is_stored_without_unused_memo_entries(tmp_path: Path, monkeypatch) -> None:
    """The skeleton is written through ``pickletools.optimize`` (no memo entry that nothing
    fetches again), which unpickles faster than pickle's own output."""
    import pickletools
    import struct

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    load_rules(_rules(tmp_path / "r"))
    (entry,) = _entries(tmp_path / "c")
    data = entry.read_bytes()
    head = len(cache.FORMAT) + cache.HEADER.size
    skel_len, _, _ = struct.unpack_from("<QQI", data, len(cache.FORMAT))
    skel = data[head:head + skel_len]
    assert pickletools.optimize(skel) == skel
    ops = [op.name for op, _, _ in pickletools.genops(skel)]
    assert "MEMOIZE" in ops and ops.count("MEMOIZE") < ops.count("SHORT_BINUNICODE")


def test_predicates_read_from_the_cache_collect_nothing(tmp_path: Path, monkeypatch) -> None:
    """Reading a rule's stored predicates leaves no garbage worth a collection: no
    ``gc.collect`` per rule read (it cost ~8 ms of each x5 process); compiling a rule again
    from its pySigma objects still collects what compiling leaves."""
    import gc

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    collected: list[int] = []
    real = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(1) or real(*a))
    cached = load_rules(rules)
    assert _fires(cached, r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    assert collected == []
    again = load_rules(rules)
    again.rules[0].__dict__["_source"][0].preds = None  # stored predicates unavailable: compiled
    assert _fires(again, r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    assert collected


def test_a_hunt_runs_the_program_not_the_lambda_of_a_cached_rule(tmp_path: Path, monkeypatch) -> None:
    """A unit from the cache gets its predicate on the first event that reaches it and runs its
    ``Prog`` from then on, that first event too: the generated lambda's code stays unread
    (``predpickle._lazy_function``), yet the lambda still answers alike when called."""
    from scmwatch.sigma import Engine, compile, predpickle

    if compile.Prog is None:
        pytest.skip("no C extensions: the lambda is what runs")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    rs = load_rules(rules)
    engine = Engine(rs)
    hit = {"Channel": "System", "EventID": 7045, "ImagePath": r"C:\Windows\PSEXESVC.exe"}
    assert [r.title for r in engine.match_fields(hit)] == ["Service installed 1"]
    assert [r.title for r in engine.match_fields(dict(hit, ImagePath="x"))] == []
    (unit,) = rs.rules[0].units
    assert unit.pred.__code__ is predpickle._trampoline.__code__  # read, never called
    assert _fires(rs, r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    assert unit.pred.__code__ is not predpickle._trampoline.__code__


def test_a_cached_rule_runs_its_stored_program_until_it_needs_python(tmp_path: Path, monkeypatch) -> None:
    """With C, a unit from the cache runs the ``Prog`` made from its stored program's parts, its
    predicate not read, as long as C answers alone (str values); the first value C hands to a
    Python test (a list) reads the predicate, and from then on the bucket runs the predicate's
    own program. Every answer is the freshly compiled rule's."""
    import gc

    from scmwatch.sigma import Engine, compile
    from scmwatch.sigma.ruleset import _Later

    if compile.Prog is None:
        pytest.skip("no C extensions: the predicate is what runs")
    rules = _rules(tmp_path / "r")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    fresh = Engine(load_rules(rules))
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    load_rules(rules)
    rs = load_rules(rules)
    engine = Engine(rs)
    unit = rs.rules[0].units[0]
    base = {"Channel": "System", "EventID": 7045}
    values = [r"C:\Windows\PSEXESVC.exe", "x", r"c:\psexesvc\evil.exe", "PSEXESVC"]
    for v in values:
        f = dict(base, ImagePath=v)
        assert [r.title for r in engine.match_fields(f)] == [r.title for r in fresh.match_fields(f)]
    bucket = engine.bucket("System", 7045)
    (i,) = [k for k, u in enumerate(bucket.units) if u is unit]
    prog = bucket.preds[i]
    assert type(prog) is compile.Prog and unit.unread  # the program, the predicate not read
    assert any(type(v) is _Later for v in gc.get_referents(prog))
    for v in (["x", r"C:\PSEXESVC.exe"], ["x"], 7045, r"C:\PSEXESVC.exe"):
        f = dict(base, ImagePath=v)
        assert [r.title for r in engine.match_fields(f)] == [r.title for r in fresh.match_fields(f)]
    assert not unit.unread  # read by the list
    assert type(bucket.preds[i]) is compile.Prog and bucket.preds[i] is not prog
    assert not any(type(v) is _Later for v in gc.get_referents(bucket.preds[i]))


def test_the_skeleton_stores_equal_values_once(tmp_path: Path, monkeypatch) -> None:
    """Equal strings, keys and literal-field sets of the rules and units in the skeleton are one
    object each (the pickle's memo stores them once): read back, the rules share them, and the
    rule set equals a fresh load."""
    rules = _rules(tmp_path / "r")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    fresh = load_rules(rules)
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    load_rules(rules)  # writes the entry
    cached = load_rules(rules)
    a, b = cached.rules
    ua, ub = a.units[0], b.units[0]
    assert a.level == "high" and a.status == "test" and ua.source == ub.source and ua.keys == ub.keys
    assert a.level is b.level and a.status is b.status
    assert ua.source is ub.source and ua.keys[0] is ub.keys[0] and ua.keys is not ub.keys
    assert ua.literal_fields == ub.literal_fields and ua.literal_fields is ub.literal_fields
    assert _state(cached) == _state(fresh)


def test_shared_values_keep_their_types() -> None:
    """``1`` and ``True`` (and tuples or sets of them) are equal but not the same value: the
    skeleton's pickler shares neither for the other; equal strings and tuples it shares."""
    import io

    p = cache._SkeletonPickler(io.BytesIO())
    one = p._shared((1, (1,), frozenset({1})))
    true = p._shared((True, (True,), frozenset({True})))
    assert one == true and one is not true
    assert type(true[0]) is bool and type(true[1][0]) is bool and type(next(iter(true[2]))) is bool
    assert type(one[0]) is int and type(one[1][0]) is int and type(next(iter(one[2]))) is int
    key = ("sys" + "tem", 7045)
    assert p._shared(key) is p._shared(("system", 7045)) and p._shared(key) is not key
    units: list = [object()]
    assert p._shared(units) is units  # a list of anything else stays itself


def test_shared_values_nested_keep_their_types_and_never_hash_the_unhashable() -> None:
    """A tuple holding ``(1,)`` is not shared for one holding ``(True,)`` (the nested ones are
    equal, not the same), and a tuple holding a tuple of a list is left as it is instead of
    failing to hash."""
    import io

    p = cache._SkeletonPickler(io.BytesIO())
    one, true = p._shared(((1,), "a")), p._shared(((True,), "a"))
    assert one == true and one is not true and type(true[0][0]) is bool
    assert p._shared(((1,), "a")) is one
    odd = (("x", ["y"]),)
    assert p._shared(odd) is odd


CORR = """title: Two installs
id: 7a1d0c1e-0000-4000-8000-0000000000c1
name: two_installs
correlation:
  type: event_count
  rules:
    - 5f6e1b5a-0000-4000-8000-000000000001
  group-by:
    - Computer
  timespan: {span}
  condition:
    gte: 2
level: high
"""


def test_correlations_come_flattened_and_their_pysigma_piece_on_demand(tmp_path: Path, monkeypatch) -> None:
    """A cached rule set gives its correlations flattened without reading the pySigma ones;
    those come from their own piece when asked for, from the files again when it is damaged
    (the entry removed), and an edited correlation rule is a miss."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    (rules / "corr.yml").write_text(CORR.format(span="5m"))
    fresh = load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    cached = load_rules(rules)
    (spec,) = cached.specs()
    assert spec == fresh.corr_specs[0] and spec.timespan_us == 300_000_000
    assert spec.ref_keys == {"5f6e1b5a-0000-4000-8000-000000000001": "5f6e1b5a-0000-4000-8000-000000000001"}
    assert spec.label == "two_installs" and spec.leaves == (("5f6e1b5a-0000-4000-8000-000000000001", ""),)
    assert cached.read_correlations is None and cached.correlation_count == 1
    assert [c.title for c in cached.correlations] == ["Two installs"] and entry.exists()
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0xFF  # the correlations' piece is the entry's last
    entry.write_bytes(bytes(data))
    damaged = load_rules(rules)
    assert damaged.specs() == [spec]  # the skeleton holds
    assert [c.title for c in damaged.correlations] == ["Two installs"]  # from the files
    assert not entry.exists()
    (rules / "corr.yml").write_text(CORR.format(span="7m"))
    assert load_rules(rules).specs() is None  # loaded from the files
    assert load_rules(rules).specs()[0].timespan_us == 420_000_000


def test_a_compiled_rule_knows_its_correlation_key_without_pysigma(tmp_path: Path, monkeypatch) -> None:
    from scmwatch.correlate.spec import rule_key

    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    uuid = "5f6e1b5a-0000-4000-8000-00000000000"
    (rules / "named.yml").write_text(RULE.format(n=3, needle="x").replace(f"id: {uuid}3", "name: no_id_rule"))
    (rules / "bare.yml").write_text(RULE.format(n=4, needle="y").replace(f"id: {uuid}4\n", ""))
    load_rules(rules)
    cached = load_rules(rules)
    keys = [rule_key(r) for r in cached.rules]
    assert all("sigma" not in r.__dict__ for r in cached.rules)  # no pySigma rule was read for them
    assert keys == [rule_key(r.sigma) for r in cached.rules]
    assert "name:no_id_rule" in keys and "title:Service installed 4" in keys
    assert "5f6e1b5a-0000-4000-8000-000000000001" in keys


def test_a_warm_hunt_with_the_pack_imports_no_pysigma_correlations(tmp_path: Path) -> None:
    """The built-in pack's correlations run from their flattened form: a warm start imports
    neither pySigma's correlations and rule modules nor pyparsing or YAML (~80 ms)."""
    events = tmp_path / "two.jsonl"
    events.write_text('{"Channel": "System", "EventID": 7045, "Computer": "h1", "ServiceName": "x",'
                      ' "ImagePath": "C:\\\\Windows\\\\PSEXESVC.exe",'
                      ' "TimeCreated": "2024-01-01T00:00:00Z"}\n')
    code = ("import sys, scmwatch.cli\n"
            "try:\n"
            "    scmwatch.cli.main(['hunt', sys.argv[1], '--format', 'jsonl', '--output', sys.argv[2]])\n"
            "except SystemExit:\n    pass\n"
            "names = ('sigma.correlations', 'sigma.rule', 'pyparsing', 'yaml')\n"
            "print(sorted(m for m in names if m in sys.modules))")
    env = {**os.environ, "SCMWATCH_CACHE_DIR": str(tmp_path / "c")}
    out = tmp_path / "alerts.jsonl"
    runs = [subprocess.run([sys.executable, "-c", code, str(events), str(out)], env=env, text=True,
                           capture_output=True, timeout=120) for _ in range(2)]
    assert runs[0].stdout.strip() != "[]"  # the cold load parses the rules with pySigma
    assert runs[1].stdout.strip() == "[]", runs[1].stderr
    assert "PSEXESVC" in out.read_text()
