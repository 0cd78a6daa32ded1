"""The mitigation checks (ATT&CK T1569.002: M1026, M1040, M1022), run on one host's data.

Every finding says which principal can do what, through which ACE, and gives a fix an
administrator can paste. Rights are always evaluated with the access check of ``sd.py``
(stored ACE order, deny/allow, inherit-only skipped, generic rights mapped per object type) for a
set of realistic non-admin logon tokens (``principals.TOKENS``), never by looking at single ACEs.
"""

from __future__ import annotations

import copy
import functools
import ntpath
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from scmwatch.audit import principals as P
from scmwatch.audit.model import Finding, HostData, Service
from scmwatch.audit.paths import (
    ImagePath,
    ancestors,
    is_network_path,
    parse_image_path,
    user_writable_location,
)
from scmwatch.audit.sd import (
    DIRECTORY,
    FILE,
    OWNER_RIGHTS,
    SCM,
    SERVICE,
    SYNCHRONIZE,
    WRITE_DAC,
    WRITE_OWNER,
    ObjectType,
    SecurityDescriptor,
    effective_access,
    granting_aces,
    parse_sddl_cached,
)
from scmwatch.audit.snapshot import path_key
from scmwatch.detections import ASR_PSEXEC_WMI

ASR_ACTIONS = {0: "disabled", 1: "block", 2: "audit", 6: "warn"}

SERVICE_CHANGE_CONFIG = 0x2
SC_MANAGER_CONNECT = 0x1
SC_MANAGER_CREATE_SERVICE = 0x2
FILE_WRITE_DATA = 0x2  # = FILE_ADD_FILE on a directory
FILE_APPEND_DATA = 0x4  # = FILE_ADD_SUBDIRECTORY on a directory
FILE_DELETE_CHILD = 0x40
DELETE = 0x10000

SERVICE_DANGEROUS = SERVICE_CHANGE_CONFIG | WRITE_DAC | WRITE_OWNER
SCM_DANGEROUS = SC_MANAGER_CREATE_SERVICE | WRITE_DAC | WRITE_OWNER
SC_MANAGER_LOCK = 0x8
SC_MANAGER_MODIFY_BOOT_CONFIG = 0x20
# Also taken from non-admins in the proposed SCM DACL: no non-admin needs to lock the database or
# change the boot configuration.
SCM_STRIP = SCM_DANGEROUS | SC_MANAGER_LOCK | SC_MANAGER_MODIFY_BOOT_CONFIG
FILE_DANGEROUS = FILE_WRITE_DATA | FILE_APPEND_DATA | WRITE_DAC | WRITE_OWNER | DELETE
PARENT_DIR_DANGEROUS = FILE_WRITE_DATA | FILE_DELETE_CHILD | WRITE_DAC | WRITE_OWNER
ANCESTOR_DIR_DANGEROUS = WRITE_DAC | WRITE_OWNER


def is_local_system(svc: Service) -> bool:
    acct = (svc.account or "").strip().lower()
    if not acct:
        return not svc.is_driver  # Win32 services without ObjectName run as LocalSystem
    return acct in (
        "localsystem",
        ".\\localsystem",
        "nt authority\\system",
        "nt authority\\localsystem",
        "system",
        "s-1-5-18",
    )


def runs_as(svc: Service) -> tuple[bool, str]:
    """(runs with full privileges?, label): LocalSystem services and kernel drivers both do."""
    if svc.is_driver:
        return True, "kernel driver"
    system = is_local_system(svc)
    return system, svc.account or ("LocalSystem" if system else "unknown account")


@dataclass
class Grant:
    sid: str
    rights: int  # dangerous rights the tokens holding this principal end up with through it
    via: list[str]  # the ACEs (SDDL) naming this principal that grant them, or "owner"
    inherited: bool = False
    tokens: list[str] = field(default_factory=list)  # names of the logon tokens that get them


