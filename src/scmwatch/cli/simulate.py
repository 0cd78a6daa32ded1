"""``scmwatch simulate``: generate attack scenarios inside benign background logs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scmwatch.events.model import parse_time
from scmwatch.simulate.records import ALL_TELEMETRY


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="generate realistic attack + background logs with ground-truth labels",
        description="Write simulated Windows (and Zeek) logs for SCENARIO... (or 'all') into --out DIR, "
        "plus a labels.jsonl saying which events belong to which scenario and which detections must fire.",
    )
    p.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="scenario names, 'all', or 'none' (background only)"
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument(
        "--hosts",
        type=int,
        default=8,
        help="Windows hosts in the simulated domain (default 8), besides the attacker's foothold WS9001 "
        "and Linux box",
    )
    p.add_argument(
        "--events", type=int, default=20000, help="approximate total number of events (default 20000)"
    )
    p.add_argument("--instances", type=int, default=1, help="instances of each scenario (default 1)")
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed, same output (default 1)")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("jsonl", "xml", "ecs"),
        default="jsonl",
        help="jsonl = flat NDJSON with Windows field names, xml = wevtutil XML, ecs = Winlogbeat",
    )
    p.add_argument("--start", default="2024-05-06T08:00:00Z", help="ISO-8601 UTC start of the timeline")
    p.add_argument(
        "--telemetry",
        default=",".join(ALL_TELEMETRY),
        help=f"comma-separated sources to write (default: {','.join(ALL_TELEMETRY)})",
    )
    p.add_argument("--gzip", action="store_true", help="write gzip-compressed logs (*.jsonl.gz, ...)")
    p.add_argument("--labels", type=Path, help="where to write labels.jsonl (default: OUT/labels.jsonl)")
    p.add_argument(
        "--check",
        type=Path,
        metavar="ALERTS",
        help="instead of generating: compare `hunt --format jsonl` alerts of OUT with its labels "
        "(exit 1 on any false positive, unexpected or missing detection)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scmwatch.simulate import Options, load_all, simulate
    from scmwatch.simulate.engine import expand_names

    registry = load_all()
    if args.list:
        width = max(len(n) for n in registry)
        for name, sc in registry.items():
            print(f"{name:<{width}}  {sc.summary}")
        return 0
    if args.check is not None:
        return _check(args)
    if not args.scenarios:
        print("scmwatch: simulate: name at least one SCENARIO (or 'all'; see --list)", file=sys.stderr)
        return 2
    if args.out is None:
        print("scmwatch: simulate: --out DIR is required", file=sys.stderr)
        return 2
    try:
        expand_names(args.scenarios)
    except KeyError as exc:
        print(f"scmwatch: simulate: unknown scenario {exc.args[0]!r} (see --list)", file=sys.stderr)
        return 2
    telemetry = tuple(x.strip() for x in args.telemetry.split(",") if x.strip())
    bad = [x for x in telemetry if x not in ALL_TELEMETRY]
    if bad:
        print(
            f"scmwatch: simulate: unknown telemetry {', '.join(bad)} "
            f"(choose from {', '.join(ALL_TELEMETRY)})",
            file=sys.stderr,
        )
        return 2
    start = parse_time(args.start)
    if not start:
        print(f"scmwatch: simulate: --start: not an ISO-8601 time: {args.start!r}", file=sys.stderr)
        return 2
    if args.events < 0 or args.hosts < 1 or args.instances < 1:
        print("scmwatch: simulate: --events, --hosts and --instances must be positive", file=sys.stderr)
        return 2
    opts = Options(
        scenarios=args.scenarios,
        out=args.out,
        hosts=args.hosts,
        events=args.events,
        seed=args.seed,
        fmt=args.fmt,
        start=start,
        telemetry=telemetry,
        instances=args.instances,
        labels=args.labels,
        compress=args.gzip,
    )
    res = simulate(opts)
    rate = res.events / res.seconds if res.seconds else 0.0
    print(
        f"scmwatch: simulate: {res.events} events in {res.files} files, {res.instances} scenario instances "
        f"({res.labelled} labelled events), {res.seconds:.1f} s ({rate:,.0f} events/s); labels: {res.labels}",
        file=sys.stderr,
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    """Score a hunt against the ground truth: how a detection engineer tests a changed pack."""
    import orjson

    from scmwatch.simulate.verify import verify

    if args.out is None:
        print("scmwatch: simulate: --check needs --out DIR (the simulated logs)", file=sys.stderr)
        return 2
    labels = args.labels or args.out / "labels.jsonl"
    try:
        alerts = [orjson.loads(x) for x in args.check.read_bytes().splitlines() if x.strip()]
        verdict = verify(labels, alerts, args.out)
    except (OSError, orjson.JSONDecodeError, KeyError) as exc:
        print(f"scmwatch: simulate: --check: {exc}", file=sys.stderr)
        return 1
    print(verdict.summary(limit=50))
    return 0 if verdict.ok else 1
