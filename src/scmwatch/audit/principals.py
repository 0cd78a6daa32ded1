"""Which SIDs count as administrators, and the non-admin tokens a DACL is evaluated against.

The audit asks "what can a non-admin do to this object?". A DACL names principals, but the
access check runs on a token, which holds several group SIDs at once, so a deny ACE for one of
them removes rights another one's allow ACE grants. The audit therefore evaluates a fixed set of
realistic logon tokens (:data:`TOKENS`, with Windows' default group memberships) exactly as
the access check does, and names in each finding the tokens that end up with the right.

Default memberships assumed (a stock Windows 10/11 or Server workstation/member server):
every logon except anonymous holds Everyone; Authenticated Users and INTERACTIVE are members of
BUILTIN\\Users, so every token holding either holds BUILTIN\\Users too; anonymous is not in
Everyone (``EveryoneIncludesAnonymous`` = 0, the default since XP SP2 / Server 2003).
AppContainer, capability and restricted SIDs never grant access alone (the kernel grants only
what both the normal check and the package/restricting check allow), so they are in no token.
"""

from __future__ import annotations

import re
from typing import NamedTuple

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


class Token(NamedTuple):
    """A non-admin logon as the access check sees it: its name and every SID it holds."""

    name: str
    sids: frozenset[str]

    def plus(self, sid: str) -> Token:
        return Token(self.name, self.sids | {sid})


CONSOLE_LOGON = "S-1-2-1"
BATCH = "S-1-5-3"
REMOTE_INTERACTIVE = "S-1-5-14"
THIS_ORGANIZATION = "S-1-5-15"
REMOTE_DESKTOP_USERS = "S-1-5-32-555"
_USER = frozenset({EVERYONE, AUTHENTICATED_USERS, THIS_ORGANIZATION, USERS})
_LOCAL = frozenset({LOCAL, CONSOLE_LOGON})
_SERVICE = _USER | _LOCAL | {SERVICE_LOGON}

# The token model (README "Audit"). The first seven are an ordinary account's logons; a SID the
# DACL names that none of them holds (a user, a domain or custom group) is evaluated as a member
# of each of them, a guest account or Domain Guests as a member of the two guest logons.
USER_TOKENS = (
    Token("interactive", _USER | _LOCAL | {INTERACTIVE}),
    Token("remote desktop", _USER | {LOCAL, INTERACTIVE, REMOTE_INTERACTIVE, REMOTE_DESKTOP_USERS}),
    Token("network", _USER | {NETWORK}),
    Token("batch", _USER | _LOCAL | {BATCH}),
    Token("service", _SERVICE),
    Token("LocalService", _SERVICE | {LOCAL_SERVICE}),
    Token("NetworkService", _SERVICE | {NETWORK_SERVICE}),
)
GUEST_TOKENS = (
    Token("guest interactive", frozenset({EVERYONE, GUESTS, INTERACTIVE, USERS}) | _LOCAL),
    Token("guest network", frozenset({EVERYONE, GUESTS, NETWORK})),
)
ANONYMOUS_TOKEN = Token("anonymous", frozenset({ANONYMOUS, NETWORK}))
TOKENS = USER_TOKENS + GUEST_TOKENS + (ANONYMOUS_TOKEN,)
# Logons that reach the host over the network (SMB/RPC), for the SCM's remote-access check.
REMOTE_TOKENS = tuple(t for t in TOKENS if NETWORK in t.sids)
_IN_SOME_TOKEN = frozenset().union(*(t.sids for t in TOKENS))


def describe_tokens(names: list[str]) -> str:
    """Token names for a finding; all seven ordinary-account logons read "every user logon"."""
    users = [t.name for t in USER_TOKENS]
    if set(users) <= set(names):
        names = ["every user logon"] + [n for n in names if n not in users]
    return ", ".join(names)


def never_grants_alone(sid: str) -> bool:
    """AppContainer package and capability SIDs (``AC``, S-1-15-2-*, S-1-15-3-*) and the
    restricting SIDs RESTRICTED / WRITE RESTRICTED: an ACE for them only narrows another check."""
    return sid.startswith("S-1-15-") or sid in ("S-1-5-12", "S-1-5-33")


def tokens_holding(sid: str) -> tuple[Token, ...]:
    """The tokens of the model that hold ``sid`` (none for admins and AppContainer SIDs)."""
    if is_admin(sid) or never_grants_alone(sid):
        return ()
    if sid in _IN_SOME_TOKEN and sid != REMOTE_DESKTOP_USERS:
        return tuple(t for t in TOKENS if sid in t.sids)
    m = _DOMAIN_SID.match(sid)
    if m and int(m.group(1)) in (501, 514):  # Guest, Domain Guests
        return tuple(t.plus(sid) for t in GUEST_TOKENS)
    # A group membership (Remote Desktop Users too: it is in the remote desktop logon because
    # only its members may log on so, but a member carries it in every logon) goes with the user.
    return tuple(t.plus(sid) for t in USER_TOKENS)
