"""PsExec clones and C2 service tricks (detections.md §1): PAExec, RemCom, CSExec,
Empire smbexec, Covenant SharpSC (implant inside System32, 7045 named by display name) and
Meterpreter getsystem (named-pipe impersonation service)."""

from __future__ import annotations

import string

from scmwatch.detections import IMPACKET, MITRE, ODDPATH, PSEXEC_SRC, SMBEXEC, SVCCTL, VARIANT
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect, Session
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.world import SYSTEM, Host, rand_letters


def _upload_and_install(
    ctx: Ctx,
    t: float,
    dst: Host,
    s: Session,
    binary_rel: str,
    local: str,
    name: str,
    path: str,
    ex: Expect,
    display: str | None = None,
    file_expect: tuple[str, ...] = (),
) -> float:
    """ADMIN$ write of the service binary (5145 + Sysmon 11, both expecting ``file_expect``), svcctl,
    CreateService. Returns the time after it."""
    a.tree_connect(ctx, t, s, "ADMIN$")
    a.file_write(
        ctx,
        t + 0.01,
        s,
        "ADMIN$",
        binary_rel,
        *file_expect,
        local_path=local,
        expect_file=file_expect,
    )
    a.tree_connect(ctx, t + 0.1, s, "IPC$")
    a.pipe_open(ctx, t + 0.11, s, "svcctl", SVCCTL, expect_sysmon=(SVCCTL,))
    t1 = a.dce_rpc(ctx, t + 0.12, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "StartServiceW"])
    return a.install_service(ctx, t1, dst, s.logon.account, s.logon.logon_id, name, path, ex, display=display)


@scenario("paexec", "PAExec \\\\host -s: service PAExec-<pid>-<client>, PaExecIn/Out/Err pipes", "windows")
def paexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    op, shell = a.admin_shell(ctx, t, src)
    tool = a.child(
        ctx,
        t,
        src,
        shell,
        "C:\\Tools\\PAExec.exe",
        f"PAExec.exe  \\\\{dst.name} -s cmd.exe /c whoami",
        PSEXEC_SRC,
    )
    name = f"PAExec-{tool.pid}-{src.name}"
    s = a.smb_session(ctx, t + 0.1, dst, src.ip, op, "Kerberos")
    # target side of a PsExec analogue: the pack files it under PSEXEC_SRC with the client
    # (detections.md §2.16)
    ex = Expect(e4697=(PSEXEC_SRC, ODDPATH), e7045=(PSEXEC_SRC, ODDPATH), e13=(ODDPATH,))
    t1 = _upload_and_install(
        ctx,
        t + 0.12,
        dst,
        s,
        f"{name}.exe",
        f"C:\\Windows\\{name}.exe",
        name,
        f"%SystemRoot%\\{name}.exe",
        ex,
        file_expect=(PSEXEC_SRC,),
    )
    svc, t2 = a.run_service(
        ctx,
        t1 + 0.05,
        dst,
        name,
        name,
        f"C:\\Windows\\{name}.exe",
        f"C:\\Windows\\{name}.exe -service",
        Expect(e_proc=(PSEXEC_SRC,)),
    )
    for i, kind in enumerate(("In", "Out", "Err")):
        pipe = f"PaExec{kind}{src.name}{tool.pid}"
        ctx.add(b.sysmon_pipe(dst, t2 + 0.01 * i, svc, "\\" + pipe, False), PSEXEC_SRC)
        ctx.add(b.sec5145(dst, t2 + 0.01 * i + 0.005, s.logon, "IPC$", pipe, 0x12019F), PSEXEC_SRC)
    a.child(ctx, t2 + 0.1, dst, svc, "C:\\Windows\\System32\\cmd.exe", "cmd.exe /c whoami", user=SYSTEM)
    a.stop_service(ctx, t2 + 1.0, dst, name, name)
    a.delete_service(ctx, t2 + 1.05, dst, name)
    a.logoff(ctx, t2 + 1.2, s)
    ctx.expect_correlation(SVCCTL, PSEXEC_SRC, SMBEXEC)


