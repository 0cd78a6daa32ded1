"""Read saved ``sc.exe qc <svc>`` and ``sc.exe sdshow <svc>|scmanager`` output.

``sc qc`` names its service (``SERVICE_NAME:``); ``sc sdshow`` prints only the SDDL. So an SDDL
line belongs to, in this order: the target of the last echoed command line (``C:\\> sc sdshow X``
or a ``# service: X`` marker), the last ``SERVICE_NAME`` seen, or the file name
(``<host>.<service>.sdshow.txt``; ``scmanager`` means the SCM). The host is a ``# host: NAME``
line, else the file name up to its first dot. Many commands may be concatenated in one file.
"""

from __future__ import annotations

import ntpath
import re

from scmwatch.audit.model import START_TYPES, HostData, Service, host_from_file_name

_CMD_RE = re.compile(r"\bsc(?:\.exe)?\s+(?:\\\\\S+\s+)?(qc|sdshow)\s+\"?([^\s\"]+)\"?", re.IGNORECASE)
_MARK_RE = re.compile(r"^\s*[#;]\s*(host|service)\s*[:=]\s*(\S+)", re.IGNORECASE)
_FIELD_RE = re.compile(r"^\s*([A-Z_]+)\s*:\s?(.*)$")
_SDDL_RE = re.compile(r"^\s*(?:O:|G:|D:|S:)\S*\(", re.IGNORECASE)
_START = {
    "BOOT_START": "Boot",
    "SYSTEM_START": "System",
    "AUTO_START": "Auto",
    "DEMAND_START": "Manual",
    "DISABLED": "Disabled",
}
SCM_NAMES = {"scmanager"}
_BARE_DACLS = ("D:", "D:NO_ACCESS_CONTROL")  # SDDL lines without an ACE: empty and NULL DACL


class ScTextError(ValueError):
    """Nothing in the file looks like sc.exe output."""


def looks_like_sc(text: str) -> bool:
    return bool(re.search(r"^\s*SERVICE_NAME\s*:", text, re.MULTILINE)) or any(
        _SDDL_RE.match(line) or line.strip().upper() in _BARE_DACLS for line in text.splitlines()
    )


def sc_to_host(text: str, source: str) -> HostData:
    base = ntpath.basename(source.replace("/", "\\"))
    stem_parts = base.split(".")
    host = host_from_file_name(source)
    file_target = None
    lowered = [p.lower() for p in stem_parts]
    if "sdshow" in lowered and lowered.index("sdshow") >= 2:  # <host>.<service>.sdshow[.txt]
        file_target = stem_parts[lowered.index("sdshow") - 1]
    target: str | None = None  # from the last echoed command / marker
    current: Service | None = None  # from the last SERVICE_NAME
    last_field = ""
    hd = HostData(host=host, sources=[source])
    found = False
    for n, line in enumerate(text.splitlines(), 1):
        m = _MARK_RE.match(line)
        if m:
            if m.group(1).lower() == "host":
                hd.host = m.group(2)
            else:
                target, current = m.group(2), None
            continue
        m = _CMD_RE.search(line)
        if m and not line.lstrip().upper().startswith(("D:", "O:", "S:", "G:")):
            target = m.group(2)
            current = None
            continue
        stripped = line.strip()
        if stripped.startswith("[SC]") and "FAILED" in stripped:
            hd.errors.append(
                f"line {n}: {target or (current.name if current else '')}: {stripped}".replace(": : ", ": ")
            )
            target = None
            continue
        if _SDDL_RE.match(line) or stripped.upper() in _BARE_DACLS:
            who = target or (current.name if current else None) or file_target
            if who is None:
                hd.errors.append(
                    f"line {n}: SDDL with no service name (name the file <host>.<service>"
                    ".sdshow.txt or add '# service: NAME')"
                )
                continue
            found = True
            if who.lower() in SCM_NAMES:
                hd.scm_sddl = stripped
            else:
                hd.add_service(Service(name=who, sddl=stripped, source=source))
            target = None
            continue
        m = _FIELD_RE.match(line)
        if m:
            key, val = m.group(1), m.group(2).rstrip()
            if key == "SERVICE_NAME" and not val.strip():
                hd.errors.append(f"line {n}: SERVICE_NAME without a name; its fields are skipped")
                current, target = None, None
            elif key == "SERVICE_NAME":
                current = Service(name=val.strip(), source=source)
                hd.add_service(current)
                current = hd.services[current.name.lower()]
                target = None
                found = True
            elif current is not None:
                problem = _qc_field(current, key, val)
                if problem:
                    hd.errors.append(f"line {n}: {current.name}: {problem}")
            last_field = key
        elif current is not None and stripped.startswith(":") and last_field == "DEPENDENCIES":
            continue
    if not found:
        raise ScTextError(hd.errors[0] if hd.errors else "no sc.exe qc/sdshow output found")
    return hd


def _qc_field(svc: Service, key: str, val: str) -> str | None:
    """Set one ``sc qc`` field on the service; a problem message when the value is not one."""
    if key == "TYPE":
        m = re.match(r"\s*([0-9a-fA-F]{1,8})\b", val)
        if not m:
            return f"TYPE {val.strip()[:20]!r} is not a service type"
        svc.service_type = int(m.group(1), 16)
    elif key == "START_TYPE":
        # "2   AUTO_START  (DELAYED)": the number decides; "(DELAYED)" is an attribute of its own.
        m = re.match(r"\s*(\d{1,9})\b\s*(\S*)", val)
        if m:
            num, word = int(m.group(1)), m.group(2).upper()
            svc.start_type = START_TYPES.get(num) or _START.get(word) or str(num)
        else:
            word = val.split()[0].upper() if val.split() else ""
            svc.start_type = _START.get(word, word or None)
        svc.delayed_auto_start = "(DELAYED)" in val.upper()
    elif key == "BINARY_PATH_NAME":
        svc.image_path = val.strip()
    elif key == "DISPLAY_NAME":
        svc.display_name = val.strip()
    elif key == "SERVICE_START_NAME":
        svc.account = val.strip()
    return None
