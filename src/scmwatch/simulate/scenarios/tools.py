"""winexe, Sliver psexec, Metasploit psexec (native and psh) and the MS17-010 follow-up
(detections.md §1, §2.1, §2.11, §2.12, §2.18)."""

from __future__ import annotations

import string

from scmwatch.detections import IMPACKET, MITRE, MS17, ODDPATH, SLIVER, SMBEXEC, SVCCTL, VARIANT, WINEXEC
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect, Session
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.world import SYSTEM, Account, Host, Logon, Proc, rand_letters

PSH_PAYLOAD = (
    "if([IntPtr]::Size -eq 4){$b='powershell.exe'}else{$b=$env:windir+'\\syswow64\\WindowsPowerShell\\v1.0"
    "\\powershell.exe'};$s=New-Object System.Diagnostics.ProcessStartInfo;$s.FileName=$b;$s.Arguments='-noni "
    "-nop -w hidden -c &([scriptblock]::create((New-Object System.IO.StreamReader(New-Object System.IO."
    "Compression.GzipStream((New-Object System.IO.MemoryStream(,[System.Convert]::FromBase64String("
    "''H4sIAAAAAAA"
    "AAK1WbW/aSBD+nF+BKkuAEtgQSJpGipQNCUoT'')))))))';$s.UseShellExecute=$false;$p=[System.Diagnostics.Process]"
    "::Start($s);"
)


def _psh_launcher(ctx: Ctx, t: float, dst: Host, parent: Proc) -> None:
    """The Metasploit psexec_psh-style PowerShell launcher, started by the service's process."""
    a.child(
        ctx,
        t,
        dst,
        parent,
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        f'powershell.exe  -nop -w hidden -noni -c "{PSH_PAYLOAD}"',
    )


def _delete_and_leave(ctx: Ctx, s: Session, dst: Host, svc: str, t_install: float, t_run: float) -> None:
    """A second after the install, delete the service over svcctl; log off a second after it ran."""
    a.dce_rpc(ctx, t_install + 1.0, s, "svcctl", ["DeleteService", "CloseServiceHandle"])
    a.delete_service(ctx, t_install + 1.05, dst, svc)
    a.logoff(ctx, t_run + 1, s)


def _sliver_upload(ctx: Ctx, t: float, src: Host, dst: Host, op: Account, exe: str) -> tuple[Session, float]:
    """Sliver's psexec: the binary to C$\\windows\\temp, then (psexec.go waits 5 s after the
    upload) the svcctl pipe and the create/start calls. Returns the SMB session and the time
    the service is created."""
    s = a.smb_session(ctx, t + 0.01, dst, src.ip, op, "Kerberos")
    a.tree_connect(ctx, t + 0.02, s, "C$")
    a.file_write(
        ctx,
        t + 0.03,
        s,
        "C$",
        f"windows\\temp\\{exe}",
        SLIVER,
        local_path=f"C:\\Windows\\Temp\\{exe}",
    )
    a.tree_connect(ctx, t + 5.0, s, "IPC$")
    a.pipe_open(ctx, t + 5.01, s, "svcctl", SVCCTL, expect_sysmon=(SVCCTL,))
    return s, a.dce_rpc(ctx, t + 5.02, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "StartServiceW"])


