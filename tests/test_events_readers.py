"""Readers and normalization on the project's own fixtures (no ../shared needed)."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import orjson
import pytest

from paths import FIXTURES
from scmwatch.events import ReadStats, iter_events
from scmwatch.events.model import parse_time

EV = FIXTURES / "events"


def read(*paths: Path | str) -> tuple[list, ReadStats]:
    stats = ReadStats()
    events = list(iter_events([str(p) for p in paths], stats))
    return events, stats


def only(events: list, event_id: int):
    found = [e for e in events if e.fields.get("EventID") == event_id]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    "name",
    [
        "security_4688.xml",
        "security_4688_rooted.xml",
        "security_4688_ecs.ndjson",
        "security_4688_flat.ndjson",
        "security_4688_evtxdump.json",
    ],
)
def test_same_4688_from_every_format(name: str) -> None:
    events, stats = read(EV / name)
    assert not stats.errors
    ev = only(events, 4688)
    f = ev.fields
    assert f["EventID"] == 4688 and isinstance(f["EventID"], int)
    assert f["Channel"] == "Security"
    assert f["Computer"] == "WS1.corp.local"
    assert f["NewProcessName"] == "C:\\Windows\\System32\\cmd.exe"
    assert f["ParentProcessName"] == "C:\\Windows\\System32\\services.exe"
    # trailing space kept: rules with endswith depend on exact text
    assert f["CommandLine"] == "cmd.exe /c echo hello > \\\\127.0.0.1\\C$\\__output 2>&1 "
    assert f["EventRecordID"] == 5501
    assert f["Provider_Name"] == "Microsoft-Windows-Security-Auditing"
    assert abs(ev.time - parse_time("2024-05-01T10:00:00.123Z")) < 0.001
    assert f["TimeCreated"].endswith("Z") and len(f["TimeCreated"]) == 27
    assert ev.source == str(EV / name)
    assert ev.record_id is not None


def test_xml_system_attributes_and_types() -> None:
    events, _ = read(EV / "security_4688.xml")
    ev = only(events, 7045)
    f = ev.fields
    assert f["EventID_Qualifiers"] == 16384
    assert f["ProcessID"] == 640 and f["ThreadID"] == 700
    assert f["UserID"] == "S-1-5-18"
    assert f["Provider_EventSourceName"] == "Service Control Manager"
    assert f["TimeCreated"] == "2024-05-01T10:00:01.000000Z"
    assert f["ImagePath"].startswith("%COMSPEC% /Q /c echo whoami ^> \\\\127.0.0.1\\C$\\__output")
    assert ev.record_id == 901 and ev.fmt == "xml"
    assert "Message" not in f  # RenderingInfo is presentation, not data


def test_xml_space_stripped_names_unnamed_data_userdata_and_empty_values() -> None:
    events, stats = read(EV / "security_4688_rooted.xml")
    assert stats.events == 3 and not stats.errors
    assert only(events, 4688).fields["EmptyOne"] == ""
    defender = only(events, 1116).fields
    assert defender["ThreatName"] == "HackTool:Win32/PsExec"
    assert defender["Data"] == ["unnamed-1", "unnamed-2"]
    wmi = only(events, 5858).fields
    assert wmi["Operation"].startswith("Start IWbemServices::ExecQuery")


def test_evtxdump_concatenated_objects_and_qualifiers() -> None:
    events, stats = read(EV / "security_4688_evtxdump.json")
    assert [e.fields["EventID"] for e in events] == [4688, 7045]
    assert events[1].fields["EventID_Qualifiers"] == 16384
    assert [e.record_id for e in events] == [1, 22]  # line where each object starts
    assert events[0].fields["Correlation"] is None


def test_json_array_and_string_event_id() -> None:
    events, stats = read(EV / "array.json")
    assert [e.fields["EventID"] for e in events] == [7045, 4697]
    assert events[1].fields["ServiceStartType"] == 3
    assert events[1].fields["TimeCreated"] == "2024-05-01T11:00:00.500000Z"


def test_zeek_tsv_dce_rpc() -> None:
    events, stats = read(EV / "dce_rpc.log")
    assert not stats.errors
    assert [e.fields["operation"] for e in events] == ["CreateServiceW", "StartServiceW"]
    first, second = (e.fields for e in events)
    assert first["Channel"] == "zeek:dce_rpc" and first["endpoint"] == "svcctl"
    assert first["Computer"] == "10.0.0.20" and first["id.orig_h"] == "10.0.0.5"
    assert first["id.resp_p"] == 445
    assert first["TimeCreated"] == "2024-05-01T10:00:00.123456Z"
    assert "rtt" not in second  # unset field '-' is missing, not the text '-'
    assert events[0].record_id == 9 and events[0].fmt == "zeek"


def test_zeek_json_log_named_by_file() -> None:
    events, _ = read(EV / "smb_files.log")
    (ev,) = events
    assert ev.fields["Channel"] == "zeek:smb_files"
    assert ev.fields["name"] == "PSEXESVC.exe"
    assert ev.fmt == "zeek"


def test_directory_walk_is_recursive_and_skips_non_logs(tmp_path: Path) -> None:
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    (sub / "x.ndjson").write_bytes((EV / "security_4688_flat.ndjson").read_bytes())
    (tmp_path / "README.md").write_text("not a log")
    events, stats = read(tmp_path)
    assert len(events) == 1 and stats.files == 1 and stats.files_skipped == 1
    assert stats.exit_code == 0


def test_gzip_and_zip_archives(tmp_path: Path) -> None:
    gz = tmp_path / "sec.ndjson.gz"
    gz.write_bytes(gzip.compress((EV / "security_4688_ecs.ndjson").read_bytes()))
    zpath = tmp_path / "bundle.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(EV / "security_4688.xml", "logs/sec.xml")
        zf.write(EV / "dce_rpc.log", "zeek/dce_rpc.log")
        zf.writestr("notes.txt", "hello")
    events, stats = read(gz, zpath)
    assert stats.errors == {}
    assert stats.files_skipped == 1  # notes.txt
    assert sorted(e.source for e in events) == sorted(
        [str(gz)] + [f"{zpath}!logs/sec.xml"] * 2 + [f"{zpath}!zeek/dce_rpc.log"] * 2
    )
    from_zip = [e for e in events if e.source == f"{zpath}!logs/sec.xml"]
    assert only(from_zip, 4688).fields["NewProcessName"].endswith("cmd.exe")


def test_utf16_json_and_xml(tmp_path: Path) -> None:
    j = tmp_path / "ps_export.json"
    j.write_bytes(
        b"\xff\xfe" + (EV / "array.json").read_text().replace("SRV2", "SRV2-\u00e9").encode("utf-16-le")
    )
    x = tmp_path / "wevtutil.xml"
    x.write_bytes((EV / "security_4688.xml").read_text().encode("utf-16"))
    events, stats = read(j, x)
    assert not stats.errors
    assert {e.fields["Computer"] for e in events} == {"SRV2-\u00e9", "WS1.corp.local"}
    assert len(events) == 4


# ---------------------------------------------------------------- bad input


def test_broken_json_line_is_counted_and_rest_read(tmp_path: Path) -> None:
    good = (EV / "security_4688_flat.ndjson").read_text().strip()
    p = tmp_path / "mixed.ndjson"
    p.write_text("\n".join([good, '{"EventID": 4688, "Channel": "Sec', good, "", good]) + "\n")
    events, stats = read(p)
    assert len(events) == 3
    assert stats.errors == {"json-line": 1}
    assert stats.first_errors[0].record == 2
    assert [e.record_id for e in events] == [1, 3, 5]


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    p = tmp_path / "latin1.ndjson"
    p.write_bytes(
        b'{"EventID": 7045, "Channel": "System", "ServiceName": "caf\xe9"}\n'
        b'{"EventID": 7045, "Channel": "System", "ServiceName": "ok"}\n'
    )
    events, stats = read(p)
    assert [e.fields["ServiceName"] for e in events] == ["caf\ufffd", "ok"]
    assert stats.errors == {"encoding": 1}


def test_binary_file_named_json(tmp_path: Path) -> None:
    p = tmp_path / "blob.json"
    p.write_bytes(bytes(range(256)) * 10)
    ok = tmp_path / "ok.ndjson"
    ok.write_bytes((EV / "security_4688_flat.ndjson").read_bytes())
    events, stats = read(p, ok)
    assert len(events) == 1
    assert stats.errors == {"format": 1}
    assert stats.files_failed == 1 and stats.exit_code == 1
    assert "blob.json" in stats.first_errors[0].line()


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    events, stats = read(empty, tmp_path / "nope.evtx")
    assert events == []
    assert stats.errors == {"empty": 1, "unreadable": 1}
    assert stats.exit_code == 1  # a named path could not be read at all


def test_json_without_event_shape_is_counted(tmp_path: Path) -> None:
    p = tmp_path / "other.ndjson"
    p.write_text('{"hello": 1}\n{"hello": 2}\n{"EventID": 1, "Channel": "x"}\n')
    events, stats = read(p)
    assert len(events) == 1
    assert stats.errors == {"json-not-event": 2}


def test_broken_object_in_concatenated_json_resyncs(tmp_path: Path) -> None:
    text = (EV / "security_4688_evtxdump.json").read_text()
    first, second = text.split("\n}\n{", 1)
    broken = first + "\n}\n" + '{\n  "Event": {"System": {"EventID": 1,,,\n}\n' + "{" + second
    p = tmp_path / "broken.json"
    p.write_text(broken)
    events, stats = read(p)
    assert [e.fields["EventID"] for e in events] == [4688, 7045]
    assert stats.errors == {"json-object": 1}


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    lines = (EV / "security_4688_flat.ndjson").read_bytes() * 2000
    p = tmp_path / "cut.ndjson.gz"
    data = gzip.compress(lines)
    p.write_bytes(data[: len(data) // 2])
    events, stats = read(p)
    assert 0 < len(events) < 2000
    assert stats.errors.get("unreadable") == 1


def test_large_stream_crosses_chunk_boundaries(tmp_path: Path) -> None:
    obj = orjson.loads(b"[" + (EV / "array.json").read_bytes().split(b"[", 1)[1])[0]
    buf = io.StringIO()
    for i in range(3000):  # pretty-printed, ~600 KB: many 64 KiB chunks
        obj["EventRecordID"] = i
        buf.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    p = tmp_path / "big.json"
    p.write_text(buf.getvalue())
    events, stats = read(p)
    assert [e.fields["EventRecordID"] for e in events] == list(range(3000))
    lines_per_obj = orjson.dumps(obj, option=orjson.OPT_INDENT_2).count(b"\n") + 1
    assert events[10].record_id == 10 * lines_per_obj + 1


def test_huge_field_is_kept_whole(tmp_path: Path) -> None:
    big = "A" * (5 << 20)
    p = tmp_path / "huge.ndjson"
    p.write_bytes(orjson.dumps({"EventID": 4104, "Channel": "x", "ScriptBlockText": big}) + b"\n")
    events, stats = read(p)
    assert events[0].fields["ScriptBlockText"] == big and not stats.errors


def test_invalid_utf8_in_pretty_json_is_replaced_and_counted(tmp_path: Path) -> None:
    p = tmp_path / "pretty.json"
    p.write_bytes(b'{\n  "EventID": 7045,\n  "Channel": "System",\n  "ServiceName": "caf\xe9\xe9"\n}\n')
    events, stats = read(p)
    assert [e.fields["ServiceName"] for e in events] == ["caf\ufffd\ufffd"]
    assert stats.errors == {"encoding": 2}


def test_ndjson_with_lines_longer_than_a_chunk_stays_line_oriented(tmp_path: Path) -> None:
    long_line = orjson.dumps({"EventID": 4104, "Channel": "x", "ScriptBlockText": "B" * 200_000})
    p = tmp_path / "long.ndjson"
    p.write_bytes(b"\n" + long_line + b"\n" + b'{"EventID": 1, "Chan\n' + long_line + b"\n")
    events, stats = read(p)
    assert [e.record_id for e in events] == [2, 4]
    assert stats.errors == {"json-line": 1}  # a line error, not a resync of a pretty-printed stream


def test_invalid_bytes_in_xml_are_replaced_and_counted(tmp_path: Path) -> None:
    p = tmp_path / "bad.xml"
    p.write_bytes((EV / "security_4688.xml").read_bytes().replace(b"BTOBTO", b"BTO\xff\xfeBTO"))
    events, stats = read(p)
    assert only(events, 7045).fields["ServiceName"] == "BTO\ufffd\ufffdBTO"
    assert stats.errors == {"encoding": 2}


def test_simulator_labels_file_is_skipped_not_read(tmp_path: Path) -> None:
    (tmp_path / "labels.jsonl").write_text('{"kind":"pack","rules_by_detection":{}}\n{"kind":"event"}\n')
    (tmp_path / "x.ndjson").write_bytes((EV / "security_4688_flat.ndjson").read_bytes())
    events, stats = read(tmp_path)
    assert len(events) == 1 and stats.files == 1 and stats.files_skipped == 1 and not stats.errors


ODD_RECORDS = [
    # EventID with Qualifiers, Provider with an unmapped attribute, Execution with ETW extras
    {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "P", "Odd": "x"}},
                "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7045},
                "Execution": {"#attributes": {"ProcessID": 4, "KernelTime": 9}},
                "Correlation": {"#attributes": {"ActivityID": "{A}"}},
                "Security": None,
                "Channel": "System",
                "Computer": "H",
                "Weird": {"#text": "t", "#attributes": {"a": 1}},
                "Empty": {},
            },
            "EventData": {
                "Threat Name": "x",
                "Channel": "collides",
                "Level": "overrides",
                "Nested": {"#text": "inner"},
                "Bare": {"#attributes": {"k": "v"}},
                "Kept": {"a": 1, "b": 2},
                "#attributes": {"Name": "drop"},
            },
        }
    },
    {"Event": {"System": {"EventID": "0x10", "Channel": "C"}, "EventData": {"Data": {"#text": ["a", "b"]}}}},
    {
        "Event": {
            "System": {"EventID": "4688"},
            "EventData": "just text",
            "UserData": {"Wrapper": {"Operation": "op", "#attributes": {"xmlns": "u"}}, "Loose": 5},
        }
    },
    {"Event": {"System": {"EventID": None}, "EventData": None}},
    {"Event": "not an object"},
    {"NoEvent": 1},
    # System children the streaming parser finishes after the last member (from_evtx_json)
    {
        "Event": {
            "System": {
                "TimeCreated": {"#attributes": {"SystemTime": "2020-01-01T00:00:00.000000Z"}},
                "NullText": {"#text": None, "#attributes": {"x": 1}},
                "NullAttrs": {"#attributes": None},
                "EmptyAttrs": {"#attributes": {}},
                "Extra": {"#attributes": {"a": 1}, "other": [1, {"b": 2}]},
                "Provider": {"#attributes": {"Name": "P", "Guid": "{G}", "EventSourceName": "S", "Z": "z"}},
                "EventID": 1,
            },
            "UserData": {"W": {"Channel": "from-user-data", "x": 1}},
        }
    },
]


@pytest.mark.parametrize("record", ODD_RECORDS, ids=range(len(ODD_RECORDS)))
def test_c_and_python_flatten_agree_on_odd_layouts(record: dict) -> None:
    from scmwatch.events import normalize

    expected = normalize.from_evtx_dict_py(orjson.loads(orjson.dumps(record)))
    if normalize._flatten is None:
        pytest.skip("the C extension was not built")
    assert normalize._flatten.from_evtx_dict(orjson.loads(orjson.dumps(record))) == expected
    # the JSON-text parser, compact and pretty-printed, gives the same values in the same order
    for text in (orjson.dumps(record), orjson.dumps(record, option=orjson.OPT_INDENT_2).decode()):
        got = normalize._flatten.from_evtx_json(text)
        assert got == expected and (got is None or list(got) == list(expected))


@pytest.mark.parametrize(
    "text",
    [
        '{"Event":{"System":{"Channel":"A","EventID":1,"Channel":"B"}}}',
        '{"Event":{"System":{"TimeCreated":{"#attributes":{"SystemTime":"t1"}},"TimeCreated":"t2"}}}',
        '{"Event":{"System":{"Provider":{"#attributes":{"Name":"a","Name":"b"}}}}}',
        '{"Event":{"System":{"Provider":{"#attributes":"text"}}}}',
        '{"Event":{"System":{"Provider":{"#text":"x","#text":"y"}}}}',
        '{"Event":{"System":{"Many":{"#attributes":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9}}}}}',
    ],
)
def test_json_parser_repeated_system_members_follow_the_dict_rule(text: str) -> None:
    """JSON objects with repeated names: the last one wins at the first one's position."""
    from scmwatch.events import normalize

    if normalize._flatten is None:
        pytest.skip("the C extension was not built")
    try:
        expected = normalize.from_evtx_json_py(text)
    except Exception as exc:  # noqa: BLE001 - the C parser must raise the same kind
        with pytest.raises(type(exc)):
            normalize._flatten.from_evtx_json(text)
        return
    got = normalize._flatten.from_evtx_json(text)
    assert got == expected and list(got) == list(expected)