def nonadmin_grants(sd: SecurityDescriptor, objtype: ObjectType, dangerous: int) -> list[Grant]:
    """Non-admin principals through whose ACEs (or ownership) a token of the model
    (``principals.TOKENS``) is granted any of ``dangerous`` by the full access check."""
    candidates: list[str] = []
    if sd.dacl is None:
        candidates.append(P.EVERYONE)
    else:
        for ace in sd.dacl.aces:
            if ace.is_allow and not ace.inherit_only and ace.sid not in candidates:
                candidates.append(ace.sid)
    if sd.dacl is not None and sd.owner and sd.owner not in candidates:
        candidates.append(sd.owner)
    out = []
    for sid in candidates:
        is_owner = sid == sd.owner
        own, via, tokens, inherited = 0, [], [], False
        # A NULL DACL lets every token in, anonymous too (which Everyone does not include).
        for token in P.TOKENS if sd.dacl is None else P.tokens_holding(sid):
            through = 0
            for ace, bits in granting_aces(sd, token.sids, objtype):
                bits &= dangerous
                if not bits:
                    continue
                if ace is None:
                    text = (
                        "NULL DACL (no DACL: everyone has full access)"
                        if sd.dacl is None
                        else "owner (implicit WRITE_DAC)"
                    )
                    if sd.dacl is not None and not is_owner:
                        continue
                elif ace.sid == sid or (is_owner and ace.sid == OWNER_RIGHTS):
                    text = ace.to_sddl()
                    inherited = inherited or ace.inherited
                else:
                    continue
                through |= bits
                if text not in via:
                    via.append(text)
            if through:
                own |= through
                tokens.append(token.name)
        if own:
            out.append(Grant(sid, own, via, inherited, tokens))
    return out


_GRANTS_CACHE: dict[tuple[int, str, int], tuple[SecurityDescriptor, list[Grant]]] = {}


def _grants(sd: SecurityDescriptor, objtype: ObjectType, dangerous: int) -> list[Grant]:
    """:func:`nonadmin_grants` memoised per shared descriptor (see ``parse_sddl_cached``); the entry
    keeps a reference to ``sd`` so its id cannot be reused while cached."""
    key = (id(sd), objtype.name, dangerous)
    hit = _GRANTS_CACHE.get(key)
    if hit is not None and hit[0] is sd:
        return hit[1]
    if len(_GRANTS_CACHE) > 65536:
        _GRANTS_CACHE.clear()
    res = nonadmin_grants(sd, objtype, dangerous)
    _GRANTS_CACHE[key] = (sd, res)
    return res


def _principal(g: Grant, objtype: ObjectType) -> dict:
    return {
        "sid": g.sid,
        "name": P.name(g.sid),
        "rights": objtype.names(g.rights),
        "via": g.via,
        "tokens": g.tokens,
    }


def _describe(grants: list[Grant], objtype: ObjectType) -> str:
    return "; ".join(
        f"{P.name(g.sid)}: {', '.join(objtype.names(g.rights))} via {' '.join(g.via)} "
        f"(tokens: {P.describe_tokens(g.tokens)})"
        for g in grants
    )


def proposed_sddl(
    sd: SecurityDescriptor, objtype: ObjectType, strip: int, only: set[str] | None = None
) -> str:
    """The same DACL with ``strip`` removed from every non-admin allow ACE (or those in ``only``)."""
    new = copy.deepcopy(sd)
    new.owner = new.group = None  # sc.exe sdset needs no owner change; setting one may be refused
    if new.dacl is None:
        return "D:(A;;GA;;;SY)(A;;GA;;;BA)(A;;GR;;;AU)"
    kept = []
    for ace in new.dacl.aces:
        target = (ace.sid in only) if only is not None else not P.is_admin(ace.sid)
        if ace.is_allow and target:
            mapped = objtype.map_generic(ace.mask)
            if mapped & strip:
                ace.mask = mapped & ~strip
                if not ace.mask & ~SYNCHRONIZE:
                    continue
        kept.append(ace)
    new.dacl.aces = kept
    return new.to_sddl()


