"""The C parts of reading Winlogbeat / ECS documents against the Python functions they stand in
for: the walks (``_flatten.dotted``, ``_flatten.event_data`` = ``ecs._walk_py``,
``ecs._event_data_py``), the per-name loops (``_flatten.pick``, ``_flatten.upper_guids`` =
``ecs._pick_py``, ``ecs._upper_guids_py``) and the line scan (``_flatten.suspicious`` =
``sanitize.suspicious_py``).

Same leaves, same dotted paths in the same order, the first of a repeated path kept, on random
documents and on every Winlogbeat golden document of ../shared; hostile lines (broken JSON,
huge fields, bad UTF-8, deep nesting) are counted the same way with either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paths import SHARED, need_shared
from scmwatch.events import ecs, sanitize
from scmwatch.events.model import ReadStats
from scmwatch.events.normalize import _flatten
from scmwatch.events.read import discover, read_input

if _flatten is None:
    pytest.skip("the C extension was not built (no compiler at install time)", allow_module_level=True)

WINLOGBEAT = SHARED / "corpora" / "winlogbeat-modules"

_names = ["winlog", "event_data", "user_data", "a", "a.b", "b", "", "winlog.event_data", "winlog.user_data.X",
          "é", "\u2028"]
_keys = st.one_of(st.sampled_from(_names), st.text(max_size=6), st.integers(0, 3))
_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.just({}),
                    st.lists(st.integers(), max_size=3))
_docs = st.recursive(st.dictionaries(_keys, _leaves, max_size=5),
                     lambda inner: st.dictionaries(_keys, st.one_of(_leaves, inner), max_size=5),
                     max_leaves=30)
_starts = st.dictionaries(st.sampled_from(["a", "a.b", "winlog.x"]), st.integers(), max_size=2)


def _walks(doc: dict[str, Any], prefix: str = "", start: dict[str, Any] | None = None) -> None:
    py, c = dict(start or {}), dict(start or {})
    ecs._walk_py(doc, prefix, py)
    _flatten.dotted(doc, prefix, c)
    assert list(c.items()) == list(py.items())
    assert all(c[k] is py[k] for k in py)
    data_c, data_py = _flatten.event_data(c), ecs._event_data_py(py)
    assert list(data_c.items()) == list(data_py.items())


@settings(max_examples=300, deadline=None)
@given(_docs, st.sampled_from(["", "x.", "winlog."]), _starts)
def test_walks_equal_the_python_twins(doc: dict[str, Any], prefix: str, start: dict[str, Any]) -> None:
    _walks(doc, prefix, start)


_paths = st.sampled_from(["a", "b", "winlog.x", "winlog.event_data.A", "", "é"])
_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.just([]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_paths, _values, max_size=6),
       st.lists(st.tuples(_paths, st.sampled_from(["X", "Y", "Z"])), max_size=8))
def test_pick_equals_the_python_twin(flat: dict[str, Any], pairs: list[tuple[str, str]]) -> None:
    c, py = _flatten.pick(flat, tuple(pairs)), ecs._pick_py(flat, tuple(pairs))
    assert list(c.items()) == list(py.items())
    assert all(c[k] is py[k] for k in py)


_guidish = st.builds(lambda a, b: "{" + "-".join((a, b[:4], b[4:8], b[8:12], a + b[:4])) + "}",
                     st.text("0123456789abcdefABCDEFgG-", min_size=8, max_size=8),
                     st.text("0123456789abcdefABCDEF", min_size=12, max_size=12))
_out_values = st.one_of(_guidish, _guidish.map(lambda g: g[:-1] + "]"),
                        _guidish.map(lambda g: g.replace("a", "\xe1")),
                        _guidish.map(lambda g: g.replace("b", "\u0431")),
                        st.text(max_size=40), st.integers(), st.none())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=3), _out_values, max_size=6))
def test_upper_guids_equals_the_python_twin(out: dict[str, Any]) -> None:
    c, py = dict(out), dict(out)
    _flatten.upper_guids(c)
    ecs._upper_guids_py(py)
    assert list(c.items()) == list(py.items())
    assert all(type(c[k]) is type(py[k]) for k in py)


_scan_parts = [b"\\", b"u", b"d", b"D", b"{", b"[", b"x", b"\\ud8", b"\\u", b"\xff"]
_scan_bytes = st.lists(st.sampled_from(_scan_parts), max_size=140).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(_scan_bytes)
def test_line_scan_equals_the_python_twin(line: bytes) -> None:
    assert _flatten.suspicious(line, sanitize.MAX_DEPTH) is sanitize.suspicious_py(line)
    for n in (sanitize.MAX_DEPTH, sanitize.MAX_DEPTH + 1):
        text = b"[" * n + line[:0]
        assert _flatten.suspicious(text, sanitize.MAX_DEPTH) is sanitize.suspicious_py(text)


def test_dotted_paths_stay_right_when_the_path_cache_fills() -> None:
    """Paths are cached across documents (prefix -> key -> path) and the cache is emptied when
    full: hostile documents with ever new keys still walk exactly as the Python function."""
    for i in range(40_000):
        doc = {f"k{i}": {"a": i, f"b{i % 7}": {"c": i}}, "winlog": {"channel": "System"}}
        if i % 997 == 0 or i > 39_990:
            _walks(doc)
        else:
            _flatten.dotted(doc, "", {})


def test_dotted_keys_and_nested_keys_of_one_path() -> None:
    doc = {"winlog": {"event_data": {"A": 1}}, "winlog.event_data.A": 2, "winlog.user_data.A": 3, 7: {"x": 1}}
    out: dict[str, Any] = {}
    _flatten.dotted(doc, "", out)
    assert out == {"winlog.event_data.A": 1, "winlog.user_data.A": 3}  # first wins; non-str keys skipped
    assert _flatten.event_data(out) == {"A": 3}  # user_data after event_data, as in Python


def test_deep_nesting_raises_instead_of_crashing() -> None:
    doc: dict[str, Any] = {"x": 1}
    for _ in range(100_000):
        doc = {"k": doc}
    with pytest.raises(RecursionError):
        _flatten.dotted(doc, "", {})


def _python_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecs, "_walk", ecs._walk_py)
    monkeypatch.setattr(ecs, "_event_data", ecs._event_data_py)
    monkeypatch.setattr(ecs, "_pick", ecs._pick_py)
    monkeypatch.setattr(ecs, "_upper_guids", ecs._upper_guids_py)
    monkeypatch.setattr(sanitize, "_scan", None)


def _golden() -> list[dict[str, Any]]:
    docs = []
    for p in sorted(need_shared(WINLOGBEAT).rglob("*.golden.json")):
        data = orjson.loads(p.read_bytes())
        docs += data if type(data) is list else [data]
    return docs


def test_every_winlogbeat_golden_document_maps_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _golden()
    assert docs
    for doc in docs:
        _walks(doc)
    with_c = [ecs.from_ecs(d) for d in docs]
    _python_twins(monkeypatch)
    with_py = [ecs.from_ecs(d) for d in docs]
    for a, b in zip(with_c, with_py, strict=True):
        assert list(a.items()) == list(b.items())  # type: ignore[union-attr]


def _read(path: Path) -> tuple[list[tuple], dict[str, int], list[str]]:
    lines: list[str] = []
    stats = ReadStats(on_error=lambda e: lines.append(e.line()))
    events = [(e.record_id, e.fields) for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    return events, dict(stats.errors), lines


def test_hostile_winlogbeat_lines_are_counted_the_same(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"ServiceName": "svc", "ImagePath": "C:\\x.exe"}
    doc = {"@timestamp": "2024-05-06T08:00:00.000Z", "event": {"code": "7045", "module": "system"},
           "winlog": {"channel": "System", "event_id": 7045, "computer_name": "H1", "record_id": 1,
                      "provider_name": "Service Control Manager", "event_data": data}}
    deep: Any = "x"
    for _ in range(150):
        deep = {"d": deep}
    huge = json.loads(json.dumps(doc))
    huge["winlog"]["event_data"]["ImagePath"] = "A" * (2 << 20)
    nested = json.loads(json.dumps(doc))
    nested["winlog"]["event_data"]["Deep"] = deep
    body = [orjson.dumps(doc), b'{"winlog": {"channel": "System", "event_id": ', orjson.dumps(huge),
            orjson.dumps(nested), orjson.dumps(doc).replace(b"svc", b"sv\xff\xfe"),
            orjson.dumps(doc).replace(b"svc", b"\\ud800svc"), b"[1, 2]", orjson.dumps(doc)]
    path = tmp_path / "winlogbeat.ndjson"
    path.write_bytes(b"\n".join(body) + b"\n")
    with_c = _read(path)
    _python_twins(monkeypatch)
    assert _read(path) == with_c
    events, errors, lines = with_c
    assert [rid for rid, _ in events] == [1, 3, 5, 8]  # orjson refuses a lone surrogate (line 6)
    assert events[1][1]["ImagePath"] == "A" * (2 << 20)
    assert events[2][1]["ServiceName"] == "sv\ufffd\ufffd"
    assert errors == {"json-line": 3, "encoding": 1, "json-not-event": 1}
    assert len(lines) == 5
