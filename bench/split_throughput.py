"""One large file on two cores: ``--jobs 2`` vs ``--jobs 1`` beside the machine's two-process
ceiling, and ``--cluster local:2`` vs ``--jobs 2`` vs ``--jobs 1`` on the dev corpus x20 and on
the large files; the cost of a range and of a cluster task.

Whole-process wall time of ``scmwatch hunt`` (built-in pack, alerts to /dev/null), one run each:

1. One ~``--mb`` MB EVTX file: the valid chunks of the shared recordings, repeated. Only the
   recordings without old-Windows process creations (4688 without ``ParentProcessName``) are
   used: a split file with those past its first range is read again whole (``scmwatch.split``),
   so they would measure that fallback, not the split.
2. One ~``--mb`` MB NDJSON file: ``simulate all`` output in one file (repeated to the size),
   without the simulated old-Windows host, for the same reason.
3. The ceiling: each file cut in two halves (at a chunk / line boundary), two ``--jobs 1``
   processes on the halves at once, against one process on the whole; and ``--jobs 2`` over the
   two halves as two files. ``--rounds N`` repeats ``--jobs 1``, ``--jobs 2`` and the ceiling
   interleaved and prints the medians (the machine is shared: load moves between runs).
4. The dev corpus x20 (symlinks): ``--jobs 1``, ``--jobs 2``, ``--cluster local:2``.

Inputs go under ``--tmp`` and are deleted at the end. The machine is shared: run it rarely.

    .venv/bin/python bench/split_throughput.py [--mb 1024] [--copies 20] [--tmp /tmp] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ATTACK_SAMPLES, evtx_files, evtx_records
from scmwatch.events.evtx_reader import CHUNK_SIZE, HEADER_SIZE
from scmwatch.events.model import ReadStats
from scmwatch.events.ranges import _ChunkView, split_file
from scmwatch.events.read import InputFile, discover
from scmwatch.hunt import HuntContext, hunt_unit
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import load_rules
from scmwatch.simulate import Options, simulate
from scmwatch.spill import SpillDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import evtxbuild  # noqa: E402


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def _own_cpu(pid: int) -> float | None:
    """User + system seconds of process ``pid`` alone (all its threads, no children), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(stat[11]) + int(stat[12])) / _TICK


def hunt(args: list[str], summary: Path) -> tuple[float, dict]:
    """``scmwatch hunt ARGS`` in a new process: (wall seconds, its summary with ``cpu``: the user +
    system seconds of the process and its pool workers, and ``cpu_parent``: of the process alone,
    read from /proc every 20 ms while it runs (so up to 20 ms short); a LocalCluster's workers
    are not its children and are not counted)."""
    cpu = _cpu()
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "scmwatch", "hunt", *args, "--format", "jsonl", "-o", os.devnull,
           "--summary", str(summary)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    own = 0.0
    err = b""
    while True:
        try:
            _, more = proc.communicate(timeout=0.02)
            err += more or b""
            break
        except subprocess.TimeoutExpired:
            own = _own_cpu(proc.pid) or own
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode(errors='replace')[-2000:]}")
    wall = time.perf_counter() - t
    out = json.loads(summary.read_text())
    out["cpu"] = _cpu() - cpu
    out["cpu_parent"] = own
    return wall, out


def pair(a: Path, b: Path, tmp: Path) -> float:
    """Two ``--jobs 1`` hunts at once, one per half: wall seconds until both end."""
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "scmwatch", "hunt", str(p), "--jobs", "1", "--format",
                               "jsonl", "-o", os.devnull], stderr=subprocess.DEVNULL) for p in (a, b)]
    for p in procs:
        p.wait()
    return time.perf_counter() - t


def clean_recordings() -> list[str]:
    """The shared recordings whose hunt reads cleanly and looks up no process parent."""
    rs = load_rules([str(PACK_DIR)])
    spill = SpillDir()
    ctx = HuntContext(rs, spill)
    out = []
    for i, inp in enumerate(discover(evtx_files(ATTACK_SAMPLES), ReadStats())):
        r = hunt_unit(ctx, i, inp)
        if not r.lookups and not r.deferred and r.stats is not None and not r.stats.errors:
            out.append(inp.path)
    spill.cleanup()
    return out


def _evtx_header(chunks: int) -> bytes:
    """An EVTX file header declaring ``chunks`` chunks (checksum not needed by readers)."""
    head = bytearray(evtxbuild.evtx_file([])[:HEADER_SIZE])
    struct.pack_into("<QQ", head, 16, max(chunks - 1, 0), 1 << 40)  # last chunk, next record id
    struct.pack_into("<H", head, 42, chunks)
    return bytes(head)


