"""Security descriptors: SDDL text and self-relative binary, plus the Windows access check.

Why not a library: the audit must read exactly what ``sc.exe sdshow`` and ``reg export`` emit.
``winacl`` 0.1.9 fails on that (concatenated rights such as ``CCLCSWRPWPDTLOCRRC`` are parsed as
hex; ``BA``/``LS``/``NS`` become domain-relative RIDs; ``AC`` is unknown; ``D:`` raises;
``GENERIC_WRITE`` is 0x4000000), ``sddl-parser`` 0.6.2 requires ``O:``/``G:`` (sdshow prints
neither), adds repeated rights instead of OR-ing them, reads an empty DACL as NULL and has no
binary form; ``winsddl`` is GPLv3 and file/AD-only. The subset needed here is small and fully
specified ([MS-DTYP] 2.4, 2.5.1), so it lives in this module, with tests for every edge case.

Semantics kept exactly: a NULL DACL (``D:NO_ACCESS_CONTROL`` / DACL_PRESENT with offset 0 / no
``D:`` at all) grants everything; an empty DACL (``D:``) grants nothing; ACEs are evaluated in
stored order (an allow before a deny wins, as the kernel does); inherit-only ACEs do not apply to
the object itself; generic rights are mapped with the object type's own generic mapping.
"""

from __future__ import annotations

import functools
import operator
import re
import struct
from dataclasses import dataclass, field

# ---- access rights -------------------------------------------------------------------------

DELETE = 0x00010000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000
SYNCHRONIZE = 0x00100000
ACCESS_SYSTEM_SECURITY = 0x01000000
MAXIMUM_ALLOWED = 0x02000000
GENERIC_ALL = 0x10000000
GENERIC_EXECUTE = 0x20000000
GENERIC_WRITE = 0x40000000
GENERIC_READ = 0x80000000
GENERIC_BITS = GENERIC_ALL | GENERIC_EXECUTE | GENERIC_WRITE | GENERIC_READ

# SDDL right letters ([MS-DTYP] 2.5.1.1). The object-specific letters (CC, DC, ...) are the low
# 16 bits, whose meaning depends on the object type (see the *_RIGHTS tables below).
SDDL_RIGHTS: dict[str, int] = {
    "GA": GENERIC_ALL,
    "GR": GENERIC_READ,
    "GW": GENERIC_WRITE,
    "GX": GENERIC_EXECUTE,
    "RC": READ_CONTROL,
    "SD": DELETE,
    "WD": WRITE_DAC,
    "WO": WRITE_OWNER,
    "CC": 0x1,
    "DC": 0x2,
    "LC": 0x4,
    "SW": 0x8,
    "RP": 0x10,
    "WP": 0x20,
    "DT": 0x40,
    "LO": 0x80,
    "CR": 0x100,
    "FA": 0x1F01FF,
    "FR": 0x120089,
    "FW": 0x120116,
    "FX": 0x1200A0,
    "KA": 0xF003F,
    "KR": 0x20019,
    "KW": 0x20006,
    "KX": 0x20019,
    "NR": 0x1,
    "NW": 0x2,
    "NX": 0x4,
}
# Order used when writing SDDL back (what sc.exe sdshow itself prints).
_SDDL_WRITE_ORDER = (
    "GA",
    "GR",
    "GW",
    "GX",
    "CC",
    "DC",
    "LC",
    "SW",
    "RP",
    "WP",
    "DT",
    "LO",
    "CR",
    "SD",
    "RC",
    "WD",
    "WO",
)

STANDARD_NAMES = {
    DELETE: "DELETE",
    READ_CONTROL: "READ_CONTROL",
    WRITE_DAC: "WRITE_DAC",
    WRITE_OWNER: "WRITE_OWNER",
    SYNCHRONIZE: "SYNCHRONIZE",
    ACCESS_SYSTEM_SECURITY: "ACCESS_SYSTEM_SECURITY",
    MAXIMUM_ALLOWED: "MAXIMUM_ALLOWED",
    GENERIC_ALL: "GENERIC_ALL",
    GENERIC_EXECUTE: "GENERIC_EXECUTE",
    GENERIC_WRITE: "GENERIC_WRITE",
    GENERIC_READ: "GENERIC_READ",
}