@scenario("winexe", "winexe from Linux: winexesvc.exe on ADMIN$, service winexesvc, \\ahexec pipes", "linux")
def winexe(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    admin = ctx.world.admins[2]
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation="KALI")
    a.tree_connect(ctx, t + 0.01, s, "ADMIN$")
    a.file_write(
        ctx,
        t + 0.02,
        s,
        "ADMIN$",
        "winexesvc.exe",
        WINEXEC,
        local_path="C:\\Windows\\winexesvc.exe",
        expect_file=(WINEXEC,),
    )
    a.tree_connect(ctx, t + 0.1, s, "IPC$")
    a.pipe_open(ctx, t + 0.11, s, "svcctl", SVCCTL, mask=0x3, expect_sysmon=(SVCCTL,))
    t1 = a.dce_rpc(ctx, t + 0.12, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "StartServiceW"])
    ex = Expect(e4697=(WINEXEC, ODDPATH), e7045=(WINEXEC, ODDPATH), e13=(ODDPATH,))
    t2 = a.install_service(
        ctx, t1, dst, admin, s.logon.logon_id, "winexesvc", "%SystemRoot%\\winexesvc.exe", ex
    )
    svc, t3 = a.run_service(
        ctx,
        t2 + 0.05,
        dst,
        "winexesvc",
        "winexesvc",
        "C:\\Windows\\winexesvc.exe",
        "C:\\Windows\\winexesvc.exe",
        ex,
    )
    ctx.add(b.sysmon_pipe(dst, t3, svc, "\\ahexec", False), WINEXEC)
    ctx.add(b.sec5145(dst, t3 + 0.1, s.logon, "IPC$", "ahexec", 0x12019F), WINEXEC)
    tag = f"{ctx.rng.getrandbits(32):08X}"
    for i, pipe in enumerate((f"ahexec_stdio{tag}", f"ahexec_stderr{tag}")):
        ctx.add(b.sysmon_pipe(dst, t3 + 0.2 + i * 0.001, svc, "\\" + pipe, False), WINEXEC)
        ctx.add(b.sec5145(dst, t3 + 0.21 + i * 0.001, s.logon, "IPC$", pipe, 0x12019F), WINEXEC)
    cmd = a.child(ctx, t3 + 0.3, dst, svc, "C:\\Windows\\System32\\cmd.exe", "cmd.exe", WINEXEC, user=SYSTEM)
    tt = t3 + 3
    for line in ("whoami", "hostname"):
        a.child(ctx, tt, dst, cmd, f"C:\\Windows\\System32\\{line}.exe", line)
        tt += ctx.rng.uniform(2, 8)
    a.logoff(ctx, tt + 1, s)  # winexe leaves its service installed
    ctx.expect_correlation(SVCCTL)


def sliver_name(rng) -> str:
    """Sliver's random file name: 0-2 alnum prefix, separator, a word, separator, 1-6 alnum suffix."""
    seps = ["", ".", "-", "_", "--", "__"]
    words = ["update", "SYNC", "Helper", "agent", "Runtime", "svc", "Host", "config", "Install", "telemetry"]
    alnum = string.ascii_letters + string.digits
    word = rng.choice(words)
    word = word.upper() if rng.random() < 0.3 else word
    prefix = rand_letters(rng, rng.randrange(0, 3), alnum)
    suffix = rand_letters(rng, rng.randrange(1, 7), alnum)
    return f"{prefix}{rng.choice(seps)}{word}{rng.choice(seps)}{suffix}.exe"


@scenario(
    "sliver-psexec", "Sliver psexec: exe to C$\\windows\\temp, service 'Sliver', start, delete", "windows"
)
def sliver_psexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    op = ctx.world.admins[1]
    implant = src.spawn(
        t - 600,
        f"C:\\Users\\{op.name}\\AppData\\Local\\Temp\\RICH_HOMELAND.exe",
        f"C:\\Users\\{op.name}\\AppData\\Local\\Temp\\RICH_HOMELAND.exe",
        src.core["services"],
        user=op,
        logon_id=src.new_logon_id(),
        integrity="High",
    )
    ctx.add(b.sysmon3(src, t, implant, src.ip, ctx.port(), dst.ip, 445, True, src.fqdn, dst.fqdn))
    exe = sliver_name(rng)
    s, t1 = _sliver_upload(ctx, t, src, dst, op, exe)
    path = f"c:\\windows\\temp\\{exe}"
    ex = Expect(e4697=(SLIVER, ODDPATH), e7045=(SLIVER, ODDPATH), e13=(ODDPATH,), e_key=(SLIVER,))
    t2 = a.install_service(ctx, t1, dst, op, s.logon.logon_id, "Sliver", path, ex)
    ctx.add(
        b.sysmon13(dst, t2, dst.core["services"], b.SERVICES_KEY + "Sliver\\Description", "Sliver implant"),
        SLIVER,
    )
    _, t3 = a.run_service(ctx, t2 + 0.05, dst, "Sliver", "Sliver", f"C:\\Windows\\Temp\\{exe}", path, ex)
    a.dce_rpc(ctx, t3 + 0.5, s, "svcctl", ["OpenServiceW", "DeleteService", "CloseServiceHandle"])
    a.delete_service(ctx, t3 + 0.6, dst, "Sliver")
    a.logoff(ctx, t3 + 1, s)
    ctx.expect_correlation(SVCCTL, SMBEXEC)  # svcctl then install; service deleted within 30 s


