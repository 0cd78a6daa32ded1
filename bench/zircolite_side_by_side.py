"""scmwatch against Zircolite on the same inputs, in one run: whole process and hunt phase.

Needs a Zircolite checkout (``ZIRCOLITE`` argument; without one the script says so and exits 0)
with its requirements installed for ``--zircolite-python`` (default: the checkout's
``.venv/bin/python``). Both tools get all SigmaHQ rules: scmwatch the SigmaHQ tree of
``../shared`` (``--sigmahq``), Zircolite its shipped conversion of it (``--ruleset``, default
``rules/rules_windows_generic.json``). For each input the two run in turn ``--runs`` times; the
medians are printed with the ratio Zircolite / scmwatch (above 1: scmwatch is faster):

* ``two``: a 2-event JSONL file (the fixed cost of starting with all rules), plus scmwatch's
  own all-SigmaHQ / built-in-pack ratio on it;
* ``corpus``, ``x5``, ``x20``: the shared EVTX attack corpus, and 5 and 20 copies of it;
* ``100k``, ``1m``: simulated events (``scmwatch simulate all``, flat JSONL, which Zircolite reads
  with ``-j``).

Hunt phase: scmwatch's ``--summary`` ``seconds`` (reading, matching, correlating, after the
rules are loaded); Zircolite's own "Processing" time from its summary panel.

Both start warm, as a user's second run does: each tool runs once on the 2-event file first,
untimed, so scmwatch's rule cache holds the entry for these rules and options (the first run
after any change to the compiler rebuilds it: ~4 s, which the ``two`` figure once measured by
accident), and both packages' ``.pyc`` files are written (as ``pip install`` does). The load
average is printed with every figure: the machine is shared.

    python bench/zircolite_side_by_side.py /tmp/zircolite [--cases two,corpus,x5] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from case_store import make_copies
from common import ATTACK_SAMPLES, SHARED, compile_bytecode, load_average
from rule_load import EVENTS

CASES = ("two", "corpus", "x5", "x20", "100k", "1m")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PROCESSING = re.compile(r"Processing\D*?([0-9.]+)s")
_EVENTS = re.compile(r"Events\s+([0-9,]+)")


def scmwatch(inp: Path, rules: list[str], tmp: Path) -> tuple[float, float, int]:
    """Whole-process seconds, hunt-phase seconds, events read."""
    summary = tmp / "summary.json"
    cmd = [str(Path(sys.executable).with_name("scmwatch")), "hunt", str(inp), "--format", "jsonl",
           "--output", os.devnull, "--summary", str(summary)]
    for r in rules:
        cmd += ["--rules", r]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    s = json.loads(summary.read_text())
    return wall, float(s["seconds"]), int(s["events"])


def zircolite(checkout: Path, python: str, ruleset: str, inp: Path, jsonl: bool,
              tmp: Path) -> tuple[float, float, int]:
    """Whole-process seconds, its own "Processing" seconds, events it processed."""
    cmd = [python, "zircolite.py", "-e", str(inp), "-r", ruleset, "-o", str(tmp / "zircolite.json")]
    if jsonl:
        cmd += ["-j", "-f", "jsonl"]
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    text = _ANSI.sub("", out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"zircolite failed ({out.returncode}):\n{text[-2000:]}")
    phase = _PROCESSING.search(text)
    events = _EVENTS.search(text)
    count = int(events.group(1).replace(",", "")) if events else 0
    return wall, float(phase.group(1)) if phase else float("nan"), count


def prepare(case: str, tmp: Path) -> tuple[Path, bool]:
    """The input of a case and whether it is JSON lines."""
    if case == "two":
        p = tmp / "two.jsonl"
        p.write_text(EVENTS)
        return p, True
    if case == "corpus":
        return ATTACK_SAMPLES, False
    if case in ("x5", "x20"):
        root = tmp / case
        make_copies(ATTACK_SAMPLES, root, int(case[1:]))
        return root, False
    n = {"100k": 100_000, "1m": 1_000_000}[case]
    root = tmp / case
    subprocess.run([str(Path(sys.executable).with_name("scmwatch")), "simulate", "all", "--events", str(n),
                    "--out", str(root)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (root / "labels.jsonl").unlink()
    return root, True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("zircolite", nargs="?", type=Path, help="a Zircolite checkout (skipped without one)")
    ap.add_argument("--zircolite-python", help="the interpreter with Zircolite's requirements")
    ap.add_argument("--ruleset", default="rules/rules_windows_generic.json", help="relative to the checkout")
    ap.add_argument("--sigmahq", type=Path, default=SHARED / "sigmahq" / "rules")
    ap.add_argument("--cases", default=",".join(CASES[:4]), help=f"comma-separated, of {','.join(CASES)}")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    if args.zircolite is None or not (args.zircolite / "zircolite.py").is_file():
        print("skipped: give a Zircolite checkout (with its requirements installed) as the first argument")
        return 0
    if not args.sigmahq.is_dir():
        print(f"skipped: {args.sigmahq} not present (../shared is optional)")
        return 0
    python = args.zircolite_python or str(args.zircolite / ".venv" / "bin" / "python")
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    print(f"{'case':>7} {'events':>9} | {'scmwatch s':>10} {'hunt s':>7} | {'zircolite s':>11} "
          f"{'proc s':>7} | {'whole x':>7} {'hunt x':>7}")
    compile_bytecode()
    compile_bytecode(args.zircolite)
    with tempfile.TemporaryDirectory(prefix="scmwatch-zircolite-") as t:
        tmp = Path(t)
        warm, _ = prepare("two", tmp)
        scmwatch(warm, [str(args.sigmahq)], tmp)
        scmwatch(warm, ["builtin"], tmp)
        zircolite(args.zircolite, python, args.ruleset, warm, True, tmp)
        for case in cases:
            inp, jsonl = prepare(case, tmp)
            ours, theirs = [], []
            for _ in range(args.runs):
                ours.append(scmwatch(inp, [str(args.sigmahq)], tmp))
                theirs.append(zircolite(args.zircolite, python, args.ruleset, inp, jsonl, tmp))
            ow, oh = statistics.median(r[0] for r in ours), statistics.median(r[1] for r in ours)
            zw, zh = statistics.median(r[0] for r in theirs), statistics.median(r[1] for r in theirs)
            print(f"{case:>7} {ours[0][2]:>9,} | {ow:>10.2f} {oh:>7.2f} | {zw:>11.2f} {zh:>7.2f} | "
                  f"{zw / ow:>7.2f} {zh / oh if oh else float('nan'):>7.2f}  ({load_average()})", flush=True)
            if case == "two":
                pack = statistics.median(scmwatch(inp, ["builtin"], tmp)[0] for _ in range(args.runs))
                print(f"{'':>7} scmwatch start-up, all SigmaHQ / built-in pack: {ow:.2f} / {pack:.2f} s = "
                      f"{ow / pack:.2f}x (goal <= 2x; {load_average()})", flush=True)
            if case not in ("two", "corpus"):
                shutil.rmtree(inp, ignore_errors=True)
    print("whole x / hunt x: Zircolite's time / scmwatch's (goal >= 10 from 15k events up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
