"""Impacket psexec.py (ADMIN$ and UNC binary path) and smbexec.py (detections.md §1, §2.3, §2.5, §2.10).

The attacker runs them from a Linux box: the only traces are on the target (and in Zeek).
"""

from __future__ import annotations

from scmwatch.detections import IMPACKET, MITRE, ODDPATH, SMBEXEC, SVCCTL, UNC
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.world import SYSTEM, Host, rand_letters


def _impacket_psexec(ctx: Ctx, t: float, src: Host, dst: Host, share: str) -> None:
    rng = ctx.rng
    admin = ctx.world.admins[2]
    svc = rand_letters(rng, 4)
    binary = rand_letters(rng, 8) + ".exe"
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation=rng.choice(["kali", "-", ""]) or "-")
    a.tree_connect(ctx, t + 0.01, s, share)
    if share == "ADMIN$":
        local, path, ex = (
            f"C:\\Windows\\{binary}",
            f"%systemroot%\\{binary}",
            Expect(e4697=(IMPACKET, ODDPATH), e7045=(IMPACKET, ODDPATH), e13=(ODDPATH,)),
        )
        on_disk = (IMPACKET,)  # Sysmon 11: random 8-letter exe in C:\Windows written by System
    else:
        local = f"D:\\Shares\\{share}\\{binary}"
        path = f"\\\\{dst.ip}\\{share}\\{binary}"
        ex = Expect(
            e4697=(IMPACKET, UNC, ODDPATH), e7045=(IMPACKET, UNC, ODDPATH), e13=(UNC,), e_proc=(UNC,)
        )
        on_disk = ()
    a.file_write(ctx, t + 0.02, s, share, binary, mask=0x2, local_path=local, expect_file=on_disk)
    a.tree_connect(ctx, t + 0.2, s, "IPC$")
    a.pipe_open(ctx, t + 0.21, s, "svcctl", SVCCTL, mask=0x3, expect_sysmon=(SVCCTL,))
    t1 = a.dce_rpc(
        ctx, t + 0.22, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "OpenServiceW", "StartServiceW"]
    )
    t2 = a.install_service(ctx, t1, dst, admin, s.logon.logon_id, svc, path, ex)
    image = local if share == "ADMIN$" else path
    remcom, t3 = a.run_service(ctx, t2 + 0.05, dst, svc, svc, image, image, ex)
    ctx.add(b.sysmon_pipe(dst, t3, remcom, "\\RemCom_communicaton", False), IMPACKET)
    ctx.add(b.sec5145(dst, t3 + 0.2, s.logon, "IPC$", "RemCom_communicaton", 0x12019F), IMPACKET)
    machine = rand_letters(rng, 4)
    for i, std in enumerate(("stdin", "stdout", "stderr")):
        pipe = f"RemCom_{std}{machine}{rng.randrange(1000, 60000)}"
        ctx.add(b.sysmon_pipe(dst, t3 + 0.3 + i * 0.001, remcom, "\\" + pipe, False), IMPACKET)
        ctx.add(b.sec5145(dst, t3 + 0.31 + i * 0.001, s.logon, "IPC$", pipe, 0x12019F), IMPACKET)
    cmd = a.child(ctx, t3 + 0.4, dst, remcom, "C:\\Windows\\system32\\cmd.exe", "cmd.exe", user=SYSTEM)
    tt = t3 + 2.0
    for exe, line in [("whoami.exe", "whoami"), ("hostname.exe", "hostname"), ("ipconfig.exe", "ipconfig")]:
        a.child(ctx, tt, dst, cmd, f"C:\\Windows\\system32\\{exe}", line)
        tt += rng.uniform(1, 5)
    a.stop_service(ctx, tt, dst, svc, svc)
    a.dce_rpc(ctx, tt, s, "svcctl", ["ControlService", "DeleteService", "CloseServiceHandle"])
    a.delete_service(ctx, tt + 0.05, dst, svc)
    ctx.add(b.sec5145(dst, tt + 0.2, s.logon, share, binary, 0x10080))
    a.logoff(ctx, tt + 0.3, s)
    ctx.expect_correlation(SVCCTL, SMBEXEC)  # svcctl then install; service deleted within 30 s


