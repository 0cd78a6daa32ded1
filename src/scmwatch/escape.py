"""Log values made safe for the place they are shown: a terminal, a CSV cell, a JSON line.

Everything in a log (and every file or archive member name) is written by the attacker being
hunted, so every sink passes values through one of these helpers:

* :func:`terminal` for anything a person reads in a terminal (tables, stderr problem lines):
  every character ``str.isprintable`` rejects -- C0/C1 controls such as ESC (ANSI/OSC
  sequences: clear screen, OSC 52 clipboard writes, OSC 8 links, window titles), CR and
  newlines (which could forge a second ``scmwatch:`` line), DEL, bidi overrides, zero-width
  and line/paragraph separators, lone surrogates -- is shown as a Python-style escape
  (``\\x1b``, ``\\n``, ``\\u202e``). Backslashes are left alone: Windows paths are full of them.
* :func:`csv_cell` for spreadsheets: OWASP's CSV-injection guidance (a cell starting with
  ``= + - @``, tab or CR gets a leading ``'``); the CSV writer quotes every field.
* :func:`no_surrogates` for any UTF-8 output: a lone surrogate (from ``\\ud800`` in JSON) cannot
  be encoded and would abort the write, so it becomes U+FFFD.
"""

from __future__ import annotations

import re
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SURROGATE = re.compile("[\ud800-\udfff]")
# OWASP "CSV Injection": cells starting with these are run as formulas by spreadsheet programs.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape_char(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    n = ord(c)
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def terminal(value: Any) -> str:
    """``value`` as text that cannot move the cursor, change the terminal or start a new line."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def no_surrogates(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (so it can be written as UTF-8)."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def csv_cell(value: Any) -> Any:
    """A CSV cell value: formulas neutralised with a leading ``'``, surrogates replaced.

    Numbers and ``None`` pass through unchanged (a negative *number* is not a formula).
    """
    if value is None or isinstance(value, int | float):
        return value
    text = no_surrogates(value if isinstance(value, str) else str(value))
    if text.startswith(FORMULA_START):
        return "'" + text
    return text
