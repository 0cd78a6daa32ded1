"""Network listeners: events sent by log shippers land durably in the spool, then get followed.

* ``--listen-http HOST:PORT``: ``POST`` (or ``PUT``) to any path, body one of
  - NDJSON, one object per line: NXLog ``om_http`` (``BatchMode multiline``), Fluent Bit ``http``
    (``format json_lines``), Logstash ``http`` (``format json_lines``);
  - a JSON array of objects: Fluent Bit ``format json``, Logstash ``format json_batch``;
  - one JSON object: NXLog ``om_http`` without batching, Logstash ``format json``;
  plain, gzip (``Content-Encoding: gzip``; Fluent Bit ``compress gzip``, Logstash
  ``http_compression``), ``Content-Length`` or chunked. The answer is ``200`` with
  ``{"accepted": N, "rejected": M}`` once the accepted lines are fsynced in the spool (NXLog and
  Logstash resend on anything else). A line that is not a JSON object is counted as rejected and
  reported, the rest of the batch is kept: resending a malformed line would never fix it, and a
  shipper that retries a poisoned batch forever would stop sending everything behind it.
  ``413`` for a body over ``--max-body`` (raw or decoded), ``503`` when the disk refuses the
  batch (the shipper retries), ``GET /health`` answers ``200``.
* ``--listen-tcp HOST:PORT``: newline-delimited JSON objects (NXLog ``om_tcp`` with
  ``Exec to_json();``). TCP has no acknowledgement, so durability is per read: the lines of one
  read are fsynced before the next read, which is also the back-pressure (a watcher that cannot
  keep up stops reading and the sender's TCP window closes). Bytes still in flight in the kernel
  when the watcher dies are lost; prefer HTTP where that matters.

Both run on one asyncio loop in a thread of their own (:class:`ListenerThread`), so they accept
and fsync while the watcher matches; their only output is the spool.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from scmwatch.escape import terminal
from scmwatch.live.httpserver import MAX_HEAD, Request, Response, error_body, serve_connection
from scmwatch.live.metrics import MetricsEndpoint, Registry, Sample
from scmwatch.live.spool import Spool

MAX_BODY = 32 << 20  # bytes of one HTTP request body, raw and decoded
MAX_LINE = 4 << 20  # bytes of one TCP line
TCP_READ = 256 << 10  # bytes read from a TCP connection per durable round
MAX_CONNECTIONS = 256  # per listener; more are closed at once
REPORT_EVERY = 10.0  # seconds between two stderr lines about rejected input from one listener


class AddressError(ValueError):
    pass


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``PORT`` (loopback) as (host, port)."""
    host, port = "127.0.0.1", text
    if text.startswith("["):
        end = text.find("]:")
        if end < 0:
            raise AddressError(f"{text!r} is not [ADDRESS]:PORT")
        host, port = text[1:end], text[end + 2:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AddressError(f"{text!r}: the port must be 0..65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise AddressError(f"{text!r}: {host!r} is not an IP address") from exc
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@dataclass(slots=True)
class ListenerStats:
    """What one listener received (read by the metrics endpoint and the status line)."""

    name: str
    connections: int = 0
    requests: int = 0  # HTTP requests / TCP reads that carried lines
    accepted: int = 0  # lines made durable
    rejected: int = 0  # lines that were not a JSON object
    bytes: int = 0  # received body bytes (decoded)
    refused: dict[int, int] = field(default_factory=dict)  # HTTP status -> requests refused
    last_report: float = 0.0
    unreported: int = 0


def _clean_line(line: bytes) -> bytes | None:
    """``line`` if it is one JSON object, else None. orjson first (fast); the standard library's
    parser second, because orjson refuses what hostile logs contain and the readers accept (lone
    surrogate escapes, integers beyond 64 bits): such events must not be dropped here."""
    if not line.startswith(b"{"):
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return None
    return line if type(obj) is dict else None


def _dump(obj: dict) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # surrogates, huge integers: the standard library writes them as escapes
        return json.dumps(obj, separators=(",", ":")).encode()


def split_body(body: bytes) -> tuple[list[bytes], int]:
    """The JSON objects of a request body as NDJSON lines, and how many items were not objects."""
    text = body.strip()
    if not text:
        return [], 0
    if text.startswith(b"["):
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                items = json.loads(text)
            except (ValueError, RecursionError):
                items = None
        if isinstance(items, list):
            good = [_dump(o) for o in items if type(o) is dict]
            return good, len(items) - len(good)
    good: list[bytes] = []
    bad = 0
    for raw in text.split(b"\n"):
        line = raw.strip()
        if not line:
            continue
        clean = _clean_line(line)
        if clean is None:
            bad += 1
        else:
            good.append(clean)
    return good, bad


class Listener:
    """One listener: its spool, its counters and the coroutine serving one connection."""

    kind = ""

    def __init__(self, host: str, port: int, spool: Spool, *, max_body: int = MAX_BODY,
                 report: Callable[[str], None] | None = None) -> None:
        self.host = host
        self.port = port
        self.spool = spool
        self.max_body = max_body
        self.stats = ListenerStats(f"{self.kind}:{host}:{port}")
        self.report = report or (lambda msg: print(f"scmwatch: {msg}", file=sys.stderr))
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[Any] = set()  # the connections being served
        self._open = 0

    def _rejected(self, n: int, what: str) -> None:
        """Count ``n`` rejected lines; one stderr line per listener every REPORT_EVERY seconds."""
        self.stats.rejected += n
        self.stats.unreported += n
        now = time.monotonic()
        if now - self.stats.last_report >= REPORT_EVERY:
            self.report(f"{self.stats.name}: {self.stats.unreported} line(s) rejected ({terminal(what)})")
            self.stats.last_report = now
            self.stats.unreported = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        self.stats.connections += 1
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self.serve(reader, writer)
        finally:
            self._open -= 1
            self.tasks.discard(task)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def samples(self) -> list[Sample]:
        """This listener's counters for the metrics endpoint."""
        st, sp = self.stats, self.spool.stats
        lab = {"listener": st.name}
        out = [Sample("scmwatch_listen_lines_total", st.accepted, dict(lab, outcome="accepted")),
               Sample("scmwatch_listen_lines_total", st.rejected, dict(lab, outcome="rejected")),
               Sample("scmwatch_listen_requests_total", st.requests, lab),
               Sample("scmwatch_listen_bytes_total", st.bytes, lab),
               Sample("scmwatch_spool_fsyncs_total", sp.fsyncs, lab)]
        out += [Sample("scmwatch_listen_refused_total", n, dict(lab, status=str(code)))
                for code, n in sorted(self.stats.refused.items())]
        return out

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, self.host, self.port, limit=MAX_HEAD)
        self.port = self.server.sockets[0].getsockname()[1]
        self.stats.name = f"{self.kind}:{self.host}:{self.port}"


class HttpListener(Listener):
    kind = "http"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, self.on_request, self.max_body, self._refused)

    def _refused(self, status: int, message: str) -> None:
        self.stats.refused[status] = self.stats.refused.get(status, 0) + 1
        self.report(f"{self.stats.name}: request refused with {status}: {terminal(message)}")

    async def on_request(self, req: Request) -> Response:
        if req.method == "GET" and req.path == "/health":
            return Response(200, b'{"status":"ok"}')
        if req.method not in ("POST", "PUT"):
            self.stats.refused[405] = self.stats.refused.get(405, 0) + 1
            return Response(405, error_body("POST a batch of JSON lines"), headers={"Allow": "POST, PUT"})
        self.stats.requests += 1
        self.stats.bytes += len(req.body)
        lines, bad = split_body(req.body)
        if bad:
            self._rejected(bad, "not a JSON object")
        try:
            await self.spool.append(lines)
        except OSError as exc:
            self.stats.refused[503] = self.stats.refused.get(503, 0) + 1
            self.report(f"{self.stats.name}: spool write failed, batch refused: {terminal(exc)}")
            return Response(503, error_body("spool write failed"), headers={"Retry-After": "5"})
        self.stats.accepted += len(lines)
        return Response(200, orjson.dumps({"accepted": len(lines), "rejected": bad}))


