"""Hunt peak RSS against input size: it must stay flat (bounded memory, issues 5 and 6).

For each size N this simulates N events (every scenario mixed into background, JSONL, seed 7),
then runs ``scmwatch hunt DIR --format jsonl --output FILE --summary FILE`` in a fresh process
and reads that process's own peak RSS. Besides events/s and RSS it prints the hunt's own
high-water marks from the summary (``memory``: most alerts one sort buffer held, most spill
files one merge read at once; ``correlation``: reorder buffer and window state), which are the
structural reasons RSS stays flat, and the spill volume on disk. The last line is the RSS
ratio largest/smallest input.

    .venv/bin/python bench/hunt_memory.py                                  # 100k, 1M
    .venv/bin/python bench/hunt_memory.py --sizes 100000,1000000,10000000  # a few minutes
    .venv/bin/python bench/hunt_memory.py --data /tmp/sims                 # keep/reuse simulations
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
    ap.add_argument("--jobs", type=int, default=1, help="hunt --jobs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, help="keep simulations here (sim-N) and reuse them on later runs")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    base = args.data or Path(tempfile.mkdtemp(prefix="scmwatch-hunt-memory-"))
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scmwatch-hunt-memory-out-"))
    print(f"{'events':>11} {'hunt s':>7} {'ev/s':>7} {'peak RSS MB':>11} {'alerts':>7} {'buf peak':>8} "
          f"{'open peak':>9} {'reorder':>7} {'state':>6} {'spill MB':>8}", flush=True)
    rows = []
    try:
        for n in sizes:
            data = base / f"sim-{n}"
            if not (data / "labels.jsonl").exists():
                shutil.rmtree(data, ignore_errors=True)
                run_cli(["simulate", "all", "--out", str(data), "--events", str(n), "--seed", str(args.seed)])
            summary = work / f"summary-{n}.json"
            alerts = str(work / "alerts.jsonl")
            secs, rss, _ = run_cli(["hunt", str(data), "--format", "jsonl", "--output", alerts,
                                    "--summary", str(summary), "--jobs", str(args.jobs)])
            s = orjson.loads(summary.read_bytes())
            mem = s.get("memory", {})
            corr = s.get("correlation", {})
            rows.append((s["events"], rss))
            print(f"{s['events']:>11,} {secs:>7.1f} {s['events'] / secs:>7,.0f} {rss / 1024:>11.0f} "
                  f"{s['alerts']:>7,} {mem.get('alerts_buffered_peak', '-'):>8} "
                  f"{mem.get('merge_open_peak', '-'):>9} "
                  f"{corr.get('reorder_peak', '-'):>7} {corr.get('state_peak', '-'):>6} "
                  f"{mem.get('spill_bytes', 0) / 2**20:>8.0f}", flush=True)
            if not args.data:
                shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.data:
            shutil.rmtree(base, ignore_errors=True)
    if len(rows) > 1:
        (n0, r0), (n1, r1) = rows[0], rows[-1]
        print(f"hunt peak RSS {r0 / 1024:.0f} MB at {n0:,} -> {r1 / 1024:.0f} MB at {n1:,} events "
              f"(x{r1 / r0:.2f} for x{n1 / n0:.0f} input)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
