"""Reusable multi-event steps: a network logon, opening svcctl, installing and starting a service.

Scenarios are sequences of these steps. Each step emits every event Windows (and Zeek) would
record for it, on the right host, with identifiers that agree across events — e.g. the 4697
carries the ``SubjectLogonId`` of the 4624 that opened the session (detections.md §0.2). A step takes
the detections each emitted event must raise, because *which* of a step's events is
suspicious depends on the scenario (a 7045 of ``PSEXESVC`` is, of ``BITS`` is not).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from scmwatch.detections import PSEXEC_SRC, SVCCTL, VARIANT
from scmwatch.events.names import looks_random
from scmwatch.simulate import build as b
from scmwatch.simulate.records import Label, Rec
from scmwatch.simulate.world import SYSTEM, Account, Host, Logon, Proc, World

_B62 = string.ascii_letters + string.digits


@dataclass
class Ctx:
    """What a scenario writes into: the world, a random source, and the events of one episode."""

    world: World
    rng: random.Random
    recs: list[Rec] = field(default_factory=list)
    label: Label | None = None  # set for attack instances; None for benign background
    # Correlation detections the whole instance must raise (their evidence: this instance's events)
    corr: set[str] = field(default_factory=set)
    corr_allowed: set[str] = field(default_factory=set)
    # EventID → detections any event of that id in this instance may (not must) raise
    allowed: dict[int, tuple[str, ...]] = field(default_factory=dict)
    # (client, target) → when an executable was last opened on ADMIN$/C$: Zeek's view of a copy
    binary_opens: dict[tuple[str, str], float] = field(default_factory=dict)

    def expect_correlation(self, *keys: str) -> None:
        self.corr.update(keys)

    def allow_correlation(self, *keys: str) -> None:
        self.corr_allowed.update(keys)

    def allow(self, eids: Iterable[int], *keys: str) -> None:
        """Tolerate ``keys`` on events of these ids: rule overlaps the spec leaves open (see labels)."""
        for eid in eids:
            self.allowed[eid] = tuple(dict.fromkeys(self.allowed.get(eid, ()) + keys))

    def add(self, rec: Rec, *expect: str) -> Rec:
        if self.label is not None:
            allow = self.allowed.get(rec.eid, ()) if rec.host is not None else ()
            rec.label = Label(self.label.instance, self.label.scenario, tuple(expect), allow)
        elif expect:
            raise ValueError("benign background cannot expect detections")
        self.recs.append(rec)
        return rec

    def zeek(self, t: float, log: str, fields: dict, *expect: str) -> Rec:
        return self.add(Rec(t, None, f"zeek/{log}", 0, {"ts": t, **fields}), *expect)

    def uid(self) -> str:
        return "C" + "".join(self.rng.choice(_B62) for _ in range(17))

    def port(self) -> int:
        return self.rng.randrange(49152, 65535)


# --- network ---------------------------------------------------------------------------------


@dataclass
class Session:
    """An SMB session from a source to a target: the logon and the TCP connection under it."""

    target: Host
    logon: Logon
    src_ip: str
    src_port: int
    uid: str  # Zeek connection uid


def smb_session(
    ctx: Ctx,
    t: float,
    target: Host,
    src_ip: str,
    account: Account,
    auth: str = "Kerberos",
    workstation: str = "-",
    admin_privs: bool = True,
    expect_logon: Iterable[str] = (),
) -> Session:
    """TCP 445 + network logon (4624 type 3, 4672 for admins) on the target, Zeek conn."""
    port = ctx.port()
    lg = Logon(target.new_logon_id(), account, 3, src_ip, port, workstation, auth, _guid(ctx.rng))
    uid = ctx.uid()
    ctx.add(b.sec4624(target, t, lg), *expect_logon)
    if admin_privs and account.admin:
        ctx.add(b.sec4672(target, t, lg))
    ctx.zeek(
        t - 0.002,
        "conn",
        {
            "uid": uid,
            "id.orig_h": src_ip,
            "id.orig_p": port,
            "id.resp_h": target.ip,
            "id.resp_p": 445,
            "proto": "tcp",
            "service": "smb,gssapi" if auth == "Kerberos" else "smb,ntlm,gssapi",
            "duration": round(ctx.rng.uniform(1.0, 30.0), 6),
            "orig_bytes": ctx.rng.randrange(2000, 90000),
            "resp_bytes": ctx.rng.randrange(2000, 90000),
            "conn_state": "SF",
            "local_orig": True,
            "local_resp": True,
            "missed_bytes": 0,
            "history": "ShADadfF",
            "orig_pkts": 40,
            "orig_ip_bytes": 9000,
            "resp_pkts": 38,
            "resp_ip_bytes": 8000,
        },
    )
    return Session(target, lg, src_ip, port, uid)


def _zid(s: Session) -> dict:
    return {
        "uid": s.uid,
        "id.orig_h": s.src_ip,
        "id.orig_p": s.src_port,
        "id.resp_h": s.target.ip,
        "id.resp_p": 445,
    }


def tree_connect(ctx: Ctx, t: float, s: Session, share: str, *expect: str, mask: int = 0x1) -> None:
    """5140 share access + Zeek smb_mapping (SMB2: Zeek leaves ``service`` and
    ``native_file_system`` unset, and its JSON omits unset fields)."""
    ctx.add(b.sec5140(s.target, t, s.logon, share, mask), *expect)
    ctx.zeek(
        t,
        "smb_mapping",
        {
            **_zid(s),
            "path": f"\\\\{s.target.name}\\{share}",
            "share_type": "PIPE" if share == "IPC$" else "DISK",
        },
    )


def file_write(
    ctx: Ctx,
    t: float,
    s: Session,
    share: str,
    rel: str,
    *expect: str,
    mask: int = 0x120196,
    local_path: str | None = None,
    expect_file: Iterable[str] = (),
) -> None:
    """5145 write on a share, Zeek smb_files, Sysmon 11 by System (the SMB server writes files).

    Zeek logs the copy as SMB::FILE_OPEN: its default ``SMB::logged_file_actions`` has no
    FILE_WRITE. A service-tool binary opened on ADMIN$/C$ raises the pack's default-Zeek rule
    (PT-CR-217); an executable there is remembered for the copy-then-svcctl correlation."""
    ctx.add(b.sec5145(s.target, t, s.logon, share, rel, mask), *expect)
    admin = share in ("ADMIN$", "C$")
    tool = admin and _ZEEK_TOOL_BINARY.search(rel) is not None
    if (share == "ADMIN$" and _ZEEK_ADMIN_EXE.match(rel)) or (share == "C$" and _ZEEK_C_EXE.match(rel)):
        ctx.binary_opens[(s.src_ip, s.target.ip)] = t
    ctx.zeek(
        t,
        "smb_files",
        {
            **_zid(s),
            "fuid": "F" + ctx.uid()[1:],
            "action": "SMB::FILE_OPEN",
            "path": f"\\\\{s.target.name}\\{share}",
            "name": rel,
            "size": ctx.rng.randrange(40000, 400000),
            "times.modified": t,
            "times.accessed": t,
            "times.created": t,
            "times.changed": t,
        },
        *((PSEXEC_SRC,) if tool else ()),
    )
    if local_path:
        ctx.add(b.sysmon11(s.target, t + 0.001, s.target.core["System"], local_path), *expect_file)


def pipe_open(
    ctx: Ctx,
    t: float,
    s: Session,
    pipe: str,
    *expect: str,
    mask: int = 0x12019F,
    sysmon: bool = True,
    expect_sysmon: Iterable[str] = (),
) -> None:
    """5145 on IPC$ for a named pipe, and Sysmon 18 ConnectPipe by System on the target."""
    ctx.add(b.sec5145(s.target, t, s.logon, "IPC$", pipe, mask), *expect)
    if sysmon:
        ctx.add(
            b.sysmon_pipe(s.target, t + 0.0004, s.target.core["System"], "\\" + pipe, True), *expect_sysmon
        )


# What the pack's default-Zeek rules look for in smb_files (t1569_002_zeek.yml,
# t1569_002_corr_zeek_copy_then_svcctl.yml): a tool's service binary, an executable dropped where
# services are installed from.
_ZEEK_TOOL_BINARY = re.compile(r"(?i)(^|\\)(psexesvc|winexesvc|remcomsvc|csexecsvc|paexec-\d+-[^\\]+)\.exe$")
_ZEEK_ADMIN_EXE = re.compile(r"(?i)^((system32|temp)\\)?[^\\]+\.exe$")
_ZEEK_C_EXE = re.compile(r"(?i)^windows\\(system32\\|temp\\)?[^\\]+\.exe$")
# svcctl operations of the copy-then-svcctl correlation's second half.
_ZEEK_CORR_OPS = frozenset({"CreateServiceWOW64W", "CreateServiceWOW64A", "OpenSCManager2"})

# MS-SCMR operations the pack's Zeek rules flag on their own (PT-CR-1981, detections.md §0.11/§2.4):
# a remote create / binPath change / start. In an attack instance every such dce_rpc line must raise it.
SVCCTL_FLAGGED_OPS = frozenset(
    {"CreateServiceW", "CreateServiceA", "ChangeServiceConfigW", "ChangeServiceConfigA", "StartServiceW",
     "StartServiceA"}
)


def svcctl_expect(endpoint: str, op: str, expect: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``expect`` plus PT-CR-1981 when ``op`` on ``endpoint`` is one the pack's Zeek rules flag."""
    if endpoint == "svcctl" and op in SVCCTL_FLAGGED_OPS and SVCCTL not in expect:
        return (*expect, SVCCTL)
    return expect


