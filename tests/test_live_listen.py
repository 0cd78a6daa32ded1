"""The network listeners over real sockets on 127.0.0.1: what a shipper sends lands in the spool
(fsynced before the answer), bad input is counted and refused without losing the rest."""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import time
from pathlib import Path

import orjson
import pytest

from scmwatch.live.listen import (
    AddressError,
    ListenerThread,
    TcpListener,
    open_listeners,
    parse_address,
    split_body,
)
from scmwatch.live.spool import Spool, segments

EVENT = {"EventID": 7045, "Channel": "System", "Computer": "ws1", "ServiceName": "PSEXESVC"}


def spooled(state: str, kind: str) -> list[dict]:
    """The objects in a spool's complete lines (a write in progress may show a partial last one,
    as it does to the follower, which reads complete lines only)."""
    out = []
    for path in segments(os.path.join(state, "spool", kind)):
        data = Path(path).read_bytes()
        out += [orjson.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]
    return out


@pytest.fixture()
def listeners(tmp_path):
    reports: list[str] = []
    t = open_listeners(str(tmp_path), {"http": "127.0.0.1:0", "tcp": "127.0.0.1:0"}, max_body=1 << 20,
                       report=reports.append)
    t.reports = reports
    yield t
    t.stop()


def post(port: int, body: bytes, headers: dict | None = None, path: str = "/",
         method: str = "POST") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_parse_address():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9") == ("0.0.0.0", 9)
    assert parse_address("[::1]:9") == ("::1", 9)
    for bad in ("host:1", "1.2.3.4:x", "1.2.3.4:70000", "[::1]9"):
        with pytest.raises(AddressError):
            parse_address(bad)


def test_split_body_layouts():
    lines = [orjson.dumps(dict(EVENT, EventRecordID=i)) for i in range(3)]
    assert split_body(b"\n".join(lines) + b"\n") == (lines, 0)
    assert split_body(b"\r\n".join(lines)) == (lines, 0)
    assert split_body(b"[" + b",".join(lines) + b", 5]") == (lines, 1)  # Fluent Bit json / json_batch
    assert split_body(lines[0]) == ([lines[0]], 0)  # one object per request
    assert split_body(b"  \n") == ([], 0)
    # a lone surrogate escape and a huge integer are kept (orjson refuses both, readers accept them)
    odd = b'{"ServiceName": "a\\ud800b", "n": 123456789012345678901234567890}'
    assert split_body(odd) == ([odd], 0)
    assert split_body(b'[{"x": "\\udc00"}]')[1] == 0


def test_http_batches_are_durable_before_200(listeners, tmp_path):
    http_l = listeners.listeners[0]
    ndjson = b"".join(orjson.dumps(dict(EVENT, EventRecordID=i)) + b"\n" for i in range(50))
    status, body = post(http_l.port, ndjson, {"Content-Type": "application/x-ndjson"})
    assert status == 200 and orjson.loads(body) == {"accepted": 50, "rejected": 0}
    # the answer came after the fsync: the lines are in the spool now, not "soon"
    assert [e["EventRecordID"] for e in spooled(str(tmp_path), "http")] == list(range(50))
    assert http_l.spool.stats.fsyncs >= 1


def test_http_gzip_chunked_and_garbage(listeners, tmp_path):
    port = listeners.listeners[0].port
    good = [orjson.dumps(dict(EVENT, EventRecordID=i)) for i in range(3)]
    body = good[0] + b"\nnot json at all\n" + good[1] + b'\n{"cut": \n[1,2]\n' + good[2] + b"\n"
    status, resp = post(port, gzip.compress(body), {"Content-Encoding": "gzip"})
    assert status == 200 and orjson.loads(resp) == {"accepted": 3, "rejected": 3}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/in", body=iter([good[0], b"\n", good[1] + b"\n"]), encode_chunked=True)
    resp2 = conn.getresponse()
    assert resp2.status == 200 and orjson.loads(resp2.read())["accepted"] == 2
    # keep-alive: a second request on the same connection
    conn.request("POST", "/in", body=b"[" + good[2] + b"]")
    resp3 = conn.getresponse()
    assert resp3.status == 200 and orjson.loads(resp3.read())["accepted"] == 1
    conn.close()
    assert len(spooled(str(tmp_path), "http")) == 6
    assert listeners.listeners[0].stats.rejected == 3
    assert any("3 line(s) rejected" in r for r in listeners.reports)


