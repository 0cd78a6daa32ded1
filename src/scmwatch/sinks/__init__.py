"""Output formats for alerts: ``table`` (people), ``jsonl`` (the contract), ``csv`` (spreadsheets).

``write_alerts(alerts, fmt, stream, rules)`` writes already-sorted alerts; ``rules`` (rule id →
CompiledRule) lets the human formats pick the few fields that explain each hit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import IO, Any

from scmwatch.alerts import Alert
from scmwatch.sinks.csv_sink import write_csv
from scmwatch.sinks.explain import explain
from scmwatch.sinks.jsonl import write_jsonl
from scmwatch.sinks.table import write_table

FORMATS = ("table", "jsonl", "csv")


def write_alerts(alerts: Sequence[Alert], fmt: str, stream: IO[Any], rules: Mapping[str, Any] | None = None,
                 color: bool | None = None) -> None:
    rules = rules or {}
    if fmt == "jsonl":
        write_jsonl(alerts, stream)
    elif fmt == "csv":
        write_csv(alerts, stream, rules)
    elif fmt == "table":
        write_table(alerts, stream, rules, color=color)
    else:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


__all__ = ["FORMATS", "explain", "write_alerts", "write_csv", "write_jsonl", "write_table"]