@dataclass(frozen=True)
class ObjectType:
    """An object type's specific right names and generic mapping (GENERIC_MAPPING)."""

    name: str
    rights: dict[int, str]
    generic_read: int
    generic_write: int
    generic_execute: int
    generic_all: int

    def map_generic(self, mask: int) -> int:
        """Replace generic bits by this type's specific rights, as the access check does."""
        out = mask & ~GENERIC_BITS
        if mask & GENERIC_READ:
            out |= self.generic_read
        if mask & GENERIC_WRITE:
            out |= self.generic_write
        if mask & GENERIC_EXECUTE:
            out |= self.generic_execute
        if mask & GENERIC_ALL:
            out |= self.generic_all
        return out

    def names(self, mask: int) -> list[str]:
        """Readable right names for a mask (generic bits named as such, unknown bits in hex)."""
        out: list[str] = []
        rest = mask
        for bit, name in sorted({**self.rights, **STANDARD_NAMES}.items()):
            if mask & bit:
                out.append(name)
                rest &= ~bit
        if rest:
            out.append(hex(rest))
        return out


# https://learn.microsoft.com/windows/win32/services/service-security-and-access-rights
SERVICE = ObjectType(
    "service",
    {
        0x1: "SERVICE_QUERY_CONFIG",
        0x2: "SERVICE_CHANGE_CONFIG",
        0x4: "SERVICE_QUERY_STATUS",
        0x8: "SERVICE_ENUMERATE_DEPENDENTS",
        0x10: "SERVICE_START",
        0x20: "SERVICE_STOP",
        0x40: "SERVICE_PAUSE_CONTINUE",
        0x80: "SERVICE_INTERROGATE",
        0x100: "SERVICE_USER_DEFINED_CONTROL",
    },
    generic_read=READ_CONTROL | 0x1 | 0x4 | 0x8 | 0x80,
    generic_write=READ_CONTROL | 0x2,
    generic_execute=READ_CONTROL | 0x10 | 0x20 | 0x40 | 0x100,
    generic_all=0xF01FF,
)
SCM = ObjectType(
    "scm",
    {
        0x1: "SC_MANAGER_CONNECT",
        0x2: "SC_MANAGER_CREATE_SERVICE",
        0x4: "SC_MANAGER_ENUMERATE_SERVICE",
        0x8: "SC_MANAGER_LOCK",
        0x10: "SC_MANAGER_QUERY_LOCK_STATUS",
        0x20: "SC_MANAGER_MODIFY_BOOT_CONFIG",
    },
    generic_read=READ_CONTROL | 0x4 | 0x10,
    generic_write=READ_CONTROL | 0x2 | 0x20,
    generic_execute=READ_CONTROL | 0x1 | 0x8,
    generic_all=0xF003F,
)
# https://learn.microsoft.com/windows/win32/fileio/file-security-and-access-rights
FILE = ObjectType(
    "file",
    {
        0x1: "FILE_READ_DATA",
        0x2: "FILE_WRITE_DATA",
        0x4: "FILE_APPEND_DATA",
        0x8: "FILE_READ_EA",
        0x10: "FILE_WRITE_EA",
        0x20: "FILE_EXECUTE",
        0x40: "FILE_DELETE_CHILD",
        0x80: "FILE_READ_ATTRIBUTES",
        0x100: "FILE_WRITE_ATTRIBUTES",
    },
    generic_read=0x120089,
    generic_write=0x120116,
    generic_execute=0x1200A0,
    generic_all=0x1F01FF,
)
DIRECTORY = ObjectType(
    "directory",
    {
        0x1: "FILE_LIST_DIRECTORY",
        0x2: "FILE_ADD_FILE",
        0x4: "FILE_ADD_SUBDIRECTORY",
        0x8: "FILE_READ_EA",
        0x10: "FILE_WRITE_EA",
        0x20: "FILE_TRAVERSE",
        0x40: "FILE_DELETE_CHILD",
        0x80: "FILE_READ_ATTRIBUTES",
        0x100: "FILE_WRITE_ATTRIBUTES",
    },
    generic_read=FILE.generic_read,
    generic_write=FILE.generic_write,
    generic_execute=FILE.generic_execute,
    generic_all=FILE.generic_all,
)

