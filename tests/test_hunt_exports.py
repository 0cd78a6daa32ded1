"""``hunt --format timesketch`` and ``--format ecs`` (issue 14): checked against Timesketch's
required columns and the ECS field reference subset in tests/fixtures/ecs (names and types),
and every line valid JSON whatever the input holds."""

from __future__ import annotations

import io
import ipaddress
import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.paths import ATTACK_SAMPLES, need_shared

from scmwatch.alerts import Alert
from scmwatch.cli import main
from scmwatch.events.model import Event
from scmwatch.sinks import open_sink
from scmwatch.sinks.ecs import ECS_VERSION
from scmwatch.sinks.timesketch import REQUIRED

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"
SCHEMA = yaml.safe_load((ROOT / "tests" / "fixtures" / "ecs" / "ecs_subset.yml").read_text())
FIELDS = {**SCHEMA["fields"], **SCHEMA["winlog"]}
CUSTOM = "scmwatch"


def hunt_lines(tmp_path: Path, fmt: str, *paths: str, extra: tuple[str, ...] = ()) -> list[dict]:
    out = tmp_path / f"out.{fmt}"
    assert main(["hunt", *paths, "--format", fmt, "-o", str(out), *extra]) == 0
    raw = out.read_bytes()
    assert raw.endswith(b"\n") or raw == b""
    return [json.loads(line) for line in raw.decode("utf-8").split("\n")[:-1]]


def flatten(doc: dict, prefix: str = "") -> dict[str, object]:
    """Dotted ECS names -> values; stops at the object fields the schema declares (event_data)
    and at the custom namespace."""
    out: dict[str, object] = {}
    for k, v in doc.items():
        name = prefix + k
        if isinstance(v, dict) and FIELDS.get(name, {}).get("type") != "object" and name != CUSTOM:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def check_type(name: str, value: object, spec: dict) -> None:
    kind = spec["type"]
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        assert "array" in spec.get("normalize", []), f"{name}: an array where ECS expects one value"
    for v in values:
        if kind in ("keyword", "match_only_text"):
            assert isinstance(v, str), f"{name}: {v!r} is not text"
        elif kind == "long":
            assert isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63, name
        elif kind == "date":
            assert isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None, name
        elif kind == "ip":
            ipaddress.ip_address(v)
        elif kind == "object":
            assert isinstance(v, dict) and all(isinstance(k, str) and k and "." not in k for k in v), name
            assert all(x is None or isinstance(x, str) for x in v.values()), f"{name}: not keyword values"
        else:
            pytest.fail(f"{name}: type {kind} not handled by this test")
    if "allowed_values" in spec:
        assert all(v in spec["allowed_values"] for v in values), name


def check_ecs(doc: dict) -> None:
    assert CUSTOM not in SCHEMA["fieldsets"]
    for name, value in flatten(doc).items():
        if name == CUSTOM:
            assert isinstance(value, dict)
            continue
        assert name in FIELDS, f"{name} is not in the ECS subset (nor winlog.*)"
        check_type(name, value, FIELDS[name])


def check_timesketch(line: dict) -> None:
    for key in REQUIRED:
        assert isinstance(line[key], str) and line[key], key
    micros = datetime.fromisoformat(line["datetime"]).timestamp() * 1e6
    assert micros == pytest.approx(line["timestamp"], abs=1)
    for key in line:  # plain attribute names: no nesting dots, nothing Timesketch scrubs
        assert key and "." not in key and not key.startswith("_"), key


# -- the demo and real recordings ---------------------------------------------------------------

def test_timesketch_export_of_the_demo(tmp_path):
    lines = hunt_lines(tmp_path, "timesketch", str(DEMO))
    plain = hunt_lines(tmp_path, "jsonl", str(DEMO))
    assert len(lines) == len(plain) > 100
    for line, a in zip(lines, plain, strict=True):
        check_timesketch(line)
        assert line["rule_id"] == a["rule_id"] and line["datetime"] == a["timestamp"].replace("Z", "+00:00")
        assert a["title"] in line["message"] and line["host"] == a["host"]
        for name, value in a["event"].items():  # every event field, as text, findable by its name
            key = name.replace(".", "_")
            want = value if isinstance(value, str) or value is None else json.dumps(value,
                                                                                    separators=(",", ":"))
            assert line.get(key, line.get("event_" + key)) == want
    corr = [x for x in lines if x["evidence"]]
    assert corr and all(json.loads(x["evidence"]) for x in corr)


