"""Every audit check, positive and negative, on the fixture fleet and on small hand-built hosts."""

from __future__ import annotations

import pytest

from paths import FIXTURES
from scmwatch.audit.checks import (
    ASR_PSEXEC_WMI,
    CHECKS,
    asr_state,
    audit_host,
    check_asr,
    check_paths,
    check_scm,
    check_service_dacl,
)
from scmwatch.audit.load import AuditLog, load
from scmwatch.audit.model import AsrRule, Defender, HostData, PathAcl, Service
from scmwatch.audit.report import run_audit
from scmwatch.audit.sd import parse_sddl

FLEET = FIXTURES / "audit" / "fleet"


@pytest.fixture(scope="module")
def fleet():
    log = AuditLog()
    hosts = load([str(FLEET)], log)
    res = run_audit(hosts, len(log.problems), log.files_failed)
    return {hr.data.host: hr for hr in res.hosts}, res


def keys(hr) -> set[tuple[str, str]]:
    return {(f.check, f.target) for f in hr.findings}


def finding(hr, check, target):
    (f,) = [f for f in hr.findings if f.check == check and f.target == target]
    return f


# ---- M1026: service DACLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "host,svc,sev",
    [
        ("WS01", "WeakSvc", "critical"),  # CC..DC.. for AU, LocalSystem
        ("WS01", "GenericSvc", "high"),  # GW for BU maps to SERVICE_CHANGE_CONFIG; LocalService
        ("WS01", "AllowFirstSvc", "critical"),  # allow for IU stored before the deny for WD
        ("WS01", "NullDaclSvc", "high"),  # NULL DACL
        ("WS01", "FullSidSvc", "critical"),  # WRITE_DAC/WRITE_OWNER for a domain user by full SID
        ("WS02", "WeakSvc", "critical"),  # from the binary Security value, no ObjectName -> LocalSystem
        ("WS02", "InhSvc", "high"),  # inherited (ID) ACE in a binary descriptor still applies
        ("WS03", "WeakSvc", "critical"),  # from sc.exe sdshow text
    ],
)
def test_service_dacl_positive(fleet, host, svc, sev):
    f = finding(fleet[0][host], "AUD-M1026-001", svc)
    assert f.severity == sev and f.mitigation == "M1026"
    assert f.fix.startswith(f"sc.exe sdset {svc} ")
    # The proposed DACL really removes the problem.
    proposed = f.fix.split('"')[1]
    again = check_service_dacl(HostData("x"), Service(svc, sddl=proposed, account="LocalSystem"))
    assert again == []


@pytest.mark.parametrize(
    "host,svc",
    [
        ("WS01", "Spooler"),
        ("WS01", "DenyFirstSvc"),
        ("WS01", "ExecOnlySvc"),
        ("WS01", "InheritOnlySvc"),
        ("WS01", "acmedrv"),
        ("WS02", "DenyFirstSvc"),
        ("WS02", "Spooler"),
        ("WS03", "Spooler"),
        ("WS04", "Spooler"),
    ],
)
def test_service_dacl_negative(fleet, host, svc):
    assert ("AUD-M1026-001", svc) not in keys(fleet[0][host])


def test_service_dacl_evidence_names_principal_right_and_ace(fleet):
    f = finding(fleet[0]["WS01"], "AUD-M1026-001", "GenericSvc")
    assert (
        "BUILTIN\\Users" in f.evidence
        and "SERVICE_CHANGE_CONFIG" in f.evidence
        and "(A;;GW;;;BU)" in f.evidence
    )
    assert f.details["principals"][0]["sid"] == "S-1-5-32-545"


def test_services_without_dacl_data_are_not_guessed(fleet):
    hr = fleet[0]["WS01"]
    for svc in ("BadSddlSvc", "NoAccessSvc"):
        assert ("AUD-M1026-001", svc) not in keys(hr)
        assert hr.data.services[svc.lower()].sddl is None


# ---- M1026: SCM ------------------------------------------------------------------------------