# ---- SIDs ----------------------------------------------------------------------------------

# SDDL SID abbreviations ([MS-DTYP] 2.5.1.1). Domain-relative ones map to a RID.
SID_ABBREVIATIONS: dict[str, str] = {
    "AN": "S-1-5-7",
    "AU": "S-1-5-11",
    "BA": "S-1-5-32-544",
    "BG": "S-1-5-32-546",
    "BO": "S-1-5-32-551",
    "BU": "S-1-5-32-545",
    "CD": "S-1-5-32-574",
    "CG": "S-1-3-1",
    "CO": "S-1-3-0",
    "CY": "S-1-5-32-569",
    "ED": "S-1-5-9",
    "ER": "S-1-5-32-573",
    "HI": "S-1-16-12288",
    "HA": "S-1-5-32-578",
    "IS": "S-1-5-32-568",
    "IU": "S-1-5-4",
    "LS": "S-1-5-19",
    "LW": "S-1-16-4096",
    "ME": "S-1-16-8192",
    "MP": "S-1-16-8448",
    "MU": "S-1-5-32-558",
    "LU": "S-1-5-32-559",
    "NO": "S-1-5-32-556",
    "NS": "S-1-5-20",
    "NU": "S-1-5-2",
    "OW": "S-1-3-4",
    "PO": "S-1-5-32-550",
    "PS": "S-1-5-10",
    "PU": "S-1-5-32-547",
    "RA": "S-1-5-32-575",
    "RC": "S-1-5-12",
    "RD": "S-1-5-32-555",
    "RE": "S-1-5-32-552",
    "RM": "S-1-5-32-580",
    "RU": "S-1-5-32-554",
    "SI": "S-1-16-16384",
    "SO": "S-1-5-32-549",
    "SS": "S-1-18-2",
    "SU": "S-1-5-6",
    "SY": "S-1-5-18",
    "UD": "S-1-5-84-0-0-0-0-0",
    "WD": "S-1-1-0",
    "WR": "S-1-5-33",
    "AC": "S-1-15-2-1",
    "AS": "S-1-18-1",
    "AO": "S-1-5-32-548",
    "ES": "S-1-5-32-576",
    "MS": "S-1-5-32-577",
    "AA": "S-1-5-32-579",
}
DOMAIN_RID_ABBREVIATIONS: dict[str, int] = {
    "LA": 500,
    "LG": 501,
    "DA": 512,
    "DU": 513,
    "DG": 514,
    "DC": 515,
    "DD": 516,
    "CA": 517,
    "SA": 518,
    "EA": 519,
    "PA": 520,
    "RO": 498,
    "CN": 522,
    "AP": 525,
    "KA": 526,
    "EK": 527,
}
# Placeholder domain part for domain-relative abbreviations: the SDDL alone does not say which
# domain, and classification only needs the RID.
UNKNOWN_DOMAIN = "S-1-5-21-0-0-0"
_ABBREV_BY_SID = {v: k for k, v in SID_ABBREVIATIONS.items()}

_SID_RE = re.compile(r"S-1-(\d{1,15}|0X[0-9A-F]{1,12})((?:-\d{1,12}){0,15})", re.ASCII)
_RIGHTS_NUMBER_RE = re.compile(r"0[xX][0-9a-fA-F]{1,16}|\d{1,16}", re.ASCII)


class SDError(ValueError):
    """An SDDL string or binary security descriptor that cannot be read."""


