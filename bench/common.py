"""What the benchmarks share: the shared corpus location and the raw-parse baseline.

Every benchmark compares scmwatch with the raw speed of the ``evtx`` package on the same files
in the same run, because on a noisy machine only that ratio means anything.
"""

from __future__ import annotations

from pathlib import Path

import evtx
import orjson

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
ATTACK_SAMPLES = SHARED / "evtx-attack-samples"


def evtx_files(*roots: str | Path) -> list[str]:
    """Every ``.evtx`` file under the given files/directories, sorted."""
    out: list[str] = []
    for root in map(Path, roots):
        out += [str(p) for p in (root.rglob("*.evtx") if root.is_dir() else [root])]
    return sorted(out)


def raw_pass(files: list[str]) -> int:
    """The baseline: ``PyEvtxParser.records_json()`` + ``orjson.loads``, undecodable records skipped."""
    n = 0
    loads = orjson.loads
    for path in files:
        it = evtx.PyEvtxParser(path).records_json()
        while True:
            try:
                rec = next(it)
            except StopIteration:
                break
            except RuntimeError:
                continue
            loads(rec["data"])
            n += 1
    return n
