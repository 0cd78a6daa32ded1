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


def _hunt(root: Path, pack, jobs: int, **kw):
    rs, engine = pack
    errors: list[str] = []
    res = run_hunt([str(root)], rs, engine=engine, jobs=jobs, on_error=lambda e: errors.append(e.line()),
                   **kw)
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


@pytest.mark.parametrize(("files", "run_size"), [(64, hunt.RUN_SIZE), (7, hunt.RUN_SIZE), (7, 4)])
def test_files_hunted_together_report_what_one_call_per_file_does(many: Path, pack, monkeypatch,
                                                                    files: int, run_size: int) -> None:
    """``--jobs 1`` hunts runs of up to ``BATCH_FILES`` whole files in one call each
    (``hunt.hunt_files``): the alerts (correlations across files among them), the summary and
    the problems, reported as they happen, are those of one ``hunt_unit`` call per file; also
    when a run's candidates go to disk early (``run_size`` 4)."""
    calls: list[int] = []
    real = hunt._hunt

    def counting(units, *args, **kwargs):
        calls.append(len(units))
        return real(units, *args, **kwargs)

    monkeypatch.setattr(hunt, "_hunt", counting)
    monkeypatch.setattr(hunt, "BATCH_FILES", files)
    got = _hunt(many, pack, 1, run_size=run_size)
    assert max(calls) == min(files, got[1]["files"]) and len(calls) < got[1]["files"] / 2
    monkeypatch.setattr(hunt, "BATCH_FILES", 1)
    calls.clear()
    assert _hunt(many, pack, 1, run_size=run_size) == got
    assert set(calls) == {1}
    assert any(a.get("correlation") for a in got[0]) and len(got[2]) >= 3


def test_each_file_of_a_batch_keeps_its_own_lineage_table(pack, monkeypatch, tmp_path: Path) -> None:
    """A legacy 4688 (no ParentProcessName) whose parent, services.exe, started in the file before
    it: hunted together, the second file still does not see the first one's processes (each
    file's own lineage table, as in a call per file), so the parent is left to the merge step
    (which knows the SCM's PIDs from System events only: the analytic does not fire)."""
    import json

    def proc(t: str, pid: str, image: str, creator: str, cmd: str) -> str:
        return json.dumps({"EventID": 4688, "Version": 1, "Channel": "Security", "Computer": "W7",
                           "TimeCreated": t, "Provider_Name": "Microsoft-Windows-Security-Auditing",
                           "NewProcessId": pid, "NewProcessName": image, "ProcessId": creator,
                           "CommandLine": cmd}) + "\n"

    system32 = "C:\\Windows\\System32\\"
    (tmp_path / "a.jsonl").write_text(proc("2024-05-01T10:07:00Z", "0x300", system32 + "services.exe",
                                           "0x1c4", "services.exe"))
    (tmp_path / "b.jsonl").write_text(proc("2024-05-01T10:08:00Z", "0x9cc", system32 + "cmd.exe", "0x300",
                                           "cmd.exe /c echo abc > \\\\.\\pipe\\abc"))
    got = _hunt(tmp_path, pack, 1)
    assert got[1]["lineage"]["deferred"] == 1 and got[1]["files"] == 2
    monkeypatch.setattr(hunt, "BATCH_FILES", 1)
    assert _hunt(tmp_path, pack, 1) == got


