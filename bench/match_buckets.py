"""Where matching time goes, per (Channel, EventID) bucket, with all SigmaHQ rules.

Reads the corpus once into memory, warms an engine as a long hunt would (its buckets move to
Hyperscan, choose their atom gates from a sample and time both prefilters), then prints per
bucket, the costliest first: events, rules, the prefilter it kept, and per event the
CPU microseconds of its stages (prefilter text, scan, predicates; each the minimum over
--repeat passes, so the machine's noise only ever adds), candidates evaluated and scan matches; then the
predicates that cost most in the costliest bucket. Matching in a hunt costs more than this
(fresh event dicts, no warm caches); ``hunt_throughput.py`` gives the whole-hunt ratios.

    python bench/match_buckets.py [--corpus DIR] [--sigmahq DIR] [--top 12] [--repeat 5] [--fresh]
                                  [--ndjson]

``--ndjson`` matches the corpus' events as the NDJSON reader gives them (the ``evtx_dump``-shaped
copy of ``hunt_throughput.py``'s NDJSON ratio) instead of as the EVTX reader does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from common import SHARED, evtx_files, load_average
from hunt_throughput import ndjson_copy
from scmwatch.events import ReadStats, discover, read_input
from scmwatch.sigma import Engine, load_rules
from scmwatch.sigma.cache import freeze_gc
from scmwatch.sigma.compile import SYSTEM_FIELDS, Low
from scmwatch.sigma.index import GATE_BITS, Bucket, prefilter_text
from scmwatch.sigma.tagged import candidates, non_ascii, tagged_join, tagged_text


def _least(fn, repeat: int) -> float:
    """Least CPU time of ``fn`` over ``repeat`` runs: on a shared machine wall time also counts
    the time others had the core (runs of the same code differed by 2x at load 3-5)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _candidates(b: Bucket, f: dict) -> tuple[list[int], int]:
    """The unit positions the bucket's prefilter lets through for ``f``, and the scan's matches."""
    text = tagged_text(f, b.atoms.index, b.atoms.rest) if b.atom_scan is not None else None
    if text is not None:
        hits = b.atom_scan(text)
        cand = candidates(b.atoms, hits) | non_ascii(f, b.atoms.ascii_only)
        return sorted(cand), len(hits)
    if b.scan is None:
        return list(b.always), 0
    hits = b.scan(prefilter_text(f, b.text_fields, b.text_skip))
    cand = set(b.always)
    if b.single_gate:
        for i in hits:
            cand.update(b.lit_units[i])
    else:  # every gate of a unit must be hit
        gates = {g for i in hits for g in b.lit_units[i]}
        held = Counter(g >> GATE_BITS for g in gates)
        cand.update(u for u, c in held.items() if c == b.need[u])
    return sorted(cand), len(hits)


def _texts(b: Bucket, events: list[dict]) -> list:
    """What the bucket's scan reads, made as ``Engine._match`` makes it."""
    if b.gather is not None:  # the C path: the tagged text's bytes
        return [tagged_join(f, b.atoms.index, b.atoms.rest, True, SYSTEM_FIELDS) for f in events]
    if b.atom_scan is not None:
        return [tagged_text(f, b.atoms.index, b.atoms.rest) for f in events]
    return [prefilter_text(f, b.text_fields, b.text_skip) for f in events] if b.scan is not None else []


def _scan(b: Bucket):
    """The bucket's scan as ``Engine._match`` runs it (with the C match handler: its take too)."""
    if b.gather is not None:
        scan_db, gather = b.atom_scan_db, b.gather

        def gathered(data: bytes) -> list[int]:
            scan_db(data, gather)
            return gather.take()

        return gathered
    return b.atom_scan if b.atom_scan is not None else b.scan


