"""What the results summary and each output format cost per alert, beside the hunt itself.

Hunts the shared EVTX attack samples and the bundled demo with the built-in pack plus every
SigmaHQ Windows rule (many alerts, many rules and hosts), keeping the alerts; then, each side
repeated until it has run >= --seconds, times ``Results.add`` (the results summary) and every
machine format writing all alerts to /dev/null. Prints microseconds per alert and the share of
the hunt's own time, so a change that makes the summary or an export costly shows as a ratio.

    python bench/triage_output.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import ATTACK_SAMPLES, SHARED
from scmwatch.hunt import run_hunt
from scmwatch.results import Results
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import load_rules
from scmwatch.sinks import open_sink

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


def repeat(fn, seconds: float) -> float:
    """Seconds per call of ``fn``, averaged over as many calls as fit in ``seconds`` (at least 2)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        spent = time.perf_counter() - start
        if n >= 2 and spent >= seconds:
            return spent / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    rule_paths = [str(PACK_DIR)]
    sigmahq = SHARED / "sigmahq" / "rules" / "windows"
    if sigmahq.is_dir():
        rule_paths.append(str(sigmahq))
    inputs = [str(DEMO)] + ([str(ATTACK_SAMPLES)] if ATTACK_SAMPLES.is_dir() else [])
    ruleset = load_rules(rule_paths)
    start = time.perf_counter()
    result = run_hunt(inputs, ruleset, show_progress=False)
    hunt_s = time.perf_counter() - start
    alerts = result.alerts
    rules = ruleset.by_id()
    n = len(alerts)
    print(f"hunt: {result.summary['events']:,} events, {n:,} alerts from {len(ruleset.rules):,} rules "
          f"in {hunt_s:.2f} s ({hunt_s / max(n, 1) * 1e6:,.1f} us of hunt per alert)")

    def summary() -> None:
        r = Results()
        for a in alerts:
            r.add(a)

    sides = {"results summary": summary}
    for fmt in ("jsonl", "csv", "timesketch", "ecs"):
        def write(fmt: str = fmt) -> None:
            with open(os.devnull, "w", encoding="utf-8", newline="") as out:
                sink = open_sink(fmt, out, rules)
                for a in alerts:
                    sink.write(a)
                sink.close()
        sides[f"--format {fmt}"] = write
    for name, fn in sides.items():
        per_run = repeat(fn, args.seconds)
        print(f"{name:>20}: {per_run / max(n, 1) * 1e6:7.1f} us/alert, {per_run / hunt_s:6.1%} of the hunt")


if __name__ == "__main__":
    main()
