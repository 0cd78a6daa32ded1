"""Table for people: time-sorted, host, level (coloured), rule title, the fields that explain it.

The "why" cell is never empty: the explaining fields (:mod:`scmwatch.sinks.explain`), then a
dim line with the event's EventID and ``file#record`` (where the raw record is); a correlation
adds the lateral link its evidence shows (source -> target, with the source address) and its
chain of events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, tzinfo
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scmwatch.alerts import Alert
from scmwatch.correlate.lateral import links_of
from scmwatch.correlate.render import evidence_lines
from scmwatch.displaytime import show_time, zone_label
from scmwatch.escape import terminal
from scmwatch.sinks.explain import explain, where

# A terminal table of more rows helps nobody and rich takes seconds to lay it out.
MAX_ROWS = 5000

LEVEL_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "informational": "dim",
}


class TableSink:
    """Keeps the first ``MAX_ROWS`` alerts (they arrive in time order) and counts the rest; the
    table is laid out at :meth:`close`, so memory is bounded by ``MAX_ROWS`` however long the run."""

    def __init__(self, stream: IO[Any], rules: Mapping[str, Any], color: bool | None = None,
                 tz: tzinfo = UTC) -> None:
        self.stream = stream
        self.rules = rules
        self.color = color
        self.tz = tz
        self.rows: list[Alert] = []
        self.count = 0

    def write(self, a: Alert) -> None:
        self.count += 1
        if len(self.rows) < MAX_ROWS:
            self.rows.append(a)

    def close(self) -> None:
        _render(self.rows, self.count, self.stream, self.rules, self.color, self.tz)
        self.rows = []


def _cell(text: str) -> str:
    """Log text for a rich table cell: control characters escaped, then rich markup escaped."""
    return escape(terminal(text))


def why(a: Alert, rule: Any | None) -> str:
    """The "why" cell (rich markup): explaining fields, lateral link, chain, where the record is."""
    lines = [f"[bold]{_cell(k)}[/]={_cell(v)}" for k, v in explain(a, rule)]
    if a.correlation and a.events:  # a correlation: one alert, then its link and chain of events
        for link in links_of(a.events):
            src = link.source_host if link.source_ip in (None, link.source_host) else \
                f"{link.source_host} ({link.source_ip})"
            lines.append(f"[bold]from[/] {_cell(src)} → {_cell(link.target_host)}")
        lines.extend(f"[dim]→[/] {_cell(line)}" for line in evidence_lines(a))
    else:
        lines.append(f"[dim]{_cell(where(a))}[/]")
    return "\n".join(lines)


def _render(alerts: Sequence[Alert], total: int, stream: IO[Any], rules: Mapping[str, Any],
            color: bool | None, tz: tzinfo = UTC) -> None:
    console = Console(file=stream, force_terminal=color, no_color=(color is False), soft_wrap=False,
                      width=None if getattr(stream, "isatty", lambda: False)() else 200)
    if not alerts:
        console.print("no alerts")
        return
    table = Table(show_lines=False, header_style="bold")
    table.add_column(f"time ({_cell(zone_label(tz))})", no_wrap=True)
    repeats = any(a.repeat is not None for a in alerts)
    if repeats:  # hunt --dedup: how many alerts each row stands for; the time cell gains the last
        table.add_column("n", justify="right", no_wrap=True)
    table.add_column("host", overflow="fold", max_width=30)
    table.add_column("level", no_wrap=True)
    table.add_column("rule", overflow="fold", max_width=44)
    table.add_column("why", overflow="fold", ratio=1)
    for a in alerts[:MAX_ROWS]:
        cells = [show_time(a.time, tz)]
        if repeats:
            r = a.repeat
            if r is not None and r.count > 1:
                cells[0] += f"\n[dim]… {show_time(r.last, tz)}[/]"
            cells.append(f"{r.count:,}" if r is not None else "1")
        table.add_row(*cells, _cell(a.host or "-"), f"[{LEVEL_STYLE.get(a.level, '')}]{_cell(a.level)}[/]",
                      _cell(a.title), why(a, rules.get(a.rule_id)))
    console.print(table)
    if total > MAX_ROWS:
        console.print(f"… {total - MAX_ROWS:,} more alerts not shown (first {MAX_ROWS:,} by time); "
                      "use --format jsonl or csv for all of them, or --min-level to narrow")
