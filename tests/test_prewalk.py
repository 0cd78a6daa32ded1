"""The walk begun early (``events.read.Prewalk``): ``discover`` with it finds the inputs, sizes
and problems it finds alone, in the same order, and does not stat the files it stat'ed; the C
stats (``_stat.modes``) equal their Python twin."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from scmwatch.events import read
from scmwatch.events.model import ReadStats
from scmwatch.events.read import Prewalk, discover


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    top = tmp_path / "logs"
    (top / "b" / "deep").mkdir(parents=True)
    (top / "a").mkdir()
    (top / "a" / "one.evtx").write_bytes(b"x" * 10)
    (top / "a" / "two.jsonl").write_bytes(b"{}\n")
    (top / "a" / "notes.txt").write_text("not a log")
    (top / "b" / "deep" / "three.json").write_bytes(b"[]" * 7)
    (top / "b" / "dangling.evtx").symlink_to(tmp_path / "gone")
    (top / "b" / "link.jsonl").symlink_to(top / "a" / "two.jsonl")
    os.mkfifo(top / "b" / "fifo.jsonl")
    with zipfile.ZipFile(top / "b" / "pack.zip", "w") as z:
        z.writestr("in.jsonl", "{}\n")
    return top


def _found(paths: list[str], prewalk: Prewalk | None = None):
    stats = ReadStats()
    inputs = [(i.name, i.size) for i in discover(paths, stats, prewalk)]
    return inputs, [e.line() for e in stats.first_errors], stats.files_skipped, stats.files_failed


def test_discover_with_a_prewalk_finds_what_it_finds_alone(tree: Path, tmp_path: Path) -> None:
    single = tmp_path / "single.jsonl"
    single.write_bytes(b"{}\n")
    paths = [str(tree), str(single), str(tree / "a")]
    alone = _found(paths)
    assert len(alone[0]) == 8 and alone[3] == 1 and alone[2] == 3  # dangling: failed; notes x2, fifo: skipped
    assert _found(paths, Prewalk(paths)) == alone


def test_a_file_the_prewalk_could_not_stat_is_stated_again(tree: Path) -> None:
    pre = Prewalk([str(tree)])
    (tree / "b" / "dangling.evtx").unlink()
    (tree / "b" / "dangling.evtx").write_bytes(b"now here")
    inputs, problems, _, failed = _found([str(tree)], pre)
    assert (str(tree / "b" / "dangling.evtx"), 8) in inputs and failed == 0
    assert not [p for p in problems if "dangling" in p]


def test_discover_takes_the_prewalks_stats(tree: Path, monkeypatch) -> None:
    pre = Prewalk([str(tree)])
    pre.looked()  # the thread is done
    calls: list[str] = []
    real = os.stat

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(read.os, "stat", counting)
    inputs, *_ = _found([str(tree)], pre)
    assert len(inputs) == 5
    # the named directory, and the dangling link stat'ed again for its error; no other file
    assert calls == [str(tree), str(tree / "b" / "dangling.evtx")]


def test_stat_modes_in_c_equal_the_python_twin(tree: Path) -> None:
    try:
        from scmwatch.sigma import _stat
    except ImportError:
        pytest.skip("built without the C extensions")
    paths = [str(p) for p in sorted(tree.rglob("*"))]
    paths += [str(tree / "missing"), str(tree / "a" / "one.evtx" / "x")]
    got = _stat.modes(paths)
    assert got == read._py_modes(paths)
    assert got[-2:] == [None, None] and any(g is not None and g[1] == 10 for g in got)
    assert _stat.modes([]) == []
    with pytest.raises(TypeError):
        _stat.modes([1])


def test_log_name_test_is_splitexts() -> None:
    """``_is_log_name`` answers as ``os.path.splitext`` of the lower-cased name would, on names
    with leading, doubled and trailing dots, directories (zip members), case and non-ASCII."""
    stems = ["", ".", "..", "a", ".a", "a.", "a..", "dir/", "dir/.", "d.x/", "d.x/.", "d.x/a", "/", "a/b/",
             "İ", "ǅ.", "x.tar", "  "]
    exts = ["", ".", ".evtx", ".EVTX", ".Json", ".jsonl", ".ndjson", ".xml", ".log", ".tsv", ".gz", ".zip",
            ".txt", ".evtx.txt", ".gz/", ".zip/x", "evtx", ".ev", ".evtxx", "\u0130.log", ".lOg"]
    names = [stem + ext + more for stem in stems for ext in exts for more in ("", ext)]
    for name in names:
        expected = os.path.splitext(name.lower())[1] in read.LOG_EXTENSIONS
        assert read._is_log_name(name) == expected, name


def test_a_walked_file_is_the_input_its_constructor_makes(tree: Path) -> None:
    """The walk makes its inputs without the dataclass's ``__init__``: each is equal to, hashes
    as and is as frozen as ``InputFile(path, path, named=False, size=size)``."""
    import dataclasses

    found = list(discover([str(tree)], ReadStats(), prewalk=Prewalk([str(tree)])))
    walked = [f for f in found if f.member is None]
    assert walked
    for f in walked:
        made = read.InputFile(f.path, f.path, named=False, size=f.size)
        assert f == made and hash(f) == hash(made) and repr(f) == repr(made)
        assert dataclasses.astuple(f) == (f.path, f.path, None, False, False, os.path.getsize(f.path))
        with pytest.raises(dataclasses.FrozenInstanceError):
            f.size = 1  # type: ignore[misc]
