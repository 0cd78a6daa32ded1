"""``scmwatch serve CASE``: the triage console in the browser (scmwatch/web/console.py)."""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import ipaddress
import os
import secrets
import sys
from typing import Any

from scmwatch.cli.case_deps import case_modules
from scmwatch.escape import terminal

MAX_ANALYST = 200


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="triage a case in the browser",
        description="Serve a case written by `hunt --case` as a local web console: overview, filtered "
        "alert list, alert detail with its evidence, and a triage status and note per alert stored in "
        "the case. Open the printed URL (it carries a one-time access token).",
    )
    p.add_argument("case", metavar="CASE")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--analyst", metavar="NAME", default=None,
                   help="who the decisions made through this console are recorded as (default: the "
                   "OS user name)")
    p.set_defaults(func=run)


def exposure_warning(host: str) -> str | None:
    """Why binding ``host`` exposes the case (``None`` for a loopback address or ``localhost``)."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    every = " (every interface)" if host.strip("[]") in ("0.0.0.0", "::") else ""
    return (f"serving on {terminal(host)}{every}, not loopback: anyone who can reach it and learns the "
            "URL can read and triage this case")


def analyst_name(given: str | None) -> str | None:
    """The analyst recorded with each decision: ``--analyst``, else the OS user name (``None``
    when there is none, e.g. a uid without a passwd entry)."""
    if given is not None:
        return given.strip()[:MAX_ANALYST] or None
    try:
        return getpass.getuser()[:MAX_ANALYST] or None
    except (OSError, KeyError):
        return None


def run(args: argparse.Namespace) -> int:
    if case_modules() is None:
        return 2
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"scmwatch: serve needs {' and '.join(missing)} (pip install 'scmwatch[web]')",
              file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print("scmwatch: --port must be 0..65535", file=sys.stderr)
        return 2
    import uvicorn

    from scmwatch.case.store import CaseError, open_case
    from scmwatch.web.console import create_app

    try:
        open_case(args.case, write=True).close()  # refuses a non-case now; migrates an older one
    except CaseError as exc:
        print(f"scmwatch: {terminal(args.case)}: {exc}", file=sys.stderr)
        return 1
    warning = exposure_warning(args.host)
    if warning:
        print(f"scmwatch: warning: {warning}", file=sys.stderr)
    token = secrets.token_urlsafe(32)
    analyst = analyst_name(args.analyst)
    config = uvicorn.Config(create_app(os.path.abspath(args.case), token, analyst), host=args.host,
                            port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    def announce() -> None:
        for s in server.servers:
            for sock in s.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                who = f" (decisions recorded as {terminal(analyst)})" if analyst else ""
                print(f"scmwatch: serving {terminal(args.case)} at http://{shown}:{port}/?token={token}{who}",
                      file=sys.stderr, flush=True)
                return

    startup = server.startup

    async def started(sockets: Any = None) -> None:
        await startup(sockets)
        announce()

    server.startup = started  # type: ignore[method-assign]
    server.run()
    return 0
