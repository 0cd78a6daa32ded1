"""The metrics endpoint scraped over a real socket: Prometheus text and JSON, hostile label values."""

from __future__ import annotations

import http.client
import re

import orjson
import pytest

from scmwatch.live.listen import open_listeners
from scmwatch.live.metrics import Registry, Sample, json_snapshot, prometheus_text

# one exposition line: name{labels} value (https://prometheus.io/docs/instrumenting/exposition_formats/)
_LINE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\\n]|\\["\\n])*",?)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$')


def scrape(port: int, path: str, accept: str = "") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Accept": accept} if accept else {})
    resp = conn.getresponse()
    out = resp.status, resp.getheader("Content-Type"), resp.read()
    conn.close()
    return out


def test_text_format_escapes_labels():
    hostile = 'C:\\logs\\a"b\nscmwatch_alerts_total 1e9'
    text = prometheus_text([Sample("scmwatch_source_lag_bytes", 12, {"source": hostile}),
                            Sample("scmwatch_alerts_total", 3), Sample("scmwatch_events_per_second", 0.5)])
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(body) == 3  # the newline in the label did not make a fourth sample
    assert all(_LINE.match(line) for line in body), body
    assert 'source="C:\\\\logs\\\\a\\"b\\nscmwatch_alerts_total 1e9"' in text
    assert "# TYPE scmwatch_alerts_total counter" in text
    with pytest.raises(KeyError):
        prometheus_text([Sample("made_up", 1)])
    snap = json_snapshot([Sample("scmwatch_alerts_total", 3)])
    assert snap["scmwatch_alerts_total"]["samples"] == [{"labels": {}, "value": 3}]


def test_endpoint_scraped_over_http(tmp_path):
    reg = Registry()
    alerts = {"n": 0}
    reg.register(lambda: [Sample("scmwatch_alerts_total", alerts["n"])])
    t = open_listeners(str(tmp_path), {"http": "127.0.0.1:0"}, metrics="127.0.0.1:0", registry=reg,
                       report=lambda m: None)
    try:
        port = t.endpoints[0].port
        conn = http.client.HTTPConnection("127.0.0.1", t.listeners[0].port, timeout=10)
        conn.request("POST", "/", body=b'{"EventID": 1}\nbad\n')
        assert conn.getresponse().status == 200
        conn.close()
        alerts["n"] = 7
        status, ctype, body = scrape(port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        text = body.decode()
        assert "scmwatch_alerts_total 7" in text
        assert re.search(r'scmwatch_listen_lines_total\{listener="http:127.0.0.1:\d+",outcome="accepted"\} 1',
                         text)
        assert re.search(r'outcome="rejected"\} 1', text)
        for path, accept in (("/metrics.json", ""), ("/metrics", "application/json")):
            status, ctype, body = scrape(port, path, accept)
            snap = orjson.loads(body)
            assert status == 200 and ctype == "application/json"
            assert snap["scmwatch_alerts_total"]["samples"][0]["value"] == 7
        assert scrape(port, "/other")[0] == 404
    finally:
        t.stop()