def sid_from_sddl(token: str) -> str:
    """Turn an SDDL SID token (abbreviation or full SID) into a canonical SID string."""
    up = token.upper()
    if up in SID_ABBREVIATIONS:
        return SID_ABBREVIATIONS[up]
    if up in DOMAIN_RID_ABBREVIATIONS:
        return f"{UNKNOWN_DOMAIN}-{DOMAIN_RID_ABBREVIATIONS[up]}"
    m = _SID_RE.fullmatch(up)
    if m:
        # Canonical form (no leading zeros), so S-1-5-32-0544 is BA, as ConvertStringSidToSid reads it.
        auth = int(m.group(1), 0) if m.group(1).startswith("0X") else int(m.group(1))
        subs = [int(x) for x in m.group(2).split("-")[1:]]
        if auth < 2**48 and all(x < 2**32 for x in subs):
            auth_s = str(auth) if auth < 2**32 else f"0x{auth:012X}"
            return "-".join(["S", "1", auth_s, *map(str, subs)])
    raise SDError(f"unknown SID {_clip(token)!r}")


def _clip(text: str, n: int = 60) -> str:
    """Hostile descriptors can be megabytes long: a problem line quotes only their start."""
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def sid_abbreviation(sid: str) -> str:
    """The SDDL abbreviation of a SID when it has one, else the SID itself."""
    return _ABBREV_BY_SID.get(sid, sid)


def sid_to_bytes(sid: str) -> bytes:
    parts = sid.split("-")
    if len(parts) < 3 or parts[0] != "S":
        raise SDError(f"not a SID: {_clip(sid)!r}")
    auth = int(parts[2], 0)
    subs = [int(p) for p in parts[3:]]
    return (
        struct.pack("<BB", int(parts[1]), len(subs))
        + auth.to_bytes(6, "big")
        + struct.pack(f"<{len(subs)}I", *subs)
    )


def sid_from_bytes(data: bytes, offset: int) -> tuple[str, int]:
    """Read a binary SID at offset; return (SID string, size in bytes)."""
    if offset + 8 > len(data):
        raise SDError(f"truncated SID at offset {offset}")
    rev, count = data[offset], data[offset + 1]
    if rev != 1 or count > 15:
        raise SDError(f"bad SID header at offset {offset}")
    size = 8 + 4 * count
    if offset + size > len(data):
        raise SDError(f"truncated SID at offset {offset}")
    auth = int.from_bytes(data[offset + 2 : offset + 8], "big")
    subs = struct.unpack_from(f"<{count}I", data, offset + 8)
    auth_s = str(auth) if auth < 2**32 else f"0x{auth:012X}"
    return "-".join(["S", str(rev), auth_s, *map(str, subs)]), size


# ---- ACE / ACL / SD ------------------------------------------------------------------------

ACE_TYPES = {  # SDDL type -> binary AceType
    "A": 0x00,
    "D": 0x01,
    "AU": 0x02,
    "AL": 0x03,
    "OA": 0x05,
    "OD": 0x06,
    "OU": 0x07,
    "OL": 0x08,
    "XA": 0x09,
    "XD": 0x0A,
    "ZA": 0x0B,
    "XU": 0x0D,
    "ML": 0x11,
    "RA": 0x12,
    "SP": 0x13,
}
_ACE_TYPE_NAMES = {v: k for k, v in ACE_TYPES.items()}
ALLOW_TYPES = {0x00, 0x05, 0x09, 0x0B}
DENY_TYPES = {0x01, 0x06, 0x0A, 0x0C}
OBJECT_TYPES = {0x05, 0x06, 0x07, 0x08, 0x0B, 0x0C, 0x0F, 0x10}
CALLBACK_TYPES = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0F}

ACE_FLAGS = {"OI": 0x01, "CI": 0x02, "NP": 0x04, "IO": 0x08, "ID": 0x10, "SA": 0x40, "FA": 0x80}
INHERIT_ONLY = 0x08
INHERITED = 0x10

SE_DACL_PRESENT = 0x0004
SE_SACL_PRESENT = 0x0010
SE_DACL_AUTO_INHERIT_REQ = 0x0100
SE_SACL_AUTO_INHERIT_REQ = 0x0200
SE_DACL_AUTO_INHERITED = 0x0400
SE_SACL_AUTO_INHERITED = 0x0800
SE_DACL_PROTECTED = 0x1000
SE_SACL_PROTECTED = 0x2000
SE_SELF_RELATIVE = 0x8000


