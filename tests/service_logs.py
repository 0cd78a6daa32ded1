"""NDJSON service-install logs to hunt in tests: big enough for a hunt to still run when it is
signalled, or for work to reach every ``--jobs`` worker."""

from __future__ import annotations

import json
from pathlib import Path


def system_logs(tmp: Path, files: int, events: int) -> list[str]:
    """``files`` System logs of ``events`` 7045 events each (one host per file); their paths."""
    paths = []
    for f in range(files):
        path = tmp / f"System{f}.jsonl"
        with path.open("w") as fh:
            for i in range(events):
                fh.write(json.dumps({
                    "EventID": 7045, "Channel": "System", "Computer": f"WS{f}", "EventRecordID": i + 1,
                    "TimeCreated": f"2024-05-01T10:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 100:06d}Z",
                    "ServiceName": f"svc{i}", "ImagePath": f"C:\\Users\\Public\\s{i}.exe"}) + "\n")
        paths.append(str(path))
    return paths
