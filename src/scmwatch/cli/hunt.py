"""``scmwatch hunt``: run Sigma rules over logs and print alerts (library: ``scmwatch.hunt``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from scmwatch import rules as pack
from scmwatch.alertfilter import STATUSES, AlertFilter, FilterError
from scmwatch.alerts import LEVELS
from scmwatch.cli import Terminated
from scmwatch.cli.hunt_case import CaseRun, CaseRunError, looks_like_case, usage_problem
from scmwatch.cli.outputs import AtomicFile, clash, write_atomic
from scmwatch.displaytime import ZoneError, parse_zone
from scmwatch.escape import terminal
from scmwatch.events.model import ReadError
from scmwatch.events.read import Prewalk, discover
from scmwatch.export.update import RulesNotInstalled, resolve_rule_paths
from scmwatch.hunt import local_units, run_hunt
from scmwatch.progress import summary_line
from scmwatch.results import Results, fit
from scmwatch.sigma import load_rules
from scmwatch.sigma.cache import no_gc
from scmwatch.sigma.files import RULE_SUFFIXES, has_rule_files
from scmwatch.sinks import FORMATS, open_sink
from scmwatch.sinks.jsonl import json_line
from scmwatch.workers import WorkerLost


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "hunt",
        help="run Sigma rules over logs and report alerts",
        description="Read logs (EVTX, JSON/NDJSON, Windows XML, Zeek; dirs, .gz, .zip), match every event "
        "against Sigma rules (the built-in pack unless --rules is given), correlate, and report alerts. "
        "Given a case file (CASE.duckdb written with --keep-events), hunt its kept events instead.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="log files or directories (walked), .gz, .zip; or one CASE.duckdb to re-hunt")
    add_matching_options(p)
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=FORMATS, default="table",
                   help="output format (default: table): table for people (with the results summary), "
                   "jsonl (the alert contract), csv, timesketch (JSONL a Timesketch import takes), ecs "
                   "(NDJSON in the Elastic Common Schema)")
    o.add_argument("--output", "-o", metavar="FILE", default=None, help="write alerts here instead of stdout")
    o.add_argument("--summary", metavar="FILE", default=None,
                   help="write the run summary as JSON here (with the results summary as 'results')")
    o.add_argument("--dedup", action="store_true",
                   help="collapse alerts of the same rule and host with the same key-field values (the "
                   "rule's fields:, else the fields it tests) into one row with count, first and last "
                   "time; correlations are never collapsed")
    o.add_argument("--timezone", metavar="ZONE", default=None,
                   help="show times in the table and results summary in ZONE: an IANA name "
                   "(Europe/Berlin), UTC or local (default: UTC; machine formats always keep UTC)")
    o.add_argument("--readiness", choices=("short", "full"), default="short",
                   help="under the table: the rules that could not fire, their top lines (short, the "
                   "default) or all of them (full)")
    j = p.add_argument_group("running")
    j.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                   help="worker processes over files (default: the usable cores, here "
                   f"{usable_cores()}); the output is the same for every N")
    j.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run on a Dask cluster: a scheduler (tcp://host:8786) or local[:N] (a local cluster "
                   "of N worker processes); inputs may then be fsspec URLs the workers read (s3://, https://)")
    j.add_argument("--partitions", type=int, default=None, metavar="P",
                   help="with --cluster: correlate on the workers in P partitions by group-by key (default: "
                   "one per worker); 0 correlates on this machine")
    c = p.add_argument_group("case file")
    c.add_argument("--case", metavar="CASE.duckdb", default=None,
                   help="also keep the run, its input files and every alert with its evidence and entity "
                   "links in this case file (created if missing; re-hunting the same files adds nothing)")
    c.add_argument("--keep-events", action="store_true",
                   help="with --case: also keep every event (columnar) for SQL and retro-hunts "
                   "(`scmwatch hunt CASE.duckdb --rules NEW/`)")
    p.set_defaults(func=run)


def add_matching_options(p: Any) -> None:
    """The options that decide which alerts a run gives: rules, tuning, levels, the correlation's
    lateness and the triage filters (``hunt`` and ``watch`` share them), in two argument groups."""
    r = p.add_argument_group("rules and tuning", "which rules run, and what the engine does with their "
                             "matches, before correlation")
    r.add_argument("--rules", action="extend", nargs="+", default=None, metavar="PATH",
                   help="Sigma rule files or directories (several per flag, flag repeatable; give log PATHs "
                   "first or end the list with --), 'builtin' (the built-in pack) or 'sigmahq' (the set "
                   "`scmwatch rules update` installed); default: the built-in pack")
    r.add_argument("--tune", metavar="FILE", default=None,
                   help="tuning file (YAML): rules to drop, level overrides, per-rule exclusions by field "
                   "value, applied inside the engine (a tuned-out event feeds no correlation); check it "
                   "with `scmwatch rules check --tune FILE`")
    r.add_argument("--placeholders", metavar="FILE", default=None,
                   help="YAML mapping placeholder name -> list of values for |expand rules")
    r.add_argument("--min-level", choices=LEVELS, default=None,
                   help="drop alerts below this level (correlations still see the lower-level steps)")
    r.add_argument("--lateness", type=float, default=300.0, metavar="SECONDS",
                   help="correlation: how far (event time) an event may arrive behind newer ones and still "
                   "be correlated; later ones are counted as late_events (default: 300)")
    g = p.add_argument_group(
        "triage filters", "applied to the alerts after correlation (every event still feeds the "
        "correlations); values are case-insensitive, GLOBs are shell patterns; each flag is repeatable")
    g.add_argument("--include-host", action="append", metavar="GLOB",
                   help="keep alerts whose host (FQDN or short name) matches")
    g.add_argument("--exclude-host", action="append", metavar="GLOB", help="drop alerts whose host matches")
    g.add_argument("--from", dest="time_from", metavar="TIME",
                   help="keep alerts at or after TIME: ISO 8601 (no zone = UTC), YYYY-MM-DD, or "
                   "2d/3h/30m ago")
    g.add_argument("--to", dest="time_to", metavar="TIME",
                   help="keep alerts at or before TIME (a bare date includes that whole day)")
    g.add_argument("--include-tag", action="append", metavar="GLOB",
                   help="keep alerts with a matching tag (attack. prefix optional: T1569.002)")
    g.add_argument("--exclude-tag", action="append", metavar="GLOB", help="drop alerts with a matching tag")
    g.add_argument("--include-rule", action="append", metavar="GLOB",
                   help="keep alerts whose rule id or title matches")
    g.add_argument("--exclude-rule", action="append", metavar="GLOB",
                   help="drop alerts whose rule id or title matches")
    g.add_argument("--level", action="append", type=str.lower, choices=LEVELS,
                   help="keep alerts of exactly this level (see also --min-level)")
    g.add_argument("--include-status", action="append", type=str.lower, choices=STATUSES, metavar="STATUS",
                   help=f"keep alerts of rules with this Sigma status ({', '.join(STATUSES)}); a rule "
                   "without a status is not kept")
    g.add_argument("--exclude-status", action="append", type=str.lower, choices=STATUSES, metavar="STATUS",
                   help="drop alerts of rules with this Sigma status")


def usable_cores() -> int:
    """The CPUs this process may run on: ``os.process_cpu_count()`` (Python 3.13+), else the
    scheduler affinity, else ``os.cpu_count()``; at least 1."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return count() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _write_footer(result: Any, args: argparse.Namespace, out: Any, results: Results | None) -> None:
    """End of the table output: the results summary, then which rules could not fire for lack of
    events (readiness.py), collapsed to its top lines unless ``--readiness full``.

    Machine formats keep their stream clean; there the readiness gaps go to stderr in one line,
    and both summaries in full to ``--summary``.
    """
    width = _width(out)
    if args.format == "table" and results is not None:
        for line in results.lines(args.tz, width):
            print(line, file=out)
    ready = getattr(result, "readiness", None)
    if ready is None or not ready.gaps:
        return
    if not result.summary.get("events"):
        return  # nothing was read: every rule is "blind", and the read errors already say why
    if args.format == "table":
        print("", file=out)
        if args.readiness == "full":
            for line in ready.lines():
                print(terminal(line), file=out)
        else:
            for line in ready.short_lines():
                print(fit(terminal(line), width), file=out)
    else:
        print(f"scmwatch: readiness: {ready.rules_blind} of {ready.rules_total} rules could not fire for "
              "lack of events (details: table output or --summary)", file=sys.stderr)


