"""Read the JSON snapshot written by the shipped collector (``collect.ps1``).

The schema is versioned: a snapshot whose ``schema_version`` this scmwatch does not know is
refused as a whole (guessing at renamed fields would silently hide findings). The field lists
below are the contract with the collector; tests check the script writes every one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from scmwatch.audit.model import AsrRule, Defender, HostData, PathAcl, Service
from scmwatch.audit.paths import normalize

SCHEMA_NAME = "scmwatch.audit.snapshot"
SCHEMA_VERSION = 1
TOP_FIELDS = (
    "schema",
    "schema_version",
    "collector_version",
    "collected_at",
    "host",
    "scm",
    "services",
    "paths",
    "defender",
    "errors",
)
HOST_FIELDS = ("name", "domain", "os_caption", "os_version")
SCM_FIELDS = ("sddl", "error")
SERVICE_FIELDS = (
    "name",
    "display_name",
    "image_path",
    "binary",
    "start_type",
    "service_type",
    "account",
    "sddl",
    "sddl_error",
    "service_dll",
)
PATH_FIELDS = ("path", "sddl", "exists", "is_dir", "error")
DEFENDER_FIELDS = ("available", "source", "asr_rules", "error")
ASR_FIELDS = ("id", "action")


class SnapshotError(ValueError):
    """The file is not a snapshot this version can read."""


def text_encoding(data: bytes) -> tuple[str, int]:
    """(codec, BOM length) of a text input. By BOM: PowerShell 5.1 ``>`` writes UTF-16LE,
    ``Set-Content`` may add a UTF-8 BOM. Without one, UTF-16LE when every second byte of the
    start is NUL (every input starts with ASCII; copies and concatenations lose the BOM)."""
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"\xef\xbb\xbf", "utf-8")):
        if data.startswith(bom):
            return codec, len(bom)
    head = data[:64]
    if len(head) >= 4 and head[0] and not any(head[1::2]):
        return "utf-16-le", 0
    return "utf-8", 0


def decode_text(data: bytes, errors: str = "strict") -> str:
    codec, skip = text_encoding(data)
    return data[skip:].decode(codec, errors)


def _str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise SnapshotError(f"expected a string, got {_brief(v)}")


def _int(v: Any) -> int | None:
    """A 32-bit unsigned number (service type, ASR action), also when written as a string."""
    if v is None or v == "":
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str) and v.strip().isdigit() and len(v.strip()) <= 10:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        raise SnapshotError(f"expected a 32-bit number, got {_brief(v)}")
    return v


def _brief(v: Any) -> str:
    """A short description of a JSON value for a problem line (never the whole value)."""
    if isinstance(v, (dict, list)):
        return f"a JSON {'object' if isinstance(v, dict) else 'array'}"
    if isinstance(v, _LongNumber):
        return f"a number with {v.digits} digits"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v.bit_length()}-bit number" if v.bit_length() > 64 else str(v)
    text = repr(v)
    return text if len(text) <= 40 else text[:40] + "..."


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _flag(v: Any) -> bool:
    """true/false, also as the text a CSV round trip or a hand-edited file leaves."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise SnapshotError(f"expected true or false, got {_brief(v)}")


def _loads(text: str) -> Any:
    """``json.loads`` that turns every way a hostile file can fail it into SnapshotError (nesting
    deeper than the parser's recursion limit, NaN/Infinity) or a field-level problem (long numbers)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_int_literal)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise SnapshotError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # NaN / Infinity
        raise SnapshotError(f"invalid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(v: Any) -> tuple[Any, int]:
    """``"\\ud800"`` is valid JSON but no text encoding can write it: every output would fail
    on it. Replace each lone surrogate left after decoding (pairs decode to one character)."""
    if isinstance(v, str):
        return _LONE_SURROGATE.subn("\ufffd", v)
    if isinstance(v, list):
        pairs = [_replace_surrogates(x) for x in v]
        return [x for x, _ in pairs], sum(n for _, n in pairs)
    if isinstance(v, dict):
        out, total = {}, 0
        for k, x in v.items():
            (k2, n1), (x2, n2) = _replace_surrogates(k), _replace_surrogates(x)
            out[k2] = x2
            total += n1 + n2
        return out, total
    return v, 0


class _LongNumber:
    """An integer literal too long to be any snapshot field (Python refuses over 4,300 digits
    and converting long ones is quadratic): kept as its length, so only the field holding it is
    reported, not the whole host."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a number with {self.digits} digits>"


def _int_literal(digits: str) -> int | _LongNumber:
    return int(digits) if len(digits) <= 40 else _LongNumber(len(digits))


def _list(v: Any) -> list:
    # PowerShell 5.1 ConvertTo-Json turns a one-element array into the element itself.
    if v is None:
        return []
    if isinstance(v, dict):
        return [v]
    if not isinstance(v, list):
        raise SnapshotError(f"expected a list, got {_brief(v)}")
    return v