def test_python_flatten_semantics_on_odd_layout() -> None:
    from scmwatch.events.normalize import from_evtx_dict_py

    f = from_evtx_dict_py(ODD_RECORDS[0])
    assert f["EventID"] == 7045 and f["EventID_Qualifiers"] == 16384
    assert f["Provider_Name"] == "P" and f["Provider_Odd"] == "x"
    assert f["ProcessID"] == 4 and f["Execution_KernelTime"] == 9
    assert f["Correlation_ActivityID"] == "{A}" and "Correlation" not in f
    assert f["Weird"] == "t" and f["Weird_a"] == 1 and f["Empty"] is None
    assert f["ThreatName"] == "x"
    assert f["Channel"] == "System" and f["EventData_Channel"] == "collides"  # System names are kept
    assert f["Level"] == "overrides"  # only the core System names are protected
    assert f["Nested"] == "inner" and f["Bare"] is None and f["Kept"] == {"a": 1, "b": 2}
    assert "Name" not in f
    assert from_evtx_dict_py(ODD_RECORDS[1])["EventID"] == "0x10"  # not a plain decimal: kept
    assert from_evtx_dict_py(ODD_RECORDS[1])["Data"] == ["a", "b"]
    third = from_evtx_dict_py(ODD_RECORDS[2])
    assert third["EventID"] == 4688 and third["Data"] == "just text" and third["Operation"] == "op"
    assert third["Loose"] == 5
    assert from_evtx_dict_py(ODD_RECORDS[4]) is None and from_evtx_dict_py(ODD_RECORDS[5]) is None
    assert from_evtx_dict_py([]) is None  # a top-level array: not an event (as in C)


