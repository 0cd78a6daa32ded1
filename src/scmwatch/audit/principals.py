"""Which SIDs count as administrators, and what a non-admin token built around a SID contains.

The audit asks "what can a non-admin do to this object?". A DACL names principals, but a real
token holds several group SIDs at once (a member of Users is also Authenticated Users and
Everyone), and a deny ACE for Everyone therefore also blocks Users. So each non-admin principal is
evaluated with the smallest realistic token that contains it (:func:`token_for`).
"""

from __future__ import annotations

import re

EVERYONE = "S-1-1-0"
LOCAL = "S-1-2-0"
NETWORK = "S-1-5-2"
INTERACTIVE = "S-1-5-4"
SERVICE_LOGON = "S-1-5-6"
ANONYMOUS = "S-1-5-7"
AUTHENTICATED_USERS = "S-1-5-11"
LOCAL_SYSTEM = "S-1-5-18"
LOCAL_SERVICE = "S-1-5-19"
NETWORK_SERVICE = "S-1-5-20"
ADMINISTRATORS = "S-1-5-32-544"
USERS = "S-1-5-32-545"
GUESTS = "S-1-5-32-546"
ALL_APP_PACKAGES = "S-1-15-2-1"

NAMES = {
    EVERYONE: "Everyone",
    LOCAL: "LOCAL",
    NETWORK: "NT AUTHORITY\\NETWORK",
    INTERACTIVE: "NT AUTHORITY\\INTERACTIVE",
    SERVICE_LOGON: "NT AUTHORITY\\SERVICE",
    ANONYMOUS: "NT AUTHORITY\\ANONYMOUS LOGON",
    AUTHENTICATED_USERS: "NT AUTHORITY\\Authenticated Users",
    LOCAL_SYSTEM: "NT AUTHORITY\\SYSTEM",
    LOCAL_SERVICE: "NT AUTHORITY\\LOCAL SERVICE",
    NETWORK_SERVICE: "NT AUTHORITY\\NETWORK SERVICE",
    ADMINISTRATORS: "BUILTIN\\Administrators",
    USERS: "BUILTIN\\Users",
    GUESTS: "BUILTIN\\Guests",
    "S-1-5-32-547": "BUILTIN\\Power Users",
    "S-1-5-32-549": "BUILTIN\\Server Operators",
    "S-1-5-32-555": "BUILTIN\\Remote Desktop Users",
    "S-1-5-32-580": "BUILTIN\\Remote Management Users",
    ALL_APP_PACKAGES: "ALL APPLICATION PACKAGES",
    "S-1-3-0": "CREATOR OWNER",
    "S-1-3-1": "CREATOR GROUP",
    "S-1-3-4": "OWNER RIGHTS",
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464": "NT SERVICE\\TrustedInstaller",
}

# SIDs that are administrators or the system itself: their rights are not findings.
_ADMIN_SIDS = {
    LOCAL_SYSTEM,
    ADMINISTRATORS,
    "S-1-5-32-549",  # Server Operators: may manage services by design
    "S-1-3-0",
    "S-1-3-1",  # CREATOR OWNER/GROUP: placeholders, replaced on inheritance
    "S-1-3-4",  # OWNER RIGHTS: evaluated through the owner
    "S-1-5-9",  # Enterprise Domain Controllers
}
# Domain-relative RIDs of admin accounts/groups: Administrator, Domain/Schema/Enterprise Admins.
_ADMIN_RIDS = {500, 512, 518, 519}
_DOMAIN_SID = re.compile(r"S-1-5-21-\d+-\d+-\d+-(\d+)$")


def name(sid: str) -> str:
    """A readable name for a SID (the SID itself when unknown)."""
    n = NAMES.get(sid)
    if n:
        return n
    m = _DOMAIN_SID.match(sid)
    if m:
        rid = int(m.group(1))
        known = {
            500: "Administrator",
            501: "Guest",
            512: "Domain Admins",
            513: "Domain Users",
            514: "Domain Guests",
            515: "Domain Computers",
            519: "Enterprise Admins",
        }
        if rid in known:
            return f"{known[rid]} ({sid})"
    return sid


def is_admin(sid: str) -> bool:
    """True for SYSTEM, Administrators and equivalents, and service SIDs (NT SERVICE\\*).

    Per-service SIDs (S-1-5-80-*) are granted rights on their own service by design, and the
    TrustedInstaller service owns system binaries; neither is a user an attacker logs on as.
    """
    if sid in _ADMIN_SIDS or sid.startswith("S-1-5-80-") or sid.startswith("S-1-16-"):
        return True
    m = _DOMAIN_SID.match(sid)
    return bool(m and int(m.group(1)) in _ADMIN_RIDS)


def token_for(sid: str) -> frozenset[str]:
    """The smallest realistic non-admin token that contains ``sid``."""
    if sid == EVERYONE:
        return frozenset({EVERYONE})
    if sid == ANONYMOUS:
        return frozenset({ANONYMOUS, NETWORK})
    if sid == ALL_APP_PACKAGES or sid.startswith("S-1-15-"):
        return frozenset({sid})  # AppContainer tokens carry package/capability SIDs
    if sid == GUESTS or (_DOMAIN_SID.match(sid) and sid.endswith(("-501", "-514"))):
        return frozenset({sid, GUESTS, EVERYONE})
    if sid == AUTHENTICATED_USERS:
        return frozenset({AUTHENTICATED_USERS, EVERYONE})
    if sid == INTERACTIVE:
        return frozenset({INTERACTIVE, LOCAL, USERS, AUTHENTICATED_USERS, EVERYONE})
    if sid == NETWORK:
        return frozenset({NETWORK, USERS, AUTHENTICATED_USERS, EVERYONE})
    if sid in (LOCAL_SERVICE, NETWORK_SERVICE, SERVICE_LOGON):
        return frozenset({sid, SERVICE_LOGON, USERS, AUTHENTICATED_USERS, EVERYONE})
    return frozenset({sid, USERS, AUTHENTICATED_USERS, EVERYONE})


# A user connecting over the network (SMB/RPC) without admin rights.
REMOTE_USER_TOKEN = frozenset({NETWORK, USERS, AUTHENTICATED_USERS, EVERYONE})
