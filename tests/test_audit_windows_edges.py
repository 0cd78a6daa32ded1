"""Edge cases where the audit must read inputs and decide rights exactly as Windows does.

Each issue example is here as written: REGEDIT4 string data, '..' in paths and recycle bins,
default group memberships in the token, AppContainer SIDs, `sc qc` delayed start, lower-case SDDL,
plus real-world service and SCM DACLs (Windows defaults and the shapes privilege-escalation
write-ups exploit) and hostile inputs that must cost one problem line, never the run.
"""

from __future__ import annotations

import json

import pytest

from paths import FIXTURES
from scmwatch.audit import principals as P
from scmwatch.audit.checks import (
    SERVICE_DANGEROUS,
    audit_host,
    check_paths,
    check_scm,
    check_service_dacl,
    nonadmin_grants,
)
from scmwatch.audit.load import AuditLog, load
from scmwatch.audit.model import HostData, Service
from scmwatch.audit.paths import parse_image_path, user_writable_location
from scmwatch.audit.regfile import parse_reg, reg_to_host
from scmwatch.audit.sctext import sc_to_host
from scmwatch.audit.sd import SERVICE, parse_sddl
from scmwatch.cli import main

SERVICES_KEY = "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services"
RECYCLER_EXE = "C:\\winnt\\system32\\..\\..\\Recycler\\events.exe"


NUL = b"\0"


def _hex(data: bytes) -> str:
    return ",".join(f"{b:02x}" for b in data)


def regedit4(values: str, key: str = "Evt") -> bytes:
    return f"REGEDIT4\r\n\r\n[{SERVICES_KEY}\\{key}]\r\n{values}".encode("cp1252")


def regedit5(values: str, key: str = "Evt") -> bytes:
    text = f"Windows Registry Editor Version 5.00\r\n\r\n[{SERVICES_KEY}\\{key}]\r\n{values}"
    return b"\xff\xfe" + text.encode("utf-16-le")


# ---- 1. .reg string data by header; '..' and recycle bins ------------------------------------


def test_regedit4_expand_sz_is_single_byte_ansi_and_the_recycler_path_is_flagged():
    data = regedit4(
        '"Type"=dword:00000010\r\n"Start"=dword:00000002\r\n'
        f'"ImagePath"=hex(2):{_hex(RECYCLER_EXE.encode() + NUL)}\r\n'
    )
    hd = reg_to_host(data, "NT4BOX.reg")
    assert not hd.errors
    svc = hd.services["evt"]
    assert svc.image_path == RECYCLER_EXE  # not '㩃睜湩...'
    (f,) = [f for f in audit_host(hd) if f.check == "AUD-M1022-005"]
    assert f.details == {"path": "C:\\Recycler\\events.exe", "location": "the recycle bin"}
    assert f.severity == "high"  # LocalSystem (no ObjectName), ACLs unknown


def test_regedit4_multi_sz_and_ansi_bytes_above_127():
    data = regedit4(
        f'"DependOnService"=hex(7):{_hex(NUL.join([b"RPCSS", b"LanmanServer", b"", b""]))}\r\n'
        f'"DisplayName"=hex(1):{_hex("Ereignisprotokoll für Müller".encode("cp1252") + NUL)}\r\n'
        '"Note"="caf\xe9"\r\n'
    )
    vals = parse_reg(data).keys[f"{SERVICES_KEY}\\Evt"]
    assert vals["DependOnService"].data == ["RPCSS", "LanmanServer"]
    assert vals["DisplayName"].data == "Ereignisprotokoll für Müller"
    assert vals["Note"].data == "café"


def test_version5_expand_sz_stays_utf16():
    path = "C:\\Program Files\\Vendor\\v.exe"
    data = regedit5(
        f'"Type"=dword:00000010\r\n"ImagePath"=hex(2):{_hex(path.encode("utf-16-le") + NUL * 2)}\r\n'
    )
    assert reg_to_host(data, "h.reg").services["evt"].image_path == path


