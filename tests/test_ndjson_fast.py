"""The C NDJSON loop (``_flatten.NdjsonEvents``) against the Python reader it stands in for.

An NDJSON file whose first line is an evtx_dump record or a flat object is read by the C loop;
every other file, and every file with ``SCMWATCH_PURE_PYTHON=1``, by the Python line loop. Both must give
the same events (fields with their types and key order, line numbers, format), the same
problem counts and lines, and the same byte count, whatever the lines hold and wherever the
reads cut them; with a read gate the C loop gives exactly the wanted subset.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from paths import ATTACK_SAMPLES, evtx_files, evtx_records, need_shared
from scmwatch.events import json_reader, text
from scmwatch.events.model import ReadGate, ReadStats
from scmwatch.events.ranges import read_range, split_file
from scmwatch.events.read import discover, read_input
from scmwatch.events.xml_reader import read_xml  # noqa: F401 - the readers register on import

if json_reader.NdjsonEvents is None:
    pytest.skip("the C extension was not built (no compiler at install time)", allow_module_level=True)


def record(rid: int = 1, eid: Any = 7045, channel: str = "System", **data: Any) -> dict[str, Any]:
    return {"Event": {"System": {
        "Provider": {"#attributes": {"Name": "Service Control Manager",
                                     "Guid": "{555908D1-A6D7-4695-8E1E-26931D2012F4}"}},
        "EventID": eid, "TimeCreated": {"#attributes": {"SystemTime": "2024-01-01T00:00:00.000000Z"}},
        "EventRecordID": rid, "Channel": channel, "Computer": "HOST1",
        "Security": {"#attributes": {"UserID": "S-1-5-18"}}},
        "EventData": {"ServiceName": f"svc{rid}", "ImagePath": "C:\\Windows\\x.exe", **data}}}


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _same(a: Any, b: Any, where: str = "$") -> None:
    assert type(a) is type(b), f"{where}: {a!r} vs {b!r}"
    if type(a) is dict:
        assert list(a) == list(b), f"{where}: key order {list(a)} vs {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif type(a) is list:
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def read_file(path: Path, c: bool, monkeypatch: pytest.MonkeyPatch,
              want: Callable[[Any, Any], bool] | None = None) -> tuple[list, ReadStats, Any]:
    """Events of ``path`` read with the C loop (``c``) or the Python one, and the stats."""
    with monkeypatch.context() as m:
        if not c:
            m.setattr(json_reader, "NdjsonEvents", None)
        stats = ReadStats()
        gate = ReadGate(want) if want is not None else None
        events = [e for inp in discover([str(path)], stats) for e in read_input(inp, stats, gate)]
    return events, stats, gate


def assert_same_read(path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    c_events, c_stats, _ = read_file(path, True, monkeypatch)
    py_events, py_stats, _ = read_file(path, False, monkeypatch)
    def where(events: list) -> list:
        return [(e.source, e.record_id, e.fmt) for e in events]

    assert where(c_events) == where(py_events)
    for a, b in zip(c_events, py_events, strict=True):
        _same(a.fields, b.fields, f"line {a.record_id}")
    assert c_stats.events == py_stats.events
    assert c_stats.bytes == py_stats.bytes
    assert c_stats.bytes == path.stat().st_size or c_stats.files_failed  # (NUL bytes: not a text file)
    assert c_stats.errors == py_stats.errors
    assert [(e.kind, e.message, e.record) for e in c_stats.first_errors] == \
        [(e.kind, e.message, e.record) for e in py_stats.first_errors]
    return c_events


DEEP_START = b'{"Event": {"System": {"EventID": 1}, "EventData": {"x": '
# Lines the C loop must hand to the Python code, each after a good record: the Python outcome
# (an event, a counted problem, nothing) is what both must give.
ODD_LINES: dict[str, bytes] = {
    "blank": b"\n",
    "spaces": b"  \t \r\n",
    "form feed": b"\x0c\n",
    "crlf record": line(record(50))[:-1] + b"\r\n",
    "broken": b'{"Event": {"System": \n',
    "trailing comma": b'{"Event": {"System": {"EventID": 1},}}\n',
    "two objects": line(record(51))[:-1] + line(record(52)),
    "garbage after": line(record(53))[:-1] + b" x\n",
    "invalid utf-8": line(record(54, Image="caf\xe9"))[:-1].replace(b"caf\\u00e9", b"caf\xe9") + b"\n",
    "lone surrogate": line(record(55, Image="\ud800"))[:-1].replace(b"\\ud800", b"\\ud800") + b"\n",
    "paired surrogates": line(record(56, Image="\U0001f600")),
    "deep 70": DEEP_START + b"[" * 70 + b"]" * 70 + b"}}}\n",
    "deep 120": DEEP_START + b"[" * 120 + b"]" * 120 + b"}}}\n",
    "many brackets": line(record(57, Data=[[1]] * 80)),
    "text EventID": line(record(58, eid="0x1250")),
    "spaced EventID": line(record(59, eid=" 4688")),
    "decimal text EventID": line(record(60, eid="4688")),
    "float": line(record(61, Size=1.5)),
    "huge int": b'{"Event": {"System": {"EventID": 7045, "EventRecordID": 1234567890123456789012345}}}\n',
    "negative": line(record(62, Pid=-5)),
    "bools and null": line(record(63, A=True, B=False, C=None)),
    "escapes": line(record(64, CommandLine='a "b" \\c\t\n\u00e9\u4e2d/')),
    "ecs": line({"winlog": {"event_id": 4688, "channel": "Security", "event_data": {"NewProcessName": "x"}},
                 "@timestamp": "2024-01-01T00:00:00Z"}),
    "flat": line({"EventID": 4688, "Channel": "Security", "NewProcessName": "y", "Hostname": "H"}),
    "zeek": line({"_path": "conn", "ts": 1.5, "uid": "C1"}),
    "array": b"[1, 2]\n",
    "string": b'"x"\n',
    "number": b"5\n",
    "no System or EventData": line({"Event": {"UserData": {"Op": {"A": 1}}}}),
    "Event null": line({"Event": None}),
    "Event list": line({"Event": [1]}),
    "Event twice": b'{"Event": {"System": {"EventID": 1}}, "Event": {"System": {"EventID": 2}}}\n',
    "System twice": b'{"Event": {"System": {"EventID": 1}, "System": {"EventID": 2}}}\n',
    "System null": line({"Event": {"System": None, "EventData": {"A": 1}}}),
    "EventData null": line({"Event": {"System": {"EventID": 7, "Channel": "System"}, "EventData": None}}),
    "UserData": line({"Event": {"System": {"EventID": 7, "Channel": "System"}, "UserData": {"W": {"A": 1}}}}),
    "spaced key": line(record(65, **{"Threat Name": "x"})),
    "core name in data": line(record(66, Channel="evil")),
    "other top-level keys": line({"meta": {"a": [1, {"b": 2}]}, **record(67), "z": 1}),
    "bare guid": line(record(68, Guid="0CCE9243-69AE-11D9-BED3-505054503030")),
    "nul byte": line(record(69))[:-2] + b"\x00}\n",
    "bom mid-file": b"\xef\xbb\xbf" + line(record(70)),
}


def _odd_file(tmp_path: Path, lines: list[bytes], last_newline: bool = True) -> Path:
    body = b"".join(lines)
    if not last_newline:
        body = body.rstrip(b"\n")
    path = tmp_path / "odd.ndjson"
    path.write_bytes(body)
    return path


def test_every_odd_line_reads_as_the_python_reader_does(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line(record(1))]
    for i, odd in enumerate(ODD_LINES.values()):
        lines += [odd, line(record(100 + i))]
    events = assert_same_read(_odd_file(tmp_path, lines), monkeypatch)
    assert len(events) > len(ODD_LINES)


@pytest.mark.parametrize("name", list(ODD_LINES))
def test_odd_line_as_the_last_line_without_newline(name: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same_read(_odd_file(tmp_path, [line(record(1)), ODD_LINES[name]], last_newline=False), monkeypatch)


def test_short_texts_read_as_themselves_wherever_they_stand(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The C loop finds a short key or value (under 8 bytes) in its caches by one masked 8-byte
    load, or byte by byte when the line ends within 8 bytes: either way the same text is the
    same entry, and texts that differ only in their last byte are never one another's."""
    texts = ["x" * (n - 1) + c for n in range(1, 8) for c in "ab"]
    lines = []
    for i, t in enumerate(texts):
        other = texts[i ^ 1]  # the same length, the last byte differs
        lines.append(line(record(i, **{t: t, other: other, "Mid": t, "Last": t})))
        lines.append(line(record(100 + i, **{other: t, "Last": other})))
    events = assert_same_read(_odd_file(tmp_path, lines), monkeypatch)
    assert len(events) == 2 * len(texts)
    for i, t in enumerate(texts):
        first, second = events[2 * i].fields, events[2 * i + 1].fields
        assert first[t] == first["Mid"] == first["Last"] == t and first[texts[i ^ 1]] == texts[i ^ 1]
        assert second[texts[i ^ 1]] == t and second["Last"] == texts[i ^ 1]


