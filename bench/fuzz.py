"""Run the fuzz targets of tests/fuzz for longer than CI does; print executions and findings.

    .venv/bin/python bench/fuzz.py [--seconds 60] [--targets json,xml] [--engine auto]

Each target runs in its own process for ``--seconds``: under Atheris (libFuzzer, coverage
guided, seeded with ``tests/fuzz/seeds/<name>/``) when it is installed (``pip install
'.[fuzz]'``), else under Hypothesis with fresh randomness and the targets' own strategies. A
finding is an input that breaks a property of issue 11 (see ``tests/fuzz/fuzzlib.py``); each
distinct one (by its message) is saved to ``--out`` with the exception, and counted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "fuzz"


def _targets() -> list[str]:
    return sorted(p.stem.removeprefix("target_") for p in FUZZ.glob("target_*.py"))


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


class _Record:
    """Executions and distinct findings of one worker, rewritten to a JSON file as they change
    (libFuzzer ends the process with exit(), so nothing may wait for a clean shutdown)."""

    def __init__(self, name: str, engine: str, out: Path) -> None:
        self.state: dict[str, Any] = {"target": name, "engine": engine, "executions": 0, "findings": []}
        self.out = out
        self.status = out / f"{name}.status.json"
        self.seen: set[str] = set()
        self.last_write = 0.0

    def ran(self) -> None:
        self.state["executions"] += 1
        now = time.monotonic()
        if now - self.last_write > 1.0:
            self.write()

    def finding(self, data: bytes, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        key = message.split(" for ")[0][:120]
        if key in self.seen:
            return
        self.seen.add(key)
        digest = hashlib.sha1(data).hexdigest()[:12]
        path = self.out / f"{self.state['target']}-{digest}.input"
        path.write_bytes(data)
        (self.out / f"{self.state['target']}-{digest}.txt").write_text(
            "".join(traceback.format_exception(exc)), encoding="utf-8")
        self.state["findings"].append({"message": message, "input": str(path)})
        self.write()

    def write(self) -> None:
        self.last_write = time.monotonic()
        self.status.write_text(json.dumps(self.state), encoding="utf-8")


def _load(name: str) -> Any:
    sys.path[:0] = [str(FUZZ), str(FUZZ.parent)]
    import importlib

    return importlib.import_module(f"target_{name}")


def _worker_hypothesis(name: str, seconds: float, rec: _Record) -> None:
    from hypothesis import HealthCheck, given, settings

    module = _load(name)
    from fuzzlib import strategy_for

    deadline = time.monotonic() + seconds
    strategy = strategy_for(module, name)

    def one(data: bytes) -> None:
        if time.monotonic() > deadline:
            return
        rec.ran()
        try:
            module.target(data)
        except Exception as exc:  # noqa: BLE001 - every escape is a finding to record
            rec.finding(data, exc)

    run = settings(max_examples=500, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))(given(strategy)(one))
    while time.monotonic() < deadline:
        run()
    rec.write()


def _worker_atheris(name: str, seconds: float, rec: _Record) -> None:
    import atheris

    with atheris.instrument_imports(include=["scmwatch"]):
        module = _load(name)
    corpus = Path(tempfile.mkdtemp(prefix=f"scmwatch-fuzz-{name}-"))
    for seed in (FUZZ / "seeds" / name).glob("*"):
        shutil.copy(seed, corpus / seed.name)

    def one(data: bytes) -> None:
        rec.ran()
        try:
            module.target(data)
        except Exception as exc:  # noqa: BLE001 - recorded, and the fuzzer goes on
            rec.finding(data, exc)

    rec.write()
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={int(seconds)}", "-timeout=60",
                   "-rss_limit_mb=3072", "-print_final_stats=1", "-max_len=65536"], one)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    ap.add_argument("--targets", default="", help="comma-separated names (default: all)")
    ap.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    ap.add_argument("--out", default=None, help="where findings go (default: a new temp dir)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "hypothesis"
    out = Path(args.out or tempfile.mkdtemp(prefix="scmwatch-fuzz-findings-"))
    out.mkdir(parents=True, exist_ok=True)

    if args.worker:
        rec = _Record(args.worker, engine, out)
        (_worker_atheris if engine == "atheris" else _worker_hypothesis)(args.worker, args.seconds, rec)
        return 0

    names = [n for n in args.targets.split(",") if n] or _targets()
    unknown = sorted(set(names) - set(_targets()))
    if unknown:
        print(f"fuzz: unknown target(s): {', '.join(unknown)}; have: {', '.join(_targets())}",
              file=sys.stderr)
        return 2
    print(f"engine: {engine}; {args.seconds:g} s per target; findings in {out}")
    print(f"{'target':<10} {'executions':>11} {'exec/s':>8} {'findings':>9}")
    total = 0
    for name in names:
        start = time.monotonic()
        cmd = [sys.executable, __file__, "--worker", name, "--seconds", str(args.seconds),
               "--engine", engine, "--out", str(out)]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=args.seconds + 120, check=False, env={**os.environ, "PYTHONHASHSEED": "0"})
        took = time.monotonic() - start
        status = out / f"{name}.status.json"
        state = json.loads(status.read_text()) if status.exists() else {"executions": 0, "findings": []}
        n = len(state["findings"])
        total += n
        print(f"{name:<10} {state['executions']:>11,} {state['executions'] / took:>8.0f} {n:>9}")
        for f in state["findings"]:
            print(f"    {f['message']}\n      input: {f['input']}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