def big_evtx(dest: Path, mb: int) -> tuple[int, int]:
    """(recordings used, chunks written); written as it goes, never held whole."""
    files = clean_recordings()
    one = evtxbuild.concat(files)[HEADER_SIZE:]
    per = len(one) // CHUNK_SIZE
    reps = max(1, ((mb << 20) // CHUNK_SIZE) // per)
    with dest.open("wb") as fh:
        fh.write(_evtx_header(per * reps))
        for _ in range(reps):
            fh.write(one)
    return len(files), per * reps


def big_ndjson(dest: Path, mb: int, tmp: Path) -> int:
    """Simulated events in one file of ~``mb`` MB; returns its lines."""
    out = tmp / "sim"
    simulate(Options(scenarios=["all"], out=out, events=200_000, seed=5, hosts=8,
                     labels=tmp / "labels.jsonl"))
    lines: list[bytes] = []
    for p in sorted(out.rglob("*.jsonl")):
        data = p.read_bytes().splitlines(keepends=True)
        if not any(b'"EventID":4688' in ln and b'"ParentProcessName"' not in ln for ln in data):
            lines += data
    lines.sort(key=lambda ln: ln[ln.find(b'"TimeCreated"'):][:45])  # in time order, as one export is
    one = b"".join(lines)
    shutil.rmtree(out)
    with dest.open("wb") as fh:
        for _ in range(max(1, (mb << 20) // len(one))):
            fh.write(one)
    return one.count(b"\n") * max(1, (mb << 20) // len(one))


def halves(path: Path, is_evtx: bool) -> tuple[Path, Path]:
    """The file cut in two at a chunk (EVTX) or line (NDJSON) boundary, copied block by block."""
    size = path.stat().st_size
    a, b = path.with_suffix(".a" + path.suffix), path.with_suffix(".b" + path.suffix)
    with path.open("rb") as src, a.open("wb") as fa, b.open("wb") as fb:
        if is_evtx:
            chunks = (size - HEADER_SIZE) // CHUNK_SIZE
            cut = HEADER_SIZE + chunks // 2 * CHUNK_SIZE
            fa.write(_evtx_header(chunks // 2))
            fb.write(_evtx_header(chunks - chunks // 2))
            src.seek(HEADER_SIZE)
        else:
            src.seek(size // 2)
            src.readline()
            cut = src.tell()
            src.seek(0)
        left = cut - src.tell()
        while left > 0:
            block = src.read(min(left, 16 << 20))
            fa.write(block)
            left -= len(block)
        shutil.copyfileobj(src, fb, 16 << 20)
    return a, b


def _raw(source: object) -> int:
    return sum(1 for _ in evtx_records(source))


def view_cost(path: Path) -> None:
    """The raw parse of the file through its path vs through the chunk-range views of 8 ranges."""
    t = time.perf_counter()
    whole = _raw(str(path))
    t_path = time.perf_counter() - t
    t = time.perf_counter()
    parts = 0
    for r in split_file(InputFile(str(path), str(path)), 8, 1) or []:
        view = _ChunkView(r)
        parts += _raw(view)
        view.close()
    t_views = time.perf_counter() - t
    print(f"  raw parse: path {t_path:.2f} s, 8 chunk-range views {t_views:.2f} s (x{t_views / t_path:.2f}), "
          f"{whole:,} / {parts:,} records")


def one_file(path: Path, is_evtx: bool, tmp: Path, rounds: int = 1) -> None:
    """``rounds`` x (``--jobs 1``, ``--jobs 2``, the ceiling pair) interleaved, so that a change
    of load from other work hits all three alike; then ``--cluster local:2`` and ``--jobs 2``
    over the two halves as two files once."""
    s = tmp / "s.json"
    size = path.stat().st_size
    if is_evtx:
        view_cost(path)
    a, b = halves(path, is_evtx)
    res = []
    for _ in range(rounds):
        t1, s1 = hunt([str(path), "--jobs", "1"], s)
        t2, s2 = hunt([str(path), "--jobs", "2"], s)
        tp = pair(a, b, tmp)
        res.append((t1, s1, t2, s2, tp))
    tc, sc = hunt([str(path), "--cluster", "local:2"], s)
    th, sh = hunt([str(a), str(b), "--jobs", "2"], s)
    a.unlink()
    b.unlink()
    s1, s2 = res[0][1], res[0][3]
    ok = all(r[1]["alerts"] == r[3]["alerts"] == sc["alerts"]
             and r[1]["events"] == r[3]["events"] == sc["events"] for r in res)
    print(f"  {size / 1e6:,.0f} MB, {s1['events']:,} events, {s1['alerts']:,} alerts "
          f"(same in all runs: {ok})")
    for k, (t1, s1, t2, s2, tp) in enumerate(res, 1):
        print(f"  round {k}: --jobs 1 {t1:6.2f} s (hunt phase {s1['seconds']:.2f} s, "
              f"{s1['events'] / t1:,.0f} ev/s, CPU {s1['cpu']:.2f} s)   --jobs 2 {t2:6.2f} s x{t1 / t2:.2f} "
              f"(CPU {s2['cpu']:.2f} s, x{s2['cpu'] / s1['cpu']:.2f}: parent {s2['cpu_parent']:.2f} s, "
              f"workers {s2['cpu'] - s2['cpu_parent']:.2f} s)   ceiling: 2 x --jobs 1 on halves at "
              f"once {tp:.2f} s x{t1 / tp:.2f}   --jobs 2 / ceiling {tp / t2:.0%}")
        line = s2["parallelism"].get("ranges_timeline")
        if line:
            first, last, lead = line["first_result"], line["last_result"], line["last_lead"]
            print(f"           --jobs 2 timeline, s from the plan: first range result {first:.2f}, last "
                  f"{last:.2f} ({lead:.2f} after the one before); hunt done "
                  f"{s2['seconds'] + s2['output_seconds']:.2f} from its start")
    if rounds > 1:
        ratio = statistics.median(r[0] / r[2] for r in res)
        ceiling = statistics.median(r[0] / r[4] for r in res)
        share = statistics.median(r[4] / r[2] for r in res)
        print(f"  median of {rounds}: --jobs 2 x{ratio:.2f}, ceiling x{ceiling:.2f}, "
              f"--jobs 2 / ceiling {share:.0%}")
    print(f"  parallelism of --jobs 2: {res[0][3]['parallelism']}")
    t1 = res[0][0]
    print(f"  --cluster local:2 {tc:7.2f} s   hunt phase {sc['seconds']:.2f} s   x{t1 / tc:.2f} "
          "(against round 1's --jobs 1)")
    print(f"  --jobs 2 on the two halves (two files) {th:.2f} s   x{t1 / th:.2f}   "
          f"CPU {sh['cpu']:.2f} s (x{sh['cpu'] / res[0][1]['cpu']:.2f})")


def corpus(tmp: Path, copies: int) -> None:
    root = tmp / "corpus"
    files = evtx_files(ATTACK_SAMPLES)
    for c in range(copies):
        d = root / f"copy{c:02d}"
        d.mkdir(parents=True)
        for i, f in enumerate(files):
            os.symlink(f, d / f"{i:04d}.evtx")
    s = tmp / "s.json"
    t1, s1 = hunt([str(root), "--jobs", "1"], s)
    t2, s2 = hunt([str(root), "--jobs", "2"], s)
    tc, sc = hunt([str(root), "--cluster", "local:2"], s)
    n = len(files) * copies
    print(f"  {n:,} files, {s1['events']:,} events, {s1['alerts']:,} alerts "
          f"(same in all runs: {s1['alerts'] == s2['alerts'] == sc['alerts']})")
    print(f"  --jobs 1 {t1:.2f} s   --jobs 2 {t2:.2f} s (x{t1 / t2:.2f})   "
          f"--cluster local:2 {tc:.2f} s (x{t1 / tc:.2f})")
    from scmwatch.cluster import Cluster

    t = time.perf_counter()
    with Cluster("local:2"):
        pass
    start = time.perf_counter() - t
    print(f"  LocalCluster start+stop {start:.2f} s; cluster task overhead per file beyond the fork pool "
          f"{(tc - start - t2) / n * 1000:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=1024, help="size of each large file (default 1024)")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--skip", default="", help="comma list of parts to skip: evtx,ndjson,corpus")
    ap.add_argument("--rounds", type=int, default=1,
                    help="--jobs 1 / --jobs 2 / ceiling rounds per large file, interleaved (default 1)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="scmwatch-split-", dir=args.tmp))
    try:
        if "evtx" not in skip:
            path = tmp / "big.evtx"
            used, chunks = big_evtx(path, args.mb)
            print(f"EVTX: {used} clean recordings, {chunks:,} chunks")
            one_file(path, True, tmp, args.rounds)
            path.unlink()
        if "ndjson" not in skip:
            path = tmp / "big.jsonl"
            lines = big_ndjson(path, args.mb, tmp)
            print(f"NDJSON: {lines:,} lines of simulate output")
            one_file(path, False, tmp, args.rounds)
            path.unlink()
        if "corpus" not in skip:
            print(f"dev corpus x{args.copies}:")
            corpus(tmp, args.copies)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
