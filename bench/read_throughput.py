"""Reader + normalizer throughput vs the raw ``evtx`` parse, on the shared EVTX corpus.

Prints events/s for (1) raw ``PyEvtxParser.records_json()`` + ``orjson.loads``, (2)
scmwatch's ``read_input`` (sniff, parse, normalize to the event model) and (3) the same with
the EVTX reader's C chunk decoder off (the ``evtx`` package's JSON parsed by ``_flatten``: the
reader before ``_evtx.c``), interleaved round by round on the same files so machine noise hits
all alike, plus their ratios and peak RSS. The target of issue 2 is a ratio >= 0.8.

``--c-parts`` measures what each part of the C extension ``events/_flatten.c`` buys: the
reader with everything in Python, then with the C flattener (``from_evtx_dict``), then also
the C JSON parser (``from_evtx_json``), then also the C record loop (``EvtxEvents``), all
interleaved with the raw parse (the numbers quoted in _flatten.c's header).

``--xml N`` simulates N events (every scenario, seed 1) as JSONL and as wevtutil XML and reads
both, interleaved: the JSONL reader, the XML reader (C fast path) and the XML reader with only
its streaming ElementTree parser, with the XML/JSONL ratio (issue 13's target: >= 0.5).

    python bench/read_throughput.py [--seconds 5] [--c-parts] [--xml N] [PATH ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import ATTACK_SAMPLES, evtx_files, evtx_package_reader, raw_pass, run_cli
from scmwatch.events import ReadStats, read_input
from scmwatch.events.read import InputFile


def scmwatch_pass(files: list[str]) -> int:
    stats = ReadStats()
    for path in files:
        for _ in read_input(InputFile(path, path), stats):
            pass
    return stats.events


def c_parts() -> dict[str, object]:
    """Reader configurations, each a pass function that switches the C parts on cumulatively."""
    from scmwatch.events import evtx_reader, normalize

    if normalize.EvtxEvents is None:
        raise SystemExit("the C extension is not built (or SCMWATCH_PURE_PYTHON is set)")
    c_dict, c_json, c_loop = normalize.from_evtx_dict, normalize.from_evtx_json, normalize.EvtxEvents

    def config(flatten: bool, parse: bool, loop: bool):
        def run(files: list[str]) -> int:
            normalize.from_evtx_dict = c_dict if flatten else normalize.from_evtx_dict_py
            evtx_reader.from_evtx_json = c_json if parse else normalize.from_evtx_json_py
            evtx_reader.EvtxEvents = c_loop if loop else None
            return scmwatch_pass(files)
        return evtx_package_reader(run)

    return {
        "pure Python": config(False, False, False),
        "+ C flattener": config(True, False, False),
        "+ C JSON parser": config(True, True, False),
        "+ C record loop": config(True, True, True),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="*", default=[str(ATTACK_SAMPLES)])
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum time per side")
    ap.add_argument("--c-parts", action="store_true", help="what each part of the C extension buys")
    ap.add_argument("--xml", type=int, metavar="N", help="XML vs JSONL reader on N simulated events")
    args = ap.parse_args()
    if args.xml:
        return xml_table(args.xml, args.seconds)
    files = evtx_files(*args.paths)
    if not files:
        print(f"no .evtx files under {args.paths}", file=sys.stderr)
        return 1
    if args.c_parts:
        return parts_table(files, args.seconds)
    sides = (("raw", raw_pass), ("scmwatch", scmwatch_pass), ("package", evtx_package_reader(scmwatch_pass)))
    totals = {name: [0, 0.0] for name, _ in sides}
    best = {name: float("inf") for name, _ in sides}
    events = {name: 0 for name, _ in sides}
    rounds = 0
    while min(t for _, t in totals.values()) < args.seconds:
        for name, fn in sides:
            t0 = time.perf_counter()
            events[name] = fn(files)
            elapsed = time.perf_counter() - t0
            totals[name][0] += events[name]
            totals[name][1] += elapsed
            best[name] = min(best[name], elapsed)
        rounds += 1
    if events["raw"] != events["scmwatch"]:
        print(
            f"warning: raw parse saw {events['raw']} events, scmwatch {events['scmwatch']}", file=sys.stderr
        )
    raw_rate = totals["raw"][0] / totals["raw"][1]
    our_rate = totals["scmwatch"][0] / totals["scmwatch"][1]
    raw_best = events["raw"] / best["raw"]
    our_best = events["scmwatch"] / best["scmwatch"]
    old_rate = totals["package"][0] / totals["package"][1]
    old_best = events["package"] / best["package"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from scmwatch.events import normalize

    impl = "C (_flatten)" if normalize.from_evtx_dict is not normalize.from_evtx_dict_py else "pure Python"
    print(f"files: {len(files)}  events/pass: {events['raw']}  rounds: {rounds}  normalizer: {impl}")
    print(f"{'':22s} {'mean':>12s} {'best round':>12s}")
    print(f"raw evtx+orjson      : {raw_rate:12,.0f} {raw_best:12,.0f} events/s")
    print(f"scmwatch read+normal.: {our_rate:12,.0f} {our_best:12,.0f} events/s")
    print(f"ratio                : {our_rate / raw_rate:12.3f} {our_best / raw_best:12.3f}   (target >= 0.8)")
    print(f"without the C decoder: {old_rate:12,.0f} {old_best:12,.0f} events/s   "
          f"ratio {old_rate / raw_rate:.3f} / {old_best / raw_best:.3f}")
    print(f"load average         : {os.getloadavg()[0]:12.1f}")
    print(f"peak RSS             : {rss:12.1f} MiB")
    return 0


def parts_table(files: list[str], seconds: float) -> int:
    sides = {"raw evtx+orjson": raw_pass, **c_parts()}
    totals = {k: [0, 0.0] for k in sides}
    while min(t for _, t in totals.values()) < seconds:
        for name, fn in sides.items():
            t0 = time.perf_counter()
            n = fn(files)
            totals[name][0] += n
            totals[name][1] += time.perf_counter() - t0
    raw_n, raw_t = totals["raw evtx+orjson"]
    per_event_raw = raw_t / raw_n * 1e6
    print(f"files: {len(files)}")
    for name, (n, t) in totals.items():
        rate = n / t
        extra = t / n * 1e6 - per_event_raw
        print(f"{name:18s}: {rate:10,.0f} events/s   ratio {rate / (raw_n / raw_t):5.3f}   "
              f"+{extra:5.2f} us/event over the raw parse")
    return 0


def xml_table(n: int, seconds: float) -> int:
    from scmwatch.events import xml_reader

    fast = xml_reader.fast_events
    if fast is None:
        raise SystemExit("the C extension is not built (or SCMWATCH_PURE_PYTHON is set)")
    with tempfile.TemporaryDirectory(prefix="scmwatch-xml-bench-") as tmp:
        files = {}
        for fmt in ("jsonl", "xml"):
            out = Path(tmp) / fmt
            run_cli(["simulate", "all", "--events", str(n), "--format", fmt, "--out", str(out)])
            files[fmt] = sorted(str(p) for p in out.glob("*/*") if p.suffix == f".{fmt}")

        def xml_with(parser):
            def run(paths: list[str]) -> int:
                xml_reader.fast_events = parser
                return scmwatch_pass(paths)
            return run

        sides = {"JSONL reader": (scmwatch_pass, files["jsonl"]),
                 "XML reader (C fast path)": (xml_with(fast), files["xml"]),
                 "XML reader (streaming only)": (xml_with(None), files["xml"])}
        totals = {k: [0, 0.0] for k in sides}
        while min(t for _, t in totals.values()) < seconds:
            for name, (fn, paths) in sides.items():
                t0 = time.perf_counter()
                totals[name][0] += fn(paths)
                totals[name][1] += time.perf_counter() - t0
    base = totals["JSONL reader"][0] / totals["JSONL reader"][1]
    for name, (k, t) in totals.items():
        print(f"{name:28s}: {k / t:10,.0f} events/s   ratio to JSONL {k / t / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
