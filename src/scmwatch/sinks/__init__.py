"""Output formats for alerts: ``table`` (people), ``jsonl`` (the contract), ``csv`` (spreadsheets).

``open_sink(fmt, stream, rules)`` returns a sink with ``write(alert)`` and ``close()``: hunt
streams its (already sorted) alerts into it one by one, so JSONL and CSV hold nothing and the
table holds at most its ``MAX_ROWS``. ``write_alerts(alerts, fmt, stream, rules)`` does the same
for an iterable. ``rules`` (rule id → CompiledRule) lets the human formats pick the few fields
that explain each hit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import IO, Any, Protocol

from scmwatch.alerts import Alert
from scmwatch.sinks.csv_sink import CsvSink, write_csv
from scmwatch.sinks.explain import explain
from scmwatch.sinks.jsonl import JsonlSink, write_jsonl
from scmwatch.sinks.table import TableSink, write_table

FORMATS = ("table", "jsonl", "csv")


class AlertSink(Protocol):
    count: int

    def write(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


def open_sink(fmt: str, stream: IO[Any], rules: Mapping[str, Any] | None = None,
              color: bool | None = None) -> AlertSink:
    rules = rules or {}
    if fmt == "jsonl":
        return JsonlSink(stream)
    if fmt == "csv":
        return CsvSink(stream, rules)
    if fmt == "table":
        return TableSink(stream, rules, color=color)
    raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


def write_alerts(alerts: Iterable[Alert], fmt: str, stream: IO[Any], rules: Mapping[str, Any] | None = None,
                 color: bool | None = None) -> None:
    sink = open_sink(fmt, stream, rules, color)
    for a in alerts:
        sink.write(a)
    sink.close()


__all__ = ["FORMATS", "AlertSink", "CsvSink", "JsonlSink", "TableSink", "explain", "open_sink",
           "write_alerts", "write_csv", "write_jsonl", "write_table"]
