"""Output formats: flat NDJSON, wevtutil XML, Winlogbeat/ECS NDJSON, and Zeek JSON logs.

One file per host and channel (``WS0001/Security.jsonl``), like one exported ``.evtx`` per
channel; Zeek logs under ``zeek/``. Lines are buffered and appended in batches, so any number
of hosts works without holding thousands of open files, and memory stays flat however many
events are written. ``EventRecordID`` counts per host and channel, in time order, as in a real
log; the writer returns where each event went so labels can point at it.
"""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import orjson

from scmwatch.simulate.records import META, Meta, Rec

EVENT_NS = "http://schemas.microsoft.com/win/2004/08/events/event"
EXT = {"jsonl": ".jsonl", "xml": ".xml", "ecs": ".ndjson"}
_FLUSH_LINES = 20000


class _Clock:
    """ISO-8601 rendering with a per-second cache: most events share their second with the last."""

    __slots__ = ("_sec", "_prefix")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def iso(self, t: float, digits: int = 6) -> str:
        sec = int(t)
        if sec != self._sec:
            self._sec = sec
            self._prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        frac = int((t - sec) * 1_000_000)
        if digits == 7:
            return f"{self._prefix}.{frac:06d}0Z"
        return f"{self._prefix}.{frac:06d}Z"


def channel_file(channel: str) -> str:
    """``Microsoft-Windows-Sysmon/Operational`` → ``Microsoft-Windows-Sysmon%4Operational`` like Windows."""
    return channel.replace("/", "%4")


