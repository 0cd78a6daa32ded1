"""The case: one DuckDB file that holds a whole investigation (README: "Keep a case").

``CaseWriter`` is the sink ``hunt --case`` writes through (runs, input files, alerts with their
evidence and entity links, and with ``--keep-events`` the events); ``queries`` answers SQL
over the documented views; ``source`` reads stored events back for a retro-hunt. Needs the
``case`` extra (DuckDB); the names below are imported when first used, so that a cluster
worker can hash an input for the case (``case.files``) without DuckDB.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"SCHEMA_VERSION": "schema", "CaseError": "store", "is_case_path": "store", "open_case": "store",
          "CaseWriter": "writer"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
