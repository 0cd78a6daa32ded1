"""A log shipper stand-in for the watch tests (run as a process): append the NDJSON logs of a
simulated network (``scmwatch simulate``) under SRC to the same relative paths under DST, in
event-time order across all files, spread over about SECONDS; files appear when their first line
is due, and now and then a line is written in two parts with a pause between (the follower must
wait for its end).

    python live_writer.py SRC DST SECONDS SEED
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path


def _time(line: bytes) -> float:
    obj = json.loads(line)
    if "ts" in obj:
        return float(obj["ts"])
    from datetime import datetime

    return datetime.fromisoformat(obj["TimeCreated"].replace("Z", "+00:00")).timestamp()


def main(src: str, dst: str, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    lines: list[tuple[float, int, str, bytes]] = []
    for path in sorted(Path(src).rglob("*")):
        if not path.is_file() or path.name == "labels.jsonl":
            continue
        rel = str(path.relative_to(src))
        for n, line in enumerate(path.read_bytes().splitlines(keepends=True)):
            if line.strip():
                lines.append((_time(line), n, rel, line))
    lines.sort(key=lambda x: (x[0], x[2], x[1]))
    chunks = max(1, int(seconds / 0.02))
    per = max(1, len(lines) // chunks)
    for i in range(0, len(lines), per):
        for _, _, rel, line in lines[i:i + per]:
            out = Path(dst) / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "ab") as fh:
                if rng.random() < 0.02:
                    cut = rng.randrange(1, len(line))
                    fh.write(line[:cut])
                    fh.flush()
                    time.sleep(0.05)
                    fh.write(line[cut:])
                else:
                    fh.write(line)
        time.sleep(0.02)
    os.sync()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
