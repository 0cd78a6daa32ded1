"""Issue 11, reader side: hostile and damaged input never stops, hangs or blinds a hunt.

Every input is built here. Each bad input sits in one directory next to a good log: the run
must still report the good log's alerts, write its summary, count the bad input's problem by
kind, and exit 0 -- with ``--jobs 1`` and ``--jobs 2``, and in ``scmwatch events``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import threading
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

import evtxbuild
from scmwatch.alerts import Alert
from scmwatch.cli import main
from scmwatch.events import ReadStats, discover, json_reader, read, read_input
from scmwatch.events.model import MAX_EPOCH, MIN_EPOCH, format_time, parse_time
from scmwatch.sinks import FORMATS, open_sink

SERVICE = {"ServiceName": "PSEXESVC", "ImagePath": "%SystemRoot%\\PSEXESVC.exe",
           "ServiceType": "user mode service", "StartType": "demand start", "AccountName": "LocalSystem"}


def evtx_dump(time: Any = "2024-01-01T00:00:00.000000Z", rid: int = 1, computer: str = "HOST1",
              **data: Any) -> dict[str, Any]:
    return {"Event": {"System": {
        "Provider": {"#attributes": {"Name": "Service Control Manager"}}, "EventID": 7045,
        "TimeCreated": {"#attributes": {"SystemTime": time}}, "EventRecordID": rid, "Channel": "System",
        "Computer": computer}, "EventData": {**SERVICE, **data}}}


def xml_event(rid: str) -> str:
    data = "".join(f'<Data Name="{k}">{v}</Data>' for k, v in SERVICE.items())
    return (f"<Event><System><Provider Name='Service Control Manager'/><EventID>7045</EventID>"
            f"<TimeCreated SystemTime='2024-01-01T00:00:0{len(rid) % 10}.000000Z'/><EventRecordID>{rid}"
            f"</EventRecordID><Channel>System</Channel><Computer>HOST1</Computer></System>"
            f"<EventData>{data}</EventData></Event>")


def _zip_member_patched(member: bytes, flag: int = 0, method: int | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inner.json", member)
    raw = bytearray(buf.getvalue())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = raw.find(sig)
        raw[at + flag_at] |= flag
        if method is not None:
            struct.pack_into("<H", raw, at + method_at, method)
    return bytes(raw)


def pretty(*objs: Any) -> str:
    return "\n".join(json.dumps(o, indent=1) for o in objs) + "\n"


def ndjson(*objs: Any) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


DEEP = '{"a":' * 100_000 + "1" + "}" * 100_000
# name -> (bytes, the problem kind it must be counted as, or None when it reads cleanly)
BAD_INPUTS: dict[str, tuple[bytes, str | None]] = {
    "deep.json": ((DEEP + "\n" + pretty(evtx_dump(rid=2))).encode(), "json-object"),
    "deep.ndjson": ((ndjson(evtx_dump()) + DEEP + "\n" + ndjson(evtx_dump(rid=3))).encode(), "json-line"),
    "bigint.json": (pretty(evtx_dump()).replace('"EventRecordID": 1', '"EventRecordID": ' + "9" * 5000)
                    .encode(), "json-object"),
    "bigint.ndjson": ((ndjson(evtx_dump()) + '{"EventID": ' + "7" * 5000 + "}\n").encode(), "json-line"),
    "nan.json": (pretty(evtx_dump(x=float("nan")), evtx_dump(time=float("inf"), rid=2),
                        evtx_dump(time=float("-inf"), rid=3)).encode(), "time"),
    "numeric_times.json": (ndjson(evtx_dump(time=1e20), evtx_dump(time=1e300, rid=2),
                                  evtx_dump(time=-1e20, rid=3)).encode(), "time"),
    "ecs_times.json": (ndjson(*({"@timestamp": t, "winlog": {
        "event_id": 7045, "channel": "System", "computer_name": "HOST1", "event_data": SERVICE}}
        for t in (1e20, 1e300, -1e20))).encode(), "time"),
    "iso_offsets.json": (ndjson(evtx_dump(time="9999-12-31T23:59:59-05:00"),
                                evtx_dump(time="0001-01-01T00:00:00+05:00", rid=2)).encode(), "time"),
    "record_ids.xml": ((xml_event("abc") + xml_event("5") + xml_event("0x10")).encode(), None),
    "encrypted.zip": (_zip_member_patched(ndjson(evtx_dump()).encode(), flag=1), "unreadable"),
    "deflate64.zip": (_zip_member_patched(ndjson(evtx_dump()).encode(), method=9), "unreadable"),
    "surrogate.json": (pretty(evtx_dump(ServiceName="PSEX\ud800ESVC")).encode(), "encoding"),
    "surrogate.ndjson": (ndjson(evtx_dump(ImagePath="C:\\\udfff.exe")).encode(), "encoding"),
}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for name, (data, _kind) in BAD_INPUTS.items():
        (folder / name).write_bytes(data)
    (folder / "good.json").write_text(ndjson(evtx_dump(computer="GOODHOST")))
    return folder


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("jobs", "fmt"), [(1, "jsonl"), (2, "csv"), (1, "table")])
def test_hunt_survives_every_bad_record(hostile_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        jobs: int, fmt: str) -> None:
    out_file = tmp_path / "alerts.out"
    summary_file = tmp_path / "summary.json"
    code, _, err = _run(["hunt", str(hostile_dir), "--jobs", str(jobs), "--format", fmt, "-o", str(out_file),
                         "--summary", str(summary_file)], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    alerts = out_file.read_text(encoding="utf-8")
    assert "GOODHOST" in alerts  # the good file's alerts are all there
    assert "\ufffd" in alerts  # the surrogates were replaced, and the alert written
    summary = json.loads(summary_file.read_text())
    for name, (_data, kind) in BAD_INPUTS.items():
        if kind is not None:
            assert summary["errors"].get(kind), (name, kind, summary["errors"])
    assert "reader-error" not in summary["errors"]


def test_events_survives_every_bad_record(hostile_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["events", str(hostile_dir)], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert any(e.get("Computer") == "GOODHOST" for e in lines)
    xml = [e for e in lines if e["source"].endswith(".xml")]
    xml_ids = sorted(e["record_id"] for e in xml if e["record_id"] is not None)
    assert 5 in xml_ids and len(xml) == 3  # a numeric id stays provenance; text ones do not break sorting
    for kind in ("json-object", "json-line", "unreadable", "encoding"):
        assert kind in err
    code, out, err = _run(["events", str(hostile_dir), "--format", "table"], capsys)
    assert code == 0 and "GOODHOST" in out


def test_unextractable_member_named_is_one_line(hostile_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["hunt", str(hostile_dir / "encrypted.zip"), "--format", "jsonl"], capsys)
    assert "cannot extract this member" in err and "encrypted" in err
    assert "Traceback" not in err


def test_zip_without_members_or_with_a_nameless_one_is_reported(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    (tmp_path / "none.zip").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo(""), b"{}")  # a member without a name (found by fuzzing)
    raw = buf.getvalue()
    (tmp_path / "nameless.zip").write_bytes(raw)
    stats = ReadStats()
    assert not [e for inp in discover([str(tmp_path)], stats) for e in read_input(inp, stats)]
    assert stats.errors == {"empty": 1} and "none.zip" in stats.first_errors[0].source
    assert stats.files_skipped == 1  # the nameless member: not a log name


# --------------------------------------------------------------------------------------------
# times


@pytest.mark.parametrize("value", [1e20, 1e300, -1e20, float("nan"), float("inf"), float("-inf"), 10**400,
                                   "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "x", "1e20"])
def test_unusable_times_are_zero_never_an_exception(value: Any) -> None:
    assert parse_time(value) == 0.0


def test_format_time_prints_every_time_it_is_given() -> None:
    assert format_time(1551604828.621489) == "2019-03-03T09:20:28.621489Z"
    assert format_time(MIN_EPOCH).startswith("0001-01-02T")
    assert format_time(MAX_EPOCH).startswith("9999-12-30T")
    assert format_time(1e300) == format_time(MAX_EPOCH) and format_time(float("nan"))


# --------------------------------------------------------------------------------------------
# lone surrogates: replaced, counted, and every output format writes the alert


def test_lone_surrogates_reach_no_output_raw(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(ndjson(evtx_dump(ServiceName="a\ud800b", **{"K\udc00": "v"})) +
                    pretty(evtx_dump(rid=2, ImagePath="\udbff")))
    stats = ReadStats()
    events = [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    assert [e.fields["ServiceName"] for e in events] == ["a\ufffdb", "PSEXESVC"]
    assert events[0].fields["K\ufffd"] == "v" and events[1].fields["ImagePath"] == "\ufffd"
    assert stats.errors["encoding"] == 3
    for fmt in FORMATS:
        buf = io.StringIO()
        sink = open_sink(fmt, buf, {}, color=False)
        for ev in events:
            sink.write(Alert("r", "t", "high", "", [], ev))
        sink.close()
        buf.getvalue().encode("utf-8")
    orjson.dumps(events[0].fields)


def test_nesting_past_the_cap_is_one_problem(tmp_path: Path) -> None:
    deep: Any = "x"
    for _ in range(150):  # orjson and the stream parser both accept this; the sinks would not
        deep = {"k": deep}
    path = tmp_path / "d.json"
    path.write_text(ndjson(evtx_dump(Nested=deep), evtx_dump(rid=2)))
    stats = ReadStats()
    events = [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    assert len(events) == 1 and stats.errors["json-line"] == 1
    assert "nested deeper than 100 levels" in stats.first_errors[0].message


# --------------------------------------------------------------------------------------------
# special files and symlink loops


def test_fifo_in_a_directory_is_skipped_and_counted(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "pipe.json")  # nobody ever writes to it: opening it would block forever
    (tmp_path / "good.json").write_text(ndjson(evtx_dump()))
    code, out, err = _run(["events", str(tmp_path)], capsys)
    assert code == 0 and "PSEXESVC" in out
    assert "pipe.json: special-file: not a regular file" in err


def test_named_fifo_without_writer_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "PIPE_IDLE", 0.3)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    stats = ReadStats()
    events = [e for inp in discover([str(fifo)], stats) for e in read_input(inp, stats)]
    assert events == [] and stats.exit_code == 1
    assert "no data for 0.3 s" in stats.first_errors[0].message


def test_named_pipe_with_a_writer_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    payload = ndjson(evtx_dump(), evtx_dump(rid=2)).encode()

    def write() -> None:
        with open(fifo, "wb") as fh:
            fh.write(payload)

    writer = threading.Thread(target=write)
    writer.start()
    stats = ReadStats()
    events = [e for inp in discover([str(fifo)], stats) for e in read_input(inp, stats)]
    writer.join(timeout=10)
    assert len(events) == 2 and not stats.errors


def test_named_device_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["events", "/dev/zero"], capsys)  # would never end
    assert code == 1 and "not a regular file, directory or pipe" in err


def test_symlink_loop_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    code, _, err = _run(["events", str(tmp_path / "a.json")], capsys)
    assert code == 1 and "a.json: unreadable: symlink loop" in err
    code, _, err = _run(["events", str(tmp_path)], capsys)
    assert "symlink loop" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# JSON: linear whatever the input


class _CountingDecoder(json.JSONDecoder):
    scanned = 0

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        _CountingDecoder.scanned += len(s) - idx
        return super().raw_decode(s, idx)


def test_unterminated_string_in_gz_is_read_in_linear_work(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder is retried on a growing buffer: the work it is given must stay within a small
    multiple of the input (it was quadratic: 4/8/16 MB took 0.15/0.67/2.9 s)."""
    monkeypatch.setattr(json_reader.json, "JSONDecoder", _CountingDecoder)
    monkeypatch.setattr(json_reader, "MAX_OBJECT", 4 << 20)
    size = 6 << 20
    path = tmp_path / "u.json.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(pretty(evtx_dump()).encode() + b'{"a": "' + b"x" * size + b"\n")
        fh.write(pretty(evtx_dump(rid=2)).encode())
    _CountingDecoder.scanned = 0
    stats = ReadStats()
    events = [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    assert [e.record_id for e in events] == [1, pretty(evtx_dump()).count("\n") + 2]
    assert stats.errors["json-object"] == 1
    assert "larger than 4 MiB" in stats.first_errors[0].message
    assert _CountingDecoder.scanned < 4 * (4 << 20)  # quadratic: ~32x


def test_ndjson_line_longer_than_the_cap_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_reader, "MAX_OBJECT", 1 << 20)
    path = tmp_path / "l.json"
    path.write_bytes(ndjson(evtx_dump()).encode() + b'{"a": "' + b"y" * (3 << 20) + b'"}\n' +
                     ndjson(evtx_dump(rid=2)).encode())
    stats = ReadStats()
    events = [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    assert [e.record_id for e in events] == [1, 3]
    assert "longer than 1 MiB" in stats.first_errors[0].message and stats.first_errors[0].record == 2


def test_a_million_broken_lines_do_not_flood_stderr(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(ndjson(evtx_dump()) + "{x\n" * 5000)
    lines: list[str] = []
    stats = ReadStats(on_error=lambda err: lines.append(err.line()))
    assert len([e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]) == 1
    assert stats.errors["json-line"] == 5000 and len(lines) == 100
    assert lines[-1].endswith("(further json-line problems of this input are counted only)")


def test_json_without_any_object_says_so(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("[[], []]\n")
    stats = ReadStats()
    assert not [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    assert stats.errors["json-not-event"] == 1


# --------------------------------------------------------------------------------------------
# XML


def test_xml_other_elements_are_dropped_as_they_stream(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text("<Events>" + "<x/>" * 100_000 + xml_event("1") + "<y><z/></y>" * 10_000 + "</Events>")
    stats = ReadStats()
    tracemalloc.start()
    try:
        events = [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(events) == 1 and stats.errors == {"xml": 120_000}  # each one counted, one line
    assert peak < 4 << 20  # holding the 120,000 elements took ~20 MB


def test_xml_without_event_warns(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text("<x/>" * 100)
    stats = ReadStats()
    assert not [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)]
    assert "no <Event> element" in stats.first_errors[-1].message


# --------------------------------------------------------------------------------------------
# EVTX: record loss is reported, compressed EVTX is capped


def _read_evtx(tmp_path: Path, data: bytes, name: str = "t.evtx") -> tuple[list[Any], ReadStats]:
    path = tmp_path / name
    path.write_bytes(data)
    stats = ReadStats()
    return [e for inp in discover([str(path)], stats) for e in read_input(inp, stats)], stats


def _messages(stats: ReadStats) -> list[str]:
    return [f"{e.kind}: {e.message}" for e in stats.first_errors]


def test_built_evtx_reads_clean(tmp_path: Path) -> None:
    chunks = [evtxbuild.chunk(evtxbuild.records(1, 40), 1, 40),
              evtxbuild.chunk(evtxbuild.records(41, 20), 41, 60)]
    # a preallocated, never written chunk after the declared ones is normal, not a loss
    events, stats = _read_evtx(tmp_path, evtxbuild.evtx_file(chunks + [bytes(evtxbuild.CHUNK)], declared=2))
    assert [e.record_id for e in events] == list(range(1, 61))
    assert not stats.errors


@pytest.mark.parametrize("bit", [0, 12, 31])
def test_bit_flip_in_a_record_size_reports_the_lost_records(tmp_path: Path, bit: int) -> None:
    body = bytearray(evtxbuild.records(1, 30))
    at = evtxbuild.RECORDS_AT
    for _ in range(9):  # to record 10
        at += struct.unpack_from("<I", body, at - evtxbuild.RECORDS_AT + 4)[0]
    off = at - evtxbuild.RECORDS_AT + 4
    struct.pack_into("<I", body, off, struct.unpack_from("<I", body, off)[0] ^ (1 << bit))
    data = evtxbuild.evtx_file([evtxbuild.chunk(bytes(body), 1, 30),
                                evtxbuild.chunk(evtxbuild.records(31, 5), 31, 35)])
    events, stats = _read_evtx(tmp_path, data)
    read_ids = {e.record_id for e in events}
    assert set(range(31, 36)) <= read_ids  # the next chunk is read
    lost = sorted(set(range(1, 31)) - read_ids)
    assert lost and lost[-1] == 30
    gap = [m for m in _messages(stats) if "of chunk 1 not read" in m]
    assert gap, _messages(stats)
    assert f"-{lost[-1]} of chunk 1" in gap[0]


def test_zeroed_chunk_inside_the_declared_ones_is_reported(tmp_path: Path) -> None:
    chunks = [evtxbuild.chunk(evtxbuild.records(1, 10), 1, 10), bytes(evtxbuild.CHUNK),
              evtxbuild.chunk(evtxbuild.records(21, 10), 21, 30)]
    events, stats = _read_evtx(tmp_path, evtxbuild.evtx_file(chunks))
    assert len(events) == 20
    assert "evtx-chunk: chunk 2 has no valid chunk header: its records 11-20 are lost" in _messages(stats)


def test_chunk_header_with_an_absurd_range_is_reported_not_counted_lost(tmp_path: Path) -> None:
    data = evtxbuild.evtx_file([evtxbuild.chunk(evtxbuild.records(1, 5), 1, 10**9)], next_id=6)
    events, stats = _read_evtx(tmp_path, data)
    assert len(events) == 5
    assert _messages(stats) == ["evtx-chunk: chunk 1 header lists records 1-1000000000, more than a chunk "
                                "can hold: damaged, its records not checked"]


def test_evtx_with_no_readable_chunk_is_reported(tmp_path: Path) -> None:
    data = evtxbuild.evtx_file([bytes(evtxbuild.CHUNK)] * 2)
    events, stats = _read_evtx(tmp_path, data)
    assert not events
    assert any(m.startswith("evtx-chunk: no readable chunk") for m in _messages(stats))


def test_evtx_record_nested_past_the_cap_is_one_problem(tmp_path: Path) -> None:
    body = evtxbuild.record(1, evtxbuild.RECORDS_AT)
    body += evtxbuild.record(2, evtxbuild.RECORDS_AT + len(body), nested=300)  # orjson's writer stops at 255
    body += evtxbuild.record(3, evtxbuild.RECORDS_AT + len(body))
    events, stats = _read_evtx(tmp_path, evtxbuild.evtx_file([evtxbuild.chunk(body, 1, 3)]))
    assert [e.record_id for e in events] == [1, 3]
    assert _messages(stats) == ["evtx-record: nested deeper than 100 levels"]
    for ev in events:
        orjson.dumps(ev.fields)


def test_compressed_evtx_inflation_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "RATIO_FLOOR", 1 << 20)
    bomb = evtxbuild.simple_file(3) + bytes(8 << 20)  # zeros: ~1,000x
    path = tmp_path / "bomb.evtx.gz"
    path.write_bytes(gzip.compress(bomb))
    (tmp_path / "ok.evtx.gz").write_bytes(gzip.compress(evtxbuild.simple_file(3)))
    stats = ReadStats()
    events = [e for inp in discover([str(tmp_path)], stats) for e in read_input(inp, stats)]
    assert len(events) == 3  # the small one is read
    assert stats.errors["inflate-cap"] == 1
    assert "decompression bomb" in next(e.message for e in stats.first_errors if e.kind == "inflate-cap")
