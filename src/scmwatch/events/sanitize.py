"""Decoded JSON values an attacker shaped: a nesting cap and lone surrogates.

Both JSON parsers we use accept things no later stage can handle: ``"\\ud800"`` decodes to a
``str`` holding a lone surrogate, which every output (orjson, CSV, the terminal) refuses to
encode; and objects nested hundreds deep decode fine but overflow orjson's serializer (255
levels) and pickle (the spill files) later. :func:`clean` is applied to decoded objects that
*may* hold either -- the callers test the raw text cheaply first (:func:`suspicious`), so a
normal record pays one scan of its text and nothing else.
"""

from __future__ import annotations

import re
from typing import Any

from scmwatch.native import pure_python

try:
    from scmwatch.events import _flatten
except ImportError:  # built without a C compiler
    _flatten = None  # type: ignore[assignment]

# Deepest nesting of objects/arrays an event may have. Windows exports nest at most ~6 deep
# (evtx JSON: Event/System/Provider/#attributes); the C parser of _flatten.c hands anything
# deeper than its own 64 to the Python path, which applies this one limit.
MAX_DEPTH = 100

_SURROGATE = re.compile("[\ud800-\udfff]")
_MARKS = {str: ("\\ud", "\\uD", "{", "["), bytes: (b"\\ud", b"\\uD", b"{", b"[")}
_scan = _flatten.suspicious if _flatten is not None and not pure_python() else None


def suspicious(raw: bytes | bytearray | memoryview | str, start: int = 0, end: int | None = None) -> bool:
    """Could the object decoded from ``raw[start:end]`` hold a lone surrogate or nest too deep?

    Only an escape ``\\udXXX`` can make a surrogate, and only MAX_DEPTH brackets a deep object.
    A whole ``bytes`` text (an NDJSON line) is scanned by ``_flatten.suspicious`` when it was
    built: one pass instead of four (4.8 -> 0.9 us per Winlogbeat line of ~2 kB).
    """
    if _scan is not None and start == 0 and end is None and raw.__class__ is bytes:
        return _scan(raw, MAX_DEPTH)
    return suspicious_py(raw, start, end)


def suspicious_py(raw: bytes | bytearray | memoryview | str, start: int = 0, end: int | None = None) -> bool:
    """:func:`suspicious` in Python (the C scan's twin; the tests compare them)."""
    if isinstance(raw, memoryview):
        raw = raw.tobytes()
    esc, esc_upper, brace, bracket = _MARKS[str if isinstance(raw, str) else bytes]
    return (
        raw.find(esc, start, end) != -1
        or raw.find(esc_upper, start, end) != -1
        or raw.count(brace, start, end) + raw.count(bracket, start, end) > MAX_DEPTH
    )


class TooDeep(ValueError):
    """The object nests deeper than :data:`MAX_DEPTH`."""


def clean(obj: Any) -> int:
    """Replace lone surrogates in every string (keys too) with U+FFFD, in place; return how many.

    Raises :class:`TooDeep` past :data:`MAX_DEPTH`. Iterative, so no nesting can exhaust the
    interpreter's stack.
    """
    replaced = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        if type(node) is dict:
            for key in list(node):
                value = node[key]
                if type(key) is str and _SURROGATE.search(key):
                    n = len(_SURROGATE.findall(key))
                    replaced += n
                    del node[key]
                    key = _SURROGATE.sub("\ufffd", key)
                    node[key] = value
                if type(value) is str:
                    if _SURROGATE.search(value):
                        replaced += len(_SURROGATE.findall(value))
                        node[key] = _SURROGATE.sub("\ufffd", value)
                elif type(value) is dict or type(value) is list:
                    stack.append((value, depth + 1))
        elif type(node) is list:
            for i, value in enumerate(node):
                if type(value) is str:
                    if _SURROGATE.search(value):
                        replaced += len(_SURROGATE.findall(value))
                        node[i] = _SURROGATE.sub("\ufffd", value)
                elif type(value) is dict or type(value) is list:
                    stack.append((value, depth + 1))
    return replaced
