"""The few event fields that explain why a rule fired (for the table and CSV views).

Order: the rule's ``fields:``, the fields its condition tests, then the *key fields* of the
event's kind (:data:`KEY_FIELDS`, by Channel and EventID), then a general fallback. A rule
that matches on EventID alone (``EventID: 1102``) tests no field worth showing, so without the
key fields its row would say nothing beyond its title.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from scmwatch.alerts import Alert

# Gating fields say nothing the rule title does not already say.
GATING = frozenset({"EventID", "Channel", "Provider_Name", "Provider_Guid"})
# When a rule names no field (keyword rules, correlations), these usually tell the story.
FALLBACK = ("ServiceName", "ImagePath", "ServiceFileName", "Image", "CommandLine", "ParentImage",
             "TargetObject", "Details", "RelativeTargetName", "ShareName", "IpAddress", "TargetUserName")
MAX_FIELDS = 4
MAX_VALUE = 160

_SECURITY = "security"
_SYSTEM = "system"
_SYSMON = "microsoft-windows-sysmon/operational"
_PS = "microsoft-windows-powershell/operational"
_DEFENDER = "microsoft-windows-windows defender/operational"
# (lower-cased Channel, EventID) -> the fields that say what this kind of event is about,
# most telling first (names as the readers normalise them: docs/architecture.md).
KEY_FIELDS: dict[tuple[str, int], tuple[str, ...]] = {
    (_SECURITY, 1102): ("SubjectUserName", "SubjectDomainName"),
    (_SYSTEM, 104): ("SubjectUserName", "EventData_Channel", "BackupPath"),
    (_SYSTEM, 7045): ("ServiceName", "ImagePath", "AccountName", "StartType"),
    (_SYSTEM, 7036): ("param1", "param2"),
    (_SYSTEM, 7040): ("param1", "param2", "param3", "param4"),
    (_SYSTEM, 7000): ("param1", "param2"),
    (_SYSTEM, 7009): ("param1", "param2"),
    (_SYSTEM, 7034): ("param1", "param2"),
    (_SECURITY, 4697): ("ServiceName", "ServiceFileName", "ServiceAccount", "SubjectUserName"),
    (_SECURITY, 4624): ("TargetUserName", "IpAddress", "LogonType", "WorkstationName"),
    (_SECURITY, 4625): ("TargetUserName", "IpAddress", "LogonType", "Status"),
    (_SECURITY, 4648): ("SubjectUserName", "TargetUserName", "TargetServerName", "ProcessName"),
    (_SECURITY, 4672): ("SubjectUserName", "PrivilegeList"),
    (_SECURITY, 4688): ("NewProcessName", "CommandLine", "ParentProcessName", "SubjectUserName"),
    (_SECURITY, 4657): ("ObjectName", "ObjectValueName", "NewValue", "ProcessName"),
    (_SECURITY, 4674): ("ObjectName", "PrivilegeList", "ProcessName", "SubjectUserName"),
    (_SECURITY, 4720): ("TargetUserName", "SubjectUserName"),
    (_SECURITY, 4732): ("TargetUserName", "MemberSid", "SubjectUserName"),
    (_SECURITY, 5140): ("ShareName", "IpAddress", "SubjectUserName"),
    (_SECURITY, 5145): ("ShareName", "RelativeTargetName", "IpAddress", "SubjectUserName"),
    (_SECURITY, 5156): ("Application", "SourceAddress", "DestAddress", "DestPort"),
    (_SYSMON, 1): ("Image", "CommandLine", "ParentImage", "User"),
    (_SYSMON, 3): ("Image", "SourceIp", "DestinationIp", "DestinationPort"),
    (_SYSMON, 7): ("Image", "ImageLoaded", "Signed"),
    (_SYSMON, 11): ("Image", "TargetFilename"),
    (_SYSMON, 12): ("EventType", "TargetObject", "Image"),
    (_SYSMON, 13): ("TargetObject", "Details", "Image"),
    (_SYSMON, 17): ("PipeName", "Image"),
    (_SYSMON, 18): ("PipeName", "Image"),
    (_SYSMON, 22): ("QueryName", "QueryResults", "Image"),
    (_PS, 4103): ("Payload", "ContextInfo"),
    (_PS, 4104): ("ScriptBlockText", "Path"),
    (_DEFENDER, 1121): ("Path", "ProcessName", "ID"),
    (_DEFENDER, 1122): ("Path", "ProcessName", "ID"),
}


def key_fields(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """The key field names for an event's (Channel, EventID), or ``()``."""
    channel = fields.get("Channel")
    try:
        eid = int(fields.get("EventID"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ()
    if not isinstance(channel, str):
        return ()
    return KEY_FIELDS.get((channel.lower(), eid), ())


def explain(alert: Alert, rule: Any | None, max_fields: int = MAX_FIELDS) -> list[tuple[str, str]]:
    """``[(field, value)]``: the rule's ``fields:``, the fields its condition tests, the event's
    key fields, then the general fallback; a correlation: its group-by values."""
    f = alert.event.fields
    names: list[str] = []
    if rule is not None:
        names.extend(getattr(rule, "fields", None) or [])
        names.extend(getattr(rule, "detection_fields", None) or [])
    if alert.correlation:
        gb = alert.correlation.get("group_by")
        if isinstance(gb, Mapping):
            return [(str(k), _short(v)) for k, v in list(gb.items())[:max_fields]]
    names.extend(key_fields(f))
    names.extend(FALLBACK)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n in names:
        if n in seen or n in GATING:
            continue
        seen.add(n)
        v = f.get(n)
        if v in (None, "", []):
            continue
        out.append((n, _short(v)))
        if len(out) >= max_fields:
            break
    return out


def where(alert: Alert) -> str:
    """``EventID file#record`` of the alert's event (Channel for Zeek): where the raw record is."""
    ev = alert.event
    eid = ev.fields.get("EventID")
    if eid in (None, ""):
        eid = ev.fields.get("Channel")
    name = os.path.basename(ev.source) or ev.source
    place = f"{name}#{ev.record_id}" if ev.record_id is not None else name
    return f"{eid} {place}" if eid not in (None, "") else place


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else str(v)
    if not text.isprintable() or "  " in text:
        text = " ".join(text.split())  # display only: multi-line / tab-padded values on one line
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"