def dce_rpc(ctx: Ctx, t: float, s: Session, endpoint: str, ops: Iterable[str], *expect: str) -> float:
    """Zeek dce_rpc.log lines, one per operation, 5-50 ms apart; returns the time after the last.

    Remote create/change/start operations on svcctl expect PT-CR-1981 (see :func:`svcctl_expect`),
    and so does the instance's correlation when an executable was opened on ADMIN$/C$ by the same
    client within the minute before. Zeek writes the svcctl interface's pipe as ``\\pipe\\ntsvcs``
    (the server's name in the bind ack), other interfaces' under their own name."""
    pipe = "ntsvcs" if endpoint == "svcctl" else endpoint
    for op in ops:
        opened = ctx.binary_opens.get((s.src_ip, s.target.ip))
        if (
            ctx.label is not None
            and endpoint == "svcctl"
            and (op in SVCCTL_FLAGGED_OPS or op in _ZEEK_CORR_OPS)
            and opened is not None
            and 0 <= t - opened <= 60
        ):
            ctx.expect_correlation(SVCCTL)
        ctx.zeek(
            t,
            "dce_rpc",
            {
                **_zid(s),
                "rtt": round(ctx.rng.uniform(0.0003, 0.004), 6),
                "named_pipe": f"\\pipe\\{pipe}",
                "endpoint": endpoint,
                "operation": op,
            },
            *(svcctl_expect(endpoint, op, expect) if ctx.label is not None else expect),
        )
        t += ctx.rng.uniform(0.005, 0.05)
    return t


