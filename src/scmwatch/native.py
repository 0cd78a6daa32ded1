"""The switch for the optional C extensions (``events/_flatten.c``, ``events/_xml.c``,
``events/_lines.c``, ``sigma/_text.c``, ``sigma/_stat.c``).

Each extension replaces Python code that stays in the tree and gives identical results; the
tests compare the two. ``SCMWATCH_PURE_PYTHON`` forces the Python code: ``1``, ``true``,
``yes`` or ``on`` (any case) switch the C code off; unset, empty, ``0``, ``false``, ``no`` or
``off`` keep it. ``make test`` runs the reader and hunt tests a second time with it set.
"""

from __future__ import annotations

import os

_OFF = frozenset({"", "0", "false", "no", "off"})


def pure_python() -> bool:
    """True when ``SCMWATCH_PURE_PYTHON`` asks for the Python code instead of the C extensions."""
    return os.environ.get("SCMWATCH_PURE_PYTHON", "").strip().lower() not in _OFF
