"""``scmwatch report CASE -o report.html``: one self-contained HTML file for a case."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from scmwatch.cli.case_deps import case_modules
from scmwatch.cli.outputs import clash, write_atomic
from scmwatch.escape import terminal


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of a case",
        description="Render a case written by `hunt --case` as one HTML file: summary, timeline, host x rule "
        "matrix, lateral-movement graph, every alert with its evidence, readiness, runs and files. "
        "The file loads nothing from anywhere (strict Content-Security-Policy) and reads without JavaScript.",
    )
    p.add_argument("case", metavar="CASE")
    p.add_argument("--output", "-o", metavar="FILE", required=True, help="the HTML file to write")
    p.add_argument("--max-alerts", type=int, default=None, metavar="N",
                   help="list at most N alerts with their evidence (default 2000); the rest are summarised "
                   "per rule and host")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if case_modules() is None:
        return 2
    from scmwatch.case.queries import connect_read_only
    from scmwatch.case.report import MAX_ALERTS, render_report
    from scmwatch.case.store import CaseError

    limit = MAX_ALERTS if args.max_alerts is None else args.max_alerts
    if limit < 0:
        print("scmwatch: --max-alerts must not be negative", file=sys.stderr)
        return 2
    problem = clash([("--output", args.output)], [args.case])
    if problem:
        print(f"scmwatch: {terminal(problem)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        con = connect_read_only(args.case)
    except CaseError as exc:
        print(f"scmwatch: {terminal(args.case)}: {exc}", file=sys.stderr)
        return 1
    try:
        html = render_report(con, args.case, max_alerts=limit)
    finally:
        con.close()
    data = html.encode("utf-8", "replace")
    try:
        write_atomic(args.output, data)
    except OSError as exc:
        print(f"scmwatch: {terminal(args.output)}: cannot write report: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(f"scmwatch: report {terminal(args.output)}: {len(data):,} bytes in {seconds:.2f} s",
          file=sys.stderr)
    return 0