def logoff(ctx: Ctx, t: float, s: Session) -> None:
    ctx.add(b.sec4634(s.target, t, s.logon))


# --- services --------------------------------------------------------------------------------


@dataclass
class Expect:
    """Detections expected on each event a service step emits (empty = must stay quiet)."""

    e4697: tuple[str, ...] = ()
    e7045: tuple[str, ...] = ()
    e13: tuple[str, ...] = ()  # Sysmon 13 ImagePath by services.exe
    e12: tuple[str, ...] = ()  # Sysmon 12 CreateKey by services.exe
    e_key: tuple[str, ...] = ()  # name-based rules on the new service's key (ImagePath value)
    e_proc: tuple[str, ...] = ()  # Sysmon 1 + 4688 of the service process
    e_4688: tuple[str, ...] | None = None  # 4688 when it differs (no OriginalFileName in 4688)
    e7036: tuple[str, ...] = ()
    e_timeout: tuple[str, ...] = ()  # 7009 / 7000


def install_service(
    ctx: Ctx,
    t: float,
    h: Host,
    installer: Account,
    logon_id: str,
    name: str,
    path: str,
    ex: Expect,
    start: str = "demand start",
    account: str = "LocalSystem",
    display: str | None = None,
    stype: str = "user mode service",
) -> float:
    """CreateService: Sysmon 12/13 by services.exe, 4697, 7045. Returns the time after it."""
    services = h.core["services"]
    key = b.SERVICES_KEY + name
    start_num = {"boot start": 0, "system start": 1, "auto start": 2, "demand start": 3, "disabled": 4}[start]
    kx = ex.e_key
    ctx.add(b.sysmon12(h, t, services, key), *ex.e12)
    stype_num = 0x10 if stype == "user mode service" else 0x1
    ctx.add(b.sysmon13(h, t + 0.0002, services, key + "\\Type", b.dword(stype_num)))
    ctx.add(b.sysmon13(h, t + 0.0003, services, key + "\\Start", b.dword(start_num)))
    ctx.add(b.sysmon13(h, t + 0.0004, services, key + "\\ErrorControl", b.dword(0)))
    ctx.add(b.sysmon13(h, t + 0.0005, services, key + "\\ImagePath", b.sysmon_details(path)), *ex.e13, *kx)
    if h.registry_audit:
        ctx.add(b.sec4657(h, t + 0.0006, services, key, "ImagePath", None, path))
    if display:
        ctx.add(b.sysmon13(h, t + 0.0006, services, key + "\\DisplayName", display))
    ctx.add(b.sysmon13(h, t + 0.0007, services, key + "\\ObjectName", account))
    ctx.add(
        b.sec4697(
            h,
            t + 0.001,
            installer,
            logon_id,
            name,
            path,
            start_num,
            "0x10" if stype == "user mode service" else "0x1",
            account,
        ),
        *ex.e4697,
        *_random_name(name),
    )
    ctx.add(b.sys7045(h, t + 0.002, installer.sid, display or name, path, start, stype, account), *ex.e7045,
            *_random_name(display or name))
    h.services[name] = (display or name, path, start)
    return t + 0.003


