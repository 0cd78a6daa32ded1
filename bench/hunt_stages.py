"""Where the hunt's time per event goes, stage by stage (issue 13: the NDJSON hunt loop).

Each side is the hunt loop (``hunt_unit``) with one more stage switched on, so the difference
between neighbouring sides is what that stage costs per event; all sides interleaved round by
round in one run (the machine is shared), warm engines (every bucket settled:
``hunt_throughput.settle``), the ``evtx_dump``-shaped NDJSON copy of the EVTX corpus (or the
given NDJSON files) repeated 4 times per pass:

  raw        ``orjson.loads`` per line (the ratio's baseline)
  read       the reader alone (read + normalize, ungated)
  loop       hunt_unit, no enrichment, no correlation selection, matching answers "no rule"
  +enrich    derived fields (events/enrich.py, lineage)
  +select    correlation candidate selection (when the rule set has correlations)
  +match     the real engine's matching, its answers dropped
  +hits      the real engine: hits built and spilled (``match_in`` alone timed apart)
  hunt       run_hunt: the above plus the merge, alerts and summary

``--winlogbeat`` runs it on Winlogbeat lines instead: the shared Winlogbeat golden documents
(security, sysmon and powershell modules), 20 copies as NDJSON.

    python bench/hunt_stages.py [--seconds 2] [--sigmahq DIR] [--corpus DIR] [--rules builtin]
                                [--winlogbeat] [--profile FILE] [NDJSON...]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path

import orjson

from common import SHARED, evtx_files, load_average
from hunt_throughput import hunt_pass, measure, ndjson_copy, raw_json_pass, read_json_pass, settle
from scmwatch.events import ReadStats, discover
from scmwatch.hunt import HUNT_GC_THRESHOLD, HuntContext, hunt_unit
from scmwatch.rules import pack_paths
from scmwatch.sigma import Engine, load_rules
from scmwatch.sigma.cache import freeze_gc
from scmwatch.spill import SpillDir

WINLOGBEAT = SHARED / "winlogbeat-modules"


def winlogbeat_copy(out: Path, copies: int = 20) -> Path | None:
    """The Winlogbeat golden documents as NDJSON lines, ``copies`` times (None: not there)."""
    docs: list = []
    for p in sorted(WINLOGBEAT.rglob("*.golden.json")):
        data = orjson.loads(p.read_bytes())
        docs += data if type(data) is list else [data]
    if not docs:
        return None
    out.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs) * copies)
    return out


class _NoMatch:
    """The engine's buckets (so the reader's gate is the same) with matching answering no rule."""

    def __init__(self, engine: Engine) -> None:
        self.bucket = engine.bucket
        self.excluded = 0

    @staticmethod
    def match_in(bucket, fields) -> list:
        return []


class _Silent:
    """The real engine, its answers dropped: matching costs, hits do not."""

    def __init__(self, engine: Engine) -> None:
        self.bucket = engine.bucket
        self.engine = engine
        self.excluded = 0

    def match_in(self, bucket, fields) -> list:
        self.engine.match_in(bucket, fields)
        return []


class _Timed:
    """The engine, with the time spent inside ``match_in`` added up."""

    def __init__(self, engine: Engine) -> None:
        self.bucket = engine.bucket
        self.engine = engine
        self.seconds = 0.0
        self.calls = 0

    @property
    def excluded(self) -> int:
        return self.engine.excluded

    def match_in(self, bucket, fields) -> list:
        t0 = time.perf_counter()
        out = self.engine.match_in(bucket, fields)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def unit_pass(ctx: HuntContext, paths: list[str]) -> int:
    """hunt_unit over every file, as the inline runner does (no merge)."""
    stats = ReadStats()
    n = 0
    for i, inp in enumerate(discover(paths, stats)):
        res = hunt_unit(ctx, i, inp)
        n += res.stats.events
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="*", help="NDJSON files (default: the EVTX corpus as NDJSON)")
    ap.add_argument("--corpus", default=str(SHARED / "evtx-attack-samples"))
    ap.add_argument("--sigmahq", default=str(SHARED / "sigmahq"))
    ap.add_argument("--rules", default="sigmahq", help="sigmahq (all of it) or builtin")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum time per side")
    ap.add_argument("--winlogbeat", action="store_true", help="Winlogbeat lines (golden documents)")
    ap.add_argument("--profile", help="also write a cProfile of the full hunt pass here and print its top")
    args = ap.parse_args()
    sigmahq = Path(args.sigmahq)
    if args.rules == "builtin":
        rs = load_rules(list(pack_paths()))
    elif (sigmahq / "rules").is_dir():
        rs = load_rules([sigmahq / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")])
    else:
        print(f"need SigmaHQ rules under {sigmahq}", file=sys.stderr)
        return 1
    tmp = tempfile.TemporaryDirectory()
    if args.inputs:
        inputs = list(args.inputs)
    elif args.winlogbeat:
        path = winlogbeat_copy(Path(tmp.name) / "winlogbeat.ndjson")
        if path is None:
            print(f"need Winlogbeat golden documents under {WINLOGBEAT}", file=sys.stderr)
            return 1
        inputs = [str(path)]
    else:
        files = evtx_files(args.corpus)
        if not files:
            print(f"need .evtx files under {args.corpus}", file=sys.stderr)
            return 1
        inputs = [str(ndjson_copy(files, Path(tmp.name) / "corpus.ndjson"))]
    big = inputs * 4
    engine = Engine(rs, replan_after=0)
    spill = SpillDir()
    timed = _Timed(engine)

    def ctx(eng, enrich: bool, select: bool) -> HuntContext:
        c = HuntContext(rs, spill, engine=eng, enrich=enrich)
        if not select:
            c.selector = None
        return c

    nomatch = _NoMatch(engine)
    sides = {
        "raw": lambda: raw_json_pass([Path(p) for p in big]),
        "read": lambda: read_json_pass([Path(p) for p in big]),
        "loop": lambda: unit_pass(ctx(nomatch, False, False), big),
        "+enrich": lambda: unit_pass(ctx(nomatch, True, False), big),
        "+select": lambda: unit_pass(ctx(nomatch, True, True), big),
        "+match": lambda: unit_pass(ctx(_Silent(engine), True, True), big),
        "+hits": lambda: unit_pass(ctx(timed, True, True), big),
        "hunt": lambda: hunt_pass(big, rs, engine),
    }
    # as run_hunt does: the collector does not walk the compiled rules again and again, and its
    # young generation is collected every HUNT_GC_THRESHOLD allocations. At Python's default 700
    # the hits each unit holds until its end were walked by collections run_hunt never makes:
    # 15 collections per pass, 0.38 us per event charged to "+hits" (0.07 to "+match")
    freeze_gc()
    gc.set_threshold(HUNT_GC_THRESHOLD, *gc.get_threshold()[1:])
    rates = measure(sides, args.seconds, lambda: settle([engine], inputs))
    timed.seconds = timed.calls = 0
    t0 = time.perf_counter()
    n = unit_pass(ctx(timed, True, True), big)
    match_share = timed.seconds / (time.perf_counter() - t0)
    if args.profile:
        cProfile.runctx("hunt_pass(big, rs, engine)", globals(), locals(), args.profile)
    spill.cleanup()
    tmp.cleanup()
    us = {k: 1e6 / r for k, r in rates.items()}
    print(f"events per pass {n:,}   rules {len(rs.rules)}   correlations {len(rs.correlations)}   "
          f"{load_average()}")
    prev = None
    for k in sides:
        delta = f"  (+{us[k] - us[prev]:6.2f})" if prev is not None else " " * 11
        print(f"{k:8s}: {us[k]:7.2f} us/event{delta}   {rates[k]:10,.0f} events/s   "
              f"ratio {rates[k] / rates['raw']:5.3f}")
        prev = k
    print(f"match_in alone: {us['+hits'] * match_share:.2f} us/event "
          f"({match_share:.0%} of +hits, timer included)")
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