def read_snapshot(data: bytes, source: str) -> HostData:
    """Parse a snapshot. Raises SnapshotError for a file-level problem; item-level problems are
    recorded in ``HostData.errors`` and the rest is kept."""
    try:
        text = decode_text(data)
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"invalid JSON: {exc}") from None
    doc = _loads(text)
    lone = 0
    if _SURROGATE_ESCAPE.search(text):
        try:
            doc, lone = _replace_surrogates(doc)
        except RecursionError:
            raise SnapshotError("invalid JSON: nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise SnapshotError(f'not a scmwatch audit snapshot (missing "schema": "{SCHEMA_NAME}")')
    ver = doc.get("schema_version")
    if ver != SCHEMA_VERSION:
        raise SnapshotError(
            f"unsupported snapshot schema_version {ver!r} (this scmwatch reads {SCHEMA_VERSION})"
        )
    host = doc.get("host") or {}
    if not isinstance(host, dict) or not host.get("name"):
        raise SnapshotError("snapshot has no host.name")
    try:
        name = str(_str(host["name"])).strip()
    except SnapshotError as exc:
        raise SnapshotError(f"host.name: {exc}") from None
    if not name:
        raise SnapshotError("snapshot has no host.name")
    hd = HostData(host=name, sources=[source])
    if lone:
        hd.errors.append(
            f"encoding: {lone} string(s) with a lone UTF-16 surrogate escape, replaced by U+FFFD"
        )
    hd.os_caption = _item(hd, "host.os_caption", _str, host.get("os_caption"))
    hd.os_version = _item(hd, "host.os_version", _str, host.get("os_version"))
    hd.collected_at = _item(hd, "collected_at", _str, doc.get("collected_at"))
    for i, e in enumerate(_item(hd, "errors", _list, doc.get("errors")) or []):
        msg = _item(hd, f"errors[{i}]", _str, e)
        if msg:
            hd.errors.append(f"collector: {msg}")
    scm = doc.get("scm") or {}
    if isinstance(scm, dict):
        hd.scm_sddl = _item(hd, "scm.sddl", _str, scm.get("sddl"))
        if scm.get("error"):
            hd.errors.append(f"collector: SCM: {_item(hd, 'scm.error', _str, scm['error'])}")
    else:
        hd.errors.append(f"scm: expected an object, got {_brief(scm)}")
    for i, s in enumerate(_item(hd, "services", _list, doc.get("services")) or []):
        try:
            if not isinstance(s, dict) or not s.get("name"):
                raise SnapshotError("no name")
            svc = Service(
                name=str(_str(s["name"])),
                display_name=_str(s.get("display_name")),
                image_path=_str(s.get("image_path")),
                binary=_str(s.get("binary")) or None,
                start_type=_str(s.get("start_type")),
                service_type=_int(s.get("service_type")),
                account=_str(s.get("account")),
                sddl=_str(s.get("sddl")) or None,
                service_dll=_str(s.get("service_dll")) or None,
                source=source,
            )
            sddl_error = _str(s.get("sddl_error"))
        except SnapshotError as exc:
            hd.errors.append(f"services[{i}]: {exc}")
            continue
        if sddl_error:
            hd.errors.append(f"collector: service {svc.name}: {sddl_error}")
        hd.add_service(svc)
    for i, p in enumerate(_item(hd, "paths", _list, doc.get("paths")) or []):
        try:
            if not isinstance(p, dict) or not p.get("path"):
                raise SnapshotError("no path")
            acl = PathAcl(
                path=str(_str(p["path"])),
                sddl=_str(p.get("sddl")) or None,
                exists=_bool(p.get("exists")),
                is_dir=_bool(p.get("is_dir")),
                error=_str(p.get("error")),
            )
        except SnapshotError as exc:
            hd.errors.append(f"paths[{i}]: {exc}")
            continue
        hd.paths[path_key(acl.path)] = acl
    d = doc.get("defender")
    if isinstance(d, dict):
        rules = []
        for i, r in enumerate(_item(hd, "defender.asr_rules", _list, d.get("asr_rules")) or []):
            if not isinstance(r, dict) or not r.get("id"):
                # PowerShell's ConvertTo-Json below its -Depth writes objects as "@{id=...}" text.
                hd.errors.append(f"defender.asr_rules[{i}]: expected an object with an id, got {_brief(r)}")
            else:
                try:
                    rid = str(_str(r["id"])).lower().strip("{}")
                    rules.append(AsrRule(rid, _int(r.get("action"))))
                except SnapshotError as exc:
                    hd.errors.append(f"defender.asr_rules[{i}]: {exc}")
        hd.defender = Defender(
            available=_item(hd, "defender.available", _flag, d.get("available")) is True,
            asr_rules=rules,
            source=_item(hd, "defender.source", _str, d.get("source")),
            error=_item(hd, "defender.error", _str, d.get("error")),
        )
    elif d is not None:
        hd.errors.append(f"defender: expected an object, got {_brief(d)}")
    return hd


def _item(hd: HostData, where: str, convert: Callable[..., Any], value: Any) -> Any:
    """``convert(value)``, or None with a problem recorded: one bad field never costs the host."""
    try:
        return convert(value)
    except SnapshotError as exc:
        hd.errors.append(f"{where}: {exc}")
        return None


def path_key(path: str) -> str:
    """Lookup key for ``HostData.paths`` (case-insensitive, no trailing backslash except roots)."""
    low = normalize(path).lower()
    return low if low.endswith(":\\") else low.rstrip("\\")