def test_scm_create_service_via_generic_write_for_a_domain_group(fleet):
    f = finding(fleet[0]["WS01"], "AUD-M1026-002", "SCM")
    assert f.severity == "critical" and "SC_MANAGER_CREATE_SERVICE" in f.evidence and "-1105" in f.evidence
    proposed = f.fix.split('"')[1]
    assert check_scm(HostData("x", scm_sddl=proposed)) == []


def test_scm_default_dacl_is_clean(fleet):
    for host in ("WS04", "WS06"):
        assert not {c for c, _ in keys(fleet[0][host])} & {"AUD-M1026-002", "AUD-M1026-003"}
    assert ("AUD-M1026-003", "SCM") not in keys(fleet[0]["WS01"])  # AU: connect only


def test_scm_legacy_dacl_allows_remote_enumeration(fleet):
    f = finding(fleet[0]["WS03"], "AUD-M1026-003", "SCM")
    assert f.severity == "medium" and "SC_MANAGER_ENUMERATE_SERVICE" in f.evidence
    assert ("AUD-M1026-002", "SCM") not in keys(fleet[0]["WS03"])
    assert check_scm(HostData("x", scm_sddl=f.fix.split('"')[1])) == []


def test_scm_remote_create_service_is_high():
    (f,) = [
        f
        for f in check_scm(HostData("x", scm_sddl="D:(A;;KA;;;BA)(A;;CCDC;;;NU)"))
        if f.check == "AUD-M1026-003"
    ]
    assert f.severity == "high"


# ---- M1040 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "defender,state,sev",
    [
        (Defender(True, [AsrRule(ASR_PSEXEC_WMI, 1)]), "block", None),
        (Defender(True, [AsrRule(ASR_PSEXEC_WMI, 0)]), "disabled", "high"),
        (Defender(True, [AsrRule(ASR_PSEXEC_WMI, 2)]), "audit", "medium"),
        (Defender(True, [AsrRule(ASR_PSEXEC_WMI, 6)]), "warn", "medium"),
        (Defender(True, [AsrRule("9e6c4e1f-7d60-472f-ba1a-a39ef669e4b2", 1)]), "absent", "high"),
        (Defender(True, []), "absent", "high"),
        (Defender(True, [AsrRule(ASR_PSEXEC_WMI, 5)]), "action 5", "high"),
        (Defender(False, [], error="Get-MpPreference: not recognized"), "unavailable", "medium"),
        (None, "unknown", None),
    ],
)
def test_asr_rule_states(defender, state, sev):
    hd = HostData("h", defender=defender)
    assert asr_state(hd) == state
    found = check_asr(hd)
    if sev is None:
        assert found == []
    else:
        assert [f.severity for f in found] == [sev] and found[0].mitigation == "M1040"
        assert ASR_PSEXEC_WMI in found[0].fix


def test_asr_fleet_fixtures(fleet):
    hosts = fleet[0]
    assert asr_state(hosts["WS01"].data) == "audit"
    assert asr_state(hosts["WS04"].data) == "block"  # id written upper-case, read via policy registry
    assert asr_state(hosts["WS06"].data) == "absent"  # single rule written as an object, not a list
    assert asr_state(hosts["WS02"].data) == "unknown"  # a reg export says nothing about Defender


# ---- M1022 -----------------------------------------------------------------------------------


def test_binary_writable_positive(fleet):
    hr = fleet[0]["WS01"]
    tools = finding(hr, "AUD-M1022-001", "ToolsSvc")
    assert tools.severity == "critical" and "FILE_WRITE_DATA" in tools.evidence and "inherited" in tools.fix
    dll = finding(hr, "AUD-M1022-001", "DllHostSvc")
    assert (
        dll.details["kind"] == "service DLL" and dll.details["path"] == "C:\\Windows\\System32\\acmehost.dll"
    )
    upd = finding(hr, "AUD-M1022-001", "PublicUpd")
    assert "owner" in upd.evidence and "WRITE_DAC" in upd.evidence  # non-admin owner


@pytest.mark.parametrize(
    "svc", ["Spooler", "WeakSvc", "GenericSvc", "GoodApp", "DeniedSvc", "DefSvc", "acmedrv", "AcmeAgent"]
)
def test_binary_writable_negative(fleet, svc):
    assert ("AUD-M1022-001", svc) not in keys(fleet[0]["WS01"])