def test_ecs_export_of_the_demo_and_real_evtx(tmp_path):
    paths = [str(DEMO)]
    if (ATTACK_SAMPLES / "Lateral Movement").exists():
        paths.append(str(ATTACK_SAMPLES / "Lateral Movement"))
    docs = hunt_lines(tmp_path, "ecs", *paths)
    plain = hunt_lines(tmp_path, "jsonl", *paths)
    assert len(docs) == len(plain) > 100 and SCHEMA["ecs_version"] == ECS_VERSION
    for doc, a in zip(docs, plain, strict=True):
        check_ecs(doc)
        assert doc["@timestamp"] == a["timestamp"] and doc["rule"]["id"] == a["rule_id"]
        assert doc["event"]["kind"] == "alert" and doc["host"]["name"] == a["host"]
        if "EventID" in a["event"]:
            assert doc["winlog"]["event_id"] == str(a["event"]["EventID"]) == doc["event"]["code"]
    techniques = [d.get("threat", {}).get("technique", {}) for d in docs]
    sub = {s for t in techniques for s in t.get("subtechnique", {}).get("id", [])}
    assert "T1569.002" in sub
    tactics = {s for d in docs for s in d.get("threat", {}).get("tactic", {}).get("name", [])}
    assert {"Execution", "Lateral Movement"} <= tactics
    # the svcctl open names its client: source.ip
    assert any(d.get("source", {}).get("ip") == "10.1.10.251" for d in docs)
    assert any("evidence" in d.get(CUSTOM, {}) for d in docs)


def test_ecs_on_real_evtx_only(tmp_path):
    lm = need_shared(ATTACK_SAMPLES / "Lateral Movement")
    docs = hunt_lines(tmp_path, "ecs", str(lm))
    assert docs
    for doc in docs:
        check_ecs(doc)
        assert doc["winlog"]["channel"] and doc["winlog"]["record_id"].isdigit()


# -- hostile values ----------------------------------------------------------------------------

HOSTILE = ["=cmd|' /C calc'!A0", "+1+1", "@SUM(1)", "\x1b]52;c;cGF5bG9hZA==\x07", "\x1b[2J", "\ud800",
           "line\nbreak\r\n", "\u202eevil", "\x00nul", "a" * 5000]


def _alert(fields: dict, time: str = "2024-05-01T10:00:00Z") -> Alert:
    f = {"EventID": 7045, "Channel": "System", "Computer": "WS1", "TimeCreated": time, **fields}
    ev = Event(f, "x.evtx", 7, "evtx")
    return Alert("r1", "T=1", "high", "d", ["attack.execution", "attack.t1569.002"], ev)


def _emit(fmt: str, alerts: list[Alert]) -> list[str]:
    buf = io.BytesIO()
    stream = io.TextIOWrapper(buf, encoding="utf-8", newline="")
    sink = open_sink(fmt, stream, {})
    for a in alerts:
        sink.write(a)
    sink.close()
    stream.flush()
    return buf.getvalue().decode("utf-8").split("\n")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.sampled_from(HOSTILE),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


NAMES = ["message", "datetime", "@timestamp", "event.kind", "event", "a.b", "a_b", "", ".", "_id", "tags"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12) | st.sampled_from(NAMES), json_values, max_size=8),
       st.integers(min_value=-(2**70), max_value=2**70))
def test_every_line_valid_json_for_any_value(fields, big):
    fields = {**fields, "Big": big}
    alerts = [_alert(fields), _alert(fields, time="not a time")]
    for fmt in ("jsonl", "timesketch", "ecs"):
        lines = _emit(fmt, alerts)
        assert lines[-1] == "" and len(lines) == 3, fmt
        for text in lines[:-1]:
            obj = json.loads(text)
            if fmt == "timesketch":
                assert all(k in obj for k in REQUIRED)
                assert all(k and "." not in k and not k.startswith("_") for k in obj)
            elif fmt == "ecs":
                check_ecs(obj)
                assert obj["event"]["kind"] == "alert"  # a raw "event.kind" field never lands there


def test_hostile_bytes_in_a_log_file(tmp_path):
    """Every byte value, escape sequences and formulas inside an NDJSON log's values and names."""
    raw = bytes(range(256))
    values = [raw.decode("latin-1"), *HOSTILE[:-1]]
    log = tmp_path / "System.ndjson"
    with log.open("wb") as fh:
        for i, v in enumerate(values):
            ev = {"EventID": 7045, "Channel": "System", "Computer": f"WS{v[:8]}", "TimeCreated":
                  f"2024-05-01T10:00:{i:02d}Z", "ServiceName": v, "ImagePath": f"\\\\10.0.0.9\\s\\{v}.exe",
                  v[:20] or "k": v}
            fh.write(json.dumps(ev).encode("utf-8", "surrogatepass") + b"\n")
        fh.write(b'{"EventID": 7045, "Channel": "System", "ServiceName": "\xff\xfe raw bytes", '
                 b'"TimeCreated": "2024-05-01T10:01:00Z", "ImagePath": "\\\\\\\\h\\\\s\\\\x.exe"}\n')
    rule = tmp_path / "r.yml"
    rule.write_text("title: any service\nid: 5d5c8c7e-2b0e-4a39-a0a4-2f9d4b0b7e11\nstatus: test\n"
                    "level: high\n"
                    "logsource: {product: windows, service: system}\ndetection:\n  sel:\n    EventID: 7045\n"
                    "  condition: sel\ntags: [attack.execution, attack.t1569.002]\n")
    for fmt in ("timesketch", "ecs"):
        lines = hunt_lines(tmp_path, fmt, str(log), extra=("--rules", str(rule)))
        assert len(lines) >= len(values)
        for obj in lines:
            check_timesketch(obj) if fmt == "timesketch" else check_ecs(obj)
