"""RemoteRegistry enabled over svcctl (secretsdump/DonPAPI) and a service hidden in the registry
(detections.md §2.13, §2.14)."""

from __future__ import annotations

from scmwatch.detections import CLI, HIDDEN, REMREG, SVCCTL
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.world import LOCAL_SERVICE, Host, rand_letters

RR_KEY = b.SERVICES_KEY + "RemoteRegistry\\Start"


@scenario(
    "remote-registry", "secretsdump-style: enable + start RemoteRegistry over svcctl, dump, restore", "linux"
)
def remote_registry(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    admin = ctx.world.admins[2]
    services = dst.core["services"]
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation="-")
    a.tree_connect(ctx, t + 0.01, s, "IPC$")
    a.pipe_open(ctx, t + 0.02, s, "svcctl", SVCCTL, mask=0x3, expect_sysmon=(SVCCTL,))
    t1 = a.dce_rpc(
        ctx,
        t + 0.03,
        s,
        "svcctl",
        [
            "OpenSCManagerW",
            "OpenServiceW",
            "QueryServiceStatus",
            "QueryServiceConfigW",
            "ChangeServiceConfigW",
        ],
    )
    ctx.add(
        b.sec4674(dst, t1, admin, s.logon.logon_id, "SERVICE OBJECT", "RemoteRegistry", "0x10014"), REMREG
    )
    ctx.add(b.sysmon13(dst, t1 + 0.01, services, RR_KEY, b.dword(3)), REMREG)
    ctx.add(
        b.sys7040(dst, t1 + 0.02, admin.sid, "Remote Registry", "disabled", "demand start", "RemoteRegistry"),
        REMREG,
    )
    t2 = a.dce_rpc(ctx, t1 + 0.05, s, "svcctl", ["StartServiceW"])
    rr = dst.spawn(
        t2,
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k localService -p -s RemoteRegistry",
        services,
        user=LOCAL_SERVICE,
        logon_id="0x3e5",
    )
    ctx.add(b.sysmon1(dst, t2, rr), REMREG)
    ctx.add(b.sec4688(dst, t2 + 0.0001, rr), REMREG)
    ctx.add(b.sys7036(dst, t2 + 0.1, "Remote Registry", "RemoteRegistry", True), REMREG)
    t3 = t2 + 1.0
    a.pipe_open(ctx, t3, s, "winreg")
    t4 = a.dce_rpc(
        ctx,
        t3 + 0.01,
        s,
        "winreg",
        [
            "OpenLocalMachine",
            "BaseRegOpenKey",
            "BaseRegQueryInfoKey",
            "BaseRegSaveKey",
            "BaseRegSaveKey",
            "BaseRegCloseKey",
        ],
    )
    a.tree_connect(ctx, t4, s, "ADMIN$")
    for _ in range(2):
        tmp = rand_letters(rng, 8) + ".tmp"
        ctx.add(b.sysmon11(dst, t4 + 0.01, rr, f"C:\\Windows\\System32\\{tmp}"))
        ctx.add(b.sec5145(dst, t4 + 0.2, s.logon, "ADMIN$", f"SYSTEM32\\{tmp}", 0x120089))
        ctx.add(b.sec5145(dst, t4 + 0.5, s.logon, "ADMIN$", f"SYSTEM32\\{tmp}", 0x10080))
        t4 += 0.6
    # restore: stop, set back to disabled
    t5 = a.dce_rpc(
        ctx, t4 + 0.2, s, "svcctl", ["ControlService", "ChangeServiceConfigW", "CloseServiceHandle"]
    )
    a.stop_service(ctx, t5, dst, "RemoteRegistry", "Remote Registry")
    ctx.add(b.sysmon13(dst, t5 + 0.01, services, RR_KEY, b.dword(4)))
    ctx.add(
        b.sys7040(dst, t5 + 0.02, admin.sid, "Remote Registry", "demand start", "disabled", "RemoteRegistry")
    )
    a.logoff(ctx, t5 + 0.5, s)