# ---- M1026 -----------------------------------------------------------------------------------


def check_service_dacl(hd: HostData, svc: Service) -> list[Finding]:
    if not svc.sddl:
        return []
    sd = parse_sddl_cached(svc.sddl)
    grants = _grants(sd, SERVICE, SERVICE_DANGEROUS)
    if not grants:
        return []
    system, acct = runs_as(svc)
    return [
        Finding(
            "AUD-M1026-001",
            CHECKS["AUD-M1026-001"].title,
            "critical" if system else "high",
            "M1026",
            hd.host,
            svc.name,
            f"service runs as {acct}; {_describe(grants, SERVICE)}",
            f'sc.exe sdset {svc.name} "{proposed_sddl(sd, SERVICE, SERVICE_DANGEROUS)}"  '
            "(removes SERVICE_CHANGE_CONFIG/WRITE_DAC/WRITE_OWNER from non-admin ACEs; "
            "with them anyone listed can point the service at their own binary and start it"
            + (" in the kernel)" if svc.is_driver else " as SYSTEM)" if system else ")"),
            svc.source,
            {
                "account": acct,
                "principals": [_principal(g, SERVICE) for g in grants],
                "sddl": svc.sddl,
            },
        )
    ]


def check_scm(hd: HostData) -> list[Finding]:
    if not hd.scm_sddl:
        return []
    sd = parse_sddl_cached(hd.scm_sddl)
    out = []
    grants = nonadmin_grants(sd, SCM, SCM_DANGEROUS)
    if grants:
        out.append(
            Finding(
                "AUD-M1026-002",
                CHECKS["AUD-M1026-002"].title,
                "critical",
                "M1026",
                hd.host,
                "SCM",
                _describe(grants, SCM),
                f'sc.exe sdset scmanager "{proposed_sddl(sd, SCM, SCM_STRIP)}"  '
                "(a non-admin who can create a "
                "service gets code run as LocalSystem)",
                hd.sources[0] if hd.sources else "",
                {
                    "principals": [_principal(g, SCM) for g in grants],
                    "sddl": hd.scm_sddl,
                },
            )
        )
    # Rights beyond connect for the generic remote logons (a principal the DACL names by SID is
    # already covered, remote or not, by AUD-M1026-002).
    by_token = {
        t.name: effective_access(sd, t.sids, SCM) & ~(SC_MANAGER_CONNECT | SYNCHRONIZE)
        for t in P.REMOTE_TOKENS
    }
    by_token = {name: rights for name, rights in by_token.items() if rights}
    if by_token:
        remote = functools.reduce(operator.or_, by_token.values())
        names = SCM.names(remote)
        remote_sids = set().union(*(t.sids for t in P.REMOTE_TOKENS))
        remote_fix = proposed_sddl(sd, SCM, ~SC_MANAGER_CONNECT & 0xFFFFFFFF, remote_sids)
        sev = "high" if remote & SCM_DANGEROUS else "medium"
        out.append(
            Finding(
                "AUD-M1026-003",
                CHECKS["AUD-M1026-003"].title,
                sev,
                "M1026",
                hd.host,
                "SCM",
                "non-admin network logons get more than SC_MANAGER_CONNECT on the SCM ("
                + "; ".join(f"{name}: {', '.join(SCM.names(r))}" for name, r in by_token.items())
                + "): remote service enumeration/reconnaissance"
                + (" and service creation" if remote & SC_MANAGER_CREATE_SERVICE else ""),
                f'sc.exe sdset scmanager "{remote_fix}"  (Windows 10 1709+ default: Authenticated Users get '
                "SC_MANAGER_CONNECT only; admins keep KA)",
                hd.sources[0] if hd.sources else "",
                {
                    "rights": names,
                    "tokens": {n: SCM.names(r) for n, r in by_token.items()},
                    "sddl": hd.scm_sddl,
                },
            )
        )
    return out


