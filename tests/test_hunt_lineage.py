"""Process lineage through ``hunt``: legacy 4688 (no ParentProcessName) gets its parent by PID.

Hand-written Windows 7 / 2008 R2 shapes: the SCM's PID comes from a System event in another file
(so only the merge step can tell), from an earlier 4688 in the same file, or not at all; a reboot
ends every PID. The services.exe -> cmd.exe /c analytic must fire exactly where the parent is
known, marked as derived, with --jobs 1 and 2 giving the same output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HOST = "WIN7-01.corp.local"
SERVICES = "C:\\Windows\\System32\\services.exe"
CMD = "C:\\Windows\\System32\\cmd.exe"


def _4688(t: str, pid: str, image: str, creator: str, cmd: str) -> dict:
    return {"EventID": 4688, "Version": 1, "Channel": "Security", "Computer": HOST, "TimeCreated": t,
            "Provider_Name": "Microsoft-Windows-Security-Auditing", "SubjectUserName": "WIN7-01$",
            "SubjectLogonId": "0x3e7", "NewProcessId": pid, "NewProcessName": image, "ProcessId": creator,
            "CommandLine": cmd, "TokenElevationType": "%%1936"}


def _scm(t: str, pid: int, eid: int = 7036) -> dict:
    return {"EventID": eid, "Channel": "System", "Computer": HOST, "TimeCreated": t, "ProcessID": pid,
            "Provider_Name": "Service Control Manager", "param1": "Windows Update", "param2": "running"}


def _write(path: Path, events: list[dict]) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


def _hunt(paths: list[str], jobs: int, tmp: Path) -> tuple[list[dict], dict]:
    summary = tmp / f"summary{jobs}.json"
    out = subprocess.run([sys.executable, "-m", "scmwatch", "hunt", *paths, "--format", "jsonl",
                          "--jobs", str(jobs), "--summary", str(summary)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [json.loads(x) for x in out.stdout.splitlines()], json.loads(summary.read_text())


@pytest.fixture()
def logs(tmp_path: Path) -> list[str]:
    sec = _write(tmp_path / "Security.jsonl", [
        # 1: SCM PID 0x1f0 known only from the System log (another file)
        _4688("2024-05-01T10:05:00Z", "0x9c4", CMD, "0x1f0",
              "cmd.exe /c echo abc > \\\\.\\pipe\\abc"),
        # 2: unknown creator
        _4688("2024-05-01T10:06:00Z", "0x9c8", CMD, "0x2a0", "cmd.exe /c whoami"),
        # 3: parent known from an earlier 4688 in this file (a PID other than the SCM's)
        _4688("2024-05-01T10:07:00Z", "0x300", SERVICES, "0x1c4", "services.exe"),
        _4688("2024-05-01T10:08:00Z", "0x9cc", CMD, "0x300", "cmd.exe /c dir"),
        # 4: after a reboot, 0x1f0 is no longer the SCM
        {"EventID": 4608, "Channel": "Security", "Computer": HOST, "TimeCreated": "2024-05-01T12:00:00Z"},
        _4688("2024-05-01T12:10:00Z", "0x9d0", CMD, "0x1f0", "cmd.exe /c net user"),
    ])
    system = _write(tmp_path / "System.jsonl", [_scm("2024-05-01T11:00:00Z", 0x1F0)])
    return [sec, system]


def _shell_alerts(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["title"].startswith("Service Control Manager started cmd.exe")]


def test_services_spawns_cmd_fires_on_legacy_4688_with_derived_parent(logs, tmp_path):
    alerts, summary = _hunt(logs, 1, tmp_path)
    shell = _shell_alerts(alerts)
    assert [a["event"]["CommandLine"] for a in shell] == ["cmd.exe /c echo abc > \\\\.\\pipe\\abc",
                                                          "cmd.exe /c dir"]
    assert all(a["derived"] == ["ParentProcessName"] for a in shell)
    assert all(a["event"]["ParentProcessName"].lower().endswith("\\services.exe") for a in shell)
    assert summary["lineage"]["resolved_by_merge"] == 1  # the cross-file one
    assert summary["lineage"]["deferred"] >= 2  # the unknown and the post-reboot creators too
    # alerts of rules that do not need the parent carry no derived mark
    assert all("derived" not in a for a in alerts if a not in shell and "ParentProcessName" not in a["event"])


def test_jobs_two_gives_the_same_alerts(logs, tmp_path):
    one, _ = _hunt(logs, 1, tmp_path)
    two, _ = _hunt(logs, 2, tmp_path)
    assert one == two


def test_file_order_does_not_matter(logs, tmp_path):
    forward, _ = _hunt(logs, 1, tmp_path)
    backward, _ = _hunt(list(reversed(logs)), 1, tmp_path)
    key = lambda a: (a["rule_id"], a["record_id"], a["source"])  # noqa: E731
    assert sorted(map(key, forward)) == sorted(map(key, backward))


def test_modern_4688_with_parent_is_not_marked(tmp_path):
    ev = _4688("2024-05-01T10:05:00Z", "0x9c4", CMD, "0x1f0", "cmd.exe /c whoami")
    ev["ParentProcessName"] = SERVICES
    alerts, summary = _hunt([_write(tmp_path / "s.jsonl", [ev])], 1, tmp_path)
    shell = _shell_alerts(alerts)
    assert len(shell) == 1 and "derived" not in shell[0]
    assert summary["lineage"]["deferred"] == 0
