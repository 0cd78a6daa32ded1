"""Output formats for alerts: ``table`` (people), ``jsonl`` (the contract), ``csv`` (spreadsheets),
``timesketch`` and ``ecs`` (timeline and SIEM imports).

``open_sink(fmt, stream, rules)`` returns a sink with ``write(alert)`` and ``close()``: hunt
streams its (already sorted) alerts into it one by one, so the machine formats hold nothing
and the table holds at most its ``MAX_ROWS``. ``write_alerts`` writes an iterable through one
sink. ``rules`` (rule id -> CompiledRule) lets the human formats pick the few fields that
explain each hit. A new format is one module with a sink class plus one row in :data:`SINKS`.
Each row imports its module when a sink is opened: the table pulls in Rich and the ECS format
the correlation package, ~30 ms of every start that writes JSON lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, tzinfo
from typing import IO, Any, NamedTuple, Protocol

from scmwatch.alerts import Alert
from scmwatch.sinks.jsonl import JsonlSink


class AlertSink(Protocol):
    count: int

    def write(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


class SinkOptions(NamedTuple):
    """How a sink presents alerts: colour (None = when a terminal) and the display zone."""

    color: bool | None = None
    tz: tzinfo = UTC  # the table only: machine formats keep UTC


def _table(stream: IO[Any], rules: Mapping[str, Any], o: SinkOptions) -> AlertSink:
    from scmwatch.sinks.table import TableSink

    return TableSink(stream, rules, o.color, o.tz)


def _csv(stream: IO[Any], rules: Mapping[str, Any], o: SinkOptions) -> AlertSink:
    from scmwatch.sinks.csv_sink import CsvSink

    return CsvSink(stream, rules)


def _timesketch(stream: IO[Any], rules: Mapping[str, Any], o: SinkOptions) -> AlertSink:
    from scmwatch.sinks.timesketch import timesketch_line

    return JsonlSink(stream, lambda a: timesketch_line(a, rules.get(a.rule_id)))


def _ecs(stream: IO[Any], rules: Mapping[str, Any], o: SinkOptions) -> AlertSink:
    from scmwatch.sinks.ecs import ecs_document

    return JsonlSink(stream, lambda a: ecs_document(a, rules.get(a.rule_id)))


# format name -> factory(stream, rules, options); the order is the order ``--format`` lists them
SINKS: dict[str, Callable[[IO[Any], Mapping[str, Any], SinkOptions], AlertSink]] = {
    "table": _table,
    "jsonl": lambda stream, rules, o: JsonlSink(stream),
    "csv": _csv,
    "timesketch": _timesketch,
    "ecs": _ecs,
}
FORMATS = tuple(SINKS)


def open_sink(fmt: str, stream: IO[Any], rules: Mapping[str, Any] | None = None,
              color: bool | None = None, tz: tzinfo = UTC) -> AlertSink:
    factory = SINKS.get(fmt)
    if factory is None:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return factory(stream, rules or {}, SinkOptions(color, tz))


def write_alerts(alerts: Iterable[Alert], fmt: str, stream: IO[Any], rules: Mapping[str, Any] | None = None,
                 color: bool | None = None) -> None:
    """Every alert of ``alerts`` through one sink of ``fmt``, then close it."""
    sink = open_sink(fmt, stream, rules, color)
    for a in alerts:
        sink.write(a)
    sink.close()


__all__ = ["FORMATS", "SINKS", "AlertSink", "JsonlSink", "SinkOptions", "open_sink", "write_alerts"]
