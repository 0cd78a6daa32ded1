"""The overview: the report's summary (cards, timeline by level, host x rule matrix), where every
number is a link to the alert list filtered to exactly the alerts it counts.

The links use the alert list's query parameters (``web/alert_query.py``): ``level``,
``status``, ``rule``, ``host``, ``kind``, and for a timeline bar ``from``/``to``: its bucket of
:func:`scmwatch.case.report.alert_timeline` to the microsecond, both ends inclusive (the last
bar has no ``to``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import duckdb
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scmwatch.case.report import alert_timeline, host_rule_matrix, summary
from scmwatch.web import charts
from scmwatch.web.pages import Context

BUCKETS = 48


def alerts_href(**params: Any) -> str:
    """A link to the alert list filtered by ``params`` (values url-encoded, never spliced)."""
    kept = {("from" if k == "from_" else k): v for k, v in params.items() if v is not None}
    return "/alerts?" + urlencode(kept) if kept else "/alerts"


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


def routes(ctx: Context) -> list[Route]:
    def overview(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        counts, by_level, triage = summary(con)
        buckets = alert_timeline(con, BUCKETS)
        last = {start: _iso(nxt - timedelta(microseconds=1))
                for (start, _), (nxt, _) in zip(buckets, buckets[1:], strict=False)}

        def bar_href(bar: charts.Bar) -> str:
            return alerts_href(level=bar.level, from_=_iso(bar.start), to=last.get(bar.start))

        hosts, rules, matrix = host_rule_matrix(con)
        counted = con.execute("SELECT rule_id, any_value(title), count(*) FROM alert_rows GROUP BY 1 "
                              "ORDER BY max(level_rank) DESC, 3 DESC, 1 LIMIT 200").fetchall()
        return ctx.page("console_overview.html.j2", counts=counts, by_level=by_level, triage=triage,
                        timeline=charts.timeline(buckets), bar_href=bar_href, hosts=hosts, rules=rules,
                        matrix=matrix, heat=charts.heat, peak=max(matrix.values(), default=0),
                        counted=counted, href=alerts_href)

    return [Route("/", ctx.reading(overview))]
