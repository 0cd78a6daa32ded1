"""The memo of generated dataclass and named-tuple code and of regexes (``scmwatch.codememo``):
a second start compiles nothing, the classes and patterns it makes behave as without the memo,
and a damaged, foreign or unwritable memo only costs the compiling."""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from scmwatch import codememo


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _define() -> dict[str, Any]:
    """Classes of the shapes scmwatch uses: plain, frozen with slots, defaults, named tuples."""

    @dataclasses.dataclass
    class Plain:
        a: int
        b: list = dataclasses.field(default_factory=list)
        c: str = "x"

    @dataclasses.dataclass(frozen=True, slots=True)
    class Frozen:
        path: str
        size: int | None = None

    class Typed(NamedTuple):
        x: int
        y: str = "y"

    Point = collections.namedtuple("Point", "x y")
    re.purge()  # re's own per-process cache would answer before the memo is asked
    patterns = [re.compile(p, f) for p, f in PATTERNS]
    return {"Plain": Plain, "Frozen": Frozen, "Typed": Typed, "Point": Point, "patterns": patterns}


PATTERNS = [(r"(?P<drive>[a-z]):\\(?P<rest>.*?)(?:\.exe)?$", re.I), (r"^\s*(\d+)\s*(?#c)$", re.M | re.X),
            (rb"(?i)\x00[^\x00]{2,}", 0), (r"(?s)a.b|(?<=x)c", 0)]


def _behaviour(cls: dict[str, Any]) -> list[Any]:
    p = cls["Plain"](1)
    f = cls["Frozen"]("p")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.size = 3  # type: ignore[misc]
    return [repr(p), p == cls["Plain"](1, [], "x"), p == cls["Plain"](2), cls["Plain"](1).b is not p.b,
            repr(f), hash(f) == hash(cls["Frozen"]("p", None)), not hasattr(f, "__dict__"),
            cls["Typed"](1), cls["Typed"](1, "z")._replace(x=2), cls["Point"](1, y=2)._asdict(),
            typing.get_type_hints(cls["Typed"]),
            [(p.pattern, p.flags, p.groups, p.groupindex) for p in cls["patterns"]],
            [bool(p.search(s)) for p in cls["patterns"][:2] for s in ("C:\\x.EXE", " 42 \n", "")],
            cls["patterns"][0].match("c:\\tmp\\a.exe").groupdict(),
            cls["patterns"][2].findall(b"\x00AB\x00c")]


def test_second_start_compiles_nothing_and_classes_behave_the_same(cache: Path) -> None:
    plain = _behaviour(_define())  # no memo at all
    with codememo.remembered("probe") as first:
        got_first = _behaviour(_define())
    assert first.compiled > 0
    path = codememo.memo_path("probe")
    assert path is not None and os.path.exists(path)
    with codememo.remembered("probe") as second:
        got_second = _behaviour(_define())
    assert second.compiled == 0
    assert len(second.used) == first.compiled
    assert sum(mode.startswith(codememo.REGEX) for mode, _ in second.used) == len(PATTERNS)
    assert got_first == got_second == plain
    re.purge()
    with codememo.remembered("probe"):
        stored = [re.compile(p, f) for p, f in PATTERNS]
    re.purge()
    assert stored == [re.compile(p, f) for p, f in PATTERNS]  # the same flags, pattern and SRE code


