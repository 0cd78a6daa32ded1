"""JSONL: one ``Alert.to_dict()`` per line — the machine-readable contract (architecture.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import orjson

from scmwatch.alerts import Alert


def write_jsonl(alerts: Iterable[Alert], stream: IO[Any]) -> None:
    buf = getattr(stream, "buffer", None)
    for a in alerts:
        line = orjson.dumps(a.to_dict(), default=str) + b"\n"
        if buf is not None:
            buf.write(line)
        else:
            stream.write(line.decode("utf-8"))
    if buf is not None:
        buf.flush()
