"""Builders: one function per event kind, fields named and ordered as Windows writes them.

Field sets follow the real recordings in the shared EVTX corpus (a test compares them), value
forms follow the spec's telemetry facts: 7045 writes start types as text (``demand start``),
4697 as numbers (``3``, ``0x10``); 5145 ``AccessList`` holds ``%%44xx`` codes; Sysmon 13
doubles ``%`` in ``Details``; Security PIDs are hex strings, Sysmon PIDs integers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from scmwatch.simulate.records import (
    APP,
    DEFENDER,
    META_4104_WARNING,
    META_4624_V0,
    META_4688_V1,
    PS,
    SEC,
    SYS,
    SYSMON,
    Rec,
)
from scmwatch.simulate.world import DOMAIN, SYSTEM, Account, Host, Logon, Proc, fake_hashes

# --- value helpers -------------------------------------------------------------------------

_ACCESS_BITS = [  # (mask bit, code) in the order Windows lists them: standard rights first
    (0x10000, "%%1537"),
    (0x20000, "%%1538"),
    (0x40000, "%%1539"),
    (0x80000, "%%1540"),
    (0x100000, "%%1541"),
    (0x1000000, "%%1542"),
    (0x1, "%%4416"),
    (0x2, "%%4417"),
    (0x4, "%%4418"),
    (0x8, "%%4419"),
    (0x10, "%%4420"),
    (0x20, "%%4421"),
    (0x40, "%%4422"),
    (0x80, "%%4423"),
    (0x100, "%%4424"),
]


def access_list(mask: int) -> str:
    """5140/5145 ``AccessList`` for a mask, e.g. 0x83 → ``%%4416 %%4417 %%4423`` (with Windows' tabs)."""
    return "".join(f"{code}\r\n\t\t\t\t" for bit, code in _ACCESS_BITS if mask & bit)


_UTC_SEC = [-1, ""]


def utc_ms(t: float) -> str:
    """Sysmon ``UtcTime``: ``2024-05-01 10:00:00.123`` (the second's text is cached: events cluster)."""
    sec = int(t)
    if sec != _UTC_SEC[0]:
        _UTC_SEC[0] = sec
        _UTC_SEC[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{_UTC_SEC[1]}.{int((t - sec) * 1000):03d}"


def sysmon_details(value: str) -> str:
    """Sysmon 13 doubles every ``%`` in string values (detections.md §0.4)."""
    return value.replace("%", "%%")


def dword(n: int) -> str:
    return f"DWORD (0x{n:08x})"


SERVICES_KEY = "HKLM\\System\\CurrentControlSet\\Services\\"

# Version resources Sysmon reports for the binaries scenarios run (FileVersion, Description,
# Product, Company, OriginalFileName). Unknown binaries get "-" like unsigned tools do.
_VERSION: dict[str, tuple[str, str, str, str, str]] = {}
_MS = ("10.0.19041.1 (WinBuild.160101.0800)", "Microsoft® Windows® Operating System", "Microsoft Corporation")


def _ms(exe: str, desc: str) -> None:
    _VERSION[exe] = (_MS[0], desc, _MS[1], _MS[2], exe.upper() if exe in ("sc.exe",) else exe)


for _exe, _desc in [
    ("cmd.exe", "Windows Command Processor"),
    ("sc.exe", "Service Control Manager Configuration Tool"),
    ("svchost.exe", "Host Process for Windows Services"),
    ("powershell.exe", "Windows PowerShell"),
    ("reg.exe", "Registry Console Tool"),
    ("net.exe", "Net Command"),
    ("net1.exe", "Net Command"),
    ("conhost.exe", "Console Window Host"),
    ("whoami.exe", "whoami - displays logged on user information"),
    ("taskhostw.exe", "Host Process for Windows Tasks"),
    ("schtasks.exe", "Task Scheduler Configuration Tool"),
    ("msiexec.exe", "Windows® installer"),
    ("TrustedInstaller.exe", "Windows Modules Installer"),
    ("TiWorker.exe", "Windows Modules Installer Worker"),
    ("drvinst.exe", "Driver Package Installer"),
    ("ipconfig.exe", "IP Configuration Utility"),
    ("hostname.exe", "Hostname APP"),
    ("rundll32.exe", "Windows host process (Rundll32)"),
    ("gpupdate.exe", "Microsoft® Windows Group Policy"),
    ("SearchProtocolHost.exe", "Microsoft Windows Search Protocol Host"),
    ("wuauclt.exe", "Windows Update"),
    ("MpCmdRun.exe", "Microsoft Malware Protection Command Line Utility"),
    ("dllhost.exe", "COM Surrogate"),
    ("spoolsv.exe", "Spooler SubSystem App"),
    ("tasklist.exe", "Lists the current running tasks"),
    ("sppsvc.exe", "Microsoft Software Protection Platform Service"),
    ("WmiPrvSE.exe", "WMI Provider Host"),
]:
    _ms(_exe, _desc)
_VERSION["sc.exe"] = (_MS[0], "Service Control Manager Configuration Tool", _MS[1], _MS[2], "sc.exe")
_VERSION["PsExec.exe"] = (
    "2.34",
    "Execute processes remotely",
    "Sysinternals PsExec",
    "Sysinternals - www.sysinternals.com",
    "psexec.c",
)
_VERSION["PsExec64.exe"] = _VERSION["PsExec.exe"]
_VERSION["PSEXESVC.exe"] = ("2.34", "PsExec Service", "Sysinternals PsExec", "Sysinternals", "psexesvc.exe")
_VERSION["chrome.exe"] = ("124.0.6367.91", "Google Chrome", "Google Chrome", "Google LLC", "chrome.exe")
_VERSION["sqlservr.exe"] = (
    "2019.0150.2000.05 ((SQLServer).190924-2033 )",
    "SQL Server Windows NT - 64 Bit",
    "Microsoft SQL Server",
    "Microsoft Corporation",
    "sqlservr.exe",
)
_VERSION["OneDrive.exe"] = (
    "24.070.0407.0003",
    "Microsoft OneDrive",
    "Microsoft OneDrive",
    "Microsoft Corporation",
    "OneDrive.exe",
)


@lru_cache(maxsize=4096)
def version_info(image: str, original: str | None = None) -> tuple[str, str, str, str, str]:
    exe = image.rsplit("\\", 1)[-1]
    info = _VERSION.get(exe)
    if info is None:
        for key, val in _VERSION.items():
            if key.lower() == exe.lower():
                info = val
                break
    if info is None and original is not None:  # a renamed copy keeps its version resource
        info = next((v for v in _VERSION.values() if v[4].lower() == original.lower()), None)
    if info is None:
        info = ("-", "-", "-", "-", "-")
    if original is not None:
        info = (*info[:4], original)
    return info


# --- Sysmon ---------------------------------------------------------------------------------


def _sysmon(
    h: Host, t: float, eid: int, p: Proc, fields: dict[str, Any], event_type: str | None = None
) -> Rec:
    """A Sysmon record: the header every Sysmon event starts with (rule name, event type when
    the event has one, time, process), then ``fields`` in the order Sysmon writes them."""
    head: dict[str, Any] = {"RuleName": "-"}
    if event_type is not None:
        head["EventType"] = event_type
    head.update(UtcTime=utc_ms(t), ProcessGuid=p.guid, ProcessId=p.pid)
    return Rec(t, h, SYSMON, eid, {**head, **fields}, user_sid=SYSTEM.sid)


def sysmon1(h: Host, t: float, p: Proc, original: str | None = None) -> Rec:
    parent = p.parent
    fv, desc, prod, comp, orig = version_info(p.image, original)
    return _sysmon(h, t, 1, p, {
        "Image": p.image,
        "FileVersion": fv,
        "Description": desc,
        "Product": prod,
        "Company": comp,
        "OriginalFileName": orig,
        "CommandLine": p.cmdline,
        "CurrentDirectory": "C:\\Windows\\system32\\",
        "User": p.user.qualified,
        "LogonGuid": p.logon_guid,
        "LogonId": p.logon_id,
        "TerminalSessionId": 0 if p.user is SYSTEM else 1,
        "IntegrityLevel": p.integrity,
        "Hashes": fake_hashes(p.image),
        "ParentProcessGuid": parent.guid if parent else "00000000-0000-0000-0000-000000000000",
        "ParentProcessId": parent.pid if parent else 0,
        "ParentImage": parent.image if parent else "-",
        "ParentCommandLine": parent.cmdline if parent else "-",
    })


def sysmon3(
    h: Host,
    t: float,
    p: Proc,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    initiated: bool,
    src_name: str = "",
    dst_name: str = "",
) -> Rec:
    return _sysmon(h, t, 3, p, {
        "Image": p.image,
        "User": p.user.qualified if p.image != "System" else "NT AUTHORITY\\SYSTEM",
        "Protocol": "tcp",
        "Initiated": initiated,
        "SourceIsIpv6": False,
        "SourceIp": src,
        "SourceHostname": src_name or "-",
        "SourcePort": sport,
        "SourcePortName": "-",
        "DestinationIsIpv6": False,
        "DestinationIp": dst,
        "DestinationHostname": dst_name or "-",
        "DestinationPort": dport,
        "DestinationPortName": {445: "microsoft-ds", 135: "epmap", 53: "domain", 443: "https"}.get(
            dport, "-"
        ),
    })


def sysmon7(h: Host, t: float, p: Proc, loaded: str, signed: bool, signature: str = "") -> Rec:
    fv, desc, prod, comp, orig = version_info(loaded)
    return _sysmon(h, t, 7, p, {
        "Image": p.image,
        "ImageLoaded": loaded,
        "FileVersion": fv,
        "Description": desc,
        "Product": prod,
        "Company": comp,
        "OriginalFileName": orig,
        "Hashes": fake_hashes(loaded),
        "Signed": "true" if signed else "false",
        "Signature": signature,
        "SignatureStatus": "Valid" if signed else "Unavailable",
    })


def sysmon11(h: Host, t: float, p: Proc, path: str) -> Rec:
    return _sysmon(h, t, 11, p, {
        "Image": p.image,
        "TargetFilename": path,
        "CreationUtcTime": utc_ms(t),
    })


def sysmon12(h: Host, t: float, p: Proc, key: str, event_type: str = "CreateKey") -> Rec:
    return _sysmon(h, t, 12, p, event_type=event_type, fields={
        "Image": p.image,
        "TargetObject": key,
    })


def sysmon13(h: Host, t: float, p: Proc, key: str, details: str) -> Rec:
    return _sysmon(h, t, 13, p, event_type="SetValue", fields={
        "Image": p.image,
        "TargetObject": key,
        "Details": details,
    })


def sysmon_pipe(h: Host, t: float, p: Proc, pipe: str, connect: bool) -> Rec:
    eid = 18 if connect else 17
    return _sysmon(h, t, eid, p, event_type="ConnectPipe" if connect else "CreatePipe", fields={
        "PipeName": pipe,
        "Image": p.image,
    })


def sysmon22(h: Host, t: float, p: Proc, query: str, results: str) -> Rec:
    return _sysmon(h, t, 22, p, {
        "QueryName": query,
        "QueryStatus": "0",
        "QueryResults": results,
        "Image": p.image,
    })


# --- Security -------------------------------------------------------------------------------


def _subject(h: Host, a: Account, logon_id: str) -> dict[str, Any]:
    """Subject fields; LocalSystem is written as the computer account (``WS01$``, domain ``CORP``)."""
    if a.sid == SYSTEM.sid:
        return {
            "SubjectUserSid": a.sid,
            "SubjectUserName": f"{h.name}$",
            "SubjectDomainName": DOMAIN,
            "SubjectLogonId": logon_id,
        }
    return {
        "SubjectUserSid": a.sid,
        "SubjectUserName": a.name,
        "SubjectDomainName": a.domain,
        "SubjectLogonId": logon_id,
    }


# 4624 fields that version 0 (Windows 7 / 2008 R2) does not have
_4624_V1_V2 = ("ImpersonationLevel", "RestrictedAdminMode", "TargetOutboundUserName",
               "TargetOutboundDomainName", "VirtualAccount", "TargetLinkedLogonId", "ElevatedToken")


def sec4624(h: Host, t: float, lg: Logon) -> Rec:
    a = lg.account
    network = lg.logon_type == 3
    kerberos = lg.auth == "Kerberos"
    rec = Rec(
        t,
        h,
        SEC,
        4624,
        {
            "SubjectUserSid": "S-1-0-0" if network else SYSTEM.sid,
            "SubjectUserName": "-" if network else f"{h.name}$",
            "SubjectDomainName": "-" if network else a.domain,
            "SubjectLogonId": "0x0" if network else "0x3e7",
            "TargetUserSid": a.sid,
            "TargetUserName": a.name,
            "TargetDomainName": a.domain,
            "TargetLogonId": lg.logon_id,
            "LogonType": lg.logon_type,
            "LogonProcessName": "Kerberos" if kerberos else ("NtLmSsp " if network else "User32 "),
            "AuthenticationPackageName": lg.auth,
            "WorkstationName": "-" if kerberos else lg.workstation,
            "LogonGuid": lg.guid if kerberos else "00000000-0000-0000-0000-000000000000",
            "TransmittedServices": "-",
            "LmPackageName": "NTLM V2" if lg.auth == "NTLM" else "-",
            "KeyLength": 128 if lg.auth == "NTLM" else 0,
            "ProcessId": "0x0" if network else hex(h.core["lsass"].pid),
            "ProcessName": "-" if network else "C:\\Windows\\System32\\lsass.exe",
            "IpAddress": lg.ip,
            "IpPort": str(lg.port),
            "ImpersonationLevel": "%%1833",
            "RestrictedAdminMode": "-",
            "TargetOutboundUserName": "-",
            "TargetOutboundDomainName": "-",
            "VirtualAccount": "%%1843",
            "TargetLinkedLogonId": "0x0",
            "ElevatedToken": "%%1842" if a.admin else "%%1843",
        },
    )
    if not h.modern:
        for k in _4624_V1_V2:
            del rec.data[k]
        rec.meta = META_4624_V0
    return rec


def sec4634(h: Host, t: float, lg: Logon) -> Rec:
    a = lg.account
    return Rec(
        t,
        h,
        SEC,
        4634,
        {
            "TargetUserSid": a.sid,
            "TargetUserName": a.name,
            "TargetDomainName": a.domain,
            "TargetLogonId": lg.logon_id,
            "LogonType": lg.logon_type,
        },
    )


ADMIN_PRIVS = (
    "SeSecurityPrivilege\r\n\t\t\tSeBackupPrivilege\r\n\t\t\tSeRestorePrivilege\r\n\t\t\t"
    "SeTakeOwnershipPrivilege\r\n\t\t\tSeDebugPrivilege\r\n\t\t\tSeSystemEnvironmentPrivilege\r\n\t\t\t"
    "SeLoadDriverPrivilege\r\n\t\t\tSeImpersonatePrivilege\r\n\t\t\tSeDelegateSessionUserImpersonatePrivilege"
)


def sec4672(h: Host, t: float, lg: Logon) -> Rec:
    return Rec(t, h, SEC, 4672, {**_subject(h, lg.account, lg.logon_id), "PrivilegeList": ADMIN_PRIVS})


def sec4688(h: Host, t: float, p: Proc) -> Rec:
    parent = p.parent
    creator = parent.user if parent else SYSTEM
    creator_logon = parent.logon_id if parent else "0x3e7"
    data = {
        **_subject(h, creator, creator_logon),
        "NewProcessId": hex(p.pid),
        "NewProcessName": p.image,
        "TokenElevationType": "%%1936" if p.user is SYSTEM or p.integrity in ("System", "High") else "%%1938",
        "ProcessId": hex(parent.pid) if parent else "0x4",
        "CommandLine": p.cmdline,
    }
    if h.modern:
        data.update(
            {
                "TargetUserSid": "S-1-0-0",
                "TargetUserName": "-",
                "TargetDomainName": "-",
                "TargetLogonId": "0x0",
                "ParentProcessName": parent.image if parent else "",
                "MandatoryLabel": {"System": "S-1-16-16384", "High": "S-1-16-12288"}.get(
                    p.integrity, "S-1-16-8192"
                ),
            }
        )
        return Rec(t, h, SEC, 4688, data)
    return Rec(t, h, SEC, 4688, data, meta=META_4688_V1)


def sec4697(
    h: Host,
    t: float,
    a: Account,
    logon_id: str,
    name: str,
    path: str,
    start: int = 3,
    stype: str = "0x10",
    account: str = "LocalSystem",
) -> Rec:
    return Rec(
        t,
        h,
        SEC,
        4697,
        {
            **_subject(h, a, logon_id),
            "ServiceName": name,
            "ServiceFileName": path,
            "ServiceType": stype,
            "ServiceStartType": start,
            "ServiceAccount": account,
        },
    )


def sec4674(h: Host, t: float, a: Account, logon_id: str, obj_type: str, obj: str, mask: str) -> Rec:
    return Rec(
        t,
        h,
        SEC,
        4674,
        {
            **_subject(h, a, logon_id),
            "ObjectServer": "SC Manager",
            "ObjectType": obj_type,
            "ObjectName": obj,
            "HandleId": hex(h.rng.randrange(0x1000, 0xFFFFFF)),
            "AccessMask": mask,
            "PrivilegeList": "SeTakeOwnershipPrivilege",
            "ProcessId": hex(h.core["services"].pid),
            "ProcessName": "C:\\Windows\\System32\\services.exe",
        },
    )


SHARE_PATHS = {"IPC$": "", "ADMIN$": "\\??\\C:\\Windows", "C$": "\\??\\C:\\"}


def sec5140(h: Host, t: float, lg: Logon, share: str, mask: int = 0x1) -> Rec:
    return Rec(
        t,
        h,
        SEC,
        5140,
        {
            **_subject(h, lg.account, lg.logon_id),
            "ObjectType": "File",
            "IpAddress": lg.ip,
            "IpPort": str(lg.port),
            "ShareName": f"\\\\*\\{share}",
            "ShareLocalPath": SHARE_PATHS.get(share, f"\\??\\D:\\Shares\\{share}"),
            "AccessMask": hex(mask),
            "AccessList": access_list(mask),
        },
    )


def sec5145(h: Host, t: float, lg: Logon, share: str, target: str, mask: int) -> Rec:
    return Rec(
        t,
        h,
        SEC,
        5145,
        {
            **_subject(h, lg.account, lg.logon_id),
            "ObjectType": "File",
            "IpAddress": lg.ip,
            "IpPort": str(lg.port),
            "ShareName": f"\\\\*\\{share}",
            "ShareLocalPath": SHARE_PATHS.get(share, f"\\??\\D:\\Shares\\{share}"),
            "RelativeTargetName": target,
            "AccessMask": hex(mask),
            "AccessList": access_list(mask),
            "AccessReason": "-",
        },
    )


# 4657 value types: REG_SZ %%1873, REG_EXPAND_SZ %%1874, REG_DWORD %%1876 (message ids
# from msobjs.dll as commonly documented: **unverified** against a recording).
REG_TYPES = {"REG_SZ": "%%1873", "REG_EXPAND_SZ": "%%1874", "REG_DWORD": "%%1876"}


def sec4657(
    h: Host, t: float, p: Proc, key: str, value: str, old: str | None, new: str, kind: str = "REG_EXPAND_SZ"
) -> Rec:
    """A value under ``HKLM\\SYSTEM\\CurrentControlSet\\Services`` written (needs a SACL on the key).

    ``old is None`` means a new value (%%1904), else a modification (%%1905).
    """
    sub = key.split("\\Services\\", 1)[1]
    return Rec(
        t,
        h,
        SEC,
        4657,
        {
            **_subject(h, p.user, p.logon_id),
            "ObjectName": "\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\" + sub,
            "ObjectValueName": value,
            "HandleId": hex(h.rng.randrange(0x100, 0xFFFF, 4)),
            "OperationType": "%%1904" if old is None else "%%1905",
            "OldValueType": "-" if old is None else REG_TYPES[kind],
            "OldValue": "-" if old is None else old,
            "NewValueType": REG_TYPES[kind],
            "NewValue": new,
            "ProcessId": hex(p.pid),
            "ProcessName": p.image,
        },
    )


def sec5156(
    h: Host, t: float, p: Proc, local: str, lport: int, remote: str, rport: int, inbound: bool
) -> Rec:
    """WFP allowed a connection; for inbound ones Source* is the local end (as Windows writes it)."""
    app = "\\device\\harddiskvolume2" + p.image[2:].lower() if p.image[1:2] == ":" else p.image
    return Rec(
        t,
        h,
        SEC,
        5156,
        {
            "ProcessID": p.pid,
            "Application": app,
            "Direction": "%%14592" if inbound else "%%14593",
            "SourceAddress": local,
            "SourcePort": str(lport),
            "DestAddress": remote,
            "DestPort": str(rport),
            "Protocol": 6,
            "FilterRTID": 67658,
            "LayerName": "%%14610" if inbound else "%%14611",
            "LayerRTID": 44 if inbound else 48,
            "RemoteUserID": "S-1-0-0",
            "RemoteMachineID": "S-1-0-0",
        },
    )


# --- System (Service Control Manager) ------------------------------------------------------


def sys7045(
    h: Host,
    t: float,
    installer_sid: str,
    name: str,
    path: str,
    start: str = "demand start",
    stype: str = "user mode service",
    account: str = "LocalSystem",
) -> Rec:
    return Rec(
        t,
        h,
        SYS,
        7045,
        {
            "ServiceName": name,
            "ImagePath": path,
            "ServiceType": stype,
            "StartType": start,
            "AccountName": account,
        },
        user_sid=installer_sid,
    )


def _utf16_hex(text: str) -> str:
    return (text + "\0").encode("utf-16-le").hex().upper()


def sys7036(h: Host, t: float, display: str, key: str, running: bool) -> Rec:
    state = "running" if running else "stopped"
    return Rec(
        t,
        h,
        SYS,
        7036,
        {"param1": display, "param2": state, "Binary": _utf16_hex(f"{key}/{4 if running else 1}")},
    )


def sys7040(h: Host, t: float, user_sid: str, display: str, old: str, new: str, key: str) -> Rec:
    return Rec(
        t, h, SYS, 7040, {"param1": display, "param2": old, "param3": new, "param4": key}, user_sid=user_sid
    )


def sys7009(h: Host, t: float, display: str) -> Rec:
    return Rec(t, h, SYS, 7009, {"param1": "30000", "param2": display})


def sys7000(h: Host, t: float, display: str) -> Rec:
    return Rec(t, h, SYS, 7000, {"param1": display, "param2": "%%1053"})


# --- Defender -------------------------------------------------------------------------------



def defender1121(
    h: Host, t: float, rule_id: str, user: Account, path: str, process: str, target_cmd: str, parent_cmd: str
) -> Rec:
    """ASR rule in block mode stopped a process creation (names with spaces, as Defender writes them)."""
    return Rec(
        t,
        h,
        DEFENDER,
        1121,
        {
            "Product Name": "Microsoft Defender Antivirus",
            "Product Version": "4.18.24030.9",
            "Unused": "",
            "ID": rule_id,
            "Detection Time": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "User": user.qualified,
            "Path": path,
            "Process Name": process,
            "Security intelligence Version": "1.409.374.0",
            "Engine Version": "1.1.24030.4",
            "Target Commandline": target_cmd,
            "Parent Commandline": parent_cmd,
            "Involved File": "",
            "Inherited from parent": "",
        },
        user_sid=SYSTEM.sid,
    )


# --- PowerShell / Application --------------------------------------------------------------


def ps4104(h: Host, t: float, p: Proc, text: str, path: str = "", suspicious: bool = False) -> Rec:
    """A script block; ``suspicious`` ones (attack tooling) are logged at Warning, as Windows does."""
    rng = h.rng
    block = (
        f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-{rng.getrandbits(16):04x}-"
        f"{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}"
    )
    activity = (
        f"{rng.getrandbits(32):08X}-{rng.getrandbits(16):04X}-0000-{rng.getrandbits(16):04X}-"
        f"{rng.getrandbits(48):012X}"
    )
    return Rec(
        t,
        h,
        PS,
        4104,
        {
            "MessageNumber": 1,
            "MessageTotal": 1,
            "ScriptBlockText": text,
            "ScriptBlockId": block,
            "Path": path,
        },
        user_sid=p.user.sid,
        exec_pid=p.pid,
        activity=activity,
        meta=META_4104_WARNING if suspicious else None,
    )


def mssql33205(
    h: Host,
    t: float,
    seq: int,
    session: int,
    principal: str,
    client_ip: str,
    action: str,
    obj: str,
    statement: str,
) -> Rec:
    fields = [
        ("audit_schema_version", "1"),
        ("event_time", utc_ms(t) + "0000"),
        ("sequence_number", str(seq)),
        ("action_id", action.ljust(4)),
        ("succeeded", "true"),
        ("is_column_permission", "false"),
        ("session_id", str(session)),
        ("server_principal_id", "266"),
        ("database_principal_id", "1"),
        ("target_server_principal_id", "0"),
        ("target_database_principal_id", "0"),
        ("object_id", "-1008137134"),
        ("user_defined_event_id", "0"),
        ("transaction_id", str(14000 + seq)),
        ("class_type", "X "),
        ("duration_milliseconds", "0"),
        ("response_rows", "0"),
        ("affected_rows", "0"),
        ("client_ip", client_ip),
        ("permission_bitmask", "00000000000000000000000000000020"),
        ("sequence_group_id", "AE51063D-49C6-4990-A00D-6A3833CFECA0"),
        ("session_server_principal_name", principal),
        ("server_principal_name", principal),
        ("server_principal_sid", "8867c003d7407345abb6e4ed81382626"),
        ("database_principal_name", "dbo"),
        ("target_server_principal_name", ""),
        ("target_server_principal_sid", ""),
        ("target_database_principal_name", ""),
        ("server_instance_name", h.name),
        ("database_name", "master"),
        ("schema_name", "sys"),
        ("object_name", obj),
        ("statement", statement),
        ("additional_information", ""),
        ("user_defined_information", ""),
        ("application_name", "Microsoft SQL Server Management Studio - Query"),
    ]
    text = "".join(f"{k}:{v}\n" for k, v in fields)
    return Rec(t, h, APP, 33205, {"Data": text, "Binary": None})


def mssql15457(h: Host, t: float, option: str, old: str, new: str) -> Rec:
    return Rec(t, h, APP, 15457, {"Data": [option, old, new], "Binary": _utf16_hex(h.name)[:64]})