class Writer:
    """Renders :class:`Rec` objects into one format under ``out``; returns (file, line, record id)."""

    def __init__(self, out: Path, fmt: str, compress: bool = False) -> None:
        if fmt not in EXT:
            raise ValueError(f"unknown format {fmt!r} (jsonl, xml, ecs)")
        self.out = out
        self.fmt = fmt
        self.compress = compress  # gzip every file (``.jsonl.gz``): the readers take .gz as is
        self._gz = ".gz" if compress else ""
        self.clock = _Clock()
        self._buf: dict[str, list[bytes]] = {}
        self._buffered = 0
        self._lines: dict[str, int] = {}
        self._records: dict[tuple[str, str], int] = {}
        self._prefix: dict[tuple, dict[str, Any]] = {}
        self._started: set[str] = set()
        self.events = 0
        self.files: set[str] = set()

    # -- public --------------------------------------------------------------------------------

    def write(self, rec: Rec) -> tuple[str, int, int | None]:
        if rec.host is None:
            rel = f"zeek/{rec.channel.split('/', 1)[1]}.log{self._gz}"
            line = self._append(rel, orjson.dumps(rec.data) + b"\n")
            return rel, line, None
        host = rec.host
        key = (host.name, rec.channel)
        rid = self._records.get(key)
        if rid is None:
            rid = 1000 + host.rng.randrange(1, 50000) * 10 if rec.channel != "Application" else 5000
        rid += 1
        self._records[key] = rid
        rel = f"{host.name}/{channel_file(rec.channel)}{EXT[self.fmt]}{self._gz}"
        if self.fmt == "jsonl":
            payload = orjson.dumps(self._flat(rec, rid)) + b"\n"
        elif self.fmt == "xml":
            payload = self._xml(rec, rid).encode("utf-8") + b"\n"
        else:
            payload = orjson.dumps(self._ecs(rec, rid)) + b"\n"
        line = self._append(rel, payload)
        return rel, line, rid

    def close(self) -> None:
        self._flush()
        if self.fmt == "xml":
            for rel in sorted(self._started):
                with self._open(self.out / rel) as fh:
                    fh.write(b"</Events>\n")

    # -- buffering -----------------------------------------------------------------------------

    def _append(self, rel: str, payload: bytes) -> int:
        buf = self._buf.get(rel)
        if buf is None:
            buf = self._buf[rel] = []
        buf.append(payload)
        line = self._lines.get(rel, 0) + 1
        self._lines[rel] = line
        self.events += 1
        self._buffered += 1
        if self._buffered >= _FLUSH_LINES:
            self._flush()
        return line

    def _flush(self) -> None:
        for rel, lines in self._buf.items():
            if not lines:
                continue
            path = self.out / rel
            if rel not in self.files:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.files.add(rel)
                if path.exists():
                    os.remove(path)
            with self._open(path) as fh:
                if self.fmt == "xml" and not rel.startswith("zeek/") and rel not in self._started:
                    self._started.add(rel)
                    fh.write(b'<?xml version="1.0" encoding="utf-8"?>\n<Events>\n')
                fh.writelines(lines)
            lines.clear()
        self._buffered = 0

    def _open(self, path: Path) -> BinaryIO:
        """Append mode; gzip appends a member per flush (valid gzip), with mtime 0 for reproducible bytes."""
        if self.compress:
            return gzip.GzipFile(filename=str(path), mode="ab", compresslevel=9, mtime=0)  # type: ignore[return-value]
        return open(path, "ab")

    # -- System header -------------------------------------------------------------------------

    def _meta(self, rec: Rec) -> Meta:
        return rec.meta or META[(rec.channel, rec.eid)]

    def _exec(self, rec: Rec, m: Meta) -> tuple[int, int]:
        h = rec.host
        src = m.exec_from
        if src == "proc":
            pid = rec.exec_pid or 4
        elif src == "system":
            pid = 4
        else:
            core = h.core.get(src)
            pid = core.pid if core else 4
        return pid, (pid * 7 + int(rec.t * 13)) % 9000 + 60

    def _flat(self, rec: Rec, rid: int) -> dict[str, Any]:
        """The dict the flat reader yields — the same keys ``from_evtx_dict`` makes of a real record."""
        m = self._meta(rec)
        pkey = (rec.host.name, rec.channel, rec.eid, id(m), rec.user_sid)
        prefix = self._prefix.get(pkey)
        if prefix is None:
            prefix = {"Provider_Name": m.provider}
            if m.guid:
                prefix["Provider_Guid"] = m.guid
            if m.source_name:
                prefix["Provider_EventSourceName"] = m.source_name
            prefix["EventID"] = rec.eid
            if m.qualifiers is not None:
                prefix["EventID_Qualifiers"] = m.qualifiers
            if m.version is not None:
                prefix["Version"] = m.version
            prefix["Level"] = m.level
            prefix["Task"] = m.task
            if m.opcode is not None:
                prefix["Opcode"] = m.opcode
            prefix["Keywords"] = m.keywords
            prefix["TimeCreated"] = None
            prefix["EventRecordID"] = None
            if m.has_correlation:
                prefix["Correlation"] = None
            if m.has_execution:
                prefix["ProcessID"] = None
                prefix["ThreadID"] = None
            prefix["Channel"] = rec.channel
            prefix["Computer"] = rec.host.computer
            if m.has_user and rec.user_sid:
                prefix["UserID"] = rec.user_sid
            else:
                prefix["Security"] = None
            self._prefix[pkey] = prefix
        d = prefix.copy()
        d["TimeCreated"] = self.clock.iso(rec.t)
        d["EventRecordID"] = rid
        if rec.activity and m.has_correlation:
            del d["Correlation"]
            d["Correlation_ActivityID"] = rec.activity
        if m.has_execution:
            d["ProcessID"], d["ThreadID"] = self._exec(rec, m)
        if m.spaced_names:  # the readers strip spaces from EventData names, as Sigma does
            d.update((k.replace(" ", ""), v) for k, v in rec.data.items())
        else:
            d.update(rec.data)
        return d

    def _xml(self, rec: Rec, rid: int) -> str:
        """One ``<Event>`` exactly as ``wevtutil qe /f:xml`` prints it (one line per event)."""
        m = self._meta(rec)
        guid = m.guid
        if guid and not guid.startswith("{"):
            guid = "{" + guid.lower() + "}"
        prov = f"<Provider Name='{_attr(m.provider)}'"
        if guid:
            prov += f" Guid='{guid}'"
        if m.source_name:
            prov += f" EventSourceName='{_attr(m.source_name)}'"
        parts = [f"<Event xmlns='{EVENT_NS}'><System>", prov, "/>"]
        if m.qualifiers is not None:
            parts.append(f"<EventID Qualifiers='{m.qualifiers}'>{rec.eid}</EventID>")
        else:
            parts.append(f"<EventID>{rec.eid}</EventID>")
        if m.version is not None:
            parts.append(f"<Version>{m.version}</Version>")
        parts.append(f"<Level>{m.level}</Level><Task>{m.task}</Task>")
        if m.opcode is not None:
            parts.append(f"<Opcode>{m.opcode}</Opcode>")
        parts.append(
            f"<Keywords>{m.keywords}</Keywords><TimeCreated SystemTime='{self.clock.iso(rec.t, 7)}'/>"
        )
        parts.append(f"<EventRecordID>{rid}</EventRecordID>")
        if m.has_correlation:
            parts.append(
                f"<Correlation ActivityID='{{{rec.activity}}}'/>" if rec.activity else "<Correlation/>"
            )
        if m.has_execution:
            pid, tid = self._exec(rec, m)
            parts.append(f"<Execution ProcessID='{pid}' ThreadID='{tid}'/>")
        parts.append(
            f"<Channel>{escape(rec.channel)}</Channel><Computer>{escape(rec.host.computer)}</Computer>"
        )
        if m.has_user and rec.user_sid:
            parts.append(f"<Security UserID='{rec.user_sid}'/>")
        else:
            parts.append("<Security/>")
        parts.append("</System><EventData>")
        for name, value in rec.data.items():
            if name == "Data":
                for item in value if isinstance(value, list) else [value]:
                    parts.append(f"<Data>{_xml_text(item)}</Data>")
            elif name == "Binary":
                parts.append(f"<Binary>{_text(value)}</Binary>")
            else:
                if name.endswith("Guid") and value and not str(value).startswith("{"):
                    value = "{" + str(value) + "}"  # wevtutil renders GUID-typed data in braces
                parts.append(f"<Data Name='{name}'>{_xml_text(value)}</Data>")
        parts.append("</EventData></Event>")
        return "".join(parts)

    def _ecs(self, rec: Rec, rid: int) -> dict[str, Any]:
        """A Winlogbeat 8 document: ``winlog.*`` with ``event_data`` values as strings."""
        m = self._meta(rec)
        ts = self.clock.iso(rec.t)
        data: dict[str, str] = {}
        for name, value in rec.data.items():
            if name == "Data":  # Winlogbeat names unnamed <Data> items param1, param2, ...
                for i, item in enumerate(value if isinstance(value, list) else [value], 1):
                    data[f"param{i}"] = _text(item)
            elif value is not None:
                data[name] = _text(value)
        winlog: dict[str, Any] = {
            "channel": rec.channel,
            "event_id": str(rec.eid),
            "provider_name": m.provider,
            "computer_name": rec.host.computer,
            "record_id": rid,
            "api": "wineventlog",
            "event_data": data,
        }
        if m.guid:
            winlog["provider_guid"] = m.guid if m.guid.startswith("{") else "{" + m.guid.lower() + "}"
        if m.version is not None:
            winlog["version"] = m.version
        if m.has_execution:
            pid, tid = self._exec(rec, m)
            winlog["process"] = {"pid": pid, "thread": {"id": tid}}
        if m.has_user and rec.user_sid:
            winlog["user"] = {"identifier": rec.user_sid}
        return {
            "@timestamp": ts,
            "event": {"code": str(rec.eid), "kind": "event", "provider": m.provider, "created": ts},
            "host": {"name": rec.host.computer.lower()},
            "winlog": winlog,
            "log": {"level": _LEVELS.get(m.level, "information")},
            "agent": {"type": "winlogbeat", "version": "8.12.0"},
            "ecs": {"version": "8.0.0"},
        }


_LEVELS = {0: "information", 1: "critical", 2: "error", 3: "warning", 4: "information", 5: "verbose"}


def _attr(value: str) -> str:
    """Attribute text for wevtutil's single-quoted attributes."""
    return escape(value, {"'": "&apos;"})


def _xml_text(value: Any) -> str:
    """Escaped element text; ``\r`` as ``&#13;`` so an XML parser returns Windows' CRLF intact."""
    return escape(_text(value)).replace("\r", "&#13;")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)
