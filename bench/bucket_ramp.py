"""What a fresh engine's buckets cost on a medium input: the ramp against the warm start.

A bucket of a fresh engine (every hunt, every ``--jobs`` worker) used to take its first
max(256, literals / 2) events on the Python path (pyahocorasick or a cached Hyperscan scan),
then 400 trial events timing both prefilters. With its databases and static plan in the caches
it now starts on the C matchers with the prefilter its last trials kept (``Engine._warm_start``).
This matches the EVTX attack corpus' events ``--copies`` times (fresh dicts each copy, as a hunt
reads them) with all SigmaHQ rules, alternating a fresh engine told to ramp
(``hyperscan_after=256``: no warm start) with a fresh default engine, and prints the CPU seconds
of each (minimum and median of ``--rounds``), their ratio, and whether every event got the same
rules from both. The caches are warmed first by two default passes.

    python bench/bucket_ramp.py [--copies 5] [--rounds 5] [--sigmahq DIR] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import ATTACK_SAMPLES, SHARED, evtx_files, load_average
from scmwatch.events import ReadStats, discover, read_input
from scmwatch.sigma import Engine, load_rules
from scmwatch.sigma.cache import freeze_gc
from scmwatch.sigma.index import HS_MIN_SCANS


def _pass(engine: Engine, events: list[dict], copies: int) -> tuple[float, list[list[str]]]:
    """CPU seconds to match ``copies`` fresh copies of ``events``, and the rule ids per event."""
    batches = [[dict(f) for f in events] for _ in range(copies)]
    match = engine.match_fields
    start = time.process_time()
    got = [match(f) for batch in batches for f in batch]
    return time.process_time() - start, [[r.id for r in rules] for rules in got]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ATTACK_SAMPLES))
    ap.add_argument("--sigmahq", default=str(SHARED / "sigmahq"))
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    files, rules = evtx_files(args.corpus), Path(args.sigmahq) / "rules"
    if not files or not rules.is_dir():
        print(f"need .evtx files under {args.corpus} and SigmaHQ rules under {rules}", file=sys.stderr)
        return 1
    rs = load_rules([rules])
    stats = ReadStats()
    events = [ev.fields for inp in discover(files, stats) for ev in read_input(inp, stats)]
    freeze_gc()  # as a hunt does
    for _ in range(2):  # databases compiled, plans and trial choices stored
        _pass(Engine(rs), events, args.copies)
    sides = {"ramp": lambda: Engine(rs, hyperscan_after=HS_MIN_SCANS), "warm": lambda: Engine(rs)}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    answers: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, make in sides.items():
            secs, answers[name] = _pass(make(), events, args.copies)
            cpu[name].append(secs)
    n = len(events) * args.copies
    print(f"{n:,} events ({args.copies} x {len(events):,}), {args.rounds} rounds, {load_average()}")
    for name, ts in cpu.items():
        print(f"  {name}: CPU min {min(ts):.3f} s, median {statistics.median(ts):.3f} s "
              f"({statistics.median(ts) / n * 1e6:.1f} us per event)")
    print(f"  warm / ramp: min {min(cpu['warm']) / min(cpu['ramp']):.2f}, "
          f"median {statistics.median(cpu['warm']) / statistics.median(cpu['ramp']):.2f}")
    same = answers["ramp"] == answers["warm"]
    print(f"  same rules for every event: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