def test_http_refusals(listeners, tmp_path):
    port = listeners.listeners[0].port
    assert post(port, b"x" * ((1 << 20) + 1))[0] == 413
    bomb = gzip.compress(b"{}\n" * (1 << 20))  # 3 MiB decoded from a few kB
    assert len(bomb) < 1 << 20
    assert post(port, bomb, {"Content-Encoding": "gzip"})[0] == 413
    assert post(port, b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"})[0] == 400
    assert post(port, b"{}", {"Content-Encoding": "br"})[0] == 415
    assert post(port, b"", method="GET", path="/health")[0] == 200
    assert post(port, b"", method="DELETE")[0] == 405
    # request smuggling: both lengths -> refused, not interpreted
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    # oversized chunked body: cut off at the limit
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/", body=iter([b"{}\n" * (200 << 10)] * 3), encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert spooled(str(tmp_path), "http") == []
    assert listeners.listeners[0].stats.refused[413] == 3


def test_http_expect_continue(listeners):
    port = listeners.listeners[0].port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        body = orjson.dumps(EVENT)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        resp = b""
        while chunk := s.recv(4096):
            resp += chunk
        assert resp.startswith(b"HTTP/1.1 200") and b'"accepted":1' in resp


def test_tcp_lines(listeners, tmp_path):
    port = listeners.listeners[1].port
    lines = [orjson.dumps(dict(EVENT, EventRecordID=i)) for i in range(1000)]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        data = b"\n".join(lines[:500]) + b"\ngarbage\n" + b"\n".join(lines[500:])  # last line unterminated
        for i in range(0, len(data), 777):  # lines split across writes
            s.sendall(data[i:i + 777])
    deadline = time.monotonic() + 10
    while len(spooled(str(tmp_path), "tcp")) < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e["EventRecordID"] for e in spooled(str(tmp_path), "tcp")] == list(range(1000))
    assert listeners.listeners[1].stats.rejected == 1


def test_tcp_overlong_line_is_skipped(tmp_path):
    import scmwatch.live.listen as listen

    lst = TcpListener("127.0.0.1", 0, Spool(str(tmp_path / "spool")), report=lambda m: None)
    t = ListenerThread([lst])
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", lst.port), timeout=10) as s:
            s.sendall(b'{"long": "' + b"x" * (listen.MAX_LINE + 10))
            s.sendall(b'"}\n' + orjson.dumps(EVENT) + b"\n")
        deadline = time.monotonic() + 10
        while lst.stats.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        t.stop()
    assert lst.stats.accepted == 1 and lst.stats.rejected == 1


def test_spool_cuts_torn_tail_and_rolls(tmp_path):
    d = str(tmp_path / "s")
    os.makedirs(d)
    with open(os.path.join(d, "000000000003.ndjson"), "wb") as f:
        f.write(b'{"a":1}\n{"b":')  # a crash inside a write
    sp = Spool(d, segment_bytes=20)
    assert sp.torn_bytes == 5 and sp.path.endswith("000000000003.ndjson")

    import asyncio

    async def fill() -> None:
        await asyncio.gather(*(sp.append([b'{"n":%d}' % i]) for i in range(10)))

    asyncio.run(fill())
    assert sp.stats.fsyncs < 10  # concurrent appends shared fsyncs (group commit)
    asyncio.run(sp.append([b'{"last":1}']))  # the segment is over 20 bytes: a new one
    sp.close()
    names = [os.path.basename(p) for p in segments(d)]
    assert names[0] == "000000000003.ndjson" and len(names) > 1
    rows = b"".join(Path(p).read_bytes() for p in segments(d)).splitlines()
    assert rows[0] == b'{"a":1}' and sorted(rows[1:-1]) == sorted(b'{"n":%d}' % i for i in range(10))
    assert rows[-1] == b'{"last":1}'
    assert Spool(d).prune(segments(d)[-1]) == len(names) - 1


def test_disk_full_answers_503(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    d = tmp_path / "spool" / "http"
    d.mkdir(parents=True)
    os.symlink("/dev/full", d / "000000000000.ndjson")  # every write: ENOSPC
    reports: list[str] = []
    t = open_listeners(str(tmp_path), {"http": "127.0.0.1:0"}, report=reports.append)
    try:
        status, _ = post(t.listeners[0].port, orjson.dumps(EVENT))
    finally:
        t.stop()
    assert status == 503
    assert any("spool write failed" in r for r in reports)


def test_port_in_use_is_an_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            open_listeners(str(tmp_path), {"http": f"127.0.0.1:{s.getsockname()[1]}"})