@pytest.mark.parametrize(
    "make,data,message",
    [
        # The issue's failure the other way round: ANSI bytes under the Unicode header.
        (regedit5, (RECYCLER_EXE + "\0").encode(), "single-byte text, not UTF-16LE"),
        (regedit5, "C:\\x.exe".encode("utf-16-le")[:-1], "odd number of bytes"),
        (regedit5, b"\x00\xd8\x41\x00\x00\x00", "unpaired surrogate"),
        (regedit4, "C:\\x.exe\0".encode("utf-16-le"), "text after its NUL"),
    ],
)
def test_undecodable_string_data_is_an_input_error_and_no_path_is_checked(make, data, message):
    hd = reg_to_host(make(f'"Type"=dword:00000010\r\n"ImagePath"=hex(2):{_hex(data)}\r\n'), "h.reg")
    assert len(hd.errors) == 1 and message in hd.errors[0] and "line 5" in hd.errors[0]
    svc = hd.services["evt"]
    assert svc.image_path is None
    assert check_paths(hd, svc) == []


def test_reg_problem_reaches_the_audit_log(tmp_path):
    bad = (RECYCLER_EXE + "\0").encode()
    (tmp_path / "H1.reg").write_bytes(
        regedit5(f'"Type"=dword:00000010\r\n"ImagePath"=hex(2):{_hex(bad)}\r\n')
    )
    log = AuditLog()
    (hd,) = load([str(tmp_path)], log)
    assert [m for _, m in log.problems] == [hd.errors[0]] and "UTF-16LE" in hd.errors[0]


@pytest.mark.parametrize(
    "path,where",
    [
        (RECYCLER_EXE, "the recycle bin"),
        ("C:\\$Recycle.Bin\\S-1-5-21-1-2-3-1001\\$R0X1Y2Z.exe", "the recycle bin"),
        ("D:\\RECYCLER\\S-1-5-21-1-2-3-1001\\Dc1.exe", "the recycle bin"),
        ("C:\\Windows\\System32\\..\\..\\Users\\Public\\x.exe", "a user profile (\\Users)"),
        ("C:/ProgramData/Vendor/../Vendor/bin/v.exe", "a ProgramData subfolder"),
        ("C:\\Windows\\System32\\.\\..\\Temp\\t.exe", "a Temp directory"),
        ("C:\\Users\\..\\Windows\\System32\\svchost.exe", None),
        ("C:\\Program Files\\Recycler\\tool.exe", None),  # a folder named so, not a volume's bin
        ("C:\\Windows\\System32\\spool\\drivers\\color\\x.exe", "a user-writable folder under \\Windows"),
        ("C:\\WINDOWS\\Tasks\\..\\Tasks\\t.exe", "a user-writable folder under \\Windows"),
        ("C:\\Windows\\System32\\spool\\drivers\\x64\\3\\pd.dll", None),  # printer drivers: admin-only
    ],
)
def test_user_writable_location_resolves_dotdot(path, where):
    assert user_writable_location(path) == where


def test_image_path_executable_and_candidates_are_normalised():
    ip = parse_image_path("C:\\Program Files\\..\\Acme Tools\\agent svc.exe -run")
    assert ip.executable == "C:\\Acme Tools\\agent svc.exe"
    assert ip.hijack_candidates == ["C:\\Program.exe", "C:\\Acme.exe", "C:\\Acme Tools\\agent.exe"]


# ---- 2. token membership ---------------------------------------------------------------------

ISSUE_DENY_BU = "D:(A;;GA;;;SY)(A;;GA;;;BA)(D;;DCWDWO;;;BU)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;AU)"


def test_deny_on_users_before_allow_on_authenticated_users_is_not_a_finding():
    assert check_service_dacl(HostData("x"), Service("S", sddl=ISSUE_DENY_BU, account="LocalSystem")) == []


def test_every_token_holding_authenticated_users_or_interactive_holds_users():
    for t in P.TOKENS:
        if P.AUTHENTICATED_USERS in t.sids or P.INTERACTIVE in t.sids:
            assert P.USERS in t.sids, t.name
    assert P.EVERYONE not in P.ANONYMOUS_TOKEN.sids


