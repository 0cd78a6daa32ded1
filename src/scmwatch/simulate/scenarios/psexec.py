"""Sysinternals PsExec, default and ``-r`` renamed (detections.md §1, §2.6, §2.16).

Source side: PsExec.exe with ``\\\\target``, the EulaAccepted value, DNS + SMB, the client's
ConnectPipe to ``\\<svc>-<CLIENT>-<pid>-std*``. Target side: Kerberos network logon, ADMIN$
write of the service binary, svcctl, 4697/7045, the service process and its pipes, the command
as a child of the service, then stop and delete.
"""

from __future__ import annotations

from scmwatch.detections import ASR_PSEXEC_WMI, ODDPATH, PSEXEC, PSEXEC_SRC, SMBEXEC, SVCCTL
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.world import Host

COMMANDS = [
    ("cmd.exe", 'cmd.exe /c "ipconfig /all"', "C:\\Windows\\System32\\ipconfig.exe", "ipconfig  /all"),
    ("cmd.exe", "cmd.exe /c whoami /priv", "C:\\Windows\\System32\\whoami.exe", "whoami  /priv"),
    (
        "cmd.exe",
        'cmd.exe /c "net localgroup administrators"',
        "C:\\Windows\\System32\\net.exe",
        "net  localgroup administrators",
    ),
]


def _psexec(ctx: Ctx, t: float, src: Host, dst: Host, svc: str | None, asr: bool = False) -> None:
    rng = ctx.rng
    op, shell = a.admin_shell(ctx, t, src)
    if svc:  # the operator renamed the client too: only its version resource and command line tell
        exe = rng.choice(["svcmgr.exe", "update.exe", "pe64.exe"])
        image = f"C:\\ProgramData\\{exe}"
    else:
        exe = rng.choice(["PsExec.exe", "PsExec64.exe"])
        image = f"C:\\Tools\\SysinternalsSuite\\{exe}"
    _, remote_cmd, grandchild, grandchild_cmd = rng.choice(COMMANDS)
    rename = f" -r {svc}" if svc else ""
    cmdline = f"{exe}  \\\\{dst.name}{rename} -accepteula -s {remote_cmd}"
    tool = a.child(ctx, t, src, shell, image, cmdline, PSEXEC_SRC, original="psexec.c")
    eula = f"HKU\\{op.sid}\\Software\\Sysinternals\\PsExec\\EulaAccepted"
    ctx.add(b.sysmon13(src, t + 0.03, tool, eula, b.dword(1)), PSEXEC_SRC)
    ctx.add(b.sysmon22(src, t + 0.05, tool, dst.fqdn, f"::ffff:{dst.ip};"))
    sport = ctx.port()
    ctx.add(b.sysmon3(src, t + 0.07, tool, src.ip, sport, dst.ip, 445, True, src.fqdn, dst.fqdn))

    name = svc or "PSEXESVC"
    binary = f"{name}.exe"
    s = a.smb_session(ctx, t + 0.1, dst, src.ip, op, "Kerberos")
    t1 = t + 0.12
    a.tree_connect(ctx, t1, s, "ADMIN$")
    own = () if svc else (PSEXEC,)  # detections keyed on the PSEXESVC name miss a renamed copy
    a.file_write(
        ctx,
        t1 + 0.01,
        s,
        "ADMIN$",
        binary,
        *own,
        local_path=f"C:\\Windows\\{binary}",
        expect_file=own,
    )
    a.tree_connect(ctx, t1 + 0.1, s, "IPC$")
    a.pipe_open(ctx, t1 + 0.11, s, "svcctl", SVCCTL, expect_sysmon=(SVCCTL,))
    t2 = a.dce_rpc(ctx, t1 + 0.12, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "StartServiceW"])
    path = f"%SystemRoot%\\{binary}"
    if svc:  # renamed: only OriginalFileName (Sysmon 1) and the pipe names still say PsExec
        ex = Expect(e4697=(ODDPATH,), e7045=(ODDPATH,), e13=(ODDPATH,), e_proc=(PSEXEC,), e_4688=())
    else:
        ex = Expect(
            e4697=(PSEXEC, ODDPATH),
            e7045=(PSEXEC, ODDPATH),
            e13=(ODDPATH,),
            e_proc=(PSEXEC,),
            e_key=(PSEXEC,),
        )
    t3 = a.install_service(ctx, t2, dst, op, s.logon.logon_id, name, path, ex)
    svc_proc, t4 = a.run_service(
        ctx,
        t3 + 0.05,
        dst,
        name,
        name,
        f"C:\\Windows\\{binary}",
        f"C:\\Windows\\{binary}",
        ex,
        original="psexesvc.exe",
    )
    ctx.add(b.sysmon_pipe(dst, t4, svc_proc, f"\\{name}", False), *own)
    ctx.add(b.sec5145(dst, t4 + 0.01, s.logon, "IPC$", name, 0x12019F), *own)
    for i, std in enumerate(("stdin", "stdout", "stderr")):
        pipe = f"{name}-{src.name}-{tool.pid}-{std}"
        ctx.add(b.sysmon_pipe(dst, t4 + 0.02 + i * 0.001, svc_proc, "\\" + pipe, False), PSEXEC)
        ctx.add(b.sec5145(dst, t4 + 0.03 + i * 0.001, s.logon, "IPC$", pipe, 0x12019F), PSEXEC)
        ctx.add(b.sysmon_pipe(src, t4 + 0.035 + i * 0.001, tool, "\\" + pipe, True), PSEXEC_SRC, PSEXEC)
    t5 = t4 + 0.1
    if asr:  # ASR "block process creations from PSExec and WMI" stops the command (M1040)
        ctx.add(
            b.defender1121(
                dst,
                t5,
                ASR_PSEXEC_WMI,
                op,
                "C:\\Windows\\System32\\cmd.exe",
                svc_proc.image,
                remote_cmd,
                svc_proc.cmdline,
            ),
            PSEXEC,
        )
    else:
        cmd = a.child(
            ctx,
            t5,
            dst,
            svc_proc,
            "C:\\Windows\\System32\\cmd.exe",
            remote_cmd,
            *own,
            user=op,
            logon_id=s.logon.logon_id,
        )
        a.child(ctx, t5 + 0.05, dst, cmd, grandchild, grandchild_cmd)
    t6 = t5 + rng.uniform(0.5, 3.0)
    a.stop_service(ctx, t6, dst, name, name)
    a.dce_rpc(ctx, t6, s, "svcctl", ["ControlService", "DeleteService", "CloseServiceHandle"])
    a.delete_service(ctx, t6 + 0.05, dst, name)
    a.logoff(ctx, t6 + 0.2, s)
    # svcctl then install; PsExec on A then a service on B (a renamed client is known by its version
    # resource / `\\host -accepteula` shape); service deleted within seconds
    ctx.expect_correlation(SVCCTL, SMBEXEC, PSEXEC_SRC)


@scenario("psexec", "Sysinternals PsExec \\\\target -s cmd /c ... (PSEXESVC)", "windows")
def psexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    _psexec(ctx, t, src, dst, None)


@scenario("psexec-renamed", "Sysinternals PsExec -r <name>: renamed service, binary and pipes", "windows")
def psexec_renamed(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    _psexec(ctx, t, src, dst, ctx.rng.choice(["blabla", "svchost", "updsvc", "wmisvc"]))


@scenario(
    "psexec-asr-blocked",
    "Sysinternals PsExec against a host whose ASR rule blocks PsExec children (1121)",
    "windows",
)
def psexec_asr_blocked(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    _psexec(ctx, t, src, dst, None, asr=True)
