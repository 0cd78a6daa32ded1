"""Normalization: every export shape to one flat dict with Windows' own field names.

Sigma rules name fields the way Windows writes them (``EventID``, ``Channel``, ``Image``,
``ServiceName``), so that is the one vocabulary of the event model. This module holds the only
field-name tables in scmwatch (documented in the README, "Event model"):

* ``SYSTEM_ATTRS``: how attributes of ``<System>`` children become top-level names
  (``Provider Name=`` → ``Provider_Name``, ``Execution ProcessID=`` → ``ProcessID``).
* ``ECS_MAP``: Winlogbeat / Elastic Common Schema paths → Windows names.
* ``FLAT_MAP``: NXLog / Security-Datasets top-level names → Windows names.

Values are never trimmed or re-cased: rules depend on exact text (trailing spaces matter to
``endswith``). Only System numbers that some formats deliver as text (XML, ECS ``event.code``)
are turned into ints so that ``EventID`` is an int whatever the source.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from scmwatch.events.model import Event
from scmwatch.events.sanitize import clean, suspicious
from scmwatch.native import pure_python

# <System> child element → {attribute: top-level name}. Children not listed here keep the
# generic ``<Child>_<Attr>`` form (the Sigma/evtx convention, e.g. ``Correlation_ActivityID``).
SYSTEM_ATTRS: dict[str, dict[str, str]] = {
    "Provider": {
        "Name": "Provider_Name",
        "Guid": "Provider_Guid",
        "EventSourceName": "Provider_EventSourceName",
    },
    "TimeCreated": {"SystemTime": "TimeCreated"},
    "Execution": {
        "ProcessID": "ProcessID",
        "ThreadID": "ThreadID",
        "ProcessorID": "Execution_ProcessorID",
        "SessionID": "Execution_SessionID",
        "KernelTime": "Execution_KernelTime",
        "UserTime": "Execution_UserTime",
        "ProcessorTime": "Execution_ProcessorTime",
    },
    "Correlation": {
        "ActivityID": "Correlation_ActivityID",
        "RelatedActivityID": "Correlation_RelatedActivityID",
    },
    "Security": {"UserID": "UserID"},
    "EventID": {"Qualifiers": "EventID_Qualifiers"},
}

# System fields that are integers in EVTX; text-based formats are converted to match.
SYSTEM_INTS = frozenset(
    {
        "EventID",
        "Version",
        "Level",
        "Task",
        "Opcode",
        "EventRecordID",
        "ProcessID",
        "ThreadID",
        "EventID_Qualifiers",
    }
)

# Winlogbeat / ECS dotted path → Windows name, System part. First listed source wins.
# ``winlog.event_data`` and ``winlog.user_data`` are flattened to top level as they are, then
# ``WINLOGBEAT_MODULES`` puts back what a module moved out of them.
ECS_MAP: dict[str, str] = {
    "winlog.event_id": "EventID",
    "event.code": "EventID",
    "winlog.channel": "Channel",
    "winlog.provider_name": "Provider_Name",
    "event.provider": "Provider_Name",
    "winlog.provider_guid": "Provider_Guid",
    "winlog.computer_name": "Computer",
    "host.name": "Computer",
    "winlog.record_id": "EventRecordID",
    "winlog.time_created": "TimeCreated",
    "@timestamp": "TimeCreated",
    "winlog.process.pid": "ProcessID",
    "winlog.process.thread.id": "ThreadID",
    "winlog.user.identifier": "UserID",
    "winlog.activity_id": "Correlation_ActivityID",
    "winlog.related_activity_id": "Correlation_RelatedActivityID",
    "winlog.version": "Version",
    "winlog.task": "Task",
    "winlog.opcode": "Opcode",
    "winlog.keywords": "Keywords",
    "log.level": "Level",
}


class ModuleField(NamedTuple):
    """One field a Winlogbeat module moved out of ``winlog.event_data``: where it went
    (``path``), its Windows name, how to turn the value back (``how``, see ``events.ecs``),
    and for which EventIDs (``only``: these alone; ``never``: all but these)."""

    path: str
    name: str
    how: str = ""
    only: frozenset[int] = frozenset()
    never: frozenset[int] = frozenset()


def _ids(*ids: int) -> frozenset[int]:
    return frozenset(ids)


# Sysmon events whose own process is ``Image``/``ProcessGuid``/``ProcessId`` (8 and 10 name it
# ``Source*``; 4, 6, 16 and the WMI events have none).
_SYSMON_NO_IMAGE = _ids(4, 6, 8, 10, 16, 19, 20, 21, 255)
_SYSMON_FILE = _ids(2, 11, 15, 23, 26, 27, 28, 29)
_SYSMON_HASHED = _ids(1, 6, 7, 15, 23, 26, 29)
_PS_SCRIPT = _ids(4104, 4105, 4106)
# Kerberos events write an IPv4 client as ``::ffff:a.b.c.d``; the module's ``source.ip`` drops the prefix.
_KERBEROS = _ids(4768, 4769, 4770, 4771, 4772, 4773)

# What the Winlogbeat modules (the default config: security, sysmon, powershell; Elastic Agent's
# Windows integration does the same) move out of ``winlog.event_data``, from the modules' own
# processors. A name already present in the document is never overwritten. The security and
# powershell rows are checked on Winlogbeat's own test pairs; the sysmon rows were written from
# the sysmon module's documented behaviour and are checked on hand-written documents.
WINLOGBEAT_MODULES: dict[str, tuple[ModuleField, ...]] = {
    "security": (
        ModuleField("process.pid", "NewProcessId", "hex", only=_ids(4688)),
        ModuleField("process.executable", "NewProcessName", only=_ids(4688)),
        ModuleField("process.parent.executable", "ParentProcessName", only=_ids(4688)),
        ModuleField("process.parent.pid", "ProcessId", "hex", only=_ids(4688)),
        ModuleField("process.command_line", "CommandLine", only=_ids(4688)),
        ModuleField("process.pid", "ProcessId", "hex", never=_ids(4688)),
        ModuleField("process.executable", "ProcessName", never=_ids(4688)),
        ModuleField("source.ip", "IpAddress", "mapped_ipv4", only=_KERBEROS),
        ModuleField("source.ip", "IpAddress"),
        ModuleField("source.port", "IpPort", "text"),
        ModuleField("source.domain", "WorkstationName"),
    ),
    "sysmon": (
        ModuleField("process.entity_id", "ProcessGuid", "guid", never=_SYSMON_NO_IMAGE),
        ModuleField("process.pid", "ProcessId", "int", never=_SYSMON_NO_IMAGE),
        ModuleField("process.executable", "Image", never=_SYSMON_NO_IMAGE),
        ModuleField("process.entity_id", "SourceProcessGuid", "guid", only=_ids(8, 10)),
        ModuleField("process.pid", "SourceProcessId", "int", only=_ids(8, 10)),
        ModuleField("process.thread.id", "SourceThreadId", "int", only=_ids(10)),
        ModuleField("process.executable", "SourceImage", only=_ids(8, 10)),
        ModuleField("process.command_line", "CommandLine", only=_ids(1)),
        ModuleField("process.working_directory", "CurrentDirectory", only=_ids(1)),
        ModuleField("process.pe.original_file_name", "OriginalFileName", only=_ids(1)),
        ModuleField("process.pe.file_version", "FileVersion", only=_ids(1)),
        ModuleField("process.pe.description", "Description", only=_ids(1)),
        ModuleField("process.pe.product", "Product", only=_ids(1)),
        ModuleField("process.pe.company", "Company", only=_ids(1)),
        ModuleField("process.parent.entity_id", "ParentProcessGuid", "guid", only=_ids(1)),
        ModuleField("process.parent.pid", "ParentProcessId", "int", only=_ids(1)),
        ModuleField("process.parent.executable", "ParentImage", only=_ids(1)),
        ModuleField("process.parent.command_line", "ParentCommandLine", only=_ids(1)),
        ModuleField("user", "User", "user"),
        ModuleField("rule.name", "RuleName"),
        ModuleField("hash", "Hashes", "hashes", only=_SYSMON_HASHED - _ids(15)),
        ModuleField("process.hash", "Hashes", "hashes", only=_ids(1)),
        ModuleField("file.hash", "Hashes", "hashes", only=_SYSMON_HASHED - _ids(1, 15)),
        ModuleField("dll.hash", "Hashes", "hashes", only=_ids(7)),
        ModuleField("hash", "Hash", "hashes", only=_ids(15)),
        ModuleField("file.path", "TargetFilename", only=_SYSMON_FILE),
        ModuleField("dll.path", "ImageLoaded", only=_ids(7)),
        ModuleField("file.path", "ImageLoaded", only=_ids(6, 7)),
        ModuleField("dll.pe.original_file_name", "OriginalFileName", only=_ids(7)),
        ModuleField("file.pe.original_file_name", "OriginalFileName", only=_ids(7)),
        ModuleField("dll.pe.file_version", "FileVersion", only=_ids(7)),
        ModuleField("file.pe.file_version", "FileVersion", only=_ids(7)),
        ModuleField("dll.pe.description", "Description", only=_ids(7)),
        ModuleField("file.pe.description", "Description", only=_ids(7)),
        ModuleField("dll.pe.product", "Product", only=_ids(7)),
        ModuleField("file.pe.product", "Product", only=_ids(7)),
        ModuleField("dll.pe.company", "Company", only=_ids(7)),
        ModuleField("file.pe.company", "Company", only=_ids(7)),
        ModuleField("dll.code_signature.signed", "Signed", "text", only=_ids(7)),
        ModuleField("file.code_signature.signed", "Signed", "text", only=_ids(6, 7)),
        ModuleField("dll.code_signature.subject_name", "Signature", only=_ids(7)),
        ModuleField("file.code_signature.subject_name", "Signature", only=_ids(6, 7)),
        ModuleField("dll.code_signature.status", "SignatureStatus", only=_ids(7)),
        ModuleField("file.code_signature.status", "SignatureStatus", only=_ids(6, 7)),
        ModuleField("network.transport", "Protocol", only=_ids(3)),
        ModuleField("network.direction", "Initiated", "direction", only=_ids(3)),
        ModuleField("network.protocol", "DestinationPortName", only=_ids(3)),
        ModuleField("source.ip", "SourceIp", only=_ids(3)),
        ModuleField("source.domain", "SourceHostname", only=_ids(3)),
        ModuleField("source.port", "SourcePort", "int", only=_ids(3)),
        ModuleField("destination.ip", "DestinationIp", only=_ids(3)),
        ModuleField("destination.domain", "DestinationHostname", only=_ids(3)),
        ModuleField("destination.port", "DestinationPort", "int", only=_ids(3)),
        ModuleField("registry.path", "TargetObject", only=_ids(12, 13, 14)),
        ModuleField("registry.data.strings", "Details", "first", only=_ids(13)),
        ModuleField("file.name", "PipeName", only=_ids(17, 18)),
        ModuleField("dns.question.name", "QueryName", only=_ids(22)),
        ModuleField("sysmon.dns.status", "QueryStatus", only=_ids(22)),
        ModuleField("dns.answers", "QueryResults", "dns", only=_ids(22)),
        ModuleField("@timestamp", "UtcTime", "utctime"),
    ),
    "powershell": (
        ModuleField("powershell.file.script_block_text", "ScriptBlockText", only=_PS_SCRIPT),
        ModuleField("powershell.file.script_block_id", "ScriptBlockId", only=_PS_SCRIPT),
        ModuleField("file.path", "Path", only=_ids(4104)),
        ModuleField("powershell.sequence", "MessageNumber", "int", only=_ids(4104)),
        ModuleField("powershell.total", "MessageTotal", "int", only=_ids(4104)),
        ModuleField("powershell.runspace_id", "RunspaceId", only=_ids(4105, 4106)),
        ModuleField("message", "ContextInfo/UserData/Payload", "psmessage", only=_ids(4103)),
        ModuleField("message", "Data", "psmessage", only=_ids(400, 403, 600, 800)),
    ),
}

# The powershell module parses ``ContextInfo``/``Payload`` (4103) and the classic channel's
# ``Data`` (400, 403, 600, 800) into fields and drops them; the rendered ``message`` still
# holds them whole. Message template of each event → its insertion strings p1, p2, p3 (Windows'
# CRLF line ends, which Winlogbeat turned into LF, are restored). ``True``: the last string
# ended with a CRLF that Winlogbeat trimmed from the message.
PS_MESSAGES: dict[int, tuple[str, bool]] = {
    400: (r"Engine state is changed from (?P<p2>.*?) to (?P<p1>.*?)\. \n\nDetails: \n(?P<p3>.*)", False),
    403: (r"Engine state is changed from (?P<p2>.*?) to (?P<p1>.*?)\. \n\nDetails: \n(?P<p3>.*)", False),
    600: (r'Provider "(?P<p1>.*?)" is (?P<p2>.*?)\. \n\nDetails: \n(?P<p3>.*)', False),
    800: (
        r"Pipeline execution details for command line: (?P<p1>.*?)\. \n\nContext Information: \n"
        r"(?P<p2>.*?) \n\nDetails: \n(?P<p3>.*)",
        True,
    ),
    4103: (r"(?P<p3>.*)\n\nContext:\n(?P<p1>.*?)\n\nUser Data:\n?(?P<p2>.*)", False),
}

# EventData values the modules split into lists → the one string Windows writes (each item
# as ``lead + item + trail``, joined by ``sep``; bare numbers get their ``%%`` back).
EVENTDATA_LISTS: dict[str, tuple[str, str, str]] = {
    "PrivilegeList": ("", "", "\r\n\t\t\t"),
    "AccessMask": ("%%", "\r\n\t\t\t\t", ""),
    "AccessList": ("%%", "\r\n\t\t\t\t", ""),
    "UserAccountControl": ("\r\n\t\t%%", "", ""),
    "SidList": ("\r\n\t\t", "", ""),
}

# EventData fields that are numbers in the EVTX record but text in Winlogbeat's event_data, per
# module (the same name is text elsewhere: 5156's SourcePort, 4624's IpPort), and booleans.
EVENTDATA_INTS: dict[str, frozenset[str]] = {
    "security": frozenset(
        {
            "LogonType",
            "KeyLength",
            "ServiceStartType",
            "TdoType",
            "TdoDirection",
            "TdoAttributes",
            "PuaCount",
            "CrashOnAuditFailValue",
            "RestrictedSidCount",
        }
    ),
    "sysmon": frozenset(
        {
            "ProcessId",
            "ParentProcessId",
            "SourcePort",
            "DestinationPort",
            "TerminalSessionId",
            "SourceProcessId",
            "TargetProcessId",
            "SourceThreadId",
            "NewThreadId",
        }
    ),
    "powershell": frozenset({"MessageNumber", "MessageTotal"}),
}
EVENTDATA_BOOLS: dict[str, frozenset[str]] = {
    "sysmon": frozenset({"Initiated", "SourceIsIpv6", "DestinationIsIpv6", "IsExecutable"}),
}

# Channel of a module's documents that lack ``winlog.channel`` (search exports of ECS fields).
MODULE_CHANNELS: dict[str, str] = {
    "security": "Security",
    "sysmon": "Microsoft-Windows-Sysmon/Operational",
    "powershell": "Windows PowerShell",
}
CHANNEL_MODULES: dict[str, str] = {
    "Security": "security",
    "Microsoft-Windows-Sysmon/Operational": "sysmon",
    "Windows PowerShell": "powershell",
    "Microsoft-Windows-PowerShell/Operational": "powershell",
}

# Winlogbeat writes Level, Opcode, Task and Keywords as the names Windows renders. Back to
# numbers where the name says the number: standard level and opcode names, the Security
# auditing provider's tasks (its subcategories) and the standard keywords. Anything else is
# dropped, not kept as a wrong-typed value. Security-Auditing events are all Level 0
# ("LogAlways", rendered "Information"), so its "information" is 0.
LEVEL_NAMES = {"critical": 1, "error": 2, "warning": 3, "information": 4, "verbose": 5}
OPCODE_NAMES = {
    "Info": 0, "Start": 1, "Stop": 2, "DCStart": 3, "DCStop": 4, "Extension": 5,
    "Reply": 6, "Resume": 7, "Suspend": 8, "Send": 9, "Receive": 240,
}  # fmt: skip
KEYWORD_NAMES = {
    "Audit Success": 0x20000000000000,
    "Audit Failure": 0x10000000000000,
    "Classic": 0x80000000000000,
}
# The channel bits Windows adds to an event's keywords in the Security log, by provider.
SECURITY_CHANNEL_KEYWORD = {
    "Microsoft-Windows-Security-Auditing": 0x8000000000000000,
    "Microsoft-Windows-Eventlog": 0x4000000000000000,
}
SECURITY_TASKS: dict[str, int] = {
    name: base + i
    for base, names in (
        (12288, ("Security State Change", "Security System Extension", "System Integrity", "IPsec Driver",
                 "Other System Events")),
        (12544, ("Logon", "Logoff", "Account Lockout", "IPsec Main Mode", "Special Logon", "IPsec Quick Mode",
                 "IPsec Extended Mode", "Other Logon/Logoff Events", "Network Policy Server",
                 "User / Device Claims", "Group Membership")),
        (12800, ("File System", "Registry", "Kernel Object", "SAM", "Other Object Access Events",
                 "Certification Services", "Application Generated", "Handle Manipulation", "File Share",
                 "Filtering Platform Packet Drop", "Filtering Platform Connection", "Detailed File Share",
                 "Removable Storage", "Central Policy Staging")),
        (13056, ("Sensitive Privilege Use", "Non Sensitive Privilege Use", "Other Privilege Use Events")),
        (13312, ("Process Creation", "Process Termination", "DPAPI Activity", "RPC Events",
                 "Plug and Play Events", "Token Right Adjusted Events")),
        (13568, ("Audit Policy Change", "Authentication Policy Change", "Authorization Policy Change",
                 "MPSSVC Rule-Level Policy Change", "Filtering Platform Policy Change",
                 "Other Policy Change Events")),
        (13824, ("User Account Management", "Computer Account Management", "Security Group Management",
                 "Distribution Group Management", "Application Group Management",
                 "Other Account Management Events")),
        (14080, ("Directory Service Access", "Directory Service Changes", "Directory Service Replication",
                 "Detailed Directory Service Replication")),
        (14336, ("Credential Validation", "Kerberos Service Ticket Operations", "Other Account Logon Events",
                 "Kerberos Authentication Service")),
    )
    for i, name in enumerate(names)
}  # fmt: skip

# Zeek JSON written with ``Log::default_scope_sep = "_"`` (OTRF, many shippers): the fields of
# Zeek's nested records back to Zeek's own ``.`` names, which Sigma's zeek rules use. Only these
# names: ``_`` is also an ordinary character of Zeek field names (``resp_h``, ``named_pipe``).
ZEEK_SCOPED: dict[str, str] = {
    f"{record}_{name}": f"{record}.{name}"
    for record, names in (
        ("id", ("orig_h", "orig_p", "resp_h", "resp_p", "vlan", "vlan_inner")),
        ("times", ("modified", "accessed", "created", "changed")),
        ("certificate", ("version", "serial", "subject", "issuer", "not_valid_before", "not_valid_after",
                         "key_alg", "sig_alg", "key_type", "key_length", "exponent", "curve", "cn")),
        ("san", ("dns", "uri", "email", "ip")),
        ("basic_constraints", ("ca", "path_len")),
    )
    for name in names
}  # fmt: skip

# NXLog / Security-Datasets (Mordor) flat names → Windows names. EventData fields are already
# at top level in these exports and keep their names.
FLAT_MAP: dict[str, str] = {
    "Hostname": "Computer",
    "host": "Computer",
    "SourceName": "Provider_Name",
    "ProviderName": "Provider_Name",
    "ProviderGuid": "Provider_Guid",
    "RecordNumber": "EventRecordID",
    "EventRecordId": "EventRecordID",
    "EventId": "EventID",
    "ExecutionProcessID": "ProcessID",
    "ExecutionThreadID": "ThreadID",
    "UserSID": "UserID",
}
# Time keys of flat exports, best first: ``@timestamp`` is UTC in Security-Datasets, while
# NXLog's ``EventTime`` is the collector's local time (taken as UTC, documented).
FLAT_TIME_KEYS = ("TimeCreated", "@timestamp", "UtcTime", "EventTime", "timestamp")
# NXLog bookkeeping that says nothing about the event itself.
FLAT_DROP = frozenset({"EventReceivedTime", "SourceModuleName", "SourceModuleType", "@version", "tags"})

_CORE = ("EventID", "Channel", "Computer", "EventRecordID", "TimeCreated", "Provider_Name")


def _int(value: Any) -> Any:
    """A System number written as text, as an int when it is a plain ASCII decimal.

    Anything else (``" 4688"``, ``"+4688"``, ``"0x1250"``, fullwidth ``"４６８８"``, ``"04688"``)
    keeps its original text: Python's ``int`` would accept most of these, and a rule for 4688
    must not match a value that only a lenient parser reads as 4688. Rules compare the kept
    text exactly as they compare any other non-decimal string.
    """
    if type(value) is str and value.isascii() and value.isdigit() and (value[0] != "0" or value == "0"):
        return int(value)
    return value


def _system_object(key: str, value: dict[str, Any], out: dict[str, Any]) -> None:
    """One ``<System>`` child that evtx rendered as an object (attributes, maybe text)."""
    attrs = value.get("#attributes")
    if "#text" in value:
        out[key] = value["#text"]
    elif attrs:
        del out[key]
    else:
        out[key] = None
        return
    if attrs:
        names = SYSTEM_ATTRS.get(key)
        for attr, attr_value in attrs.items():
            name = names.get(attr) if names else None
            out[name or f"{key}_{attr}"] = attr_value


def flatten_system(system: dict[str, Any], out: dict[str, Any]) -> None:
    """``Event.System`` → top-level names (see ``SYSTEM_ATTRS``): copy, then fix the objects."""
    out.update(system)
    for key, value in system.items():
        if type(value) is dict:
            _system_object(key, value, out)


def flatten_data(data: Any, out: dict[str, Any]) -> None:
    """``EventData`` / ``UserData`` wrapper contents → top level.

    Unnamed ``<Data>`` items become the list ``Data`` (in order); ``#attributes`` of the
    wrapper are dropped; spaces in names are removed as Sigma does (``Threat Name`` →
    ``ThreatName``). System names already set are not overwritten.
    """
    if type(data) is not dict:
        if data is not None:
            out["Data"] = data
        return
    for key, value in data.items():
        if key == "#attributes":
            continue
        if type(value) is dict:
            if "#text" in value:
                value = value["#text"]
            elif len(value) <= 1 and (not value or "#attributes" in value):
                value = None  # an empty element that only carries attributes
        if " " in key:
            key = key.replace(" ", "")
        if key in out and key in _CORE:
            key = f"EventData_{key}"
        out[key] = value


def flatten_user_data(user_data: Any, out: dict[str, Any]) -> None:
    """``UserData`` holds one wrapper element (e.g. ``Operation_ClientFailure``); take its fields."""
    if type(user_data) is not dict:
        return
    for key, value in user_data.items():
        if key == "#attributes":
            continue
        if type(value) is dict:
            flatten_data(value, out)
        else:
            out[key] = value


def from_evtx_dict_py(record: dict[str, Any]) -> dict[str, Any] | None:
    """evtx / evtx_dump JSON (``{"Event": {"System": ..., "EventData": ...}}``) → flat fields.

    ``from_evtx_dict`` is this function, or its C twin from ``_flatten.c`` when that was built.
    """
    event = record.get("Event") if type(record) is dict else None
    if type(event) is not dict:
        return None
    out: dict[str, Any] = {}
    if type(event.get("System")) is dict:
        flatten_system(event["System"], out)
    if event.get("EventData") is not None:
        flatten_data(event["EventData"], out)
    if event.get("UserData") is not None:
        flatten_user_data(event["UserData"], out)
    eid = out.get("EventID")
    if type(eid) is not int and eid is not None:
        out["EventID"] = _int(eid)
    brace_guids(out)
    return out


def _is_bare_guid(value: str) -> bool:
    return (
        len(value) == 36
        and value[8] == value[13] == value[18] == value[23] == "-"
        and all(ch in _UPPER_HEX for ch in value.replace("-", ""))
    )


_UPPER_HEX = frozenset("0123456789ABCDEF")


def brace_guids(out: dict[str, Any]) -> None:
    """evtx renders GUID-typed values as ``0CCE9243-69AE-...``; Windows, and so every Sigma
    rule, as ``{0CCE9243-69AE-...}``. A top-level value of exactly the evtx form (36 characters,
    upper-case hex) gets its braces back; lower-case GUIDs are string-typed data in Windows
    (``ScriptBlockId``) and stay as they are. Twin of ``brace_guids`` in ``_flatten.c``."""
    for key, value in out.items():
        if type(value) is str and len(value) == 36 and _is_bare_guid(value):
            out[key] = "{" + value + "}"


def from_flat(record: dict[str, Any]) -> dict[str, Any]:
    """NXLog / Security-Datasets flat object → fields (``FLAT_MAP``)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in FLAT_DROP:
            continue
        name = FLAT_MAP.get(key, key)
        if name in out and name != key:
            continue  # a genuine Windows-named key already present wins
        if " " in name:
            name = name.replace(" ", "")
        out[name] = value
    if "TimeCreated" not in out or type(out["TimeCreated"]) is dict:
        for key in FLAT_TIME_KEYS[1:]:
            if record.get(key):
                out["TimeCreated"] = record[key]
                break
    _fix_system_types(out)
    return out


