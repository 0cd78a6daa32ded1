"""More seeded random correlation cases than CI runs: streaming correlator vs brute force.

``tests/test_oracle_correlation.py`` runs 200 cases per correlation type; this script runs as
many as asked (seeds after CI's, so every run adds coverage) and prints, per type, the cases,
the alerts the reference expects and the cases where the two disagree (with the first seeds,
to replay with ``make_case(seed, type)`` from ``tests/correlation_cases.py``).

    python bench/oracle_correlation.py [--cases 2000] [--first-seed 200] [--types event_count,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from correlation_cases import TYPES, make_case, run_case  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=2000, help="cases per correlation type")
    ap.add_argument("--first-seed", type=int, default=200, help="CI uses seeds 0-199")
    ap.add_argument("--types", default=",".join(TYPES))
    args = ap.parse_args()
    types = [t for t in args.types.split(",") if t]
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        print(f"oracle_correlation: unknown type {unknown[0]} (one of {', '.join(TYPES)})", file=sys.stderr)
        return 2
    failed = 0
    print(f"{'type':18} {'cases':>7} {'alerts':>8} {'differ':>7} {'seconds':>8}  first differing seeds")
    for ctype in types:
        start = time.perf_counter()
        alerts = 0
        bad: list[int] = []
        for seed in range(args.first_seed, args.first_seed + args.cases):
            got, want = run_case(make_case(seed, ctype))
            alerts += sum(want.values())
            if got != want:
                bad.append(seed)
        failed += len(bad)
        secs = time.perf_counter() - start
        print(f"{ctype:18} {args.cases:7d} {alerts:8d} {len(bad):7d} {secs:8.1f}  {bad[:5]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
