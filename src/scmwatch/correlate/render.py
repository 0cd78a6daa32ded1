"""One line per contributing event, so a correlation reads as one alert with its chain.

Used by the table sink (``scmwatch.sinks.table``); the JSONL sink already carries the full
``events`` list. Each line: time, host, EventID, the one field that says what happened, and
where the event came from (file name and record id) so an analyst can find the raw record.
"""

from __future__ import annotations

import os
import re

from scmwatch.alerts import Alert
from scmwatch.events.model import format_time

_WHAT = (
    "ServiceName",
    "RelativeTargetName",
    "TargetObject",
    "CommandLine",
    "QueryName",
    "TargetFilename",
    "ImageLoaded",
    "ObjectName",
    "WorkstationName",
    "param1",
    "Image",
    "operation",  # Zeek dce_rpc
    "name",  # Zeek smb_files
)
MAX_VALUE = 70
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def _what(fields: dict) -> str:
    for name in _WHAT:
        value = fields.get(name)
        if value not in (None, "", "-"):
            text = str(value).replace("\r", " ").replace("\n", " ")
            if name == "TargetObject":
                text = "\\".join(text.split("\\")[-2:])
            if len(text) > MAX_VALUE:
                text = text[: MAX_VALUE - 1] + "…"
            return f"{name}={text}"
    return ""


def evidence_lines(alert: Alert, max_lines: int = 12) -> list[str]:
    """``["09:20:28.621 WS2 5145 RelativeTargetName=svcctl  [file.evtx#12]", ...]``."""
    events = alert.events or []
    lines: list[str] = []
    for ev in events[:max_lines]:
        f = ev.fields
        when = format_time(ev.time)[11:23] if ev.time else "-"
        host = str(f.get("Computer") or "-")
        if not _IPV4.fullmatch(host):
            host = host.split(".", 1)[0]
        kind = f.get("EventID", f.get("Channel", "?"))
        where = f"{os.path.basename(ev.source)}#{ev.record_id}" if ev.record_id is not None else ev.source
        lines.append(f"{when} {host} {kind} {_what(f)}  [{where}]")
    if len(events) > max_lines:
        lines.append(f"… {len(events) - max_lines} more events")
    return lines
