"""Service ImagePath handling: which file runs, which directories lead to it, where it lives.

An ImagePath is a command line. Quoted, the executable is the quoted part. Unquoted, the SCM
(CreateProcess) tries every prefix that ends at a space, appending ``.exe``: for
``C:\\Program Files\\A B\\svc.exe -x`` it tries ``C:\\Program.exe``, then
``C:\\Program Files\\A.exe``, then the real binary; whoever can create one of the earlier files
gets code run as the service account (M1022 "path interception by unquoted path").
"""

from __future__ import annotations

import ntpath
import re
from dataclasses import dataclass, field

# Expansions for inputs that carry unexpanded paths (reg export, sc.exe qc). The collector expands
# with the host's real environment; these are the Windows defaults.
DEFAULT_ENV = {
    "systemroot": "C:\\Windows",
    "windir": "C:\\Windows",
    "systemdrive": "C:",
    "programfiles": "C:\\Program Files",
    "programfiles(x86)": "C:\\Program Files (x86)",
    "programw6432": "C:\\Program Files",
    "programdata": "C:\\ProgramData",
    "allusersprofile": "C:\\ProgramData",
    "commonprogramfiles": "C:\\Program Files\\Common Files",
    "public": "C:\\Users\\Public",
}
# CreateProcess, which the SCM calls with the ImagePath as command line, limits the module
# name part of a command line to MAX_PATH characters: no longer prefix is ever tried.
MAX_PATH = 260
_ENV_RE = re.compile(r"%([^%]+)%")
_EXT_RE = re.compile(r"\.(exe|com|bat|cmd|sys|dll|scr)(?=\s|$)", re.IGNORECASE)


# Win32 device-namespace and NT forms of a drive or UNC path: \\?\C:\, \\.\C:\, \??\C:\,
# \\?\UNC\server\share. They name the same file as the plain form.
_DEVICE_PREFIX = re.compile(r"^(?:\\\\[?.]\\|\\\?\?\\)(?:(UNC\\)|(?=[A-Za-z]:))", re.IGNORECASE)


def normalize(path: str) -> str:
    """The plain Win32 form of a path, as GetFullPathName resolves it before a file is opened:
    ``.``/``..`` segments resolved (``C:\\winnt\\system32\\..\\..\\Recycler\\x.exe`` is
    ``C:\\Recycler\\x.exe``), forward and doubled slashes folded, and the ``\\\\?\\``,
    ``\\\\.\\`` and ``\\??\\`` prefixes of drive and UNC paths removed."""
    if not path:
        return path
    p = path.replace("/", "\\")
    m = _DEVICE_PREFIX.match(p)
    if m:
        p = ("\\\\" if m.group(1) else "") + p[m.end() :]
    return ntpath.normpath(p)


def expand(raw: str) -> str:
    """Expand %VARS% (Windows defaults) and the kernel prefixes drivers use."""
    s = raw.strip().strip("\0")
    s = _ENV_RE.sub(lambda m: DEFAULT_ENV.get(m.group(1).lower(), m.group(0)), s)
    low = s.lower()
    if low.startswith("\\systemroot\\"):
        s = "C:\\Windows\\" + s[12:]
    elif low.startswith("system32\\") or low.startswith("syswow64\\"):
        s = "C:\\Windows\\" + s
    return s


@dataclass
class ImagePath:
    raw: str
    executable: str
    quoted: bool
    arguments: str = ""
    # Unquoted paths with spaces: files the SCM would try before the real executable.
    hijack_candidates: list[str] = field(default_factory=list)


def parse_image_path(raw: str, resolved: str | None = None) -> ImagePath:
    """Split an ImagePath into executable and arguments, and list interception candidates."""
    s = expand(raw)
    if s.startswith('"'):
        end = s.find('"', 1)
        exe = s[1:end] if end > 0 else s[1:]
        args = s[end + 1 :].strip() if end > 0 else ""
        return ImagePath(raw, normalize(resolved or exe), True, args)
    if resolved:
        exe = resolved
        rest = s[len(resolved) :].strip() if s.lower().startswith(resolved.lower()) else ""
    else:
        m = _EXT_RE.search(s)
        if m:
            exe, rest = s[: m.end()], s[m.end() :].strip()
        else:
            exe, _, rest = s.partition(" ")
    candidates = []
    for i, c in enumerate(exe[:MAX_PATH]):
        if c == " ":
            prefix = exe[:i]
            if prefix and not prefix.endswith("\\") and len(prefix) + 4 < MAX_PATH:
                candidates.append(normalize(prefix + ".exe"))
    return ImagePath(raw, normalize(exe), False, rest, candidates)


def ancestors(path: str) -> list[str]:
    out = []
    cur = path
    while True:
        parent = ntpath.dirname(cur.rstrip("\\")) if cur not in ntpath.splitdrive(cur)[0] else cur
        if not parent or parent == cur:
            break
        drive, tail = ntpath.splitdrive(parent)
        if tail in ("", "\\"):
            out.append(drive + "\\")
            break
        out.append(parent)
        cur = parent
    return out


def is_network_path(path: str) -> bool:
    """UNC paths (``\\\\server\\share``, also as ``\\\\?\\UNC\\``), not other device paths."""
    p = normalize(path)
    return p.startswith("\\\\") and not p.startswith(("\\\\?\\", "\\\\.\\"))


# Microsoft's own ProgramData subtrees that ship with locked-down ACLs.
_PROGRAMDATA_TRUSTED = (
    "\\programdata\\microsoft\\windows defender\\",
    "\\programdata\\microsoft\\windows defender advanced threat protection\\",
)


# Vista and later, XP/2003 on NTFS, FAT volumes: every user may create files in them.
_RECYCLE_BINS = ("\\$recycle.bin\\", "\\recycler\\", "\\recycled\\")


# Folders under \Windows where a standard user may create files on a default install (the
# directories AppLocker-bypass research lists as writable and executable by Users); a binary
# there passes a glance at "it is in C:\Windows".
_WINDOWS_WRITABLE = tuple(
    f"\\windows\\{d}\\"
    for d in (
        "tasks",
        "tracing",
        "registration\\crmlog",
        "debug\\wia",
        "system32\\tasks",
        "system32\\fxstmp",
        "system32\\com\\dmp",
        "system32\\microsoft\\crypto\\rsa\\machinekeys",
        "system32\\spool\\printers",
        "system32\\spool\\servers",
        "system32\\spool\\drivers\\color",
        "syswow64\\tasks",
        "syswow64\\fxstmp",
        "syswow64\\com\\dmp",
    )
)


def user_writable_location(path: str) -> str | None:
    """Name the conventionally user-writable location a path is in, or None (``..`` resolved)."""
    low = normalize(path.lower().replace("/", "\\"))
    _drive, tail = ntpath.splitdrive(low)
    if re.search(r"\\(temp|tmp)\\", tail):
        return "a Temp directory"
    if tail.startswith("\\users\\"):
        return "a user profile (\\Users)"
    if tail.startswith("\\programdata\\") and tail.count("\\") >= 3:
        if not any(t in tail for t in _PROGRAMDATA_TRUSTED):
            return "a ProgramData subfolder"
    if tail.startswith(_RECYCLE_BINS):
        return "the recycle bin"
    if tail.startswith(_WINDOWS_WRITABLE):
        return "a user-writable folder under \\Windows"
    return None
