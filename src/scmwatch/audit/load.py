"""Find audit inputs, recognise each by content, read it, and merge inputs per host.

No input is trusted: every problem becomes one message naming the file (``AuditLog``), the
file or item is skipped, and every other host is still audited.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scmwatch.audit.model import HostData
from scmwatch.audit.regfile import RegError, reg_to_host
from scmwatch.audit.sctext import ScTextError, looks_like_sc, sc_to_host
from scmwatch.audit.sd import SDError, parse_sddl_cached
from scmwatch.audit.snapshot import SnapshotError, decode_text, read_snapshot, text_encoding

DIR_SUFFIXES = (".json", ".reg", ".txt", ".sddl")
MAX_BYTES = 256 * 1024 * 1024
# Win32's limit for a path, even with the \\?\ prefix; the path checks are quadratic in a path's
# depth, so a longer (impossible) one is refused rather than walked.
MAX_PATH_CHARS = 32767


@dataclass
class AuditLog:
    """Problems met while reading: (file, message), notes, and how many files were read at all."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # worth saying, not a problem
    files_seen: int = 0
    files_read: int = 0

    def error(self, source: str, message: str) -> None:
        self.problems.append((source, _clip(message)))

    def note(self, source: str, message: str) -> None:
        self.notes.append((source, message))

    @property
    def files_failed(self) -> int:
        return self.files_seen - self.files_read


def _clip(message: str, limit: int = 1000) -> str:
    """One problem, one readable line: a collector's error text can be any size."""
    return message if len(message) <= limit else f"{message[:limit]}... ({len(message)} characters)"


def discover(paths: list[str], log: AuditLog) -> list[Path]:
    """Input files in order; a walk keeps regular files only (a FIFO or device would block the
    read forever), and each one skipped is reported."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, files in os.walk(path, onerror=lambda exc: _walk_error(exc, log)):
                dirs.sort()
                for f in sorted(files):
                    if f.lower().endswith(DIR_SUFFIXES):
                        found = Path(root) / f
                        if found.is_file():
                            out.append(found)
                        elif found.exists():
                            log.files_seen += 1
                            log.error(str(found), "not a regular file, skipped")
        elif path.exists():
            out.append(path)
        else:
            log.files_seen += 1
            log.error(p, "symlink loop" if _is_loop(path) else "no such file or directory")
    return out


def _walk_error(exc: OSError, log: AuditLog) -> None:
    log.files_seen += 1
    log.error(exc.filename or "?", f"cannot read directory: {exc.strerror or exc}")


def _is_loop(path: Path) -> bool:
    try:
        path.stat()
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def read_one(path: Path, log: AuditLog) -> HostData | None:
    """Read one input file of any supported kind; None (and a logged problem) when unreadable."""
    src = str(path)
    try:
        if not path.is_file():
            log.files_seen += 1
            log.error(src, "not a regular file, skipped")
            return None
        if path.stat().st_size > MAX_BYTES:
            log.files_seen += 1
            log.error(src, f"larger than {MAX_BYTES // 2**20} MiB, skipped")
            return None
        data = path.read_bytes()
    except OSError as exc:
        log.files_seen += 1
        log.error(src, f"cannot read: {exc.strerror or exc}")
        return None
    return read_data(data, src, log)


def read_data(data: bytes, src: str, log: AuditLog, kind: str | None = None) -> HostData | None:
    """Read one input's bytes as ``kind`` (a key of READERS; recognised by content when None)."""
    log.files_seen += 1
    try:
        hd = READERS[kind or sniff(data)](data, src)
    except (SnapshotError, RegError, ScTextError) as exc:
        log.error(src, str(exc))
        return None
    _validate(hd)
    for msg in hd.errors:
        log.error(src, msg)
    log.files_read += 1
    return hd