def hold_state(engine: Engine) -> tuple[int, int]:
    """Keep every bucket of ``engine`` in the state it is in now: no more sampling towards a
    replan, no move off the ramp. Returns (buckets that stopped sampling, buckets on the ramp).

    Why: the timing passes go on feeding the buckets. With --fresh they crossed the replan
    threshold and the ramp's end mid-measurement (Sysmon image loads replanned in a timed pass,
    a 0.64 s compilation; 5 buckets in all), so each figure came from a different state, some
    not the one --fresh stands for, and the shares did not add up."""
    held = ramp = 0
    for b in {id(b): b for b in engine._buckets.values()}.values():
        if b.empty:
            continue
        if b.sample is not None:
            b.sample, b.replan_at = None, -1
            held += 1
        if b.upgrade_in >= 0:
            b.upgrade_in = -1
            ramp += 1
    return held, ramp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(SHARED / "evtx-attack-samples"))
    ap.add_argument("--sigmahq", default=str(SHARED / "sigmahq"))
    ap.add_argument("--top", type=int, default=12, help="buckets (and predicates) to list")
    ap.add_argument("--repeat", type=int, default=5, help="passes per figure (the minimum is kept)")
    ap.add_argument("--fresh", action="store_true",
                    help="the state a short hunt (the attack corpus x5) matches in: one pass, static atom "
                         "gates from the plan cache, the atom prefilter on every bucket that has one")
    ap.add_argument("--ndjson", action="store_true", help="the events of the corpus' NDJSON copy")
    args = ap.parse_args()
    files, sigmahq = evtx_files(args.corpus), Path(args.sigmahq)
    if not files or not (sigmahq / "rules").is_dir():
        print(f"need .evtx files under {args.corpus} and SigmaHQ rules under {sigmahq}", file=sys.stderr)
        return 1
    rs = load_rules([sigmahq / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")])
    stats = ReadStats()
    tmp = tempfile.TemporaryDirectory()
    inputs = [str(ndjson_copy(files, Path(tmp.name) / "corpus.ndjson"))] if args.ndjson else files
    events = [ev.fields for inp in discover(inputs, stats) for ev in read_input(inp, stats)]
    tmp.cleanup()
    # default: atom gates from data at once, a long hunt's steady state
    engine = Engine(rs, atoms=True) if args.fresh else Engine(rs, replan_after=0)
    for _ in range(1 if args.fresh else 3):
        for f in events:
            engine.match_fields(f)
    if args.fresh:
        held, ramp = hold_state(engine)
        print(f"fresh state held after one pass: {held} buckets stopped sampling, {ramp} left on the ramp")
    freeze_gc()  # as a hunt does: collections must not walk the rule set (seen: 2x on some buckets)
    per: dict[tuple, list[dict]] = defaultdict(list)
    for f in events:
        per[(f.get("Channel"), f.get("EventID"))].append(f)
    n_all = len(events)
    total = _least(lambda: [engine.match_fields(f) for f in events], args.repeat)
    rows = []
    for key, fs in per.items():
        b = engine.bucket(*key)
        if b.empty:
            continue
        match = _least(lambda b=b, fs=fs: [engine.match_in(b, f) for f in fs], args.repeat)
        texts = _texts(b, fs)
        scan = _scan(b)
        t_text = _least(lambda b=b, fs=fs: _texts(b, fs), args.repeat)
        t_scan = 0.0
        if scan is not None:
            t_scan = _least(lambda s=scan, t=texts: [s(x) for x in t if x is not None], args.repeat)
        cands = [_candidates(b, f) for f in fs]
        pairs = [(f, c) for f, (c, _) in zip(fs, cands, strict=True)]
        preds = b.preds

        def run_preds(pairs=pairs, preds=preds) -> None:
            for f, cand in pairs:
                low = Low(f)
                for i in cand:
                    p = preds[i]
                    p is True or p(f, low)

        t_pred = _least(run_preds, args.repeat)
        rows.append((match, key, len(fs), b, t_text, t_scan, t_pred,
                     sum(len(c) for c, _ in cands), sum(h for _, h in cands)))
    rows.sort(key=lambda r: -r[0])
    print(f"{n_all:,} events, {len(per)} buckets; match {total / n_all * 1e6:.1f} us per event "
          f"({load_average()})")
    print(f"{'bucket':58s} {'events':>6s} {'rules':>5s} {'filter':>7s} {'share':>5s} | per event, us: "
          f"{'match':>6s} {'text':>5s} {'scan':>5s} {'preds':>6s} | {'cand':>5s} {'hits':>5s}")
    for match, key, n, b, t_text, t_scan, t_pred, cand, hits in rows[:args.top]:
        kind = "atoms" if b.atom_scan is not None else "literal" if b.scan is not None else "none"
        print(f"{str(key)[:58]:58s} {n:6d} {len(b.units):5d} {kind:>7s} {match / total:5.2f} | "
              f"{'':14s} {match / n * 1e6:6.1f} {t_text / n * 1e6:5.1f} {t_scan / n * 1e6:5.1f} "
              f"{t_pred / n * 1e6:6.1f} | {cand / n:5.1f} {hits / n:5.1f}")
    _, key, n, b, *_ = rows[0]
    pairs = [(f, _candidates(b, f)[0]) for f in per[key]]
    calls: Counter = Counter(i for _, cand in pairs for i in cand)
    cost: dict[int, float] = {}
    for _ in range(args.repeat):
        spent: Counter = Counter()
        for f, cand in pairs:
            low = Low(f)
            for i in cand:
                p = b.preds[i]
                t0 = time.perf_counter()
                p is True or p(f, low)
                spent[i] += time.perf_counter() - t0
        cost = {i: min(cost.get(i, float("inf")), t) for i, t in spent.items()}
    print(f"\ncostliest predicates in {key}:")
    for i, secs in sorted(cost.items(), key=lambda kv: -kv[1])[:args.top]:
        calls_i = calls[i]
        print(f"  {secs / n * 1e6:6.2f} us per event  {calls_i:6d} calls  "
              f"{secs / calls_i * 1e6:7.1f} us per call  {Path(b.units[i].rule.path).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
