"""CSV: one row per alert, flat columns for spreadsheets; ``details`` holds the explaining fields."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import IO, Any

from scmwatch.alerts import Alert
from scmwatch.events.model import format_time
from scmwatch.sinks.explain import explain

COLUMNS = ("timestamp", "level", "title", "rule_id", "host", "source", "record_id", "tags", "details")


def write_csv(alerts: Iterable[Alert], stream: IO[Any], rules: Mapping[str, Any]) -> None:
    w = csv.writer(stream, lineterminator="\n")
    w.writerow(COLUMNS)
    for a in alerts:
        details = "; ".join(f"{k}={v}" for k, v in explain(a, rules.get(a.rule_id), max_fields=6))
        rec = "" if a.event.record_id is None else a.event.record_id
        ts = format_time(a.time) if a.time else ""
        w.writerow((ts, a.level, a.title, a.rule_id, a.host, a.event.source, rec, ";".join(a.tags), details))
