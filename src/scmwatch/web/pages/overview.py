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

from scmwatch.case import report
from scmwatch.web import charts
from scmwatch.web.pages import Context

BUCKETS = 48
MAX_RULES = 200  # rows of the rules table


def alerts_href(**params: Any) -> str:
    """A link to the alert list filtered by ``params`` (values url-encoded, never spliced)."""
    kept = {("from" if k == "from_" else k): v for k, v in params.items() if v is not None}
    return "/alerts?" + urlencode(kept) if kept else "/alerts"


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


def routes(ctx: Context) -> list[Route]:
    def page(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        o = report.overview(con)
        buckets = report.alert_timeline(con, BUCKETS)
        last = {start: _iso(nxt - timedelta(microseconds=1))
                for (start, _), (nxt, _) in zip(buckets, buckets[1:], strict=False)}

        def bar_href(bar: charts.Bar) -> str:
            return alerts_href(level=bar.level, from_=_iso(bar.start), to=last.get(bar.start))

        return ctx.page("console_overview.html.j2", counts=o.counts, by_level=o.by_level, triage=o.triage,
                        timeline=charts.timeline(buckets), bar_href=bar_href, hosts=o.matrix_hosts,
                        rules=[(r, t) for r, t, _ in o.rules[:report.MATRIX_RULES]], matrix=o.matrix,
                        heat=charts.heat, peak=max(o.matrix.values(), default=0),
                        counted=o.rules[:MAX_RULES], href=alerts_href)

    return [Route("/", ctx.reading(page))]
