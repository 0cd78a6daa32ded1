"""``scmwatch query CASE "SQL"``: read-only SQL over a case file (library: ``scmwatch.case``)."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import date, datetime
from typing import IO, Any

from scmwatch.cli.case_deps import case_modules
from scmwatch.escape import csv_cell, terminal
from scmwatch.sinks.jsonl import json_line


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "query",
        help="run read-only SQL (or a saved question) over a case file",
        description="Run SQL over a case written by `hunt --case`: views alerts, evidence, events, hosts, "
        "links, lateral_edges, files, runs, triage_state (README: Keep a case). The case is opened "
        "read-only. Instead of SQL, name a saved question (--list) and give its arguments.",
    )
    p.add_argument("case", metavar="CASE")
    p.add_argument("sql", nargs="?", metavar="SQL|QUESTION")
    p.add_argument("args", nargs="*", metavar="ARG", help="arguments of a saved question")
    p.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
    p.add_argument("--list", action="store_true", help="list the saved questions")
    p.add_argument("--max-width", type=int, default=60, metavar="N",
                   help="table: cut cells longer than N characters (default 60; 0: never)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    mods = case_modules()
    if mods is None:
        return 2
    from scmwatch.case.queries import QUESTIONS, QueryError, connect_read_only
    from scmwatch.case.queries import run as run_query
    from scmwatch.case.store import CaseError

    if args.list:
        for q in QUESTIONS:
            head = " ".join([q.name, *q.params])
            print(f"{head:<28} {q.help}")
        return 0
    if not args.sql:
        print("scmwatch: query needs SQL or a saved question name (see --list)", file=sys.stderr)
        return 2
    try:
        con = connect_read_only(args.case)
    except CaseError as exc:
        print(f"scmwatch: {terminal(args.case)}: {exc}", file=sys.stderr)
        return 1
    try:
        cols, rows = run_query(con, args.sql, args.args)
        out = sys.stdout
        if args.format == "csv":
            _csv(cols, rows, out)
        elif args.format == "jsonl":
            _jsonl(cols, rows, out)
        else:
            _table(cols, rows, out, args.max_width)
    except QueryError as exc:
        print(f"scmwatch: query: {terminal(str(exc))}", file=sys.stderr)
        return 2
    finally:
        con.close()
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return json_line(value)[:-1].decode()
    return str(value)


def _table(cols: list[str], rows: Any, out: IO[str], max_width: int) -> None:
    """A plain aligned table; the first 10k rows set the widths, later rows stream."""
    head: list[list[str]] = []
    it = iter(rows)
    for row in it:
        head.append([terminal(_cell(v)) for v in row])
        if len(head) >= 10_000:
            break

    def cut(text: str) -> str:
        return text if not max_width or len(text) <= max_width else text[: max_width - 1] + "…"

    widths = [len(c) for c in cols]
    for r in head:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], len(cut(v)))

    def line(cells: list[str]) -> str:
        return "  ".join(cut(v).ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip()

    print(line(cols), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    n = 0
    for r in head:
        print(line(r), file=out)
        n += 1
    for row in it:
        print(line([terminal(_cell(v)) for v in row]), file=out)
        n += 1
    print(f"({n:,} row{'s' if n != 1 else ''})", file=out)


def _csv(cols: list[str], rows: Any, out: IO[str]) -> None:
    w = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(cols)
    for row in rows:
        w.writerow([csv_cell(_cell(v)) for v in row])


def _jsonl(cols: list[str], rows: Any, out: IO[str]) -> None:
    buf = getattr(out, "buffer", None)
    for row in rows:
        line = json_line(dict(zip(cols, row, strict=True)))
        if buf is not None:
            buf.write(line)
        else:
            out.write(line.decode())
    if buf is not None:
        buf.flush()