@pytest.mark.parametrize(
    "sddl,principal,tokens",
    [
        # Deny for INTERACTIVE first: the interactive logons lose the right, the others keep it.
        (
            "D:(A;;GA;;;SY)(D;;DC;;;IU)(A;;DC;;;BU)",
            "BUILTIN\\Users",
            ["network", "batch", "service", "LocalService", "NetworkService"],
        ),
        # Deny for NETWORK first: only the network logon loses it.
        (
            "D:(D;;DC;;;NU)(A;;DC;;;AU)",
            "NT AUTHORITY\\Authenticated Users",
            ["interactive", "remote desktop", "batch", "service", "LocalService", "NetworkService"],
        ),
        # Everyone reaches guests, not anonymous (EveryoneIncludesAnonymous is off by default).
        ("D:(A;;DC;;;WD)", "Everyone", [t.name for t in P.TOKENS if t.name != "anonymous"]),
        ("D:(A;;DC;;;AN)", "NT AUTHORITY\\ANONYMOUS LOGON", ["anonymous"]),
        ("D:(A;;WD;;;BG)", "BUILTIN\\Guests", ["guest interactive", "guest network"]),
        ("D:(A;;DC;;;LS)", "NT AUTHORITY\\LOCAL SERVICE", ["LocalService"]),
        ("D:(A;;DC;;;S-1-5-3)", "S-1-5-3", ["batch"]),
        # A group membership is in every logon of its member, not only the remote desktop one.
        ("D:(A;;DC;;;RD)", "BUILTIN\\Remote Desktop Users", [t.name for t in P.USER_TOKENS]),
        # A user by SID: every ordinary logon of that user.
        ("D:(A;;DC;;;S-1-5-21-1-2-3-1001)", "S-1-5-21-1-2-3-1001", [t.name for t in P.USER_TOKENS]),
    ],
)
def test_finding_names_the_tokens_that_get_the_right(sddl, principal, tokens):
    (f,) = check_service_dacl(HostData("x"), Service("S", sddl=sddl, account="LocalSystem"))
    (p,) = f.details["principals"]
    assert p["name"] == principal and p["tokens"] == tokens
    assert f"(tokens: {P.describe_tokens(tokens)})" in f.evidence


def test_every_user_logon_is_summarised_in_the_evidence():
    (f,) = check_service_dacl(HostData("x"), Service("S", sddl="D:(A;;DC;;;AU)", account="LocalSystem"))
    assert "(tokens: every user logon)" in f.evidence


# ---- 3. AppContainer and capability SIDs ------------------------------------------------------


@pytest.mark.parametrize(
    "sddl",
    [
        "D:(A;;GA;;;SY)(A;;GA;;;BA)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;AC)",
        "D:(A;;GA;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;S-1-15-2-1)",
        "D:(A;;GA;;;SY)(A;;DCWDWO;;;S-1-15-2-1861897761-1695161497-2927542615-642690995-327840285-2659745135-2630312742)",
        "D:(A;;GA;;;SY)(A;;DC;;;S-1-15-3-1024-528118966-3876874398-709513571-1907873084-3598227634-3698730060-278077788-3990600205)",
    ],
)
def test_an_ace_only_for_appcontainer_or_capability_sids_is_not_a_finding(sddl):
    assert check_service_dacl(HostData("x"), Service("S", sddl=sddl, account="LocalSystem")) == []
    assert check_scm(HostData("x", scm_sddl=sddl.replace("DCWDWO", "CCDC"))) == []


# ---- 4. sc qc start type; lower-case SDDL ------------------------------------------------------

QC = """[SC] QueryServiceConfig SUCCESS

SERVICE_NAME: wuauserv
        TYPE               : 20  WIN32_SHARE_PROCESS
        START_TYPE         : {start}
        ERROR_CONTROL      : 1   NORMAL
        BINARY_PATH_NAME   : C:\\Windows\\system32\\svchost.exe -k netsvcs -p
        LOAD_ORDER_GROUP   :
        TAG                : 0
        DISPLAY_NAME       : Windows Update
        DEPENDENCIES       : rpcss
        SERVICE_START_NAME : LocalSystem
"""


@pytest.mark.parametrize(
    "start,kind,delayed",
    [
        ("2   AUTO_START  (DELAYED)", "Auto", True),
        ("2   AUTO_START", "Auto", False),
        ("3   DEMAND_START", "Manual", False),
        ("4   DISABLED", "Disabled", False),
        ("1   SYSTEM_START", "System", False),
        ("0   BOOT_START", "Boot", False),
        ("AUTO_START", "Auto", False),
    ],
)
def test_sc_qc_start_type_is_the_number_and_delayed_is_its_own_attribute(start, kind, delayed):
    svc = sc_to_host(QC.format(start=start), "WS9.qc.txt").services["wuauserv"]
    assert svc.start_type == kind and svc.delayed_auto_start is delayed


