"""``scmwatch rules export | update``: the pack in other SIEMs, and SigmaHQ rule updates.

Registered into the ``rules`` subparser group by :mod:`scmwatch.cli.rules`; the work is in
:mod:`scmwatch.export`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from scmwatch.cli.outputs import clash
from scmwatch.escape import terminal
from scmwatch.rules import PACK_DIR

BUILTIN = "builtin"


def _rule_paths(args: argparse.Namespace) -> list[str] | None:
    from scmwatch.export.update import RulesNotInstalled, resolve_rule_paths

    try:
        return resolve_rule_paths(args.rules or [BUILTIN], builtin=str(PACK_DIR))
    except RulesNotInstalled as exc:
        print(f"scmwatch: {terminal(exc)}", file=sys.stderr)
        return None


def _inside_rules(outputs: list[tuple[str, str]], paths: list[str]) -> str | None:
    """An output written into a rule directory would be loaded as a rule next time (YAML forms)."""
    for option, path in outputs:
        real = os.path.realpath(path)
        for p in paths:
            rp = os.path.realpath(p)
            if os.path.isdir(rp) and real.startswith(rp.rstrip(os.sep) + os.sep):
                return f"{option} {path}: lies inside the rule directory {p}"
    return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_export(args: argparse.Namespace) -> int:
    from scmwatch.export import formats
    from scmwatch.export.convert import export_rules
    from scmwatch.export.targets import TARGETS, BackendMissing, PipelineError

    if args.verify and args.target != "sqlite":
        print("scmwatch: --verify compares the sqlite target with the engine: use --target sqlite",
              file=sys.stderr)
        return 2
    if args.events and not args.verify:
        print("scmwatch: --events is for --verify", file=sys.stderr)
        return 2
    paths = _rule_paths(args)
    if paths is None:
        return 2
    target = TARGETS[args.target]
    if args.output is not None:
        out = Path(args.output)
        as_dir = out.is_dir() or args.output.endswith(("/", os.sep))
        names = (target.saved_file, "queries.txt", "not-exported.tsv") if as_dir else ("",)
        outputs = [("-o", str(out / n) if n else str(out)) for n in names]
        problem = clash(outputs, [*paths, *(args.events or [])]) or _inside_rules(outputs, paths)
        if problem:
            print(f"scmwatch: {terminal(problem)}", file=sys.stderr)
            return 2

    def progress(done: int, total: int) -> None:
        print(f"\rscmwatch: converting: {done:,} of {total:,}", end="", file=sys.stderr, flush=True)

    try:
        exp = export_rules(paths, target, args.pipeline, progress=progress if sys.stderr.isatty() else None)
        if sys.stderr.isatty():
            print("\r\033[K", end="", file=sys.stderr)
    except (BackendMissing, PipelineError) as exc:
        print(f"scmwatch: {terminal(exc)}", file=sys.stderr)
        return 1
    for path, reason in exp.rejected:
        print(f"scmwatch: {terminal(path)}: rule rejected: {terminal(reason)}", file=sys.stderr)
    for e in exp.entries:
        if not e.exported:
            print(f"scmwatch: not exported: {e.kind} {terminal(e.label)}: {terminal(e.reason)}",
                  file=sys.stderr)
    c = exp.counts()
    if not c["exported"]:
        print(f"scmwatch: {target.name}: nothing exported ({c['rules']} rules, "
              f"{c['correlations']} correlations loaded)", file=sys.stderr)
        return 1
    try:
        if args.output is None:
            sys.stdout.write(formats.listing(exp))
        else:
            out = Path(args.output)
            if out.is_dir() or args.output.endswith(("/", os.sep)):
                out.mkdir(parents=True, exist_ok=True)
                _write(out / target.saved_file, formats.saved_form(exp))
                _write(out / "queries.txt", formats.listing(exp))
                _write(out / "not-exported.tsv", formats.not_exported(exp))
                where = f"{out}/ ({target.saved_file}, queries.txt, not-exported.tsv)"
            else:
                _write(out, formats.saved_form(exp))
                where = str(out)
            print(f"scmwatch: wrote {terminal(where)}", file=sys.stderr)
    except OSError as exc:
        print(f"scmwatch: cannot write {terminal(args.output)}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"scmwatch: {target.name}: {c['rules']} rules, {c['correlations']} correlations: {c['exported']} "
          f"exported, {c['not_exported']} not exported (reasons above), {c['rejected']} rejected",
          file=sys.stderr)
    if args.verify:
        return _verify(paths, exp, args.events or [])
    return 0


def _verify(paths: list[str], exp: Any, events: list[str]) -> int:
    from scmwatch.export.verify import verify

    res = verify(paths, events, exported=exp)
    for d in res.differences:
        engine = "matches" if d.engine else "does not match"
        print(f"scmwatch: verify: {terminal(d.rule)}: {terminal(d.event)}: engine {engine}, "
              f"SQLite {'matches' if d.sqlite else 'does not'}", file=sys.stderr)
    for line in res.correlation_differences:
        print(f"scmwatch: verify: {terminal(line)}", file=sys.stderr)
    for line in res.correlation_count_notes:
        print(f"scmwatch: verify: note: {terminal(line)} (same groups; re-alerting differs)", file=sys.stderr)
    for err in res.errors:
        print(f"scmwatch: verify: {terminal(err)}", file=sys.stderr)
    if res.not_run:
        print(f"scmwatch: verify: {len(res.not_run)} exported rules not compared: scmwatch does not run them "
              "(no event source, or not compiled)", file=sys.stderr)
    print(f"scmwatch: verify: {res.events} events, {res.rules_compared} rules compared: {res.rules_equal} "
          f"equal, {res.rules_compared - res.rules_equal} differ ({len(res.differences)} differences), "
          f"{len(res.errors)} query errors, {res.matches} matches agreed", file=sys.stderr)
    if res.correlations_compared:
        print(f"scmwatch: verify: {res.correlations_compared} correlations compared: "
              f"{res.correlations_equal} alert for the same groups ({res.correlation_alerts} groups), "
              f"{len(res.correlation_differences)} differences", file=sys.stderr)
    for line in res.linked_differences:
        print(f"scmwatch: verify: link correlation: {terminal(line)}", file=sys.stderr)
    if res.linked_compared:
        print(f"scmwatch: verify: {res.linked_compared} correlations on link.* fields (not exportable) "
              f"cross-checked with the fields as columns: {res.linked_equal} alert for the same groups "
              "(differences above are informational)", file=sys.stderr)
    if not res.events:
        print("scmwatch: verify: no events: add fixtures (tests/<rule file>.jsonl) or --events FILE",
              file=sys.stderr)
    return 0 if res.ok else 1


def _register_export(sub: Any) -> None:
    from scmwatch.export.targets import TARGETS

    p = sub.add_parser(
        "export", help="convert rules for a SIEM (Splunk, Elastic, Sentinel, Loki, SQLite) via pySigma",
        description="Convert Sigma rules with pySigma backends, with scmwatch's logsource gating written "
        "into each query. Without -o: one query per rule on stdout. -o DIR: the target's saved-search file, "
        "queries.txt and not-exported.tsv; -o FILE: the saved-search form only. Every rule a target cannot "
        "express is listed on stderr with the reason. Targets: "
        + "; ".join(f"{t.name}: {t.describe}" for t in TARGETS.values()))
    p.add_argument("--target", "-t", required=True, choices=sorted(TARGETS))
    p.add_argument("--pipeline", "-p", action="append", default=None, metavar="NAME|FILE",
                   help="pySigma processing pipeline (installed name or YAML file; repeatable); "
                   "replaces the target's default")
    p.add_argument("--rules", action="append", default=None, metavar="PATH|builtin|sigmahq",
                   help="rule files or directories (repeatable); default: the built-in pack")
    p.add_argument("--output", "-o", metavar="DIR|FILE", default=None)
    p.add_argument("--verify", action="store_true",
                   help="sqlite only: run every query over the rules' fixtures in SQLite and compare with "
                   "the engine (exit 1 on any difference)")
    p.add_argument("--events", action="append", default=None, metavar="FILE",
                   help="with --verify: more event files (NDJSON etc.) to compare on (repeatable)")
    p.set_defaults(func=run_export)


REGISTER = [_register_export]


def run_update(args: argparse.Namespace) -> int:
    from scmwatch.export.update import UpdateError, installed, update

    before = installed()
    shown = {"at": 0.0}

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if sys.stderr.isatty() and now - shown["at"] > 0.5:
            shown["at"] = now
            of = f" of {total:,}" if total else ""
            print(f"\rscmwatch: downloading: {done:,}{of} bytes", end="", file=sys.stderr)

    try:
        rec = update(args.source, args.channel, progress)
    except UpdateError as exc:
        if sys.stderr.isatty():
            print(file=sys.stderr)
        kept = f"; kept {before.version} ({before.rules} rules)" if before else ""
        print(f"scmwatch: rules update failed: {terminal(exc)}{terminal(kept)}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    was = f" (was {before.version})" if before and before.version != rec.version else ""
    print(f"scmwatch: installed SigmaHQ rules {rec.version}{was}: {rec.rules} rules in {rec.rule_files} "
          f"files at {rec.path}; use them with --rules sigmahq", file=sys.stderr)
    return 0


def _register_update(sub: Any) -> None:
    from scmwatch.export.update import CHANNELS

    p = sub.add_parser(
        "update", help="install a SigmaHQ rule release (then: --rules sigmahq)",
        description="Download a SigmaHQ release package (or read one from --source), verify it (size limits, "
        "no path traversal, CRCs, every rule loads) and install it atomically into the data directory "
        "($SCMWATCH_DATA_DIR, else $XDG_DATA_HOME/scmwatch, else ~/.local/share/scmwatch). A failed update "
        "leaves the previous set in place.")
    p.add_argument("--source", metavar="URL|FILE", default=None,
                   help="release zip to install (default: the latest SigmaHQ release of --channel)")
    p.add_argument("--channel", choices=sorted(CHANNELS), default="core",
                   help="which SigmaHQ package: core, core+ or all rules (default: core)")
    p.set_defaults(func=run_update)


REGISTER.append(_register_update)