@scenario(
    "remcom",
    "RemCom (original): RemComSvc.exe to ADMIN$\\System32, service RemComSvc, RemCom_* pipes",
    "windows",
)
def remcom(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    op, shell = a.admin_shell(ctx, t, src)
    tool = a.child(
        ctx,
        t,
        src,
        shell,
        "C:\\Tools\\RemCom.exe",
        f"RemCom.exe  \\\\{dst.name} cmd.exe /c hostname",
        PSEXEC_SRC,
    )
    s = a.smb_session(ctx, t + 0.1, dst, src.ip, op, "Kerberos")
    ex = Expect(e4697=(IMPACKET,), e7045=(IMPACKET,))
    t1 = _upload_and_install(
        ctx,
        t + 0.12,
        dst,
        s,
        "System32\\RemComSvc.exe",
        "C:\\Windows\\System32\\RemComSvc.exe",
        "RemComSvc",
        "%SystemRoot%\\System32\\RemComSvc.exe",
        ex,
        file_expect=(IMPACKET,),
    )
    svc, t2 = a.run_service(
        ctx,
        t1 + 0.05,
        dst,
        "RemComSvc",
        "Remote Command Executor",
        "C:\\Windows\\System32\\RemComSvc.exe",
        "C:\\Windows\\system32\\RemComSvc.exe",
        Expect(),
    )
    ctx.add(b.sysmon_pipe(dst, t2, svc, "\\RemCom_communicaton", False), IMPACKET)
    ctx.add(b.sec5145(dst, t2 + 0.01, s.logon, "IPC$", "RemCom_communicaton", 0x12019F), IMPACKET)
    for i, std in enumerate(("stdin", "stdout", "stderr")):
        pipe = f"RemCom_{std}{src.name}{tool.pid}"
        ctx.add(b.sysmon_pipe(dst, t2 + 0.02 + i * 0.001, svc, "\\" + pipe, False), IMPACKET)
        ctx.add(b.sec5145(dst, t2 + 0.03 + i * 0.001, s.logon, "IPC$", pipe, 0x12019F), IMPACKET)
    a.child(ctx, t2 + 0.1, dst, svc, "C:\\Windows\\System32\\cmd.exe", "cmd.exe /c hostname", user=SYSTEM)
    a.logoff(ctx, t2 + 2, s)  # RemCom leaves RemComSvc installed
    ctx.expect_correlation(SVCCTL, PSEXEC_SRC)


@scenario(
    "csexec", "CSExec (C# PsExec): csexecsvc.exe on ADMIN$, service csexecsvc, pipe \\csexecsvc", "windows"
)
def csexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    op, shell = a.admin_shell(ctx, t, src)
    a.child(ctx, t, src, shell, "C:\\Tools\\CSExec.exe", f"CSExec.exe  \\\\{dst.name} cmd.exe", PSEXEC_SRC)
    s = a.smb_session(ctx, t + 0.1, dst, src.ip, op, "Kerberos")
    ex = Expect(e4697=(PSEXEC_SRC, ODDPATH), e7045=(PSEXEC_SRC, ODDPATH), e13=(ODDPATH,))
    t1 = _upload_and_install(
        ctx,
        t + 0.12,
        dst,
        s,
        "csexecsvc.exe",
        "C:\\Windows\\csexecsvc.exe",
        "csexecsvc",
        "%SystemRoot%\\csexecsvc.exe",
        ex,
        file_expect=(PSEXEC_SRC,),
    )
    svc, t2 = a.run_service(
        ctx,
        t1 + 0.05,
        dst,
        "csexecsvc",
        "csexecsvc",
        "C:\\Windows\\csexecsvc.exe",
        "C:\\Windows\\csexecsvc.exe",
        Expect(e_proc=(PSEXEC_SRC,)),
    )
    ctx.add(b.sysmon_pipe(dst, t2, svc, "\\csexecsvc", False), PSEXEC_SRC)
    ctx.add(b.sec5145(dst, t2 + 0.01, s.logon, "IPC$", "csexecsvc", 0x12019F), PSEXEC_SRC)
    a.child(ctx, t2 + 0.2, dst, svc, "C:\\Windows\\System32\\cmd.exe", "cmd.exe", user=SYSTEM)
    a.stop_service(ctx, t2 + 5, dst, "csexecsvc", "csexecsvc")
    a.delete_service(ctx, t2 + 5.05, dst, "csexecsvc")
    a.logoff(ctx, t2 + 5.2, s)
    ctx.expect_correlation(SVCCTL, PSEXEC_SRC, SMBEXEC)


@scenario(
    "empire-smbexec",
    'Empire invoke_smbexec: 20 random upper-case letters, %COMSPEC% /C "%COMSPEC% /C start ..."',
    "linux",
)
def empire_smbexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    admin = ctx.world.admins[2]
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation="-")
    a.tree_connect(ctx, t + 0.01, s, "IPC$")
    a.pipe_open(ctx, t + 0.02, s, "svcctl", SVCCTL, mask=0x3, expect_sysmon=(SVCCTL,))
    t1 = a.dce_rpc(
        ctx, t + 0.03, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "OpenServiceW", "StartServiceW"]
    )
    name = rand_letters(ctx.rng, 20, string.ascii_uppercase)
    launcher = (
        "C:\\Windows\\System32\\WindowsPowershell\\v1.0\\powershell -noP -sta -w 1 -enc SQBmACgAJABQAFMAVgBl"
    )
    path = f'%COMSPEC% /C "%COMSPEC% /C start /b {launcher}"'
    # the nested %COMSPEC% /C "%COMSPEC% /C ..." is invoke_smbexec's own shape (PT-CR-523 on the install,
    # the registry write and the 4697); the interpreter one-liner is also an unusual path (PT-CR-257)
    ex = Expect(e4697=(SMBEXEC, ODDPATH), e7045=(SMBEXEC, ODDPATH), e13=(SMBEXEC,), e_proc=(MITRE,))
    t2 = a.install_service(ctx, t1, dst, admin, s.logon.logon_id, name, path, ex)
    cmdline = path.replace("%COMSPEC%", "C:\\Windows\\system32\\cmd.exe")
    p, _ = a.run_service(
        ctx, t2 + 0.05, dst, name, name, "C:\\Windows\\System32\\cmd.exe", cmdline, ex, is_service=False
    )
    inner = a.child(
        ctx,
        t2 + 0.07,
        dst,
        p,
        "C:\\Windows\\System32\\cmd.exe",
        f"C:\\Windows\\system32\\cmd.exe  /C start /b {launcher}",
    )
    a.child(
        ctx,
        t2 + 0.09,
        dst,
        inner,
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        f"{launcher}",
    )
    a.dce_rpc(ctx, t2 + 0.5, s, "svcctl", ["DeleteService", "CloseServiceHandle"])
    a.delete_service(ctx, t2 + 0.55, dst, name)
    a.logoff(ctx, t2 + 1, s)
    ctx.expect_correlation(SVCCTL, SMBEXEC)


