"""What a hunt worker pays for many small files: its warm-up, its fixed cost per file.

On copies of the shared EVTX attack corpus (×5 by default: 1,390 small files, 41k events),
all SigmaHQ rules, in one process, CPU time (the machine is shared, so only figures taken side
by side in one run mean anything):

  (1) warm-up: a hunt with a fresh engine (what every ``--jobs`` worker starts with) against
      the same hunt again with the engine it warmed; the CPU of the warm-up steps (predicates
      read from the rule cache, buckets built, moved to Hyperscan) and µs per event of each;
  (2) predicates: reading the predicates of the rules that hunt read, one piece per rule
      (every source of the rule, as the rule cache stored them before) against one piece per
      source (only the bucket's), minimum of 5 passes;
  (3) per file: ``hunt_unit`` of a one-record EVTX file (warm engine) against opening and
      reading the file's header, µs per file, minimum of 5 rounds;
  (4) dispatch: the engine's buckets the two hunting processes of ``--jobs 2`` meet between
      them (each warms up every bucket it meets), with the batches dealt alternately in one
      order against the per-process queues of same-named files (``hunt._queues``); no timing;
  (5) forked: what a ``--jobs`` process pays once after the fork, in a process forked from a
      fresh interpreter that loaded the rules from the warm rule cache (as ``scmwatch hunt``
      forks its worker): the buckets of every (Channel, EventID) pair of the corpus built, then
      up to 700 of their units made ready to run as a bucket's stand-in makes them on their first
      event (about what one x5 process meets): with the C extensions the program from its stored
      parts (``ruleset.lite_program``), else the predicate read; CPU and minor page faults in all
      and per step (layouts, plans, Hyperscan databases loaded, programs, predicates), median of
      5 forks. The page faults (copy-on-write of the parent's pages and
      fresh memory, ~3 us each on this kind of VM: ~5,000, ~15 ms of ~50) hardly move with
      the load, unlike the CPU times.

    python bench/worker_warmup.py [--copies 5] [--sigmahq DIR] [--corpus DIR] [--only forked]
"""

from __future__ import annotations

import argparse
import marshal
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from case_store import make_copies
from common import ATTACK_SAMPLES, SHARED, load_average
from scmwatch import hunt
from scmwatch.events import ReadStats, discover
from scmwatch.events.model import ReadGate
from scmwatch.events.read import read_input
from scmwatch.hunt import HuntContext, hunt_unit, run_hunt
from scmwatch.sigma import Engine, load_rules, predpickle
from scmwatch.sigma import cache as sigma_cache
from scmwatch.sigma import index as sigma_index
from scmwatch.sigma import ruleset as sigma_ruleset
from scmwatch.sigma.cache import freeze_gc
from scmwatch.spill import SpillDir

STEPS = {"predicates": (sigma_ruleset.CompiledRule, "compile_units"),
         "buckets": (sigma_index.Engine, "_build"),
         "hyperscan": (sigma_index.Engine, "_upgrade")}


def timed_steps() -> Counter:
    """CPU seconds spent in each warm-up step from now on (the steps wrapped in place)."""
    spent: Counter = Counter()
    for name, (owner, attr) in STEPS.items():
        fn = getattr(owner, attr)

        def wrapper(*args, _fn=fn, _name=name, **kwargs):
            t = time.process_time()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_name] += time.process_time() - t

        setattr(owner, attr, wrapper)
    return spent


def warmup(root: Path, rules) -> list:
    """(1); returns the rules whose predicates the first hunt read."""
    spent = timed_steps()
    read: list = []
    own = sigma_ruleset.CompiledRule.compile_units

    def recording(self, source=None):
        read.append((self, source))
        return own(self, source)

    sigma_ruleset.CompiledRule.compile_units = recording
    engine = Engine(rules)
    cpu = []
    for _ in range(2):
        t = time.process_time()
        result = run_hunt([str(root)], rules, jobs=1, engine=engine, sink=lambda a: None, lines=True)
        cpu.append(time.process_time() - t)
    sigma_ruleset.CompiledRule.compile_units = own
    events = result.summary["events"]
    steps = ", ".join(f"{k} {v:.3f}" for k, v in spent.items())
    per = [c / events * 1e6 for c in cpu]
    print(f"(1) warm-up, {events:,} events: fresh engine {cpu[0]:.3f} s CPU ({per[0]:.1f} µs/event), "
          f"warm {cpu[1]:.3f} s ({per[1]:.1f} µs/event): x{cpu[0] / cpu[1]:.2f}; "
          f"warm-up steps {sum(spent.values()):.3f} s ({steps}); {load_average()}")
    return read


