"""Simulator + hunt at scale: events/s and peak RSS at 100k, 1M (and 10M) events.

For each size N this generates N events of background with every scenario mixed in (JSONL),
then runs ``scmwatch hunt`` over them with the built-in pack, each step in a fresh process so
its peak RSS is its own. It prints one line per size and, at the end, how peak RSS grew from
the smallest to the largest input: streaming means it must stay flat (ratio close to 1) while
the input grows 100x. It also checks the hunt against the simulation's labels (exact match).

    .venv/bin/python bench/simulate_throughput.py                 # 100k and 1M
    .venv/bin/python bench/simulate_throughput.py --sizes 100000,1000000,10000000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import orjson

from common import run_cli


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated event counts")
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--instances", type=int, default=2, help="instances of each scenario per run")
    ap.add_argument("--jobs", type=int, default=1, help="hunt --jobs")
    ap.add_argument("--keep", type=Path, help="keep generated data under this directory")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    from scmwatch.simulate.verify import verify

    base = args.keep or Path(tempfile.mkdtemp(prefix="scmwatch-bench-"))
    rows = []
    print(
        f"{'events':>10} {'sim s':>7} {'sim ev/s':>9} {'sim RSS MB':>10} {'hunt s':>7} {'hunt ev/s':>9} "
        f"{'hunt RSS MB':>11} {'alerts':>7}  labels"
    )
    try:
        for n in sizes:
            out = base / f"sim-{n}"
            labels = base / f"labels-{n}.jsonl"
            alerts = base / f"alerts-{n}.jsonl"
            summary = base / f"summary-{n}.json"
            shutil.rmtree(out, ignore_errors=True)
            sim_s, sim_rss, _ = run_cli(
                [
                    "simulate",
                    "all",
                    "--out",
                    str(out),
                    "--labels",
                    str(labels),
                    "--events",
                    str(n),
                    "--hosts",
                    str(args.hosts),
                    "--instances",
                    str(args.instances),
                ]
            )
            hunt_s, hunt_rss, _ = run_cli(
                [
                    "hunt",
                    str(out),
                    "--format",
                    "jsonl",
                    "--output",
                    str(alerts),
                    "--summary",
                    str(summary),
                    "--jobs",
                    str(args.jobs),
                ]
            )
            summ = orjson.loads(summary.read_bytes())
            events = summ["events"]
            alert_objs = [orjson.loads(x) for x in alerts.read_bytes().splitlines() if x.strip()]
            verdict = verify(labels, alert_objs, out)
            rows.append((n, hunt_rss))
            print(
                f"{events:>10,} {sim_s:>7.1f} {events / sim_s:>9,.0f} {sim_rss / 1024:>10.0f} {hunt_s:>7.1f} "
                f"{events / hunt_s:>9,.0f} {hunt_rss / 1024:>11.0f} {len(alert_objs):>7}  "
                f"{'exact' if verdict.ok else 'MISMATCH'}",
                flush=True,
            )
            if not verdict.ok:
                print(verdict.summary(limit=5))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    if len(rows) > 1:
        (n0, r0), (n1, r1) = rows[0], rows[-1]
        print(
            f"hunt peak RSS {r0 / 1024:.0f} MB at {n0:,} -> {r1 / 1024:.0f} MB at {n1:,} events "
            f"(x{r1 / r0:.2f} for x{n1 / n0:.0f} input)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