def test_reg_delayed_autostart_value():
    data = regedit5(
        '"Type"=dword:00000020\r\n"Start"=dword:00000002\r\n"DelayedAutostart"=dword:00000001\r\n'
    )
    svc = reg_to_host(data, "h.reg").services["evt"]
    assert svc.start_type == "Auto" and svc.delayed_auto_start is True


def test_lower_case_sddl_is_read_like_upper_case():
    lower = "d:(a;;ga;;;sy)(a;;ga;;;ba)(d;;dcwdwo;;;bu)(a;;ccdclcswrpwpdtlocrsdrcwdwo;;;au)"
    assert parse_sddl(lower).to_sddl() == ISSUE_DENY_BU
    weak = "o:syg:syd:pai(a;id;ccdclc;;;au)s:(au;fa;ga;;;wd)"
    assert parse_sddl(weak).to_sddl() == "O:SYG:SYD:PAI(A;ID;CCDCLC;;;AU)S:(AU;FA;GA;;;WD)"
    assert parse_sddl("d:no_access_control").dacl is None


def test_lower_case_sdshow_output_is_found_in_sc_text_and_audited():
    text = (
        "C:\\> sc sdshow WeakSvc\n\nd:(a;;cclcswrpwpdtlocrrc;;;sy)(a;;ccdclc;;;au)\n\n"
        "C:\\> sc sdshow scmanager\n\nd:\n"
    )
    hd = sc_to_host(text, "WS9.sc.txt")
    assert hd.scm_sddl == "d:"
    (f,) = check_service_dacl(hd, hd.services["weaksvc"])
    assert "SERVICE_CHANGE_CONFIG" in f.evidence


# ---- real-world DACLs --------------------------------------------------------------------------

# Windows' own defaults and the shapes published privilege-escalation write-ups exploit.
REAL_SERVICE_DACLS = [
    # CreateService default (sc create / most installers), Windows 10/11.
    (
        "D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWLOCRRC;;;IU)(A;;CCLCSWLOCRRC;;;SU)",
        [],
    ),
    # Print Spooler, Windows 10.
    ("D:(A;;CCLCSWLOCRRC;;;AU)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWRPWPDTLOCRRC;;;SY)", []),
    # Windows Update / BITS: Power Users may start and stop, not reconfigure.
    (
        "D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWLOCRRC;;;AU)"
        "(A;;CCLCSWRPWPDTLOCRRC;;;PU)",
        [],
    ),
    # A per-service SID and TrustedInstaller with full control are not non-admins.
    (
        "D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWLOCRRC;;;IU)"
        "(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464)",
        [],
    ),
    # XP SP0/SP1 upnphost / SSDPSRV: Authenticated Users with SERVICE_ALL_ACCESS.
    (
        "D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)"
        "(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;AU)",
        ["S-1-5-11"],
    ),
    # The 'daclsvc' training-lab shape: one local user may change the configuration.
    (
        "D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWLOCRRC;;;IU)"
        "(A;;CCLCSWLOCRRC;;;SU)(A;;DCRPWPRC;;;S-1-5-21-3025105784-3259396213-1915610826-1001)",
        ["S-1-5-21-3025105784-3259396213-1915610826-1001"],
    ),
    # Vendor agent installed with Everyone full control.
    ("D:(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;WD)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)", ["S-1-1-0"]),
    # Interactive users may rewrite the DACL (WRITE_DAC only).
    ("D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;RCWD;;;IU)", ["S-1-5-4"]),
]


@pytest.mark.parametrize("sddl,principals", REAL_SERVICE_DACLS)
def test_real_service_dacls(sddl, principals):
    grants = nonadmin_grants(parse_sddl(sddl), SERVICE, SERVICE_DANGEROUS)
    assert [g.sid for g in grants] == principals


