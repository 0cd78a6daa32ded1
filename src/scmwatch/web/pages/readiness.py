"""Readiness and files: what could not fire and why (per run, from the hunt summary the case
stores), and which input files failed and how (the ``files`` view's errors by kind).

A file "had problems" when it has read errors or gave no events; ``/files?problems=1`` lists
only those. File names are shown as text: nothing here opens a file.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scmwatch.web.pages import Context, dicts

MAX_RUNS = 50
PAGE = 500
_PROBLEM = "(coalesce(CAST(errors AS VARCHAR), '{}') NOT IN ('{}', 'null') OR coalesce(events, 0) = 0)"


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def _page_no(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def routes(ctx: Context) -> list[Route]:
    def readiness(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        runs = dicts(con.execute(
            "SELECT run_id, kind, started, command, rules_loaded, summary FROM runs "
            "ORDER BY run_id DESC LIMIT ?", [MAX_RUNS]))
        for r in runs:
            s = _json(r.pop("summary")) or {}
            r["readiness"] = s.get("readiness") if isinstance(s.get("readiness"), dict) else None
            r["rejected"] = s.get("rules_rejected") or 0
            r["not_run"] = s.get("rules_not_run") or 0
        return ctx.page("console_readiness.html.j2", runs=runs)

    def files(con: duckdb.DuckDBPyConnection, request: Request) -> Response:
        problems = request.query_params.get("problems") == "1"
        where = f" WHERE {_PROBLEM}" if problems else ""
        page_no = _page_no(request)
        total = con.execute(f"SELECT count(*) FROM files{where}").fetchone()[0]
        troubled = con.execute(f"SELECT count(*) FROM files WHERE {_PROBLEM}").fetchone()[0]
        rows = dicts(con.execute(
            "SELECT run_id, file_no, path, size, sha256, format, events, errors, events_kept FROM files"
            f"{where} ORDER BY {_PROBLEM} DESC, run_id, file_no LIMIT ? OFFSET ?",
            [PAGE, (page_no - 1) * PAGE]))
        for f in rows:
            f["errors"] = _json(f["errors"]) or {}
        runs = dicts(con.execute(
            "SELECT run_id, kind, started, finished, command, files, events, alerts, alerts_new, errors, "
            "summary->>'files_failed' AS failed, summary->>'files_skipped' AS skipped FROM runs "
            "ORDER BY run_id DESC LIMIT ?", [MAX_RUNS]))
        for r in runs:
            r["errors"] = _json(r["errors"]) or {}
        pages = max(1, -(-total // PAGE))
        return ctx.page("console_files.html.j2", files=rows, total=total, troubled=troubled,
                        problems=problems, runs=runs, page_no=page_no, pages=pages)

    return [Route("/readiness", ctx.reading(readiness)), Route("/files", ctx.reading(files))]