def test_format_time_writes_the_strftime_text() -> None:
    """``format_time`` writes with ``isoformat`` what ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")``
    writes, for times from year 1000 to the end of the range, microseconds included."""
    import random
    from datetime import UTC, datetime

    from scmwatch.events.model import _YEAR_1000, MAX_EPOCH, format_time

    rng = random.Random(7)
    values = [rng.uniform(_YEAR_1000, MAX_EPOCH) for _ in range(20_000)]
    values += [rng.uniform(0, 4e9) for _ in range(20_000)]
    values += [_YEAR_1000, MAX_EPOCH, 0.0, 1e-6, 1551604828.621489]
    for v in values:
        want = datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert format_time(v) == want, v
    assert format_time(-1e20) == "0001-01-02T00:00:00.000000Z"


def test_canonical_epoch_in_c_equals_the_python_path() -> None:
    """``_flatten.canonical_epoch`` (parse_time's C path for the canonical text) gives what
    ``fromisoformat(text).timestamp()`` gives, and None, never a wrong time, for texts of that
    length that are no valid date (the Python path then decides)."""
    import random

    flatten = pytest.importorskip("scmwatch.events._flatten")
    from scmwatch.events.model import _fromiso, parse_time

    rng = random.Random(11)
    taken = 0
    for i in range(60_000):
        year = rng.randrange(1, 10_000) if i % 2 else rng.randrange(1960, 2100)
        month, day, hour = rng.randrange(0, 14), rng.randrange(0, 33), rng.randrange(0, 26)
        text = (f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{rng.randrange(0, 62):02d}:"
                f"{rng.randrange(0, 62):02d}.{rng.randrange(10**6):06d}Z")
        try:
            want = _fromiso(text).timestamp()
        except ValueError:
            want = None
        got = flatten.canonical_epoch(text)
        if got is not None:
            taken += 1
            assert got == want, text
        elif want is not None:
            assert abs(want) * 1e6 >= 2**53 - 1e6, text  # 2**53 microseconds from 1970 on: left to Python
    assert taken > 10_000
    for text in ("2019-03-03 09:20:28.621489Z", "2019-03-03T09:20:28.621489+", "2019-02-29T00:00:00.000000Z",
                 "2019-03-03T09:20:28.62148\u0667Z", "0000-01-01T00:00:00.000000Z"):
        assert flatten.canonical_epoch(text) is None, text
    assert flatten.canonical_epoch("2019-03-03T09:20:28.621489Z") == parse_time("2019-03-03T09:20:28.621489Z")
    assert flatten.canonical_epoch(b"2019-03-03T09:20:28.621489Z") is None
    assert parse_time("2024-02-29T23:59:59.999999Z") == _fromiso("2024-02-29T23:59:59.999999Z").timestamp()