# ---- M1040 -----------------------------------------------------------------------------------

ASR_FIX = (
    f"Add-MpPreference -AttackSurfaceReductionRules_Ids {ASR_PSEXEC_WMI} "
    "-AttackSurfaceReductionRules_Actions Enabled  (or the same rule in Intune/GPO; note Microsoft "
    "documents this rule as incompatible with ConfigMgr client management)"
)


def asr_state(hd: HostData) -> str:
    """block / audit / warn / disabled / absent / unavailable / unknown (not collected)."""
    if hd.defender is None:
        return "unknown"
    if not hd.defender.available:
        return "unavailable"
    for r in hd.defender.asr_rules:
        if r.id == ASR_PSEXEC_WMI:
            return ASR_ACTIONS.get(r.action, f"action {r.action}") if r.action is not None else "absent"
    return "absent"


def check_asr(hd: HostData) -> list[Finding]:
    state = asr_state(hd)
    if state in ("block", "unknown"):
        return []
    if state == "unavailable":
        sev, ev = (
            "medium",
            (
                f"Defender preferences could not be read ({hd.defender.error or 'no detail'}); "
                "the rule cannot be shown to be enforced"
            ),
        )
    elif state in ("audit", "warn"):
        sev, ev = (
            "medium",
            f"rule {ASR_PSEXEC_WMI} is in {state} mode: PsExec/WMI process creation is logged, not blocked",
        )
    else:
        sev, ev = "high", f"rule {ASR_PSEXEC_WMI} is {state}"
    src = hd.defender.source if hd.defender else None
    return [
        Finding(
            "AUD-M1040-001",
            CHECKS["AUD-M1040-001"].title,
            sev,
            "M1040",
            hd.host,
            "Defender ASR",
            ev + (f" (read via {src})" if src else ""),
            ASR_FIX,
            hd.sources[0] if hd.sources else "",
            {"state": state},
        )
    ]


# ---- M1022 -----------------------------------------------------------------------------------


def _acl(hd: HostData, path: str) -> SecurityDescriptor | None:
    acl = hd.paths.get(path_key(path))
    if acl is None or not acl.sddl:
        return None
    return parse_sddl_cached(acl.sddl)


def _principals(grants: list[Grant], objtype: ObjectType) -> list[dict]:
    return [_principal(g, objtype) for g in grants]


def _icacls_fix(path: str, grants: list[Grant]) -> str:
    cmds = [f'icacls "{path}" /remove:g *{g.sid}' for g in grants]
    if any(g.inherited for g in grants):
        cmds.append(
            f'(inherited ACEs: fix the parent where they are defined, or run icacls "{path}" '
            "/inheritance:d first)"
        )
    return "; ".join(cmds)


