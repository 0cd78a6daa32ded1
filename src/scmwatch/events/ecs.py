"""Winlogbeat / Elastic documents → the fields the EVTX record itself gives.

Winlogbeat's modules (security, sysmon, powershell: on in its default configuration) move the
EventData fields Sigma rules use into ECS fields, write Level/Task/Opcode/Keywords as names,
split some strings into lists and lower-case GUIDs. Reading only ``winlog.*`` would make rules
silently miss on this input, so this module puts every field back under its Windows name in the
form Windows writes it, driven by the tables in ``normalize`` (``ECS_MAP``,
``WINLOGBEAT_MODULES``, ``PS_MESSAGES``, ``EVENTDATA_*``; documented in the README). What cannot
be recovered (Winlogbeat drops empty values, ``EventID_Qualifiers``, Sysmon's ``UtcTime`` when
the module made it ``@timestamp``) is listed there too.

A document may come nested (Winlogbeat's own output), with flattened dotted keys
(``"winlog.event_data.PrivilegeList": ...``), as a search hit (``_source``), or as search-API
``fields`` where every value is a list; all are first turned into one dotted view.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from scmwatch.events.model import parse_time
from scmwatch.events.normalize import (
    CHANNEL_MODULES,
    ECS_MAP,
    EVENTDATA_BOOLS,
    EVENTDATA_INTS,
    EVENTDATA_LISTS,
    KEYWORD_NAMES,
    LEVEL_NAMES,
    MODULE_CHANNELS,
    OPCODE_NAMES,
    PS_MESSAGES,
    SECURITY_CHANNEL_KEYWORD,
    SECURITY_TASKS,
    WINLOGBEAT_MODULES,
    ModuleField,
    _fix_system_types,
    _flatten,
    _int,
    flatten_data,
)
from scmwatch.native import pure_python

_EVENT_DATA = "winlog.event_data."
_USER_DATA = "winlog.user_data."
_GUID = re.compile(r"\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}")
_PS_MESSAGES = {eid: (re.compile(pattern, re.S), trail) for eid, (pattern, trail) in PS_MESSAGES.items()}
_HASH_ORDER = ("sha1", "md5", "sha256", "imphash")  # the order Sysmon writes them in
_AUDITING = "Microsoft-Windows-Security-Auditing"


def _walk_py(obj: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    """Every leaf of ``obj`` under ``prefix`` + its dotted path (the first one of a path kept)."""
    for key, value in obj.items():
        if type(key) is not str:
            continue
        path = prefix + key
        if type(value) is dict and value:
            _walk_py(value, path + ".", out)
        elif path not in out:
            out[path] = value


def dotted_view(record: dict[str, Any]) -> dict[str, Any]:
    """Every leaf of a document under its dotted path, whichever of the export shapes it has."""
    flat: dict[str, Any] = {}
    source = record.get("_source")
    _walk(source if type(source) is dict else record, "", flat)
    fields = record.get("fields")
    if type(fields) is dict and (source is not None or all(type(v) is list for v in fields.values())):
        for key, value in fields.items():
            if key.endswith(".keyword") or key in flat:
                continue
            flat[key] = value[0] if type(value) is list and len(value) == 1 else value
    return flat


def _module(flat: dict[str, Any]) -> str | None:
    module = flat.get("event.module")
    if module in WINLOGBEAT_MODULES:
        return module
    return CHANNEL_MODULES.get(flat.get("winlog.channel"))  # type: ignore[arg-type]


def _event_data_py(flat: dict[str, Any]) -> dict[str, Any]:
    """The ``winlog.event_data.*`` and ``winlog.user_data.*`` leaves under their own names."""
    data: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(_EVENT_DATA):
            data[key[len(_EVENT_DATA) :]] = value
        elif key.startswith(_USER_DATA):
            data[key[len(_USER_DATA) :]] = value
    return data


_ECS_PAIRS = tuple(ECS_MAP.items())


def _pick_py(flat: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """``{name: flat[path]}`` over ``pairs`` in order: None values skipped, the first path of a
    name that has a value wins."""
    out: dict[str, Any] = {}
    for path, name in pairs:
        if name not in out:
            value = flat.get(path)
            if value is not None:
                out[name] = value
    return out


def _upper_guids_py(out: dict[str, Any]) -> None:
    """Every top-level ``{guid}`` value in upper case, as Windows writes it."""
    for key, value in out.items():
        if type(value) is str and len(value) == 38 and value[0] == "{" and _GUID.fullmatch(value):
            out[key] = value.upper()


# The walks over every key of a document and the per-name loops, in C when ``_flatten`` was
# built (the tests compare them): reading Winlogbeat NDJSON (the shared golden documents as
# lines) went from 0.12-0.14 to 0.17-0.19 x ``orjson.loads`` per line with the two walks in C
# (old and new code in one run, load ~3); see README for the pick, GUID and scan functions.
_walk = _walk_py
_event_data = _event_data_py
_pick = _pick_py
_upper_guids = _upper_guids_py
if _flatten is not None and not pure_python():
    _walk = _flatten.dotted
    _event_data = _flatten.event_data
    _pick = _flatten.pick
    _upper_guids = _flatten.upper_guids


def from_ecs(record: dict[str, Any]) -> dict[str, Any] | None:
    """One Winlogbeat / Elastic document → flat fields with Windows names (module docstring)."""
    flat = dotted_view(record)
    out = _pick(flat, _ECS_PAIRS)
    module = _module(flat)
    if "Channel" not in out and module:
        eid = _int(out.get("EventID"))
        out["Channel"] = (
            "Microsoft-Windows-PowerShell/Operational"
            if module == "powershell" and type(eid) is int and 4100 <= eid <= 4106
            else MODULE_CHANNELS[module]
        )
    _system_values(out, flat)
    data = _event_data(flat)
    if data:
        _event_data_values(data, module)
        flatten_data(data, out)
    _fix_system_types(out)
    if module:
        _module_fields(out, flat, module)
    _upper_guids(out)
    return out


def _system_values(out: dict[str, Any], flat: dict[str, Any]) -> None:
    """Level/Opcode/Task/Keywords names → numbers or absent; Version 0 that Winlogbeat omits."""
    provider = out.get("Provider_Name")
    level = out.get("Level")
    if type(level) is str and not level.strip().isdigit():
        number = 0 if provider == _AUDITING else LEVEL_NAMES.get(level.lower())
        _set_or_drop(out, "Level", number)
    opcode = out.get("Opcode")
    if type(opcode) is str and not opcode.strip().isdigit():
        _set_or_drop(out, "Opcode", OPCODE_NAMES.get(opcode))
    task = out.get("Task")
    if type(task) is str and not task.strip().isdigit():
        _set_or_drop(out, "Task", SECURITY_TASKS.get(task) if provider == _AUDITING else None)
    keywords = out.get("Keywords")
    if type(keywords) is str and keywords[:2].lower() != "0x":
        keywords = [keywords]
    if type(keywords) is list:
        mask = 0
        for name in keywords:
            bit = KEYWORD_NAMES.get(name) if type(name) is str else None
            if bit is None:
                mask = -1
                break
            mask |= bit
        if mask >= 0 and out.get("Channel") == "Security":
            mask |= SECURITY_CHANNEL_KEYWORD.get(provider, 0)  # type: ignore[arg-type]
        _set_or_drop(out, "Keywords", f"0x{mask:x}" if mask >= 0 else None)
    elif keywords is None and "winlog.api" in flat:
        out["Keywords"] = "0x0"  # Winlogbeat writes keywords only when some are set
    if "Version" not in out and "winlog.api" in flat:
        out["Version"] = 0  # Winlogbeat omits a zero version


def _set_or_drop(out: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        del out[name]
    else:
        out[name] = value


def _event_data_values(data: dict[str, Any], module: str | None) -> None:
    """Lists back to Windows' strings; numbers and booleans typed as in the EVTX record."""
    ints = EVENTDATA_INTS.get(module or "", frozenset())
    bools = EVENTDATA_BOOLS.get(module or "", frozenset())
    for key, value in data.items():
        if type(value) is list and key in EVENTDATA_LISTS:
            lead, trail, sep = EVENTDATA_LISTS[key]
            items = [str(v) for v in value if v not in ("", None)]
            if items == ["-"]:
                data[key] = "-"
                continue
            if lead.endswith("%%"):
                lead_text = lead[:-2]
                items = [("%%" + v if v.isdigit() else v) for v in items]
            else:
                lead_text = lead
            data[key] = sep.join(lead_text + v + trail for v in items)
        elif type(value) is str:
            if key in ints and value.isdigit():
                data[key] = int(value)
            elif key in bools and value in ("true", "false"):
                data[key] = value == "true"