def test_seven_digit_times_shortcut_equals_parse_and_print() -> None:
    """``iso_utc`` cuts Windows XML's 7th fraction digit instead of parsing and printing: the
    same result for every valid time 1970-2099; invalid ones stay as written."""
    import random
    from datetime import UTC, datetime

    from scmwatch.events.model import format_time, parse_time
    from scmwatch.events.normalize import iso_utc

    rng = random.Random(13)
    lo, hi = 0, int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
    for _ in range(20_000):
        day = datetime.fromtimestamp(rng.randrange(lo, hi), UTC).strftime("%Y-%m-%dT%H:%M:%S")
        value = f"{day}.{rng.randrange(10**7):07d}Z"
        assert iso_utc(value) == format_time(parse_time(value)), value
    for value in ("2024-13-01T00:00:00.0000000Z", "2024-02-30T10:00:00.1234567Z",
                  "2024-01-01T00:00:60.0000000Z"):
        assert iso_utc(value) == value
    odd = "2024-01-01T00:00:00.000000\u0667Z"  # not the shortcut's shape: parsed as before
    assert iso_utc(odd) == format_time(parse_time(odd)) == "2024-01-01T00:00:00.000000Z"

    def whole_datetime(value: str) -> str:  # the shortcut as it was: every field through datetime
        try:
            if not 1970 <= int(value[:4]) <= 2099:
                raise ValueError(value)
            datetime(*(int(value[a:b]) for a, b in ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19))))
        except ValueError:
            epoch = parse_time(value)
            return format_time(epoch) if epoch else value
        return value[:26] + "Z"

    for _ in range(5_000):  # out-of-range fields too: the pattern and the date memo must agree
        value = (f"{rng.randint(1969, 2100):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
                 f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}."
                 f"{rng.randrange(10**7):07d}Z")
        assert iso_utc(value) == whole_datetime(value), value


def test_parse_time_fast_path_equals_the_general_one() -> None:
    """The canonical text (what every reader writes) takes a shortcut: same value, same 0.0."""
    import random

    from scmwatch.events import model

    rng = random.Random(7)
    values = ["0001-01-01T00:00:00.000000Z", "0001-01-02T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z",
              "9999-12-30T00:00:00.000000Z", "1970-01-01T00:00:00.000000Z", "2024-02-29T12:00:00.000000Z",
              "2023-02-29T12:00:00.000000Z", "2024-13-01T00:00:00.000000Z", "2024-01-01T24:00:00.000000Z",
              "2024-01-01T23:60:00.000000Z", "2024-01-01T23:59:60.000000Z", "0000-01-01T00:00:00.000000Z",
              "2024-01-32T00:00:00.000000Z", "2024-00-10T00:00:00.000000Z"]
    for _ in range(2000):
        values.append(f"{rng.randint(1, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
                      f"{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}:{rng.randint(0, 60):02d}."
                      f"{rng.randint(0, 999999):06d}Z")
    for v in values:
        assert len(v) == 27 and model._CANONICAL(v)
        assert model.parse_time(v) == model._parse_general(v), v