def test_workers_are_gone_when_the_hunt_returns(many: Path, pack, monkeypatch) -> None:
    """The finished workers are reaped after the merge (``hunt.join_retired``), but before
    ``run_hunt`` returns: no worker process outlives it, not even as a zombie, even when a
    worker takes its time to exit after its last result (slowed down here)."""
    import os
    import time

    from scmwatch import workers

    made: list[workers.Workers] = []
    real_init, real_exit = workers.Workers.__init__, os._exit

    def init(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    def lingering_exit(code: int) -> None:  # only the workers leave by os._exit here
        time.sleep(0.3)
        real_exit(code)

    monkeypatch.setattr(workers.Workers, "__init__", init)
    monkeypatch.setattr(os, "_exit", lingering_exit)
    rs, engine = pack
    run_hunt([str(many)], rs, engine=engine, jobs=3)
    assert len(made) == 1 and len(made[0].pids) == 2
    for pid in made[0].pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert not hunt._retiring


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


@pytest.fixture(scope="module")
def copies(many: Path, tmp_path_factory) -> Path:
    """Three copies of ``many`` in directories of their own (files of one name in each), and
    ``Security.jsonl`` (all of them in one) in ten more: a name group larger than one
    worker's share."""
    root = tmp_path_factory.mktemp("copies")
    for k in range(3):
        d = root / f"host{k}"
        d.mkdir()
        for f in many.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
    whole = b"".join(p.read_bytes() for p in sorted(many.glob("part*.jsonl")))
    for k in range(10):
        d = root / f"dc{k}"
        d.mkdir()
        (d / "Security.jsonl").write_bytes(whole)
    return root


def test_queues_keep_a_name_on_one_worker_and_hand_out_every_unit_once(copies: Path) -> None:
    """Each worker's queue (``hunt._queues``) holds whole name groups while its share allows
    (the buckets each worker meets, see the docstring); a group larger than a share spills
    over; every unit is handed out once; the shares stay within one file of each other."""
    from scmwatch.split import unit_size

    units = list(enumerate(discover([str(copies)], ReadStats())))
    queues = hunt._queues(units, 2)
    got = [p for q in queues for b in q for p in b]
    assert sorted(i for i, _ in got) == [i for i, _ in units]
    owners: dict[str, set[int]] = {}
    for w, q in enumerate(queues):
        for b in q:
            for _, u in b:
                owners.setdefault(hunt.affinity_key(u), set()).add(w)
    assert owners["security.jsonl"] == {0, 1}  # 10 files, over half the run: both workers
    assert sum(len(ws) > 1 for ws in owners.values()) <= 2 and len(owners) > 20
    loads = [sum(unit_size(u) + hunt.FILE_COST for b in q for _, u in b) for q in queues]
    biggest = max(unit_size(u) + hunt.FILE_COST for _, u in units)
    assert abs(loads[0] - loads[1]) <= biggest


def test_plan_gives_each_batch_once_own_queue_first_then_the_others_smallest() -> None:
    """What workers take (``hunt._Plan.take``): a worker's own queue from its largest
    batch on, then, its queue empty, the last (smallest) batch of the fullest other queue."""
    queues = [[["a0"], ["a1"], ["a2"]], [["b0"]], [["c0"], ["c1"]]]
    plan = hunt._Plan(queues)
    plan.join()
    assert plan.own == 0
    taken = [plan.take()[0] for _ in range(2)]
    plan.own = 1
    taken += [plan.take()[0] for _ in range(4)]
    assert taken == ["a0", "a1", "b0", "c1", "a2", "c0"]
    assert plan.take() == [] and plan.take() == []  # the tokens left over find nothing
    plan.join()
    assert plan.own == 1  # the second worker to join


def test_the_hunting_process_is_one_of_the_jobs(many: Path, pack, monkeypatch, tmp_path: Path) -> None:
    """``--jobs 2`` forks one worker: this process hunts units too (counted here: the worker's
    calls happen in its own copy of the counter), and reports its problems with its results;
    also ranges of a split file (replaying the ranges that came in between its own)."""
    here: list[int] = []
    real = hunt._hunt
    forked: list[int] = []
    workers = hunt.Workers

    def counting(units, *args, **kwargs):
        here.extend(i for i, _ in units)
        return real(units, *args, **kwargs)

    def counted(count, work):
        forked.append(count)
        return workers(count, work)

    monkeypatch.setattr(hunt, "_hunt", counting)
    monkeypatch.setattr(hunt, "Workers", counted)
    rs, engine = pack
    errors: list[str] = []
    res = run_hunt([str(many)], rs, engine=engine, jobs=2, on_error=lambda e: errors.append(e.line()))
    assert forked == [1]
    assert here and len(here) == len(set(here))  # how many the worker took depends on timing
    assert len(errors) >= 3 and res.summary["files"] >= 20
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"".join(p.read_bytes() for p in sorted(many.glob("part*.jsonl"))))
    here.clear()
    forked.clear()
    res = run_hunt([str(big)], rs, engine=engine, jobs=2, split_bytes=1 << 12)
    par = res.summary["parallelism"]
    assert par["ranges"] > 1 and forked[0] == 1
    assert par["ranges_here"] >= 1  # the first range, taken before the worker has a token
    assert len(here) == par["ranges_here"] + par["files_reread_whole"]  # a file read again whole: inline


