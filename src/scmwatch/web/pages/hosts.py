"""Hosts: every host of the case, and per host a timeline of its alerts and -- when the case
keeps events (``hunt --keep-events``) -- of its service installs (7045/4697), process starts
under services.exe (Sysmon 1/4688) and logons (4624/4625/4648), with the host's triage status.

A host is its short lower-case name (the ``hosts`` view's key); an event belongs to it when
its ``Computer`` is that name or starts with it and a dot. The host travels in the query
string (``/host?name=``), never in the path, so no name can change the route.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlencode

import duckdb
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scmwatch.case.report import bucket_width
from scmwatch.case.schema import TRIAGE_STATUSES
from scmwatch.case.triage import set_status
from scmwatch.web import charts
from scmwatch.web.pages import MAX_NOTE, Context, decision, dicts
from scmwatch.web.pages.overview import alerts_href

MAX_HOSTS = 1000
MAX_ROWS = 200  # rows per activity table; the lane above it counts them all
BUCKETS = 96


class Activity(NamedTuple):
    key: str
    label: str
    lane: str  # the short label of its timeline lane
    where: str  # SQL over the events view; no user input in it
    columns: tuple[tuple[str, str], ...]  # (heading, SQL expression)


_IMAGE = "coalesce(data->>'Image', data->>'NewProcessName')"
ACTIVITIES = (
    Activity("installs", "service installs (7045/4697)", "service installs",
             "EventID IN (7045, 4697)", (
        ("EventID", "EventID"), ("service", "data->>'ServiceName'"),
        ("image", "coalesce(data->>'ImagePath', data->>'ServiceFileName')"),
        ("account", "coalesce(data->>'AccountName', data->>'ServiceAccount')"),
        ("start type", "data->>'StartType'"))),
    Activity("children", "processes under services.exe (1/4688)", "services.exe children",
             "EventID IN (1, 4688) AND coalesce(data->>'ParentImage', data->>'ParentProcessName') "
             "ILIKE '%\\services.exe'", (
                 ("EventID", "EventID"), ("image", _IMAGE), ("command line", "data->>'CommandLine'"),
                 ("user", "coalesce(data->>'User', data->>'SubjectUserName')"))),
    Activity("logons", "logons (4624/4625/4648)", "logons",
             "EventID IN (4624, 4625, 4648)", (
        ("EventID", "EventID"), ("user", "data->>'TargetUserName'"), ("type", "data->>'LogonType'"),
        ("address", "data->>'IpAddress'"), ("workstation", "data->>'WorkstationName'"))),
)
_ON_HOST = "(lower(trim(Computer)) = ? OR lower(trim(Computer)) LIKE ? ESCAPE '\\')"


def _like_prefix(host: str) -> str:
    escaped = host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + ".%"


def _bucket_counts(con: duckdb.DuckDBPyConnection, sql: str, args: list[Any], lo: datetime,
                   width: int) -> dict[int, int]:
    return dict(con.execute(
        f"SELECT (epoch_us(time) - epoch_us(?::TIMESTAMP)) // ?, count(*) FROM ({sql}) "
        "WHERE time IS NOT NULL GROUP BY 1", [lo, width, *args]).fetchall())


def host_page(con: duckdb.DuckDBPyConnection, host: str) -> dict[str, Any] | None:
    rows = dicts(con.execute("SELECT * FROM hosts WHERE host = ?", [host]))
    if not rows:
        return None
    kept = con.execute("SELECT count(*) FROM files WHERE events_kept").fetchone()[0] > 0
    on_host = [host, _like_prefix(host)]
    sources = [("alerts", "SELECT time FROM alert_rows WHERE host_key = ?", [host])]
    if kept:
        sources += [(a.key, f"SELECT time FROM events WHERE {a.where} AND {_ON_HOST}", on_host)
                    for a in ACTIVITIES]
    union = " UNION ALL ".join(f"({sql})" for _, sql, _ in sources)
    lo, hi = con.execute(f"SELECT min(time), max(time) FROM ({union})",
                         [x for _, _, args in sources for x in args]).fetchone()
    lanes = None
    if lo is not None:
        width = bucket_width(lo, hi, BUCKETS)
        starts = [lo + timedelta(microseconds=i * width) for i in range(BUCKETS)]
        labels = {"alerts": "alerts", **{a.key: a.lane for a in ACTIVITIES}}
        lanes = charts.lanes([(labels[key], _bucket_counts(con, sql, args, lo, width))
                              for key, sql, args in sources], starts)
    activity = []
    if kept:
        for a in ACTIVITIES:
            cols = ", ".join(f"{expr} AS c{i}" for i, (_, expr) in enumerate(a.columns))
            total = con.execute(f"SELECT count(*) FROM events WHERE {a.where} AND {_ON_HOST}",
                                on_host).fetchone()[0]
            listed = con.execute(
                f"SELECT time, Computer, source, record_id, {cols} FROM events WHERE {a.where} AND "
                f"{_ON_HOST} ORDER BY time, source, record_id LIMIT ?", [*on_host, MAX_ROWS]).fetchall()
            activity.append({"key": a.key, "label": a.label, "headings": [h for h, _ in a.columns],
                             "rows": listed, "total": total})
    alerts = dicts(con.execute(
        "SELECT alert_id, time, level, title, kind, status FROM alerts WHERE host_key = ? "
        "ORDER BY time, alert_id LIMIT ?", [host, MAX_ROWS]))
    history = dicts(con.execute(
        "SELECT status, note, analyst, time FROM triage_t WHERE entity = 'host' AND entity_id = ? "
        "ORDER BY time DESC LIMIT 50", [host]))
    return {"h": rows[0], "lanes": lanes, "kept": kept, "activity": activity, "alerts": alerts,
            "history": history}


def routes(ctx: Context) -> list[Route]:
    def host_list(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        total = con.execute("SELECT count(*) FROM hosts").fetchone()[0]
        hosts = dicts(con.execute(
            "SELECT * FROM hosts ORDER BY alerts DESC, links_in + links_out DESC, host LIMIT ?",
            [MAX_HOSTS]))
        return ctx.page("console_hosts.html.j2", hosts=hosts, total=total, href=alerts_href)

    def host_detail(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        data = host_page(con, request.query_params.get("name", ""))
        if data is None:
            return ctx.page("console_error.html.j2", status=404, message="no such host in the case")
        return ctx.page("console_host.html.j2", href=alerts_href, **data)

    async def host_triage(request: Request) -> Response:
        form = await decision(request, ctx.csrf)
        if isinstance(form, Response):
            return form
        host, status = form.get("name", ""), form.get("status", "")
        if status not in TRIAGE_STATUSES:
            return ctx.page("console_error.html.j2", status=400, message="unknown status")
        note = form.get("note", "")[:MAX_NOTE] or None

        def work(con: duckdb.DuckDBPyConnection) -> Response:
            if not con.execute("SELECT 1 FROM hosts WHERE host = ?", [host]).fetchone():
                return ctx.page("console_error.html.j2", status=404, message="no such host in the case")
            set_status(con, "host", host, status, note, ctx.analyst)
            return RedirectResponse("/host?" + urlencode({"name": host}), status_code=303)
        return await ctx.writing(work)

    return [Route("/hosts", ctx.reading(host_list)), Route("/host", ctx.reading(host_detail)),
            Route("/host/triage", host_triage, methods=["POST"])]
