"""What the benchmarks share: the shared corpus location and the raw-parse baseline.

Every benchmark compares scmwatch with the raw speed of the ``evtx`` package on the same files
in the same run, because on a noisy machine only that ratio means anything.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import evtx
import orjson

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
ATTACK_SAMPLES = SHARED / "evtx-attack-samples"


def compile_bytecode(*dirs: str | Path) -> None:
    """Write the ``.pyc`` files of ``dirs`` (default: the scmwatch package) before a start-up
    is timed. ``pip install`` writes them for an installed package, but an editable install
    under ``PYTHONDONTWRITEBYTECODE`` never does, and compiling scmwatch's ~100 modules from
    source took 0.18 s of every start (measured)."""
    import scmwatch

    for d in dirs or (Path(scmwatch.__file__).parent,):
        compileall.compile_dir(str(d), quiet=1)


def load_average() -> str:
    """The 1-minute load average, printed beside each figure (the machine is shared)."""
    return f"load {os.getloadavg()[0]:.1f}"


def evtx_package_reader(fn):
    """``fn`` with the EVTX reader's C chunk decoder (``events/_evtx.c``) off: the ``evtx``
    package renders each record as JSON and ``_flatten`` parses it, as before the decoder, so a
    benchmark can put the old and the new reader side by side in one run."""
    return evtx_build_reader(None, fn)


def evtx_build_reader(decode, fn):
    """``fn`` with the EVTX reader's chunk decoder replaced by ``decode`` (another build's
    ``decode_chunk``), to put two builds side by side in one run."""
    from scmwatch.events import evtx_reader

    def run(*args, **kwargs):
        own, evtx_reader.DECODE_CHUNK = evtx_reader.DECODE_CHUNK, decode
        try:
            return fn(*args, **kwargs)
        finally:
            evtx_reader.DECODE_CHUNK = own

    return run


def evtx_files(*roots: str | Path) -> list[str]:
    """Every ``.evtx`` file under the given files/directories, sorted."""
    out: list[str] = []
    for root in map(Path, roots):
        out += [str(p) for p in (root.rglob("*.evtx") if root.is_dir() else [root])]
    return sorted(out)


def evtx_records(source: object) -> Iterator[str]:
    """The JSON text of each record ``PyEvtxParser.records_json()`` can decode in ``source`` (a
    path or a binary file object; the parser raises RuntimeError for the others and goes on)."""
    it = evtx.PyEvtxParser(source).records_json()
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except RuntimeError:
            continue
        yield rec["data"]


def raw_pass(files: list[str]) -> int:
    """The baseline: ``PyEvtxParser.records_json()`` + ``orjson.loads``, undecodable records skipped."""
    n = 0
    loads = orjson.loads
    for path in files:
        for data in evtx_records(path):
            loads(data)
            n += 1
    return n


# Runs a scmwatch CLI command in a fresh interpreter and reports its peak RSS (KiB) on stderr.
_WRAPPER = (
    "import resource, sys\n"
    "from scmwatch.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_cli(args: list[str]) -> tuple[float, int, str]:
    """``scmwatch ARGS`` in a new process: (wall seconds, peak RSS in KiB, its stderr)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"scmwatch {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rss = 0
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_RSS_KB"):
            rss = int(line.split()[1])
    return seconds, rss, proc.stderr