@dataclass
class Ace:
    type: int
    flags: int
    mask: int
    sid: str
    object_type: str | None = None  # object ACEs: GUID (text) when present
    condition: str | None = None  # callback ACEs: condition text / application data (hex)

    @property
    def is_allow(self) -> bool:
        return self.type in ALLOW_TYPES

    @property
    def is_deny(self) -> bool:
        return self.type in DENY_TYPES

    @property
    def inherit_only(self) -> bool:
        return bool(self.flags & INHERIT_ONLY)

    @property
    def inherited(self) -> bool:
        return bool(self.flags & INHERITED)

    def to_sddl(self) -> str:
        typ = _ACE_TYPE_NAMES.get(self.type, f"0x{self.type:02x}")
        flags = "".join(k for k, v in ACE_FLAGS.items() if self.flags & v)
        tail = f";{self.condition}" if self.condition and not self.condition.startswith("hex:") else ""
        return (
            f"({typ};{flags};{mask_to_sddl(self.mask)};{self.object_type or ''};;"
            f"{sid_abbreviation(self.sid)}{tail})"
        )


@dataclass
class Acl:
    aces: list[Ace] = field(default_factory=list)
    protected: bool = False
    auto_inherited: bool = False
    auto_inherit_req: bool = False


@dataclass
class SecurityDescriptor:
    """A parsed descriptor. ``dacl is None`` means a NULL DACL (everyone has full access)."""

    owner: str | None = None
    group: str | None = None
    dacl: Acl | None = None
    sacl: Acl | None = None
    control: int = SE_SELF_RELATIVE

    def to_sddl(self) -> str:
        out = []
        if self.owner:
            out.append("O:" + sid_abbreviation(self.owner))
        if self.group:
            out.append("G:" + sid_abbreviation(self.group))
        out.append("D:" + _acl_sddl(self.dacl))
        if self.sacl is not None:
            out.append("S:" + _acl_sddl(self.sacl))
        return "".join(out)


def _acl_sddl(acl: Acl | None) -> str:
    if acl is None:
        return "NO_ACCESS_CONTROL"
    flags = (
        ("P" if acl.protected else "")
        + ("AR" if acl.auto_inherit_req else "")
        + ("AI" if acl.auto_inherited else "")
    )
    return flags + "".join(a.to_sddl() for a in acl.aces)


def mask_to_sddl(mask: int) -> str:
    """Letters when every bit has one (as sc.exe prints), else a hex mask."""
    for alias in ("KA", "FA", "FR", "FW", "FX"):
        if mask == SDDL_RIGHTS[alias]:
            return alias
    rest = mask
    letters = []
    for name in _SDDL_WRITE_ORDER:
        bit = SDDL_RIGHTS[name]
        if rest & bit:
            letters.append(name)
            rest &= ~bit
    if rest or not letters:
        return f"0x{mask:x}"
    return "".join(letters)


# ---- SDDL parsing --------------------------------------------------------------------------


def _parse_rights(text: str) -> int:
    if not text:
        return 0
    if text[:1].isdigit():
        base = 16 if text[:2].lower() == "0x" else 10
        if not _RIGHTS_NUMBER_RE.fullmatch(text) or int(text, base) >= 2**32:
            raise SDError(f"bad rights {_clip(text)!r} (not a 32-bit access mask)")
        return int(text, base)
    if len(text) % 2:
        raise SDError(f"bad rights {_clip(text)!r}")
    mask = 0
    for i in range(0, len(text), 2):
        tok = text[i : i + 2].upper()
        if tok not in SDDL_RIGHTS:
            raise SDError(f"unknown right {tok!r} in {_clip(text)!r}")
        mask |= SDDL_RIGHTS[tok]
    return mask


