"""Many small EVTX files: the per-file shortcuts change nothing a hunt reports.

A small EVTX file is read whole where it is sniffed (``read.WHOLE_EVTX``), the hunt's short
sorted runs of hits are merged by one sort (``spill.merge_sorted``), the read gate's answers
are shared by a run's files (``HuntContext.gate_answers``) and runs of whole files are hunted in
one call each (``hunt.hunt_files``). The reference is the paths they replace, run in the same
test: every file read chunk by chunk with ``pread`` (``WHOLE_EVTX = 0``), every merge a
``heapq.merge``, every file's gate asking afresh, one ``hunt_unit`` call per file
(``BATCH_FILES = 1``). Alerts (their JSON lines, in order),
the summary and the problem lines must be identical -- on the shared attack samples copied
as the side-by-side benchmark's x5 input is, and on built files with the damage the EVTX reader
reports (cut chunks, records the chunk headers list but the file lacks, zeroed chunks).
"""

from __future__ import annotations

import heapq
import io
import random
import shutil
from operator import itemgetter
from pathlib import Path

import pytest

import scmwatch.hunt as hunt
import scmwatch.spill as spill
from evtxbuild import CHUNK, chunk, evtx_file, records, service_chunks, simple_file
from paths import ATTACK_SAMPLES, SIGMAHQ, need_shared
from scmwatch.events import read
from scmwatch.events.model import ReadStats
from scmwatch.events.read import discover, read_input
from scmwatch.hunt import run_hunt
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import Engine, load_rules
from scmwatch.sinks.jsonl import JsonlSink


class _AskEveryFile(hunt.ReadGate):
    """The gate keeping its own answers (the run's shared ones are not taken)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name != "decisions" or not hasattr(self, "decisions"):
            super().__setattr__(name, value)


def _reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paths the shortcuts replace: whole files never read at once, merges by heapq, the
    gate asked per file, a call per file."""
    monkeypatch.setattr(read, "WHOLE_EVTX", 0)
    monkeypatch.setattr(hunt, "BATCH_FILES", 1)
    monkeypatch.setattr(spill, "merge_sorted", lambda lists, key: list(heapq.merge(*lists, key=key)))
    monkeypatch.setattr(hunt, "ReadGate", _AskEveryFile)


def _hunt(root: Path, rs, engine, **kw) -> tuple[bytes, dict, list[str]]:
    """The hunt's JSON lines as the CLI writes them, its summary (without timings) and problems."""
    out = io.StringIO()
    sink = JsonlSink(out)
    errors: list[str] = []
    res = run_hunt([str(root)], rs, engine=engine, sink=sink.write, lines=True,
                   on_error=lambda e: errors.append(e.line()), **kw)
    summary = {k: v for k, v in res.summary.items()
               if k not in ("seconds", "events_per_second", "output_seconds", "memory")}
    return out.getvalue().encode(), summary, errors


def _built(root: Path) -> Path:
    """Small files as the reader meets them: whole, several chunks, a zeroed (preallocated)
    chunk, a file cut inside its chunk, a chunk header listing records the chunk lacks, a header
    alone, and files of the built-in pack's service installs."""
    root.mkdir()
    (root / "a.evtx").write_bytes(simple_file(5))
    (root / "b.evtx").write_bytes(evtx_file(service_chunks(3, per_chunk=20)))
    (root / "c.evtx").write_bytes(evtx_file([*service_chunks(1, per_chunk=10), bytes(CHUNK)]))
    (root / "d.evtx").write_bytes(simple_file(4)[:-1000])
    (root / "e.evtx").write_bytes(evtx_file([chunk(records(1, 3), 1, 6)]))
    (root / "f.evtx").write_bytes(evtx_file([])[:4096])
    (root / "g.evtx").write_bytes(evtx_file(service_chunks(5, per_chunk=30)))  # past WHOLE_EVTX
    for k in range(12):
        (root / f"s{k:02d}.evtx").write_bytes(evtx_file(service_chunks(1 + k % 2, per_chunk=8 + k)))
        # events no rule looks at (the gate turns them away), on channels only these files have
        (root / f"t{k:02d}.evtx").write_bytes(simple_file(2 + k, channel=f"Chan{k % 3}", event_id=9000 + k))
    return root


@pytest.mark.parametrize("budget", [4096, 7])
def test_built_files_hunt_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    rs = load_rules([str(PACK_DIR)])
    root = _built(tmp_path / "logs")
    new = _hunt(root, rs, Engine(rs), memory_budget=budget, run_size=5)
    assert new[1]["alerts"] > 20 and new[2]  # alerts from many files, and the damage reported
    _reference(monkeypatch)
    assert _hunt(root, rs, Engine(rs), memory_budget=budget, run_size=5) == new


def _read_all(root: Path) -> list:
    stats = ReadStats()
    events = [(e.source, e.record_id, e.fmt, e.fields) for inp in discover([str(root)], stats)
              for e in read_input(inp, stats)]
    return [events, stats.files, stats.events, stats.bytes, stats.files_failed, dict(stats.errors),
            [(e.source, e.kind, e.message, e.record) for e in stats.first_errors]]


def test_built_files_read_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _built(tmp_path / "logs")
    new = _read_all(root)
    assert new[2] > 100 and new[5].get("evtx-truncated") and new[5].get("evtx-record")
    monkeypatch.setattr(read, "WHOLE_EVTX", 0)
    assert _read_all(root) == new


def test_merge_sorted_is_heapq_merge() -> None:
    rng = random.Random(7)
    key = itemgetter(0)
    lists = [sorted(((rng.randrange(50), u, i), u) for i in range(rng.randrange(6))) for u in range(300)]
    lists = [x for x in lists if x]
    assert spill.merge_sorted(lists, key) == list(heapq.merge(*lists, key=key))


def test_attack_samples_x5_hunt_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's x5 input (the attack samples copied five times) with all SigmaHQ rules."""
    corpus = need_shared(ATTACK_SAMPLES)
    rules = need_shared(SIGMAHQ / "rules")
    root = tmp_path / "x5"
    for k in range(5):
        shutil.copytree(corpus, root / f"copy{k}")
    rs = load_rules([str(rules)])
    new = _hunt(root, rs, Engine(rs))
    assert new[1]["files"] > 1000 and new[1]["alerts"] > 1000
    _reference(monkeypatch)
    assert _hunt(root, rs, Engine(rs)) == new
