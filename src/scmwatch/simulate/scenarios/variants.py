"""Service-execution variants beyond the seed tools: BYOVD drivers, payloads smuggled through service
metadata (Tchopper), and an existing service re-pointed to an uploaded implant (SharpNoPSExec)."""

from __future__ import annotations

import base64

from scmwatch.detections import BINPATH, MITRE, NIMEXEC, ODDPATH, SVCCTL, VARIANT
from scmwatch.simulate import actions as a
from scmwatch.simulate import build as b
from scmwatch.simulate.actions import Ctx, Expect
from scmwatch.simulate.scenarios import scenario
from scmwatch.simulate.scenarios.sc_remote import EXISTING, _restore, _svcctl
from scmwatch.simulate.world import Host, rand_letters

DRIVERS = ["RTCore64.sys", "gdrv.sys", "dbutil_2_3.sys", "iqvw64e.sys", "AsIO3.sys"]


@scenario(
    "byovd-driver",
    "vulnerable driver loaded as a kernel service: dropped by a loader in a user folder, or from it",
    "local",
)
def byovd_driver(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """A loader run from C:\\Users\\Public either copies a signed vulnerable driver into
    System32\\drivers (TDL/Furutaka-style: the drop is the tell) or registers it where it unpacked it
    (KDU-style: the driver service's path is the tell), then starts the kernel service."""
    rng = ctx.rng
    op, shell = a.admin_shell(ctx, t, dst)
    driver = rng.choice(DRIVERS)
    folder = f"C:\\Users\\Public\\{rand_letters(rng, 6).lower()}"
    loader = a.child(ctx, t, dst, shell, f"{folder}\\loader.exe", f'"{folder}\\loader.exe" {driver}')
    name = driver.removesuffix(".sys")
    if rng.random() < 0.5:
        target = f"C:\\Windows\\System32\\drivers\\{driver}"
        ctx.add(b.sysmon11(dst, t + 0.2, loader, target), VARIANT)
        path, ex = f"\\??\\{target}", Expect()
    else:
        path = f"\\??\\{folder}\\{driver}"
        ex = Expect(e4697=(VARIANT, ODDPATH), e7045=(VARIANT, ODDPATH), e13=(VARIANT, ODDPATH))
    a.install_service(ctx, t + 0.5, dst, op, shell.logon_id, name, path, ex, stype="kernel mode driver",
                      account="")


def _chunks(rng, n: int) -> list[str]:
    """Base64 chunks of a random payload, as Tchopper cuts its encoded binary."""
    blob = base64.b64encode(rng.randbytes(n * 30)).decode()
    return [blob[i * 40:(i + 1) * 40] for i in range(n)]


@scenario(
    "tchopper",
    "payload smuggled in service display names over svcctl, read back by services (Tchopper)",
    "linux",
    duration=300.0,
)
def tchopper(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """Each service carries one base64 chunk as its display name; its ImagePath reads the chunk back
    (Get-Service ... -Expand DisplayName | Out-File -Append), so every start appends a chunk."""
    rng = ctx.rng
    admin = ctx.world.admins[2]
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation="-")
    a.tree_connect(ctx, t + 0.01, s, "IPC$")
    a.pipe_open(ctx, t + 0.02, s, "svcctl", SVCCTL, mask=0x3, expect_sysmon=(SVCCTL,))
    tt = a.dce_rpc(ctx, t + 0.03, s, "svcctl", ["OpenSCManagerW"])
    for i, chunk in enumerate(_chunks(rng, rng.randrange(4, 8)), 1):
        key = f"seg{i}"
        path = ("c:\\windows\\system32\\cmd.exe /c powershell -command \"Get-Service \"" + key
                + "\" | select -Expand DisplayName |out-file -append tmp_payload.txt\"")
        ex = Expect(e4697=(VARIANT, ODDPATH), e7045=(VARIANT, ODDPATH), e_proc=(MITRE, VARIANT))
        t1 = a.dce_rpc(ctx, tt, s, "svcctl", ["CreateServiceW", "StartServiceW"])
        t2 = a.install_service(ctx, t1, dst, admin, s.logon.logon_id, key, path, ex, display=chunk)
        _, tt = a.run_service(ctx, t2 + 0.05, dst, key, chunk, "C:\\Windows\\System32\\cmd.exe", path, ex,
                              is_service=False)
    a.logoff(ctx, tt + 1, s)
    ctx.expect_correlation(SVCCTL)


@scenario(
    "sharpnopsexec-implant",
    "SharpNoPSExec-style: an existing service re-pointed to an uploaded implant, started, restored",
    "linux",
    target="workstation",
)
def sharpnopsexec_implant(ctx: Ctx, t: float, src: Host, dst: Host) -> None:
    """No interpreter and no new service: the only start signal is services.exe running a program
    from C:\\Users\\Public, which Sysmon alone shows (the 785/1838 start step for implants)."""
    rng = ctx.rng
    admin = ctx.world.admins[2]
    s = a.smb_session(ctx, t, dst, src.ip, admin, "NTLM", workstation="-")
    implant = f"C:\\Users\\Public\\{rand_letters(rng, 7).lower()}.exe"
    a.file_write(ctx, t + 0.02, s, "C$", implant[3:], mask=0x2, local_path=implant)
    key, display, original = rng.choice(EXISTING)
    t1 = _svcctl(ctx, t + 0.05, s, ["OpenSCManagerW", "OpenServiceW", "QueryServiceConfigW",
                                   "ChangeServiceConfigW"])
    a.set_image_path(ctx, t1, dst, key, implant, ODDPATH, old=original)  # a user-writable ImagePath
    t2 = a.dce_rpc(ctx, t1 + 0.01, s, "svcctl", ["StartServiceW"])
    _, t3 = a.run_service(ctx, t2, dst, key, display, implant, implant, Expect(), is_service=False)
    t4 = a.dce_rpc(ctx, t3, s, "svcctl", ["ChangeServiceConfigW", "CloseServiceHandle"])
    _restore(ctx, t4, dst, key, original, implant)
    a.logoff(ctx, t4 + 0.2, s)
    ctx.expect_correlation(BINPATH, NIMEXEC)