def _split_aces(body: str, where: str) -> list[str]:
    """Split ``(..)(..)`` respecting nested parentheses of conditional expressions."""
    out, depth, start, i = [], 0, 0, 0
    in_quote = False
    while i < len(body):
        c = body[i]
        if c == '"':
            in_quote = not in_quote
        elif not in_quote and c == "(":
            if depth == 0:
                start = i
            depth += 1
        elif not in_quote and c == ")":
            depth -= 1
            if depth < 0:
                raise SDError(f"unbalanced ')' in {where}")
            if depth == 0:
                out.append(body[start + 1 : i])
        elif depth == 0 and not c.isspace():
            raise SDError(f"unexpected {c!r} in {where}")
        i += 1
    if depth:
        raise SDError(f"unterminated ACE in {where}")
    return out


def _parse_ace(text: str) -> Ace:
    parts = text.split(";", 6)
    if len(parts) < 6:
        raise SDError(f"ACE needs 6 fields: ({text})")
    typ, flags, rights, obj, _inh, sid = parts[:6]
    cond = parts[6] if len(parts) > 6 else None
    if typ.upper() not in ACE_TYPES:
        raise SDError(f"unknown ACE type {_clip(typ)!r}")
    fl = 0
    if len(flags) % 2:
        raise SDError(f"bad ACE flags {_clip(flags)!r}")
    for i in range(0, len(flags), 2):
        tok = flags[i : i + 2].upper()
        if tok not in ACE_FLAGS:
            raise SDError(f"unknown ACE flag {tok!r}")
        fl |= ACE_FLAGS[tok]
    return Ace(ACE_TYPES[typ.upper()], fl, _parse_rights(rights), sid_from_sddl(sid), obj or None, cond)


def _parse_acl(body: str, where: str) -> Acl | None:
    acl = Acl()
    i = 0
    up = body.upper()
    while i < len(body) and body[i] != "(":
        if up.startswith("NO_ACCESS_CONTROL", i):
            if body[i + 17 :].strip():
                raise SDError(f"{where}: NO_ACCESS_CONTROL followed by ACEs")
            return None
        if up[i] == "P":
            acl.protected = True
            i += 1
        elif up.startswith("AI", i):
            acl.auto_inherited = True
            i += 2
        elif up.startswith("AR", i):
            acl.auto_inherit_req = True
            i += 2
        else:
            raise SDError(f"bad {where} flags {body[: i + 3]!r}")
    acl.aces = [_parse_ace(a) for a in _split_aces(body[i:], where)]
    return acl


def parse_sddl(text: str) -> SecurityDescriptor:
    """Parse an SDDL string (whitespace, as sc.exe prints around it, is ignored).

    Letters are read case-insensitively (``d:(a;;cclc;;;au)``), as Windows'
    ConvertStringSecurityDescriptorToSecurityDescriptor reads them; written SDDL is upper-case."""
    # sc.exe wraps the string in blank lines; keep inner spaces (conditional ACE text).
    s = text.replace("\r", "").replace("\n", "").replace("\t", "").strip()
    if not s:
        raise SDError("empty SDDL")
    sd = SecurityDescriptor()
    # Find component starts at depth 0: O:, G:, D:, S:.
    comps: list[tuple[str, int]] = []
    depth = 0
    in_quote = False
    for i, c in enumerate(s):
        if c == '"':
            in_quote = not in_quote
        elif in_quote:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and c.upper() in "OGDS" and i + 1 < len(s) and s[i + 1] == ":":
            comps.append((c.upper(), i))
    if not comps or comps[0][1] != 0:
        raise SDError(f"not SDDL: {text.strip()[:40]!r}")
    seen = set()
    for n, (kind, start) in enumerate(comps):
        if kind in seen:
            raise SDError(f"duplicate {kind}: component")
        seen.add(kind)
        end = comps[n + 1][1] if n + 1 < len(comps) else len(s)
        body = s[start + 2 : end]
        if kind in "OG":
            sid = sid_from_sddl(body)
            if kind == "O":
                sd.owner = sid
            else:
                sd.group = sid
        elif kind == "D":
            sd.dacl = _parse_acl(body, "DACL")
            sd.control |= SE_DACL_PRESENT
        else:
            sd.sacl = _parse_acl(body, "SACL")
            sd.control |= SE_SACL_PRESENT
    if "D" not in seen:
        sd.dacl = None  # no DACL component: NULL DACL
    return sd


