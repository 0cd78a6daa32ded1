"""``scmwatch serve``: the triage console, a Starlette app over one case file.

Security model (the pages show attacker-controlled strings to an analyst):

- The URL printed at start carries a random access token; the first request with it gets a
  session cookie (HttpOnly, SameSite=Strict) and a redirect to the same page without the token.
  Any other request without the cookie gets 401.
- Every state change is a POST carrying the per-server CSRF token from the page's form; a POST
  without it gets 403 and changes nothing.
- Every response carries a strict Content-Security-Policy (``default-src 'none'``, the one
  stylesheet by its hash, no script at all, forms only to this origin, no framing) and
  ``nosniff``; templates autoescape every value through the report's Jinja2 environment.
- No handler takes a path: the only file it opens is the case.

The case is opened per request (read-only for pages, writing only to record a decision) and
closed again, so ``hunt --case`` can write to it between requests; while a hunt holds the
writer's lock a page answers 503 with the one-line reason instead of waiting.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode

import duckdb
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from scmwatch.case.report import alert_timeline, key_fields, summary
from scmwatch.case.schema import TRIAGE_STATUSES
from scmwatch.case.store import CaseError, open_case
from scmwatch.case.triage import set_status
from scmwatch.web import charts
from scmwatch.web.render import TEMPLATES, csp_hash, environment

COOKIE = "scmwatch_session"
PAGE_SIZE = 100
MAX_NOTE = 4000
MAX_FORM = 16_384


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
    def connect(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            con = open_case(self.path, write=write)
            try:
                if not write:
                    con.execute("SET enable_external_access = false")
                yield con
            finally:
                con.close()


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _loads(value: Any) -> Any:
    import orjson

    return orjson.loads(value) if isinstance(value, str) else value


def _filters(params: Any) -> tuple[dict[str, str], str, list[Any]]:
    """The alert-list filters from the query string, as SQL with parameters (never spliced)."""
    chosen = {k: params.get(k, "") for k in ("level", "host", "rule", "status")}
    where, args = [], []
    column = {"level": "level", "host": "host_key", "rule": "rule_id", "status": "status"}
    for key, value in chosen.items():
        if value:
            where.append(f"{column[key]} = ?")
            args.append(value)
    return chosen, (" WHERE " + " AND ".join(where)) if where else "", args


def parse_form(body: bytes) -> dict[str, str]:
    """An urlencoded form body (the first value of each field)."""
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def create_app(case_path: str, token: str) -> Starlette:
    """The console over ``case_path``; ``token`` is the secret of the printed URL."""
    case = Case(case_path)
    session = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    css, policy = _csp()
    env = environment()

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(css=css, csrf=csrf, statuses=TRIAGE_STATUSES,
                                                 case=case_path, **context)
        return HTMLResponse(html, status_code=status)

    def overview(con: duckdb.DuckDBPyConnection, request: Request) -> HTMLResponse:
        counts, by_level, triage = summary(con)
        hosts = [r[0] for r in con.execute(
            "SELECT host_key, count(*) FROM alerts WHERE host_key IS NOT NULL GROUP BY 1 "
            "ORDER BY 2 DESC, 1 LIMIT 30").fetchall()]
        rules = con.execute("SELECT rule_id, any_value(title), count(*) FROM alerts GROUP BY 1 "
                            "ORDER BY max(level_rank) DESC, 3 DESC, 1 LIMIT 30").fetchall()
        return page("console_overview.html.j2", counts=counts, by_level=by_level, triage=triage,
                    timeline=charts.timeline(alert_timeline(con, 48)), hosts=hosts, rules=rules)

    def alert_list(con: duckdb.DuckDBPyConnection, request: Request) -> HTMLResponse:
        chosen, where, args = _filters(request.query_params)
        try:
            page_no = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page_no = 1
        total = con.execute(f"SELECT count(*) FROM alerts{where}", args).fetchone()[0]
        rows = _dicts(con.execute(
            "SELECT alert_id, time, level, rule_id, title, host, kind, status, note FROM alerts"
            f"{where} ORDER BY level_rank DESC, time, alert_id LIMIT ? OFFSET ?",
            [*args, PAGE_SIZE, (page_no - 1) * PAGE_SIZE]))
        levels = [r[0] for r in con.execute(
            "SELECT level FROM alerts GROUP BY level, level_rank ORDER BY level_rank DESC").fetchall()]
        kept = {k: v for k, v in chosen.items() if v}
        pages = max(1, -(-total // PAGE_SIZE))
        link = {n: "/alerts?" + urlencode({**kept, "page": n}) for n in (page_no - 1, page_no + 1)}
        return page("console_alerts.html.j2", alerts=rows, total=total, chosen=chosen, levels=levels,
                    page_no=page_no, pages=pages, link=link)

    def alert_detail(con: duckdb.DuckDBPyConnection, request: Request) -> HTMLResponse:
        alert_id = request.path_params["alert_id"]
        rows = _dicts(con.execute("SELECT * FROM alerts WHERE alert_id = ?", [alert_id]))
        if not rows:
            return page("console_error.html.j2", status=404, message="no such alert")
        a = rows[0]
        a["event"] = _loads(a["event"]) or {}
        a["fields"] = key_fields(a["event"])
        evidence = _dicts(con.execute(
            "SELECT seq, time, host, event_id, channel, source, record_id, event FROM evidence "
            "WHERE alert_id = ? ORDER BY seq LIMIT 500", [alert_id]))
        for e in evidence:
            e["event"] = _loads(e["event"]) or {}
        history = _dicts(con.execute(
            "SELECT status, note, time FROM triage_t WHERE entity = 'alert' AND entity_id = ? "
            "ORDER BY time DESC LIMIT 50", [alert_id]))
        return page("console_alert.html.j2", a=a, evidence=evidence, history=history)

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

    async def triage(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        body = await request.body()
        if len(body) > MAX_FORM:
            return PlainTextResponse("form too large", status_code=413)
        form = parse_form(body)
        if not hmac.compare_digest(form.get("csrf", "").encode(), csrf.encode()):
            return PlainTextResponse("missing or wrong CSRF token", status_code=403)
        status = form.get("status", "")
        if status not in TRIAGE_STATUSES:
            return PlainTextResponse("unknown status", status_code=400)
        note = form.get("note", "")[:MAX_NOTE] or None

        def work() -> Response:
            try:
                with case.connect(write=True) as con:
                    if not con.execute("SELECT 1 FROM alert_rows WHERE alert_id = ?",
                                       [alert_id]).fetchone():
                        return page("console_error.html.j2", status=404, message="no such alert")
                    set_status(con, "alert", alert_id, status, note)
            except CaseError as exc:
                return page("console_error.html.j2", status=503, message=str(exc))
            return RedirectResponse("/alerts/" + alert_id, status_code=303)
        return await run_in_threadpool(work)

    async def guard(request: Request, call_next: Any) -> Response:
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            rest = {k: v for k, v in request.query_params.multi_items() if k != "token"}
            target = request.url.path + ("?" + urlencode(rest) if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
        elif hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), session.encode()):
            response = await call_next(request)
        else:
            response = PlainTextResponse("open the URL scmwatch serve printed (it carries the access "
                                         "token)", status_code=401)
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    return Starlette(routes=[
        Route("/", reading(overview)),
        Route("/alerts", reading(alert_list)),
        Route("/alerts/{alert_id:str}", reading(alert_detail)),
        Route("/alerts/{alert_id:str}/triage", triage, methods=["POST"]),
    ], middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])