def test_member_names_in_changing_orders_read_as_the_python_reader(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The C loop tries first the name that followed the previous one last time (the two latest
    successors): a name that is a prefix of the guess or the guess a prefix of it, one of the
    same length that differs, a third successor pushing one out, an escaped spelling of a cached
    name, a name too long to cache and a non-ASCII one all read as the Python reader reads them."""
    shapes = [
        {"ImageLoaded": "a", "Signed": "true"},
        {"Image": "b", "Signed": "false"},
        {"ImageLoadedX": "c", "Signed": "x"},
        {"UserA": "1", "UserB": "2"},
        {"UserB": "3", "UserA": "4"},
        {"UserC": "5"},
        {"UserA": "6", "Image": "7"},
        {"Image": "8", "ImageLoaded": "9"},
        {"N" * 80: "long", "Image": "10"},
        {"Imagé": "11", "Image": "12"},
        {"Image": "13", "Image ": "14"},
    ]
    lines = []
    for i in range(3):
        for k, data in enumerate(shapes):
            lines.append(line(record(10 * k + i, **data)))
    escaped = line(record(900, Image="e"))[:-1].replace(b'"Image"', b'"Im\\u0061ge"') + b"\n"
    assert b"\\u0061" in escaped
    lines += [escaped, line(record(901, Image="f")), escaped]
    events = assert_same_read(_odd_file(tmp_path, lines), monkeypatch)
    assert len(events) == 3 * len(shapes) + 3
    assert events[1].fields["Image"] == "b" and "ImageLoaded" not in events[1].fields
    assert events[-3].fields["Image"] == "e" and events[-1].fields["Image"] == "e"


def test_read_json_hands_back_the_c_loop_itself(tmp_path: Path) -> None:
    """An NDJSON file of evtx_dump records is iterated through the C loop with no generator of
    the reader in between; the loop adds its counts to the stats when it ends."""
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"".join(line(record(i)) for i in range(1, 6)))
    stats = ReadStats()
    with open(path, "rb") as fh:
        events = json_reader.read_json(str(path), fh, stats)
        assert type(events) is json_reader.NdjsonEvents
        assert stats.events == 0
        assert [e.record_id for e in events] == [1, 2, 3, 4, 5]
    assert stats.events == 5 and stats.bytes == path.stat().st_size


@pytest.mark.parametrize("how", ["close", "drop"])
def test_counts_reach_the_stats_when_the_loop_stops_early(how: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after two events (closed, as a ``yield from`` closes it, or dropped), the loop adds
    what it has read once, as the generator's ``finally`` did."""
    monkeypatch.setattr(text, "BLOCK", 1000)
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"".join(line(record(i)) for i in range(1, 50)))
    read = len(line(record(1))) + 1000  # the first line (read to tell the format), one block
    stats = ReadStats()
    with open(path, "rb") as fh:
        events = json_reader.read_json(str(path), fh, stats)
        assert [next(events).record_id, next(events).record_id] == [1, 2]
        if how == "close":
            events.close()
            assert (stats.events, stats.bytes) == (2, read)
            events.close()
            assert list(events) == []
        del events
    assert (stats.events, stats.bytes) == (2, read)


