"""Read ``reg export HKLM\\SYSTEM\\CurrentControlSet\\Services`` files.

Windows writes them UTF-16LE with a BOM, wraps ``hex:`` data over lines ending in ``\\``, stores
ImagePath as ``hex(2):`` (REG_EXPAND_SZ, UTF-16LE bytes) and each service's DACL as the binary
``Security`` value of the ``<service>\\Security`` subkey (a self-relative security descriptor).
The older ``REGEDIT4`` format (``regedit /a``, Windows 9x/NT 4 tools) is ANSI text and its
``hex(2)``/``hex(7)`` data is single-byte ANSI, not UTF-16LE: the header decides how string data is
decoded, and data that does not decode is an input error (never a silently garbled path that the
path checks would then run on). ANSI means Windows-1252 here, the code page of Western-locale
systems; a byte it does not define is reported.
A cut-off file is reported (naming the key and value where it ends) and what was complete is kept.
"""

from __future__ import annotations

import codecs
import re
import string
from dataclasses import dataclass, field

from scmwatch.audit.model import START_TYPES, HostData, Service, host_from_file_name
from scmwatch.audit.sd import SDError, parse_binary
from scmwatch.audit.snapshot import text_encoding

UNICODE_HEADER = "Windows Registry Editor Version 5.00"
ANSI_HEADER = "REGEDIT4"
HEADERS = (UNICODE_HEADER, ANSI_HEADER)
# The hive may be mounted under any name (an offline SYSTEM hive loaded as HKLM\\OFFLINE), and a
# whole-hive export holds every control set: ControlSet001, ControlSet002 (last known good), ...
_CONTROL_SET = r"^(?:HKEY_LOCAL_MACHINE|HKLM)\\([^\\]+)\\(CurrentControlSet|ControlSet\d{3})\\"
_SERVICES_RE = re.compile(_CONTROL_SET + r"Services\\(.+)$", re.IGNORECASE)
# Where the SCM keeps its own security descriptor, if the export happens to include it.
_SCM_KEY_RE = re.compile(_CONTROL_SET + r"Control\\ServiceGroupOrder\\Security$", re.IGNORECASE)
_SELECT_RE = re.compile(r"^(?:HKEY_LOCAL_MACHINE|HKLM)\\([^\\]+)\\Select$", re.IGNORECASE)
_HEX_LIST_RE = re.compile(r"[0-9a-fA-F]{1,2}(?:,[0-9a-fA-F]{1,2})*")
_HOST_RE = re.compile(r"^;\s*host\s*[:=]\s*(\S+)", re.IGNORECASE)


class RegError(ValueError):
    """The file is not a readable .reg export."""


@dataclass
class RegValue:
    type: str  # "sz", "dword", "hex", "hex(2)", ...
    data: object  # str, int, bytes or list[str]
    line: int


@dataclass
class RegFile:
    keys: dict[str, dict[str, RegValue]] = field(default_factory=dict)
    host: str | None = None
    errors: list[str] = field(default_factory=list)


def _ansi(data: bytes) -> str:
    """Windows-1252 as ``MultiByteToWideChar`` does it: the five bytes the code page leaves
    undefined map to the C1 control of the same value instead of failing."""
    return data.decode("cp1252", errors="scmwatch-ansi")


