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
      order against the per-process queues of same-named files (``hunt._queues``); no timing.

    python bench/worker_warmup.py [--copies 5] [--sigmahq DIR] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--sigmahq", type=Path, default=SHARED / "sigmahq")
    ap.add_argument("--corpus", type=Path, default=ATTACK_SAMPLES)
    args = ap.parse_args()
    if not args.corpus.is_dir() or not (args.sigmahq / "rules").is_dir():
        sys.exit(f"needs {args.corpus} and {args.sigmahq / 'rules'}")
    load_rules([str(args.sigmahq / "rules")])  # a changed compiler: this one fills the rule cache
    rules = load_rules([str(args.sigmahq / "rules")])  # as a hunt starts: predicates read on first use
    freeze_gc()
    with tempfile.TemporaryDirectory(prefix="scmwatch-warmup-") as tmp:
        root = Path(tmp)
        make_copies(args.corpus, root, args.copies)
        read = warmup(root, rules)
        predicate_pieces(read)
        per_file(root, rules)
        dispatch(root, rules)


if __name__ == "__main__":
    main()
