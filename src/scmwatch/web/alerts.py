"""The console's alert pages: the filtered list (sort, keyset pages, CSV/JSONL export, bulk
triage) and one alert (its rule, every evidence event, the chain as a timeline, pivots).

Handlers are plain functions over a read-only connection run by ``ctx.reading``; decisions go
through ``ctx.writing`` after the CSRF check. The export reads the view in keyset chunks, each
on its own short connection, so a long download neither blocks the other pages nor holds the
case's lock against a hunt for more than one chunk.
"""

from __future__ import annotations

import csv
import hmac
import io
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import duckdb
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from scmwatch.case.schema import TRIAGE_STATUSES
from scmwatch.case.triage import set_status, set_status_where
from scmwatch.escape import csv_cell, terminal
from scmwatch.sinks.jsonl import json_line
from scmwatch.web import alert_query
from scmwatch.web.alert_query import FilterError, Query

PAGE_SIZE = 100
EXPORT_CHUNK = 5000
MAX_EVIDENCE = 500
MAX_NOTE = 4000
MAX_FORM = 16_384
PIVOT_MINUTES = (5, 15, 60)
EXPORT_COLUMNS = "alert_id, time, level, rule_id, title, host, host_key, kind, tags, source, record_id, " \
    "evidence_count, event"
EXPORT_FIELDS = ("alert_id", "time", "level", "rule_id", "title", "host", "host_key", "kind", "status",
                 "note", "analyst", "tags", "source", "record_id", "evidence_count", "event")
# Fields whose value names the service or the remote address in an evidence event.
SERVICE_FIELDS = ("ServiceName", "service")
ADDRESS_FIELDS = ("IpAddress", "SourceAddress", "SourceIp", "id.orig_h", "ClientAddress")
_SCHEMES = ("http", "https")
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f-\x9f\"'<>\\`]")


