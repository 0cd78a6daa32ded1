"""What triage costs: ``hunt`` with filters, ``--tune`` and ``--dedup`` against a plain ``hunt``.

Input: the dev corpus (evtx-attack-samples) ``--copies`` times (default 20; symlinked files, so
nothing is copied), the built-in pack plus SigmaHQ's rules when they are there, so many rules
fire. Both sides run in this process, one after the other (alternating which goes first),
``--rounds`` times (default 3); each round gives a ratio of CPU times (user + system of this
process, steadier than wall time on a shared machine), and the median of the rounds' ratios
counts: on 2 shared cores a side's time varies by +-5 % between rounds, more than the cost.
The triage side has a tuning file (one drop, one level
override, an exclusion on every rule), five filter flags that keep everything they see, and
``--dedup``: it does all the work of triage. The sink only counts, so what dedup saves in a real output (a row
written instead of each alert) is not credited: a worst case. Prints events/s, alerts, rows, and
the cost (target <= 5 %).

Because that whole-run ratio is noisy, the stages are also timed alone, in the same run, on the
plain side's alerts (best of 5): the five filters and ``--dedup`` over every alert, and the
tuning file's exclusion test once per alert (the engine runs it once per rule match, a number of
the same order); their sum over the plain hunt's CPU time is the stage cost.

    .venv/bin/python bench/triage_cost.py [--copies 20] [--rounds 3] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import ATTACK_SAMPLES, SHARED
from scmwatch import rules as pack
from scmwatch.alertfilter import AlertFilter
from scmwatch.dedup import Dedup
from scmwatch.hunt import run_hunt
from scmwatch.sigma import load_rules
from scmwatch.sigma.tune import apply_tune, parse_tune

TUNE = """\
drop: ['Remote service started over MS-SCMR*']
levels: {'Remote connection to the SCM pipe*': informational}
exclude:
  '*':
    - Computer: build-agent-*
    - Computer: PC04*
    - ServiceName: [GoogleUpdater*, MicrosoftEdgeUpdate*]
"""


def link_copies(corpus: Path, root: Path, copies: int) -> int:
    """``copies`` trees of symlinks to ``corpus``'s files under ``root``; returns the file count."""
    n = 0
    for k in range(copies):
        for f in corpus.rglob("*.evtx"):
            dest = root / f"copy{k:02d}" / f.relative_to(corpus)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, dest)
            n += 1
    return n


def cpu() -> float:
    """User + system CPU seconds of this process (``time.process_time``: finer than ``os.times``)."""
    return time.process_time()


def side(paths: list[str], ruleset, triage: bool) -> tuple[float, float, int, int, dict]:
    """One hunt: (cpu s, wall s, events, alerts written, summary, alerts when plain)."""
    keep = dedup = None
    if triage:
        keep = AlertFilter.build(exclude_hosts=["nothing-*"], exclude_tags=["attack.t0000"],
                                 exclude_rules=["no such rule*"], start="2000-01-01", end="2100-01-01")
        dedup = Dedup(ruleset.by_id())
    kept: list = []
    sink = kept.append if not triage else (lambda _alert: None)
    c0, w0 = cpu(), time.perf_counter()
    res = run_hunt(paths, ruleset, jobs=1, sink=sink, keep=keep, dedup=dedup)
    return (cpu() - c0, time.perf_counter() - w0, res.summary["events"], res.summary["alerts"], res.summary,
            kept)


def stages(alerts: list, tuned) -> tuple[float, float, float]:
    """CPU seconds (best of 5) of the filters, of --dedup, and of the exclusion tests over ``alerts``."""
    exclusions = list(tuned.exclusions.values())
    best = [float("inf")] * 3
    for _ in range(5):
        keep = AlertFilter.build(exclude_hosts=["nothing-*"], exclude_tags=["attack.t0000"],
                                 exclude_rules=["no such rule*"], start="2000-01-01", end="2100-01-01")
        dedup = Dedup(tuned.by_id())
        t0 = cpu()
        for a in alerts:
            keep(a)
        t1 = cpu()
        for a in alerts:
            dedup.add(a)
        for _a in dedup.alerts():
            pass
        t2 = cpu()
        for a in alerts:
            f = a.event.fields
            for test in exclusions[:1]:
                test(f)
        t3 = cpu()
        best = [min(b, x) for b, x in zip(best, (t1 - t0, t2 - t1, t3 - t2), strict=True)]
    return best[0], best[1], best[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--corpus", type=Path, default=ATTACK_SAMPLES)
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus}: not found (the shared corpus is optional)")
    rule_paths = [str(pack.PACK_DIR)]
    sigmahq = SHARED / "sigmahq" / "rules" / "windows"
    if sigmahq.is_dir():
        rule_paths.append(str(sigmahq))
    plain = load_rules(rule_paths)
    tuned = load_rules(rule_paths)
    apply_tune(tuned, parse_tune(TUNE, "bench-tune.yml"))
    print(f"rules: {len(plain.rules)} + {len(plain.correlations)} correlations (built-in pack"
          f"{' + SigmaHQ rules/windows' if len(rule_paths) > 1 else ''})")
    with tempfile.TemporaryDirectory(prefix="scmwatch-bench-triage-") as tmp:
        files = link_copies(args.corpus, Path(tmp), args.copies)
        print(f"input: {args.copies} copies of {args.corpus.name} ({files} files)")
        runs: dict[bool, list[tuple]] = {False: [], True: []}
        for rnd in range(args.rounds):
            for triage in (False, True) if rnd % 2 == 0 else (True, False):
                r = side([tmp], tuned if triage else plain, triage)
                runs[triage].append(r)
                print(f"  round {rnd + 1} {'triage' if triage else 'plain '}: cpu {r[0]:.2f} s, "
                      f"wall {r[1]:.2f} s, {r[3]:,} rows")
    # the best of the rounds, CPU and wall each on its own
    pc, pw = min(r[0] for r in runs[False]), min(r[1] for r in runs[False])
    tc, tw = min(r[0] for r in runs[True]), min(r[1] for r in runs[True])
    ev, pa, ta, ts = runs[False][0][2], runs[False][0][3], runs[True][0][3], runs[True][0][4]
    print(f"plain : cpu {pc:.2f} s, wall {pw:.2f} s, {ev / pc:,.0f} events/s (cpu), {pa:,} alerts")
    print(f"triage: cpu {tc:.2f} s, wall {tw:.2f} s, {ev / tc:,.0f} events/s (cpu), {ta:,} rows "
          f"({ts.get('alerts_deduplicated', 0):,} repeats collapsed, "
          f"{ts.get('tune', {}).get('matches_tuned_out', 0):,} matches tuned out)")
    fc, dc, xc = stages(runs[False][0][5], tuned)
    print(f"stages alone over {pa:,} alerts: filters {fc * 1000:.0f} ms, dedup {dc * 1000:.0f} ms, "
          f"exclusion tests {xc * 1000:.0f} ms = {100 * (fc + dc + xc) / pc:.1f} % of the plain hunt's CPU")
    ratios = sorted(t[0] / p[0] for p, t in zip(runs[False], runs[True], strict=True))
    median = statistics.median(ratios)
    print(f"triage cost per round (cpu): {', '.join(f'{100 * (r - 1):+.1f} %' for r in ratios)}")
    print(f"triage cost: {100 * (median - 1):+.1f} % cpu (median of rounds; best vs best "
          f"{100 * (tc / pc - 1):+.1f} % cpu, {100 * (tw / pw - 1):+.1f} % wall) (target <= 5 %)")


if __name__ == "__main__":
    main()
