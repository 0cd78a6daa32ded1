"""``scmwatch rules ...``: work with Sigma rules. A subparser group, one function per subcommand.

To add a subcommand, write ``_register_<name>(sub)`` that adds its parser and sets ``func``,
and append it to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from scmwatch.cli import rules_export, rules_pack
from scmwatch.escape import terminal
from scmwatch.export.update import RulesNotInstalled, resolve_rule_paths
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import load_rules
from scmwatch.sigma.tune import TuneError, apply_tune, check_tune, load_tune


def _register_check(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="list rules that fail to load or compile, with reasons",
        description="Load and compile Sigma rules the way hunt does; print every rejected rule as "
        "'PATH: reason'. Exit 1 when any rule is rejected.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="rule files or directories; 'builtin' (the built-in pack) or 'sigmahq' (the set "
                   "`scmwatch rules update` installed)")
    p.add_argument("--placeholders", metavar="FILE", default=None)
    p.add_argument("--tune", metavar="FILE", default=None,
                   help="also check this tuning file (hunt --tune) against the rules: bad YAML, unknown "
                   "keys or levels, names that select no rule; exit 1 on any problem")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also list rules that compile but cannot run on some event source, and why")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        paths = resolve_rule_paths(args.paths, builtin=str(PACK_DIR))
    except RulesNotInstalled as exc:
        print(f"scmwatch: {terminal(str(exc))}", file=sys.stderr)
        return 2
    rs = load_rules(paths, placeholders=args.placeholders)
    for path, reason in rs.rejected:
        print(f"{terminal(path)}: {terminal(reason)}")
    if args.verbose:
        for rule, reason in rs.not_run:
            print(f"{terminal(rule.path)}: not run: {terminal(reason)}")
        for rule in rs.rules:
            for flag in rule.flags:
                print(f"{terminal(rule.path)}: note: {terminal(flag)}")
        for w in rs.warnings:
            print(f"warning: {terminal(w)}")
    print(f"scmwatch: {rs.files} files: {len(rs.rules)} rules ok, {len(rs.correlations)} correlations, "
          f"{len(rs.rejected)} rejected, {len(rs.not_run)} without an event source, {rs.filters} filters",
          file=sys.stderr)
    tune_bad = bool(args.tune) and not _check_tune(rs, args.tune)
    return 1 if rs.rejected or tune_bad else 0


def _check_tune(rs: Any, path: str) -> bool:
    """Print every problem of the tuning file against ``rs``; True when there is none."""
    try:
        tune = load_tune(path)
        problems = check_tune(rs, tune)
    except TuneError as exc:
        problems = exc.problems
    for line in problems:
        print(terminal(line))
    if not problems:
        warnings = apply_tune(rs, tune)
        for w in warnings:
            print(f"warning: {terminal(w)}")
        t = rs.tuned
        print(f"scmwatch: {terminal(path)}: ok: drops {t['rules_dropped']} rules and "
              f"{t['correlations_dropped']} correlations, changes {t['levels_changed']} levels, "
              f"excludes events from {t['rules_with_exclusions']} rules", file=sys.stderr)
    return not problems


SUBCOMMANDS: list[Callable[[Any], None]] = [_register_check, *rules_pack.REGISTER, *rules_export.REGISTER]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("rules", help="check, list, test, export, update Sigma rules",
                              description="Work with Sigma rules.")
    sub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    for reg in SUBCOMMANDS:
        reg(sub)

    def usage(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=usage)
