"""The console's pages beyond the alert list, one module per page, each over the case views.

Every module offers ``routes(ctx)``; :func:`routes` collects them for ``console.create_app``.
A page handler is a plain function ``(connection, request) -> Response`` run by
``ctx.reading`` on a read-only connection; a decision goes through ``decision`` (the alert
pages' own: form size and CSRF token checked before anything is written), then ``ctx.writing``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from scmwatch.web.alerts import MAX_NOTE, decision

__all__ = ["MAX_NOTE", "Context", "decision", "dicts", "routes"]


@dataclass(frozen=True)
class Context:
    """What a page module needs from the console: rendering, the case, the CSRF token, and the
    analyst whose decisions it records."""

    page: Callable[..., HTMLResponse]
    reading: Callable[[Callable[[duckdb.DuckDBPyConnection, Request], Response]], Any]
    writing: Callable[[Callable[[duckdb.DuckDBPyConnection], Response]], Any]
    csrf: str
    policy: str
    analyst: str | None = None


def dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def routes(ctx: Context) -> list[Route]:
    from scmwatch.web.pages import hosts, lateral, overview, readiness

    return [r for module in (overview, hosts, lateral, readiness) for r in module.routes(ctx)]
