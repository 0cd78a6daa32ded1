"""What the second process of ``--jobs 2`` costs beyond the work it takes over: CPU and minor
page faults of each process after the fork, against ``--jobs 1``'s after the same head.

Each round runs the CLI hunt in a fresh interpreter (``scmwatch.cli.main``), ``--jobs 1`` and
``--jobs 2`` alternately, and reads ``getrusage`` in place: ``--jobs 2``'s parent at the fork,
when the workers' last result is in and at the end, its worker from its first to its last
instruction; ``--jobs 1`` where it starts hunting (its first batch of files) and at the end.
Page faults after the fork are copy-on-write copies of the heap both processes share (every
reference count written) and each process's own new memory (its warm-ups, buffers): the
excess over ``--jobs 1`` is what two heaps cost. ``tail``: the parent's CPU from the workers'
last result to the end, the serial merge and output; ``alone``: the parent's wall time from
the worker's last instruction to the end (the clocks of both processes are the same monotonic
clock), when the second core has nothing to do. Medians over the rounds.

    python bench/fork_overhead.py [--rounds 7] [--input /tmp/x5] [--rules DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import SHARED, compile_bytecode, load_average

PROBE = r"""
import json, os, resource, sys, time
from scmwatch import hunt, workers

def now():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return [r.ru_utime, r.ru_stime, r.ru_minflt]

marks = {}
real_init, real_child, real_take, real_rest, real_batches = (
    workers.Workers.__init__, workers._child, workers.Workers._take, workers.Workers.rest, hunt._file_batches)

def init(self, *args):
    marks["fork"] = now()
    real_init(self, *args)

def child(fd, work):
    def timed(send):
        start = now()
        work(send)
        send(("probe", start, now(), time.perf_counter()))
    real_child(fd, timed)

def take(self, timeout):
    for got in real_take(self, timeout):
        if type(got) is tuple and got[:1] == ("probe",):
            marks["worker"] = got[1:3]
            marks["worker done"] = got[3]
            continue
        yield got

def rest(self):
    yield from real_rest(self)
    marks["rest"] = now()

def batches(units):
    marks.setdefault("hunt", now())
    return real_batches(units)

workers.Workers.__init__, workers._child = init, child
workers.Workers._take, workers.Workers.rest = take, rest
hunt._file_batches = batches
from scmwatch.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
marks["end"] = now()
marks["end at"] = time.perf_counter()
print(json.dumps(marks))
"""


def run(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spent(a: list, b: list) -> tuple[float, int]:
    """(CPU seconds, minor faults) from mark ``a`` to mark ``b``."""
    return b[0] + b[1] - a[0] - a[1], b[2] - a[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--input", default="/tmp/x5")
    ap.add_argument("--rules", type=Path, default=SHARED / "sigmahq" / "rules")
    args = ap.parse_args()
    if not Path(args.input).exists() or not args.rules.is_dir():
        sys.exit(f"needs {args.input} and {args.rules}")
    compile_bytecode()
    base = ["hunt", args.input, "--rules", str(args.rules), "--format", "jsonl", "--output", os.devnull]
    run([*base, "--jobs", "2"])  # plans and trial choices stored, caches warm
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        one = run([*base, "--jobs", "1"])
        two = run([*base, "--jobs", "2"])
        if "worker" not in two:
            sys.exit("--jobs 2 forked no worker (one input unit?)")
        figures = {
            "jobs1 hunt cpu": spent(one["hunt"], one["end"])[0],
            "jobs1 hunt faults": spent(one["hunt"], one["end"])[1],
            "parent cpu": spent(two["fork"], two["end"])[0],
            "parent faults": spent(two["fork"], two["end"])[1],
            "worker cpu": spent(*two["worker"])[0],
            "worker faults": spent(*two["worker"])[1],
            "tail cpu": spent(two["rest"], two["end"])[0],
            "tail faults": spent(two["rest"], two["end"])[1],
            "alone": two["end at"] - two["worker done"],
        }
        figures["both cpu"] = figures["parent cpu"] + figures["worker cpu"]
        figures["both faults"] = figures["parent faults"] + figures["worker faults"]
        for k, v in figures.items():
            rows.setdefault(k, []).append(v)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"--jobs 1 hunt: {med['jobs1 hunt cpu']:.3f} s CPU, {med['jobs1 hunt faults']:,.0f} faults")
    print(f"--jobs 2 after the fork: parent {med['parent cpu']:.3f} s, {med['parent faults']:,.0f} faults "
          f"(tail {1000 * med['tail cpu']:.1f} ms, {med['tail faults']:,.0f}; alone "
          f"{1000 * med['alone']:.1f} ms wall after the worker's end); "
          f"worker {med['worker cpu']:.3f} s, {med['worker faults']:,.0f} faults")
    print(f"both: {med['both cpu']:.3f} s CPU (x{med['both cpu'] / med['jobs1 hunt cpu']:.2f} of --jobs 1), "
          f"{med['both faults']:,.0f} faults (+{med['both faults'] - med['jobs1 hunt faults']:,.0f}); "
          f"medians of {args.rounds} rounds, {load_average()}")


if __name__ == "__main__":
    main()