@functools.lru_cache(maxsize=16384)
def parse_sddl_cached(text: str) -> SecurityDescriptor:
    """:func:`parse_sddl` memoised: a fleet repeats the same few hundred descriptors thousands of
    times (every svchost service, every System32 directory). The result is shared: do not mutate it."""
    return parse_sddl(text)


# ---- binary (self-relative) ----------------------------------------------------------------


def _acl_from_bytes(data: bytes, offset: int, where: str) -> Acl:
    if offset + 8 > len(data):
        raise SDError(f"truncated {where} header at offset {offset}")
    rev, _sbz, size, count, _sbz2 = struct.unpack_from("<BBHHH", data, offset)
    if rev not in (2, 4):
        raise SDError(f"bad {where} revision {rev}")
    if offset + size > len(data):
        raise SDError(f"truncated {where}: needs {size} bytes at offset {offset}, have {len(data) - offset}")
    acl = Acl()
    pos = offset + 8
    for n in range(count):
        if pos + 4 > offset + size:
            raise SDError(f"truncated {where}: ACE {n} header")
        typ, flags, asize = struct.unpack_from("<BBH", data, pos)
        if asize < 8 or pos + asize > offset + size:
            raise SDError(f"bad {where} ACE {n} size {asize}")
        body = data[pos : pos + asize]
        mask = struct.unpack_from("<I", body, 4)[0]
        p = 8
        obj = None
        if typ in OBJECT_TYPES:
            oflags = struct.unpack_from("<I", body, 8)[0]
            p = 12
            if oflags & 1:
                obj = _guid_text(body[p : p + 16])
                p += 16
            if oflags & 2:
                p += 16
        sid, ssize = sid_from_bytes(body, p)
        extra = body[p + ssize :]
        cond = ("hex:" + extra.hex()) if typ in CALLBACK_TYPES and extra.strip(b"\0") else None
        acl.aces.append(Ace(typ, flags, mask, sid, obj, cond))
        pos += asize
    return acl


def _guid_text(b: bytes) -> str:
    if len(b) < 16:
        raise SDError("truncated GUID")
    d1, d2, d3 = struct.unpack_from("<IHH", b)
    return f"{d1:08x}-{d2:04x}-{d3:04x}-{b[8:10].hex()}-{b[10:16].hex()}"


def parse_binary(data: bytes) -> SecurityDescriptor:
    """Parse a self-relative SECURITY_DESCRIPTOR ([MS-DTYP] 2.4.6), e.g. a Services\\X\\Security value."""
    if len(data) < 20:
        raise SDError(f"truncated security descriptor ({len(data)} bytes, header needs 20)")
    rev, _sbz, control, o_owner, o_group, o_sacl, o_dacl = struct.unpack_from("<BBHIIII", data)
    if rev != 1:
        raise SDError(f"bad security descriptor revision {rev}")
    if not control & SE_SELF_RELATIVE:
        raise SDError("security descriptor is not self-relative")
    sd = SecurityDescriptor(control=control)
    if o_owner:
        sd.owner = sid_from_bytes(data, o_owner)[0]
    if o_group:
        sd.group = sid_from_bytes(data, o_group)[0]
    if control & SE_SACL_PRESENT and o_sacl:
        sd.sacl = _acl_from_bytes(data, o_sacl, "SACL")
        sd.sacl.protected = bool(control & SE_SACL_PROTECTED)
    if control & SE_DACL_PRESENT and o_dacl:
        sd.dacl = _acl_from_bytes(data, o_dacl, "DACL")
        sd.dacl.protected = bool(control & SE_DACL_PROTECTED)
        sd.dacl.auto_inherited = bool(control & SE_DACL_AUTO_INHERITED)
        sd.dacl.auto_inherit_req = bool(control & SE_DACL_AUTO_INHERIT_REQ)
    else:
        sd.dacl = None  # DACL absent or present-but-NULL: both grant everyone full access
    return sd


