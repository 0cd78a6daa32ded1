"""Start-up cost of all SigmaHQ: whole-process ``scmwatch hunt`` of a 2-event file.

Runs, in one go: the built-in pack (baseline), all SigmaHQ with the rule cache off, all SigmaHQ
with an empty cache (cold: loads and writes the entry) and again (warm: reads it). Prints
seconds (best of ``--repeat``) and each figure as a ratio of the baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED

SIGMAHQ = SHARED / "sigmahq"
EVENTS = (
    '{"Channel": "System", "EventID": 7045, "Computer": "h1", "ServiceName": "x",'
    ' "ImagePath": "C:\\\\Windows\\\\PSEXESVC.exe", "TimeCreated": "2024-01-01T00:00:00Z"}\n'
    '{"Channel": "Security", "EventID": 4624, "Computer": "h1", "LogonType": 3,'
    ' "TimeCreated": "2024-01-01T00:00:01Z"}\n'
)


def _hunt(events: Path, rules: list[Path], cache: str) -> float:
    scm = Path(sys.executable).with_name("scmwatch")
    cmd = [str(scm), "hunt", str(events), "--format", "jsonl", "-o", os.devnull]
    for r in rules:
        cmd += ["--rules", str(r)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "SCMWATCH_CACHE_DIR": cache},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=2, help="runs per figure (best is kept)")
    args = ap.parse_args()
    rules = sorted(SIGMAHQ.glob("rules*"))
    if not rules:
        sys.exit(f"no SigmaHQ rules under {SIGMAHQ}")
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "two.jsonl"
        events.write_text(EVENTS)
        warm_dir = str(Path(tmp) / "warm")
        _hunt(events, rules, warm_dir)  # fills the warm cache
        figures: dict[str, float] = {}
        figures["built-in pack (cached)"] = min(_hunt(events, [], warm_dir) for _ in range(args.repeat))
        figures["all SigmaHQ, cache off"] = min(_hunt(events, rules, "") for _ in range(args.repeat))
        colds = []
        for i in range(args.repeat):
            colds.append(_hunt(events, rules, str(Path(tmp) / f"cold{i}")))
        figures["all SigmaHQ, cold cache"] = min(colds)
        figures["all SigmaHQ, warm cache"] = min(_hunt(events, rules, warm_dir) for _ in range(args.repeat))
    base = figures["built-in pack (cached)"]
    print(f"whole process, `scmwatch hunt <2 events>`, best of {args.repeat}:")
    for name, sec in figures.items():
        print(f"  {name:28s} {sec:6.2f} s  {sec / base:5.1f}x built-in")


if __name__ == "__main__":
    main()
