"""``scmwatch hunt``: run Sigma rules over logs and print alerts (library: ``scmwatch.hunt``)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import orjson

from scmwatch.alerts import LEVELS
from scmwatch.events.model import ReadError
from scmwatch.hunt import BUILTIN_RULES, builtin_rule_files, run_hunt
from scmwatch.progress import summary_line
from scmwatch.sigma import load_rules
from scmwatch.sinks import FORMATS, open_sink


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "hunt",
        help="run Sigma rules over logs and report alerts",
        description="Read logs (EVTX, JSON/NDJSON, Windows XML, Zeek; dirs, .gz, .zip), match every event "
        "against Sigma rules (the built-in pack unless --rules is given), correlate, and report alerts.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--rules", action="append", default=None, metavar="PATH",
                   help="Sigma rule file or directory (repeatable); default: the built-in pack")
    p.add_argument("--placeholders", metavar="FILE", default=None,
                   help="YAML mapping placeholder name -> list of values for |expand rules")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--output", "-o", metavar="FILE", default=None, help="write alerts here instead of stdout")
    p.add_argument("--summary", metavar="FILE", default=None, help="write the run summary as JSON here")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="worker processes over files")
    p.add_argument("--min-level", choices=LEVELS, default=None, help="drop alerts below this level")
    p.add_argument("--lateness", type=float, default=300.0, metavar="SECONDS",
                   help="correlation: how far (event time) an event may arrive behind newer ones and still "
                   "be correlated; later ones are counted as late_events (default: 300)")
    p.set_defaults(func=run)


def _write_readiness(result: Any, fmt: str, out: Any) -> None:
    """End of the table output: which rules could not fire for lack of events (readiness.py).

    Machine formats (jsonl/csv) keep their stream clean; there the gaps go to stderr in one line
    and in full to ``--summary``.
    """
    ready = getattr(result, "readiness", None)
    if ready is None or not ready.gaps:
        return
    if not result.summary.get("events"):
        return  # nothing was read: every rule is "blind", and the read errors already say why
    if fmt == "table":
        print("", file=out)
        for line in ready.lines():
            print(line, file=out)
    else:
        print(f"scmwatch: readiness: {ready.rules_blind} of {ready.rules_total} rules could not fire for "
              "lack of events (details: table output or --summary)", file=sys.stderr)


def _print_error(err: ReadError) -> None:
    print(err.line(), file=sys.stderr)


class _OutputError(Exception):
    """Writing an alert failed (disk full, closed pipe): told apart from spill-file errors."""


def run(args: argparse.Namespace) -> int:
    if args.lateness < 0:
        print("scmwatch: --lateness must not be negative", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("scmwatch: --jobs must be at least 1", file=sys.stderr)
        return 2
    if args.placeholders and not os.path.isfile(args.placeholders):
        print(f"scmwatch: {args.placeholders}: placeholder file not found", file=sys.stderr)
        return 2
    rule_paths = args.rules
    if not rule_paths:
        if not builtin_rule_files():
            print(f"scmwatch: the built-in rule pack ({BUILTIN_RULES}) is empty; give --rules PATH",
                  file=sys.stderr)
            return 2
        rule_paths = [str(BUILTIN_RULES)]
    start = time.perf_counter()
    ruleset = load_rules(rule_paths, placeholders=args.placeholders)
    for path, reason in ruleset.rejected:
        print(f"scmwatch: {path}: rule rejected: {reason}", file=sys.stderr)
    if not ruleset.rules and not ruleset.correlations:
        print("scmwatch: no rule could be loaded", file=sys.stderr)
        return 1
    rules = ruleset.by_id()
    # Alerts are streamed to the sink as the hunt's final merge produces them (never collected),
    # so the output is opened first.
    out_fh = None
    if args.output:
        try:
            out_fh = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"scmwatch: {args.output}: cannot write alerts: {exc.strerror or exc}", file=sys.stderr)
            return 1
    stream = out_fh if out_fh is not None else sys.stdout
    where = args.output or "<stdout>"
    try:
        sink = open_sink(args.format, stream, rules, color=False if out_fh is not None else None)

        def emit(alert: Any) -> None:
            try:
                sink.write(alert)
            except OSError as exc:
                raise _OutputError(exc.strerror or str(exc)) from exc

        try:
            result = run_hunt(args.paths, ruleset, jobs=args.jobs, min_level=args.min_level,
                              on_error=_print_error, lateness=args.lateness, show_progress=None, sink=emit)
        except _OutputError as exc:
            print(f"scmwatch: {where}: cannot write alerts: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"scmwatch: {tempfile.gettempdir()}: cannot write temporary spill files (set TMPDIR "
                  f"elsewhere?): {exc.strerror or exc}", file=sys.stderr)
            return 1
        try:
            sink.close()
            _write_readiness(result, args.format, stream)
            stream.flush()
        except OSError as exc:
            print(f"scmwatch: {where}: cannot write alerts: {exc.strerror or exc}", file=sys.stderr)
            return 1
    finally:
        if out_fh is not None:
            try:
                out_fh.close()
            except OSError:
                pass
    seconds = time.perf_counter() - start
    result.summary["seconds_total"] = round(seconds, 3)
    if args.summary:
        try:
            with open(args.summary, "wb") as fh:
                fh.write(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:
            print(f"scmwatch: {args.summary}: cannot write summary: {exc.strerror or exc}", file=sys.stderr)
            return 1
    extra = f"{result.summary['alerts']:,} alerts from {len(ruleset.rules):,} rules"
    if ruleset.rejected:
        extra += f" ({len(ruleset.rejected)} rejected)"
    print(summary_line(result.stats, result.summary["seconds"], extra), file=sys.stderr)
    return result.exit_code