def test_second_start_compiles_no_forward_reference(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``NamedTuple``'s string annotations (``from __future__ import annotations``) are compiled
    by ``typing.ForwardRef`` at class definition: through the memo, not again at a second start."""
    with codememo.remembered("probe") as first:
        _define()
    assert ("eval", "int") in first.used and ("eval", "str") in first.used
    calls: list[Any] = []
    real = compile

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("builtins.compile", counting)
    with codememo.remembered("probe") as second:
        cls = _define()
    assert second.compiled == 0 and calls == []
    assert typing.get_type_hints(cls["Typed"]) == {"x": int, "y": str}
    with pytest.raises(SyntaxError), codememo.remembered("probe"):
        typing.ForwardRef("not an expression (")  # typing's own error, as without the memo
    cls["Typed"](1)


def test_the_patch_ends_with_the_block(cache: Path) -> None:
    with pytest.raises(RuntimeError), codememo.remembered("probe"):
        assert dataclasses.exec.__self__ is not None  # type: ignore[attr-defined]
        raise RuntimeError
    assert not hasattr(dataclasses, "exec")
    assert not hasattr(collections, "eval")
    assert not hasattr(typing, "compile")
    assert re._compiler.compile is codememo._ORIGINAL_REGEX  # type: ignore[attr-defined]
    _define()  # the standard library's own exec/eval again


def test_damaged_memo_is_compiled_again_and_rewritten(cache: Path) -> None:
    with codememo.remembered("probe"):
        _define()
    path = codememo.memo_path("probe")
    assert path is not None
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    assert codememo.read_memo(path) == {}
    with codememo.remembered("probe") as memo:
        got = _behaviour(_define())
    assert memo.compiled > 0
    assert got == _behaviour(_define())
    assert codememo.read_memo(path)  # written anew
    Path(path).write_bytes(b"not a memo")
    assert codememo.read_memo(path) == {}


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root")
def test_memo_of_another_user_is_not_run(cache: Path) -> None:
    with codememo.remembered("probe"):
        _define()
    path = codememo.memo_path("probe")
    assert path is not None and codememo.read_memo(path)
    os.chown(path, 4321, -1)
    assert codememo.read_memo(path) == {}


def test_unwritable_or_disabled_cache_only_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(blocker / "cache"))  # under a regular file
    with codememo.remembered("probe") as memo:
        got = _behaviour(_define())
    assert memo.compiled > 0 and got == _behaviour(_define())
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    assert codememo.memo_path("probe") is None
    with codememo.remembered("probe") as memo:
        _define()
    assert memo.compiled > 0


def test_memo_keeps_other_versions_code_up_to_a_bound(cache: Path) -> None:
    """Two installs sharing a cache directory keep each other's code; the file does not grow
    past KEEP starts' worth."""
    with codememo.remembered("probe"):
        _define()
    path = codememo.memo_path("probe")
    assert path is not None
    first = set(codememo.read_memo(path))
    with codememo.remembered("probe") as memo:  # another version: one more class
        _define()
        dataclasses.make_dataclass("Other", [("q", int)])
    assert memo.compiled > 0
    assert first < set(codememo.read_memo(path))
    for i in range(3 * codememo.KEEP * len(first)):
        with codememo.remembered("probe") as memo:
            _define()
            dataclasses.make_dataclass("Other", [(f"q{i}", int)])
        assert len(codememo.read_memo(path)) <= codememo.KEEP * len(memo.used)


def test_console_script_hunt_uses_the_memo(tmp_path: Path) -> None:
    events = tmp_path / "two.jsonl"
    events.write_text('{"Channel": "System", "EventID": 7045, "Computer": "h1", "ServiceName": "x"}\n')
    env = dict(os.environ, SCMWATCH_CACHE_DIR=str(tmp_path / "cache"))
    args = [sys.executable, "-m", "scmwatch", "hunt", str(events), "--format", "jsonl"]
    first = subprocess.run(args, env=env, capture_output=True, timeout=120, check=True)
    memo = tmp_path / "cache" / "codememo" / f"hunt.{sys.implementation.cache_tag}.marshal"
    assert memo.exists()
    stored = codememo.read_memo(str(memo))
    assert sum(mode == "exec" for mode, _ in stored) > 50  # the dataclasses of a hunt
    before = memo.stat().st_mtime_ns
    second = subprocess.run(args, env=env, capture_output=True, timeout=120, check=True)
    assert memo.stat().st_mtime_ns == before  # nothing compiled, nothing written
    assert second.stdout == first.stdout