def check_paths(hd: HostData, svc: Service) -> list[Finding]:
    if not svc.image_path and not svc.binary:
        return []
    ip: ImagePath = parse_image_path(svc.image_path or svc.binary or "", svc.binary)
    system, acct = runs_as(svc)
    src = svc.source
    out: list[Finding] = []
    exe = ip.executable
    targets = [(exe, "binary")]
    if svc.service_dll:
        targets.append((parse_image_path(svc.service_dll).executable, "service DLL"))

    # 001: the binary (and the ServiceDll that svchost loads) itself.
    binary_writable = False
    for path, what in targets:
        sd = _acl(hd, path)
        grants = _grants(sd, FILE, FILE_DANGEROUS) if sd is not None else []
        if not grants:
            continue
        binary_writable = True
        out.append(
            Finding(
                "AUD-M1022-001",
                CHECKS["AUD-M1022-001"].title,
                "critical" if system else "high",
                "M1022",
                hd.host,
                svc.name,
                f"{what} {path} (service runs as {acct}): {_describe(grants, FILE)}",
                _icacls_fix(path, grants),
                src,
                {"path": path, "kind": what, "principals": _principals(grants, FILE)},
            )
        )

    # 002: the directories leading to them.
    is_parent: dict[str, bool] = {}  # directory -> holds a target directly (else an ancestor)
    for path, _what in targets:
        for n, d in enumerate(ancestors(path)):
            is_parent[d] = is_parent.get(d, False) or n == 0
    writable_dirs = []
    for d, parent_dir in is_parent.items():
        dsd = _acl(hd, d)
        if dsd is None:
            continue
        mask = PARENT_DIR_DANGEROUS if parent_dir else ANCESTOR_DIR_DANGEROUS
        grants = _grants(dsd, DIRECTORY, mask)
        if grants:
            writable_dirs.append((d, parent_dir, grants))
    if writable_dirs:
        parent = any(p for _, p, _ in writable_dirs)
        sev = ("critical" if system else "high") if parent else ("high" if system else "medium")
        out.append(
            Finding(
                "AUD-M1022-002",
                CHECKS["AUD-M1022-002"].title,
                sev,
                "M1022",
                hd.host,
                svc.name,
                f"service runs as {acct}; "
                + " | ".join(f"{d}: {_describe(g, DIRECTORY)}" for d, _, g in writable_dirs),
                " ; ".join(_icacls_fix(d, g) for d, _, g in writable_dirs),
                src,
                {
                    "directories": [
                        {"path": d, "parent": p, "principals": _principals(gs, DIRECTORY)}
                        for d, p, gs in writable_dirs
                    ]
                },
            )
        )

    # 003: unquoted path with spaces.
    if not ip.quoted and ip.hijack_candidates:
        quoted = f'\\"{exe}\\"' + (f" {ip.arguments}" if ip.arguments else "")
        fix = f'sc.exe config {svc.name} binPath= "{quoted}"'
        writable, unknown = [], []
        for cand in ip.hijack_candidates:
            d = ntpath.dirname(cand)
            d = d if not d.endswith(":") else d + "\\"
            dsd = _acl(hd, d)
            if dsd is None:
                unknown.append(cand)
                continue
            grants = _grants(dsd, DIRECTORY, FILE_WRITE_DATA | WRITE_DAC | WRITE_OWNER)
            if grants:
                writable.append((cand, d, grants))
        if writable:
            out.append(
                Finding(
                    "AUD-M1022-003",
                    CHECKS["AUD-M1022-003"].title,
                    "critical" if system else "high",
                    "M1022",
                    hd.host,
                    svc.name,
                    f"ImagePath {svc.image_path!r} is unquoted; "
                    + " | ".join(
                        f"{c} can be planted ({d}: {_describe(g, DIRECTORY)})" for c, d, g in writable
                    ),
                    fix,
                    src,
                    {"candidates": [c for c, _, _ in writable], "image_path": svc.image_path},
                )
            )
        elif unknown:
            out.append(
                Finding(
                    "AUD-M1022-003",
                    CHECKS["AUD-M1022-003"].title,
                    "low",
                    "M1022",
                    hd.host,
                    svc.name,
                    f"ImagePath {svc.image_path!r} is unquoted with spaces; the SCM tries "
                    f"{', '.join(unknown)} first; directory ACLs were not collected, "
                    "so writability is unverified",
                    fix,
                    src,
                    {"candidates": unknown, "image_path": svc.image_path, "verified": False},
                )
            )

    # 004 / 005: location.
    if is_network_path(exe):
        out.append(
            Finding(
                "AUD-M1022-004",
                CHECKS["AUD-M1022-004"].title,
                "critical" if system else "high",
                "M1022",
                hd.host,
                svc.name,
                f"{exe} is loaded from a network share (service runs as {acct}); whoever can write the share "
                "(or spoof the server) runs code on this host",
                f"copy the binary to a local admin-only directory (e.g. C:\\Program Files\\<vendor>\\) and "
                f'sc.exe config {svc.name} binPath= "\\"<local path>\\"..."',
                src,
                {"path": exe},
            )
        )
    else:
        where = user_writable_location(exe)
        if where:
            verified = _acl(hd, exe) is not None and not binary_writable and not writable_dirs
            sev = "low" if verified else ("high" if system else "medium")
            note = (
                "; collected ACLs show no non-admin write access here"
                if verified
                else "; such locations are writable by users unless locked down"
            )
            out.append(
                Finding(
                    "AUD-M1022-005",
                    CHECKS["AUD-M1022-005"].title,
                    sev,
                    "M1022",
                    hd.host,
                    svc.name,
                    f"{exe} is in {where} (service runs as {acct}){note}",
                    "move the binary under C:\\Program Files\\ (admin-only) and "
                    f"sc.exe config {svc.name} binPath= ...",
                    src,
                    {"path": exe, "location": where},
                )
            )
    return out


