"""The simulator on its own: CLI, determinism, ordering, cross-event consistency, value forms."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from scmwatch.cli import main
from scmwatch.events import ReadStats, iter_events
from scmwatch.simulate import Options, load_all, simulate
from scmwatch.simulate.labels import read_labels

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("sim")
    labels = out.parent / "sim-labels.jsonl"
    simulate(Options(scenarios=["all"], out=out, events=8000, seed=5, hosts=8, labels=labels))
    return out, labels


@pytest.fixture(scope="module")
def events(dataset) -> list:
    out, _ = dataset
    return list(iter_events([str(out)], ReadStats()))


def test_list_names_every_scenario(capsys) -> None:
    assert main(["simulate", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(load_all())
    # the families the issue asks for are all there
    for name in [
        "psexec",
        "psexec-renamed",
        "impacket-psexec",
        "impacket-psexec-unc",
        "impacket-smbexec",
        "sc-remote",
        "sc-binpath",
        "nimexec",
        "winexe",
        "sliver-psexec",
        "metasploit-psexec",
        "mssql-service-control",
        "remote-registry",
        "hidden-service",
        "ms17-010",
        "wannamine",
        "powershell-new-service",
        "odd-path-service",
    ]:
        assert name in listed


def test_cli_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "no-such-scenario", "--out", str(tmp_path)]) == 2
    assert "unknown scenario 'no-such-scenario'" in capsys.readouterr().err
    assert main(["simulate", "psexec"]) == 2
    assert main(["simulate", "psexec", "--out", str(tmp_path), "--telemetry", "sysmon,etw"]) == 2
    assert main(["simulate", "psexec", "--out", str(tmp_path), "--start", "yesterday"]) == 2


def test_cli_writes_logs_and_labels(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    code = main(
        [
            "simulate",
            "psexec",
            "winexe",
            "--out",
            str(out),
            "--events",
            "500",
            "--hosts",
            "4",
            "--telemetry",
            "security,system,zeek",
        ]
    )
    assert code == 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert "labels.jsonl" in files
    assert any(f.startswith("zeek/") for f in files)
    assert not any("Sysmon" in f for f in files)  # telemetry filter
    ev, inst = read_labels(out / "labels.jsonl")
    assert {i["scenario"] for i in inst} == {"psexec", "winexe"}
    assert all(e["channel"] in ("Security", "System") or e["channel"].startswith("zeek/") for e in ev)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    runs = []
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        out = tmp_path / name
        simulate(
            Options(
                scenarios=["psexec", "nimexec"], out=out, events=3000, seed=seed, labels=out / "labels.jsonl"
            )
        )
        runs.append(_digest(out))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_files_are_time_ordered_with_increasing_record_ids(dataset) -> None:
    out, _ = dataset
    for path in out.rglob("*.jsonl"):
        if path.name == "labels.jsonl":
            continue
        rows = [orjson.loads(x) for x in path.read_bytes().splitlines()]
        times = [r["TimeCreated"] for r in rows]
        rids = [r["EventRecordID"] for r in rows]
        assert times == sorted(times), path
        assert rids == list(range(rids[0], rids[0] + len(rids))), path


def test_event_count_near_request(dataset, events) -> None:
    """--events is met by background; instances scheduled late in the timeline may add theirs on top."""
    _, labels = dataset
    labelled = len(read_labels(labels)[0])
    assert 8000 <= len(events) <= 8000 + labelled


def test_labels_point_at_the_events_they_describe(dataset) -> None:
    out, labels = dataset
    ev, inst = read_labels(labels)
    lines: dict[str, list[bytes]] = {}
    for e in ev:
        rows = lines.setdefault(e["file"], (out / e["file"]).read_bytes().splitlines())
        row = orjson.loads(rows[e["line"] - 1])
        if e["channel"].startswith("zeek/"):
            continue
        assert row["EventID"] == e["event_id"]
        assert row["Channel"] == e["channel"]
        assert row["Computer"] == e["computer"]
        assert row["EventRecordID"] == e["record_id"]
    counts = defaultdict(int)
    for e in ev:
        counts[e["instance"]] += 1
    assert all(counts[i["instance"]] == i["events"] > 0 for i in inst)


def _by(events, channel, eid):
    return [e.fields for e in events if e.fields.get("Channel") == channel and e.fields.get("EventID") == eid]


def test_remote_installs_join_to_their_network_logon(events) -> None:
    """4697.SubjectLogonId = TargetLogonId of a type-3 4624 on the same host (detections.md §0.2), and
    the 5145 svcctl of that session carries the same id and the source address."""
    logons = {(f["Computer"], f["TargetLogonId"]): f for f in _by(events, "Security", 4624)}
    shares = defaultdict(list)
    for f in _by(events, "Security", 5145):
        shares[(f["Computer"], f["SubjectLogonId"])].append(f)
    wfp = {
        (f["Computer"], f["DestAddress"])
        for f in _by(events, "Security", 5156)
        if f["Application"].endswith("\\services.exe") and f["Direction"] == "%%14592"
    }
    wmi = {f["Computer"] for f in _by(events, SYSMON, 1) if f["Image"].endswith("\\WmiPrvSE.exe")}
    remote = 0
    for f in _by(events, "Security", 4697):
        if f["SubjectLogonId"] == "0x3e7":
            continue
        logon = logons.get((f["Computer"], f["SubjectLogonId"]))
        assert logon is not None  # every install's session is explained by a logged logon
        if logon["LogonType"] == 2:  # an interactive admin's install (sc.exe / New-Service on the host)
            continue
        remote += 1
        assert logon["LogonType"] == 3
        svcctl = [
            s for s in shares[(f["Computer"], f["SubjectLogonId"])] if s["RelativeTargetName"] == "svcctl"
        ]
        assert all(s["IpAddress"] == logon["IpAddress"] for s in svcctl)
        if not svcctl:  # SCM over RPC/TCP (detections.md §0.7: services.exe accepted the address), or via WMI
            assert (f["Computer"], logon["IpAddress"]) in wfp or f["Computer"] in wmi
    assert remote >= 8


def test_process_tree_is_consistent(events) -> None:
    """Every Sysmon 1 parent is a process the host started earlier (or a core process)."""
    started: dict[tuple[str, str], int] = {}
    missing = 0
    for e in sorted(
        (e for e in events if e.fields.get("Channel") == SYSMON and e.fields["EventID"] == 1),
        key=lambda e: e.fields["TimeCreated"],
    ):
        f = e.fields
        started[(f["Computer"], f["ProcessGuid"])] = f["ProcessId"]
        parent = started.get((f["Computer"], f["ParentProcessGuid"]))
        if parent is None:
            missing += 1  # started before the log begins (services.exe, explorer.exe, ...)
        else:
            assert parent == f["ParentProcessId"]
    assert missing < len(started)


def test_values_as_windows_writes_them(events) -> None:
    for f in _by(events, "System", 7045):
        assert f["StartType"] in {"demand start", "auto start", "boot start", "system start", "disabled"}
        assert f["ServiceType"] in {"user mode service", "kernel mode driver"}
        assert f["EventID_Qualifiers"] == 16384
    for f in _by(events, "Security", 4697):
        assert isinstance(f["ServiceStartType"], int) and f["ServiceType"] in {"0x10", "0x1"}
    for f in _by(events, "Security", 5145):
        assert f["ShareName"].startswith("\\\\*\\")
        assert not f["RelativeTargetName"].startswith("\\")
        codes = f["AccessList"].split()
        assert codes and all(c.startswith("%%") for c in codes)
        assert ("%%4417" in codes) == bool(int(f["AccessMask"], 16) & 0x2)
    reg = [
        f
        for f in _by(events, SYSMON, 13)
        if f["TargetObject"].endswith("\\ImagePath") and "%" in f["Details"]
    ]
    assert reg and all("%%" in f["Details"] for f in reg)
    for f in _by(events, "Security", 4688):
        assert f["NewProcessId"].startswith("0x") and f["ProcessId"].startswith("0x")


def test_every_output_format_reads_back_the_same_events(tmp_path: Path) -> None:
    reads = {}
    for fmt in ("jsonl", "xml", "ecs"):
        out = tmp_path / fmt
        simulate(
            Options(scenarios=["all"], out=out, events=1500, seed=9, fmt=fmt, labels=tmp_path / f"{fmt}.l")
        )
        stats = ReadStats()
        evs = list(iter_events([str(out)], stats))
        assert not stats.errors, (fmt, dict(stats.errors))
        reads[fmt] = {
            (e.fields.get("Computer"), e.fields.get("Channel"), e.fields.get("EventRecordID")): e.fields
            for e in evs
            if e.fmt != "zeek"
        }
    base = reads["jsonl"]
    assert len(base) > 1500
    for fmt in ("xml", "ecs"):
        assert reads[fmt].keys() == base.keys()
        for key, fields in base.items():
            other = reads[fmt][key]
            assert other["EventID"] == fields["EventID"]
            assert other["TimeCreated"][:26] == fields["TimeCreated"][:26]
            for name in (
                "Image",
                "CommandLine",
                "ServiceName",
                "ImagePath",
                "RelativeTargetName",
                "AccessList",
                "TargetObject",
                "Details",
                "PipeName",
                "IpAddress",
                "SubjectLogonId",
            ):
                if name in fields:
                    assert str(other[name]) == str(fields[name]), (fmt, key, name)


def test_check_scores_a_hunt_against_the_labels(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["simulate", "psexec", "sc-binpath", "--out", str(out), "--events", "2000"]) == 0
    alerts = tmp_path / "alerts.jsonl"
    assert main(["hunt", str(out), "--format", "jsonl", "--output", str(alerts)]) == 0
    capsys.readouterr()
    assert main(["simulate", "--check", str(alerts), "--out", str(out)]) == 0
    assert "0 false positives, 0 unexpected, 0 missing" in capsys.readouterr().out
    # a pack that misses detections fails the check
    some = tmp_path / "some.jsonl"
    some.write_bytes(b"".join(alerts.read_bytes().splitlines(keepends=True)[:3]))
    assert main(["simulate", "--check", str(some), "--out", str(out)]) == 1
    assert "missing: {'detection'" in capsys.readouterr().out


def test_legacy_hosts_write_old_record_shapes(events) -> None:
    """WS0002 (Windows 7) and APP02 (2008 R2) log 4688 v1 without the parent and 4624 v0."""
    by_host = defaultdict(list)
    for f in _by(events, "Security", 4688):
        by_host[f["Computer"].split(".")[0]].append(f)
    legacy, modern = by_host["WS0002"], by_host["WS0001"]
    assert legacy and modern
    assert all("ParentProcessName" not in f and f["Version"] == 1 for f in legacy)
    assert all("ParentProcessName" in f and f["Version"] == 2 for f in modern)
    logons = [f for f in _by(events, "Security", 4624) if f["Computer"].startswith("WS0002.")]
    assert logons and all(f["Version"] == 0 and "ElevatedToken" not in f for f in logons)


def test_user_processes_carry_a_logged_logon_id(events) -> None:
    """Every process of a domain user's session has the LogonId of a 4624 on its host in the log
    (service accounts, such as SQL Server's virtual account, logged on at boot, before the log)."""
    logged = {(f["Computer"], f["TargetLogonId"]) for f in _by(events, "Security", 4624)}
    sessions = {(f["Computer"], f["SubjectLogonId"]) for f in _by(events, "Security", 4688)
                if f["SubjectLogonId"] not in ("0x3e7", "0x3e4", "0x3e5")
                and f["SubjectDomainName"] != "NT Service"}
    assert sessions and sessions <= logged, sorted(sessions - logged)[:5]


def test_attack_script_blocks_are_warnings(events, dataset) -> None:
    _, labels = dataset
    entries, _ = read_labels(labels)
    attack = {(e["file"], e["line"]) for e in entries if e["event_id"] == 4104}
    levels = {e.fields["Level"] for e in events
              if e.fields.get("EventID") == 4104 and (_rel(e.source, dataset[0]), e.record_id) in attack}
    benign = {e.fields["Level"] for e in events
              if e.fields.get("EventID") == 4104 and (_rel(e.source, dataset[0]), e.record_id) not in attack}
    assert levels == {3} and benign == {5}


def _rel(source: str, root: Path) -> str:
    return Path(source).relative_to(root).as_posix()