def predicate_pieces(read: list) -> None:
    """(2)."""
    by_ref = predpickle.module_attributes()
    whole, one = [], []
    for rule, source in read:
        preds = {u.source: u.pred for u in rule.units}
        whole.append(predpickle.dumps(preds, by_ref))
        one.append(predpickle.dumps(preds[source] if source in preds else preds, by_ref))

    def best(pieces: list[bytes]) -> float:
        times = []
        for _ in range(5):
            t = time.process_time()
            for p in pieces:
                predpickle.loads(p)
            times.append(time.process_time() - t)
        return min(times)

    a, b = best(whole), best(one)
    mb = [sum(map(len, pieces)) / 1e6 for pieces in (whole, one)]
    print(f"(2) predicates of the {len(read)} (rule, source) pairs read: per rule {a * 1e3:.1f} ms "
          f"({mb[0]:.1f} MB), per source {b * 1e3:.1f} ms ({mb[1]:.1f} MB): x{a / b:.2f}; {load_average()}")


def per_file(root: Path, rules) -> None:
    """(3)."""
    inputs = list(discover([str(root)], ReadStats()))
    ctx = HuntContext(rules, SpillDir(None), engine=Engine(rules))
    small = []
    for i, inp in enumerate(inputs):
        if inp.name.lower().endswith(".evtx"):
            r = hunt_unit(ctx, i, inp)
            if r.stats is not None and r.stats.events == 1:
                small.append(inp)
    inp = min(small, key=lambda f: (f.size or 0, f.path))
    n = 2000

    def hunt() -> None:
        for i in range(n):
            hunt_unit(ctx, i, inp, collect_errors=True)

    def raw() -> None:
        for _ in range(n):
            fd = os.open(inp.path, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)

    hunt()
    a = min(_cpu(hunt) for _ in range(5)) / n
    b = min(_cpu(raw) for _ in range(5)) / n
    print(f"(3) per file ({os.path.basename(inp.path)}, one record): hunt_unit {a * 1e6:.1f} µs, open + read "
          f"{b * 1e6:.1f} µs: x{a / b:.1f}; {load_average()}")


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def dispatch(root: Path, rules) -> None:
    """(4)."""
    inputs = list(discover([str(root)], ReadStats()))
    units = list(enumerate(inputs))
    engine = Engine(rules)
    pairs: list[set] = []
    for inp in inputs:
        met = set()
        for ev in read_input(inp, ReadStats(), ReadGate(lambda channel, eid: True)):
            key = (ev.fields.get("Channel"), ev.fields.get("EventID"))
            if not engine.bucket(*key).empty:
                met.add(key)
        pairs.append(met)

    def met(shares: list[list[int]]) -> int:
        return sum(len(set().union(*(pairs[i] for i in share))) for share in shares)

    dealt: list[list[int]] = [[], []]
    for k, batch in enumerate(hunt._batches(units, 2)):
        dealt[k % 2] += [i for i, _ in batch]
    queues = [[i for batch in q for i, _ in batch] for q in hunt._queues(units, 2)]
    one, a, b = met([list(range(len(inputs)))]), met(dealt), met(queues)
    print(f"(4) dispatch, {len(inputs):,} files: buckets met by two hunting processes, batches dealt in "
          f"one order {a}, queues by file name {b} (one process {one}): x{a / b:.2f}")