@scenario(
    "covenant-sharpsc",
    "Covenant SharpSC: implant in System32, 7045 names the display name (detections.md §0.1)",
    "windows",
)
def covenant_sharpsc(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """Evasive by design: a System32 ImagePath and a benign-looking name; only svcctl and the
    short life of the service give it away."""
    rng = ctx.rng
    op = ctx.world.admins[1]
    key = rng.choice(["WinSysMon", "SysHealth", "MsDiagHost"])
    display = {
        "WinSysMon": "Windows System Monitor",
        "SysHealth": "System Health Service",
        "MsDiagHost": "Microsoft Diagnostics Host",
    }[key]
    implant = rand_letters(rng, 7).lower() + ".exe"
    s = a.smb_session(ctx, t, dst, src.ip, op, "Kerberos")
    t1 = _upload_and_install(
        ctx,
        t + 0.01,
        dst,
        s,
        f"System32\\{implant}",
        f"C:\\Windows\\System32\\{implant}",
        key,
        f"C:\\Windows\\System32\\{implant}",
        Expect(),
        display=display,
    )
    a.run_service(
        ctx,
        t1 + 0.05,
        dst,
        key,
        display,
        f"C:\\Windows\\System32\\{implant}",
        f"C:\\Windows\\System32\\{implant}",
        Expect(),
    )
    a.dce_rpc(ctx, t1 + 3, s, "svcctl", ["OpenServiceW", "DeleteService", "CloseServiceHandle"])
    a.delete_service(ctx, t1 + 3.05, dst, key)
    a.logoff(ctx, t1 + 3.5, s)
    ctx.expect_correlation(SVCCTL, SMBEXEC)


@scenario(
    "meterpreter-getsystem",
    "Meterpreter getsystem: service 'cmd.exe /c echo x > \\\\.\\pipe\\x' (local)",
    "local",
    target="workstation",
)
def meterpreter_getsystem(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """A named-pipe-impersonation service: `\\\\.\\pipe\\` is not a network share (near-miss for
    detections.md §2.3)."""
    rng = ctx.rng
    user = ctx.world.admins[0]
    shell = a.operator_shell(ctx, t - 30, dst, user)
    beacon = a.child(
        ctx, t - 20, dst, shell, "C:\\Users\\Public\\update.exe", "C:\\Users\\Public\\update.exe"
    )
    pipe = rand_letters(rng, 6).lower()
    name = rand_letters(rng, 6).lower()
    path = f"cmd.exe /c echo {pipe} > \\\\.\\pipe\\{pipe}"
    ctx.add(b.sysmon_pipe(dst, t - 0.1, beacon, f"\\{pipe}", False))
    ex = Expect(e4697=(ODDPATH, VARIANT), e7045=(ODDPATH, VARIANT), e_proc=(MITRE,))
    t1 = a.install_service(ctx, t, dst, user, beacon.logon_id, name, path, ex)
    a.run_service(
        ctx,
        t1 + 0.05,
        dst,
        name,
        name,
        "C:\\Windows\\System32\\cmd.exe",
        f"C:\\Windows\\system32\\{path}",
        ex,
        is_service=False,
    )
    a.delete_service(ctx, t1 + 1.0, dst, name)
    ctx.expect_correlation(SMBEXEC)  # installed and deleted within seconds
