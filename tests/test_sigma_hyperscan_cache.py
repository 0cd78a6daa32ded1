"""Compiled Hyperscan databases are cached on disk and reused; a bad cache file is recompiled."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmwatch.sigma import index

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