def _width(out: Any) -> int:
    """Columns for the summaries: the terminal's, else 80 (a file or a pipe)."""
    if getattr(out, "isatty", lambda: False)():
        return max(40, shutil.get_terminal_size((80, 24)).columns)
    return 80


def _dedup(rules: dict[str, Any]) -> Any:
    """``--dedup``'s :class:`~scmwatch.dedup.Dedup`, imported only then (it imports the
    sinks' explanations: ~0.9 ms of every hunt's start otherwise)."""
    from scmwatch.dedup import Dedup

    return Dedup(rules)


def _print_error(err: ReadError) -> None:
    print(err.line(), file=sys.stderr)


class _OutputError(Exception):
    """Writing an alert failed (disk full, closed pipe): told apart from spill-file errors."""


def _output(write: Callable[..., None]) -> Callable[..., None]:
    """``write`` (a sink's) with its failures as :class:`_OutputError`; a closed pipe
    (`hunt | head`: the reader is done) as it is, and main() ends quietly."""

    def guarded(*args: Any) -> None:
        try:
            write(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputError(exc.strerror or str(exc)) from exc

    return guarded


class RunFailed(Exception):
    """The run cannot go on: ``message`` is its one stderr line, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.summary = summary or {}


def run(args: argparse.Namespace) -> int:
    if args.lateness < 0:
        print("scmwatch: --lateness must not be negative", file=sys.stderr)
        return 2
    if args.jobs is None:
        args.jobs = usable_cores()
    if args.jobs < 1:
        print("scmwatch: --jobs must be at least 1", file=sys.stderr)
        return 2
    if args.placeholders and not os.path.isfile(args.placeholders):
        print(f"scmwatch: {terminal(args.placeholders)}: placeholder file not found", file=sys.stderr)
        return 2
    outputs = [(opt, path) for opt, path in (("--output", args.output), ("--summary", args.summary)) if path]
    inputs = [*args.paths, *(args.rules or []), *([args.placeholders] if args.placeholders else []),
              *([args.tune] if args.tune else [])]
    problem = (clash(outputs, inputs) or (clash([("--case", args.case), *outputs], []) if args.case else None)
               or usage_problem(args))
    if not problem:
        problem = _rule_file_as_log(args.paths)
    if not problem and args.cluster:
        problem = _cluster_problem(args)
    elif not problem and args.partitions is not None:
        problem = "--partitions: correlation runs in partitions only on a cluster (--cluster)"
    if problem:
        print(f"scmwatch: {terminal(problem)}", file=sys.stderr)
        return 2
    try:
        args.keep = alert_filter(args)
    except FilterError as exc:
        print(f"scmwatch: {terminal(str(exc))}", file=sys.stderr)
        return 2
    try:
        args.tz = parse_zone(args.timezone)
    except ZoneError as exc:
        print(f"scmwatch: {terminal(str(exc))}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        summary, code = _run(args, start)
    except RunFailed as exc:
        print(f"scmwatch: {terminal(exc.message)}", file=sys.stderr)
        _write_summary(args.summary, {**exc.summary, "error": exc.message, "exit_code": exc.code}, start)
        return exc.code
    except Terminated as exc:
        _write_summary(args.summary, {"error": f"terminated ({exc})", "exit_code": 128 + exc.signum}, start)
        raise
    except KeyboardInterrupt:
        _write_summary(args.summary, {"error": "interrupted", "exit_code": 130}, start)
        raise
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug: one line and a summary saying so, never a traceback
        message = f"internal error: {type(exc).__name__}: {exc}"
        print(f"scmwatch: {terminal(message)}", file=sys.stderr)
        _write_summary(args.summary, {"error": message, "exit_code": 1}, start)
        return 1
    summary["error"] = None
    summary["exit_code"] = code
    if args.summary and not _write_summary(args.summary, summary, start):
        return 1
    return code


def alert_filter(args: argparse.Namespace) -> AlertFilter:
    """The triage filters of :func:`add_matching_options` (raises FilterError)."""
    return AlertFilter.build(
        include_hosts=args.include_host, exclude_hosts=args.exclude_host, include_tags=args.include_tag,
        exclude_tags=args.exclude_tag, include_rules=args.include_rule, exclude_rules=args.exclude_rule,
        levels=args.level, start=args.time_from, end=args.time_to,
        include_status=args.include_status, exclude_status=args.exclude_status)


@contextlib.contextmanager
def _units(args: argparse.Namespace, rule_paths: list[str],
           prewalk: Prewalk | None) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """The unit mapper and the input discovery for run_hunt: the local workers and walk (begun
    as ``prewalk``), or the Dask cluster of --cluster (whose workers also walk the directories)."""
    if not args.cluster:
        yield local_units, partial(discover, prewalk=prewalk), {}
        return
    from scmwatch.cluster import Cluster, ClusterError, rule_payload

    try:
        cluster = Cluster(args.cluster)
    except ClusterError as exc:
        raise RunFailed(str(exc), 1) from None
    with cluster:
        payload = rule_payload(rule_paths, args.placeholders, tune=args.tune,
                               min_level=args.min_level, lateness=args.lateness)
        workers = cluster.workers
        partitions = workers if args.partitions is None else args.partitions
        yield (cluster.map_units(payload, partitions), cluster.discover,
               {"address": args.cluster, "workers": workers, "partitions": partitions})


def _tune(ruleset: Any, path: str) -> None:
    """Apply the tuning file to the loaded rules; its problems are usage errors (exit 2)."""
    from scmwatch.sigma.tune import TuneError, apply_tune, load_tune  # YAML: only with --tune

    try:
        warnings = apply_tune(ruleset, load_tune(path))
    except TuneError as exc:
        for line in exc.problems[:-1]:
            print(f"scmwatch: {terminal(line)}", file=sys.stderr)
        raise RunFailed(exc.problems[-1], 2) from None
    for line in warnings:
        print(f"scmwatch: warning: {terminal(line)}", file=sys.stderr)


def _rule_file_as_log(paths: list[str]) -> str | None:
    """A Sigma rule file named as a log PATH (a forgotten ``--rules``): a usage error, not a
    file that fails to parse."""
    for path in paths:
        if path.lower().endswith(RULE_SUFFIXES) and os.path.isfile(path):
            return f"{path}: a Sigma rule file given as a log PATH; name rules with --rules {path}"
    return None


def _cluster_problem(args: argparse.Namespace) -> str | None:
    """A usage error of --cluster, or None."""
    from scmwatch.cluster import ClusterError, parse_address

    try:
        parse_address(args.cluster)
    except ClusterError as exc:
        return str(exc)
    if args.partitions is not None and args.partitions < 0:
        return f"--partitions {args.partitions}: give 0 (correlate here) or a positive number"
    if args.keep_events:
        return ("--keep-events with --cluster: the events are kept by the process that reads them; "
                "hunt locally")
    if len(args.paths) == 1 and os.path.isfile(args.paths[0]) and looks_like_case(args.paths[0]):
        return "--cluster: a retro-hunt reads the case on this machine; hunt it without --cluster"
    return None


def _write_summary(path: str | None, summary: dict[str, Any], start: float) -> bool:
    """Write the run summary (also after a failure, with its ``error``); False when it could not."""
    if not path:
        return True
    summary.setdefault("seconds_total", round(time.perf_counter() - start, 3))
    try:
        write_atomic(path, json_line(summary, indent=True))
    except OSError as exc:
        print(f"scmwatch: {terminal(path)}: cannot write summary: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


def load_ruleset(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The rule set of ``--rules`` (the built-in pack by default) and the paths it came from;
    rejected rules are reported on stderr; raises :class:`RunFailed` when no rule can run."""
    rule_paths = args.rules
    if rule_paths:
        try:  # named sets: `sigmahq` is what `rules update` installed
            rule_paths = resolve_rule_paths(rule_paths, builtin=str(pack.PACK_DIR))
        except RulesNotInstalled as exc:
            raise RunFailed(str(exc), 2) from exc
        for path in rule_paths:
            if os.path.isdir(path) and not has_rule_files(path):
                raise RunFailed(f"{path}: --rules names a directory without rule files "
                              f"({'/'.join(sorted(RULE_SUFFIXES))})", 2)
            if os.path.isfile(path) and not path.lower().endswith(RULE_SUFFIXES):
                raise RunFailed(f"{path}: --rules names a file that is not a Sigma rule file "
                              f"({'/'.join(sorted(RULE_SUFFIXES))}); give logs as PATH", 2)
    if not rule_paths:
        if not pack.pack_paths():
            raise RunFailed(f"the built-in rule pack ({pack.PACK_DIR}) is empty; give --rules PATH", 2)
        rule_paths = [str(pack.PACK_DIR)]
    with no_gc(freeze=True):  # the rule set lives until the process ends
        ruleset = load_rules(rule_paths, placeholders=args.placeholders)
    for path, reason in ruleset.rejected:
        print(f"scmwatch: {terminal(path)}: rule rejected: {terminal(reason)}", file=sys.stderr)
    if not ruleset.rules and not ruleset.correlation_count:
        raise RunFailed("no rule could be loaded", 1, {"rules_rejected": len(ruleset.rejected)})
    if args.tune:
        _tune(ruleset, args.tune)
        if not ruleset.rules and not ruleset.correlation_count:
            raise RunFailed(f"{args.tune}: the tuning file drops every rule", 2)
    return ruleset, rule_paths


def _run(args: argparse.Namespace, start: float) -> tuple[dict[str, Any], int]:
    """Load the rules, hunt, stream the alerts into the output; ``(summary, exit code)``. The
    walk of the local inputs begins first: its stats run in a thread while the rules load."""
    prewalk = None if args.cluster else Prewalk(args.paths)
    ruleset, rule_paths = load_ruleset(args)
    rules = ruleset.by_id()
    args.keep.with_statuses(ruleset)
    try:
        case = CaseRun(args, ruleset, rule_paths)
    except CaseRunError as exc:
        raise RunFailed(exc.message, exc.code) from None
    for line in case.notes():
        print(f"scmwatch: {terminal(line)}", file=sys.stderr)
    try:
        summary, code = _hunt_into(args, ruleset, rules, case, start, rule_paths, prewalk)
    except BaseException:
        case.abort()
        raise
    try:
        case.close(summary)
    except Exception as exc:  # duckdb.Error, OSError: the case could not be completed
        raise RunFailed(f"{args.case}: cannot complete the case: {exc}", 1, summary) from None
    return summary, code


# What a hunt leaves behind in a process that ends with it (``run_hunt(leftovers=...)``): never
# freed, since the process exits without tearing its objects down (``scmwatch.cli.entry``).
_UNFREED: list[Any] = []


def _hunt_into(args: argparse.Namespace, ruleset: Any, rules: dict[str, Any], case: Any,
               start: float, rule_paths: list[str], prewalk: Prewalk | None) -> tuple[dict[str, Any], int]:
    """Hunt and stream the alerts into the output (and the case); ``(summary, exit code)``."""
    # Alerts are streamed to the sink as the hunt's final merge produces them (never collected),
    # so the output is opened first; it replaces the named file only when the run succeeds.
    target = AtomicFile(args.output) if args.output else None
    where = args.output or "<stdout>"
    try:
        stream = target.open() if target is not None else sys.stdout
    except OSError as exc:
        raise RunFailed(f"{args.output}: cannot write alerts: {exc.strerror or exc}") from None
    try:
        sink = open_sink(args.format, stream, rules, color=False if target is not None else None, tz=args.tz)
        # The results summary is read by the table's footer, --summary and the case only: kept
        # for nothing otherwise, it cost the parent's serial tail 10.3M instructions on x5
        # (all SigmaHQ, JSON lines; callgrind), deciding and absorbing the workers' tallies.
        keep_results = args.format == "table" or bool(args.summary) or case.writer is not None
        results = Results() if keep_results else None

        write = _output(sink.write)

        def emit(alert: Any) -> None:
            write(alert)
            case.write(alert)

        lines = getattr(sink, "takes_lines", False) and case.writer is None
        try:
            with _units(args, rule_paths, prewalk) as (mapper, walk, cluster_info):
                result = run_hunt(args.paths, ruleset, jobs=args.jobs, min_level=args.min_level,
                                  on_error=_print_error, lateness=args.lateness, show_progress=None,
                                  sink=emit, map_units=case.map_units(mapper), expand=case.expand(walk),
                                  keep=args.keep if args.keep.active else None,
                                  dedup=_dedup(rules) if args.dedup else None,
                                  lines=lines, write_lines=_output(sink.write_lines) if lines else None,
                                  results=results,
                                  leftovers=_UNFREED if getattr(args, "own_process", False) else None)
            if cluster_info:
                result.summary["cluster"] = cluster_info
                result.summary["jobs"] = cluster_info["workers"]
        except _OutputError as exc:
            raise RunFailed(f"{where}: cannot write alerts: {exc}") from None
        except WorkerLost as exc:
            raise RunFailed(f"{exc}; no alerts written") from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise RunFailed(f"{tempfile.gettempdir()}: cannot write temporary spill files (set TMPDIR "
                          f"elsewhere?): {exc.strerror or exc}") from None
        try:
            sink.close()
            if results is not None and (args.summary or case.writer is not None):  # ~1 ms of the tail
                result.summary["results"] = results.to_dict()
            _write_footer(result, args, stream, results)
            stream.flush()
            if target is not None:
                target.commit()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise RunFailed(f"{where}: cannot write alerts: {exc.strerror or exc}", 1,
                            result.summary) from None
    finally:
        if target is not None:
            target.discard()
    result.summary["seconds_total"] = round(time.perf_counter() - start, 3)
    rows, folded = result.summary["alerts"], result.summary.get("alerts_deduplicated")
    extra = f"{rows + (folded or 0):,} alerts" + (f" in {rows:,} rows" if folded is not None else "")
    extra += f" from {len(ruleset.rules):,} rules"
    if ruleset.rejected:
        extra += f" ({len(ruleset.rejected)} rejected)"
    if result.summary.get("tune", {}).get("matches_tuned_out"):
        extra += f"; {result.summary['tune']['matches_tuned_out']:,} matches tuned out"
    if result.summary.get("alerts_filtered"):
        extra += f"; {result.summary['alerts_filtered']:,} filtered out"
    print(summary_line(result.stats, result.summary["seconds"], extra, wall=result.summary["seconds_total"]),
          file=sys.stderr)
    return result.summary, result.exit_code