class TcpListener(Listener):
    kind = "tcp"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        skipping = False  # inside an overlong line: drop bytes up to its newline
        try:
            while True:
                data = await reader.read(TCP_READ)
                if not data:
                    if buf and not skipping:
                        await self._store([buf])
                    return
                self.stats.bytes += len(data)
                buf += data
                if skipping:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        buf = b""
                        continue
                    buf = buf[nl + 1:]
                    skipping = False
                cut = buf.rfind(b"\n")
                if cut < 0:
                    if len(buf) > MAX_LINE:
                        self._rejected(1, f"a line over {MAX_LINE} bytes")
                        buf, skipping = b"", True
                    continue
                lines, buf = buf[:cut].split(b"\n"), buf[cut + 1:]
                await self._store(lines)
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _store(self, raw: list[bytes]) -> None:
        good: list[bytes] = []
        bad = 0
        for line in raw:
            line = line.strip()
            if not line:
                continue
            clean = _clean_line(line) if len(line) <= MAX_LINE else None
            if clean is None:
                bad += 1
            else:
                good.append(clean)
        if bad:
            self._rejected(bad, "not a JSON object")
        self.stats.requests += 1
        while True:
            try:
                await self.spool.append(good)
                break
            except OSError as exc:  # no ack to refuse: hold the connection until the disk takes it
                self.report(f"{self.stats.name}: spool write failed, retrying in 5 s: {terminal(exc)}")
                await asyncio.sleep(5)
        self.stats.accepted += len(good)


