"""What the audit reads (one host's services, SCM, file ACLs, ASR state) and what it reports.

Every input kind (collector snapshot, ``reg export``, ``sc.exe`` text) is turned into a
:class:`HostData`; checks only ever see that, so a host described by several files is merged
into one before it is audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low", "info")
# The registry's Start value / the number sc.exe qc prints before the name.
START_TYPES = {0: "Boot", 1: "System", 2: "Auto", 3: "Manual", 4: "Disabled"}


def host_from_file_name(source: str) -> str:
    """``WS01.reg`` / ``WS01.Spooler.sdshow.txt`` name host WS01; a name starting with a dot
    names the host by the whole file name rather than by nothing."""
    base = source.replace("/", "\\").rsplit("\\", 1)[-1]
    return base.split(".")[0] or base


@dataclass
class Service:
    name: str
    display_name: str | None = None
    image_path: str | None = None
    start_type: str | None = None
    delayed_auto_start: bool | None = None  # "Auto" started after the others (DelayedAutostart=1)
    service_type: int | None = None  # SERVICE_KERNEL_DRIVER=1, FILE_SYSTEM_DRIVER=2, WIN32=0x10/0x20
    account: str | None = None
    sddl: str | None = None  # service DACL as SDDL (from sc.exe sdshow or the binary Security value)
    binary: str | None = None  # resolved executable path, when the collector resolved it
    service_dll: str | None = None  # Parameters\ServiceDll of svchost-hosted services: the code that runs
    source: str = ""

    @property
    def is_driver(self) -> bool:
        return (
            self.service_type is not None and bool(self.service_type & 0x3) and not self.service_type & 0x30
        )

    def merge(self, other: Service) -> None:
        for k, v in vars(other).items():
            if v is not None and v != "" and getattr(self, k) in (None, ""):
                setattr(self, k, v)


@dataclass
class PathAcl:
    path: str
    sddl: str | None = None
    exists: bool | None = None
    is_dir: bool | None = None
    error: str | None = None


@dataclass
class AsrRule:
    id: str
    action: int | None  # 0 disabled, 1 block, 2 audit, 6 warn


@dataclass
class Defender:
    available: bool
    asr_rules: list[AsrRule] = field(default_factory=list)
    source: str | None = None
    error: str | None = None


@dataclass
class HostData:
    host: str
    os_caption: str | None = None
    os_version: str | None = None
    scm_sddl: str | None = None
    services: dict[str, Service] = field(default_factory=dict)  # key: lower-case service name
    paths: dict[str, PathAcl] = field(default_factory=dict)  # key: lower-case path
    defender: Defender | None = None  # None: not collected (reg/sc inputs)
    sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    collected_at: str | None = None

    def add_service(self, svc: Service) -> None:
        key = svc.name.lower()
        if key in self.services:
            self.services[key].merge(svc)
        else:
            self.services[key] = svc

    def merge(self, other: HostData) -> None:
        """Fold another input about the same host into this one (first value wins)."""
        for attr in ("os_caption", "os_version", "scm_sddl", "defender", "collected_at"):
            if getattr(self, attr) is None:
                setattr(self, attr, getattr(other, attr))
        for svc in other.services.values():
            self.add_service(svc)
        for k, p in other.paths.items():
            self.paths.setdefault(k, p)
        self.sources += [s for s in other.sources if s not in self.sources]
        self.errors += other.errors


@dataclass
class Finding:
    check: str  # e.g. AUD-M1026-001
    title: str
    severity: str
    mitigation: str  # M1026 / M1040 / M1022
    host: str
    target: str  # service name, "SCM", a path, or "Defender ASR"
    evidence: str
    fix: str
    source: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: details are built JSON-ready, and asdict's deep copy dominated
        # the run time of fleet-sized JSONL reports.
        return {"type": "finding", **{f.name: getattr(self, f.name) for f in fields(self)}}
