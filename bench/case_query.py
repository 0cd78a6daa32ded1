"""``scmwatch query`` over a case holding many events (default 10 million).

Builds the case the way a user would, then grows it inside DuckDB: ``scmwatch simulate all``
writes --base events (default 100k), ``hunt --case --keep-events`` keeps them, and the kept
rows are copied (--copies times, as if from other files: new file hash, shifted record ids and
times) until the case holds base x copies events. Then each query runs as the CLI in a fresh
process (best of --repeats) and the wall time is printed with the case size.

    python bench/case_query.py [--base 100000] [--copies 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from common import run_cli

QUERIES = {
    "count": "SELECT count(*) FROM events",
    "by EventID": "SELECT EventID, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC LIMIT 10",
    "one host, one hour": "SELECT count(*) FROM events WHERE Computer = 'WS0001.corp.example.com' AND "
                          "time BETWEEN TIMESTAMP '2024-05-06 08:00' AND TIMESTAMP '2024-05-06 09:00'",
    "JSON field search": "SELECT count(*) FROM events WHERE data->>'CommandLine' ILIKE '%psexec%'",
    "services (saved)": "services",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=100_000)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scmwatch-bench-query-") as tmp:
        logs, case = Path(tmp) / "logs", Path(tmp) / "case.duckdb"
        run_cli(["simulate", "all", "--events", str(args.base), "--seed", "7", "--out", str(logs)])
        seconds, rss, _ = run_cli(["hunt", str(logs), "--case", str(case), "--keep-events",
                                   "--format", "jsonl", "-o", os.devnull])
        con = duckdb.connect(str(case))
        base = con.execute("SELECT count(*) FROM event_rows").fetchone()[0]
        print(f"kept {base:,} simulated events in {seconds:.1f} s ({base / seconds:,.0f} events/s, "
              f"peak RSS {rss / 1024:.0f} MB)")
        t0 = time.perf_counter()
        con.execute("CREATE TEMP TABLE one AS SELECT * FROM event_rows")
        for k in range(1, args.copies):
            con.execute(
                "INSERT INTO event_rows SELECT file_sha256 || ?, seq, source || ?, record_id, format, "
                "time + to_seconds(?), EventID, Channel, Provider_Name, Computer, EventRecordID, "
                "TimeCreated, ProcessID, ThreadID, UserID, data FROM one", [f"-{k}", f"#{k}", k * 3600])
        con.execute("CHECKPOINT")
        con.close()
        total = base * args.copies
        size = case.stat().st_size
        print(f"grew the case to {total:,} events in {time.perf_counter() - t0:.1f} s: "
              f"{size / 1e6:,.0f} MB, {size / total:.0f} bytes per event")
        print(f"{'query':<22} {'seconds':>8} {'rows':>6}  (best of {args.repeats}, CLI in a new process)")
        for name, sql in QUERIES.items():
            best, rows = float("inf"), 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "scmwatch", "query", str(case), sql,
                                       "--format", "csv"], capture_output=True, text=True, check=True)
                best = min(best, time.perf_counter() - start)
                rows = proc.stdout.count("\n") - 1
            print(f"{name:<22} {best:8.2f} {rows:>6}")


if __name__ == "__main__":
    main()
