"""``scmwatch watch``: follow logs as they grow and report alerts within seconds
(library: ``scmwatch.live``)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from typing import Any

from scmwatch.alertfilter import FilterError
from scmwatch.cli.case_deps import EXTRA_HINT, case_modules
from scmwatch.cli.hunt import RunFailed, add_matching_options, alert_filter, load_ruleset
from scmwatch.cli.outputs import clash
from scmwatch.cli.watch_net import Network, add_network_options, network_problem
from scmwatch.escape import terminal
from scmwatch.events.model import ReadError
from scmwatch.hunt import HuntContext
from scmwatch.live import DEFAULT_STATE
from scmwatch.live.checkpoint import StateDir, StateError
from scmwatch.live.deliver import CaseStore, Deliveries, DeliveryTarget, JsonlFile, StreamOutput
from scmwatch.live.sources import Sources
from scmwatch.live.watcher import Watcher
from scmwatch.spill import SpillDir


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "watch",
        help="follow growing logs and report alerts as they happen",
        description="Follow log files and directories as they grow (NDJSON/JSON lines, Windows XML, Zeek; "
        "rotation by rename or copytruncate; new files in a directory, .evtx once complete) or stdin ('-'), "
        "with the rules, filters and correlation of `hunt`. Positions, correlation state and delivered "
        "alert ids are checkpointed in --state: after a crash or kill, a restart goes on where the last "
        "checkpoint was and delivers every alert to --output and --case exactly once.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="a file, a directory, or - for stdin (none: only the network listeners)")
    p.add_argument("--output", "-o", metavar="FILE", default=None,
                   help="append alerts (JSON lines, each with its alert_id) to this file; default: stdout")
    p.add_argument("--case", metavar="CASE.duckdb", default=None,
                   help="also store every alert in this case file (committed at each checkpoint)")
    p.add_argument("--state", metavar="DIR", default=DEFAULT_STATE,
                   help=f"state directory: checkpoint and lock (default: {DEFAULT_STATE})")
    add_matching_options(p)
    p.add_argument("--idle-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a source without new data for this long stops holding back the event-time "
                   "watermark; when all are that quiet, alerts still held for --lateness are released "
                   "(default: 30)")
    p.add_argument("--checkpoint-interval", type=float, default=5.0, metavar="SECONDS",
                   help="checkpoint at most this far apart (default: 5); a restart replays at most this much")
    p.add_argument("--settle", type=float, default=2.0, metavar="SECONDS",
                   help="a whole-file input (.evtx, .gz, .zip) is read once its size has not changed "
                   "for this long (default: 2)")
    p.add_argument("--exit-idle", type=float, default=None, metavar="SECONDS",
                   help="end (like a hunt: close every correlation window) when no source has grown for "
                   "this long; default: run until SIGTERM/Ctrl-C")
    p.add_argument("--status-interval", type=float, default=10.0, metavar="SECONDS",
                   help="print a status line on stderr this often (0: never; default: 10)")
    add_network_options(p)
    p.set_defaults(func=run)


def _problem(args: argparse.Namespace) -> str | None:
    for opt in ("idle_timeout", "checkpoint_interval", "settle", "status_interval", "lateness"):
        if getattr(args, opt) < 0:
            return f"--{opt.replace('_', '-')} must not be negative"
    if args.exit_idle is not None and args.exit_idle <= 0:
        return "--exit-idle must be positive"
    if not args.sources and not (args.listen_http or args.listen_tcp):
        return "name a SOURCE to follow, or --listen-http / --listen-tcp"
    net = network_problem(args)
    if net:
        return net
    if args.sources.count("-") > 1:
        return "stdin ('-') can be named once"
    if args.placeholders and not os.path.isfile(args.placeholders):
        return f"{args.placeholders}: placeholder file not found"
    missing = [s for s in args.sources if s != "-" and not os.path.exists(s)]
    if missing and not all(os.path.isdir(os.path.dirname(s) or ".") for s in missing):
        return f"{missing[0]}: no such file, and its directory does not exist either"
    outputs = [(opt, path) for opt, path in (("--output", args.output), ("--case", args.case)) if path]
    inputs = [s for s in args.sources if s != "-"] + list(args.rules or [])
    return clash(outputs, inputs)


def run(args: argparse.Namespace) -> int:
    problem = _problem(args)
    if problem:
        print(f"scmwatch: {terminal(problem)}", file=sys.stderr)
        return 2
    try:
        keep = alert_filter(args)
    except FilterError as exc:
        print(f"scmwatch: {terminal(str(exc))}", file=sys.stderr)
        return 2
    try:
        return _watch(args, keep)
    except RunFailed as exc:
        print(f"scmwatch: {terminal(exc.message)}", file=sys.stderr)
        return exc.code
    except StateError as exc:
        print(f"scmwatch: {terminal(str(exc))}", file=sys.stderr)
        return 1


def _status(line: str) -> None:
    print(f"scmwatch: {terminal(line)}", file=sys.stderr, flush=True)


def _print_error(err: ReadError) -> None:
    print(err.line(), file=sys.stderr, flush=True)


def _watch(args: argparse.Namespace, keep: Any) -> int:
    from scmwatch.cluster import rule_payload

    ruleset, rule_paths = load_ruleset(args)
    keep.with_statuses(ruleset)
    digest = rule_payload(rule_paths, args.placeholders, tune=args.tune, min_level=args.min_level,
                          lateness=args.lateness).digest
    state = StateDir(args.state)
    state.lock()
    network = Network(args, args.state)
    targets: list[DeliveryTarget] = [JsonlFile(args.output) if args.output else StreamOutput(sys.stdout)]
    case = None
    if args.case:
        if case_modules(quiet=True) is None:
            raise RunFailed(f"case files need DuckDB ({EXTRA_HINT})", 2)
        from scmwatch.case import CaseError, CaseWriter

        try:
            case = CaseWriter(args.case, command=shlex.join(["scmwatch", *getattr(args, "argv", [])]),
                              ruleset=ruleset, rule_paths=rule_paths, builtin=not args.rules, kind="watch")
        except CaseError as exc:
            raise RunFailed(f"{args.case}: {exc}") from None
        targets.append(CaseStore(case))
    spill = SpillDir()
    ctx = HuntContext(ruleset, spill, lateness=args.lateness, min_level=args.min_level)
    webhook = network.target()
    if webhook is not None:
        targets.append(webhook)
    try:
        network.open()
    except OSError as exc:
        state.unlock()
        raise RunFailed(f"cannot listen: {exc.strerror or exc}", 1) from None
    sources = Sources(args.sources + network.spools(), settle=args.settle)
    deliveries = Deliveries(targets)
    watcher = Watcher(ctx, sources, state, deliveries, rules_digest=digest,
                      keep=keep if keep.active else None,
                      checkpoint_interval=args.checkpoint_interval, idle_timeout=args.idle_timeout,
                      exit_idle=args.exit_idle, status=_status,
                      status_interval=args.status_interval or float("inf"), on_error=_print_error)
    old = {sig: signal.signal(sig, lambda signum, frame: watcher.stop())
           for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    summary: dict[str, Any] = {}
    network.serve_metrics(watcher)
    try:
        watcher.start()
        _status(f"watch: following {len(sources.all())} sources; state in {args.state}")
        watcher.run()
        summary = watcher.metrics()
        _status(watcher.status_line() + f"; {deliveries.duplicates:,} replayed alerts not delivered again")
    finally:
        network.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        sources.close()
        for t in targets:
            if t is not None and not isinstance(t, CaseStore):
                t.close()
        if case is not None:
            case.close(summary)
        spill.cleanup()
        state.unlock()
    return 0