def test_name_groups_give_the_output_of_jobs_one(copies: Path, tmp_path: Path) -> None:
    """Same-named files kept on one worker, a group split over both, stolen batches: the
    JSON lines and the summary's counts are those of ``--jobs 1``, byte for byte."""
    import json

    from scmwatch.cli import main

    out = {}
    for jobs in (1, 2):
        alerts, summary = tmp_path / f"a{jobs}.jsonl", tmp_path / f"s{jobs}.json"
        assert main(["hunt", str(copies), "--jobs", str(jobs), "--format", "jsonl", "-o", str(alerts),
                     "--summary", str(summary)]) == 0
        s = json.loads(summary.read_text())
        out[jobs] = alerts.read_bytes(), {k: s[k] for k in ("files", "events", "alerts", "alerts_by_rule",
                                                            "errors", "results")}
    assert out[1] == out[2]
    assert out[1][0].count(b"\n") > 30 and out[1][1]["files"] > 100


def test_a_stop_signal_while_the_workers_are_forked_stops_them(many: Path, pack, monkeypatch) -> None:
    """A SIGTERM that comes in while the workers are being forked waits until they are held,
    then ends the hunt (as the CLI's handler does) with every worker stopped and reaped: none
    is left running, with no one to stop it."""
    import os
    import signal
    import threading
    import time

    class Stop(Exception):
        pass

    def stop(signum, frame):
        raise Stop

    made = []
    real = hunt.Workers

    def forked_then_signalled(count, work):
        w = real(count, work)
        made.append(w)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # time for the other thread to take it
        return w

    monkeypatch.setattr(hunt, "Workers", forked_then_signalled)
    old = signal.signal(signal.SIGTERM, stop)
    # A second thread (the CLI has its stat and progress threads) that blocks no signal: the
    # kernel gives it the process's SIGTERM at once, and Python runs the handler in the main
    # thread at its next instruction, whatever the main thread's signal mask says.
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        rs, engine = pack
        with pytest.raises(Stop):
            run_hunt([str(many)], rs, engine=engine, jobs=3)
    finally:
        done.set()
        other.join()
        signal.signal(signal.SIGTERM, old)
    assert len(made) == 1 and len(made[0].pids) == 2
    for pid in made[0].pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_worker_hands_short_remainders_through_its_pipe(many: Path, pack, monkeypatch) -> None:
    """A worker's batch whose short remainders fit what is left of the worker's share of the
    merge's memory budget (``hunt._HAND_OVER``) sends them with its result, through its pipe:
    no run and no stream written for the parent to read back. Beyond that share they are
    written, as one sorted run, and the share is left as it was."""
    from scmwatch.spill import read_stream

    rs, engine = pack
    inputs = list(discover([str(many)], ReadStats()))
    batch = [(i, u) for i, u in enumerate(inputs) if Path(u.name).name.startswith("part0")]
    spill = SpillDir()
    try:
        monkeypatch.setattr(hunt, "_COLLECT", True)
        monkeypatch.setattr(hunt, "_CTX", HuntContext(rs, spill, engine=engine))
        monkeypatch.setattr(hunt, "_HAND_OVER", 10_000)
        [kept] = hunt._hunt_batch(batch)
        held = len(kept.hit_tail) + len(kept.cand_mem)
        assert kept.hit_tail and kept.cand_mem and not kept.hit_runs and not kept.cand_runs
        assert hunt._HAND_OVER == 10_000 - held
        assert spill.usage()[1] == 0

        monkeypatch.setattr(hunt, "_CTX", HuntContext(rs, spill, engine=engine))
        monkeypatch.setattr(hunt, "_HAND_OVER", held - 1)  # one record short
        [written] = hunt._hunt_batch(batch)
        assert not written.hit_tail and not written.cand_mem
        assert len(written.hit_runs) == 1 and len(written.cand_runs) == 1
        assert hunt._HAND_OVER == held - 1
        assert list(read_stream(written.hit_runs[0])) == kept.hit_tail
    finally:
        spill.cleanup()


