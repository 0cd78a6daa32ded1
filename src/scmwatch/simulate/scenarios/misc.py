"""MSSQL service control, WannaMine, PowerShell New-Service and services outside system
directories (detections.md §2.7, §2.9, §2.15, §2.17)."""

from __future__ import annotations

from scmwatch.detections import CLI, MSSQL, ODDPATH, VARIANT, WANNA, WANNA_SUB
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.world import SYSTEM, Account, Host, rand_letters

SQLSERVR = "C:\\Program Files\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.exe"


def sql_process(h: Host, t: float) -> object:
    if "sqlservr" not in h.core:
        h.core["sqlservr"] = h.spawn(
            t - 86400,
            SQLSERVR,
            f'"{SQLSERVR}" -sMSSQLSERVER',
            h.core["services"],
            user=Account(
                "MSSQLSERVER", "NT Service", "S-1-5-80-3880718306-3832830129-1677859214-2598158968-1052248003"
            ),
            logon_id=h.new_logon_id(),
            integrity="High",
        )
    return h.core["sqlservr"]


@scenario(
    "mssql-service-control",
    "T-SQL service control: xp_servicecontrol, and xp_cmdshell 'sc stop ...'",
    "windows",
    target="sql",
)
def mssql_service_control(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    sql = sql_process(dst, t)
    seq = rng.randrange(1, 500)
    session = rng.randrange(51, 120)
    ctx.add(
        b.mssql33205(
            dst,
            t,
            seq,
            session,
            "sa",
            src.ip,
            "EX",
            "xp_servicecontrol",
            "EXEC master..xp_servicecontrol N'stop', N'SQLWriter'",
        ),
        MSSQL,
    )
    ctx.add(b.sys7036(dst, t + 0.4, "SQL Server VSS Writer", "SQLWriter", False))
    ctx.expect_correlation(MSSQL)  # 33205 xp_servicecontrol then the SCM's 7036 (detections.md §2.7 corr)
    t1 = t + rng.uniform(10, 40)
    ctx.add(b.mssql15457(dst, t1, "show advanced options", "0", "1"))
    ctx.add(b.mssql15457(dst, t1 + 0.2, "xp_cmdshell", "0", "1"))
    t2 = t1 + rng.uniform(5, 20)
    ctx.add(
        b.mssql33205(
            dst,
            t2,
            seq + 5,
            session,
            "sa",
            src.ip,
            "EX",
            "xp_cmdshell",
            "EXEC master..xp_cmdshell 'sc stop MpsSvc'",
        ),
        MSSQL,
    )
    # sqlservr.exe → cmd.exe /c "sc stop ..." is the single-event signal; the sc.exe grandchild
    # shows only cmd.exe as its parent
    cmd = a.child(
        ctx, t2 + 0.05, dst, sql, "C:\\Windows\\System32\\cmd.exe", 'cmd.exe /c "sc stop MpsSvc"', MSSQL
    )
    a.child(ctx, t2 + 0.07, dst, cmd, "C:\\Windows\\System32\\sc.exe", "sc  stop MpsSvc")
    ctx.add(b.sys7036(dst, t2 + 0.5, "Windows Defender Firewall", "MpsSvc", False))


WANNA_WORDS = [
    "Netframework",
    "Windows",
    "Microsoft",
    "Security",
    "Remote",
    "Network",
    "Service",
    "Host",
    "Client",
    "Event",
    "Manager",
    "Helper",
    "System",
    "Server",
    "Management",
    "Monitor",
    "Data",
]
POOLS = ["xmr.pool.minergate.com", "pool.minexmr.com", "xmr-eu1.nanopool.org", "stratum.supportxmr.com"]
KIT = [
    "svchost.exe",
    "spoolsv.exe",
    "x86.dll",
    "x64.dll",
    "Eternalblue-2.2.0.exe",
    "Eternalblue-2.2.0.xml",
    "Doublepulsar-1.3.1.exe",
    "Doublepulsar-1.3.1.xml",
    "trch-1.dll",
    "tucl-1.dll",
    "libxml2.dll",
    "zlib1.dll",
    "crli-0.dll",
    "posh-0.dll",
    "trfo-2.dll",
    "coli-0.dll",
]


@scenario(
    "wannamine",
    "WannaMine v4: service DLL, NetworkDistribution kit, side-loading, pool DNS",
    "local",
    target="workstation",
    duration=600.0,
)
def wannamine(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    services = dst.core["services"]
    name = rng.choice(WANNA_WORDS) + rng.choice(WANNA_WORDS) + rng.choice(["", "s", "Svc"])
    dll = "C:\\Windows\\System32\\ApplicationNetBIOSClient.dll"
    # the dropper (running from a previous infection stage) installs a svchost-hosted service DLL
    dropper = dst.spawn(
        t - 5,
        "C:\\Windows\\System32\\rundll32.exe",
        "C:\\Windows\\System32\\rundll32.exe C:\\Windows\\System32\\rdpkax.xsl,Start",
        services,
    )
    for i, f in enumerate(["rdpkax.xsl", "dllhostex.exe", "ApplicationNetBIOSClient.dll"]):
        ctx.add(b.sysmon11(dst, t + i * 0.01, dropper, f"C:\\Windows\\System32\\{f}"), WANNA_SUB)
    group = f"{name}Group"
    path = f"%SystemRoot%\\System32\\svchost.exe -k {group}"
    t1 = a.install_service(ctx, t + 1, dst, SYSTEM, "0x3e7", name, path, Expect(), start="auto start")
    ctx.add(
        b.sysmon13(dst, t1, dropper, b.SERVICES_KEY + f"{name}\\Parameters\\ServiceDll", dll), WANNA_SUB, CLI
    )
    host = dst.spawn(
        t1 + 1,
        "C:\\Windows\\System32\\svchost.exe",
        f"C:\\Windows\\system32\\svchost.exe -k {group}",
        services,
    )
    ctx.add(b.sysmon1(dst, t1 + 1, host))
    ctx.add(b.sec4688(dst, t1 + 1.0001, host))
    ctx.add(b.sys7036(dst, t1 + 1.1, name, name, True))
    # mining-pool DNS (spec s1) is threat-intel driven: the pack ships no list, so no expectation
    ctx.add(b.sysmon22(dst, t1 + 5, host, rng.choice(POOLS), "::ffff:45.9.148.21;"))
    tt = t1 + 20
    for f in KIT:
        ctx.add(b.sysmon11(dst, tt, host, f"C:\\Windows\\NetworkDistribution\\{f}"), WANNA_SUB)
        tt += rng.uniform(0.05, 0.5)
    spool = dst.spawn(
        tt + 5,
        "C:\\Windows\\NetworkDistribution\\spoolsv.exe",
        "C:\\Windows\\NetworkDistribution\\spoolsv.exe",
        host,
    )
    ctx.add(b.sysmon1(dst, tt + 5, spool), WANNA_SUB)
    ctx.add(b.sec4688(dst, tt + 5.0001, spool), WANNA_SUB)
    ctx.add(b.sysmon7(dst, tt + 5.05, spool, "C:\\Windows\\NetworkDistribution\\x64.dll", False), WANNA_SUB)
    targets = rng.sample(ctx.world.windows_hosts, min(5, len(ctx.world.windows_hosts)))
    for i, other in enumerate(targets):
        if other is dst:
            continue
        ctx.add(
            b.sysmon3(dst, tt + 6 + i * 0.2, spool, dst.ip, ctx.port(), other.ip, 445, True, dst.fqdn, "")
        )
    ctx.expect_correlation(WANNA)


@scenario(
    "powershell-new-service",
    "PowerShell New-Service with a binary in C:\\Users\\Public, then started",
    "local",
    target="server",
)
def powershell_new_service(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    op = ctx.world.admins[0]
    shell = a.operator_shell(ctx, t - 30, dst, op)
    ps = a.child(
        ctx,
        t - 20,
        dst,
        shell,
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe",
    )
    name = rng.choice(["WinSvcHost", "PerfCollector", "WindowsHealthAgent"])
    exe = f"C:\\Users\\Public\\{name.lower()}.exe"
    text = (
        f'New-Service -Name "{name}" -BinaryPathName "{exe}" -DisplayName "{name}" '
        f'-StartupType Automatic -Description "Windows host agent"'
    )
    ctx.add(b.ps4104(dst, t, ps, text, suspicious=True), CLI)
    ex = Expect(e4697=(ODDPATH,), e7045=(ODDPATH,), e13=(ODDPATH,))
    t1 = a.install_service(ctx, t + 0.1, dst, op, ps.logon_id, name, exe, ex, start="auto start")
    ctx.add(b.ps4104(dst, t1 + 5, ps, f'Start-Service -Name "{name}"', suspicious=True))
    a.run_service(ctx, t1 + 5.1, dst, name, name, exe, exe, Expect())


ODD_PATHS = [
    ("C:\\Users\\{user}\\AppData\\Local\\Temp\\{r}.exe", "user mode service", "auto start"),
    ("C:\\ProgramData\\{r}\\{r}svc.exe", "user mode service", "auto start"),
    ("C:\\Users\\Public\\Libraries\\{r}.exe", "user mode service", "demand start"),
    ("C:\\PerfLogs\\{r}.exe", "user mode service", "auto start"),
    ("C:\\ProgramData\\{r}\\{r}.sys", "kernel mode driver", "demand start"),
]


@scenario(
    "odd-path-service",
    "sc create with a binary outside the system directories (Temp, ProgramData, ...)",
    "local",
)
def odd_path_service(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    rng = ctx.rng
    op = ctx.world.admins[rng.randrange(2)]
    shell = a.operator_shell(ctx, t - 10, dst, op)
    r = rand_letters(rng, 7).lower()
    template, stype, start = rng.choice(ODD_PATHS)
    path = template.format(user=ctx.world.users[0].name, r=r)
    name = r + ("drv" if stype == "kernel mode driver" else "svc")
    kind = " type= kernel" if stype == "kernel mode driver" else ""
    start_arg = {"auto start": "auto", "demand start": "demand"}[start]
    a.child(
        ctx,
        t,
        dst,
        shell,
        "C:\\Windows\\System32\\sc.exe",
        f'sc.exe  create {name} binPath= "{path}"{kind} start= {start_arg}',
        CLI,
    )
    driver = (VARIANT,) if stype == "kernel mode driver" else ()  # BYOVD: a driver from a writable dir
    ex = Expect(e4697=(ODDPATH, *driver), e7045=(ODDPATH, *driver), e13=(ODDPATH, *driver))
    # sc.exe's CreateService runs under the admin's interactive logon
    a.install_service(
        ctx,
        t + 0.05,
        dst,
        op,
        shell.logon_id,
        name,
        path,
        ex,
        start=start,
        stype=stype,
        account="LocalSystem" if stype != "kernel mode driver" else "",
    )
    if stype != "kernel mode driver":
        a.run_service(ctx, t + 3, dst, name, name, path, path, Expect())
