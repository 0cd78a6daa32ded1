"""Compiled Hyperscan databases are cached on disk and reused; a bad cache file is recompiled."""

from __future__ import annotations

import errno
import multiprocessing
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine_pairs import brute, engine_pair
from scmwatch.sigma import index, tagged

pytestmark = pytest.mark.skipif(index.hyperscan is None, reason="Hyperscan is not installed")

LITERALS = ["\\psexesvc.exe", "svcctl", "\\admin$", "sc.exe", "create", "binpath="]
TEXTS = ["c:\\windows\\psexesvc.exe\x00svcctl", "sc.exe \\\\host create x binpath= c:\\a.exe", "nothing here"]


def _scan_all(scan) -> list[list[int]]:
    return [sorted(scan(t)) for t in TEXTS]


def test_cache_round_trip(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path))
    expected = [[i for i, lit in enumerate(LITERALS) if lit in t] for t in TEXTS]
    assert _scan_all(index.make_scanner(LITERALS)) == expected  # compiled, then stored
    files = list((tmp_path / "hyperscan").glob("*.hsdb"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    stamp = files[0].stat().st_mtime_ns
    assert _scan_all(index.make_scanner(LITERALS)) == expected  # loaded from the cache
    assert files[0].stat().st_mtime_ns == stamp
    # other literals: another database
    assert index.make_scanner(["create"])(TEXTS[1]) == [0]
    assert len(list((tmp_path / "hyperscan").glob("*.hsdb"))) == 2


def test_corrupt_cache_file_is_recompiled(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path))
    index.make_scanner(LITERALS)
    (path,) = (tmp_path / "hyperscan").glob("*.hsdb")
    path.write_bytes(b"garbage" * 10)
    expected = [[i for i, lit in enumerate(LITERALS) if lit in t] for t in TEXTS]
    assert _scan_all(index.make_scanner(LITERALS)) == expected
    assert path.read_bytes() != b"garbage" * 10  # replaced by a good one


def test_unwritable_or_disabled_cache_still_scans(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(blocker))  # cannot create a directory here
    assert sorted(index.make_scanner(LITERALS)(TEXTS[0])) == [0, 1]
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    assert index.hyperscan_cache_dir() is None
    assert sorted(index.make_scanner(LITERALS)(TEXTS[0])) == [0, 1]


def _hold_claim(cache: str, name: str, conn) -> None:
    fd = index._claim(cache, name)
    conn.send(fd is not None)
    conn.recv()  # until told to let go


@contextmanager
def _claimed_elsewhere(cache: Path, name: str):
    """Another process holds the compile lock of database ``name`` meanwhile."""
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_hold_claim, args=(str(cache), name, there))
    child.start()
    try:
        assert here.poll(20) and here.recv() is True
        yield
    finally:
        here.send("go")
        child.join(20)
        assert child.exitcode == 0


PATTERNS = ["\\x1e\\x10\\x10a", "\\x1e\\x10\\x10b", "x\\x1d"]


def test_a_database_claimed_by_another_process_is_busy_until_stored(tmp_path: Path, monkeypatch) -> None:
    """``--jobs`` workers meeting the same new bucket compile its atom database once: the one
    that cannot claim it hears ``Busy`` (and goes on without it), not a second compile."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "hyperscan"
    name = index._db_name(PATTERNS, True)
    with _claimed_elsewhere(cache, name):
        with pytest.raises(index.Busy):
            index._hs_database(PATTERNS, regex=True, claim=True)
        assert not (cache / f"{name}.hsdb").exists()
        assert index._hs_database(PATTERNS, regex=True) is not None  # unclaimed: compiled anyway
    (cache / f"{name}.hsdb").unlink()
    assert index._hs_database(PATTERNS, regex=True, claim=True) is not None  # free again: compiled
    assert (cache / f"{name}.hsdb").stat().st_size > 0
    with _claimed_elsewhere(cache, name):  # stored: loaded, whoever holds the lock
        assert index._hs_database(PATTERNS, regex=True, claim=True) is not None


def test_busy_atom_database_keeps_the_literal_prefilter_then_moves(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rules = {f"r{i}": f"sel:\n  CommandLine|contains: ['tool{i}-a', 'tool{i}-b']\ncondition: sel"
             for i in range(4)}
    atom, literal = engine_pair(rules_dir, rules, "process_creation", "7e0b6a54")
    sysmon = ("Microsoft-Windows-Sysmon/Operational", 1)
    p = tagged.plan(literal.bucket(*sysmon).units)
    name = index._db_name(list(p.patterns), True)
    events = [{"Channel": sysmon[0], "EventID": 1, "CommandLine": f"run tool{i % 5}-b now"}
              for i in range(600)]
    with _claimed_elsewhere(tmp_path / "cache" / "hyperscan", name):
        b = atom.bucket(*sysmon)
        assert b.atoms is None and b.upgrade_in == index.BUSY_RETRY
        for f in events[:300]:
            assert [r.id for r in atom.match_fields(f)] == brute(literal, f)
        assert b.atoms is None
    for f in events[300:]:
        assert [r.id for r in atom.match_fields(f)] == brute(literal, f)
    assert b.atoms is not None and b.atoms.patterns == p.patterns  # retried: compiled and used


def test_cache_without_locks_compiles_without_one(tmp_path: Path, monkeypatch) -> None:
    """A file system that refuses locks (ENOLCK) must not look like a database forever busy."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path))

    def no_locks(*args) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(index.fcntl, "lockf", no_locks)
    assert index._hs_database(PATTERNS, regex=True, claim=True) is not None
    assert (tmp_path / "hyperscan" / f"{index._db_name(PATTERNS, True)}.hsdb").exists()


def test_a_large_literal_set_is_compiled_at_first_sight(tmp_path: Path, monkeypatch) -> None:
    """A bucket on the ramp whose literal database is not cached builds an automaton in every
    run; from ``COMPILE_AT_ONCE`` literals its database is compiled and stored instead (the next
    engine loads it), and its events take the Hyperscan literal path with the same matches.
    Without a cache to keep it in, the automaton as before."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    hashes = {i: "".join(f"    - 'SHA256={i:02d}{k:060d}'\n" for k in range(3)) for i in range(4)}
    rules = {f"d{i}": f"sel:\n  Hashes|contains:\n{h}condition: sel" for i, h in hashes.items()}
    _, literal = engine_pair(rules_dir, rules, "driver_load", "9e0b6a54")
    rs = literal.ruleset
    drivers = ("Microsoft-Windows-Sysmon/Operational", 6)
    events = [{"Channel": drivers[0], "EventID": 6, "Hashes": f"MD5=1,SHA256={i % 5:02d}{i % 3:060d}"}
              for i in range(12)]
    stored = tmp_path / "cache" / "hyperscan"

    def fresh(at_once: int) -> index.Bucket:
        monkeypatch.setattr(index, "COMPILE_AT_ONCE", at_once)
        engine = index.Engine(rs)
        b = engine.bucket(*drivers)
        assert b.upgrade_in > 0  # still on the ramp
        for f in events:
            assert [r.id for r in engine.match_fields(f)] == brute(literal, f)
        return b

    assert getattr(fresh(13).scan, "scan_db", None) is None and not list(stored.glob("*.hsdb"))
    b = fresh(12)
    assert b.scan.scan_db is not None and len(list(stored.glob("*.hsdb"))) == 1
    assert index.LiteralMatcher is None or b.lit_matcher is not None
    assert fresh(10**6).scan.scan_db is not None  # the next engine finds it in the cache
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    assert getattr(fresh(12).scan, "scan_db", None) is None