def _c1_fallback(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return "".join(chr(b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error("scmwatch-ansi", _c1_fallback)


def decode_reg(data: bytes) -> tuple[str, list[str]]:
    """The file's text by its BOM (or UTF-16LE without one); a REGEDIT4 file that is not UTF-8 is ANSI."""
    errors = []
    codec, skip = text_encoding(data)
    body = data[skip:]
    if codec.startswith("utf-16"):
        if len(body) % 2:
            errors.append("truncated: odd number of bytes in UTF-16 text")
            body = body[:-1]
        text = body.decode(codec, errors="strict")
    elif body.startswith(ANSI_HEADER.encode()):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = _ansi(body)
    else:
        text = body.decode("utf-8")
    return text, errors


def _unescape(s: str) -> str:
    return s.replace('\\"', '"').replace("\\\\", "\\")


def _parse_name(line: str) -> tuple[str, str]:
    if line.startswith("@="):
        return "", line[2:]
    if not line.startswith('"'):
        raise RegError("value line does not start with a quoted name")
    i = 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == '"':
            break
        i += 1
    if i >= len(line) or line[i + 1 : i + 2] != "=":
        raise RegError("unterminated value name")
    return _unescape(line[1:i]), line[i + 2 :]


def _hex_bytes(s: str) -> bytes:
    s = s.replace(" ", "").rstrip(",")
    if not s:
        return b""
    if not _HEX_LIST_RE.fullmatch(s):
        raise RegError("bad hex data (needs comma-separated bytes of 1 or 2 hex digits)")
    return bytes(int(x, 16) for x in s.split(","))


def _utf16_string(b: bytes) -> str:
    """A REG_SZ / REG_EXPAND_SZ value of a version 5 export: UTF-16LE up to the first NUL."""
    for i in range(0, len(b) - 1, 2):
        if b[i] == 0 and b[i + 1] == 0:
            b = b[:i]
            break
    else:
        if len(b) % 2:
            raise RegError("string data is not UTF-16LE (odd number of bytes)")
    if len(b) >= 8 and all(0x20 <= c < 0x7F for c in b.rstrip(b"\0")):
        raise RegError(
            "string data is single-byte text, not UTF-16LE (REGEDIT4 data under a version 5 header?)"
        )
    try:
        return b.decode("utf-16-le")
    except UnicodeDecodeError:
        raise RegError("string data is not valid UTF-16LE (unpaired surrogate)") from None


def _ansi_string(b: bytes) -> str:
    """A REG_SZ / REG_EXPAND_SZ value of a REGEDIT4 export: single-byte ANSI up to the NUL."""
    text, nul, rest = b.partition(b"\0")
    if nul and rest.strip(b"\0"):
        raise RegError("string data has text after its NUL (UTF-16LE data in a REGEDIT4 file?)")
    return _ansi(text)


def _parse_data(raw: str, ansi: bool = False) -> tuple[str, object]:
    """One value's data; ``ansi`` when the file is REGEDIT4 (string data is single-byte ANSI)."""
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise RegError("unterminated string")
        return "sz", _unescape(raw[1:-1])
    if raw.startswith("dword:"):
        digits = raw[6:]
        if not 1 <= len(digits) <= 8 or not all(c in string.hexdigits for c in digits):
            raise RegError(f"bad dword {_clip(digits)!r} (needs 1 to 8 hex digits)")
        return "dword", int(digits, 16)
    m = re.match(r"hex(?:\(([0-9a-fA-F]{1,8})\))?:(.*)$", raw)
    if m:
        b = _hex_bytes(m.group(2))
        kind = int(m.group(1), 16) if m.group(1) else 3
        string_of = _ansi_string if ansi else _utf16_string
        if kind in (1, 2):  # REG_SZ / REG_EXPAND_SZ
            return f"hex({kind})", string_of(b)
        if kind == 7:  # REG_MULTI_SZ: strings separated by NULs, an empty one ends the list
            if ansi:
                return "hex(7)", [_ansi(x) for x in b.split(b"\0") if x]
            if len(b) % 2:
                raise RegError("multi-string data is not UTF-16LE (odd number of bytes)")
            try:
                return "hex(7)", [x for x in b.decode("utf-16-le").split("\0") if x]
            except UnicodeDecodeError:
                raise RegError("multi-string data is not valid UTF-16LE (unpaired surrogate)") from None
        if kind == 4 and len(b) == 4:
            return "dword", int.from_bytes(b, "little")
        if kind == 0xB and len(b) == 8:
            return "qword", int.from_bytes(b, "little")
        return f"hex({kind})" if m.group(1) else "hex", b
    if raw == "-":
        return "delete", None
    raise RegError(f"unknown data type {_clip(raw, 12)!r}")


def _clip(s: str, n: int = 20) -> str:
    return s if len(s) <= n else s[:n] + f"... ({len(s)} characters)"


def parse_reg(data: bytes) -> RegFile:
    """Parse a .reg file into keys and values. Raises RegError when it is not a .reg export."""
    try:
        text, errors = decode_reg(data)
    except UnicodeDecodeError as exc:
        raise RegError(f"cannot decode: {exc}") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() not in HEADERS:
        raise RegError("not a .reg export (no 'Windows Registry Editor Version 5.00' header)")
    ansi = lines[0].strip() == ANSI_HEADER
    rf = RegFile(errors=errors)
    current: dict[str, RegValue] | None = None
    key_name = ""
    i = 1
    while i < len(lines):
        start = i
        line = lines[i]
        i += 1
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(";"):
            m = _HOST_RE.match(stripped)
            if m:
                rf.host = m.group(1)
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                rf.errors.append(f"line {start + 1}: truncated key name {stripped[:60]!r}")
                current = None
                continue
            key_name = stripped[1:-1]
            if key_name.startswith("-"):
                current = None
                continue
            current = rf.keys.setdefault(key_name, {})
            continue
        # Join continuation lines (hex data wrapped at ~80 columns, ending in a backslash).
        # Collected and joined once: re-concatenating per line is quadratic in the value's size.
        parts = [stripped]
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1]
            parts.append(lines[i].strip())
            i += 1
        if parts[-1].endswith("\\"):
            rf.errors.append(
                f"line {start + 1}: truncated: file ends inside value of [{_clip(key_name, 200)}]"
            )
            break
        logical = "".join(parts)
        if current is None:
            continue
        try:
            name, raw = _parse_name(logical)
            typ, val = _parse_data(raw, ansi)
        except RegError as exc:
            rf.errors.append(f"line {start + 1}: [{_clip(key_name, 200)}]: {exc}")
            continue
        current[name] = RegValue(typ, val, start + 1)
    return rf


def _control_set(m: re.Match[str]) -> tuple[str, str]:
    return m.group(1).lower(), m.group(2).lower()


def _active_control_set(rf: RegFile) -> tuple[str, str] | None:
    """The control set the SCM would use: CurrentControlSet when exported, else the one the
    hive's ``Select\\Current`` value names, else the lowest-numbered one."""
    found = sorted({_control_set(m) for key in rf.keys if (m := _SERVICES_RE.match(key))})
    if not found:
        return None
    mounts = {mount for mount, _ in found}
    for mount, cs in found:
        if cs == "currentcontrolset":
            return mount, cs
    for key, values in rf.keys.items():
        m = _SELECT_RE.match(key)
        current = values.get("Current")
        if m and m.group(1).lower() in mounts and current and isinstance(current.data, int):
            wanted = (m.group(1).lower(), f"controlset{current.data:03d}")
            if wanted in found:
                return wanted
    return found[0]


def reg_to_host(data: bytes, source: str) -> HostData:
    """Turn a Services export into HostData (host name from a '; host: NAME' line or the file name)."""
    rf = parse_reg(data)
    host = rf.host or host_from_file_name(source)
    hd = HostData(host=host, sources=[source], errors=list(rf.errors))
    services: dict[str, Service] = {}
    active = _active_control_set(rf)
    if active is None:
        raise RegError(
            "no service keys (HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\...) in this export"
        )
    for key, values in rf.keys.items():
        scm = _SCM_KEY_RE.match(key)
        if scm and _control_set(scm) == active:
            sec = values.get("Security")
            if sec and isinstance(sec.data, bytes):
                try:
                    hd.scm_sddl = parse_binary(sec.data).to_sddl()
                except SDError as exc:
                    hd.errors.append(f"SCM Security value (line {sec.line}): {exc}")
            continue
        m = _SERVICES_RE.match(key)
        if not m or _control_set(m) != active:
            continue
        parts = m.group(3).split("\\")
        name = parts[0]
        svc = services.setdefault(name.lower(), Service(name=name, source=source))
        if len(parts) == 1:
            v = values
            if "ImagePath" in v and isinstance(v["ImagePath"].data, str):
                svc.image_path = v["ImagePath"].data
            if "DisplayName" in v and isinstance(v["DisplayName"].data, str):
                svc.display_name = v["DisplayName"].data
            if "ObjectName" in v and isinstance(v["ObjectName"].data, str):
                svc.account = v["ObjectName"].data
            if "Start" in v and isinstance(v["Start"].data, int):
                svc.start_type = START_TYPES.get(v["Start"].data, str(v["Start"].data))
            if "DelayedAutostart" in v and isinstance(v["DelayedAutostart"].data, int):
                svc.delayed_auto_start = v["DelayedAutostart"].data == 1
            if "Type" in v and isinstance(v["Type"].data, int):
                svc.service_type = v["Type"].data
        elif len(parts) == 2 and parts[1].lower() == "parameters":
            dll = values.get("ServiceDll")
            if dll and isinstance(dll.data, str) and dll.data:
                svc.service_dll = dll.data
        elif len(parts) == 2 and parts[1].lower() == "security":
            sec = values.get("Security")
            if sec is None:
                continue
            if not isinstance(sec.data, bytes):
                hd.errors.append(f"service {name}: Security value is not binary (line {sec.line})")
                continue
            try:
                svc.sddl = parse_binary(sec.data).to_sddl()
            except SDError as exc:
                hd.errors.append(f"service {name}: Security value (line {sec.line}): {exc}")
    for svc in services.values():
        # Keys without Type or ImagePath are parameter holders, not services.
        if svc.service_type is not None or svc.image_path is not None:
            hd.add_service(svc)
    return hd