def test_directory_writable(fleet):
    hr = fleet[0]["WS01"]
    f = finding(hr, "AUD-M1022-002", "AcmeAgent")
    assert "C:\\Program Files\\Acme Tools" in f.evidence and "FILE_ADD_FILE" in f.evidence
    assert f.severity == "critical"
    for svc in ("Spooler", "GoodApp", "DeniedSvc", "DefSvc", "PublicUpd"):
        assert ("AUD-M1022-002", svc) not in keys(hr)


def test_root_folder_creation_right_is_not_file_creation(fleet):
    """C:\\ lets Authenticated Users create folders (LC) and has an inherit-only Modify ACE:
    C:\\Program.exe cannot be planted, so only the writable Acme Tools dir is reported."""
    f = finding(fleet[0]["WS01"], "AUD-M1022-003", "AcmeAgent")
    assert f.details["candidates"] == ["C:\\Program Files\\Acme Tools\\agent.exe"]
    assert f.severity == "critical" and f.fix.startswith(
        'sc.exe config AcmeAgent binPath= "\\"C:\\Program Files'
    )


def test_unquoted_path_without_acls_is_low_and_unverified(fleet):
    f = finding(fleet[0]["WS02"], "AUD-M1022-003", "AcmeUpd")
    assert f.severity == "low" and f.details["verified"] is False
    assert "C:\\Program.exe" in f.evidence


def test_quoted_or_spaceless_paths_are_not_unquoted_findings(fleet):
    hr = fleet[0]["WS01"]
    for svc in ("GoodApp", "Spooler", "WeakSvc", "ToolsSvc", "DefSvc"):
        assert ("AUD-M1022-003", svc) not in keys(hr)


def test_unquoted_path_whose_earlier_dirs_are_locked_down():
    hd = HostData(
        "x",
        paths={
            "c:\\": PathAcl("C:\\", "D:PAI(A;OICI;FA;;;BA)(A;OICIIO;SDGXGWGR;;;AU)(A;;LC;;;AU)"),
        },
    )
    svc = Service("S", image_path="C:\\Program Files\\App Dir\\app.exe", account="LocalSystem")
    # Candidates: C:\Program.exe (C:\ known, not writable) and C:\Program Files\App.exe (dir unknown).
    (f,) = [f for f in check_paths(hd, svc) if f.check == "AUD-M1022-003"]
    assert f.severity == "low" and f.details["candidates"] == ["C:\\Program Files\\App.exe"]
    hd.paths["c:\\program files"] = PathAcl(
        "C:\\Program Files", "D:PAI(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)"
    )
    assert [f for f in check_paths(hd, svc) if f.check == "AUD-M1022-003"] == []


def test_network_share(fleet):
    f = finding(fleet[0]["WS01"], "AUD-M1022-004", "NetAgent")
    assert f.severity == "high" and "\\\\fs01\\deploy" in f.evidence
    assert not [
        f
        for hr in fleet[0].values()
        for f in hr.findings
        if f.check == "AUD-M1022-004" and f.target != "NetAgent"
    ]


def test_user_writable_locations(fleet):
    assert finding(fleet[0]["WS01"], "AUD-M1022-005", "PublicUpd").severity == "high"
    assert finding(fleet[0]["WS03"], "AUD-M1022-005", "TempSvc").details["location"] == "a Temp directory"
    # ProgramData\Microsoft\Windows Defender is Microsoft's locked-down tree, not a user location.
    assert ("AUD-M1022-005", "DefSvc") not in keys(fleet[0]["WS01"])


def test_user_location_with_collected_acls_showing_no_write_is_low():
    locked = "O:BAG:SYD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)"
    p = "C:\\ProgramData\\Vendor\\bin\\v.exe"
    hd = HostData(
        "x",
        paths={
            k.lower(): PathAcl(k, locked)
            for k in (p, "C:\\ProgramData\\Vendor\\bin", "C:\\ProgramData\\Vendor", "C:\\ProgramData", "C:\\")
        },
    )
    (f,) = check_paths(hd, Service("V", image_path=p, account="LocalSystem"))
    assert f.check == "AUD-M1022-005" and f.severity == "low"
    (g,) = check_paths(HostData("y"), Service("V", image_path=p, account="LocalSystem"))
    assert g.severity == "high"


