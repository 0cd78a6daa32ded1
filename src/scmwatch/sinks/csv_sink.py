"""CSV: one row per alert, flat columns for spreadsheets; ``details`` holds the explaining fields.

Every field is quoted (a CR or newline inside a value never splits a row, whatever the reader's
newline handling) and every cell goes through :func:`scmwatch.escape.csv_cell`: a value starting
with ``= + - @``, tab or CR gets a leading ``'`` so spreadsheets show it instead of running it
(OWASP CSV-injection guidance), and lone surrogates become U+FFFD.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import IO, Any

from scmwatch.alerts import Alert
from scmwatch.escape import csv_cell
from scmwatch.events.model import format_time
from scmwatch.sinks.explain import explain

COLUMNS = ("timestamp", "level", "title", "rule_id", "host", "source", "record_id", "tags", "details")


class CsvSink:
    """Writes the header at once and each alert as it arrives (nothing is collected here)."""

    def __init__(self, stream: IO[Any], rules: Mapping[str, Any]) -> None:
        self.rules = rules
        self._w = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
        self._w.writerow(COLUMNS)
        self.count = 0

    def write(self, a: Alert) -> None:
        details = "; ".join(f"{k}={v}" for k, v in explain(a, self.rules.get(a.rule_id), max_fields=6))
        rec = "" if a.event.record_id is None else a.event.record_id
        ts = format_time(a.time) if a.time else ""
        self._w.writerow([csv_cell(v) for v in (ts, a.level, a.title, a.rule_id, a.host, a.event.source, rec,
                                                ";".join(a.tags), details)])
        self.count += 1

    def close(self) -> None:
        pass
