"""Read the JSON snapshot written by the shipped collector (``collect.ps1``).

The schema is versioned: a snapshot whose ``schema_version`` this scmwatch does not know is
refused as a whole (guessing at renamed fields would silently hide findings). The field lists
below are the contract with the collector; tests check the script writes every one of them.
"""

from __future__ import annotations

import json
from typing import Any

from scmwatch.audit.model import AsrRule, Defender, HostData, PathAcl, Service

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


def decode_text(data: bytes) -> str:
    """Decode by BOM: PowerShell 5.1 ``>`` writes UTF-16LE, ``Set-Content`` may add a UTF-8 BOM."""
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    return data.decode("utf-8")


def _str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return str(v)
    raise SnapshotError(f"expected a string, got {type(v).__name__}")


def _list(v: Any, what: str) -> list:
    # PowerShell 5.1 ConvertTo-Json turns a one-element array into the element itself.
    if v is None:
        return []
    if isinstance(v, dict):
        return [v]
    if not isinstance(v, list):
        raise SnapshotError(f"{what} must be a list")
    return v


def read_snapshot(data: bytes, source: str) -> HostData:
    """Parse a snapshot. Raises SnapshotError for a file-level problem; item-level problems are
    recorded in ``HostData.errors`` and the rest is kept."""
    try:
        doc = json.loads(decode_text(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"invalid JSON: {exc}") from None
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
    hd = HostData(
        host=str(host["name"]),
        os_caption=_str(host.get("os_caption")),
        os_version=_str(host.get("os_version")),
        sources=[source],
        collected_at=_str(doc.get("collected_at")),
    )
    for e in _list(doc.get("errors"), "errors"):
        hd.errors.append(f"collector: {e}")
    scm = doc.get("scm") or {}
    if isinstance(scm, dict):
        hd.scm_sddl = _str(scm.get("sddl"))
        if scm.get("error"):
            hd.errors.append(f"collector: SCM: {scm['error']}")
    for i, s in enumerate(_list(doc.get("services"), "services")):
        try:
            if not isinstance(s, dict) or not s.get("name"):
                raise SnapshotError("no name")
            st = s.get("service_type")
            svc = Service(
                name=str(s["name"]),
                display_name=_str(s.get("display_name")),
                image_path=_str(s.get("image_path")),
                binary=_str(s.get("binary")) or None,
                start_type=_str(s.get("start_type")),
                service_type=int(st) if st not in (None, "") else None,
                account=_str(s.get("account")),
                sddl=_str(s.get("sddl")) or None,
                service_dll=_str(s.get("service_dll")) or None,
                source=source,
            )
        except (SnapshotError, ValueError, TypeError) as exc:
            hd.errors.append(f"services[{i}]: {exc}")
            continue
        if s.get("sddl_error"):
            hd.errors.append(f"collector: service {svc.name}: {s['sddl_error']}")
        hd.add_service(svc)
    for i, p in enumerate(_list(doc.get("paths"), "paths")):
        if not isinstance(p, dict) or not p.get("path"):
            hd.errors.append(f"paths[{i}]: no path")
            continue
        acl = PathAcl(
            path=str(p["path"]),
            sddl=_str(p.get("sddl")) or None,
            exists=p.get("exists"),
            is_dir=p.get("is_dir"),
            error=_str(p.get("error")),
        )
        hd.paths[path_key(acl.path)] = acl
    d = doc.get("defender")
    if isinstance(d, dict):
        rules = []
        for r in _list(d.get("asr_rules"), "defender.asr_rules"):
            if isinstance(r, dict) and r.get("id"):
                act = r.get("action")
                try:
                    rules.append(
                        AsrRule(str(r["id"]).lower().strip("{}"), int(act) if act is not None else None)
                    )
                except (TypeError, ValueError):
                    hd.errors.append(f"defender: bad ASR action {act!r} for {r['id']}")
        hd.defender = Defender(
            available=bool(d.get("available")),
            asr_rules=rules,
            source=_str(d.get("source")),
            error=_str(d.get("error")),
        )
    return hd


def path_key(path: str) -> str:
    """Lookup key for ``HostData.paths`` (case-insensitive, no trailing backslash except roots)."""
    low = path.lower()
    return low if low.endswith(":\\") else low.rstrip("\\")