@scenario(
    "impacket-psexec", "impacket psexec.py: random exe on ADMIN$, 4-letter service, RemCom pipes", "linux"
)
def impacket_psexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    _impacket_psexec(ctx, t, src, dst, "ADMIN$")


@scenario(
    "impacket-psexec-unc",
    "impacket psexec.py with a non-ADMIN$ writable share: UNC ImagePath",
    "linux",
    target="fileserver",
)
def impacket_psexec_unc(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    _impacket_psexec(ctx, t, src, dst, ctx.rng.choice(["Deploy", "Public", "Software"]))


@scenario(
    "impacket-smbexec", "impacket smbexec.py: service BTOBTO per command, output via C$\\__output", "linux"
)
def impacket_smbexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    admin = ctx.world.admins[2]
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation="-")
    a.tree_connect(ctx, t + 0.01, s, "IPC$")
    a.pipe_open(ctx, t + 0.02, s, "svcctl", SVCCTL, mask=0x3, expect_sysmon=(SVCCTL,))
    a.tree_connect(ctx, t + 0.03, s, "C$")
    machine = dst.machine_account
    tt = t + 0.5
    commands = rng.sample(["whoami", "hostname", "ipconfig /all", "net user", "tasklist", "systeminfo"], 3)
    for command in commands:
        echo = f"echo {command} ^> \\\\127.0.0.1\\C$\\__output 2^>^&1 > %TEMP%\\execute.bat"
        path = f"%COMSPEC% /Q /c {echo} & %COMSPEC% /Q /c %TEMP%\\execute.bat & del %TEMP%\\execute.bat"
        ex = Expect(
            e4697=(SMBEXEC, ODDPATH), e7045=(SMBEXEC, ODDPATH), e_proc=(SMBEXEC, MITRE), e_key=(SMBEXEC,)
        )
        t1 = a.dce_rpc(
            ctx, tt, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "OpenServiceW", "StartServiceW"]
        )
        t2 = a.install_service(ctx, t1, dst, admin, s.logon.logon_id, "BTOBTO", path, ex)
        expanded = path.replace("%COMSPEC%", "C:\\Windows\\system32\\cmd.exe").replace(
            "%TEMP%", "C:\\Windows\\TEMP"
        )
        cmd1, _ = a.run_service(
            ctx,
            t2 + 0.02,
            dst,
            "BTOBTO",
            "BTOBTO",
            "C:\\Windows\\System32\\cmd.exe",
            expanded,
            ex,
            is_service=False,
        )
        ctx.add(b.sysmon11(dst, t2 + 0.03, cmd1, "C:\\Windows\\Temp\\execute.bat"), SMBEXEC)
        cmd2 = a.child(
            ctx,
            t2 + 0.05,
            dst,
            cmd1,
            "C:\\Windows\\System32\\cmd.exe",
            "C:\\Windows\\system32\\cmd.exe  /Q /c C:\\Windows\\TEMP\\execute.bat",
        )
        exe = command.split()[0]
        a.child(ctx, t2 + 0.07, dst, cmd2, f"C:\\Windows\\System32\\{exe}.exe", command)
        # the command's output goes to \\127.0.0.1\C$\__output under the machine account
        loop = a.smb_session(ctx, t2 + 0.08, dst, "127.0.0.1", machine, "Kerberos", admin_privs=False)
        ctx.add(b.sec5145(dst, t2 + 0.09, loop.logon, "C$", "__output", 0x120196), SMBEXEC)
        a.logoff(ctx, t2 + 0.1, loop)
        ctx.add(b.sec5145(dst, t2 + 0.6, s.logon, "C$", "__output", 0x120089), SMBEXEC)
        ctx.add(b.sec5145(dst, t2 + 0.7, s.logon, "C$", "__output", 0x10080), SMBEXEC)
        a.dce_rpc(ctx, t2 + 0.8, s, "svcctl", ["DeleteService", "CloseServiceHandle"])
        a.delete_service(ctx, t2 + 0.85, dst, "BTOBTO")
        tt = t2 + rng.uniform(3, 15)
    a.logoff(ctx, tt, s)
    ctx.expect_correlation(SVCCTL, SMBEXEC)
