"""What keeping a case costs: ``hunt`` vs ``hunt --case`` vs ``hunt --case --keep-events``.

Input: the dev corpus (evtx-attack-samples) copied N times (default 20). Each copy's EVTX files
get the copy number written into the unused part of their 4 KiB file header, so the case sees N
different files (its alert ids and event store go by content) while every record is the same.
Each side runs once per repeat as the CLI in a fresh process (rule compilation included, as a
user sees it); the best of the repeats counts. Prints wall seconds, events/s, CPU seconds
(user + system: steadier than wall time on a shared machine), the ratios to the plain hunt,
alerts, peak RSS, the case size and bytes per kept event.

    python bench/case_store.py [--copies 20] [--repeats 2] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

from common import ATTACK_SAMPLES, run_cli

HEADER_PAD = 4000  # inside the EVTX file header's unused padding (the header CRC covers 120 bytes)


def make_copies(corpus: Path, root: Path, copies: int) -> int:
    """``copies`` copies of ``corpus`` under ``root``; returns the bytes of one copy."""
    size = 0
    for k in range(copies):
        dest = root / f"copy{k:02d}"
        shutil.copytree(corpus, dest)
        for f in dest.rglob("*"):
            if f.is_file() and f.suffix.lower() == ".evtx" and f.stat().st_size > 4096:
                with open(f, "r+b") as fh:
                    fh.seek(HEADER_PAD)
                    fh.write(f"scmwatch-bench-copy-{k:04d}".encode())
            if k == 0 and f.is_file():
                size += f.stat().st_size
    return size


def events_of(stderr: str) -> int:
    m = re.search(r"([\d,]+) events in", stderr)
    return int(m.group(1).replace(",", "")) if m else 0


def alerts_of(stderr: str) -> int:
    m = re.search(r"([\d,]+) alerts from", stderr)
    return int(m.group(1).replace(",", "")) if m else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=ATTACK_SAMPLES)
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus}: not found (the shared corpus is optional)")
    with tempfile.TemporaryDirectory(prefix="scmwatch-bench-case-") as tmp:
        root = Path(tmp) / "logs"
        one = make_copies(args.corpus, root, args.copies)
        print(f"input: {args.copies} copies of {args.corpus.name} ({one / 1e6:.1f} MB each)")
        sides = {
            "hunt": [],
            "hunt --case": ["--case", "{case}"],
            "hunt --case --keep-events": ["--case", "{case}", "--keep-events"],
        }
        best: dict[str, tuple[float, int, str, int, float]] = {}
        for rep in range(args.repeats):
            for name, extra in sides.items():
                case = Path(tmp) / f"case-{rep}-{len(extra)}.duckdb"
                argv = ["hunt", str(root), "--format", "jsonl", "-o", os.devnull,
                        *[a.format(case=case) for a in extra]]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                seconds, rss, err = run_cli(argv)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                size = case.stat().st_size if case.exists() else 0
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, rss, err, size, cpu)
                case.unlink(missing_ok=True)
        base, base_cpu = best["hunt"][0], best["hunt"][4]
        print(f"{'side':<28} {'wall s':>7} {'events/s':>9} {'x plain':>8} {'CPU s':>6} {'x plain':>8} "
              f"{'alerts':>7} {'RSS MB':>7} {'case MB':>8} {'B/event':>8}")
        for name, (seconds, rss, err, size, cpu) in best.items():
            ev = events_of(err)
            per_event = f"{size / ev:.0f}" if size and ev and "keep" in name else "-"
            print(f"{name:<28} {seconds:7.2f} {ev / seconds:9,.0f} {seconds / base:8.2f} {cpu:6.2f} "
                  f"{cpu / base_cpu:8.2f} {alerts_of(err):7,} {rss / 1024:7.0f} {size / 1e6:8.1f} "
                  f"{per_event:>8}")


if __name__ == "__main__":
    main()