# ---- whole-host / fleet --------------------------------------------------------------------


def test_clean_host_has_no_findings(fleet):
    assert fleet[0]["WS04"].findings == []


def test_every_check_fires_somewhere_in_the_fixture_fleet(fleet):
    fired = {f.check for hr in fleet[0].values() for f in hr.findings}
    assert fired == set(CHECKS)


def test_findings_are_sorted_by_severity(fleet):
    order = ["critical", "high", "medium", "low", "info"]
    sev = [order.index(f.severity) for f in fleet[0]["WS01"].findings]
    assert sev == sorted(sev)


def test_fleet_view(fleet):
    fl = fleet[1].fleet
    assert fl["asr_not_blocking"] == {"absent": ["WS06"], "audit": ["WS01"], "unknown": ["WS02", "WS03"]}
    assert fl["asr_blocking"] == ["WS04"]
    weak = {(r["service"], r["check"]): r for r in fl["weak_services"]}
    everywhere = [k for k, r in weak.items() if r["everywhere"]]
    assert everywhere == [("WeakSvc", "AUD-M1026-001")]
    assert weak[("WeakSvc", "AUD-M1026-001")]["hosts"] == ["WS01", "WS02", "WS03"]
    # Spooler is on 5 hosts and weak on none; DenyFirstSvc on 2 and weak on none.
    assert not any(s in ("Spooler", "DenyFirstSvc") for s, _ in weak)
    assert fl["scm_create_service_by_non_admins"] == ["WS01"]


def test_audit_host_on_parsed_sd_matches_sddl_text():
    """Binary and text forms of one descriptor give the same findings."""
    from scmwatch.audit.sd import parse_binary, to_binary

    sddl = "O:SYG:SYD:(A;;GA;;;SY)(A;;RPWPDC;;;BU)"
    via_bin = parse_binary(to_binary(parse_sddl(sddl))).to_sddl()
    a = audit_host(HostData("a", services={"s": Service("S", sddl=sddl)}))
    b = audit_host(HostData("a", services={"s": Service("S", sddl=via_bin)}))
    assert [(f.check, f.severity, f.evidence) for f in a] == [(f.check, f.severity, f.evidence) for f in b]
    assert a and a[0].check == "AUD-M1026-001"


def test_owner_rights_ace_is_attributed_to_a_non_admin_owner():
    u = "S-1-5-21-1-2-3-1001"
    p = "C:\\Apps\\a.exe"
    hd = HostData("x", paths={"c:\\apps\\a.exe": PathAcl(p, f"O:{u}D:(A;;FA;;;SY)(A;;FW;;;OW)")})
    (f,) = [
        f
        for f in check_paths(hd, Service("A", image_path=p, account="LocalSystem"))
        if f.check == "AUD-M1022-001"
    ]
    assert "(A;;FW;;;OW)" in f.evidence and "implicit" not in f.evidence
    # OWNER RIGHTS granting only read removes the owner's implicit WRITE_DAC: nothing to report.
    hd.paths["c:\\apps\\a.exe"] = PathAcl(p, f"O:{u}D:(A;;FA;;;SY)(A;;FR;;;OW)")
    assert [f for f in check_paths(hd, Service("A", image_path=p)) if f.check == "AUD-M1022-001"] == []


def test_drivers_count_as_fully_privileged():
    drv = Service(
        "d",
        image_path="\\SystemRoot\\System32\\drivers\\d.sys",
        service_type=1,
        sddl="D:(A;;GA;;;SY)(A;;DC;;;BU)",
    )
    (f,) = check_service_dacl(HostData("x"), drv)
    assert f.severity == "critical" and "kernel driver" in f.evidence and "in the kernel" in f.fix
    own = Service(
        "o",
        image_path="C:\\x.exe",
        service_type=0x10,
        account="NT AUTHORITY\\LocalService",
        sddl="D:(A;;GA;;;SY)(A;;DC;;;BU)",
    )
    assert check_service_dacl(HostData("x"), own)[0].severity == "high"