@dataclass(frozen=True)
class Check:
    id: str
    mitigation: str
    title: str
    needs: str  # which input provides the data
    # the function that reports it: (HostData) -> findings for host scope, (HostData, Service) ->
    # findings for service scope; one function may report several checks
    run: Callable[..., list[Finding]]
    scope: str = "service"  # "host" or "service"


# The registry: a new check is one function above plus one row here (in the order listed by
# ``scmwatch audit --list-checks``).
CHECKS: dict[str, Check] = {
    c.id: c
    for c in (
        Check(
            "AUD-M1026-001",
            "M1026",
            "Non-admins can reconfigure a service (service DACL)",
            "service SDDL (snapshot, .reg Security value, sc sdshow)",
            check_service_dacl,
        ),
        Check(
            "AUD-M1026-002",
            "M1026",
            "Non-admins can create services or rewrite the SCM's DACL",
            "SCM SDDL (snapshot, sc sdshow scmanager)",
            check_scm,
            "host",
        ),
        Check(
            "AUD-M1026-003",
            "M1026",
            "Remote non-admins have SCM access beyond connect",
            "SCM SDDL (snapshot, sc sdshow scmanager)",
            check_scm,
            "host",
        ),
        Check(
            "AUD-M1040-001",
            "M1040",
            "ASR rule 'Block process creations from PSExec and WMI' not in block mode",
            "Defender preferences (snapshot)",
            check_asr,
            "host",
        ),
        Check(
            "AUD-M1022-001",
            "M1022",
            "Service binary writable by non-admins",
            "file SDDL (snapshot)",
            check_paths,
        ),
        Check(
            "AUD-M1022-002",
            "M1022",
            "Directory on the service binary's path writable by non-admins",
            "directory SDDL (snapshot)",
            check_paths,
        ),
        Check(
            "AUD-M1022-003",
            "M1022",
            "Unquoted service path with spaces (path interception)",
            "ImagePath (+ directory SDDL from a snapshot)",
            check_paths,
        ),
        Check("AUD-M1022-004", "M1022", "Service binary on a network share", "ImagePath", check_paths),
        Check(
            "AUD-M1022-005", "M1022", "Service binary in a user-writable location", "ImagePath", check_paths
        ),
    )
}


def _runs(scope: str) -> list[Callable[..., list[Finding]]]:
    """The check functions of one scope, each once, in table order."""
    return list(dict.fromkeys(c.run for c in CHECKS.values() if c.scope == scope))


def audit_host(hd: HostData) -> list[Finding]:
    """All findings for one host, most severe first."""
    out: list[Finding] = []
    for run in _runs("host"):
        out += run(hd)
    service_runs = _runs("service")
    for svc in sorted(hd.services.values(), key=lambda s: s.name.lower()):
        for run in service_runs:
            out += run(hd, svc)
    order = {s: i for i, s in enumerate(("critical", "high", "medium", "low", "info"))}
    out.sort(key=lambda f: (order.get(f.severity, 9), f.check, f.target.lower()))
    return out
