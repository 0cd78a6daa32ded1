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

import os
from typing import Any

import orjson

from scmwatch.events.model import Event

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

# Winlogbeat / ECS dotted path → Windows name. ``winlog.event_data`` and ``winlog.user_data``
# are flattened to top level as they are.
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
    "@timestamp": "TimeCreated",
    "winlog.process.pid": "ProcessID",
    "winlog.process.thread.id": "ThreadID",
    "winlog.user.identifier": "UserID",
    "winlog.version": "Version",
    "winlog.task": "Task",
    "winlog.opcode": "Opcode",
    "winlog.keywords": "Keywords",
    "log.level": "Level",
}

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
    if type(value) is str:
        text = value.strip()
        try:
            return int(text, 16) if text[:2].lower() == "0x" else int(text)
        except ValueError:
            return value
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
    return out


def _dotted(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if type(cur) is not dict:
            return None
        if part in cur:
            cur = cur[part]
        elif path in obj:  # already-flattened export: {"winlog.channel": ...}
            return obj[path]
        else:
            return None
    return cur


def from_ecs(record: dict[str, Any]) -> dict[str, Any]:
    """Winlogbeat / ECS document → flat fields (``ECS_MAP``)."""
    out: dict[str, Any] = {}
    for path, name in ECS_MAP.items():
        if name in out:
            continue  # first listed source wins (winlog.* before generic ECS)
        value = _dotted(record, path)
        if value is not None:
            out[name] = value
    winlog = record.get("winlog") if type(record.get("winlog")) is dict else {}
    for key in ("event_data", "user_data"):
        data = winlog.get(key, record.get(f"winlog.{key}"))
        if type(data) is dict:
            flatten_data(data, out)
    _fix_system_types(out)
    return out


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


def iso_utc(value: Any) -> Any:
    """Timestamps of other exports → the EVTX form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    Text we cannot parse is kept as written (and counted by nobody: the event is still valid).
    """
    from scmwatch.events.model import format_time, parse_time

    if isinstance(value, str) and len(value) == 27 and value[10] == "T" and value[-1] == "Z":
        return value  # already canonical
    epoch = parse_time(value)
    return format_time(epoch) if epoch else value


def shape_of(record: dict[str, Any]) -> str | None:
    """Which export shape a JSON object is: ``evtx``, ``ecs``, ``zeek``, ``flat`` or None."""
    event = record.get("Event")
    if type(event) is dict and ("System" in event or "EventData" in event):
        return "evtx"
    if type(record.get("winlog")) is dict or "winlog.event_id" in record or "winlog.channel" in record:
        return "ecs"
    if "EventID" in record or "EventId" in record or "Channel" in record:
        return "flat"
    if "_path" in record or ("uid" in record and "ts" in record):
        return "zeek"
    return None


def from_evtx_json_py(text: str | bytes) -> dict[str, Any] | None:
    """One evtx JSON record's text → flat fields: ``from_evtx_dict(orjson.loads(text))``.

    ``from_evtx_json`` is this, or the C parser of ``_flatten.c`` that skips the nested dicts
    (and calls this function itself for any text it is not sure about).
    """
    return from_evtx_dict(orjson.loads(text))


# The C versions of ``from_evtx_dict_py`` and ``from_evtx_json_py`` (events/_flatten.c), when
# it was compiled at install time; SCMWATCH_PURE_PYTHON=1 forces the Python code (tests
# compare the two).
try:
    from scmwatch.events import _flatten
except ImportError:  # no compiler at install time
    _flatten = None  # type: ignore[assignment]

from_evtx_dict = from_evtx_dict_py
from_evtx_json = from_evtx_json_py
EvtxEvents = None  # the EVTX reader's loop in C (``_flatten.EvtxEvents``), when built
if _flatten is not None:
    _flatten.configure(SYSTEM_ATTRS, _CORE, _int, from_evtx_json_py, Event)
    if not os.environ.get("SCMWATCH_PURE_PYTHON"):
        from_evtx_dict = _flatten.from_evtx_dict
        from_evtx_json = _flatten.from_evtx_json
        EvtxEvents = _flatten.EvtxEvents
