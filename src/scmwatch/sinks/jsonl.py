"""JSONL: one ``Alert.to_dict()`` per line — the machine-readable contract (docs/architecture.md).

Values are written exactly as read (JSON escapes what needs escaping); only what JSON or UTF-8
cannot hold is changed, by :func:`json_line`'s fallback: lone surrogates become U+FFFD, integers
beyond 64 bits become their decimal string, nesting deeper than ``MAX_DEPTH`` a marker string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

import orjson

from scmwatch.alerts import Alert
from scmwatch.escape import no_surrogates

# orjson refuses more than 254 levels; log values nested deeper are cut here
MAX_DEPTH = 200


def json_line(obj: Any, indent: bool = False) -> bytes:
    """``obj`` as JSON ending in ``\n`` (one line unless ``indent``); never raises for odd values."""
    option = orjson.OPT_INDENT_2 if indent else 0
    try:
        return orjson.dumps(obj, default=str, option=option) + b"\n"
    except TypeError:  # orjson.JSONEncodeError: surrogates, huge ints, too deep
        return orjson.dumps(_json_safe(obj, 0), default=str, option=option) + b"\n"


def _json_safe(v: Any, depth: int) -> Any:
    if v is None or isinstance(v, bool | float):
        return v
    if isinstance(v, str):
        return no_surrogates(v)
    if isinstance(v, int):
        return v if -(1 << 63) <= v < (1 << 64) else str(v)
    if depth >= MAX_DEPTH:
        return "(nested too deep)"
    if isinstance(v, dict):
        return {no_surrogates(str(k)): _json_safe(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x, depth + 1) for x in v]
    return no_surrogates(str(v))


def as_text(value: Any) -> str | None:
    """A log value as text (for formats that map every log field as a string): strings as they
    are, ``None`` as it is, everything else as its compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if type(value) is int:  # the common non-text value (EventID, record ids); a bool is not int here
        return str(value)
    return json_line(value).decode("utf-8").rstrip("\n")


class JsonlSink:
    """Writes each alert as it arrives (hunt streams them: nothing is collected here), as the
    JSON of ``shape(alert)``: ``Alert.to_dict`` (the contract), or a Timesketch / ECS shape."""

    def __init__(self, stream: IO[Any], shape: Callable[[Alert], Any] = Alert.to_dict) -> None:
        self.stream = stream
        self.shape = shape
        self._buf = getattr(stream, "buffer", None)
        self.count = 0

    def write(self, a: Alert) -> None:
        line = json_line(self.shape(a))
        if self._buf is not None:
            self._buf.write(line)
        else:
            self.stream.write(line.decode("utf-8"))
        self.count += 1

    def close(self) -> None:
        if self._buf is not None:
            self._buf.flush()