def run_service(
    ctx: Ctx,
    t: float,
    h: Host,
    name: str,
    display: str,
    image: str,
    cmdline: str,
    ex: Expect,
    is_service: bool = True,
    original: str | None = None,
) -> tuple[Proc, float]:
    """StartService: the SCM spawns the binary (Sysmon 1 + 4688, child of services.exe).

    A real service reports 7036 running; a command line that is not a service makes the SCM
    wait 30 s and log 7009 + 7000 ``%%1053`` (detections.md §0.9).
    """
    services = h.core["services"]
    p = h.spawn(t, image, cmdline, services, user=SYSTEM, logon_id="0x3e7", integrity="System")
    ctx.add(b.sysmon1(h, t, p, original), *ex.e_proc)
    ctx.add(b.sec4688(h, t + 0.0001, p), *(ex.e_proc if ex.e_4688 is None else ex.e_4688))
    if is_service:
        ctx.add(b.sys7036(h, t + 0.05, display, name, True), *ex.e7036)
        return p, t + 0.06
    ctx.add(b.sys7009(h, t + 30.0, display), *ex.e_timeout, *_random_name(display))
    ctx.add(b.sys7000(h, t + 30.001, display), *ex.e_timeout, *_random_name(display))
    return p, t + 30.01


def _random_name(name: str) -> tuple[str, ...]:
    """The random-service-name rules fire exactly where the name has a random shape: the label
    follows the rule's definition (scmwatch.events.names), whose rates its tests measure."""
    return (VARIANT,) if looks_random(name) else ()


