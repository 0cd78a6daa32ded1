"""A small NDJSON file whose link facts, split into eight ranges, decide two correlations.

Shared by the split tests (``--jobs``) and the cluster tests: flat events padded to one width,
so the ranges of ``split_file(..., 8, 4096)`` start on known lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from scmwatch.events.ranges import split_file
from scmwatch.events.read import InputFile


def line(i: int, width: int = 400, **ev: object) -> bytes:
    """One flat event at second ``i``, padded to ``width`` bytes so range bounds fall on known lines."""
    ev.setdefault("TimeCreated", f"2024-01-01T01:{i // 60:02d}:{i % 60:02d}.000000Z")
    text = json.dumps(ev)
    return json.dumps({**ev, "Pad": "x" * (width - 1 - len(text) - len(', "Pad": ""'))}).encode() + b"\n"


def logon(i: int, ip: str, ws: str) -> bytes:  # teaches ip -> ws (an address -> name link fact)
    return line(i, EventID=4624, Channel="Security", Computer="DC01.corp.example", LogonType=3,
                IpAddress=ip, WorkstationName=ws, TargetUserName="admin", TargetLogonId="0x3e7")


def psexec(i: int, target: str) -> bytes:
    return line(i, EventID=1, Channel="Microsoft-Windows-Sysmon/Operational",
                Computer="ATTACKER.corp.example", Image="C:\\Tools\\PsExec.exe",
                CommandLine=f"PsExec.exe \\\\{target} -accepteula cmd",
                ParentImage="C:\\Windows\\explorer.exe", ProcessId=4242, ParentProcessId=1000)


def install(i: int, host: str) -> bytes:
    return line(i, EventID=7045, Channel="System", Computer=f"{host}.corp.example",
                Provider_Name="Service Control Manager", ServiceName="PSEXESVC",
                ImagePath="%SystemRoot%\\PSEXESVC.exe")


def lateral(tmp_path: Path) -> Path:
    """400 lines, eight ranges of 50: the address -> name facts that make two lateral-movement
    chains correlate are taught ranges before (range 0; a name changed between ranges 1 and 2),
    each chain's two events sit in two ranges, and every filler line repeats range 0's logon, so
    each range starts with a duplicate that only the whole file's dedup drops."""
    special = {0: logon(0, "10.0.0.9", "VICTIM"), 60: logon(60, "10.0.0.7", "ALPHA"),
               110: logon(110, "10.0.0.7", "BETA"), 195: psexec(195, "10.0.0.9"),
               203: install(203, "VICTIM"), 245: psexec(245, "10.0.0.7"), 252: install(252, "BETA"),
               254: install(254, "ALPHA")}
    path = tmp_path / "lateral.jsonl"
    path.write_bytes(b"".join(special.get(i) or logon(i, "10.0.0.9", "VICTIM") for i in range(400)))
    ranges = split_file(InputFile(str(path), str(path)), 8, 1 << 12)
    assert ranges is not None and [r.first_line for r in ranges] == list(range(1, 400, 50))
    return path
