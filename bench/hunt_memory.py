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
    .venv/bin/python bench/hunt_memory.py --sizes '' --distinct 100000,1000000  # hostile cardinality only
    .venv/bin/python bench/hunt_memory.py --rules builtin --rules ../shared/corpora/sigmahq/rules  # + SigmaHQ

``--distinct N`` adds the hostile-cardinality case (issue 11): N service installs (System 7045)
on one host, 100 us apart, each with a service name of its own, hunted with one rule and one
``event_count`` correlation grouped by ``ServiceName`` over 10 minutes: N distinct groups inside
the window, and every candidate within ``--lateness`` of the newest. Before the reorder buffer
was bounded it held all N (1M: 2.1 GB).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from common import run_cli

DISTINCT_RULES = """title: service installed
name: bench_service_installed
id: 0b3e5c1a-7d2f-4e8a-9c6b-1f2e3d4c5b6a
level: low
logsource: {product: windows, service: system}
detection:
  sel: {EventID: 7045}
  condition: sel
---
title: the same service installed twice within 10 minutes
id: 0b3e5c1a-7d2f-4e8a-9c6b-1f2e3d4c5b6b
level: medium
correlation:
  type: event_count
  rules: [bench_service_installed]
  group-by: [ServiceName]
  timespan: 10m
  condition: {gte: 2}
"""


def write_distinct(data: Path, n: int) -> None:
    """``data/logs/System.jsonl``: ``n`` service installs on one host, each service name
    distinct; ``data/rules.yml``: the rule and correlation the case is hunted with."""
    (data / "logs").mkdir(parents=True, exist_ok=True)
    (data / "rules.yml").write_text(DISTINCT_RULES)
    t0 = 1_714_557_600_000_000  # 2024-05-01T10:00:00Z in microseconds
    with open(data / "logs" / "System.jsonl", "wb") as fh:
        for i in range(n):
            us = t0 + i * 100
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}Z"
            fh.write(orjson.dumps({
                "EventID": 7045, "Channel": "System", "Provider_Name": "Service Control Manager",
                "Computer": "WS1.corp.example", "TimeCreated": ts, "EventRecordID": i + 1,
                "ServiceName": f"svc{i:08d}", "ImagePath": f"C:\\ProgramData\\s{i:08d}.exe",
                "ServiceType": "user mode service", "StartType": "demand start", "AccountName": "LocalSystem",
            }) + b"\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated event counts")
    ap.add_argument("--jobs", type=int, default=1, help="hunt --jobs")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, help="keep simulations here (sim-N) and reuse them on later runs")
    ap.add_argument("--distinct", default="", help="comma-separated counts of the distinct-group case")
    ap.add_argument("--rules", action="append", default=[],
                    help="hunt --rules (repeatable; default: the built-in pack), e.g. all SigmaHQ rules")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    cases = [(n, "sim") for n in sizes]
    cases += [(int(d), "distinct") for d in args.distinct.split(",") if d.strip()]
    base = args.data or Path(tempfile.mkdtemp(prefix="scmwatch-hunt-memory-"))
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scmwatch-hunt-memory-out-"))
    print(f"{'events':>11} {'hunt s':>7} {'ev/s':>7} {'peak RSS MB':>11} {'alerts':>7} {'buf peak':>8} "
          f"{'open peak':>9} {'reorder':>7} {'state':>6} {'spill MB':>8}", flush=True)
    rows = []
    try:
        for n, kind in cases:
            data = base / f"{kind}-{n}"
            if kind == "distinct":
                if not data.exists():
                    write_distinct(data, n)
            elif not (data / "labels.jsonl").exists():
                shutil.rmtree(data, ignore_errors=True)
                run_cli(["simulate", "all", "--out", str(data), "--events", str(n), "--seed", str(args.seed)])
            summary = work / f"summary-{n}.json"
            alerts = str(work / "alerts.jsonl")
            what = [str(data), *(a for r in args.rules for a in ("--rules", r))]
            if kind == "distinct":
                what = [str(data / "logs"), "--rules", str(data / "rules.yml")]
            secs, rss, _ = run_cli(["hunt", *what, "--format", "jsonl", "--output", alerts,
                                    "--summary", str(summary), "--jobs", str(args.jobs)])
            s = orjson.loads(summary.read_bytes())
            mem = s.get("memory", {})
            corr = s.get("correlation", {})
            if kind == "sim":
                rows.append((s["events"], rss))
            mark = "*" if kind == "distinct" else " "
            print(f"{s['events']:>11,}{mark}{secs:>7.1f} {s['events'] / secs:>7,.0f} {rss / 1024:>11.0f} "
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
    if any(kind == "distinct" for _, kind in cases):
        print("* distinct-group case: every event its own correlation group, all within --lateness "
              "(reorder and state are capped: correlation.reorder_cap / state_cap in the summary)")
    if len(rows) > 1:
        (n0, r0), (n1, r1) = rows[0], rows[-1]
        print(f"hunt peak RSS {r0 / 1024:.0f} MB at {n0:,} -> {r1 / 1024:.0f} MB at {n1:,} events "
              f"(x{r1 / r0:.2f} for x{n1 / n0:.0f} input)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