def test_jobs_two_writes_no_spill_file_when_the_remainders_fit_the_budget(many: Path, pack) -> None:
    """With ``--jobs 2`` the worker's remainders reach the merge through its pipe: the run
    writes nothing to disk when all its records fit the memory budget, as ``--jobs 1`` does,
    with the same alerts; a budget too small for them still spills (and gives the same alerts)."""
    rs, engine = pack
    one = run_hunt([str(many)], rs, engine=engine, jobs=1)
    two = run_hunt([str(many)], rs, engine=engine, jobs=2)
    assert [a.to_dict() for a in two.alerts] == [a.to_dict() for a in one.alerts]
    assert len(one.alerts) > 10 and two.summary["parallelism"]["jobs"] == 2
    assert one.summary["memory"]["files_written"] == two.summary["memory"]["files_written"] == 0
    tight = run_hunt([str(many)], rs, engine=engine, jobs=2, memory_budget=4)
    assert [a.to_dict() for a in tight.alerts] == [a.to_dict() for a in one.alerts]
    assert tight.summary["memory"]["files_written"] > 0
    assert not hunt._HAND_OVER  # the parent's own is left at zero


def test_the_parent_groups_for_readiness_before_it_steals(many: Path, pack, monkeypatch) -> None:
    """The run's end work that needs no result (``HuntContext.idle``) is done once this process
    has taken its own queue, while the worker still hunts: before it steals the worker's
    batches (the worker is slowed down here, so that there are some to steal), not after its
    last unit."""
    import os
    import time

    parent = os.getpid()
    events: list[str] = []
    real_take, real_batch = hunt._Plan.take, hunt._hunt_batch

    def take(self):
        stolen = self.own_done()
        got = real_take(self)
        if got and os.getpid() == parent:
            events.append("stolen" if stolen else "own")
        return got

    def slow(batch):
        time.sleep(0.2)  # only the worker hunts batches through here
        return real_batch(batch)

    monkeypatch.setattr(hunt._Plan, "take", take)
    monkeypatch.setattr(hunt, "_hunt_batch", slow)
    real_pool = hunt._pool_units

    def pool(ctx, units, jobs, report):
        idle = ctx.idle
        ctx.idle = lambda: (events.append("idle"), idle())
        return real_pool(ctx, units, jobs, report)

    monkeypatch.setattr(hunt, "_pool_units", pool)
    monkeypatch.setattr(hunt, "local_units", hunt.split_units(pool))
    rs, engine = pack
    one = run_hunt([str(many)], rs, engine=engine, jobs=1)
    res = run_hunt([str(many)], rs, engine=engine, jobs=2, map_units=hunt.local_units)
    assert [a.to_dict() for a in res.alerts] == [a.to_dict() for a in one.alerts]
    assert events.count("idle") == 1 and "stolen" in events
    assert events.index("idle") < events.index("stolen")
    assert "own" not in events[events.index("idle"):]


def test_the_parent_encodes_no_rule_part_the_worker_sent(many: Path, pack, monkeypatch) -> None:
    """A worker sends the rules' parts of lines it encoded (``HitLines.new_prefixes``) with
    its results: the parent, alone after the workers' last result, writes the merged lines
    without encoding a rule's part again (it would read the rule's stored details for it).
    Counted in this process only: the worker's calls happen in its own copy of the counters."""
    from scmwatch.sinks.jsonl import HitLines, json_line

    encoded: list[tuple[str, bool]] = []
    adopted: list[str] = []
    writing = [False]
    real_rule, real_adopt, real_blocks = HitLines._rule, HitLines.adopt, hunt.line_blocks

    def rule(self, r):
        encoded.append((r.id, writing[0]))
        return real_rule(self, r)

    def adopt(self, prefixes):
        adopted.extend(prefixes)
        return real_adopt(self, prefixes)

    def blocks(*args, **kwargs):
        writing[0] = True
        yield from real_blocks(*args, **kwargs)

    monkeypatch.setattr(HitLines, "_rule", rule)
    monkeypatch.setattr(HitLines, "adopt", adopt)
    monkeypatch.setattr(hunt, "line_blocks", blocks)
    rs, engine = pack
    written: list[bytes] = []
    one = run_hunt([str(many)], rs, engine=engine, jobs=1)
    res = run_hunt([str(many)], rs, engine=engine, jobs=2, lines=True, sink=lambda a: None,
                   write_lines=lambda block, n: written.append(block))
    lines = b"".join(written).splitlines(keepends=True)
    assert lines == [json_line(a.to_dict()) for a in one.alerts if a.correlation is None]
    assert res.summary["parallelism"]["jobs"] == 2
    worker_only = set(adopted) - {rid for rid, tail in encoded if not tail}  # hit in the worker alone
    assert worker_only and worker_only <= {a.rule_id for a in one.alerts}
    assert not [rid for rid, tail in encoded if tail]
