"""``scmwatch events``: print normalized events, for people writing and debugging rules."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from scmwatch.alerts import event_dict
from scmwatch.escape import terminal
from scmwatch.events import Event, ReadError, ReadStats, discover, read_input
from scmwatch.progress import Progress, summary_line
from scmwatch.sinks.jsonl import json_line

TABLE_LIMIT = 1000  # a terminal table of more rows helps nobody; jsonl has no limit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "events",
        help="print normalized events (for writing rules)",
        description="Read logs (EVTX, JSON/NDJSON, Windows XML, Zeek; dirs, .gz, .zip) and print the "
        "normalized events with the field names Sigma rules use.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", choices=("jsonl", "table"), default="jsonl")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="keep events whose FIELD equals VALUE (case-insensitive); FIELD~VALUE keeps those that "
        "contain it. Repeat to AND several.",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N printed events")
    p.set_defaults(func=run)


class Where:
    """``--where`` tests (AND of all), and which of their field names no event had.

    ``EventId=7045`` silently matching nothing (the field is ``EventID``) is the classic
    mistake: :meth:`unseen` lists such names, with the closest field the input did have.
    """

    def __init__(self, exprs: list[str]) -> None:
        """``Image~psexec`` / ``EventID=7045``; raises ValueError for an expression without an operator."""
        self.tests: list[tuple[str, str, str]] = []
        for expr in exprs:
            op = "~" if "~" in expr and ("=" not in expr or expr.index("~") < expr.index("=")) else "="
            field, sep, value = expr.partition(op)
            if not sep or not field:
                raise ValueError(f"--where {expr!r}: expected FIELD=VALUE or FIELD~VALUE")
            self.tests.append((field, op, value.lower()))
        self._missing = {field for field, _, _ in self.tests}
        self._names: set[str] = set()  # every field name seen while some tested one is still missing

    def __call__(self, event: Event) -> bool:
        if self._missing:
            self._names.update(event.fields)
            self._missing -= self._names
        for field, op, value in self.tests:
            have = event.fields.get(field)
            if have is None:
                return False
            text = str(have).lower()
            if (op == "=" and text != value) or (op == "~" and value not in text):
                return False
        return True

    def unseen(self) -> list[str]:
        """One line per tested field that no event read had, with a close match when there is one."""
        out = []
        by_fold = {n.casefold(): n for n in sorted(self._names)}
        for name in sorted(self._missing):
            near = by_fold.get(name.casefold())
            if near is None:
                close = difflib.get_close_matches(name.casefold(), by_fold, n=1, cutoff=0.75)
                near = by_fold[close[0]] if close else None
            hint = f" (did you mean {near}?)" if near else ""
            out.append(f"--where {name}: no event read has this field{hint}")
        return out


def run(args: argparse.Namespace) -> int:
    try:
        keep = Where(args.where)
    except ValueError as exc:
        print(f"scmwatch: {exc}", file=sys.stderr)
        return 2
    stats = ReadStats(on_error=lambda err: _print_error(err))
    start = time.perf_counter()
    inputs = list(discover(args.paths, stats))
    limit = args.limit if args.limit is not None else (TABLE_LIMIT if args.format == "table" else None)
    selected = _select(inputs, stats, keep, limit)
    if args.format == "jsonl":
        out = sys.stdout.buffer
        for event in selected:
            out.write(json_line(event_dict(event)))
        out.flush()
    else:
        _table(list(selected))
    seconds = time.perf_counter() - start
    for line in keep.unseen():
        print(f"scmwatch: warning: {terminal(line)}", file=sys.stderr)
    print(summary_line(stats, seconds), file=sys.stderr)
    return stats.exit_code


def _select(
    inputs: list[Any], stats: ReadStats, keep: Callable[[Event], bool], limit: int | None
) -> Iterator[Event]:
    printed = 0
    if limit is not None and limit <= 0:
        return
    with Progress(inputs) as bar:
        for inp in inputs:
            for event in read_input(inp, stats):
                if keep(event):
                    yield event
                    printed += 1
                    if limit is not None and printed >= limit:
                        return
            bar.file_done(inp, stats.events)


def _print_error(err: ReadError) -> None:
    print(err.line(), file=sys.stderr)


_SYSTEM = frozenset(
    {
        "EventID",
        "Channel",
        "Computer",
        "TimeCreated",
        "EventRecordID",
        "Provider_Name",
        "Provider_Guid",
        "Version",
        "Level",
        "Task",
        "Opcode",
        "Keywords",
        "ProcessID",
        "ThreadID",
        "UserID",
        "Correlation",
        "EventID_Qualifiers",
        "Provider_EventSourceName",
    }
)


def _table(events: list[Event]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    def cell(v: Any) -> str:  # log text: control characters and rich markup escaped
        return escape(terminal(v))

    table = Table(show_lines=False)
    table.add_column("time", no_wrap=True)
    for col in ("computer", "channel", "id"):
        table.add_column(col, overflow="fold", max_width=24)
    table.add_column("data", overflow="fold", ratio=1)
    for ev in events:
        f = ev.fields
        data = "  ".join(f"{k}={v}" for k, v in f.items() if k not in _SYSTEM and v not in (None, ""))
        table.add_row(
            cell(f.get("TimeCreated", "")),
            cell(f.get("Computer", "")),
            cell(f.get("Channel", "")),
            cell(f.get("EventID", "")),
            cell(data[:400]),
        )
    # Piped output has no terminal width; 80 columns would fold every value into slivers.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
