"""Zeek logs (``dce_rpc``, ``smb_files``, ``smb_mapping``, ``conn``) in TSV and JSON form.

Zeek field names are kept as Zeek writes them (``id.orig_h``, ``endpoint``, ``operation``,
``path``, ``name``) because Sigma's zeek rules use them. Added for the event model:
``Channel`` = ``zeek:<log path>`` (e.g. ``zeek:dce_rpc``), ``TimeCreated`` from ``ts``, and
``Computer`` = the responder address ``id.resp_h`` (the host whose SCM or share was used).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from scmwatch.events.model import Event, ReadStats, format_time

_INT_TYPES = frozenset({"count", "int", "port"})
_FLOAT_TYPES = frozenset({"time", "interval", "double"})


def zeek_path_from_name(name: str) -> str:
    """``/x/dce_rpc.00:00:00-01:00:00.log.gz`` → ``dce_rpc``."""
    base = os.path.basename(name.split("!")[-1])
    return base.split(".", 1)[0]


def normalize_zeek(record: dict[str, Any], path: str | None) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k != "_path"}
    log = path or record.get("_path") or "unknown"
    out["Channel"] = f"zeek:{log}"
    ts = record.get("ts")
    if isinstance(ts, int | float):
        out["TimeCreated"] = format_time(float(ts))
    elif isinstance(ts, str):
        try:
            out["TimeCreated"] = format_time(float(ts))
        except ValueError:
            from scmwatch.events.normalize import iso_utc

            out["TimeCreated"] = iso_utc(ts)
    resp = record.get("id.resp_h")
    if resp is None and isinstance(record.get("id"), dict):
        resp = record["id"].get("resp_h")
    if resp is not None:
        out.setdefault("Computer", resp)
    return out


def read_zeek_tsv(name: str, stream: BinaryIO, stats: ReadStats) -> Iterator[Event]:
    sep = "\t"
    set_sep = ","
    empty = "(empty)"
    unset = "-"
    path = zeek_path_from_name(name)
    fields: list[str] = []
    types: list[str] = []
    for lineno, raw in enumerate(stream, 1):
        stats.bytes += len(raw)
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("#separator "):
                sep = line.split(" ", 1)[1].encode().decode("unicode_escape")
                continue
            key, *parts = line[1:].split(sep)
            if not parts:
                continue
            if key == "set_separator":
                set_sep = parts[0]
            elif key == "empty_field":
                empty = parts[0]
            elif key == "unset_field":
                unset = parts[0]
            elif key == "path":
                path = parts[0]
            elif key == "fields":
                fields = parts
            elif key == "types":
                types = parts
            continue
        if not fields:
            stats.files_failed += 1
            stats.error(name, "zeek", "data before the #fields header: not a Zeek TSV log", lineno)
            return
        values = line.split(sep)
        if len(values) != len(fields):
            stats.error(name, "zeek", f"row has {len(values)} columns, header has {len(fields)}", lineno)
            continue
        record: dict[str, Any] = {}
        for i, (field, value) in enumerate(zip(fields, values, strict=True)):
            if value == unset:
                continue
            kind = types[i] if i < len(types) else "string"
            if value == empty:
                record[field] = [] if kind.startswith(("set", "vector")) else ""
            elif kind.startswith(("set", "vector")):
                record[field] = value.split(set_sep)
            elif kind in _INT_TYPES or kind in _FLOAT_TYPES:
                try:
                    record[field] = int(value) if kind in _INT_TYPES else float(value)
                except ValueError:
                    record[field] = value
            else:
                record[field] = value
        stats.events += 1
        yield Event(normalize_zeek(record, path), name, lineno, "zeek")