FORKED_STEPS = {"layouts": (sigma_index, "read_layout"), "plans": (sigma_index, "read_plan"),
                "databases": (sigma_index, "_hs_load"),
                "programs": (sigma_cache.RuleSource, "program"),
                "predicates": (sigma_ruleset.CompiledRule, "compile_units")}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _forked_once(rules, pairs: list[tuple], units: int, out: int) -> None:
    """In a forked child: (5) once, the figures written to ``out`` as one line."""
    spent: Counter = Counter()
    for name, (owner, attr) in FORKED_STEPS.items():
        fn = getattr(owner, attr)

        def wrapper(*args, _fn=fn, _name=name, **kwargs):
            t, f = time.process_time(), _faults()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_name] += time.process_time() - t
                spent[_name + " faults"] += _faults() - f

        setattr(owner, attr, wrapper)
    t, f = time.process_time(), _faults()
    engine = Engine(rules)
    buckets = {id(b): b for b in (engine.bucket(*pair) for pair in pairs)}
    built, built_faults = time.process_time() - t, _faults() - f
    unread = [u for b in buckets.values() for u in b.units if u.unread]
    random.Random(1).shuffle(unread)
    for u in unread[:units]:  # what a bucket's stand-in does on the unit's first event
        if u.unread and sigma_ruleset.lite_program(u, [None], 0) is None:
            u.pred  # noqa: B018 - reading it is the point
    total, faults = time.process_time() - t, _faults() - f
    os.write(out, marshal.dumps((total, faults, built, built_faults, len(buckets), min(units, len(unread)),
                                 dict(spent))))


def forked(root: Path, sigmahq: Path) -> None:
    """(5), in a fresh interpreter that loads the rules once, as ``scmwatch hunt`` does before it
    forks (forked from this process, the child's allocations land in what this one freed and
    copy it: twice the page faults of a hunt's worker)."""
    done = subprocess.run([sys.executable, __file__, "--forked-in", str(root), "--sigmahq", str(sigmahq)],
                          check=True, capture_output=True, text=True)
    print(done.stdout.strip())


def forked_in(root: Path, sigmahq: Path, units: int = 700, runs: int = 5) -> None:
    """(5) itself: the rules loaded from the (warm) rule cache, then ``runs`` forks."""
    rules = load_rules([str(sigmahq / "rules")])
    freeze_gc()
    pairs = set()
    for inp in discover([str(root)], ReadStats()):
        for ev in read_input(inp, ReadStats(), ReadGate(lambda channel, eid: True)):
            pairs.add((ev.fields.get("Channel"), ev.fields.get("EventID")))
    got = []
    for _ in range(runs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                _forked_once(rules, sorted(pairs, key=repr), units, w)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
        if status:
            sys.exit(f"(5): the forked process failed ({status})")
        got.append(marshal.loads(data))
    med = [statistics.median(g[k] for g in got) for k in range(4)]
    steps = ", ".join(f"{name} {statistics.median(g[6].get(name, 0) for g in got) * 1e3:.1f} ms / "
                      f"{statistics.median(g[6].get(name + ' faults', 0) for g in got):.0f}"
                      for name in FORKED_STEPS)
    print(f"(5) forked, {got[0][4]} buckets then {got[0][5]} units: {med[0] * 1e3:.1f} ms CPU, "
          f"{med[1]:.0f} page faults (buckets {med[2] * 1e3:.1f} ms / {med[3]:.0f}); per step, CPU / faults: "
          f"{steps}; median of {runs}; {load_average()}")

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--sigmahq", type=Path, default=SHARED / "sigmahq")
    ap.add_argument("--corpus", type=Path, default=ATTACK_SAMPLES)
    ap.add_argument("--only", choices=["forked"], help="run (5) alone")
    ap.add_argument("--forked-in", type=Path, help=argparse.SUPPRESS)  # (5)'s own interpreter
    args = ap.parse_args()
    if args.forked_in:
        forked_in(args.forked_in, args.sigmahq)
        return
    if not args.corpus.is_dir() or not (args.sigmahq / "rules").is_dir():
        sys.exit(f"needs {args.corpus} and {args.sigmahq / 'rules'}")
    load_rules([str(args.sigmahq / "rules")])  # a changed compiler: this one fills the rule cache
    rules = load_rules([str(args.sigmahq / "rules")])  # as a hunt starts: predicates read on first use
    freeze_gc()
    with tempfile.TemporaryDirectory(prefix="scmwatch-warmup-") as tmp:
        root = Path(tmp)
        make_copies(args.corpus, root, args.copies)
        forked(root, args.sigmahq)
        if args.only:
            return
        read = warmup(root, rules)
        predicate_pieces(read)
        per_file(root, rules)
        dispatch(root, rules)


if __name__ == "__main__":
    main()
