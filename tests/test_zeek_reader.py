"""Zeek logs read as Zeek writes them: hand-written lines for each rule of the format, the hostile
ones of issue 11, and every log Zeek itself wrote in ``../shared/corpora/zeek-real`` (skipped
cleanly when absent), in TSV and in the JSON Zeek would write for the same rows."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from paths import SHARED
from scmwatch.alerts import event_dict
from scmwatch.events import ReadStats, iter_events
from scmwatch.events.zeek_reader import zeek_log_type
from scmwatch.rules import pack_paths
from scmwatch.sigma import Engine, load_rules

ZEEK_REAL = SHARED / "corpora" / "zeek-real"
HEADER = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\t{path}\n"


def tsv(path: str, fields: list[tuple[str, str]], *rows: list[str]) -> str:
    head = HEADER.format(path=path) + "#fields\t" + "\t".join(n for n, _ in fields) + "\n"
    head += "#types\t" + "\t".join(t for _, t in fields) + "\n"
    return head + "".join("\t".join(r) + "\n" for r in rows)


def read(tmp_path: Path, name: str, text: str | bytes) -> tuple[list[dict], ReadStats]:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    stats = ReadStats()
    return [e.fields for e in iter_events([str(path)], stats)], stats


SMB_FIELDS = [
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("fuid", "string"), ("action", "enum"), ("path", "string"), ("name", "string"),
    ("size", "count"), ("prev_name", "string"), ("times.modified", "time"),
]  # fmt: skip
SMB_ROW = ["1714557600.25", "C1", "10.0.0.5", "50124", "10.0.0.9", "445", "-", "SMB::FILE_WRITE"]
SMB_JSON = {
    "ts": 1714557600.25,
    "uid": "C1",
    "id.orig_h": "10.0.0.5",
    "id.orig_p": 50124,
    "id.resp_h": "10.0.0.9",
    "id.resp_p": 445,
    "action": "SMB::FILE_WRITE",
}


def test_tsv_escapes_undone_and_json_of_the_same_row_is_the_same_event(tmp_path: Path) -> None:
    row = SMB_ROW + [
        "\\\\\\\\10.0.0.9\\\\C$",
        "windows\\\\temp\\\\caf\\xc3\\xa9.exe",
        "4096",
        "\\x2d",
        "1714557600.1",
    ]
    (t,), stats = read(tmp_path, "smb_files.log", tsv("smb_files", SMB_FIELDS, row))
    assert not stats.errors
    assert t["path"] == "\\\\10.0.0.9\\C$"  # \\ is one backslash
    assert t["name"] == "windows\\temp\\café.exe"  # \xHH bytes, UTF-8 written byte by byte
    assert t["prev_name"] == "-"  # \x2d is a literal '-', not the unset mark
    assert "fuid" not in t  # '-' is unset: left out, as Zeek's JSON leaves it out
    obj = dict(SMB_JSON, path="\\\\10.0.0.9\\C$", name="windows\\temp\\café.exe", size=4096, prev_name="-")
    obj["times.modified"] = 1714557600.1
    (j,), stats = read(tmp_path, "HOST1_smb_files.log", json.dumps(obj) + "\n")
    assert not stats.errors and j == t
    assert t["Channel"] == "zeek:smb_files" and t["Computer"] == "10.0.0.9"
    assert t["TimeCreated"] == "2024-05-01T10:00:00.250000Z"


def test_sliver_rule_fires_on_tsv_as_on_json(tmp_path: Path) -> None:
    engine = Engine(load_rules(pack_paths()))
    row = SMB_ROW + ["\\\\\\\\10.0.0.9\\\\C$", "windows\\\\temp\\\\xkcdhvbm.exe", "4096", "-", "-"]
    (t,), _ = read(tmp_path, "smb_files.log", tsv("smb_files", SMB_FIELDS, row))
    obj = dict(
        SMB_JSON, _path="smb_files", path="\\\\10.0.0.9\\C$", name="windows\\temp\\xkcdhvbm.exe", size=4096
    )
    (j,), _ = read(tmp_path, "x.json", json.dumps(obj))
    from scmwatch.events.model import Event

    names = [{r.name for r in engine.match(Event(f, "x", 1, "zeek"))} for f in (t, j)]
    assert "zeek_sliver_temp_binary_written" in names[0]
    assert names[0] == names[1]


def test_empty_sets_strings_booleans_and_escaped_set_separators(tmp_path: Path) -> None:
    fields = [("ts", "time"), ("uid", "string"), ("tags", "set[string]"), ("note", "string"),
              ("ok", "bool"), ("nums", "vector[count]"), ("rtt", "interval")]  # fmt: skip
    rows = (
        ["1.5", "C1", "(empty)", "(empty)", "T", "1,2", "0.25"],
        ["2.5", "C2", "a\\x2cb,c", "\\x28empty)", "F", "-", "-"],
    )
    (a, b), stats = read(tmp_path, "weird.log", tsv("weird", fields, *rows))
    assert not stats.errors
    assert (
        a["tags"] == [] and a["note"] == "" and a["ok"] is True and a["nums"] == [1, 2] and a["rtt"] == 0.25
    )
    assert b["tags"] == ["a,b", "c"] and b["note"] == "(empty)" and b["ok"] is False and "nums" not in b


@pytest.mark.parametrize(
    "ts",
    [
        1714557600.25,
        1714557600250,
        "1714557600.25",
        "2024-05-01T10:00:00.25Z",
        "2024-05-01T12:00:00.250+02:00",
    ],
)
def test_json_times_seconds_millis_iso(tmp_path: Path, ts: object) -> None:
    (f,), stats = read(tmp_path, "conn.log", json.dumps({"ts": ts, "uid": "C1", "id_resp_h": "10.0.0.9"}))
    assert not stats.errors
    assert f["TimeCreated"] == "2024-05-01T10:00:00.250000Z" and f["ts"] == 1714557600.25
    assert f["id.resp_h"] == "10.0.0.9" and f["Computer"] == "10.0.0.9"  # '_' as scope separator


@pytest.mark.parametrize("ts", ["1e20", "1e300", "-1e20", "99999999999999999999999"])
def test_absurd_times_are_one_counted_problem_each_and_the_rest_is_read(tmp_path: Path, ts: str) -> None:
    rows = ([ts, "C1"], ["1714557600", "C2"], [ts, "C3"])
    events, stats = read(tmp_path, "conn.log", tsv("conn", [("ts", "time"), ("uid", "string")], *rows))
    assert [e["uid"] for e in events] == ["C1", "C2", "C3"]
    assert "TimeCreated" not in events[0] and events[1]["TimeCreated"].startswith("2024-05-01")
    assert stats.errors == {"zeek": 2}
    lines = "".join(json.dumps({"_path": "conn", "ts": float(ts), "uid": u}) + "\n" for u in ("C1", "C2"))
    events, stats = read(tmp_path, "c.json", lines)
    assert len(events) == 2 and stats.errors == {"zeek": 2}


@pytest.mark.parametrize(
    "line", ["#separator ", "#separator", "#separator \\xZZ", "#separator \\x0", "#separator \\"]
)
def test_empty_or_invalid_separator_is_one_problem_not_an_abort(tmp_path: Path, line: str) -> None:
    text = line + "\n#path\tconn\n#fields\tts\tuid\n#types\ttime\tstring\n1714557600\tC1\n"
    events, stats = read(tmp_path, "conn.log", text)
    assert [e["uid"] for e in events] == ["C1"]  # Zeek's default tab kept
    assert stats.errors == {"zeek": 1}


def test_log_type_from_path_stream_and_file_names(tmp_path: Path) -> None:
    assert zeek_log_type("/x/dce_rpc.00:00:00-01:00:00.log.gz") == "dce_rpc"
    assert zeek_log_type("HOST1_dce_rpc.log") == "dce_rpc"
    assert zeek_log_type("scripts.base.protocols.smb.smb2__smb_files.log") == "smb_files"
    assert zeek_log_type("capture.log") is None
    lines = [
        {"_path": "dce_rpc", "ts": 1, "uid": "a"},
        {"@stream": "smb_mapping", "@system": "sensor1", "@proc": "zeek", "ts": 2, "uid": "b"},
        {"ts": 3, "uid": "c"},  # no type in the line, and the file name names none
    ]
    events, stats = read(tmp_path, "combined.log", "".join(json.dumps(x) + "\n" for x in lines))
    assert [e["Channel"] for e in events] == ["zeek:dce_rpc", "zeek:smb_mapping"]
    assert "@system" not in events[1]
    assert stats.errors == {"zeek": 1}  # counted and reported, not zeek:unknown


def test_files_log_source_column_is_kept_beside_provenance(tmp_path: Path) -> None:
    obj = {
        "_path": "files",
        "ts": 1714557600.0,
        "fuid": "F1",
        "source": "SMB",
        "mime_type": "application/x-dosexec",
    }
    (f,), _ = read(tmp_path, "files.json", json.dumps(obj))
    assert f["source"] == "SMB"
    from scmwatch.events.model import Event

    shown = event_dict(Event(f, "files.json", 1, "zeek"))
    assert shown["source"] == "SMB" and shown["_source"] == "files.json" and shown["record_id"] == 1


def test_zeek_cut_output_and_header_only_logs(tmp_path: Path) -> None:
    events, stats = read(
        tmp_path, "t__weird.log", "ts\tuid\tid.resp_p\tname\n1714557600.5\tC1\t445\tx\\x2dy\n"
    )
    assert not stats.errors and events[0]["id.resp_p"] == 445 and events[0]["name"] == "x-y"
    _, stats = read(tmp_path, "conn.log", "#separator \\x09\n#fields\tts\n#types\ttime\n")
    assert stats.errors == {"empty": 1}


# ------------------------------------------------------------------------------ real Zeek output


def _zeek_json(text: str) -> str:
    """The JSON Zeek writes for a TSV log's rows (unset fields left out, sets as arrays, T/F as
    booleans), built here with Python's own escape decoder, independently of the reader."""
    sep, fields, types, path, out = "\t", [], [], None, []
    for line in text.splitlines():
        if line.startswith("#separator "):
            sep = codecs.escape_decode(line[11:].encode())[0].decode()
        elif line.startswith("#path" + sep):
            path = line.split(sep)[1]
        elif line.startswith("#fields" + sep):
            fields = line.split(sep)[1:]
        elif line.startswith("#types" + sep):
            types = line.split(sep)[1:]
        elif line and not line.startswith("#") and fields:
            obj: dict = {"_path": path}
            for name, kind, raw in zip(fields, types, line.split(sep), strict=True):
                if raw == "-":
                    continue
                obj[name] = _zeek_value(raw, kind)
            out.append(json.dumps(obj))
    return "".join(x + "\n" for x in out)


