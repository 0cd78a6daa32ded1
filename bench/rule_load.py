"""Start-up cost of all SigmaHQ: whole-process ``scmwatch hunt`` of a 2-event file.

Runs, in one go: the built-in pack (baseline), all SigmaHQ with the rule cache off, all SigmaHQ
with an empty cache (cold: loads, compiles and writes the entry) and again (warm: reads it and
compiles only the rules of the two events' (Channel, EventID) buckets). Prints, per figure, the
median over ``--repeat`` runs of wall seconds and of CPU seconds (user + system: steadier than
wall time on a shared machine), each as a ratio of the baseline, and the peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from common import SHARED, compile_bytecode, load_average, run_cli

SIGMAHQ = SHARED / "sigmahq"
EVENTS = (
    '{"Channel": "System", "EventID": 7045, "Computer": "h1", "ServiceName": "x",'
    ' "ImagePath": "C:\\\\Windows\\\\PSEXESVC.exe", "TimeCreated": "2024-01-01T00:00:00Z"}\n'
    '{"Channel": "Security", "EventID": 4624, "Computer": "h1", "LogonType": 3,'
    ' "TimeCreated": "2024-01-01T00:00:01Z"}\n'
)


def _hunt(events: Path, rules: list[Path], cache: str) -> tuple[float, float, int]:
    """One run: (wall seconds, CPU seconds, peak RSS KiB)."""
    args = ["hunt", str(events), "--format", "jsonl", "-o", os.devnull]
    for r in rules:
        args += ["--rules", str(r)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    saved = os.environ.get("SCMWATCH_CACHE_DIR")
    os.environ["SCMWATCH_CACHE_DIR"] = cache
    try:
        wall, rss, _ = run_cli(args)
    finally:
        if saved is None:
            del os.environ["SCMWATCH_CACHE_DIR"]
        else:
            os.environ["SCMWATCH_CACHE_DIR"] = saved
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is kept)")
    args = ap.parse_args()
    rules = sorted(SIGMAHQ.glob("rules*"))
    if not rules:
        sys.exit(f"no SigmaHQ rules under {SIGMAHQ}")
    compile_bytecode()
    runs: dict[str, list[tuple[float, float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "two.jsonl"
        events.write_text(EVENTS)
        warm_dir = str(Path(tmp) / "warm")
        _hunt(events, rules, warm_dir)  # fills the warm cache
        _hunt(events, [], warm_dir)
        # Interleaved round by round, so that machine noise hits every figure alike.
        for i in range(args.repeat):
            for name, rule_dirs, cache in (
                ("built-in pack (cached)", [], warm_dir),
                ("all SigmaHQ, cache off", rules, ""),
                ("all SigmaHQ, cold cache", rules, str(Path(tmp) / f"cold{i}")),
                ("all SigmaHQ, warm cache", rules, warm_dir),
            ):
                runs.setdefault(name, []).append(_hunt(events, rule_dirs, cache))
    med = {k: (statistics.median(w for w, _, _ in v), statistics.median(c for _, c, _ in v),
               max(r for _, _, r in v)) for k, v in runs.items()}
    base_wall, base_cpu, _ = med["built-in pack (cached)"]
    print(f"whole process, `scmwatch hunt <2 events>`, median of {args.repeat} ({load_average()}):")
    for name, (wall, cpu, rss) in med.items():
        print(f"  {name:26s} wall {wall:5.2f} s ({wall / base_wall:4.1f}x)   CPU {cpu:5.2f} s "
              f"({cpu / base_cpu:4.1f}x)   peak RSS {rss / 1024:5.0f} MiB")


if __name__ == "__main__":
    main()