def _acl_to_bytes(acl: Acl) -> bytes:
    body = b""
    for ace in acl.aces:
        if ace.type in OBJECT_TYPES or ace.type in CALLBACK_TYPES:
            raise SDError("writing object/callback ACEs is not supported")
        a = struct.pack("<I", ace.mask) + sid_to_bytes(ace.sid)
        body += struct.pack("<BBH", ace.type, ace.flags, 4 + len(a)) + a
    return struct.pack("<BBHHH", 2, 0, 8 + len(body), len(acl.aces), 0) + body


def to_binary(sd: SecurityDescriptor) -> bytes:
    """Self-relative bytes in the layout Windows writes (owner, group, SACL, DACL after the header).

    Used to generate test fixtures; verified by round-tripping through :func:`parse_binary`.
    """
    control = SE_SELF_RELATIVE
    parts: list[bytes] = []
    offs = [0, 0, 0, 0]
    pos = 20
    for i, blob in enumerate(
        (
            sid_to_bytes(sd.owner) if sd.owner else None,
            sid_to_bytes(sd.group) if sd.group else None,
            _acl_to_bytes(sd.sacl) if sd.sacl is not None else None,
            _acl_to_bytes(sd.dacl) if sd.dacl is not None else None,
        )
    ):
        if blob is not None:
            offs[i] = pos
            parts.append(blob)
            pos += len(blob)
    if sd.sacl is not None:
        control |= SE_SACL_PRESENT
    control |= SE_DACL_PRESENT  # NULL DACL is DACL_PRESENT with offset 0
    if sd.dacl is not None:
        if sd.dacl.protected:
            control |= SE_DACL_PROTECTED
        if sd.dacl.auto_inherited:
            control |= SE_DACL_AUTO_INHERITED
        if sd.dacl.auto_inherit_req:
            control |= SE_DACL_AUTO_INHERIT_REQ
    return struct.pack("<BBHIIII", 1, 0, control, *offs) + b"".join(parts)


# ---- access check --------------------------------------------------------------------------

OWNER_RIGHTS = "S-1-3-4"


def effective_access(sd: SecurityDescriptor, token: set[str] | frozenset[str], objtype: ObjectType) -> int:
    """Rights a token holding exactly the SIDs in ``token`` is granted (no privileges, no admin)."""
    return functools.reduce(operator.or_, (bits for _ace, bits in granting_aces(sd, token, objtype)), 0)


def granting_aces(
    sd: SecurityDescriptor, token: set[str] | frozenset[str], objtype: ObjectType
) -> list[tuple[Ace | None, int]]:
    """Which ACE decided to grant which rights to the token (``None``: no ACE, i.e. a NULL DACL or
    the owner's implicit rights), so a finding can name the ACE that is really in the way.

    Follows the DACL evaluation of AccessCheck: ACEs in stored order, a right decided by the first
    ACE that mentions it; inherit-only ACEs skipped; generic rights mapped per object type; the
    owner implicitly gets READ_CONTROL and WRITE_DAC unless an OWNER RIGHTS ACE is present.
    Conditional (callback) ACEs are taken at their worst: allow applies, deny does not.
    """
    if sd.dacl is None:
        return [(None, objtype.map_generic(GENERIC_ALL))]
    out: list[tuple[Ace | None, int]] = []
    granted = denied = 0
    aces = [a for a in sd.dacl.aces if not a.inherit_only]
    owner_rights_ace = any(a.sid == OWNER_RIGHTS for a in aces)
    is_owner = sd.owner is not None and sd.owner in token
    if is_owner and not owner_rights_ace:
        granted = READ_CONTROL | WRITE_DAC
        out.append((None, granted))
    for ace in aces:
        applies = ace.sid in token or (ace.sid == OWNER_RIGHTS and is_owner)
        if not applies or ace.object_type:
            continue
        mask = objtype.map_generic(ace.mask)
        if ace.is_deny:
            if ace.type in CALLBACK_TYPES:
                continue
            denied |= mask & ~granted
        elif ace.is_allow:
            new = mask & ~denied & ~granted
            if new:
                granted |= new
                out.append((ace, new))
    return out