# (module, EventID) -> the module's rows that apply to it: a Sysmon event skipped ~40 of its
# module's ~50 rows one by one on every event (bounded: hostile logs can vary the EventID)
_ROWS: dict[tuple[str, int], tuple[ModuleField, ...]] = {}


def _applies(row: ModuleField, eid: Any) -> bool:
    if eid.__class__ is list or eid.__class__ is dict:  # an EventID no set of ids can hold
        return not row.only
    return not (row.only and eid not in row.only or eid in row.never)


def _module_rows(module: str, eid: Any) -> tuple[ModuleField, ...] | list[ModuleField]:
    if type(eid) is not int:
        return [row for row in WINLOGBEAT_MODULES[module] if _applies(row, eid)]
    rows = _ROWS.get((module, eid))
    if rows is None:
        rows = tuple(row for row in WINLOGBEAT_MODULES[module] if _applies(row, eid))
        if len(_ROWS) >= 4096:
            _ROWS.clear()
        _ROWS[(module, eid)] = rows
    return rows


def _module_fields(out: dict[str, Any], flat: dict[str, Any], module: str) -> None:
    eid = out.get("EventID")
    for row in _module_rows(module, eid):
        if row.how == "psmessage":
            _powershell_message(out, flat.get("message"), eid)  # type: ignore[arg-type]
            continue
        if row.name in out:
            continue
        value = _convert(row.how, row.path, flat)
        if value is not None:
            out[row.name] = value


