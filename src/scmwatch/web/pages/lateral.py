"""Lateral movement: the host graph (source -> target edges of the ``lateral_edges`` view, i.e.
entity links from the evidence of single-event alerts and of correlations), each edge a link to
the alerts behind it, a time slider, and a triage status per edge.

The graph is server-rendered SVG (``charts.graph``): it works without script. The one script,
``/static/lateral.js``, is the package's own file and only adds the time slider and host
highlighting; this page alone allows it (``script-src 'self'``, no inline script, no eval),
every other page keeps ``script-src 'none'``. The script reads data from attributes and writes
text with ``textContent`` only.

An edge's triage entity id is ``SOURCE -> TARGET`` (``triage.edge_id``). Host names come from
logs, so two edges can spell the same id (a host named ``a -> b``); such an edge's status is
refused (409) rather than recorded for both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import duckdb
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scmwatch.case.report import GRAPH_NODES, MAX_EDGES
from scmwatch.case.schema import TRIAGE_STATUSES
from scmwatch.case.triage import edge_id, set_status
from scmwatch.web import charts
from scmwatch.web.pages import MAX_NOTE, Context, decision, dicts
from scmwatch.web.render import TEMPLATES

MAX_ROWS = 500
SCRIPT = (TEMPLATES / "lateral.js").read_bytes()
_EDGES = """
    SELECT e.*, t.note, t.time AS decided FROM lateral_edges e
    LEFT JOIN triage_state t ON t.entity = 'edge' AND t.entity_id = e.source_host || ' -> ' || e.target_host
"""
# The graph page reads the base tables: the busiest links aggregated from link_rows, their
# decisions from triage_latest (merged here: a LEFT JOIN with a table DuckDB knows to be empty
# loses the LIMIT, see case/schema.py), the nodes' alert counts from alert_rows. 1M alerts with
# 225k decisions: the view's count alone cost ~130 ms, its hosts ~50 ms.
_LINKS = """
    SELECT source_host, target_host, count(DISTINCT alert_id) AS alerts, min(time) AS first_seen,
           max(time) AS last_seen,
           list_sort(list_distinct(list(service) FILTER (service IS NOT NULL))) AS services,
           list_sort(list_distinct(list(source_ip) FILTER (source_ip IS NOT NULL))) AS source_ips
    FROM link_rows GROUP BY source_host, target_host
    ORDER BY alerts DESC, source_host, target_host LIMIT ?
"""


def edge_href(source: str, target: str) -> str:
    return "/lateral/edge?" + urlencode({"source": source, "target": target})


def epoch_ms(t: datetime | None) -> int:
    """A naive UTC time (as the case stores it) as milliseconds since the epoch (0 if none)."""
    return int(t.replace(tzinfo=UTC).timestamp() * 1000) if t else 0


def routes(ctx: Context) -> list[Route]:
    script_policy = ctx.policy.replace("script-src 'none'", "script-src 'self'")

    def graph(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        total = con.execute("SELECT count(*) FROM (SELECT DISTINCT source_host, target_host FROM link_rows)"
                            ).fetchone()[0]
        edges = dicts(con.execute(_LINKS, [MAX_EDGES]))
        decided = {r[0]: r[1:] for r in con.execute(
            "SELECT entity_id, status, note, analyst FROM triage_latest WHERE entity = 'edge'").fetchall()}
        for e in edges:
            e["status"], e["note"], e["analyst"] = decided.get(
                edge_id(e["source_host"], e["target_host"]), ("new", None, None))
        names = sorted({e["source_host"] for e in edges} | {e["target_host"] for e in edges})
        hosts = dicts(con.execute(
            "SELECT host_key AS host, count(*) AS alerts, max(level_rank) AS max_level_rank FROM alert_rows "
            "WHERE host_key IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1", [names]))
        g = charts.graph(edges, hosts, GRAPH_NODES)
        status = {(e["source_host"], e["target_host"]): e["status"] for e in edges}
        times = [epoch_ms(e["first_seen"]) for e in edges if e["first_seen"]]
        response = ctx.page("console_lateral.html.j2", g=g, edges=edges, total=total, edge_status=status,
                            ms=epoch_ms, edge_href=edge_href, lo=-(-min(times, default=0) // 1000),
                            hi=-(-max(times, default=0) // 1000))
        response.headers["Content-Security-Policy"] = script_policy
        return response

    def edge(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        source = request.query_params.get("source", "")
        target = request.query_params.get("target", "")
        rows = dicts(con.execute(f"{_EDGES} WHERE e.source_host = ? AND e.target_host = ?", [source, target]))
        if not rows:
            return ctx.page("console_error.html.j2", status=404, message="no such host-to-host link")
        links = dicts(con.execute(
            "SELECT time, source_ip, service, how, alert_id FROM links "
            "WHERE source_host = ? AND target_host = ? ORDER BY time, alert_id LIMIT ?",
            [source, target, MAX_ROWS]))
        alerts = dicts(con.execute(
            "SELECT alert_id, time, level, title, kind, status FROM alerts WHERE alert_id IN ("
            "SELECT alert_id FROM links WHERE source_host = ? AND target_host = ?) "
            "ORDER BY time, alert_id LIMIT ?", [source, target, MAX_ROWS]))
        history = dicts(con.execute(
            "SELECT status, note, analyst, time FROM triage_t WHERE entity = 'edge' AND entity_id = ? "
            "ORDER BY time DESC LIMIT 50", [edge_id(source, target)]))
        return ctx.page("console_edge.html.j2", e=rows[0], links=links, alerts=alerts, history=history)

    async def edge_triage(request: Request) -> Response:
        form = await decision(request, ctx.csrf)
        if isinstance(form, Response):
            return form
        source, target, status = form.get("source", ""), form.get("target", ""), form.get("status", "")
        if status not in TRIAGE_STATUSES:
            return ctx.page("console_error.html.j2", status=400, message="unknown status")
        note = form.get("note", "")[:MAX_NOTE] or None

        def work(con: duckdb.DuckDBPyConnection) -> Response:
            if not con.execute("SELECT 1 FROM link_rows WHERE source_host = ? AND target_host = ? LIMIT 1",
                               [source, target]).fetchone():
                return ctx.page("console_error.html.j2", status=404, message="no such host-to-host link")
            spelled = con.execute(
                "SELECT count(*) FROM (SELECT DISTINCT source_host, target_host FROM link_rows "
                "WHERE source_host || ' -> ' || target_host = ?)", [edge_id(source, target)]).fetchone()[0]
            if spelled > 1:
                return ctx.page("console_error.html.j2", status=409, message=(
                    "another link spells the same SOURCE -> TARGET id (a host name contains ' -> '); "
                    "not recorded"))
            set_status(con, "edge", edge_id(source, target), status, note, ctx.analyst)
            return RedirectResponse(edge_href(source, target), status_code=303)
        return await ctx.writing(work)

    async def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript; charset=utf-8")

    return [Route("/lateral", ctx.reading(graph)), Route("/lateral/edge", ctx.reading(edge)),
            Route("/lateral/edge/triage", edge_triage, methods=["POST"]),
            Route("/static/lateral.js", script)]