@scenario(
    "hidden-service",
    "service registered by reg.exe writing HKLM\\...\\Services\\<name> (no 7045/4697)",
    "local",
)
def hidden_service(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    op, shell = a.admin_shell(ctx, t, dst)
    name = rng.choice(["WinDefendUpdate", "MsCtfMonitor", "NetSvcHelper", "DiagTrackSvc2"])
    exe = f"C:\\ProgramData\\{rand_letters(rng, 6).lower()}\\{name.lower()}.exe"
    key = f"HKLM\\SYSTEM\\CurrentControlSet\\Services\\{name}"
    values = [
        # (value, reg type, reg.exe data, Sysmon 13 Details, detections on the 13, on reg.exe)
        ("Type", "REG_DWORD", "16", b.dword(16), (), ()),
        ("Start", "REG_DWORD", "2", b.dword(2), (), (CLI,)),
        ("ErrorControl", "REG_DWORD", "1", b.dword(1), (), ()),
        ("ImagePath", "REG_EXPAND_SZ", f'"{exe}"', exe, (CLI,), (CLI,)),
        ("ObjectName", "REG_SZ", "LocalSystem", "LocalSystem", (), ()),
    ]
    tt = t
    first = True
    for value, kind, data, details, e13, ecli in values:
        reg = a.child(
            ctx,
            tt,
            dst,
            shell,
            "C:\\Windows\\System32\\reg.exe",
            f"reg  add {key} /v {value} /t {kind} /d {data} /f",
            *ecli,
        )
        if first:
            ctx.add(b.sysmon12(dst, tt + 0.01, reg, b.SERVICES_KEY + name), HIDDEN)
            first = False
        ctx.add(b.sysmon13(dst, tt + 0.011, reg, b.SERVICES_KEY + f"{name}\\{value}", details), *e13)
        if dst.registry_audit:  # a new ImagePath value written by anything but the SCM (detections.md §2.14)
            new = details if kind != "REG_DWORD" else data
            e4657 = (HIDDEN,) if value == "ImagePath" else ()
            ctx.add(b.sec4657(dst, tt + 0.012, reg, b.SERVICES_KEY + name, value, None, new, kind), *e4657)
        tt += rng.uniform(0.5, 3)  # service appears only after reboot: nothing more in this window
    # ... and the SCM never installs it: the pack's absence correlation (no 7045/4697 or SCM write of
    # that key within 5 min) confirms the single-event signal (Sysmon 12 CreateKey by a non-SCM process)
    ctx.expect_correlation(HIDDEN)


@scenario(
    "remote-registry-sc",
    "sc \\\\host config RemoteRegistry start= demand + start (and Set-Service locally)",
    "windows",
)
def remote_registry_sc(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """The CLI variant of detections.md §2.13: an operator enables RemoteRegistry with sc.exe, then
    reads the registry."""
    rng = ctx.rng
    services = dst.core["services"]
    op, shell = a.admin_shell(ctx, t, src)
    s = a.smb_session(ctx, t, dst, src.ip, op, "Kerberos")
    a.child(
        ctx,
        t,
        src,
        shell,
        "C:\\Windows\\System32\\sc.exe",
        f"sc.exe  \\\\{dst.name} config RemoteRegistry start= demand",
        REMREG,
        CLI,
    )
    a.tree_connect(ctx, t + 0.05, s, "IPC$")
    a.pipe_open(ctx, t + 0.06, s, "svcctl", SVCCTL, expect_sysmon=(SVCCTL,))
    t1 = a.dce_rpc(ctx, t + 0.07, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "ChangeServiceConfigW"])
    ctx.add(b.sysmon13(dst, t1, services, RR_KEY, b.dword(3)), REMREG)
    ctx.add(
        b.sys7040(dst, t1 + 0.01, op.sid, "Remote Registry", "disabled", "demand start", "RemoteRegistry"),
        REMREG,
    )
    t2 = t1 + rng.uniform(1, 4)
    a.child(
        ctx,
        t2,
        src,
        shell,
        "C:\\Windows\\System32\\sc.exe",
        f"sc.exe  \\\\{dst.name} start RemoteRegistry",
        REMREG,
    )
    t3 = a.dce_rpc(ctx, t2 + 0.05, s, "svcctl", ["OpenSCManagerW", "OpenServiceW", "StartServiceW"])
    rr = dst.spawn(
        t3,
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k localService -p -s RemoteRegistry",
        services,
        user=LOCAL_SERVICE,
        logon_id="0x3e5",
    )
    ctx.add(b.sysmon1(dst, t3, rr), REMREG)
    ctx.add(b.sec4688(dst, t3 + 0.0001, rr), REMREG)
    ctx.add(b.sys7036(dst, t3 + 0.1, "Remote Registry", "RemoteRegistry", True), REMREG)
    a.child(
        ctx,
        t3 + 2,
        src,
        shell,
        "C:\\Windows\\System32\\reg.exe",
        f"reg  query \\\\{dst.name}\\HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa",
    )
    a.pipe_open(ctx, t3 + 2.05, s, "winreg")
    a.logoff(ctx, t3 + 10, s)


@scenario(
    "powershell-remote-registry",
    "PowerShell Set-Service/Start-Service RemoteRegistry on the host itself",
    "local",
    target="server",
)
def powershell_remote_registry(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    op = ctx.world.admins[0]
    services = dst.core["services"]
    shell = a.operator_shell(ctx, t - 20, dst, op)
    ps = a.child(
        ctx,
        t - 10,
        dst,
        shell,
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe",
    )
    ctx.add(b.ps4104(dst, t, ps, "Set-Service -Name RemoteRegistry -StartupType Manual", suspicious=True),
            REMREG)
    ctx.add(b.sysmon13(dst, t + 0.05, services, RR_KEY, b.dword(3)), REMREG)
    ctx.add(
        b.sys7040(dst, t + 0.06, op.sid, "Remote Registry", "disabled", "demand start", "RemoteRegistry"),
        REMREG,
    )
    ctx.add(b.ps4104(dst, t + 3, ps, "Start-Service -Name RemoteRegistry", suspicious=True), REMREG)
    rr = dst.spawn(
        t + 3.1,
        "C:\\Windows\\System32\\svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k localService -p -s RemoteRegistry",
        services,
        user=LOCAL_SERVICE,
        logon_id="0x3e5",
    )
    ctx.add(b.sysmon1(dst, t + 3.1, rr), REMREG)
    ctx.add(b.sec4688(dst, t + 3.1001, rr), REMREG)
    ctx.add(b.sys7036(dst, t + 3.2, "Remote Registry", "RemoteRegistry", True), REMREG)


@scenario(
    "hidden-service-sdset",
    "sc sdset with deny ACEs hides a service from enumeration (Services.msc, sc query)",
    "local",
)
def hidden_service_sdset(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    op = ctx.world.admins[1]
    shell = a.operator_shell(ctx, t - 15, dst, op)
    name = ctx.rng.choice(["SWCUEngine", "UpdaterSvc", "SensorDataSvc"])
    sddl = (
        "D:(D;;DCLCWPDTSD;;;IU)(D;;DCLCWPDTSD;;;SU)(D;;DCLCWPDTSD;;;BA)(A;;CCLCSWLOCRRC;;;IU)"
        "(A;;CCLCSWLOCRRC;;;SU)(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)"
        "S:(AU;FA;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;WD)"
    )
    a.child(
        ctx, t, dst, shell, "C:\\Windows\\System32\\sc.exe", f'sc.exe  sdset {name} "{sddl}"', HIDDEN, CLI
    )
    ctx.add(
        b.sysmon13(
            dst, t + 0.02, dst.core["services"], b.SERVICES_KEY + f"{name}\\Security\\Security", "Binary Data"
        )
    )
    a.child(ctx, t + 5, dst, shell, "C:\\Windows\\System32\\sc.exe", f"sc.exe  query {name}")
