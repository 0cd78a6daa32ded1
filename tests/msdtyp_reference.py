"""A reference access check written from [MS-DTYP] 2.5.3.2 (AccessCheck pseudocode), independent
of ``scmwatch.audit.sd``: its own SDDL reader, its own generic mappings (from the Microsoft
service, SCM and file access-rights pages) and the *request* form of the algorithm (may this
token have exactly these rights: yes or no), where the audit uses the maximum-allowed form.

Kept deliberately plain and slow; used only by the property test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# [MS-DTYP] 2.4.3 ACCESS_MASK: generic bits.
GA, GX, GW, GR = 1 << 28, 1 << 29, 1 << 30, 1 << 31
READ_CONTROL, WRITE_DAC = 0x20000, 0x40000
# GENERIC_MAPPING per object type: (read, write, execute, all).
MAPPINGS = {
    "service": (0x2008D, 0x20002, 0x20170, 0xF01FF),
    "scm": (0x20014, 0x20022, 0x20009, 0xF003F),
    "file": (0x120089, 0x120116, 0x1200A0, 0x1F01FF),
    "directory": (0x120089, 0x120116, 0x1200A0, 0x1F01FF),
}
# [MS-DTYP] 2.5.1.1 SDDL ace_rights tokens.
RIGHTS = {
    "GA": GA,
    "GR": GR,
    "GW": GW,
    "GX": GX,
    "RC": READ_CONTROL,
    "SD": 0x10000,
    "WD": WRITE_DAC,
    "WO": 0x80000,
    "RP": 0x10,
    "WP": 0x20,
    "CC": 0x1,
    "DC": 0x2,
    "LC": 0x4,
    "SW": 0x8,
    "LO": 0x80,
    "DT": 0x40,
    "CR": 0x100,
    "FA": 0x1F01FF,
    "FR": 0x120089,
    "FW": 0x120116,
    "FX": 0x1200A0,
    "KA": 0xF003F,
    "KR": 0x20019,
    "KW": 0x20006,
    "KX": 0x20019,
}
# The SID strings the property test's generator uses.
SIDS = {
    "WD": "S-1-1-0",
    "AU": "S-1-5-11",
    "BU": "S-1-5-32-545",
    "IU": "S-1-5-4",
    "NU": "S-1-5-2",
    "SU": "S-1-5-6",
    "LS": "S-1-5-19",
    "NS": "S-1-5-20",
    "AN": "S-1-5-7",
    "BG": "S-1-5-32-546",
    "BA": "S-1-5-32-544",
    "SY": "S-1-5-18",
    "AC": "S-1-15-2-1",
    "RC": "S-1-5-12",
    "OW": "S-1-3-4",
    "CO": "S-1-3-0",
    "PU": "S-1-5-32-547",
    "RD": "S-1-5-32-555",
    "ME": "S-1-16-8192",
}
OWNER_RIGHTS = "S-1-3-4"


@dataclass
class RefAce:
    kind: str  # "A" or "D"
    inherit_only: bool
    mask: int  # generic rights already mapped
    sid: str


@dataclass
class RefSD:
    owner: str | None
    dacl: list[RefAce] | None  # None: NULL DACL


def _sid(tok: str) -> str:
    tok = tok.upper()
    return SIDS.get(tok, tok)


def parse(sddl: str, objtype: str) -> RefSD:
    """Only the subset the generator writes: optional O:, then D: with A/D ACEs or NO_ACCESS_CONTROL.

    Generic rights in the ACEs are mapped here, as Windows maps them when a descriptor is
    assigned to an object of ``objtype``."""
    m = re.fullmatch(r"(?i)(?:O:([^:]+?))?D:(.*)", sddl)
    assert m, sddl
    owner = _sid(m.group(1)) if m.group(1) else None
    body = m.group(2)
    if body.upper() == "NO_ACCESS_CONTROL":
        return RefSD(owner, None)
    aces = []
    for kind, flags, rights, sid in re.findall(r"\(([^;]*);([^;]*);([^;]*);;;([^)]*)\)", body):
        if rights.lower().startswith("0x"):
            mask = int(rights, 16)
        else:
            mask = 0
            for i in range(0, len(rights), 2):
                mask |= RIGHTS[rights[i : i + 2].upper()]
        pairs = [flags[i : i + 2].upper() for i in range(0, len(flags), 2)]
        aces.append(RefAce(kind.upper(), "IO" in pairs, map_generic(mask, objtype), _sid(sid)))
    return RefSD(owner, aces)


def map_generic(mask: int, objtype: str) -> int:
    read, write, execute, all_ = MAPPINGS[objtype]
    out = mask & ~(GA | GX | GW | GR)
    for bit, mapped in ((GR, read), (GW, write), (GX, execute), (GA, all_)):
        if mask & bit:
            out |= mapped
    return out


def access_check(sd: RefSD, token: frozenset[str], desired: int, objtype: str) -> bool:
    """[MS-DTYP] 2.5.3.2: may a token holding ``token`` open the object for ``desired``?"""
    remaining = map_generic(desired, objtype)
    if sd.dacl is None:
        return True
    aces = [a for a in sd.dacl if not a.inherit_only]
    is_owner = sd.owner is not None and sd.owner in token
    if is_owner and not any(a.sid == OWNER_RIGHTS for a in aces):
        remaining &= ~(READ_CONTROL | WRITE_DAC)
    for ace in aces:
        if remaining == 0:
            break
        if not (ace.sid in token or (ace.sid == OWNER_RIGHTS and is_owner)):
            continue
        if ace.kind == "A":
            remaining &= ~ace.mask
        elif ace.kind == "D" and ace.mask & remaining:
            return False
    return remaining == 0


def granted_rights(sd: RefSD, token: frozenset[str], objtype: str) -> int:
    """Every right of the type's ALL_ACCESS the token may open the object for, asked one at a time."""
    all_access = MAPPINGS[objtype][3]
    return sum(1 << b for b in range(24) if all_access >> b & 1 and access_check(sd, token, 1 << b, objtype))
