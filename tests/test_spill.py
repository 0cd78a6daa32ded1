"""Spill files: compressed blocks, objects shared between records stored once, order kept."""

from __future__ import annotations

import math
import pickle
import random
from typing import NamedTuple

from scmwatch import spill


def test_records_come_back_in_order_across_many_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "BLOCK", 512)
    d = spill.SpillDir(str(tmp_path))
    rng = random.Random(3)
    records = [(i, rng.random(), {"EventID": i % 7, "x": "y" * rng.randrange(300)}) for i in range(2000)]
    path = spill.write_run(d, "t", records)
    assert path is not None
    assert list(spill.read_stream(path)) == records
    assert spill.write_run(d, "t", []) is None


def test_fields_shared_by_several_hits_are_written_once(tmp_path):
    """Many rules matching one event give hits that share its fields dict: one copy on disk
    (and one object after reading), which with all SigmaHQ is most of the spill."""
    d = spill.SpillDir(str(tmp_path))
    fields = {"CommandLine": "c:\\windows\\system32\\cmd.exe /c " + "A" * 4000, "EventID": 1}
    hits = [((1.0, "h", 0, f"rule-{i}"), fields, 7, "evtx") for i in range(50)]
    path = spill.write_run(d, "hits", hits)
    size = (tmp_path / path).stat().st_size
    assert size < len(pickle.dumps(fields)) // 4  # shared once, then compressed
    back = list(spill.read_stream(path))
    assert back == hits
    assert all(b[1] is back[0][1] for b in back)


def test_merge_runs_over_block_files_and_lists(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "BLOCK", 256)
    d = spill.SpillDir(str(tmp_path))
    rng = random.Random(5)
    runs = [sorted(rng.sample(range(100000), 300)) for _ in range(9)]
    sources = [spill.write_run(d, "r", r) for r in runs[:6]] + runs[6:]
    merged = list(spill.merge_runs(sources, key=lambda x: x, spill=d, fan_in=2))
    assert merged == sorted(x for r in runs for x in r)


class _Named(NamedTuple):
    key: tuple
    payload: dict


def test_records_come_back_exactly_in_either_encoding(tmp_path, monkeypatch):
    """Blocks of builtin values are marshalled, a block holding anything else (a NamedTuple, as
    correlation alerts are) is pickled: both give back the same types and values, including
    what JSON could not carry (tuples vs lists, lone surrogates, huge ints, NaN)."""
    monkeypatch.setattr(spill, "BLOCK", 64)
    d = spill.SpillDir(str(tmp_path))
    plain = [((float(i), "f\ud800", 10**40 + i), {"a": [1, (2, 3)], "n": None, "b": True}, i)
             for i in range(40)]
    named = [_Named((float(i),), {"x": i}) for i in range(40)]
    odd = [(float("nan"), frozenset({1}), b"\x00bytes")]
    records = plain[:20] + named + plain[20:] + odd
    back = list(spill.read_stream(spill.write_run(d, "t", records)))
    assert back[:-1] == records[:-1]
    assert [type(r) for r in back] == [type(r) for r in records]
    assert type(back[0][1]["a"][1]) is tuple and math.isnan(back[-1][0]) and back[-1][1:] == odd[0][1:]