LISTENERS: dict[str, type[Listener]] = {"http": HttpListener, "tcp": TcpListener}


class ListenerThread:
    """The listeners' (and the metrics endpoint's) asyncio loop in a daemon thread: :meth:`start`
    binds every socket (so a port in use is an error before the watcher starts), :meth:`stop`
    stops accepting, lets the batches in flight become durable and closes the spools."""

    def __init__(self, listeners: list[Listener], endpoints: list[Any] = ()) -> None:
        self.listeners = listeners
        self.endpoints = list(endpoints)  # other servers on this loop: ``async start()``, ``.server``
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="scmwatch-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()
        for srv in [*self.listeners, *self.endpoints]:
            asyncio.run_coroutine_threadsafe(srv.start(), self.loop).result(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            for srv in [*self.listeners, *self.endpoints]:
                if srv.server is not None:
                    srv.server.close()
            deadline = time.monotonic() + timeout
            while any(lst.spool._pending for lst in self.listeners) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            tasks = [t for lst in self.listeners for t in lst.tasks]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=timeout + 1)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.loop.close()
            for lst in self.listeners:
                lst.spool.close()


def spool_dir(state_dir: str, kind: str) -> str:
    """Where a listener of ``kind`` spools: ``STATE_DIR/spool/<kind>/`` (stable across restarts and
    port changes, so what a previous run received and did not yet process is followed again)."""
    return os.path.join(state_dir, "spool", kind)


def open_listeners(state_dir: str, addresses: dict[str, str], *, max_body: int = MAX_BODY,
                   report: Callable[[str], None] | None = None, metrics: str | None = None,
                   registry: Registry | None = None) -> ListenerThread:
    """Listeners for ``{"http": "HOST:PORT", "tcp": ...}`` and, with ``metrics`` (HOST:PORT), the
    metrics endpoint serving ``registry`` (the listeners' counters registered in it), started;
    raises AddressError or OSError (port in use, no permission) with the socket error's text."""
    made = []
    for kind, text in addresses.items():
        host, port = parse_address(text)
        spool = Spool(spool_dir(state_dir, kind))
        made.append(LISTENERS[kind](host, port, spool, max_body=max_body, report=report))
    endpoints = []
    if registry is not None:
        for lst in made:
            registry.register(lst.samples)
        if metrics is not None:
            endpoints.append(MetricsEndpoint(registry, *parse_address(metrics)))
    thread = ListenerThread(made, endpoints)
    try:
        thread.start()
    except BaseException:
        thread.stop(1.0)
        raise
    return thread