def _convert(how: str, path: str, flat: dict[str, Any]) -> Any:
    if how == "user":
        name = flat.get(path + ".name")
        domain = flat.get(path + ".domain")
        if name is None:
            return None
        return f"{domain}\\{name}" if domain else name
    if how == "hashes":
        found = {alg: flat.get(f"{path}.{alg}") for alg in _HASH_ORDER}
        parts = [f"{alg.upper()}={str(v).upper()}" for alg, v in found.items() if v]
        return ",".join(parts) or None
    value = flat.get(path)
    if value is None:
        return None
    if how == "hex":
        number = _int(value)
        return f"0x{number:x}" if type(number) is int else value
    if how == "int":
        return _int(value) if type(value) is str else value
    if how == "text":
        return ("true" if value else "false") if type(value) is bool else str(value)
    if how == "guid":
        return value.upper() if type(value) is str and _GUID.fullmatch(value) else value
    if how == "mapped_ipv4":
        return (
            f"::ffff:{value}" if type(value) is str and value.count(".") == 3 and ":" not in value else value
        )
    if how == "first":
        return value[0] if type(value) is list and value else value
    if how == "direction":
        return {"outbound": True, "egress": True, "inbound": False, "ingress": False}.get(value)
    if how == "dns":
        return _dns_results(value)
    if how == "utctime":
        epoch = parse_time(value)
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if epoch else None
    return value


def _dns_results(answers: Any) -> str | None:
    """``dns.answers`` → Sysmon's ``QueryResults`` (``type:  5 name;::ffff:1.2.3.4;``)."""
    if type(answers) is dict:
        answers = [answers]
    if type(answers) is not list:
        return None
    parts = []
    for answer in answers:
        if type(answer) is not dict or answer.get("data") is None:
            continue
        data = str(answer["data"])
        kind = answer.get("type")
        if kind == "CNAME":
            parts.append(f"type:  5 {data};")
        elif kind == "A" or (kind is None and data.count(".") == 3 and ":" not in data):
            parts.append(f"::ffff:{data};")
        else:
            parts.append(f"{data};")
    return "".join(parts) or None


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _powershell_message(out: dict[str, Any], message: Any, eid: int) -> None:
    """ContextInfo/UserData/Payload (4103) or Data (classic 400/403/600/800) from the message."""
    if type(message) is not str or eid not in _PS_MESSAGES:
        return
    pattern, trailing_crlf = _PS_MESSAGES[eid]
    match = pattern.fullmatch(message)
    if match is None:
        return
    p1, p2, p3 = (_crlf(match.group(g)) for g in ("p1", "p2", "p3"))
    if trailing_crlf and p3 and not p3.endswith("\r\n"):
        p3 += "\r\n"
    if eid == 4103:
        for name, value in (("ContextInfo", p1), ("UserData", p2), ("Payload", p3)):
            out.setdefault(name, value)
    else:
        out.setdefault("Data", [p1, p2, p3])
