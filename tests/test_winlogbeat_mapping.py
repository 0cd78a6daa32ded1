"""Winlogbeat module documents (hand-written in the shape the modules' processors produce), the
Elasticsearch export shapes, and GUID rendering: each mapped field comes back under its Windows name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paths import SHARED
from scmwatch.events import ReadStats, iter_events

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def _read(tmp_path: Path, *docs: dict) -> list[dict]:
    path = tmp_path / "export.ndjson"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    stats = ReadStats()
    events = [e.fields for e in iter_events([str(path)], stats)]
    assert not stats.errors, dict(stats.errors)
    return events


def _sysmon(eid: int, event_data: dict | None = None, **ecs: object) -> dict:
    doc: dict = {
        "@timestamp": "2024-05-01T10:00:00.123Z",
        "event": {"code": str(eid), "module": "sysmon", "provider": "Microsoft-Windows-Sysmon"},
        "winlog": {
            "channel": SYSMON,
            "event_id": str(eid),
            "computer_name": "WS1",
            "record_id": 7,
            "api": "wineventlog",
            "event_data": event_data or {},
            "opcode": "Info",
            "task": "Process Create (rule: ProcessCreate)",
            "version": 5,
        },
        "log": {"level": "information"},
    }
    doc.update(ecs)
    return doc


def test_sysmon_process_create_fields(tmp_path: Path) -> None:
    (f,) = _read(
        tmp_path,
        _sysmon(
            1,
            {"IntegrityLevel": "System", "TerminalSessionId": "0", "LogonId": "0x3e7"},
            process={
                "entity_id": "{7e0e8a4d-1b2c-6630-0a00-000000001200}",
                "pid": 4242,
                "executable": "C:\\Windows\\Temp\\PSEXESVC.exe",
                "command_line": "C:\\Windows\\PSEXESVC.exe",
                "working_directory": "C:\\Windows\\system32\\",
                "pe": {
                    "original_file_name": "psexesvc.exe",
                    "file_version": "2.34",
                    "description": "PsExec Service",
                    "product": "Sysinternals PsExec",
                    "company": "Sysinternals",
                },
                "parent": {
                    "entity_id": "{7e0e8a4d-1b2c-6630-0b00-000000001200}",
                    "pid": 640,
                    "executable": "C:\\Windows\\System32\\services.exe",
                    "command_line": "C:\\Windows\\system32\\services.exe",
                },
                "hash": {"sha256": "aabb", "md5": "ccdd"},
            },
            hash={"sha1": "0011", "md5": "ccdd", "sha256": "aabb", "imphash": "eeff"},
            user={"domain": "NT AUTHORITY", "name": "SYSTEM"},
            rule={"name": "technique_id=T1569.002"},
        ),
    )
    assert f["EventID"] == 1 and f["Channel"] == SYSMON
    assert f["Image"] == "C:\\Windows\\Temp\\PSEXESVC.exe"
    assert f["CommandLine"] == "C:\\Windows\\PSEXESVC.exe"
    assert f["CurrentDirectory"] == "C:\\Windows\\system32\\"
    assert f["OriginalFileName"] == "psexesvc.exe"
    assert (f["FileVersion"], f["Description"], f["Product"], f["Company"]) == (
        "2.34",
        "PsExec Service",
        "Sysinternals PsExec",
        "Sysinternals",
    )
    assert f["ProcessGuid"] == "{7E0E8A4D-1B2C-6630-0A00-000000001200}"
    assert f["ProcessId"] == 4242
    assert f["ParentProcessGuid"] == "{7E0E8A4D-1B2C-6630-0B00-000000001200}"
    assert f["ParentProcessId"] == 640
    assert f["ParentImage"] == "C:\\Windows\\System32\\services.exe"
    assert f["ParentCommandLine"] == "C:\\Windows\\system32\\services.exe"
    assert f["User"] == "NT AUTHORITY\\SYSTEM"
    assert f["Hashes"] == "SHA1=0011,MD5=CCDD,SHA256=AABB,IMPHASH=EEFF"
    assert f["RuleName"] == "technique_id=T1569.002"
    assert f["TerminalSessionId"] == 0 and f["LogonId"] == "0x3e7"
    # System values: names back to numbers where the name says the number, else absent
    assert f["Level"] == 4 and f["Opcode"] == 0 and f["Version"] == 5
    assert "Task" not in f and f["Keywords"] == "0x0"
    # time: @timestamp (the module's UtcTime) gives both TimeCreated and UtcTime
    assert f["TimeCreated"] == "2024-05-01T10:00:00.123000Z"
    assert f["UtcTime"] == "2024-05-01 10:00:00.123"


def test_sysmon_time_created_is_the_system_time_when_the_export_has_it(tmp_path: Path) -> None:
    doc = _sysmon(11, {"UtcTime": "2024-05-01 10:00:01.999"}, file={"path": "C:\\Windows\\x.exe"})
    doc["winlog"]["time_created"] = "2024-05-01T10:00:03.5Z"
    (f,) = _read(tmp_path, doc)
    assert f["TimeCreated"] == "2024-05-01T10:00:03.500000Z"
    assert f["UtcTime"] == "2024-05-01 10:00:01.999"  # kept as the field it is
    assert f["TargetFilename"] == "C:\\Windows\\x.exe"


def test_sysmon_network_dns_image_load_registry_pipe_and_access(tmp_path: Path) -> None:
    net, dns, dll, reg, pipe, access = _read(
        tmp_path,
        _sysmon(
            3,
            {"SourceIsIpv6": "false", "DestinationIsIpv6": "false", "SourcePortName": "-"},
            process={"executable": "C:\\Windows\\System32\\services.exe", "pid": 640},
            network={"transport": "tcp", "direction": "ingress", "protocol": "microsoft-ds"},
            source={"ip": "10.0.0.5", "port": 50123, "domain": "ATTACKER"},
            destination={"ip": "10.0.0.9", "port": 445, "domain": "WS1"},
            user={"domain": "NT AUTHORITY", "name": "SYSTEM"},
        ),
        _sysmon(
            22,
            {"QueryStatus": "0"},
            process={"executable": "C:\\x\\beacon.exe"},
            dns={
                "question": {"name": "evil.example"},
                "answers": [{"type": "CNAME", "data": "cdn.example"}, {"type": "A", "data": "203.0.113.7"}],
            },
        ),
        _sysmon(
            7,
            {},
            process={"executable": "C:\\Windows\\System32\\svchost.exe"},
            dll={
                "path": "C:\\Windows\\Temp\\evil.dll",
                "pe": {"original_file_name": "evil.dll", "company": "-"},
                "code_signature": {"signed": False, "status": "Unavailable"},
                "hash": {"sha256": "ab"},
            },
        ),
        _sysmon(
            13,
            {"EventType": "SetValue"},
            process={"executable": "C:\\Windows\\System32\\services.exe"},
            registry={
                "path": "HKLM\\System\\CurrentControlSet\\Services\\x\\ImagePath",
                "data": {"strings": ["C:\\x.exe"]},
            },
        ),
        _sysmon(
            17,
            {"EventType": "CreatePipe"},
            process={"executable": "C:\\p.exe"},
            file={"name": "\\RemCom_communicaton"},
        ),
        _sysmon(
            10,
            {"TargetImage": "C:\\Windows\\system32\\lsass.exe", "GrantedAccess": "0x1010"},
            process={
                "executable": "C:\\x\\dump.exe",
                "pid": 77,
                "entity_id": "{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}",
            },
        ),
    )
    assert net["Image"] == "C:\\Windows\\System32\\services.exe" and net["ProcessId"] == 640
    assert (net["SourceIp"], net["SourcePort"], net["SourceHostname"]) == ("10.0.0.5", 50123, "ATTACKER")
    assert (net["DestinationIp"], net["DestinationPort"], net["DestinationHostname"]) == (
        "10.0.0.9",
        445,
        "WS1",
    )
    assert net["Protocol"] == "tcp" and net["DestinationPortName"] == "microsoft-ds"
    assert net["Initiated"] is False and net["SourceIsIpv6"] is False
    assert net["User"] == "NT AUTHORITY\\SYSTEM"
    assert dns["QueryName"] == "evil.example" and dns["QueryStatus"] == "0"
    assert dns["QueryResults"] == "type:  5 cdn.example;::ffff:203.0.113.7;"
    assert dns["Image"] == "C:\\x\\beacon.exe"
    assert dll["ImageLoaded"] == "C:\\Windows\\Temp\\evil.dll"
    assert dll["OriginalFileName"] == "evil.dll" and dll["Company"] == "-"
    assert dll["Signed"] == "false" and dll["SignatureStatus"] == "Unavailable"
    assert dll["Hashes"] == "SHA256=AB"
    assert reg["TargetObject"].endswith("\\ImagePath") and reg["Details"] == "C:\\x.exe"
    assert pipe["PipeName"] == "\\RemCom_communicaton" and pipe["Image"] == "C:\\p.exe"
    assert access["SourceImage"] == "C:\\x\\dump.exe" and access["SourceProcessId"] == 77
    assert access["SourceProcessGuid"] == "{AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE}"
    assert "Image" not in access and access["TargetImage"].endswith("lsass.exe")


def test_security_module_fields_and_values(tmp_path: Path) -> None:
    (logon, priv) = _read(
        tmp_path,
        {
            "@timestamp": "2024-05-01T10:00:00Z",
            "event": {"code": "4624", "module": "security"},
            "log": {"level": "information"},
            "process": {"pid": 764, "executable": "C:\\Windows\\System32\\lsass.exe", "name": "lsass.exe"},
            "source": {"ip": "10.0.0.5", "port": 50123, "domain": "KALI"},
            "winlog": {
                "channel": "Security",
                "provider_name": "Microsoft-Windows-Security-Auditing",
                "event_id": 4624,
                "keywords": ["Audit Success"],
                "task": "Logon",
                "opcode": "Info",
                "api": "wineventlog",
                "event_data": {"LogonType": "3", "LogonGuid": "{c25cdf73-2322-651f-f4fb-db862c0e03a8}"},
            },
        },
        {
            "event": {"code": "4674", "module": "security"},
            "winlog": {
                "channel": "Security",
                "provider_name": "Microsoft-Windows-Security-Auditing",
                "event_id": "4674",
                "keywords": ["Audit Failure"],
                "event_data": {
                    "AccessMask": ["1538", "1542"],
                    "PrivilegeList": ["SeSecurityPrivilege", "SeBackupPrivilege"],
                    "UserAccountControl": ["2080", "2082"],
                    "SidList": ["", "%{S-1-5-32-544}"],
                },
            },
        },
    )
    assert logon["ProcessId"] == "0x2fc" and logon["ProcessName"].endswith("lsass.exe")
    assert (logon["IpAddress"], logon["IpPort"], logon["WorkstationName"]) == ("10.0.0.5", "50123", "KALI")
    assert logon["LogonType"] == 3 and logon["LogonGuid"] == "{C25CDF73-2322-651F-F4FB-DB862C0E03A8}"
    assert logon["Keywords"] == "0x8020000000000000" and logon["Level"] == 0 and logon["Task"] == 12544
    assert priv["Keywords"] == "0x8010000000000000"
    assert priv["AccessMask"] == "%%1538\r\n\t\t\t\t%%1542\r\n\t\t\t\t"
    assert priv["PrivilegeList"] == "SeSecurityPrivilege\r\n\t\t\tSeBackupPrivilege"
    assert priv["UserAccountControl"] == "\r\n\t\t%%2080\r\n\t\t%%2082"
    assert priv["SidList"] == "\r\n\t\t%{S-1-5-32-544}"


def test_powershell_module_fields(tmp_path: Path) -> None:
    block, pipeline = _read(
        tmp_path,
        {
            "event": {"code": "4104", "module": "powershell"},
            "file": {"path": "C:\\x\\a.ps1"},
            "powershell": {
                "file": {"script_block_text": "iex $x", "script_block_id": "5d3f"},
                "sequence": 1,
                "total": 2,
            },
            "winlog": {"channel": "Microsoft-Windows-PowerShell/Operational", "event_id": "4104"},
        },
        {
            "event": {"code": "800", "module": "powershell"},
            "message": "Pipeline execution details for command line: sc.exe \\\\ws1 create x\n. \n\n"
            "Context Information: \n\tHostApplication=powershell.exe\n \n\n"
            'Details: \nCommandInvocation(sc.exe): "sc.exe"',
        },
    )
    assert (
        block["ScriptBlockText"] == "iex $x"
        and block["ScriptBlockId"] == "5d3f"
        and block["Path"] == "C:\\x\\a.ps1"
    )
    assert block["MessageNumber"] == 1 and block["MessageTotal"] == 2
    assert pipeline["Channel"] == "Windows PowerShell"
    assert pipeline["Data"] == [
        "sc.exe \\\\ws1 create x\r\n",
        "\tHostApplication=powershell.exe\r\n",
        'CommandInvocation(sc.exe): "sc.exe"\r\n',
    ]


def test_dotted_keys_search_fields_and_hits(tmp_path: Path) -> None:
    dotted, fields, hit, ecs_only = _read(
        tmp_path,
        {
            "@timestamp": "2024-05-01T10:00:00Z",
            "winlog.channel": "Security",
            "winlog.event_id": "4672",
            "winlog.event_data.PrivilegeList": ["SeTcbPrivilege", "SeDebugPrivilege"],
            "winlog.event_data.SubjectUserName": "admin",
        },
        {
            "_index": "winlogbeat-7.17",
            "fields": {
                "@timestamp": ["2024-05-01T10:00:00.000Z"],
                "winlog.channel": ["System"],
                "winlog.event_id": ["7045"],
                "winlog.event_data.ServiceName": ["PSEXESVC"],
                "winlog.event_data.ServiceName.keyword": ["PSEXESVC"],
                "winlog.event_data.ImagePath": ["%SystemRoot%\\PSEXESVC.exe"],
            },
        },
        {
            "_index": "x",
            "_source": {
                "winlog": {"channel": "System", "event_id": 7036, "event_data": {"param1": "PSEXESVC"}}
            },
        },
        {
            "@timestamp": "2024-05-01T10:00:00Z",
            "event": {"code": "1", "module": "sysmon"},
            "process": {"executable": "C:\\x.exe"},
        },
    )
    assert dotted["EventID"] == 4672 and dotted["SubjectUserName"] == "admin"
    assert dotted["PrivilegeList"] == "SeTcbPrivilege\r\n\t\t\tSeDebugPrivilege"
    assert fields["EventID"] == 7045 and fields["Channel"] == "System"
    assert fields["ServiceName"] == "PSEXESVC" and fields["ImagePath"] == "%SystemRoot%\\PSEXESVC.exe"
    assert "ServiceName.keyword" not in fields
    assert hit["EventID"] == 7036 and hit["param1"] == "PSEXESVC"
    assert ecs_only["Channel"] == SYSMON and ecs_only["EventID"] == 1 and ecs_only["Image"] == "C:\\x.exe"


def test_an_ecs_document_of_another_product_is_not_a_windows_event(tmp_path: Path) -> None:
    path = tmp_path / "nginx.ndjson"
    path.write_text(json.dumps({"event": {"code": "200", "module": "nginx"}, "url": {"path": "/"}}) + "\n")
    stats = ReadStats()
    assert not list(iter_events([str(path)], stats))
    assert stats.errors["json-not-event"] == 1


@pytest.mark.parametrize("pure", ["", "1"])
def test_evtx_guids_rendered_with_braces_as_windows_does(pure: str) -> None:
    """The SubcategoryGuid rule on 4719 can only fire when the GUID has its braces (C and Python)."""
    evtx = SHARED / "corpora" / "winlogbeat-modules" / "security" / "4719.evtx"
    if not evtx.exists():
        pytest.skip("../shared absent")
    import os
    import subprocess
    import sys

    env = dict(os.environ, SCMWATCH_PURE_PYTHON=pure)
    out = subprocess.run(
        [sys.executable, "-m", "scmwatch", "events", str(evtx), "--format", "jsonl"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    f = json.loads(out.splitlines()[0])
    assert f["SubcategoryGuid"] == "{0CCE9243-69AE-11D9-BED3-505054503030}"
    assert f["Provider_Guid"] == "{54849625-5478-4994-A5BA-3E3B0328C30D}"
    assert f["Correlation_ActivityID"] == "{3EEF0A0D-9551-0000-140C-EF3E5195D501}"


def test_module_fields_of_an_event_id_that_is_a_list_or_a_number_per_event(tmp_path: Path) -> None:
    """A module document whose EventID is a list (attacker-shaped) is read with the rows that
    apply to every EventID, not the end of its file; the rows per EventID are looked up once."""
    odd = _sysmon(1, {"RuleName": "-"}, process={"pid": 4, "executable": "C:\\a.exe", "command_line": "a"})
    odd["winlog"]["event_id"] = [1]
    docs = [odd, _sysmon(1, process={"pid": 5, "command_line": "b"}), _sysmon(3, process={"pid": 6}),
            _sysmon(1, process={"pid": 7, "command_line": "c"})]
    events = _read(tmp_path, *docs)
    assert [e["EventID"] for e in events] == [[1], 1, 3, 1]
    assert events[0]["Image"] == "C:\\a.exe" and "CommandLine" not in events[0]  # only=(1,) rows: not a list
    assert [e.get("CommandLine") for e in events[1:]] == ["b", None, "c"]
    assert [e["ProcessId"] for e in events] == [4, 5, 6, 7]
