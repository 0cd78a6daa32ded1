"""The case: one DuckDB file that holds a whole investigation (README: "Keep a case").

``CaseWriter`` is the sink ``hunt --case`` writes through (runs, input files, alerts with their
evidence and entity links, and with ``--keep-events`` the events); ``queries`` answers SQL
over the documented views; ``source`` reads stored events back for a retro-hunt. Needs the
``case`` extra (DuckDB).
"""

from scmwatch.case.schema import SCHEMA_VERSION
from scmwatch.case.store import CaseError, is_case_path, open_case
from scmwatch.case.writer import CaseWriter

__all__ = ["SCHEMA_VERSION", "CaseError", "CaseWriter", "is_case_path", "open_case"]
