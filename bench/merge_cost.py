"""The parent's share of a many-file ``--jobs`` hunt written as JSON lines (issue 13: x20 ≥ 10×
Zircolite): its CPU after the last worker result (final merge and output), per alert, and how
long the first worker to finish sat idle at the end.

Two sides, interleaved round by round in one process (the machine is shared), all SigmaHQ over
copies of the EVTX attack samples, ``run_hunt`` as ``hunt --format jsonl -o /dev/null`` calls it:

  one-by-one  the results summary fed each alert in merge order (``Results.add`` in the sink,
              as before the workers tallied it): the baseline
  tallied     the workers' tallies (``results.Tally``): the parent only merges and writes bytes

    python bench/merge_cost.py [--copies 20] [--rounds 3] [--jobs 2] [--sigmahq DIR] [--corpus DIR]
                               [--root COPIES]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from case_store import make_copies
from common import ATTACK_SAMPLES, SHARED, load_average
from scmwatch import hunt
from scmwatch.results import Results
from scmwatch.sigma import load_rules
from scmwatch.sinks import open_sink


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Clock:
    """When the last worker result came in and the merge ended (parent CPU), and when each
    worker finished its last batch (wall)."""

    def __init__(self) -> None:
        self.merge_cpu = 0.0
        self.idle = 0.0
        self._ends: list[float] = []
        alerts, add = hunt.AlertMerge.alerts, hunt.AlertMerge.add
        clock = self

        def timed_alerts(merge: hunt.AlertMerge):  # type: ignore[no-untyped-def]
            t0 = _cpu()
            yield from alerts(merge)
            clock.merge_cpu = _cpu() - t0

        def timed_add(merge: hunt.AlertMerge, r: hunt.UnitResult) -> None:
            clock._ends.append(time.perf_counter())
            add(merge, r)

        hunt.AlertMerge.alerts = timed_alerts  # type: ignore[method-assign]
        hunt.AlertMerge.add = timed_add  # type: ignore[method-assign]

    def reset(self) -> None:
        self._ends = []

    def tail(self) -> float:
        """The last two results' arrival gap: the end of the run with one worker idle."""
        e = sorted(self._ends)
        return e[-1] - e[-2] if len(e) > 1 else 0.0


def run(root: Path, rs, jobs: int, tallied: bool, clock: _Clock) -> tuple[float, float, float, int]:
    """(parent CPU after the last result, whole parent CPU, idle tail, alerts) of one hunt."""
    with open("/dev/null", "w") as out:
        sink = open_sink("jsonl", out, rs.by_id())
        results = Results()

        def emit(a) -> None:  # type: ignore[no-untyped-def]
            if not tallied:
                results.add(a)
            sink.write(a)

        clock.reset()
        c0 = _cpu()
        r = hunt.run_hunt([str(root)], rs, jobs=jobs, sink=emit, lines=True,
                          results=results if tallied else None)
        sink.close()
        results.to_dict()
        return clock.merge_cpu, _cpu() - c0, clock.tail(), r.summary["alerts"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sigmahq", type=Path, default=SHARED / "sigmahq" / "rules")
    ap.add_argument("--corpus", type=Path, default=ATTACK_SAMPLES)
    ap.add_argument("--root", type=Path, help="copies made before (case_store.make_copies) to hunt")
    args = ap.parse_args()
    if not args.corpus.is_dir() or not args.sigmahq.is_dir():
        print(f"skipped: {args.corpus} or {args.sigmahq} not found", file=sys.stderr)
        return 0
    rs = load_rules([args.sigmahq])
    clock = _Clock()
    sides = {"one-by-one": False, "tallied": True}
    with tempfile.TemporaryDirectory(prefix="merge-cost-") as tmp:
        root = args.root or Path(tmp)
        if args.root is None:
            make_copies(args.corpus, root, args.copies)
        run(root, rs, args.jobs, True, clock)  # warm-up: buckets, plans, page cache
        got: dict[str, list[tuple[float, float, float, int]]] = {k: [] for k in sides}
        for _ in range(args.rounds):
            for name, tallied in sides.items():
                got[name].append(run(root, rs, args.jobs, tallied, clock))
    alerts = got["tallied"][0][3]
    print(f"x{args.copies} of {args.corpus.name}, all SigmaHQ ({len(rs.rules)} rules), --jobs {args.jobs}, "
          f"{alerts:,} alerts, {args.rounds} rounds, {load_average()}")
    med = {}
    for name in sides:
        merge = [g[0] for g in got[name]]
        whole = [g[1] for g in got[name]]
        tail = [g[2] for g in got[name]]
        med[name] = statistics.median(merge)
        print(f"{name:11s}: parent CPU after the last result {med[name]:.3f} s median (min {min(merge):.3f}; "
              f"{med[name] / max(alerts, 1) * 1e6:.1f} us/alert); parent CPU in all "
              f"{statistics.median(whole):.3f} s; last two results {statistics.median(tail):.3f} s apart")
    print(f"tallied / one-by-one, parent CPU after the last result: {med['tallied'] / med['one-by-one']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
