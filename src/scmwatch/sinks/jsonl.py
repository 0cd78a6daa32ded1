"""JSONL: one ``Alert.to_dict()`` per line — the machine-readable contract (architecture.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import orjson

from scmwatch.alerts import Alert


class JsonlSink:
    """Writes each alert as it arrives (hunt streams them: nothing is collected here)."""

    def __init__(self, stream: IO[Any]) -> None:
        self.stream = stream
        self._buf = getattr(stream, "buffer", None)
        self.count = 0

    def write(self, a: Alert) -> None:
        line = orjson.dumps(a.to_dict(), default=str) + b"\n"
        if self._buf is not None:
            self._buf.write(line)
        else:
            self.stream.write(line.decode("utf-8"))
        self.count += 1

    def close(self) -> None:
        if self._buf is not None:
            self._buf.flush()


def write_jsonl(alerts: Iterable[Alert], stream: IO[Any]) -> None:
    sink = JsonlSink(stream)
    for a in alerts:
        sink.write(a)
    sink.close()
