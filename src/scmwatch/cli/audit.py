"""``scmwatch audit``: the mitigation audit (M1026 / M1040 / M1022) over host snapshots.

``scmwatch audit collector > collect.ps1`` prints the PowerShell collector to run on hosts;
``scmwatch audit PATH...`` reads its snapshots, ``reg export`` files and saved sc.exe output.
Exit code: 0 when at least one host was audited (problems with other inputs are reported on
stderr and counted), 1 when no input could be read, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from scmwatch.audit.checks import CHECKS
from scmwatch.audit.load import AuditLog, load
from scmwatch.audit.report import RENDERERS, run_audit
from scmwatch.cli.outputs import clash, write_atomic
from scmwatch.escape import terminal


def collector_script() -> str:
    return resources.files("scmwatch.audit").joinpath("collect.ps1").read_text(encoding="utf-8")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="audit hosts for missing T1569.002 mitigations (M1026/M1040/M1022)",
        description="Audit service/SCM permissions, the PsExec/WMI ASR rule and service binary paths. "
        "PATH: collector snapshots (.json), 'reg export' of HKLM\\SYSTEM\\CurrentControlSet\\Services "
        "(.reg), or saved 'sc.exe qc' / 'sc.exe sdshow' output (.txt); directories are searched. "
        "'scmwatch audit collector' prints the PowerShell 5.1 collector script.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="inputs, or the word 'collector'")
    p.add_argument(
        "--format", choices=sorted(RENDERERS), default="table", help="output format (default: table)"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    if args.list_checks:
        for c in CHECKS.values():
            print(f"{c.id}  {c.mitigation}  {c.title}  [needs: {c.needs}]")
        return 0
    if args.paths == ["collector"] and not Path("collector").exists():
        sys.stdout.write(collector_script())
        return 0
    if args.output:
        problem = clash([("--output", args.output)], args.paths)
        if problem:
            print(f"scmwatch: {terminal(problem)}", file=sys.stderr)
            return 2
    log = AuditLog()
    hosts = load(args.paths, log)
    for source, message in log.problems + log.notes:
        print(f"scmwatch: {terminal(source)}: {terminal(message)}", file=sys.stderr)
    if not hosts:
        print(f"scmwatch: audit: no input could be read ({log.files_seen} file(s) tried)", file=sys.stderr)
        return 1
    res = run_audit(hosts, input_errors=len(log.problems), files_failed=log.files_failed)
    text = RENDERERS[args.format](res)
    if args.output:
        try:
            write_atomic(args.output, text.encode("utf-8"))
        except OSError as exc:
            print(f"scmwatch: {terminal(args.output)}: cannot write: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    if log.problems:
        print(
            f"scmwatch: audit: {len(res.hosts)} host(s) audited; {len(log.problems)} input problem(s), "
            f"{log.files_failed} file(s) unreadable",
            file=sys.stderr,
        )
    return 0