def _msf(ctx: Ctx, t: float, src: Host, dst: Host, psh: bool) -> None:
    rng = ctx.rng
    admin = ctx.world.admins[2]
    ws = rand_letters(rng, 16, string.ascii_letters + string.digits)
    # the pack files Metasploit's 16-character workstation name and psh launcher under MS17-010
    # (detections.md §2.12 evidence; the rule titles say "Metasploit", not MS17-010) and the random 8-letter
    # exe in C:\Windows under impacket psexec (detections.md §2.5: the file write cannot tell them apart)
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation=ws, expect_logon=(MS17,))
    a.tree_connect(ctx, t + 0.01, s, "IPC$")
    a.tree_connect(ctx, t + 0.02, s, "ADMIN$")
    svc = rand_letters(rng, rng.choice([8, 16]))
    if psh:
        ctx.add(
            b.sec5145(
                dst, t + 0.03, s.logon, "ADMIN$", "System32\\WindowsPowerShell\\v1.0\\powershell.exe", 0x1
            )
        )
        path = f'%COMSPEC% /b /c start /b /min powershell.exe -nop -w hidden -noni -c "{PSH_PAYLOAD}"'
        image, cmdline = (
            "C:\\Windows\\System32\\cmd.exe",
            path.replace("%COMSPEC%", "C:\\Windows\\system32\\cmd.exe"),
        )
        ex = Expect(e4697=(ODDPATH, VARIANT), e7045=(ODDPATH, VARIANT), e_proc=(MITRE, MS17))
    else:
        binary = rand_letters(rng, 8) + ".exe"
        a.file_write(
            ctx,
            t + 0.03,
            s,
            "ADMIN$",
            binary,
            mask=0x2,
            local_path=f"C:\\Windows\\{binary}",
            expect_file=(IMPACKET,),
        )
        path = f"%SYSTEMROOT%\\{binary}"
        image = cmdline = f"C:\\Windows\\{binary}"
        native = (VARIANT,) if len(svc) == 16 else ()  # the 16-letter name tells it from impacket
        ex = Expect(e4697=(ODDPATH,), e7045=(ODDPATH, *native), e13=(ODDPATH,))
    a.pipe_open(ctx, t + 0.05, s, "svcctl", SVCCTL, mask=0x3, expect_sysmon=(SVCCTL,))
    t1 = a.dce_rpc(ctx, t + 0.06, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "StartServiceW"])
    t2 = a.install_service(ctx, t1, dst, admin, s.logon.logon_id, svc, path, ex)
    p, t3 = a.run_service(ctx, t2 + 0.05, dst, svc, svc, image, cmdline, ex, is_service=False)
    if psh:
        _psh_launcher(ctx, t2 + 0.1, dst, p)
    _delete_and_leave(ctx, s, dst, svc, t2, t3)
    ctx.expect_correlation(SVCCTL, SMBEXEC)


