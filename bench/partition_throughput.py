"""Correlation on the client vs in partitions on the workers: what the client still does.

For an input (the shared EVTX corpus copied ``--copies`` times, and a simulated multi-host
attack of ``--events`` events), with the built-in pack:

1. In one process: every unit's candidates, then the one correlator over all of them (the
   client's correlation before) against each of ``--partitions`` partitions correlated alone
   (``correlate/partition.py``): candidates/s per partition task, and the largest partition's
   share of the candidates (a family kept whole cannot be cut further).
2. On a Dask cluster of a separate ``dask scheduler`` process and two ``dask worker`` processes
   on loopback (so the client's CPU is the client's alone): ``--partitions 0`` (the client
   correlates) vs ``--partitions 2``, both with the directory walk on the workers, and
   ``--partitions 2`` with the walk on the client: candidate records per million events that
   reach the client, and the client's CPU seconds per million events. A worker's hunting rate divided by
   the client's rate is the cluster size at which the client becomes the bottleneck.

    .venv/bin/python bench/partition_throughput.py [--copies 10] [--events 200000] [--partitions 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import ATTACK_SAMPLES, evtx_files
from scmwatch import cluster as cl
from scmwatch.correlate import Candidate, CorrelationStage
from scmwatch.correlate.partition import Plan, Router, correlate_partition
from scmwatch.events.read import discover
from scmwatch.hunt import local_units, run_hunt
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import Engine, load_rules
from scmwatch.simulate import Options, simulate
from scmwatch.spill import read_stream


def _corpus(root: Path, copies: int) -> Path:
    out = root / "corpus"
    files = evtx_files(ATTACK_SAMPLES)
    for c in range(copies):
        d = out / f"copy{c:02d}"
        d.mkdir(parents=True)
        for i, f in enumerate(files):
            os.symlink(f, d / f"{i:04d}.evtx")
    return out


def _in_process(path: Path, rs, engine, partitions: int) -> dict:
    """Correlation alone: one correlator over every candidate vs each partition alone."""
    units: list[list[tuple]] = []
    unit_seconds = 0.0

    def keep(ctx, inputs, jobs, report):
        nonlocal unit_seconds
        ctx.correlate_at = lambda results, resolved: iter(())
        for r in local_units(ctx, inputs, 1, report):
            units.append([rec for p in r.cand_runs for rec in read_stream(p)] + r.cand_mem)
            unit_seconds += r.seconds
            r.cand_runs, r.cand_mem = [], []
            yield r

    res = run_hunt([str(path)], rs, engine=engine, map_units=keep, sink=lambda a: None)
    events = res.summary["events"]
    import heapq

    key = lambda r: r[:3]  # noqa: E731
    stage = CorrelationStage.for_ruleset(rs)
    t0 = time.process_time()
    whole = list(stage.correlate(map(Candidate.from_record, heapq.merge(*units, key=key))))
    one = time.process_time() - t0
    plan = Plan(stage.specs, partitions)
    router = Router(stage, plan)
    per: list[list[list[tuple]]] = [[] for _ in range(partitions)]
    t0 = time.process_time()
    for recs in units:
        for p, part in enumerate(router.split(recs)):
            if part:
                per[p].append(part)
    route = time.process_time() - t0
    times, sizes, alerts = [], [], 0
    for p in range(partitions):
        fresh = CorrelationStage.for_ruleset(rs)
        t0 = time.process_time()
        out, _ = correlate_partition(fresh, plan, p, per[p])
        times.append(time.process_time() - t0)
        sizes.append(sum(len(s) for s in per[p]))
        alerts += len(out)
    cands = sum(len(u) for u in units)
    return {"events": events, "candidates": cands, "alerts": len(whole), "alerts_partitioned": alerts,
            "one_seconds": one, "route_seconds": route, "times": times, "sizes": sizes,
            "worker_rate": events / unit_seconds}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _dask_processes(workers: int) -> Iterator[str]:
    """A scheduler and ``workers`` single-threaded workers as separate processes on loopback."""
    dask = str(Path(sys.executable).with_name("dask"))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-nanny",
                                    "--dashboard-address", ":0"], stderr=subprocess.DEVNULL)
                  for _ in range(workers)]
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _client_cpu(address: str, path: Path, rs, engine, partitions: int,
                walk_here: bool = False) -> tuple[float, int, int, int]:
    """(client CPU seconds, events, candidate records received, alerts) of one cluster hunt; the
    directory walk on the workers (Cluster.discover), or with ``walk_here`` on the client."""
    received = 0
    with cl.Cluster(address) as c:
        while c.workers < 2:
            time.sleep(0.2)
        mapper = c.map_units(cl.rule_payload([str(PACK_DIR)]), partitions)

        def counting(ctx, inputs, jobs, report):
            nonlocal received
            for r in mapper(ctx, inputs, jobs, report):
                received += len(r.cand_mem) + sum(1 for p in r.cand_runs for _ in read_stream(p))
                yield r

        before = resource.getrusage(resource.RUSAGE_SELF)
        res = run_hunt([str(path)], rs, engine=engine, map_units=counting, sink=lambda a: None,
                       expand=discover if walk_here else c.discover)
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, res.summary["events"], received, res.summary["alerts"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=32)
    args = ap.parse_args()
    rs = load_rules([str(PACK_DIR)])
    engine = Engine(rs)
    root = Path(tempfile.mkdtemp(prefix="partition-bench-"))
    try:
        inputs = []
        if ATTACK_SAMPLES.is_dir():
            inputs.append((f"corpus x{args.copies}", _corpus(root, args.copies)))
        sim = root / "sim"
        simulate(Options(scenarios=["all"], out=sim, events=args.events, seed=7, hosts=40,
                         labels=root / "labels.jsonl"))
        inputs.append((f"simulated {args.events:,} events, 40 hosts", sim))
        with _dask_processes(2) as address:
            for label, path in inputs:
                m = _in_process(path, rs, engine, args.partitions)
                ev = m["events"]
                print(f"{label}: {ev:,} events, {m['candidates'] * 1e6 / ev:,.0f} candidates per million "
                      f"events, {m['alerts']} correlation alerts (partitioned: {m['alerts_partitioned']})")
                rate_one = m["candidates"] / max(m["one_seconds"], 1e-9)
                busy = [(n / t) for n, t in zip(m["sizes"], m["times"], strict=True) if n and t > 0]
                print(f"  one correlator: {m['one_seconds']:.2f} s CPU ({rate_one:,.0f} candidates/s); "
                      f"routing on the workers {m['route_seconds'] * 1e6 / ev:.2f} s per million events")
                print(f"  {args.partitions} partitions: slowest {max(m['times']):.2f} s, median rate "
                      f"{sorted(busy)[len(busy) // 2]:,.0f} candidates/s per partition task, largest "
                      "partition "
                      f"{max(m['sizes']) * 100 / max(1, sum(m['sizes'])):.0f}% of the records "
                      f"({sum(m['sizes']) / max(1, m['candidates']):.2f} records per candidate)")
                rows = {}
                for parts, here in ((0, False), (2, False), (2, True)):
                    cpu, events, received, alerts = _client_cpu(address, path, rs, engine, parts, here)
                    label = f"--partitions {parts}" + (", walk on the client" if here else "")
                    rows[label] = cpu * 1e6 / events
                    print(f"  cluster {label}: client CPU {cpu:.2f} s "
                          f"({rows[label]:.2f} s per million events), {received * 1e6 / events:,.0f} "
                          f"candidates per million events reach the client, {alerts} alerts")
                w = m["worker_rate"]
                for label, per_m in rows.items():
                    print(f"  {label}: client limit ~{1e6 / per_m / w:.0f} workers "
                          f"(a worker hunts {w:,.0f} events/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
