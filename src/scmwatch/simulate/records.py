"""The simulator's record type and the System header of each (Channel, EventID).

A :class:`Rec` is one event before it is written: its time, host, channel, EventID, the
EventData fields in the order Windows writes them, and a few per-event System values (who the
``Security UserID`` is, which process logged it). Everything else in ``<System>`` is constant
per (channel, EventID) and lives in :data:`META`, so writers render it from one table and all
three output formats agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEC = "Security"
SYS = "System"
SYSMON = "Microsoft-Windows-Sysmon/Operational"
PS = "Microsoft-Windows-PowerShell/Operational"
APP = "Application"
DEFENDER = "Microsoft-Windows-Windows Defender/Operational"
ZEEK = "zeek"  # channel prefix for network records: "zeek/conn", "zeek/dce_rpc", ...

# Which --telemetry name turns a channel on.
TELEMETRY_OF = {
    SEC: "security",
    SYS: "system",
    SYSMON: "sysmon",
    PS: "powershell",
    APP: "application",
    DEFENDER: "defender",
}
ALL_TELEMETRY = ("sysmon", "security", "system", "powershell", "application", "defender", "zeek")


@dataclass(frozen=True, slots=True)
class Meta:
    """Constant ``<System>`` values of one (channel, EventID), as Windows writes them."""

    provider: str
    guid: str | None  # None: classic provider without a Guid attribute (MSSQLSERVER)
    version: int | None
    level: int
    task: int
    opcode: int | None
    keywords: str
    qualifiers: int | None = None  # EventID Qualifiers attribute (classic SCM/MSSQL events)
    source_name: str | None = None  # Provider EventSourceName attribute
    exec_from: str = "lsass"  # which process logs it: "lsass", "system", "services", "sysmon", "proc"
    has_user: bool = False  # <Security UserID=...> present (else <Security />)
    has_correlation: bool = True  # <Correlation/> element present
    has_execution: bool = True
    spaced_names: bool = False  # EventData names with spaces ("Process Name"): flat output strips them


_SECG = "54849625-5478-4994-A5BA-3E3B0328C30D"
_SCM = "{555908d1-a6d7-4695-8e1e-26931d2012f4}"
_SYSMONG = "5770385F-C22A-43E0-BF4C-06F5698FFBD9"
_PSG = "A0C1853B-5C40-4B15-8766-3CF1C58F985A"
_AUD = "Microsoft-Windows-Security-Auditing"
_K_SEC = "0x8020000000000000"
_K_SCM = "0x8080000000000000"


def _sec(task: int, version: int, exec_from: str = "lsass") -> Meta:
    return Meta(_AUD, _SECG, version, 0, task, 0, _K_SEC, exec_from=exec_from)


def _scm(qualifiers: int, level: int, has_user: bool) -> Meta:
    return Meta(
        "Service Control Manager",
        _SCM,
        0,
        level,
        0,
        0,
        _K_SCM,
        qualifiers,
        "Service Control Manager",
        exec_from="services",
        has_user=has_user,
    )


def _sysmon(eid: int, version: int) -> Meta:
    return Meta(
        "Microsoft-Windows-Sysmon",
        _SYSMONG,
        version,
        4,
        eid,
        0,
        "0x8000000000000000",
        exec_from="sysmon",
        has_user=True,
    )


META: dict[tuple[str, int], Meta] = {
    (SEC, 4624): _sec(12544, 2),
    (SEC, 4634): _sec(12545, 0),
    (SEC, 4672): _sec(12548, 0),
    (SEC, 4657): _sec(12801, 0, "system"),
    (SEC, 4674): _sec(13056, 0),
    (SEC, 4688): _sec(13312, 2, "system"),
    (SEC, 4697): _sec(12289, 0),
    (SEC, 5140): _sec(12808, 1, "system"),
    (SEC, 5145): _sec(12811, 0, "system"),
    (SEC, 5156): _sec(12810, 1, "system"),
    (SYS, 7045): _scm(16384, 4, True),
    (SYS, 7036): _scm(16384, 4, False),
    (SYS, 7040): _scm(16384, 4, True),
    (SYS, 7009): _scm(49152, 2, False),
    (SYS, 7000): _scm(49152, 2, False),
    (SYSMON, 1): _sysmon(1, 5),
    (SYSMON, 3): _sysmon(3, 5),
    (SYSMON, 7): _sysmon(7, 3),
    (SYSMON, 11): _sysmon(11, 2),
    (SYSMON, 12): _sysmon(12, 2),
    (SYSMON, 13): _sysmon(13, 2),
    (SYSMON, 17): _sysmon(17, 1),
    (SYSMON, 18): _sysmon(18, 1),
    (SYSMON, 22): _sysmon(22, 5),
    (PS, 4104): Meta(
        "Microsoft-Windows-PowerShell", _PSG, 1, 5, 2, 15, "0x0", exec_from="proc", has_user=True
    ),
    (DEFENDER, 1121): Meta(
        "Microsoft-Windows-Windows Defender",
        "11CD958A-C507-4EF3-B3F2-5FD9DFBD2C78",
        0,
        3,
        0,
        0,
        "0x8000000000000000",
        exec_from="defender",
        has_user=True,
        spaced_names=True,
    ),
    (APP, 33205): Meta(
        "MSSQLSERVER",
        None,
        None,
        0,
        5,
        None,
        "0xa0000000000000",
        16384,
        exec_from="",
        has_correlation=False,
        has_execution=False,
    ),
    (APP, 15457): Meta(
        "MSSQLSERVER",
        None,
        None,
        4,
        2,
        None,
        "0x80000000000000",
        16384,
        exec_from="",
        has_correlation=False,
        has_execution=False,
    ),
}

# Older 4688 (Win7/2008): version 1 without ParentProcessName and the Target* fields.
META_4688_V1 = _sec(13312, 1, "system")
# Windows 7 / 2008 R2 write 4624 version 0 (no ImpersonationLevel, RestrictedAdminMode, ... fields)
META_4624_V0 = _sec(12544, 0)
# PowerShell logs a script block at Warning (3) instead of Verbose (5) when it holds suspicious
# content (its own keyword check, e.g. encoded commands, reflection, service tampering)
META_4104_WARNING = Meta(
    "Microsoft-Windows-PowerShell", _PSG, 1, 3, 2, 15, "0x0", exec_from="proc", has_user=True
)


@dataclass(slots=True)
class Label:
    """Ground truth carried by an attack event: its scenario instance and expected detections.

    ``expect`` holds detection keys: the MaxPatrol code of the pack's ``maxpatrol_rule``
    attribute (``"PT-CR-589"``), or ``"none"`` for the MITRE analytic.
    """

    instance: int
    scenario: str
    expect: tuple[str, ...] = ()
    # Detections that may fire on this event without being required: defensible overlaps
    # between the pack's rules (e.g. a Metasploit logon rule filed under MS17-010).
    allow: tuple[str, ...] = ()


@dataclass(slots=True)
class Rec:
    """One event to be written."""

    t: float
    host: Any  # world.Host (None for Zeek records)
    channel: str
    eid: int
    data: dict[str, Any]
    user_sid: str | None = None  # <Security UserID=...>
    exec_pid: int | None = None  # <Execution ProcessID=...> when exec_from == "proc"
    meta: Meta | None = None  # override of META[(channel, eid)]
    label: Label | None = None
    activity: str | None = None  # <Correlation ActivityID=...>