@scenario("metasploit-psexec", "Metasploit exploit/windows/smb/psexec (native exe on ADMIN$)", "linux")
def metasploit_psexec(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    _msf(ctx, t, src, dst, psh=False)


@scenario(
    "metasploit-psexec-psh",
    "Metasploit psexec, PowerShell target: %COMSPEC% /b /c start /b /min powershell",
    "linux",
)
def metasploit_psexec_psh(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    _msf(ctx, t, src, dst, psh=True)


@scenario("ms17-010", "MS17-010 (EternalRomance) psexec: svcctl as the target's own machine account", "linux")
def ms17_010(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    ws = rand_letters(rng, 16, string.ascii_letters + string.digits)
    anon = Account("ANONYMOUS LOGON", "NT AUTHORITY", "S-1-5-7")
    port = ctx.port()
    lg = Logon(dst.new_logon_id(), anon, 3, src.ip, port, ws, "NTLM", "00000000-0000-0000-0000-000000000000")
    ctx.add(b.sec4624(dst, t, lg), MS17)
    # after exploitation the attacker's SMB session runs as the target's own computer account
    s = a.smb_session(
        ctx,
        t + 1.5,
        dst,
        src.ip,
        dst.machine_account,
        "NTLM",
        workstation=ws,
        admin_privs=False,
        expect_logon=(MS17,),
    )
    a.tree_connect(ctx, t + 1.6, s, "IPC$")
    a.pipe_open(ctx, t + 1.61, s, "svcctl", SVCCTL, MS17, mask=0x3, expect_sysmon=(SVCCTL,))
    a.tree_connect(ctx, t + 1.7, s, "ADMIN$", MS17)
    ctx.add(
        b.sec5145(dst, t + 1.71, s.logon, "ADMIN$", "System32\\WindowsPowerShell\\v1.0\\powershell.exe", 0x1)
    )
    t1 = a.dce_rpc(ctx, t + 1.72, s, "svcctl", ["OpenSCManagerW", "CreateServiceW", "StartServiceW"])
    svc = rand_letters(rng, 16)
    path = f'%COMSPEC% /b /c start /b /min powershell.exe -nop -w hidden -noni -c "{PSH_PAYLOAD}"'
    ex = Expect(e4697=(ODDPATH, VARIANT), e7045=(ODDPATH, VARIANT), e_proc=(MITRE, MS17))
    t2 = a.install_service(ctx, t1, dst, dst.machine_account, s.logon.logon_id, svc, path, ex)
    cmdline = path.replace("%COMSPEC%", "C:\\Windows\\system32\\cmd.exe")
    p, t3 = a.run_service(
        ctx, t2 + 0.05, dst, svc, svc, "C:\\Windows\\System32\\cmd.exe", cmdline, ex, is_service=False
    )
    _psh_launcher(ctx, t2 + 0.1, dst, p)
    _delete_and_leave(ctx, s, dst, svc, t2, t3)
    ctx.expect_correlation(MS17, SVCCTL, SMBEXEC)


EMPIRE_ENC = (
    "SQBGACgAJABQAFMAVgBlAHIAcwBpAG8AbgBUAGEAYgBsAGUALgBQAFMAVgBlAHIAcwBpAG8AbgAuAE0AYQBqAG8AcgAgAC0AZwBlACAAMwAp"
    "AHsAJABHAFAARgA9AFsAcgBlAGYAXQAuAEEAcwBzAGUAbQBiAGwAeQAuAEcAZQB0AFQAeQBwAGUAKAAnAFMAeQBzAHQAZQBtAC4A"
)


@scenario(
    "empire-psexec-tcp",
    "Empire invoke_psexec over RPC/TCP (no SMB pipe): service 'Updater', %COMSPEC% /C start",
    "linux",
)
def empire_psexec_tcp(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """SCM over RPC/TCP leaves no 5145: Sysmon 3 and 5156 of services.exe accepting (detections.md §0.7)."""
    rng = ctx.rng
    admin = ctx.world.admins[2]
    port = ctx.port()
    lg = Logon(
        dst.new_logon_id(), admin, 3, src.ip, port, "-", "NTLM", "00000000-0000-0000-0000-000000000000"
    )
    ctx.add(b.sec4624(dst, t, lg))
    ctx.add(b.sec4672(dst, t, lg))
    uid135, uid_dyn = ctx.uid(), ctx.uid()
    dyn = rng.randrange(49664, 49690)  # services.exe's RPC endpoint
    ctx.zeek(
        t - 0.01,
        "conn",
        {
            "uid": uid135,
            "id.orig_h": src.ip,
            "id.orig_p": port - 1,
            "id.resp_h": dst.ip,
            "id.resp_p": 135,
            "proto": "tcp",
            "service": "dce_rpc",
            "duration": 0.02,
            "orig_bytes": 220,
            "resp_bytes": 180,
            "conn_state": "SF",
            "local_orig": True,
            "local_resp": True,
            "missed_bytes": 0,
            "history": "ShADadFf",
            "orig_pkts": 6,
            "orig_ip_bytes": 540,
            "resp_pkts": 5,
            "resp_ip_bytes": 400,
        },
    )
    ctx.zeek(
        t - 0.005,
        "dce_rpc",
        {
            "uid": uid135,
            "id.orig_h": src.ip,
            "id.orig_p": port - 1,
            "id.resp_h": dst.ip,
            "id.resp_p": 135,
            "rtt": 0.0008,
            "named_pipe": "135",
            "endpoint": "epmapper",
            "operation": "ept_map",
        },
    )
    ctx.zeek(
        t,
        "conn",
        {
            "uid": uid_dyn,
            "id.orig_h": src.ip,
            "id.orig_p": port,
            "id.resp_h": dst.ip,
            "id.resp_p": dyn,
            "proto": "tcp",
            "service": "dce_rpc",
            "duration": 1.3,
            "orig_bytes": 2900,
            "resp_bytes": 900,
            "conn_state": "SF",
            "local_orig": True,
            "local_resp": True,
            "missed_bytes": 0,
            "history": "ShADadFf",
            "orig_pkts": 14,
            "orig_ip_bytes": 3600,
            "resp_pkts": 12,
            "resp_ip_bytes": 1500,
        },
    )
    services = dst.core["services"]
    ctx.add(b.sysmon3(dst, t + 0.001, services, src.ip, port, dst.ip, dyn, False, "", dst.fqdn), SVCCTL)
    ctx.add(b.sec5156(dst, t + 0.001, services, dst.ip, dyn, src.ip, port, True), SVCCTL)
    tt = t + 0.01
    for op in ("OpenSCManager2", "CreateServiceA", "OpenServiceA", "StartServiceA"):
        ctx.zeek(
            tt,
            "dce_rpc",
            {
                "uid": uid_dyn,
                "id.orig_h": src.ip,
                "id.orig_p": port,
                "id.resp_h": dst.ip,
                "id.resp_p": dyn,
                "rtt": 0.0011,
                "named_pipe": str(dyn),
                "endpoint": "svcctl",
                "operation": op,
            },
            *a.svcctl_expect("svcctl", op),
        )
        tt += 0.02
    ps = "C:\\Windows\\System32\\WindowsPowershell\\v1.0\\powershell"
    path = f"%COMSPEC% /C start /b {ps} -noP -sta -w 1 -enc {EMPIRE_ENC}"
    ex = Expect(e4697=(ODDPATH,), e7045=(ODDPATH,), e_proc=(MITRE,))
    t2 = a.install_service(ctx, tt, dst, admin, lg.logon_id, "Updater", path, ex)
    cmdline = path.replace("%COMSPEC%", "C:\\Windows\\system32\\cmd.exe")
    p, _ = a.run_service(
        ctx,
        t2 + 0.05,
        dst,
        "Updater",
        "Updater",
        "C:\\Windows\\System32\\cmd.exe",
        cmdline,
        ex,
        is_service=False,
    )
    a.child(
        ctx,
        t2 + 0.08,
        dst,
        p,
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "C:\\Windows\\System32\\WindowsPowershell\\v1.0\\powershell  -noP -sta -w 1 -enc " + EMPIRE_ENC,
    )
    a.delete_service(ctx, t2 + 0.5, dst, "Updater")
    ctx.add(b.sec4634(dst, t2 + 1.0, lg))
    # installed and deleted within seconds; services.exe's inbound RPC/TCP connection then the install
    ctx.expect_correlation(SMBEXEC, SVCCTL)


@scenario(
    "sliver-psexec-renamed", "Sliver psexec with --service-name/--service-description changed", "windows"
)
def sliver_psexec_renamed(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """Only the C:\\Windows\\Temp binary path and the start/delete shape remain (detections.md §2.11)."""
    rng = ctx.rng
    op = ctx.world.admins[1]
    name = rng.choice(["WinHealthSvc", "MsUpdateAgent", "NetTelemetry"])
    exe = sliver_name(rng)
    s, t1 = _sliver_upload(ctx, t, src, dst, op, exe)
    path = f"c:\\windows\\temp\\{exe}"
    ex = Expect(e4697=(SLIVER, ODDPATH), e7045=(SLIVER, ODDPATH), e13=(ODDPATH,))
    t2 = a.install_service(ctx, t1, dst, op, s.logon.logon_id, name, path, ex)
    ctx.add(
        b.sysmon13(dst, t2, dst.core["services"], b.SERVICES_KEY + f"{name}\\Description", "Health agent")
    )
    _, t3 = a.run_service(ctx, t2 + 0.05, dst, name, name, f"C:\\Windows\\Temp\\{exe}", path, ex)
    a.dce_rpc(ctx, t3 + 0.5, s, "svcctl", ["OpenServiceW", "DeleteService", "CloseServiceHandle"])
    a.delete_service(ctx, t3 + 0.6, dst, name)
    a.logoff(ctx, t3 + 1, s)
    ctx.expect_correlation(SVCCTL, SMBEXEC)
