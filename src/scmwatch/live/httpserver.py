"""A small HTTP/1.1 server on asyncio streams, for the ingest listener and the metrics endpoint.

Why not uvicorn/Starlette (the ``web`` extra): the listener's one contract is *acknowledge only
after the batch is durable*, with a hard bound on what a request may make us buffer (the body
limit is checked against ``Content-Length`` before a byte of the body is read, against the sum of
chunks as they arrive, and against the gunzipped size while inflating). Those are ~200 lines
here, need no extra (a watcher on a log collector should not pull in DuckDB and an ASGI stack),
and run on the watcher's own listener thread. What the shippers send is a small, well-known
subset of HTTP/1.1: POST with ``Content-Length`` or ``Transfer-Encoding: chunked``, optional
``Content-Encoding: gzip``, ``Expect: 100-continue`` (curl, Logstash), keep-alive.

Request smuggling is refused rather than interpreted: both ``Content-Length`` and
``Transfer-Encoding``, two different lengths, or a transfer coding other than ``chunked`` get a 400
and the connection is closed.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

MAX_HEAD = 16 << 10  # request line + headers
IDLE_TIMEOUT = 60.0  # seconds a kept-alive connection may wait for its next request
BODY_TIMEOUT = 60.0  # seconds a started body may take to arrive
LINGER_BYTES = 64 << 20  # discarded after a refusal at most, then the connection is reset
LINGER_SECONDS = 2.0

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    415: "Unsupported Media Type", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request the server answers with ``status`` and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes = b""  # decoded (gunzipped) body

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable request head") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"unsupported version {version[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        if key in headers:
            if key in ("content-length", "transfer-encoding", "content-encoding", "host"):
                if headers[key] != value:
                    raise HttpError(400, f"conflicting {key} headers")
                continue
            headers[key] = headers[key] + ", " + value
        else:
            headers[key] = value
    return method, target, version, headers


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        token = line[:-2].split(b";", 1)[0].strip()
        try:
            n = int(token, 16)
        except ValueError as exc:
            raise HttpError(400, "malformed chunk size") from exc
        if n < 0:
            raise HttpError(400, "malformed chunk size")
        if n == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, ignored
                pass
            return b"".join(parts)
        size += n
        if size > limit:
            raise HttpError(413, f"body larger than {limit} bytes")
        parts.append(await reader.readexactly(n))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "chunk not followed by CRLF")


def gunzip(data: bytes, limit: int) -> bytes:
    """``data`` inflated (gzip or zlib), refusing to produce more than ``limit`` bytes."""
    d = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, auto-detected
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise HttpError(413, f"decoded body larger than {limit} bytes")
        if not d.eof:
            raise HttpError(400, "truncated gzip body")
    except zlib.error as exc:
        raise HttpError(400, f"bad gzip body: {exc}") from exc
    return out


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       max_body: int) -> Request | None:
    """The next request on the connection, None at a clean end of the connection."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "connection closed inside the request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise HttpError(431, "request head too large") from exc
    except TimeoutError:
        return None
    method, target, version, headers = _parse_head(head[:-4])
    te = headers.get("transfer-encoding")
    cl = headers.get("content-length")
    if te is not None and cl is not None:
        raise HttpError(400, "both Content-Length and Transfer-Encoding")
    if te is not None and te.lower() != "chunked":
        raise HttpError(400, f"unsupported Transfer-Encoding {te[:40]!r}")
    length = 0
    if cl is not None:
        if not cl.isdigit():
            raise HttpError(400, "malformed Content-Length")
        length = int(cl)
        if length > max_body:
            raise HttpError(413, f"body larger than {max_body} bytes")
    if headers.get("expect", "").lower() == "100-continue" and (te is not None or length):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        if te is not None:
            body = await asyncio.wait_for(_read_chunked(reader, max_body), BODY_TIMEOUT)
        else:
            body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT) if length else b""
    except TimeoutError as exc:
        raise HttpError(408, "body not received in time") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError(400, "malformed chunk line") from exc
    except asyncio.IncompleteReadError as exc:
        raise HttpError(400, "connection closed inside the body") from exc
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        body = gunzip(body, max_body)
    elif encoding != "identity":
        raise HttpError(415, f"unsupported Content-Encoding {encoding[:40]!r}")
    return Request(method, target, version, headers, body)


def render(resp: Response, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}",
            f"Content-Type: {resp.content_type}", f"Content-Length: {len(resp.body)}",
            "Connection: keep-alive" if keep_alive else "Connection: close"]
    head += [f"{k}: {v}" for k, v in resp.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body


def _keep_alive(req: Request) -> bool:
    conn = req.headers.get("connection", "").lower()
    if req.version == "HTTP/1.0":
        return "keep-alive" in conn
    return "close" not in conn


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After refusing a request whose body is still coming: half-close and discard what the client
    still sends (at most LINGER_BYTES, LINGER_SECONDS), so it reads our answer instead of a reset."""
    if writer.can_write_eof():
        writer.write_eof()
    left = LINGER_BYTES
    deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
    try:
        while left > 0:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            data = await asyncio.wait_for(reader.read(min(left, 1 << 16)), remaining)
            if not data:
                return
            left -= len(data)
    except (TimeoutError, ConnectionError):
        return


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           handler: Handler, max_body: int,
                           on_error: Callable[[int, str], None] | None = None) -> None:
    """Answer requests on one connection until it closes, errs or asks to close."""
    try:
        while True:
            try:
                req = await read_request(reader, writer, max_body)
            except HttpError as exc:
                if on_error is not None:
                    on_error(exc.status, str(exc))
                writer.write(render(Response(exc.status, error_body(str(exc))), keep_alive=False))
                await writer.drain()
                await _linger(reader, writer)
                return
            if req is None:
                return
            keep = _keep_alive(req)
            resp = await handler(req)
            writer.write(render(resp, keep))
            await writer.drain()
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