def _zeek_value(raw: str, kind: str) -> object:
    if kind.startswith(("set", "vector")):
        inner = kind[kind.index("[") + 1 : -1]
        return [] if raw == "(empty)" else [_zeek_value(x, inner) for x in raw.split(",")]
    if raw == "(empty)":
        return ""
    if kind == "bool":
        return raw == "T"
    try:
        if kind in ("count", "int", "port"):
            return int(raw)
        if kind in ("time", "interval", "double"):
            return float(raw)
    except ValueError:
        pass
    return codecs.escape_decode(raw.encode("latin-1", "backslashreplace"))[0].decode("utf-8", "replace")


def _is_log(path: Path) -> bool:
    head = path.read_bytes()[:4096]
    return b"\n#fields\t" in head or b"\nts\tuid\t" in head or head.lstrip().startswith(b"{")


def test_every_real_zeek_log_reads_without_error_and_tsv_equals_json(tmp_path: Path) -> None:
    if not ZEEK_REAL.is_dir():
        pytest.skip("../shared/corpora/zeek-real absent")
    files = sorted(p for p in ZEEK_REAL.rglob("*") if p.is_file() and p.name != "README.md")
    logs = [p for p in files if _is_log(p)]
    assert len(logs) >= 150
    total = compared = 0
    for path in logs:
        stats = ReadStats()
        events = [e.fields for e in iter_events([str(path)], stats)]
        assert not stats.errors, (path.name, dict(stats.errors), stats.first_errors[:1])
        assert events and all(e["Channel"] != "zeek:unknown" for e in events), path.name
        total += len(events)
        text = path.read_text(encoding="utf-8", errors="replace")
        if "#fields\t" in text:
            as_json = tmp_path / (zeek_log_type(path.name) or "x") / "from_tsv.json"
            as_json.parent.mkdir(exist_ok=True)
            as_json.write_text(_zeek_json(text))
            stats = ReadStats()
            again = [e.fields for e in iter_events([str(as_json)], stats)]
            assert not stats.errors and again == events, path.name
            compared += len(events)
    assert total >= 26000 and compared >= 400
    for path in set(files) - set(logs):  # Zeek's print output in btest: not a log, said so
        stats = ReadStats()
        assert not list(iter_events([str(path)], stats))
        assert set(stats.errors) <= {"format", "empty"}, path.name


