"""hunt --cluster local:2 vs --jobs 2 vs --jobs 1, and where the single client stops scaling.

1. Whole-process wall time of ``scmwatch hunt`` on the shared EVTX corpus copied ``--copies``
   times (symlinks), built-in pack: ``--jobs 1``, ``--jobs 2``, ``--cluster local:2`` (the last
   includes starting the LocalCluster), medians of ``--rounds`` runs; task overhead per file.
2. The client's share: in one process, the time outside ``hunt_unit`` (merge by time +
   correlation + output) per event, and correlation candidates per million events, for the
   built-in pack and all SigmaHQ rules. A worker's rate divided by the client's rate is the
   cluster size at which the client becomes the bottleneck.
3. The directory walk: the client's CPU and the wall time per file of a local walk
   (``discover``) against the workers walking (``Cluster.discover`` on a LocalCluster of 2),
   medians of ``--rounds`` alternating runs.

    .venv/bin/python bench/cluster_throughput.py [--copies 20] [--rounds 3] [--walk-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from common import ATTACK_SAMPLES, SHARED, evtx_files, run_cli
from scmwatch.cluster import Cluster
from scmwatch.events.model import ReadStats
from scmwatch.events.read import discover
from scmwatch.hunt import local_units, run_hunt
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import Engine, load_rules


def _corpus(tmp: str, copies: int) -> int:
    files = evtx_files(ATTACK_SAMPLES)
    for c in range(copies):
        d = os.path.join(tmp, f"copy{c:02d}")
        os.mkdir(d)
        for i, f in enumerate(files):
            os.symlink(f, os.path.join(d, f"{i:04d}.evtx"))
    return len(files) * copies


def _client_share(tmp: str, rule_dir: str) -> tuple[float, float, float]:
    """(events/s of the units, events/s of the client part, candidates per million events)."""
    rs = load_rules([rule_dir])
    engine = Engine(rs)
    unit_seconds = 0.0

    def timed(ctx, inputs, jobs, report):
        nonlocal unit_seconds
        for r in local_units(ctx, inputs, 1, report):
            unit_seconds += r.seconds
            yield r

    t0 = time.perf_counter()
    res = run_hunt([tmp], rs, engine=engine, map_units=timed, sink=lambda a: None)
    total = time.perf_counter() - t0
    events = res.summary["events"]
    client = max(total - unit_seconds, 1e-9)
    cands = res.summary["memory"]["candidates"]
    return events / unit_seconds, events / client, cands * 1e6 / max(events, 1)


def _walk_cost(tmp: str, rounds: int) -> None:
    """Client CPU and wall time per file: a local walk vs the workers walking."""
    times: dict[str, list[tuple[float, float]]] = {"client walks": [], "workers walk": []}
    with Cluster("local:2") as c:
        for _ in range(rounds):
            for label, walk in (("client walks", discover), ("workers walk", c.discover)):
                w0, c0 = time.perf_counter(), time.process_time()
                n = len(list(walk([tmp], ReadStats())))
                times[label].append((time.perf_counter() - w0, time.process_time() - c0))
    for label, runs in times.items():
        wall = statistics.median(w for w, _ in runs) * 1e6 / n
        cpu = statistics.median(c for _, c in runs) * 1e6 / n
        print(f"walk, {label}: {n} files, client CPU {cpu:.1f} us per file, wall {wall:.1f} us per file")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--walk-only", action="store_true", help="only part 3 (the directory walk)")
    args = ap.parse_args()
    if not ATTACK_SAMPLES.is_dir():
        print("cluster_throughput: corpus not found:", ATTACK_SAMPLES)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        n = _corpus(tmp, args.copies)
        _walk_cost(tmp, args.rounds)
        if args.walk_only:
            return 0
        modes = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"],
                 "--cluster local:2": ["--cluster", "local:2"]}
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for m, extra in modes.items():
                secs, _, _ = run_cli(["hunt", tmp, "--format", "jsonl", "-o", os.devnull, *extra])
                times[m].append(secs)
        base = statistics.median(times["--jobs 1"])
        print(f"corpus x{args.copies}: {n} files, built-in pack, whole process (median of {args.rounds})")
        for m in modes:
            med = statistics.median(times[m])
            print(f"  {m:20s} {med:6.2f} s   speed-up x{base / med:.2f}")
        over = (statistics.median(times["--cluster local:2"]) - statistics.median(times["--jobs 2"])) / n
        print(f"  cluster overhead vs --jobs 2: {over * 1000:.2f} ms per file (incl. LocalCluster start)")
        for label, rules in (("built-in pack", str(PACK_DIR)),
                             ("all SigmaHQ", str(SHARED / "sigmahq" / "rules"))):
            if not os.path.isdir(rules):
                continue
            unit_rate, client_rate, cands = _client_share(tmp, rules)
            print(f"{label}: worker {unit_rate:,.0f} events/s, client {client_rate:,.0f} events/s, "
                  f"{cands:,.0f} candidates per million events -> the client saturates at about "
                  f"{client_rate / unit_rate:.0f} workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
