"""``scmwatch serve``: the triage console, a Starlette app over one case file.

Security model (the pages show attacker-controlled strings to an analyst):

- The URL printed at start carries a random access token; the first request with it gets a
  session cookie (HttpOnly, SameSite=Strict) and a redirect to the same page without the token.
  Any other request without the cookie gets 401.
- Every state change is a POST carrying the per-server CSRF token from the page's form; a POST
  without it gets 403 and changes nothing.
- Every response carries a strict Content-Security-Policy (``default-src 'none'``, the one
  stylesheet by its hash, no script, forms only to this origin, no framing) and ``nosniff``;
  the lateral-movement page alone allows the package's own script file (``script-src 'self'``,
  never inline, never eval; ``web/pages/lateral.py``). Templates autoescape every value
  through the report's Jinja2 environment.
- No handler takes a path: the only file it opens is the case.

The alert list and alert pages are ``web/alerts.py``; the overview, hosts, lateral-movement,
readiness and files pages live in ``web/pages``.

The case is opened per request (read-only for pages, writing only to record a decision) and
closed again, so ``hunt --case`` can write to it between requests; while a hunt holds the
writer's lock a page answers 503 with the one-line reason instead of waiting.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import duckdb
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from scmwatch.case.schema import TRIAGE_STATUSES
from scmwatch.case.store import CaseError, open_case
from scmwatch.web import alerts, pages
from scmwatch.web.render import TEMPLATES, csp_hash, environment

COOKIE = "scmwatch_session"
# Seconds a decision waits for the case's lock (another reader or a hunt's start) before the
# analyst is told; an export chunk waits longer, since its download has already begun.
WRITE_WAIT = 3.0
EXPORT_WAIT = 10.0


def _csp() -> tuple[Markup, str]:
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8") + \
        (TEMPLATES / "console.css").read_text(encoding="utf-8")
    policy = (f"default-src 'none'; style-src {csp_hash(css)}; script-src 'none'; img-src 'none'; "
              "connect-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return Markup(css), policy


class Case:
    """The case file behind the console: one connection at a time, opened per use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    @contextmanager
    def connect(self, write: bool = False, wait: float = 0.0) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            con = open_case(self.path, write=write, wait=wait)
            try:
                if not write:
                    con.execute("SET enable_external_access = false")
                yield con
            finally:
                con.close()


def create_app(case_path: str, token: str, analyst: str | None = None) -> Starlette:
    """The console over ``case_path``; ``token`` is the secret of the printed URL, ``analyst``
    the name recorded with every decision made through it."""
    case = Case(case_path)
    session = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    css, policy = _csp()
    env = environment()

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(css=css, csrf=csrf, statuses=TRIAGE_STATUSES,
                                                 case=case_path, analyst=analyst, **context)
        return HTMLResponse(html, status_code=status)

    def reading(view: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            def work() -> Response:
                try:
                    with case.connect() as con:
                        return view(con, request)
                except CaseError as exc:
                    return page("console_error.html.j2", status=503, message=str(exc))
            return await run_in_threadpool(work)
        return endpoint

    def writing(work: Any) -> Any:
        def run() -> Response:
            try:
                with case.connect(write=True, wait=WRITE_WAIT) as con:
                    return work(con)
            except CaseError as exc:
                return page("console_error.html.j2", status=503, message=str(exc))
        return run_in_threadpool(run)

    async def guard(request: Request, call_next: Any) -> Response:
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            rest = {k: v for k, v in request.query_params.multi_items() if k != "token"}
            target = request.url.path + ("?" + urlencode(rest) if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
        elif hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), session.encode()):
            start = time.perf_counter()
            response = await call_next(request)
            # the time spent in the app, for bench/web_console.py (a streamed export: its start)
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
        else:
            response = PlainTextResponse("open the URL scmwatch serve printed (it carries the access "
                                         "token)", status_code=401)
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    ctx = pages.Context(page=page, reading=reading, writing=writing, csrf=csrf, policy=policy,
                        analyst=analyst)
    return Starlette(routes=[
        *pages.routes(ctx),
        *alerts.routes(ctx, lambda: case.connect(wait=EXPORT_WAIT)),
    ], middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])

