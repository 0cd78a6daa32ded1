"""CSV: one row per alert, flat columns for spreadsheets; ``details`` holds the explaining fields.

``EventID`` and ``Channel`` are the alert's event's; ``evidence`` keeps a correlation's chain as
compact JSON, one object per contributing event (time, host, EventID, Channel, source file,
record id: the ids to find each raw record), and is empty for a single-event alert.

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
from scmwatch.sinks.jsonl import json_line

COLUMNS = ("timestamp", "level", "title", "rule_id", "host", "source", "record_id", "EventID", "Channel",
           "tags", "details", "evidence")
REPEAT_COLUMNS = ("count", "first_timestamp", "last_timestamp")  # with hunt --dedup


class CsvSink:
    """Writes each alert as it arrives (nothing is collected here); the header goes out with the
    first row (or at :meth:`close`), so it can name the ``--dedup`` columns when rows carry them."""

    def __init__(self, stream: IO[Any], rules: Mapping[str, Any]) -> None:
        self.rules = rules
        self._w = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
        self._repeat: bool | None = None  # header written (with the --dedup columns?) at the first row
        self.count = 0

    def _header(self, repeat: bool) -> None:
        self._repeat = repeat
        self._w.writerow(COLUMNS + REPEAT_COLUMNS if repeat else COLUMNS)

    def write(self, a: Alert) -> None:
        if self._repeat is None:
            self._header(a.repeat is not None)
        details = "; ".join(f"{k}={v}" for k, v in explain(a, self.rules.get(a.rule_id), max_fields=6))
        rec = "" if a.event.record_id is None else a.event.record_id
        ts = format_time(a.time) if a.time else ""
        f = a.event.fields
        row = [ts, a.level, a.title, a.rule_id, a.host, a.event.source, rec, _scalar(f.get("EventID")),
               _scalar(f.get("Channel")), ";".join(a.tags), details, evidence_json(a)]
        if self._repeat:
            r = a.repeat
            row += [r.count, format_time(r.first) if r.first else "", format_time(r.last) if r.last else ""] \
                if r is not None else [1, ts, ts]
        self._w.writerow([csv_cell(v) for v in row])
        self.count += 1

    def close(self) -> None:
        if self._repeat is None:
            self._header(False)


def evidence_json(a: Alert) -> str:
    """A correlation's chain as compact JSON (``""`` for a single-event alert)."""
    if not a.events:
        return ""
    chain = [{"time": format_time(ev.time) if ev.time else None, "host": ev.fields.get("Computer"),
              "EventID": ev.fields.get("EventID"), "Channel": ev.fields.get("Channel"),
              "source": ev.source, "record_id": ev.record_id} for ev in a.events]
    return json_line(chain).decode("utf-8").rstrip("\n")


def _scalar(v: Any) -> Any:
    """A cell for a value that should be a name or number (a list or object in odd JSON: its JSON)."""
    if v is None or isinstance(v, str | int | float):
        return v
    return json_line(v).decode("utf-8").rstrip("\n")
