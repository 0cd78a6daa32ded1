"""What the hunt's enrichment (process lineage, random service names) costs.

Hunts the shared EVTX corpus copied ``--copies`` times (symlinks, so each copy is a distinct
input file) with the built-in pack, alternating runs with and without enrichment
(``run_hunt(enrich=False)``) in one process, and prints the median hunt seconds of each, their
ratio, events/s and the lineage counters of the summary. The goal is a ratio <= 1.05.

    .venv/bin/python bench/enrich_cost.py [--copies 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from common import ATTACK_SAMPLES, evtx_files
from scmwatch.hunt import run_hunt
from scmwatch.rules import pack_paths
from scmwatch.sigma import Engine, load_rules


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    files = evtx_files(ATTACK_SAMPLES)
    if not files:
        print("enrich_cost: corpus not found:", ATTACK_SAMPLES)
        return 1
    ruleset = load_rules(pack_paths())
    engine = Engine(ruleset)
    with tempfile.TemporaryDirectory() as tmp:
        for c in range(args.copies):
            d = os.path.join(tmp, f"copy{c:02d}")
            os.mkdir(d)
            for i, f in enumerate(files):
                os.symlink(f, os.path.join(d, f"{i:04d}.evtx"))
        times: dict[bool, list[float]] = {True: [], False: []}
        summary = {}
        for _ in range(args.rounds):
            for enrich in (True, False):
                t0 = time.perf_counter()
                res = run_hunt([tmp], ruleset, engine=engine, enrich=enrich)
                times[enrich].append(time.perf_counter() - t0)
                if enrich:
                    summary = res.summary
        on, off = statistics.median(times[True]), statistics.median(times[False])
        events = summary["events"]
        print(f"corpus x{args.copies}: {len(files) * args.copies} files, {events:,} events, "
              f"{summary['alerts']} alerts")
        print(f"without enrichment: {off:.2f} s median ({events / off:,.0f} events/s)")
        print(f"with enrichment:    {on:.2f} s median ({events / on:,.0f} events/s)")
        print(f"ratio with/without: {on / off:.3f} (goal <= 1.05)")
        print("lineage:", summary.get("lineage"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
