"""``--jobs`` workers hand back one result per batch of whole files (``hunt.batch_result``):
the alerts, the summary counts and the reported problems stay those of ``--jobs 1``, also when
a file in the middle of a batch cannot be read or has broken lines.

Real files throughout: the simulator's logs cut into many small NDJSON files (with process
lineage and correlations across files), beside broken and unreadable inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import scmwatch.hunt as hunt
from scmwatch.events.model import ReadStats
from scmwatch.events.read import discover
from scmwatch.hunt import HuntContext, hunt_unit, run_hunt
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import Engine, load_rules
from scmwatch.simulate import Options, simulate
from scmwatch.spill import SpillDir


@pytest.fixture(scope="module")
def pack():
    rs = load_rules([str(PACK_DIR)])
    return rs, Engine(rs)


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """The simulated logs as 60-line files (~40 of them), and between them a file with broken
    lines, a file that is not a log at all and an empty one."""
    sim = tmp_path_factory.mktemp("sim")
    simulate(Options(scenarios=["all"], out=sim, events=2000, seed=5, hosts=4, labels=sim.parent / "l.jsonl"))
    out = tmp_path_factory.mktemp("many")
    n = 0
    for p in sorted(sim.rglob("*.jsonl")):
        lines = p.read_bytes().splitlines(keepends=True)
        for k in range(0, len(lines), 60):
            (out / f"part{n:03d}.jsonl").write_bytes(b"".join(lines[k:k + 60]))
            n += 1
    (out / "part005b.jsonl").write_bytes(b'{"EventID": 7045, "Channel": "System"\nnot json\n{"EventID": 1}\n')
    (out / "part011b.json").write_bytes(b"\x00\x01garbage that is no log format\xff")
    (out / "part017b.jsonl").write_bytes(b"")
    assert n >= 20
    return out


def _hunt(root: Path, pack, jobs: int):
    rs, engine = pack
    errors: list[str] = []
    res = run_hunt([str(root)], rs, engine=engine, jobs=jobs, on_error=lambda e: errors.append(e.line()))
    summary = {k: v for k, v in res.summary.items() if k not in ("seconds", "events_per_second", "memory",
                                                                 "output_seconds", "jobs", "parallelism")}
    return [a.to_dict() for a in res.alerts], summary, errors


def test_batched_results_equal_jobs_one(many: Path, pack) -> None:
    one = _hunt(many, pack, 1)
    two = _hunt(many, pack, 2)
    assert one[0] == two[0] and len(one[0]) > 10
    assert any(a.get("correlation") for a in one[0])  # correlations across files are in the comparison
    assert one[1] == two[1]
    assert one[1]["errors"] and one[1]["files"] >= 20
    # workers report in the order batches finish; every problem is there once
    assert sorted(one[2]) == sorted(two[2]) and len(one[2]) >= 3


def test_workers_are_gone_when_the_hunt_returns(many: Path, pack, monkeypatch) -> None:
    """The finished pool is terminated beside the merge (``hunt._retire``), but joined before
    ``run_hunt`` returns: no worker process or retiring thread outlives it, even when
    terminating takes longer than the merge (slowed down here)."""
    import multiprocessing
    import multiprocessing.pool
    import threading
    import time

    real = multiprocessing.pool.Pool.terminate

    def slow(self) -> None:
        time.sleep(0.3)
        real(self)

    monkeypatch.setattr(multiprocessing.pool.Pool, "terminate", slow)
    rs, engine = pack
    run_hunt([str(many)], rs, engine=engine, jobs=2)
    assert multiprocessing.active_children() == []
    assert not [t for t in threading.enumerate() if t.name == "scmwatch-pool-retire"]


def test_batch_with_a_failing_file_in_the_middle(many: Path, pack, monkeypatch) -> None:
    """One task's result for [good, broken, unreadable, good] carries what the four per-file
    results carry: each file's status, every error in unit order, merged counts and records."""
    rs, engine = pack
    stats = ReadStats()
    inputs = list(discover([str(many)], stats))
    names = [Path(i.name).name for i in inputs]
    picked = [names.index(n) for n in ("part004.jsonl", "part005b.jsonl", "part011b.json", "part012.jsonl")]
    batch = [(i, inputs[i]) for i in reversed(picked)]  # dispatch order need not be unit order
    spill = SpillDir()
    try:
        # a context each: the correlation stage's per-file fact dedup keeps state across units
        ctx = HuntContext(rs, spill, engine=engine)
        alone = [hunt_unit(ctx, i, unit, collect_errors=True) for i, unit in sorted(batch)]
        monkeypatch.setattr(hunt, "_CTX", HuntContext(rs, spill, engine=engine))
        monkeypatch.setattr(hunt, "_COLLECT", True)
        [got] = hunt._hunt_batch(batch)
        assert got.index == picked[0]
        assert [f.index for f in got.files] == picked
        assert [f.events for f in got.files] == [r.stats.events for r in alone]
        assert [f.errors for f in got.files] == [dict(r.stats.errors) for r in alone]
        assert got.files[1].errors and got.files[2].errors and not got.files[0].errors
        assert [e.line() for e in got.errors] == [e.line() for r in alone for e in r.errors]
        assert got.stats.events == sum(r.stats.events for r in alone)
        assert got.stats.errors == sum((r.stats.errors for r in alone), start=type(got.stats.errors)())
        assert got.hits == sum(r.hits for r in alone) and got.candidates == sum(r.candidates for r in alone)
        assert not got.hit_tail and not got.cand_mem  # written to one run and one stream
        assert got.seen == set().union(*(r.seen for r in alone))
    finally:
        spill.cleanup()


def test_batches_hand_out_every_unit_once_and_shrink_towards_the_end(many: Path) -> None:
    """Guided self-scheduling: every unit once, in dispatch order, in batches closed as soon as
    they reach at most 1/(8*jobs) of the estimated cost, the last ones smaller than the first
    ones, so that workers finish close together."""
    from scmwatch.split import dispatch_order, unit_size

    inputs = list(discover([str(many)], ReadStats()))
    units = list(enumerate(inputs * 8))  # enough units for many batches
    batches = hunt._batches(units, 2)
    assert [p for b in batches for p in b] == dispatch_order(units)
    def cost(b: list) -> int:
        return sum(unit_size(u) + hunt.FILE_COST for _, u in b)

    total = sum(map(cost, batches))
    assert all(cost(b[:-1]) < total / 16 for b in batches)
    assert len(batches) > 16 and max(map(cost, batches[-4:-1])) < min(map(cost, batches[:4]))
