"""The case commands need the ``case`` extra (DuckDB, Jinja2): one clear line when it is missing."""

from __future__ import annotations

import importlib.util
import sys

EXTRA_HINT = "pip install 'scmwatch[case]'"


def case_modules(quiet: bool = False) -> bool | None:
    """True when DuckDB and Jinja2 import; else (unless ``quiet``) print the one-line hint and
    return None."""
    missing = [m for m in ("duckdb", "jinja2") if importlib.util.find_spec(m) is None]
    if missing:
        if not quiet:
            print(f"scmwatch: case files need {' and '.join(missing)} ({EXTRA_HINT})", file=sys.stderr)
        return None
    return True