def test_scm_defaults_and_anonymous_remote_access():
    win10 = (
        "D:(A;;CC;;;AU)(A;;CCLCRPRC;;;IU)(A;;CCLCRPRC;;;SU)(A;;CCLCRPWPRC;;;SY)(A;;KA;;;BA)(A;;CC;;;AC)"
        "(A;;CC;;;S-1-15-3-1024-528118966-3876874398-709513571-1907873084-3598227634-3698730060-278077788-"
        "3990600205)S:(AU;FA;KA;;;WD)(AU;OIIOFA;GA;;;WD)"
    )
    assert check_scm(HostData("x", scm_sddl=win10)) == []
    (f,) = check_scm(HostData("x", scm_sddl="D:(A;;KA;;;BA)(A;;CC;;;AU)(A;;CCLC;;;AN)"))
    assert f.check == "AUD-M1026-003" and f.details["tokens"] == {
        "anonymous": ["SC_MANAGER_ENUMERATE_SERVICE"]
    }


# ---- hostile inputs (one problem line each, other hosts still audited) ---------------------------


def test_hostile_snapshots_and_reg_cost_one_line_each(tmp_path, capsys):
    good = dict(json.loads((FIXTURES / "audit" / "fleet" / "WS04.scmwatch.json").read_text()), errors=[])

    def snapshot(name: str, **changes) -> str:
        return json.dumps(dict(good, host=dict(good["host"], name=name), **changes))

    head = '{"schema": "scmwatch.audit.snapshot", "schema_version": 1, "host": {"name": "D"}, "errors": '
    (tmp_path / "deep.json").write_text(head + "[" * 100_000 + "]" * 100_000 + "}")
    rules = [{"id": "d1e49aac-8f56-4280-b9ba-993a6d77406c", "action": 424242}]
    text = snapshot("BIGINT", defender=dict(good["defender"], asr_rules=rules))
    (tmp_path / "bigint.json").write_text(text.replace("424242", "9" * 5000))
    services = [dict(good["services"][0], service_type=10**300), *good["services"][1:]]
    (tmp_path / "typed.json").write_text(snapshot("TYPED", services=services))
    (tmp_path / "R1.reg").write_bytes(
        regedit5('"Type"=dword:00000010\r\n"Start"=dword:' + "f" * 5000 + "\r\n")
    )
    (tmp_path / "nan.json").write_text(
        snapshot("NAN").replace('"schema_version": 1', '"schema_version": NaN')
    )
    code = main(["audit", str(tmp_path), "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert code == 0
    hosts = {json.loads(line)["host"] for line in out.splitlines() if '"type": "host"' in line}
    assert hosts == {"BIGINT", "TYPED", "R1"}
    lines = err.splitlines()
    for name, message in [
        ("deep.json", "nested too deeply"),
        ("bigint.json", "defender.asr_rules[0]: expected a 32-bit number, got a number with 5000 digits"),
        ("typed.json", "services[0]: expected a 32-bit number, got a number with 301 digits"),
        ("R1.reg", "bad dword"),
        ("nan.json", "NaN is not JSON"),
    ]:
        (hit,) = [line for line in lines if name in line]
        assert message in hit and len(hit) < 300, hit
    assert "Traceback" not in err


def test_lone_surrogate_in_a_snapshot_is_replaced_and_counted(tmp_path, capsys):
    doc = json.loads((FIXTURES / "audit" / "fleet" / "WS04.scmwatch.json").read_text())
    doc["errors"] = []
    doc["services"][0].update(name="Weak\ud800", sddl="D:(A;;DC;;;AU)", image_path="C:\\x.exe")
    (tmp_path / "s.json").write_text(json.dumps(doc))
    for fmt in ("table", "jsonl", "html"):
        assert main(["audit", str(tmp_path), "--format", fmt]) == 0
        out, err = capsys.readouterr()
        assert "Weak\ufffd" in out or "Weak&#xfffd;" in out or "Weak\\ufffd" in out
        assert "encoding: 1 string(s) with a lone UTF-16 surrogate" in err


# ---- odd fleet output: sizes and shapes no Windows host writes ---------------------------------


@pytest.mark.parametrize(
    "sddl,message",
    [
        ("D:(A;;" + "9" * 5000 + ";;;AU)", "not a 32-bit access mask"),
        ("D:(A;;0x100000000;;;AU)", "not a 32-bit access mask"),
        ("D:(A;;DC;;;S-1-5-21-1-2-3-" + "9" * 5000 + ")", "unknown SID"),
        ("D:(A;;DC;;;S-1-5-21-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15)", "unknown SID"),  # 16 sub-authorities
        ("D:(A;;DC;;;S-1-5-\u0663\u0662-544)", "unknown SID"),  # Arabic-Indic digits
    ],
)
def test_out_of_range_rights_and_sids_are_sddl_errors_with_short_messages(sddl, message):
    from scmwatch.audit.sd import SDError

    with pytest.raises(SDError) as exc:
        parse_sddl(sddl)
    assert message in str(exc.value) and len(str(exc.value)) < 160


def test_sids_are_read_in_canonical_form():
    sd = parse_sddl("D:(A;;DC;;;S-1-5-32-0544)(A;;DC;;;s-1-0x000000000005-11)")
    assert [a.sid for a in sd.dacl.aces] == ["S-1-5-32-544", "S-1-5-11"]
    assert nonadmin_grants(sd, SERVICE, SERVICE_DANGEROUS)[0].sid == "S-1-5-11"  # BA is not a finding


def test_wrapped_hex_value_is_joined_in_linear_time():
    """A 4 MB hex value over 50,000 continuation lines (took 5 s for 3 MB when re-joined per line)."""
    import time

    rows = ",\\\r\n  ".join(",".join(["00"] * 25) for _ in range(50_000))
    rf = parse_reg(regedit5(f'"Blob"=hex:{rows}\r\n'))
    t0 = time.process_time()
    rf = parse_reg(regedit5(f'"Blob"=hex:{rows}\r\n'))
    assert time.process_time() - t0 < 3
    assert len(rf.keys[f"{SERVICES_KEY}\\Evt"]["Blob"].data) == 1_250_000


def test_interception_candidates_stop_at_max_path():
    ip = parse_image_path("C:\\" + "a " * 5000 + "x.exe")
    assert len(ip.hijack_candidates) == 126 and all(len(c) < 260 for c in ip.hijack_candidates)


def test_impossibly_long_paths_are_refused_per_item(tmp_path):
    doc = json.loads((FIXTURES / "audit" / "fleet" / "WS04.scmwatch.json").read_text())
    doc["errors"] = []
    doc["services"][0]["image_path"] = "C:" + "\\a" * 20_000 + "\\x.exe"
    doc["paths"].append({"path": "C:" + "\\b" * 20_000, "sddl": "D:(A;;FA;;;WD)", "is_dir": True})
    (tmp_path / "long.json").write_text(json.dumps(doc))
    log = AuditLog()
    (hd,) = load([str(tmp_path)], log)
    msgs = [m for _, m in log.problems]
    assert len(msgs) == 2 and all("longer than any Windows path" in m and len(m) < 200 for m in msgs)
    assert hd.services[doc["services"][0]["name"].lower()].image_path is None
    audit_host(hd)


def test_output_that_is_an_input_is_refused_and_the_report_is_written_atomically(tmp_path, capsys):
    snap = tmp_path / "in" / "WS04.json"
    snap.parent.mkdir()
    snap.write_bytes((FIXTURES / "audit" / "fleet" / "WS04.scmwatch.json").read_bytes())
    before = snap.read_bytes()
    assert main(["audit", str(snap), "-o", str(snap)]) == 2
    assert "is the input" in capsys.readouterr().err and snap.read_bytes() == before
    (snap.parent / "old-report.json").write_text("{}")  # would be read as an input next time
    assert main(["audit", str(snap.parent), "-o", str(snap.parent / "old-report.json")]) == 2
    assert "lies inside the input directory" in capsys.readouterr().err
    (snap.parent / "old-report.json").unlink()
    report = tmp_path / "report.html"
    assert main(["audit", str(snap), "-o", str(report), "--format", "html"]) == 0
    assert report.read_text().startswith("<!DOCTYPE html>") and sorted(
        p.name for p in tmp_path.iterdir()
    ) == [
        "in",
        "report.html",
    ]


def test_symlink_loop_and_fifo_are_named_not_read(tmp_path, capsys):
    import os

    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    os.mkfifo(tmp_path / "pipe.json")
    log = AuditLog()
    assert load([str(tmp_path / "loop.json"), str(tmp_path)], log) == []
    msgs = sorted(m for _, m in log.problems)
    assert msgs == ["not a regular file, skipped", "symlink loop"]


@pytest.mark.parametrize("name", ["WS04.scmwatch.json", "WS02.reg", "WS03.sc.txt"])
def test_utf16_inputs_that_lost_their_bom_are_still_read(tmp_path, name):
    raw = (FIXTURES / "audit" / "fleet" / name).read_bytes()
    text = raw[2:].decode("utf-16-le") if raw.startswith(b"\xff\xfe") else raw.decode("utf-8")
    for data in (text.encode("utf-16-le"), b"\xfe\xff" + text.encode("utf-16-be")):
        (tmp_path / name).write_bytes(data)
        log = AuditLog()
        (hd,) = load([str(tmp_path / name)], log)
        assert hd.services and not any("decode" in m or "unrecognised" in m for _, m in log.problems)


def test_asr_rule_flattened_by_convertto_json_is_reported_not_skipped():
    from scmwatch.audit.snapshot import read_snapshot

    doc = json.loads((FIXTURES / "audit" / "fleet" / "WS04.scmwatch.json").read_text())
    doc["errors"] = []
    doc["defender"]["asr_rules"] = ["@{id=d1e49aac-8f56-4280-b9ba-993a6d77406c; action=1}"]
    hd = read_snapshot(json.dumps(doc).encode(), "x.json")
    assert hd.errors == [
        "defender.asr_rules[0]: expected an object with an id, "
        "got '@{id=d1e49aac-8f56-4280-b9ba-993a6d7740..."
    ]


def test_whole_hive_export_uses_the_current_control_set_only():
    def key(mount: str, cs: str, name: str, image: str) -> str:
        return (
            f"[HKEY_LOCAL_MACHINE\\{mount}\\{cs}\\Services\\{name}]\r\n"
            f'"Type"=dword:00000010\r\n"ImagePath"="{image}"\r\n\r\n'
        )

    body = (
        "Windows Registry Editor Version 5.00\r\n\r\n"
        + key("OFFLINE", "ControlSet001", "Svc", "C:\\\\Users\\\\Public\\\\old.exe")
        + key("OFFLINE", "ControlSet002", "Svc", "C:\\\\Program Files\\\\V\\\\svc.exe")
        + '[HKEY_LOCAL_MACHINE\\OFFLINE\\Select]\r\n"Current"=dword:00000002\r\n'
    )
    hd = reg_to_host(b"\xff\xfe" + body.encode("utf-16-le"), "OFF1.reg")
    assert hd.services["svc"].image_path == "C:\\Program Files\\V\\svc.exe"
    no_select = body[: body.index("[HKEY_LOCAL_MACHINE\\OFFLINE\\Select]")]
    hd = reg_to_host(b"\xff\xfe" + no_select.encode("utf-16-le"), "OFF1.reg")
    assert hd.services["svc"].image_path == "C:\\Users\\Public\\old.exe"  # the lowest-numbered set


def test_reg_export_without_service_keys_is_refused_with_a_reason(tmp_path):
    body = 'Windows Registry Editor Version 5.00\r\n\r\n[HKEY_CURRENT_USER\\Software\\X]\r\n"a"="b"\r\n'
    (tmp_path / "hkcu.reg").write_bytes(b"\xff\xfe" + body.encode("utf-16-le"))
    log = AuditLog()
    assert load([str(tmp_path)], log) == []
    assert [m for _, m in log.problems] == [
        "no service keys (HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\...) in this export"
    ]


def test_sc_text_with_a_nameless_service_or_an_absurd_type_reports_the_line():
    text = (
        "SERVICE_NAME: x\n  TYPE : " + "f" * 5000 + " X\n  BINARY_PATH_NAME : C:\\x.exe\n"
        "SERVICE_NAME:\n  BINARY_PATH_NAME : C:\\Users\\y.exe\n"
    )
    hd = sc_to_host(text, ".sc.txt")
    assert hd.host == ".sc.txt" and list(hd.services) == ["x"] and hd.services["x"].service_type is None
    assert hd.errors == [
        "line 2: x: TYPE 'ffffffffffffffffffff' is not a service type",
        "line 4: SERVICE_NAME without a name; its fields are skipped",
    ]


@pytest.mark.parametrize(
    "image,check",
    [
        ('"\\\\?\\UNC\\fileserver\\tools\\agent.exe" -run', "AUD-M1022-004"),
        ("\\??\\UNC\\fileserver\\drivers\\x.sys", "AUD-M1022-004"),
        ('"\\\\?\\C:\\Users\\Public\\upd.exe"', "AUD-M1022-005"),
        ("\\\\.\\C:\\Windows\\Temp\\..\\..\\RECYCLER\\x.exe", "AUD-M1022-005"),
    ],
)
def test_device_namespace_paths_are_checked_as_the_plain_path(image, check):
    (f,) = check_paths(HostData("x"), Service("S", image_path=image, account="NT AUTHORITY\\LocalSystem"))
    assert f.check == check
    assert f.severity == ("critical" if check == "AUD-M1022-004" else "high")  # LocalSystem either way
    assert not f.details["path"].startswith(("\\\\?", "\\\\.", "\\??"))


def test_collected_acl_under_a_long_path_prefix_is_found():
    from scmwatch.audit.model import PathAcl
    from scmwatch.audit.snapshot import path_key

    writable = "D:(A;;FA;;;SY)(A;;0x1301bf;;;AU)"
    p = "C:\\Apps\\a.exe"
    hd = HostData("x", paths={})
    for raw in ("\\\\?\\C:\\Apps\\a.exe", "c:/apps/./a.exe"):
        hd.paths = {path_key(raw): PathAcl(raw, writable)}
        assert [f.check for f in check_paths(hd, Service("A", image_path=p))] == ["AUD-M1022-001"]


def test_the_newest_snapshot_of_a_host_wins_over_older_days_in_sorted_folders(tmp_path, capsys):
    doc = dict(json.loads((FIXTURES / "audit" / "fleet" / "WS04.scmwatch.json").read_text()), errors=[])
    weak = [dict(doc["services"][0], sddl="D:(A;;GA;;;SY)(A;;DC;;;AU)", account="LocalSystem")]
    days = {
        "2026-11-20": (weak, "2026-11-20T09:15:00Z"),
        "2026-11-21": (doc["services"], "2026-11-21T09:15:00Z"),
    }
    for day, (services, stamp) in days.items():
        (tmp_path / day).mkdir()
        (tmp_path / day / "WS04.scmwatch.json").write_text(
            json.dumps(dict(doc, services=services, collected_at=stamp))
        )
    svc = doc["services"][1]["name"]
    (tmp_path / "WS04.reg").write_bytes(regedit5('"Type"=dword:00000010\r\n', key="OnlyInReg"))
    log = AuditLog()
    (hd,) = load([str(tmp_path)], log)
    assert (
        hd.collected_at == "2026-11-21T09:15:00Z"
        and "onlyinreg" in hd.services
        and svc.lower() in hd.services
    )
    assert log.problems == [] and len(log.notes) == 1 and "older snapshot of WS04" in log.notes[0][1]
    assert not [f for f in audit_host(hd) if f.check == "AUD-M1026-001"]
    assert main(["audit", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "older snapshot of WS04 (collected 2026-11-20T09:15:00Z) left out" in err and "problem" not in err


def test_snapshot_field_spellings_and_sizes_a_fleet_produces(tmp_path):
    from scmwatch.audit.checks import asr_state

    doc = json.loads((FIXTURES / "audit" / "fleet" / "WS04.scmwatch.json").read_text())
    doc.update(host=dict(doc["host"], name=" WS04\r\n"), errors=["x" * 100_000])
    doc["defender"] = dict(doc["defender"], available="True")
    (tmp_path / "a.json").write_text(json.dumps(doc))
    log = AuditLog()
    (hd,) = load([str(tmp_path / "a.json")], log)
    assert hd.host == "WS04" and asr_state(hd) == "block"
    ((_, msg),) = log.problems
    assert msg.startswith("collector: xxx") and msg.endswith("... (100011 characters)") and len(msg) < 1100
    doc["defender"]["available"] = "maybe"
    (tmp_path / "a.json").write_text(json.dumps(doc))
    log = AuditLog()
    (hd,) = load([str(tmp_path / "a.json")], log)
    assert asr_state(hd) == "unavailable" and any(
        "defender.available: expected true or false" in m for _, m in log.problems
    )