def test_a_read_error_is_reported_after_the_events_read_before_it(tmp_path: Path) -> None:
    """A compressed NDJSON file cut short fails in the middle of the C loop: the loop's counts are
    in the stats when the reader reports the failure, so the message says how many were read."""
    import gzip

    body = b"".join(line(record(i, Pad="p" * 400)) for i in range(1, 6001))
    packed = gzip.compress(body, compresslevel=1)
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(packed[: len(packed) * 3 // 4])
    stats = ReadStats()
    events = [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    assert 1000 < len(events) < 6000
    assert stats.events == len(events)
    (err,) = stats.first_errors
    assert err.kind == "unreadable" and f"read failed after {len(events)} events" in err.message


@pytest.mark.parametrize("block", [1, 2, 7, 64, 1000, 4096])
def test_reads_cut_anywhere_give_the_same_events(block: int, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "BLOCK", block)
    lines = [line(record(1))] + [odd + line(record(200 + i)) for i, odd in enumerate(ODD_LINES.values())]
    assert_same_read(_odd_file(tmp_path, lines), monkeypatch)


@pytest.mark.parametrize("block", [3, 100, 1 << 20])
def test_lines_past_the_cap_are_reported_and_skipped(block: int, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_reader, "MAX_OBJECT", 600)
    monkeypatch.setattr(text, "BLOCK", block)
    long_one = b'{"a": "' + b"y" * 700 + b'"}\n'
    exactly = b"z" * 600 + b"\n"  # 600 bytes without the newline: past the cap too
    below = line(record(3, P="q" * (600 - len(line(record(3, P=""))))))  # 599 bytes and a newline
    assert len(below) == 600
    lines = [line(record(1)), long_one, line(record(2)), exactly, below, long_one[:-1]]
    events = assert_same_read(_odd_file(tmp_path, lines), monkeypatch)
    assert [e.record_id for e in events] == [1, 3, 5]
    c_events, c_stats, _ = read_file(_odd_file(tmp_path, lines), True, monkeypatch)
    reported = [(e.record, "longer than" in e.message) for e in c_stats.first_errors]
    assert reported == [(2, True), (4, True), (6, True)]


def test_the_gate_skips_exactly_the_unwanted_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = []
    for i in range(60):
        eid, channel = (7045, 4688, 1, "0x12")[i % 4], ("System", "Security")[i % 3 % 2]
        lines.append(line(record(i, eid=eid, channel=channel)))
    lines += [ODD_LINES["broken"], line(record(99, eid=7045, channel="Security"))]
    path = _odd_file(tmp_path, lines)
    asked: list[tuple] = []

    def want(channel: Any, eid: Any) -> bool:
        asked.append((channel, eid))
        return eid == 7045

    gated, g_stats, gate = read_file(path, True, monkeypatch, want)
    whole, w_stats, _ = read_file(path, False, monkeypatch)
    kept = [e for e in whole if e.fields["EventID"] in (7045, "0x12")]  # text EventIDs are never skipped
    assert [(e.record_id, e.fields) for e in gated] == [(e.record_id, e.fields) for e in kept]
    assert g_stats.events == w_stats.events  # skipped records are still counted as read
    assert gate.skipped == len(whole) - len(kept) > 0
    assert g_stats.errors == w_stats.errors and g_stats.errors["eventid-not-decimal"] == 15
    assert len(asked) == len(set(asked))  # asked once per pair and file


def test_the_gate_answers_repeated_and_changing_pairs_alike(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The C loop answers a record whose pair is the one before it without the decisions dict
    (the same Channel str, the same int EventID): runs of a pair, an EventID or a Channel that
    changes alone, a Channel too long for the value cache (a new str every record) and an
    EventID past 64 bits must each get their own pair's answer."""
    long_channel = "Microsoft-Windows-" + "X" * 80
    pairs = ([("Security", 4688)] * 3 + [("Security", 4689), ("Security", 4688), ("System", 4688)]
             + [(long_channel, 4688)] * 2 + [(long_channel, 4689)] + [("Security", 2**70)] * 2
             + [("Security", 4688), ("Security", 4689)] * 2)
    path = _odd_file(tmp_path, [line(record(i, eid=eid, channel=ch)) for i, (ch, eid) in enumerate(pairs)])

    def want(channel: Any, eid: Any) -> bool:
        return eid in (4688, 2**70) and channel != "System"

    gated, _, gate = read_file(path, True, monkeypatch, want)
    whole, _, _ = read_file(path, False, monkeypatch)
    kept = [e for e in whole if want(e.fields["Channel"], e.fields["EventID"])]
    assert [(e.record_id, e.fields) for e in gated] == [(e.record_id, e.fields) for e in kept]
    assert gate.skipped == len(whole) - len(kept) == 5


def test_split_ranges_read_as_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.ndjson"
    broken = ODD_LINES["broken"]
    path.write_bytes(b"".join(line(record(i)) + (broken if i % 97 == 0 else b"") for i in range(3000)))
    whole = assert_same_read(path, monkeypatch)
    (inp,) = discover([str(path)], ReadStats())
    ranges = split_file(inp, 5, 1)
    assert ranges is not None and len(ranges) == 5
    parts = []
    for unit in ranges:
        stats = ReadStats()
        parts += [(e.record_id, e.fields) for e in read_range(unit, stats)]
    assert parts == [(e.record_id, e.fields) for e in whole]


def test_live_batches_read_as_the_python_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(line(record(i)) for i in range(5)) + ODD_LINES["broken"] + ODD_LINES["text EventID"]
    out = []
    for c in (True, False):
        with monkeypatch.context() as m:
            if not c:
                m.setattr(json_reader, "NdjsonEvents", None)
            stats = ReadStats()
            events = list(json_reader.read_ndjson_batch("live.json", data, stats, 41))
            read = [(e.record_id, e.fields) for e in events]
            out.append((read, stats.events, stats.bytes, dict(stats.errors)))
    assert out[0] == out[1]
    assert [rid for rid, _ in out[0][0]] == [41, 42, 43, 44, 45, 47]


def test_every_record_of_the_attack_corpus_as_ndjson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared corpus as NDJSON (one evtx_dump record per line): the C loop equals the Python
    reader, and both equal the EVTX reader's fields for the same records."""
    files = evtx_files(need_shared(ATTACK_SAMPLES))
    path = tmp_path / "corpus.ndjson"
    with open(path, "wb") as fh:
        for f in files:
            for rec in evtx_records(f):
                fh.write(orjson.dumps(orjson.loads(rec["data"])) + b"\n")
    events = assert_same_read(path, monkeypatch)
    stats = ReadStats()
    from_evtx = [e for f in files for inp in discover([str(f)], stats) for e in read_input(inp, stats)]
    assert len(events) == len(from_evtx) > 8000
    for a, b in zip(events, from_evtx, strict=True):
        _same(a.fields, b.fields, f"line {a.record_id}")


def flat(rid: int = 1, **extra: Any) -> dict[str, Any]:
    return {"EventID": 4688, "Channel": "Security", "Hostname": "WS1", "EventRecordID": rid,
            "TimeCreated": "2024-01-01T00:00:00.000000Z", "NewProcessName": "C:\\x.exe", **extra}


FLAT_ODD: dict[str, bytes] = {
    "Hostname then Computer": line(flat(2, Computer="REAL")),
    "Computer then Hostname": line({"Computer": "REAL", **flat(3)}),
    "both renamed to one": line(flat(4, host="H2", SourceName="P", ProviderName="Q")),
    "dropped keys": line(flat(5, EventReceivedTime="x", SourceModuleName="in", tags=["a"],
                              **{"@version": "1"})),
    "spaced keys": line(flat(6, **{"Threat Name": "T", "ThreatName": "U"})),
    "EventId": line({"EventId": 7045, "Channel": "System", "ServiceName": "s"}),
    "Channel only": line({"Channel": "System", "ServiceName": "s"}),
    "EventID only": line({"EventID": 1}),
    "text ints": line(flat(7, EventID="4688", ProcessID="12", ThreadID="0x1", Level="04", Task=" 1")),
    "text EventID": line(flat(8, EventID="0x1250")),
    "TimeCreated object": line(flat(9, TimeCreated={"SystemTime": "x"}, EventTime="2024-02-02 10:00:00")),
    "no TimeCreated": line({"EventID": 1, "Channel": "C", "UtcTime": "2024-03-03 01:02:03.123"}),
    "time keys order": line({"EventID": 1, "Channel": "C", "timestamp": "2024-01-01T00:00:00Z",
                             "@timestamp": "2023-01-01T00:00:00.123Z"}),
    "falsy time keys": line({"EventID": 1, "Channel": "C", "@timestamp": "", "UtcTime": 0, "EventTime": None,
                             "timestamp": 1700000000}),
    "seven digits": line(flat(10, TimeCreated="2024-05-06T07:59:37.3407080Z")),
    "offset time": line(flat(11, TimeCreated="2024-05-06T07:59:37+02:00")),
    "bad time": line(flat(12, TimeCreated="yesterday")),
    "int time": line(flat(13, TimeCreated=1700000000.5)),
    "null time": line(flat(14, TimeCreated=None)),
    "canonical-looking time": line(flat(15, TimeCreated="2024-13-45T99:99:99.999999Z")),
    "duplicate keys": b'{"EventID": 1, "Channel": "A", "EventID": 2, "Hostname": "h", "Computer": "c"}\n',
    "nested values": line(flat(16, Data=[1, {"a": [None, True]}], Obj={"x": {"y": 1.5}})),
    "winlog key": line(flat(17, winlog={"event_id": 1})),
    "winlog dotted": line(flat(18, **{"winlog.channel": "Security"})),
    "event module": line(flat(19, event={"code": "4688", "module": "security"})),
    "event.code": line(flat(20, **{"event.code": "4688"})),
    "fields key": line(flat(21, fields={"winlog.channel": ["x"]})),
    "_source": line(flat(22, _source={"winlog": {}})),
    "Event key": line(flat(23, Event={"System": {"EventID": 1}})),
    "zeek": line({"_path": "conn", "ts": 1.5, "uid": "C1"}),
    "not an event": line({"a": 1}),
    "lone surrogate": line(flat(24, User="\ud800")),
    "escaped key": b'{"EventID": 1, "Channel": "C", "Na\\u006de": "x"}\n',
    "non-ascii key": line(flat(25, **{"Nom\u00e9": "x", "\u540d": "y"})),
    "broken": b'{"EventID": 1, "Channel": \n',
    "array": b"[1]\n",
    "evtx record": line(record(26)),
}


def test_flat_odd_lines_read_as_the_python_reader_does(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line(flat(1))]
    for i, odd in enumerate(FLAT_ODD.values()):
        lines += [odd, line(flat(100 + i))]
    events = assert_same_read(_odd_file(tmp_path, lines), monkeypatch)
    assert len(events) > len(FLAT_ODD)


@pytest.mark.parametrize("name", list(FLAT_ODD))
def test_flat_odd_line_alone_after_a_flat_one(name: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same_read(_odd_file(tmp_path, [line(flat(1)), FLAT_ODD[name]], last_newline=False), monkeypatch)


@pytest.mark.parametrize("block", [1, 5, 333])
def test_flat_reads_cut_anywhere(block: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "BLOCK", block)
    lines = [line(flat(1))] + [odd + line(flat(200 + i)) for i, odd in enumerate(FLAT_ODD.values())]
    assert_same_read(_odd_file(tmp_path, lines), monkeypatch)


def test_flat_gate_skips_exactly_the_unwanted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line(flat(i, EventID=(4688, 4624, "4688", "0x1")[i % 4])) for i in range(40)]
    path = _odd_file(tmp_path, lines)
    gated, g_stats, gate = read_file(path, True, monkeypatch, lambda channel, eid: eid == 4688)
    whole, w_stats, _ = read_file(path, False, monkeypatch)
    kept = [e for e in whole if e.fields["EventID"] in (4688, "0x1")]
    assert [(e.record_id, e.fields) for e in gated] == [(e.record_id, e.fields) for e in kept]
    assert g_stats.events == w_stats.events and g_stats.errors == w_stats.errors
    assert gate.skipped == 10


def test_simulator_output_reads_as_the_python_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scmwatch.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "all", "--out", str(out), "--events", "3000", "--seed", "11"]) == 0
    files = sorted(f for f in out.rglob("*.jsonl") if f.name != "labels.jsonl")
    assert files
    total = 0
    for f in files:
        total += len(assert_same_read(f, monkeypatch))
    assert total > 2000
