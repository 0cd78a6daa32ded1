"""Benign background traffic: what a Windows network logs all day, including near-misses.

Each *episode* is a few events of one ordinary activity on one host. Weights give realistic
proportions (process creation, DNS, logons and network connections dominate; service installs
are rare). Many episodes deliberately resemble attacks without being one — ``sc query``,
services.exe starting svchost, driver installs from ``System32\\drivers``, 5145 on ``srvsvc``
and user shares, ``Get-Service``, SQL audit of plain queries, a 7040 start-type change of BITS
— so a rule that fires on them is too loose.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect
from scmwatch.simulate.world import NETWORK_SERVICE, SYSTEM, Host, Logon

W32 = "C:\\Windows\\System32\\"

USER_APPS = [
    (
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=renderer --lang=en-US',
    ),
    (
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
        '"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE" ',
    ),
    (
        "C:\\Users\\{u}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe",
        '"C:\\Users\\{u}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe" /background',
    ),
    (W32 + "conhost.exe", "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1"),
    (W32 + "taskhostw.exe", "taskhostw.exe {222A245B-E637-4AE9-A93F-A59CA119A75E}"),
    (
        W32 + "SearchProtocolHost.exe",
        '"C:\\Windows\\system32\\SearchProtocolHost.exe" Global\\UsGthrFltPipeMssGthrPipe1',
    ),
    (W32 + "ipconfig.exe", "ipconfig  /flushdns"),
    (W32 + "whoami.exe", "whoami  /groups"),
    (W32 + "cmd.exe", '"C:\\Windows\\system32\\cmd.exe" /c dir C:\\Users'),
]

# services.exe children: svchost groups, installer and licensing services
# (near-misses for detections.md §2.18).
SERVICE_PROCS = [
    (
        "BITS",
        "Background Intelligent Transfer Service",
        W32 + "svchost.exe",
        "C:\\Windows\\System32\\svchost.exe -k netsvcs -p -s BITS",
    ),
    (
        "wuauserv",
        "Windows Update",
        W32 + "svchost.exe",
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s wuauserv",
    ),
    (
        "TrustedInstaller",
        "Windows Modules Installer",
        "C:\\Windows\\servicing\\TrustedInstaller.exe",
        "C:\\Windows\\servicing\\TrustedInstaller.exe",
    ),
    ("sppsvc", "Software Protection", W32 + "sppsvc.exe", "C:\\Windows\\system32\\sppsvc.exe"),
    ("msiserver", "Windows Installer", W32 + "msiexec.exe", "C:\\Windows\\system32\\msiexec.exe /V"),
    (
        "WinRM",
        "Windows Remote Management (WS-Management)",
        W32 + "svchost.exe",
        "C:\\Windows\\System32\\svchost.exe -k NetworkService -p -s WinRM",
    ),
    (
        "DoSvc",
        "Delivery Optimization",
        W32 + "svchost.exe",
        "C:\\Windows\\System32\\svchost.exe -k NetworkService -p -s DoSvc",
    ),
    (
        "WerSvc",
        "Windows Error Reporting Service",
        W32 + "svchost.exe",
        "C:\\Windows\\System32\\svchost.exe -k WerSvcGroup",
    ),
]

# Services Windows Update and driver setup install from system directories
# (near-misses for detections.md §2.15).
SYSTEM_INSTALLS = [
    ("MpKslDrv", "\\SystemRoot\\System32\\drivers\\MpKslDrv.sys", "kernel mode driver", "demand start", ""),
    ("WdBoot", "\\SystemRoot\\system32\\drivers\\wd\\WdBoot.sys", "kernel mode driver", "boot start", ""),
    (
        "iaStorAC",
        "\\SystemRoot\\System32\\DriverStore\\FileRepository\\iastorac.inf_amd64_f3b6a3c1c0d7b2ac\\"
        "RstMwService.exe",
        "user mode service",
        "auto start",
        "LocalSystem",
    ),
    ("rt640x64", "\\SystemRoot\\System32\\drivers\\rt640x64.sys", "kernel mode driver", "demand start", ""),
    (
        "WaaSMedicSvc",
        "C:\\Windows\\system32\\svchost.exe -k wusvcs -p",
        "user mode service",
        "demand start",
        "LocalSystem",
    ),
    (
        "edgeupdate",
        '"C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe" /svc',
        "user mode service",
        "auto start",
        "LocalSystem",
    ),
    (
        "ClickToRunSvc",
        '"C:\\Program Files\\Common Files\\Microsoft Shared\\ClickToRun\\OfficeClickToRun.exe" /service',
        "user mode service",
        "auto start",
        "LocalSystem",
    ),
    (
        "MpKslc0b0f2a1",
        "C:\\ProgramData\\Microsoft\\Windows Defender\\Definition Updates\\"
        "{4C7FA4D5-22B3-4E43-8B73-4D1A3F3C5E1B}\\MpKslDrv.sys",
        "kernel mode driver",
        "demand start",
        "",
    ),
    (
        "UsoSvc",
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p",
        "user mode service",
        "auto start",
        "LocalSystem",
    ),
]

DOMAINS = [
    "www.google.com",
    "login.microsoftonline.com",
    "outlook.office365.com",
    "settings-win.data.microsoft.com",
    "ctldl.windowsupdate.com",
    "teams.microsoft.com",
    "github.com",
    "intranet.corp.example.com",
    "wpad.corp.example.com",
    "update.googleapis.com",
    "onedrive.live.com",
    "slscr.update.microsoft.com",
]

PS_BENIGN = [
    "Get-Service | Where-Object {$_.Status -eq 'Stopped'} | Select-Object Name, DisplayName",
    "Get-Service -Name Spooler, wuauserv | Format-Table -AutoSize",
    "Get-Process | Sort-Object CPU -Descending | Select-Object -First 10",
    "Get-ChildItem -Path C:\\Logs -Filter *.log | Where-Object LastWriteTime -lt (Get-Date).AddDays(-30) "
    "| Remove-Item",
    "Get-WmiObject -Class Win32_Service -Filter \"StartMode='Auto'\" | Select-Object Name, State",
    "Test-NetConnection -ComputerName fs01 -Port 445",
    "prompt",
]

SC_QUERIES = [
    "query wuauserv",
    "qc Spooler",
    "queryex type= service state= all",
    "query state= all",
    "qdescription BITS",
    "query WinDefend",
]


def _user_proc_parent(ctx: Ctx, h: Host, t: float):
    key = "explorer:user"
    if key not in h.core:
        user = ctx.world.users[zlib.crc32(h.name.encode()) % len(ctx.world.users)]
        h.core[key] = a.desktop(ctx, t, h, user, "Medium")
    return h.core[key]


def user_process(ctx: Ctx, t: float, h: Host) -> None:
    parent = _user_proc_parent(ctx, h, t)
    image, cmd = ctx.rng.choice(USER_APPS)
    u = parent.user.name
    p = a.child(ctx, t, h, parent, image.replace("{u}", u), cmd.replace("{u}", u))
    if ctx.rng.random() < 0.3:
        ctx.add(
            b.sysmon11(h, t + 0.2, p, f"C:\\Users\\{u}\\AppData\\Local\\Temp\\{ctx.rng.randrange(10**6)}.tmp")
        )


def service_cycle(ctx: Ctx, t: float, h: Host) -> None:
    key, display, image, cmd = ctx.rng.choice(SERVICE_PROCS)
    services = h.core["services"]
    user = NETWORK_SERVICE if "NetworkService" in cmd else SYSTEM
    p = h.spawn(t, image, cmd, services, user=user, logon_id="0x3e4" if user is NETWORK_SERVICE else "0x3e7")
    ctx.add(b.sysmon1(h, t, p))
    ctx.add(b.sec4688(h, t + 0.0001, p))
    ctx.add(b.sys7036(h, t + 0.05, display, key, True))
    ctx.add(b.sys7036(h, t + ctx.rng.uniform(30, 600), display, key, False))


def system_install(ctx: Ctx, t: float, h: Host) -> None:
    name, path, stype, start, account = ctx.rng.choice(SYSTEM_INSTALLS)
    a.install_service(
        ctx, t, h, SYSTEM, "0x3e7", name, path, Expect(), start=start, account=account, stype=stype
    )


def network_logon(ctx: Ctx, t: float, h: Host) -> None:
    rng = ctx.rng
    ws = rng.choice(ctx.world.workstations())
    user = rng.choice(ctx.world.users)
    s = a.smb_session(ctx, t, h, ws.ip, user, "Kerberos")
    if h.role == "fileserver":
        share = rng.choice(["Users", "Finance", "Projects"])
        a.tree_connect(ctx, t + 0.01, s, share)
        ctx.add(
            b.sec5145(
                h,
                t + 0.02,
                s.logon,
                share,
                f"{user.name}\\Documents\\report-{rng.randrange(100)}.docx",
                0x120089,
            )
        )
    elif rng.random() < 0.5:
        a.tree_connect(ctx, t + 0.01, s, "IPC$")
        pipe = rng.choice(["srvsvc", "lsarpc", "samr", "wkssvc", "spoolss"])
        a.pipe_open(ctx, t + 0.02, s, pipe, mask=0x12019F)
        a.dce_rpc(
            ctx,
            t + 0.03,
            s,
            pipe,
            {
                "srvsvc": ["NetrShareEnum"],
                "lsarpc": ["LsarLookupSids"],
                "samr": ["SamrConnect5"],
                "wkssvc": ["NetrWkstaGetInfo"],
                "spoolss": ["RpcOpenPrinterEx"],
            }[pipe],
        )
    a.logoff(ctx, t + rng.uniform(1, 60), s)


def interactive_logon(ctx: Ctx, t: float, h: Host) -> None:
    user = ctx.rng.choice(ctx.world.users)
    lg = Logon(
        h.new_logon_id(), user, 2, "127.0.0.1", 0, h.name, "Negotiate", "00000000-0000-0000-0000-000000000000"
    )
    ctx.add(b.sec4624(h, t, lg))


def sc_query(ctx: Ctx, t: float, h: Host) -> None:
    admin = ctx.rng.choice(ctx.world.admins[:2])
    shell = a.operator_shell(ctx, t - 2, h, admin)
    a.child(ctx, t, h, shell, W32 + "sc.exe", "sc.exe  " + ctx.rng.choice(SC_QUERIES))


def scheduled_task(ctx: Ctx, t: float, h: Host) -> None:
    parent = h.core["netsvcs"]
    a.child(ctx, t, h, parent, W32 + "taskhostw.exe", "taskhostw.exe Install $(Arg0)")
    if ctx.rng.random() < 0.3:
        admin = ctx.world.admins[0]
        shell = a.operator_shell(ctx, t - 1, h, admin)
        a.child(ctx, t + 0.5, h, shell, W32 + "schtasks.exe", "schtasks.exe  /query /fo LIST /v")


def dns(ctx: Ctx, t: float, h: Host) -> None:
    p = h.core["netsvcs"] if ctx.rng.random() < 0.4 else _user_proc_parent(ctx, h, t)
    ctx.add(
        b.sysmon22(
            h,
            t,
            p,
            ctx.rng.choice(DOMAINS),
            f"::ffff:{ctx.rng.randrange(13, 200)}.107.21.{ctx.rng.randrange(1, 250)};",
        )
    )


def net_conn(ctx: Ctx, t: float, h: Host) -> None:
    p = _user_proc_parent(ctx, h, t)
    dst = f"{ctx.rng.randrange(13, 200)}.107.{ctx.rng.randrange(0, 250)}.{ctx.rng.randrange(1, 250)}"
    ctx.add(b.sysmon3(h, t, p, h.ip, ctx.port(), dst, 443, True, h.fqdn, ""))


def registry(ctx: Ctx, t: float, h: Host) -> None:
    rng = ctx.rng
    if rng.random() < 0.15:
        # start-type change of an ordinary service (7040 + Sysmon 13 by services.exe on ...\Start)
        old, new = rng.choice([("auto start", "demand start"), ("demand start", "auto start")])
        num = 2 if new == "auto start" else 3
        ctx.add(b.sysmon13(h, t, h.core["services"], b.SERVICES_KEY + "BITS\\Start", b.dword(num)))
        if h.registry_audit:
            ctx.add(
                b.sec4657(
                    h,
                    t,
                    h.core["services"],
                    b.SERVICES_KEY + "BITS",
                    "Start",
                    str(5 - num),
                    str(num),
                    "REG_DWORD",
                )
            )
        ctx.add(
            b.sys7040(h, t + 0.01, SYSTEM.sid, "Background Intelligent Transfer Service", old, new, "BITS")
        )
        return
    p = _user_proc_parent(ctx, h, t)
    sid = p.user.sid
    key = rng.choice(
        [
            f"HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\RecentDocs\\MRUListEx",
            f"HKU\\{sid}\\Software\\Microsoft\\Office\\16.0\\Common\\Roaming\\Identities\\LastSync",
            "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\"
            "LastOnlineScanTimeForAppCategory",
        ]
    )
    ctx.add(b.sysmon13(h, t, p, key, f"QWORD (0x{rng.getrandbits(32):08x}-0x{rng.getrandbits(32):08x})"))


def powershell(ctx: Ctx, t: float, h: Host) -> None:
    admin = ctx.world.admins[0]
    shell = a.operator_shell(ctx, t - 5, h, admin)
    ps = a.child(ctx, t - 2, h, shell, W32 + "WindowsPowerShell\\v1.0\\powershell.exe", "powershell.exe")
    ctx.add(b.ps4104(h, t, ps, ctx.rng.choice(PS_BENIGN)))


def sql_audit(ctx: Ctx, t: float, h: Host) -> None:
    rng = ctx.rng
    stmt, obj = rng.choice(
        [
            ("SELECT name FROM sys.databases", "databases"),
            ("EXEC sp_who2", "sp_who2"),
            ("SELECT @@VERSION", ""),
            ("EXEC msdb.dbo.sp_start_job N'Nightly backup'", "sp_start_job"),
        ]
    )
    ctx.add(
        b.mssql33205(
            h,
            t,
            rng.randrange(1, 10**6),
            rng.randrange(51, 300),
            "CORP\\svc-report",
            rng.choice(ctx.world.workstations()).ip,
            "SL" if stmt.startswith("SELECT") else "EX",
            obj,
            stmt,
        )
    )


# kind → (weight, function, host filter)
KINDS: list[tuple[str, float, Callable[[Ctx, float, Host], None], str]] = [
    ("user_process", 26, user_process, "workstation"),
    ("dns", 18, dns, "any"),
    ("net_conn", 10, net_conn, "any"),
    ("network_logon", 10, network_logon, "server"),
    ("registry", 9, registry, "any"),
    ("service_cycle", 6, service_cycle, "any"),
    ("interactive_logon", 2, interactive_logon, "workstation"),
    ("scheduled_task", 3, scheduled_task, "any"),
    ("sc_query", 1.5, sc_query, "any"),
    ("powershell", 1.5, powershell, "any"),
    ("sql_audit", 2, sql_audit, "sql"),
    ("system_install", 0.15, system_install, "any"),
]
AVG_EVENTS_PER_EPISODE = 2.6  # measured on the mix above; used to size the timeline
