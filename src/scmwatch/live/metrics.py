"""``--metrics HOST:PORT``: the watcher's counters over HTTP, as Prometheus text and as JSON.

``GET /metrics`` answers the Prometheus text exposition format (version 0.0.4), ``GET
/metrics.json`` (or ``/metrics`` with ``Accept: application/json``) one JSON object
``{name: {"type", "help", "samples": [{"labels": {...}, "value": v}]}}``.

The registry is pull-based: each part of the watcher registers a *collector*, a function that
returns its current samples; a scrape calls them all. Nothing is updated on the hot path for the
sake of metrics, and the scrape runs on the listener thread, so a collector must only read (the
counters it reads are plain ints and floats; a torn read across two of them is acceptable for
monitoring).

Label values come from the logs (a source path, a listener address): they are escaped as the
format requires (backslash, double quote, newline), never trusted to be well-formed.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from scmwatch.live.httpserver import MAX_HEAD, Request, Response, error_body, serve_connection


@dataclass(slots=True)
class Sample:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Family:
    name: str
    kind: str  # counter | gauge
    help: str


Collector = Callable[[], Iterable[Sample]]

# The families the watcher exposes (name -> kind, help); a collector's sample of a name not
# listed here is a programming error caught by the tests, not a silent new metric.
FAMILIES = {f.name: f for f in (
    Family("scmwatch_events_total", "counter", "Events read from all sources"),
    Family("scmwatch_events_per_second", "gauge", "Events read per second over the last interval"),
    Family("scmwatch_source_events_total", "counter", "Events read per source"),
    Family("scmwatch_source_lag_bytes", "gauge", "Bytes written to a followed source and not yet read"),
    Family("scmwatch_source_lag_seconds", "gauge", "Seconds between now and the newest event time read"),
    Family("scmwatch_alerts_total", "counter", "Alerts emitted (each once)"),
    Family("scmwatch_late_events_total", "counter", "Events older than the watermark minus --lateness"),
    Family("scmwatch_read_errors_total", "counter", "Records that could not be read, by kind"),
    Family("scmwatch_state_bytes", "gauge", "Size of the state directory's checkpoint files"),
    Family("scmwatch_source_idle_seconds", "gauge", "Seconds since a source last had new data"),
    Family("scmwatch_alerts_replayed_total", "counter", "Alerts produced again after a restart, not re-sent"),
    Family("scmwatch_alerts_filtered_total", "counter", "Alerts the triage filters removed"),
    Family("scmwatch_watermark_held", "gauge", "Correlation candidates held behind the watermark"),
    Family("scmwatch_checkpoints_total", "counter", "Checkpoints written"),
    Family("scmwatch_listen_lines_total", "counter", "Lines received by a listener, by outcome"),
    Family("scmwatch_listen_requests_total", "counter", "HTTP requests / TCP reads carrying lines"),
    Family("scmwatch_listen_refused_total", "counter", "HTTP requests refused, by status"),
    Family("scmwatch_listen_bytes_total", "counter", "Bytes received by a listener (decoded)"),
    Family("scmwatch_spool_fsyncs_total", "counter", "fsyncs of a listener's spool"),
    Family("scmwatch_webhook_queue", "gauge", "Alerts waiting for webhook delivery"),
    Family("scmwatch_webhook_delivered_total", "counter", "Alerts the webhook receiver acknowledged"),
    Family("scmwatch_webhook_attempts_total", "counter", "Webhook POSTs, by outcome"),
    Family("scmwatch_webhook_dead_letters_total", "counter", "Alerts written to dead-letter.jsonl"),
    Family("scmwatch_uptime_seconds", "gauge", "Seconds since the watcher started"),
)}


class Registry:
    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self._lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        with self._lock:
            self._collectors.append(collector)

    def collect(self) -> list[Sample]:
        with self._lock:
            collectors = list(self._collectors)
        out: list[Sample] = []
        for c in collectors:
            out.extend(c())
        return out


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1 << 53:
        return str(int(v))
    return repr(float(v))


def _grouped(samples: list[Sample]) -> dict[str, list[Sample]]:
    by: dict[str, list[Sample]] = {}
    for s in samples:
        if s.name not in FAMILIES:
            raise KeyError(f"unknown metric {s.name}")
        by.setdefault(s.name, []).append(s)
    return by


def prometheus_text(samples: list[Sample]) -> str:
    lines: list[str] = []
    for name, group in _grouped(samples).items():
        fam = FAMILIES[name]
        lines.append(f"# HELP {name} {fam.help}")
        lines.append(f"# TYPE {name} {fam.kind}")
        for s in group:
            if s.labels:
                labels = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in s.labels.items())
                lines.append(f"{name}{{{labels}}} {_number(s.value)}")
            else:
                lines.append(f"{name} {_number(s.value)}")
    return "\n".join(lines) + "\n"


def json_snapshot(samples: list[Sample]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, group in _grouped(samples).items():
        fam = FAMILIES[name]
        out[name] = {"type": fam.kind, "help": fam.help,
                     "samples": [{"labels": dict(s.labels), "value": s.value} for s in group]}
    return out


_WATCHER_KEYS = (
    ("events", "scmwatch_events_total"), ("events_per_second", "scmwatch_events_per_second"),
    ("alerts", "scmwatch_alerts_total"), ("alerts_replayed", "scmwatch_alerts_replayed_total"),
    ("alerts_filtered", "scmwatch_alerts_filtered_total"), ("late_events", "scmwatch_late_events_total"),
    ("state_bytes", "scmwatch_state_bytes"), ("watermark_held", "scmwatch_watermark_held"),
    ("checkpoints", "scmwatch_checkpoints_total"), ("uptime_seconds", "scmwatch_uptime_seconds"),
)
_SOURCE_KEYS = (
    ("events", "scmwatch_source_events_total"), ("lag_bytes", "scmwatch_source_lag_bytes"),
    ("lag_seconds", "scmwatch_source_lag_seconds"), ("idle_seconds", "scmwatch_source_idle_seconds"),
)


def watcher_samples(m: dict[str, Any]) -> list[Sample]:
    """The watcher's JSON-able snapshot (``Watcher.metrics()``) as samples; a key the snapshot
    lacks is left out rather than failing the scrape."""
    out: list[Sample] = []
    for key, name in _WATCHER_KEYS:
        if isinstance(m.get(key), int | float):
            out.append(Sample(name, m[key]))
    for kind, n in sorted((m.get("errors") or {}).items()):
        out.append(Sample("scmwatch_read_errors_total", n, {"kind": str(kind)}))
    for src in m.get("sources") or ():
        lab = {"source": str(src.get("name")), "kind": str(src.get("kind"))}
        for key, name in _SOURCE_KEYS:
            if isinstance(src.get(key), int | float):
                out.append(Sample(name, src[key], lab))
    return out


class MetricsEndpoint:
    """The HTTP side: serve ``registry`` on (host, port) on a running asyncio loop."""

    def __init__(self, registry: Registry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.scrapes = 0

    async def start(self) -> None:
        async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_connection(reader, writer, self.on_request, 0)

        self.server = await asyncio.start_server(conn, self.host, self.port, limit=MAX_HEAD)
        self.port = self.server.sockets[0].getsockname()[1]

    async def on_request(self, req: Request) -> Response:
        if req.method != "GET":
            return Response(405, b'{"error":"GET only"}', headers={"Allow": "GET"})
        wants_json = req.path == "/metrics.json" or (
            req.path == "/metrics" and "application/json" in req.headers.get("accept", ""))
        if req.path not in ("/metrics", "/metrics.json"):
            return Response(404, b'{"error":"GET /metrics or /metrics.json"}')
        self.scrapes += 1
        try:
            samples = self.registry.collect()
        except Exception as exc:  # noqa: BLE001 - a broken collector must not take the endpoint down
            return Response(500, error_body(f"collecting metrics failed: {type(exc).__name__}"))
        if wants_json:
            return Response(200, orjson.dumps(json_snapshot(samples)))
        return Response(200, prometheus_text(samples).encode(),
                        content_type="text/plain; version=0.0.4; charset=utf-8")
