"""What a small file costs the hunt beyond its events (issue 13: the x5 copies' per-file overhead).

The x5 copies of the attack corpus are 1,385 small EVTX files (most one 64 KiB chunk, ~30
events each) plus 145 other files. This hunts, in one process with the rules loaded and the
engine warmed once, alternately:

  many   the copies as they are: every file a unit (discover, open, header, chunks, audit,
         per-unit state, its result merged)
  few    the same chunks joined into one EVTX file per copy (and the same non-EVTX files), so
         the same events are read, matched and merged, with ~1,380 fewer files

and prints the hunt CPU (``time.process_time``) of each side, their ratio and the difference
per EVTX file: the per-file fixed cost in microseconds. Both sides' events are checked equal.

    python bench/many_files.py [--copies 5] [--rounds 5] [--sigmahq DIR] [--jobs 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

from common import ATTACK_SAMPLES, SHARED, load_average
from scmwatch.hunt import run_hunt
from scmwatch.sigma import Engine, load_rules
from scmwatch.sigma.cache import no_gc

sys.path.insert(0, str(Path(__file__).parent))
from case_store import make_copies  # noqa: E402

MAGIC, CHUNK_MAGIC = b"ElfFile\x00", b"ElfChnk\x00"
HEADER, CHUNK = 4096, 65536


def join_chunks(files: list[Path], out: Path) -> int:
    """Write the chunks of the EVTX ``files`` (empty ones left out) as one EVTX file, the first
    file's header with the chunk count and checksum set; returns how many files were joined."""
    header: bytearray | None = None
    chunks: list[bytes] = []
    joined = 0
    for path in files:
        data = path.read_bytes()
        if not data.startswith(MAGIC) or len(data) < HEADER + CHUNK:
            continue
        joined += 1
        if header is None:
            header = bytearray(data[:HEADER])
        for off in range(HEADER, len(data) - CHUNK + 1, CHUNK):
            if data[off:off + 8] == CHUNK_MAGIC:
                chunks.append(data[off:off + CHUNK])
    assert header is not None and len(chunks) < 1 << 16
    struct.pack_into("<QH", header, 16, len(chunks) - 1, 0)
    struct.pack_into("<H", header, 42, len(chunks))
    struct.pack_into("<I", header, 124, zlib.crc32(bytes(header[:120])))
    out.write_bytes(bytes(header) + b"".join(chunks))
    return joined


def build(root: Path, copies: int) -> tuple[Path, Path, int]:
    """``root/many`` (the copies) and ``root/few`` (one joined EVTX file per copy, the other
    files as they are); the number of EVTX files joined."""
    many, few = root / "many", root / "few"
    many.mkdir()
    make_copies(ATTACK_SAMPLES, many, copies)
    joined = 0
    for copy in sorted(many.iterdir()):
        dest = few / copy.name
        dest.mkdir(parents=True)
        evtx = sorted(p for p in copy.rglob("*") if p.is_file() and p.suffix.lower() == ".evtx")
        joined += join_chunks(evtx, dest / "joined.evtx")
        for p in copy.rglob("*"):
            if p.is_file() and p.suffix.lower() != ".evtx":
                target = dest / p.relative_to(copy)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, target)
    return many, few, joined


def hunt(path: Path, ruleset, engine: Engine, jobs: int) -> tuple[float, int]:
    """CPU seconds of one hunt (this process; with --jobs > 1 its workers too), and its events."""
    t0 = time.process_time()
    kids0 = os.times().children_user + os.times().children_system
    res = run_hunt([str(path)], ruleset, jobs=jobs, engine=engine, lines=True, sink=lambda a: None)
    kids = os.times().children_user + os.times().children_system - kids0
    return time.process_time() - t0 + kids, res.summary["events"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--sigmahq", type=Path, default=SHARED / "sigmahq")
    args = ap.parse_args()
    if not ATTACK_SAMPLES.is_dir() or not (args.sigmahq / "rules").is_dir():
        sys.exit(f"needs {ATTACK_SAMPLES} and {args.sigmahq / 'rules'}")
    with no_gc(freeze=True):
        ruleset = load_rules([args.sigmahq / "rules"])
        engine = Engine(ruleset)
    with tempfile.TemporaryDirectory(prefix="scmwatch-many-") as tmp:
        many, few, joined = build(Path(tmp), args.copies)
        print(f"x{args.copies}: {joined} EVTX files joined into {args.copies}; {load_average()}")
        for side in (many, few):  # warm: buckets built, trials done, caches filled
            hunt(side, ruleset, engine, args.jobs)
        times: dict[str, list[float]] = {"many": [], "few": []}
        events: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, side in (("many", many), ("few", few)):
                cpu, events[name] = hunt(side, ruleset, engine, args.jobs)
                times[name].append(cpu)
        assert events["many"] == events["few"], events
        m, f = statistics.median(times["many"]), statistics.median(times["few"])
        print(f"{events['many']:,} events, --jobs {args.jobs}, median of {args.rounds} rounds (min), "
              f"{load_average()}")
        print(f"  many files  {m:.3f} s CPU ({min(times['many']):.3f})")
        print(f"  few files   {f:.3f} s CPU ({min(times['few']):.3f})")
        print(f"  many / few  x{m / f:.2f}; per EVTX file beyond its events: "
              f"{(m - f) / (joined - args.copies) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