def sniff(data: bytes) -> str:
    """Which reader an input is for, from its first characters."""
    codec, skip = text_encoding(data)
    probe = data[skip : skip + 400]
    p = probe[: len(probe) // 2 * 2 if codec.startswith("utf-16") else None].decode(codec, "replace").lstrip()
    if p.startswith("{"):
        return "snapshot"
    if p.startswith(("Windows Registry Editor", "REGEDIT4")):
        return "reg"
    return "sc"


def _read_sc(data: bytes, src: str) -> HostData:
    bad = None
    try:
        text = decode_text(data)
    except UnicodeDecodeError as exc:
        if text_encoding(data) != ("utf-8", 0):
            text, bad = decode_text(data, "replace"), f"not valid {exc.encoding}: {exc.reason} (replaced)"
        else:
            # cmd.exe's ``sc qc X > file`` writes the OEM code page: 850 on German and other
            # Western European systems (umlauts in display names and paths). Binary junk decodes
            # too, and is then refused as "not sc.exe output" below.
            text = data.decode("cp850")
    if not looks_like_sc(text):
        raise ScTextError("unrecognised input (not a scmwatch snapshot, .reg export or sc.exe output)")
    hd = sc_to_host(text, src)
    if bad:
        hd.errors.append(bad)
    return hd


# Every input kind: a function from (bytes, source name) to HostData that raises one of the
# three input errors above for a file it cannot read.
READERS: dict[str, Callable[[bytes, str], HostData]] = {
    "snapshot": read_snapshot,
    "reg": reg_to_host,
    "sc": _read_sc,
}


def _validate(hd: HostData) -> None:
    """Reject invalid SDDL and impossible paths item by item, so one bad string does not hide
    the rest of the host."""

    def valid(sddl: str | None, what: str) -> str | None:
        if sddl is None:
            return None
        try:
            parse_sddl_cached(sddl)
        except SDError as exc:
            hd.errors.append(f"{what}: invalid SDDL: {exc}")
            return None
        return sddl

    def path(value: str | None, what: str) -> str | None:
        if value is not None and len(value) > MAX_PATH_CHARS:
            hd.errors.append(f"{what}: {len(value)} characters, longer than any Windows path; ignored")
            return None
        return value

    hd.scm_sddl = valid(hd.scm_sddl, "SCM")
    for svc in hd.services.values():
        svc.sddl = valid(svc.sddl, f"service {svc.name}")
        svc.image_path = path(svc.image_path, f"service {svc.name}: ImagePath")
        svc.binary = path(svc.binary, f"service {svc.name}: binary")
        svc.service_dll = path(svc.service_dll, f"service {svc.name}: ServiceDll")
    for key, acl in list(hd.paths.items()):
        if path(acl.path, f"path {acl.path[:60]}...") is None:
            del hd.paths[key]
        else:
            acl.sddl = valid(acl.sddl, f"path {acl.path}")


def load(paths: list[str], log: AuditLog) -> list[HostData]:
    """Read every input and merge them per host (case-insensitive host name).

    A host's newest snapshot (by ``collected_at``) is the base: a share that keeps every day's
    collection must not have last month's state win because its folder sorts first. Older
    snapshots of the host are left out with a note; ``.reg`` and sc.exe inputs then fill what
    the snapshot lacks, in input order."""
    groups: dict[str, list[HostData]] = {}
    for path in discover(paths, log):
        hd = read_one(path, log)
        if hd is not None:
            groups.setdefault(hd.host.lower(), []).append(hd)
    out = []
    for inputs in groups.values():
        snapshots = [hd for hd in inputs if hd.collected_at is not None]
        newest = max(snapshots, key=lambda hd: _collected(hd.collected_at), default=None)
        base = newest or inputs[0]
        for hd in inputs:
            if hd is base:
                continue
            if newest is not None and hd.collected_at is not None:
                log.note(
                    hd.sources[0],
                    f"older snapshot of {hd.host} (collected {hd.collected_at}) left out: "
                    f"{newest.sources[0]} was collected {newest.collected_at}",
                )
                continue
            base.merge(hd)
        out.append(base)
    return out


def _collected(stamp: str | None) -> float:
    """A snapshot's collection time; an unreadable one counts as older than any readable one."""
    try:
        t = datetime.fromisoformat((stamp or "").replace("Z", "+00:00"))
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError, OSError):  # not ISO 8601; or past year 1 / 9999 in UTC
        return float("-inf")