def child(
    ctx: Ctx,
    t: float,
    h: Host,
    parent: Proc,
    image: str,
    cmdline: str,
    *expect: str,
    user: Account | None = None,
    logon_id: str | None = None,
    original: str | None = None,
) -> Proc:
    """A process and its two process-creation events (Sysmon 1 and 4688)."""
    p = h.spawn(t, image, cmdline, parent, user=user, logon_id=logon_id)
    ctx.add(b.sysmon1(h, t, p, original), *expect)
    ctx.add(b.sec4688(h, t + 0.0001, p), *expect)
    return p


def stop_service(ctx: Ctx, t: float, h: Host, name: str, display: str, *expect: str) -> None:
    ctx.add(b.sys7036(h, t, display, name, False), *expect)


def delete_service(ctx: Ctx, t: float, h: Host, name: str, *expect: str) -> None:
    """DeleteService: services.exe marks the key (``DeleteFlag``=1, ``Start``=4; detections.md §0.8)."""
    services = h.core["services"]
    key = b.SERVICES_KEY + name
    ctx.add(b.sysmon13(h, t, services, key + "\\DeleteFlag", b.dword(1)), *expect)
    ctx.add(b.sysmon13(h, t + 0.0002, services, key + "\\Start", b.dword(4)), *expect)
    h.services.pop(name, None)


def set_image_path(
    ctx: Ctx,
    t: float,
    h: Host,
    name: str,
    path: str,
    *expect: str,
    old: str = "",
    expect_4657: Iterable[str] = (),
) -> None:
    """ChangeServiceConfig(binPath): Sysmon 13 by services.exe (no 7045/4697), and 4657 where audited."""
    key = b.SERVICES_KEY + name
    ctx.add(b.sysmon13(h, t, h.core["services"], key + "\\ImagePath", b.sysmon_details(path)), *expect)
    if h.registry_audit:
        ctx.add(b.sec4657(h, t + 0.0001, h.core["services"], key, "ImagePath", old, path), *expect_4657)


def _guid(rng: random.Random) -> str:
    return (
        f"{rng.getrandbits(32):08X}-{rng.getrandbits(16):04X}-{rng.getrandbits(16):04X}-"
        f"{rng.getrandbits(16):04X}-{rng.getrandbits(48):012X}"
    )


def admin_shell(ctx: Ctx, t: float, h: Host) -> tuple[Account, Proc]:
    """The operator of the attack scenarios (the second domain admin) and the elevated shell
    they opened on ``h`` 5-60 s before ``t``."""
    op = ctx.world.admins[1]
    return op, operator_shell(ctx, t - ctx.rng.uniform(5, 60), h, op)


def desktop(ctx: Ctx, t: float, h: Host, account: Account, integrity: str) -> Proc:
    """The user's explorer.exe (started an hour before ``t``, unlogged) and its interactive logon
    (4624 type 2) logged just before ``t``, the session's first use: every process of the session
    carries a LogonId that a 4624 in the log explains (scenarios may not write far into the past)."""
    lg = Logon(h.new_logon_id(), account, 2, "127.0.0.1", 0, h.name, "Negotiate",
               "00000000-0000-0000-0000-000000000000")
    ctx.add(b.sec4624(h, t - 30, lg))
    return h.spawn(t - 3600, "C:\\Windows\\explorer.exe", "C:\\Windows\\Explorer.EXE", h.core["wininit"],
                   user=account, logon_id=lg.logon_id, integrity=integrity)


def operator_shell(ctx: Ctx, t: float, h: Host, account: Account) -> Proc:
    """An elevated ``cmd.exe`` of an interactive admin on ``h`` (the parent of operator tools)."""
    key = f"explorer:{account.name}"
    if key not in h.core:
        h.core[key] = desktop(ctx, t, h, account, "Medium")
    explorer = h.core[key]
    p = h.spawn(
        t,
        "C:\\Windows\\System32\\cmd.exe",
        '"C:\\Windows\\system32\\cmd.exe" ',
        explorer,
        user=account,
        logon_id=explorer.logon_id,
        integrity="High",
    )
    ctx.add(b.sysmon1(h, t, p))
    ctx.add(b.sec4688(h, t + 0.0001, p))
    return p