def safe_url(value: Any) -> str | None:
    """``value`` as a link target when it is a plain http(s) URL, else None (shown as text)."""
    if not isinstance(value, str) or len(value) > 2000 or _UNSAFE_URL.search(value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme.lower() in _SCHEMES and parts.netloc else None


async def decision(request: Request, csrf: str) -> dict[str, str] | Response:
    """The posted form, or the response refusing it (too large: 413, no or wrong CSRF: 403)."""
    body = await request.body()
    if len(body) > MAX_FORM:
        return PlainTextResponse("form too large", status_code=413)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    if not hmac.compare_digest(form.get("csrf", "").encode(), csrf.encode()):
        return PlainTextResponse("missing or wrong CSRF token", status_code=403)
    return form


def text_block(value: Any) -> str | None:
    """Multi-line text (a rule's YAML) with every control character but newline and tab shown
    as an escape, so bidi overrides or terminal codes in a rule file cannot disguise it."""
    if value is None:
        return None
    return "\n".join("\t".join(map(terminal, line.split("\t"))) for line in str(value).split("\n"))


def _loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def chain(evidence: list[dict[str, Any]], width: int = 760, row: int = 22) -> dict[str, Any]:
    """The evidence events as points on one time axis (the correlation chain), for the SVG."""
    times = [e["time"] for e in evidence if isinstance(e["time"], datetime)]
    if not times:
        return {"points": []}
    t0, t1 = min(times), max(times)
    span = (t1 - t0).total_seconds() or 1.0
    left, right = 20, 20
    points = []
    for i, e in enumerate(evidence):
        t = e["time"] if isinstance(e["time"], datetime) else t0
        x = left + (width - left - right) * (t - t0).total_seconds() / span
        points.append({"x": round(x, 1), "y": 30 + i * row, "seq": e["seq"], "time": e["time"],
                       "label": f"{e['event_id'] if e['event_id'] is not None else '?'} {e['host'] or ''}",
                       "offset": (t - t0).total_seconds()})
    return {"points": points, "width": width, "height": 40 + len(evidence) * row, "start": t0,
            "end": t1, "span": (t1 - t0).total_seconds(), "left": left, "right": width - right}


def pivots(a: dict[str, Any], evidence: list[dict[str, Any]], links: list[dict[str, Any]]
           ) -> dict[str, Any]:
    """Links into the filtered list: same host around the alert's time, same service, same
    source address (from the alert's links and its evidence fields)."""
    out: dict[str, Any] = {"host": [], "service": [], "address": []}
    host = a.get("host_key") or a.get("host")
    if host and isinstance(a.get("time"), datetime):
        for minutes in PIVOT_MINUTES:
            d = timedelta(minutes=minutes)
            out["host"].append((minutes, "/alerts?" + urlencode({
                "host": host, "from": (a["time"] - d).isoformat(timespec="seconds"),
                "to": (a["time"] + d).isoformat(timespec="seconds"), "sort": "time", "dir": "asc"})))
    services = {lk["service"] for lk in links if lk.get("service")}
    addresses = {lk["source_ip"] for lk in links if lk.get("source_ip")}
    for e in evidence:
        services.update(str(e["event"][f]) for f in SERVICE_FIELDS
                        if e["event"].get(f) not in (None, "", "-"))
        addresses.update(str(e["event"][f]) for f in ADDRESS_FIELDS
                         if e["event"].get(f) not in (None, "", "-", "::1", "127.0.0.1"))
    out["service"] = [(s, "/alerts?" + urlencode({"q": s})) for s in sorted(services)[:10]]
    out["address"] = [(s, "/alerts?" + urlencode({"q": s})) for s in sorted(addresses)[:10]]
    return out


def export_lines(q: Query, fmt: str, connect: Callable[[], Any]) -> Iterator[bytes]:
    """The whole view as CSV or JSONL, read chunk by chunk (each chunk on its own connection)."""
    cols = list(EXPORT_FIELDS)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(cols)
        yield buf.getvalue().encode()
    after: str | None = None
    while True:
        with connect() as con:
            page = alert_query.fetch(con, q, EXPORT_CHUNK, after=after, columns=EXPORT_COLUMNS)
        out = bytearray()
        for r in page.rows:
            if fmt == "csv":
                buf = io.StringIO()
                writer = csv.writer(buf, lineterminator="\r\n")
                writer.writerow([csv_cell(_csv_value(r[c])) for c in cols])
                out += buf.getvalue().encode("utf-8", "replace")
            else:
                r["event"] = _loads(r["event"])
                r["time"] = r["time"].isoformat() + "Z" if isinstance(r["time"], datetime) else None
                out += json_line(r)
        yield bytes(out)
        if page.next is None:
            return
        after = page.next


def _csv_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat() + "Z"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return v


def routes(ctx: Any, connect: Callable[[], Any]) -> list[Route]:
    """The alert routes; ``connect()`` opens a short read-only connection (context manager)."""

    def bad(message: str) -> HTMLResponse:
        return ctx.page("console_error.html.j2", status=400, message=message)

    def query_of(params: Any) -> Query:
        return alert_query.parse(params, TRIAGE_STATUSES)

    def alert_list(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        params = request.query_params
        try:
            q = query_of(params)
            position = int(params["n"]) if params.get("n", "").isdigit() else None
            page = alert_query.fetch(con, q, PAGE_SIZE, after=params.get("after") or None,
                                     before=params.get("before") or None, last=params.get("last") == "1",
                                     position=position, counted=params.get("count") == "1")
        except FilterError as exc:
            return bad(str(exc))
        levels = [r[0] for r in con.execute(
            "SELECT level FROM alert_rows GROUP BY level ORDER BY max(level_rank) DESC").fetchall()]
        link = {
            "first": "/alerts?" + urlencode(q.params()),
            "prev": "/alerts?" + urlencode(q.params(before=page.prev)) if page.prev else None,
            "next": "/alerts?" + urlencode(q.params(after=page.next, n=page.first + len(page.rows)))
            if page.next else None,
            "last": "/alerts?" + urlencode(q.params(last=1)),
            "count": "/alerts?" + urlencode(q.params(after=params.get("after") or None, n=position, count=1)),
            "csv": "/alerts/export?" + urlencode(q.params(format="csv")),
            "jsonl": "/alerts/export?" + urlencode(q.params(format="jsonl")),
        }
        sorts = {}
        for name in alert_query.SORTS:
            desc = not q.desc if name == q.sort else name in ("level", "time")
            view = Query(q.chosen, name, desc)
            sorts[name] = "/alerts?" + urlencode(view.params())
        return ctx.page("console_alerts.html.j2", alerts=page.rows, page=page, q=q, chosen=q.chosen,
                        levels=levels, link=link, sorts=sorts, hidden=q.params())

    def alert_detail(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        rows = _dicts(con.execute("SELECT * FROM alerts WHERE alert_id = ?", [alert_id]))
        if not rows:
            return ctx.page("console_error.html.j2", status=404, message="no such alert")
        a = rows[0]
        a["event"] = _loads(a["event"]) or {}
        a["correlation"] = _loads(a["correlation"])
        evidence = _dicts(con.execute(
            "SELECT seq, time, host, event_id, channel, source, record_id, event FROM evidence "
            "WHERE alert_id = ? ORDER BY seq LIMIT ?", [alert_id, MAX_EVIDENCE]))
        for e in evidence:
            e["event"] = _loads(e["event"]) or {}
        links = _dicts(con.execute("SELECT * FROM links WHERE alert_id = ? ORDER BY time LIMIT 100",
                                   [alert_id]))
        rule = _dicts(con.execute("SELECT * FROM rules WHERE rule_id = ?", [a["rule_id"]]))
        history = _dicts(con.execute(
            "SELECT status, note, analyst, time FROM triage_t WHERE entity = 'alert' AND entity_id = ? "
            "ORDER BY time DESC LIMIT 50", [alert_id]))
        refs = [(r, safe_url(r)) for r in (rule[0]["refs"] or [])] if rule else []
        if rule:
            rule[0]["yaml"] = text_block(rule[0]["yaml"])
        return ctx.page("console_alert.html.j2", a=a, evidence=evidence, history=history, links=links,
                        rule=rule[0] if rule else None, refs=refs, chain=chain(evidence),
                        pivots=pivots(a, evidence, links))

    async def triage(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        form = await decision(request, ctx.csrf)
        if isinstance(form, Response):
            return form
        status = form.get("status", "")
        if status not in TRIAGE_STATUSES:
            return PlainTextResponse("unknown status", status_code=400)
        note = form.get("note", "")[:MAX_NOTE] or None

        def work(con: duckdb.DuckDBPyConnection) -> Response:
            if not con.execute("SELECT 1 FROM alert_rows WHERE alert_id = ?", [alert_id]).fetchone():
                return ctx.page("console_error.html.j2", status=404, message="no such alert")
            set_status(con, "alert", alert_id, status, note, ctx.analyst)
            return RedirectResponse("/alerts/" + alert_id, status_code=303)
        return await ctx.writing(work)

    async def bulk(request: Request) -> Response:
        """Set the status of every alert the posted filters match: the first POST shows the count
        to confirm, the second (``confirm=N``) writes only if the filters still match N alerts."""
        form = await decision(request, ctx.csrf)
        if isinstance(form, Response):
            return form
        try:
            q = query_of(form)
        except FilterError as exc:
            return bad(str(exc))
        status = form.get("set_status", "")
        if status not in TRIAGE_STATUSES:
            return bad(f"set_status: one of {', '.join(TRIAGE_STATUSES)}")
        note = form.get("note", "")[:MAX_NOTE] or None
        confirm = form.get("confirm", "")

        def work(con: duckdb.DuckDBPyConnection) -> Response:
            n = alert_query.count(con, q)
            if not confirm:
                return ctx.page("console_bulk.html.j2", n=n, decided=status, note=note, hidden=q.params(),
                                back="/alerts?" + urlencode(q.params()))
            if confirm != str(n):
                return ctx.page("console_error.html.j2", status=409, message=(
                    f"the filters now match {n:,} alerts, not {confirm[:20]}: nothing changed; "
                    "review the list and confirm again"))
            set_status_where(con, q.where, q.args, status, note, ctx.analyst)
            return RedirectResponse("/alerts?" + urlencode(q.params()), status_code=303)
        if confirm:
            return await ctx.writing(work)
        return await ctx.reading(lambda con, _request: work(con))(request)

    async def export(request: Request) -> Response:
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            return bad("format: csv or jsonl")
        try:
            q = query_of(request.query_params)
        except FilterError as exc:
            return bad(str(exc))
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(export_lines(q, fmt, connect), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="alerts.{fmt}"'})

    return [
        Route("/alerts", ctx.reading(alert_list)),
        Route("/alerts/export", export),
        Route("/alerts/bulk", bulk, methods=["POST"]),
        Route("/alerts/{alert_id:str}", ctx.reading(alert_detail)),
        Route("/alerts/{alert_id:str}/triage", triage, methods=["POST"]),
    ]