def _fix_system_types(out: dict[str, Any]) -> None:
    for key in SYSTEM_INTS:
        value = out.get(key)
        if type(value) is str:
            out[key] = _int(value)
    ts = out.get("TimeCreated")
    if ts is not None:
        out["TimeCreated"] = iso_utc(ts)


# Windows XML's SystemTime (``2024-05-06T07:59:37.3407080Z``): its canonical form drops the 7th
# digit. Parsing and printing it gave the same for every valid time from 1970 to 2099 (a float
# epoch then resolves well under half a microsecond; tests/test_events_readers.py compares the
# two) at 13 us an event, a third of the XML reader's time. The pattern checks the clock's
# ranges, so only the date needs ``datetime``; the few distinct dates of a log are remembered
# (5 us an event before, with the whole datetime built each time).
_SEVEN_DIGITS = re.compile(r"(19[7-9][0-9]|20[0-9][0-9])-[0-9]{2}-[0-9]{2}"
                           r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{7}Z")
_DAYS: dict[str, bool] = {}  # date text -> a real date? (bounded: hostile logs can vary it)


def _valid_date(value: str) -> bool:
    day = value[:10]
    ok = _DAYS.get(day)
    if ok is None:
        try:
            datetime(int(day[:4]), int(day[5:7]), int(day[8:10]))
            ok = True
        except ValueError:
            ok = False
        if len(_DAYS) >= 4096:
            _DAYS.clear()
        _DAYS[day] = ok
    return ok


def iso_utc(value: Any) -> Any:
    """Timestamps of other exports → the EVTX form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    Text we cannot parse is kept as written (and counted by nobody: the event is still valid).
    """
    if value.__class__ is str and value[-1:] == "Z":
        if len(value) == 27 and value[10] == "T":
            return value  # already canonical
        if len(value) == 28 and _SEVEN_DIGITS.fullmatch(value) and _valid_date(value):
            return value[:26] + "Z"
    from scmwatch.events.model import format_time, parse_time

    epoch = parse_time(value)
    return format_time(epoch) if epoch else value


_WINDOWS_MODULES = frozenset({"security", "sysmon", "powershell", "windows", "system"})


def is_ecs(record: dict[str, Any]) -> bool:
    """A Winlogbeat / Elastic document: nested ``winlog``, flattened ``winlog.*`` keys, a search
    hit (``_source`` or ``fields``), or ECS ``event.code`` with a Windows provider or module."""
    if type(record.get("winlog")) is dict:
        return True
    source = record.get("_source")
    if type(source) is dict and is_ecs(source):
        return True
    fields = record.get("fields")
    if type(fields) is dict and any(k.startswith("winlog.") or k == "event.code" for k in fields):
        return True
    if any(type(k) is str and k.startswith("winlog.") for k in record):
        return True
    event = record.get("event")
    event = event if type(event) is dict else {}
    code = event.get("code", record.get("event.code"))
    if code is None:
        return False
    module = event.get("module", record.get("event.module"))
    return bool(event.get("provider", record.get("event.provider"))) or module in _WINDOWS_MODULES


def shape_of(record: dict[str, Any]) -> str | None:
    """Which export shape a JSON object is: ``evtx``, ``ecs``, ``zeek``, ``flat`` or None."""
    event = record.get("Event")
    if type(event) is dict and ("System" in event or "EventData" in event):
        return "evtx"
    if is_ecs(record):
        return "ecs"
    if "EventID" in record or "EventId" in record or "Channel" in record:
        return "flat"
    if "_path" in record or "@stream" in record or ("uid" in record and "ts" in record):
        return "zeek"
    return None


def from_evtx_json_py(text: str | bytes) -> dict[str, Any] | None:
    """One evtx JSON record's text → flat fields: ``from_evtx_dict(orjson.loads(text))``.

    ``from_evtx_json`` is this, or the C parser of ``_flatten.c`` that skips the nested dicts
    (and calls this function itself for any text it is not sure about, which includes every
    record nested deeper than 64 levels or holding a lone surrogate escape). A record nested
    deeper than ``sanitize.MAX_DEPTH`` raises ``TooDeep`` (a ValueError: the EVTX reader counts
    it as ``evtx-record``); lone surrogates become U+FFFD.
    """
    record = orjson.loads(text)
    if suspicious(text):
        clean(record)
    return from_evtx_dict(record)


# The C versions of ``from_evtx_dict_py`` and ``from_evtx_json_py`` (events/_flatten.c), when
# it was compiled at install time, unless ``scmwatch.native.pure_python()`` (tests compare the
# two).
try:
    from scmwatch.events import _flatten
except ImportError:  # no compiler at install time
    _flatten = None  # type: ignore[assignment]

from_evtx_dict = from_evtx_dict_py
from_evtx_json = from_evtx_json_py
EvtxEvents = None  # the EVTX reader's loop in C (``_flatten.EvtxEvents``), when built
NdjsonEvents = None  # the NDJSON reader's loop for evtx_dump and flat lines (``_flatten.NdjsonEvents``)
if _flatten is not None:
    _flatten.configure(SYSTEM_ATTRS, _CORE, _int, from_evtx_json_py, Event)
    _flatten.configure_flat(FLAT_MAP, FLAT_DROP, FLAT_TIME_KEYS[1:], tuple(SYSTEM_INTS), iso_utc)
    if not pure_python():
        from_evtx_dict = _flatten.from_evtx_dict
        from_evtx_json = _flatten.from_evtx_json
        EvtxEvents = _flatten.EvtxEvents
        NdjsonEvents = _flatten.NdjsonEvents