def test_simulator_zeek_output_has_the_real_formats(tmp_path: Path) -> None:
    """svcctl over \\pipe\\ntsvcs, unset fields left out of JSON, SMB2 mappings without service or
    native_file_system, only the actions a stock Zeek logs in smb_files."""
    from scmwatch.simulate import Options, simulate

    out = tmp_path / "sim"
    simulate(Options(scenarios=["all"], out=out, events=2000, seed=5, hosts=5, labels=tmp_path / "labels"))
    logs = {p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in (out / "zeek").glob("*.log")}
    default = ("FILE_OPEN", "FILE_RENAME", "FILE_DELETE", "PRINT_OPEN", "PRINT_CLOSE")
    default_actions = {f"SMB::{a}" for a in default}
    assert logs["smb_files.log"] and {r["action"] for r in logs["smb_files.log"]} <= default_actions
    svcctl = [r for r in logs["dce_rpc.log"] if r["endpoint"] == "svcctl"]
    pipes = {r["named_pipe"] for r in svcctl if not r["named_pipe"].isdigit()}  # digits: RPC over TCP (port)
    assert svcctl and pipes == {"\\pipe\\ntsvcs"}
    assert logs["smb_mapping.log"]
    assert not [r for r in logs["smb_mapping.log"] if "service" in r or "native_file_system" in r]
    assert not [(n, r) for n, rows in logs.items() for r in rows if "-" in r.values()]
    stats = ReadStats()
    assert list(iter_events([str(out / "zeek")], stats)) and not stats.errors
