"""Audit inputs: collector snapshots, UTF-16 reg exports, sc.exe text, bad files, the collector script."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from paths import FIXTURES
from scmwatch.audit import snapshot as S
from scmwatch.audit.load import AuditLog, load, read_one
from scmwatch.audit.regfile import parse_reg, reg_to_host
from scmwatch.audit.sctext import sc_to_host
from scmwatch.audit.sd import parse_sddl
from scmwatch.cli.audit import collector_script

AUD = FIXTURES / "audit"
FLEET = AUD / "fleet"
BAD = AUD / "bad"


def _gen():
    spec = importlib.util.spec_from_file_location("audit_make_fixtures", AUD / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _gen()


def test_committed_fixtures_are_what_the_generator_writes(tmp_path):
    written = GEN.write_all(tmp_path)
    assert written
    for p in written:
        committed = AUD / p.relative_to(tmp_path)
        assert committed.read_bytes() == p.read_bytes(), f"{committed} is stale: rerun make_fixtures.py"


# ---- .reg -----------------------------------------------------------------------------------


def test_reg_fixture_is_utf16le_with_bom_and_wrapped_hex():
    raw = (FLEET / "WS02.reg").read_bytes()
    assert raw.startswith(b"\xff\xfe")
    text = raw[2:].decode("utf-16-le")
    assert text.startswith("Windows Registry Editor Version 5.00\r\n")
    assert re.search(r'"Security"=hex:[0-9a-f,]+\\\r\n  [0-9a-f]', text)
    assert '"ImagePath"=hex(2):' in text


def test_reg_binary_security_values_decode_to_the_generator_sddl():
    hd = reg_to_host((FLEET / "WS02.reg").read_bytes(), "WS02.reg")
    assert hd.host == "WS02" and not hd.errors
    weak = hd.services["weaksvc"]
    assert parse_sddl(weak.sddl).to_sddl() == parse_sddl("O:SYG:SY" + GEN.SVC_WEAK_AU).to_sddl()
    deny = hd.services["denyfirstsvc"]
    assert parse_sddl(deny.sddl).to_sddl() == parse_sddl("O:SYG:SY" + GEN.SVC_DENY_FIRST).to_sddl()
    assert weak.image_path == "%SystemRoot%\\System32\\svchost.exe -k weak"  # hex(2), UTF-16LE, NUL dropped
    assert weak.start_type == "Auto" and weak.service_type == 0x20 and weak.account is None
    assert weak.service_dll == "C:\\Windows\\System32\\WeakSvc.dll"  # from the Parameters subkey
    drv = hd.services["acmedrv"]
    assert drv.is_driver and drv.sddl is None and drv.start_type == "System"
    assert "parameters" not in hd.services and "security" not in hd.services


def test_reg_value_types():
    body = (
        "Windows Registry Editor Version 5.00\r\n\r\n"
        "[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\X]\r\n"
        '"Type"=dword:00000010\r\n"Start"=dword:00000003\r\n"ObjectName"="NT AUTHORITY\\\\LocalService"\r\n'
        '"ImagePath"="\\"C:\\\\Program Files\\\\X\\\\x.exe\\" -a"\r\n'
        '"Deps"=hex(7):41,00,00,00,42,00,00,00,00,00\r\n@="default"\r\n'
    )
    rf = parse_reg(b"\xff\xfe" + body.encode("utf-16-le"))
    vals = rf.keys["HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\X"]
    assert vals["Type"].data == 0x10 and vals["Deps"].data == ["A", "B"] and vals[""].data == "default"
    assert vals["ImagePath"].data == '"C:\\Program Files\\X\\x.exe" -a'
    assert vals["ObjectName"].data == "NT AUTHORITY\\LocalService"


def test_truncated_reg_reports_where_and_keeps_the_rest():
    hd = reg_to_host((BAD / "WS07.reg").read_bytes(), "WS07.reg")
    assert any("truncated" in e and "WeakSvc\\Security" in e for e in hd.errors)
    assert "spooler" in hd.services and hd.services["spooler"].sddl  # complete part still read
    assert hd.services["weaksvc"].sddl is None  # the cut value is not guessed at


def test_reg_cut_mid_character_and_mid_key():
    raw = (FLEET / "WS02.reg").read_bytes()
    hd = reg_to_host(raw[:-1], "x.reg")
    assert any("odd number of bytes" in e for e in hd.errors)
    text = raw[2:].decode("utf-16-le")
    cut = text.index("[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\WeakSvc]") + 30
    hd2 = reg_to_host(b"\xff\xfe" + text[:cut].encode("utf-16-le"), "y.reg")
    assert any("truncated key name" in e for e in hd2.errors)


def test_reg_security_value_that_is_not_a_descriptor():
    body = (
        "Windows Registry Editor Version 5.00\r\n\r\n"
        '[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\Y]\r\n"Type"=dword:00000010\r\n\r\n'
        '[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\Y\\Security]\r\n"Security"=hex:01,00,04,80\r\n'
    )
    hd = reg_to_host(b"\xff\xfe" + body.encode("utf-16-le"), "h.reg")
    assert any("service Y: Security value" in e and "truncated" in e for e in hd.errors)
    assert "y" in hd.services


# ---- sc.exe text ----------------------------------------------------------------------------


def test_sc_text_qc_fields_sdshow_and_scmanager():
    hd = sc_to_host((FLEET / "WS03.sc.txt").read_bytes().decode(), "WS03.sc.txt")
    assert hd.host == "WS03"
    weak = hd.services["weaksvc"]
    assert weak.sddl == GEN.SVC_WEAK_AU and weak.account == "LocalSystem" and weak.start_type == "Auto"
    assert (
        weak.image_path == "C:\\Windows\\System32\\svchost.exe -k weak"
        and weak.display_name == "Weak Service"
    )
    assert hd.services["spooler"].service_type == 0x110
    assert hd.services["tempsvc"].sddl is None and hd.services["tempsvc"].start_type == "Manual"
    assert hd.scm_sddl == GEN.SCM_LEGACY
    assert "ghost" not in hd.services
    assert any("Ghost" in e and "FAILED 1060" in e for e in hd.errors)


def test_sc_sdshow_named_by_file(tmp_path):
    p = tmp_path / "srv9.Spooler.sdshow.txt"
    p.write_text("\n" + GEN.SVC_DEFAULT + "\n\n")
    hd = read_one(p, AuditLog())
    assert hd.host == "srv9" and hd.services["spooler"].sddl == GEN.SVC_DEFAULT
    q = tmp_path / "srv9.sdshow.txt"  # no service in the name: the SDDL cannot be attributed
    q.write_text(GEN.SVC_DEFAULT + "\n")
    log = AuditLog()
    assert read_one(q, log) is None
    assert len(log.problems) == 1 and "no service name" in log.problems[0][1]


# ---- snapshots ------------------------------------------------------------------------------


def test_snapshot_reads_every_field():
    hd = S.read_snapshot((FLEET / "WS01.scmwatch.json").read_bytes(), "WS01.scmwatch.json")
    assert hd.host == "WS01" and hd.os_version == "10.0.19045" and hd.collected_at == "2026-11-20T09:15:00Z"
    assert hd.scm_sddl == GEN.SCM_WEAK_GW
    agent = hd.services["acmeagent"]
    assert agent.binary == "C:\\Program Files\\Acme Tools\\agent svc.exe" and agent.service_type == 16
    assert hd.paths["c:\\"].sddl == GEN.ROOT_ACL and hd.paths["c:\\"].is_dir
    assert hd.paths["c:\\missing\\gone.exe"].exists is False
    assert hd.defender.available and hd.defender.source == "Get-MpPreference"
    assert {r.id: r.action for r in hd.defender.asr_rules}[GEN.ASR] == 2
    assert any("NoAccessSvc" in e for e in hd.errors) and any("Win32_SystemDriver" in e for e in hd.errors)


def test_sample_snapshots_exercise_every_schema_field():
    docs = [json.loads((FLEET / f).read_text()) for f in ("WS01.scmwatch.json", "WS04.scmwatch.json")]

    def seen(records, fields):
        return {f for r in records for f in fields if r.get(f) not in (None, "", [])}

    assert set(S.TOP_FIELDS) == seen(docs, S.TOP_FIELDS)
    assert set(S.HOST_FIELDS) == seen([d["host"] for d in docs], S.HOST_FIELDS)
    assert set(S.SCM_FIELDS) - {"error"} <= seen([d["scm"] for d in docs], S.SCM_FIELDS)
    assert set(S.SERVICE_FIELDS) == seen([s for d in docs for s in d["services"]], S.SERVICE_FIELDS)
    assert set(S.PATH_FIELDS) == seen([p for d in docs for p in d["paths"]], S.PATH_FIELDS)
    assert set(S.DEFENDER_FIELDS) == seen([d["defender"] for d in docs], S.DEFENDER_FIELDS)
    assert set(S.ASR_FIELDS) == seen([r for d in docs for r in d["defender"]["asr_rules"]], S.ASR_FIELDS)


def test_snapshot_written_utf16_by_powershell_redirection(tmp_path):
    p = tmp_path / "WS01.json"
    p.write_bytes(b"\xff\xfe" + (FLEET / "WS01.scmwatch.json").read_text().encode("utf-16-le"))
    hd = read_one(p, AuditLog())
    assert hd is not None and hd.host == "WS01"


@pytest.mark.parametrize(
    "content,message",
    [
        (
            '{"schema": "scmwatch.audit.snapshot", "schema_version": 99, "host": {"name": "x"}}',
            "schema_version 99",
        ),
        ('{"schema_version": 1, "host": {"name": "x"}}', "not a scmwatch audit snapshot"),
        ('{"schema": "scmwatch.audit.snapshot", "schema_version": 1', "invalid JSON"),
        ('{"schema": "scmwatch.audit.snapshot", "schema_version": 1, "host": {}}', "no host.name"),
    ],
)
def test_bad_snapshots_are_refused_with_a_reason(tmp_path, content, message):
    p = tmp_path / "h.json"
    p.write_text(content)
    log = AuditLog()
    assert read_one(p, log) is None
    assert log.problems == [(str(p), log.problems[0][1])] and message in log.problems[0][1]


def test_bad_items_in_a_snapshot_are_skipped_not_fatal(tmp_path):
    doc = json.loads((FLEET / "WS06.scmwatch.json").read_text())
    doc["services"].append({"display_name": "no name"})
    doc["services"].append({"name": "Bad", "sddl": "D:(A;;CC;;;SY"})
    doc["scm"]["sddl"] = "not sddl"
    p = tmp_path / "WS06.json"
    p.write_text(json.dumps(doc))
    log = AuditLog()
    hd = read_one(p, log)
    assert "spooler" in hd.services and hd.services["bad"].sddl is None and hd.scm_sddl is None
    msgs = [m for _, m in log.problems]
    assert any("services[1]" in m for m in msgs) and any("service Bad: invalid SDDL" in m for m in msgs)
    assert any(m.startswith("SCM: invalid SDDL") for m in msgs)


def test_load_merges_inputs_of_the_same_host(tmp_path):
    a = tmp_path / "ws03.Extra.sdshow.txt"
    a.write_text(GEN.SVC_DEFAULT + "\n")
    shutil.copy(FLEET / "WS03.sc.txt", tmp_path / "WS03.sc.txt")
    log = AuditLog()
    hosts = load([str(tmp_path)], log)
    assert len(hosts) == 1 and set(hosts[0].services) == {"weaksvc", "spooler", "tempsvc", "extra"}
    assert len(hosts[0].sources) == 2


def test_missing_file_and_broken_symlink_are_reported(tmp_path):
    link = tmp_path / "dangling.json"
    link.symlink_to(tmp_path / "nowhere.json")
    log = AuditLog()
    assert load([str(tmp_path / "absent.reg"), str(link)], log) == []
    assert [Path(s).name for s, _ in log.problems] == ["absent.reg", "dangling.json"]


# ---- collector script -----------------------------------------------------------------------

PS = collector_script()


def _ps_code_only(src: str) -> str:
    """Strip comments and string contents from PowerShell source (for bracket balance checks)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("<#", i):
            end = src.find("#>", i + 2)
            assert end > 0, "unterminated block comment"
            i = end + 2
        elif c == "#":
            end = src.find("\n", i)
            i = n if end < 0 else end
        elif c == "'":
            j = i + 1
            while True:
                j = src.find("'", j)
                assert j > 0, f"unterminated single-quoted string at {src[i : i + 30]!r}"
                if src.startswith("''", j):
                    j += 2
                    continue
                break
            out.append("''")
            i = j + 1
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "`" else 1
            assert j < n, f"unterminated double-quoted string at {src[i : i + 30]!r}"
            out.append('""')
            i = j + 1
        elif c == "`":
            out.append(src[i : i + 2])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def test_collector_is_shipped_and_printed(capsys):
    from scmwatch.cli import main

    assert main(["audit", "collector"]) == 0
    assert capsys.readouterr().out == PS
    packaged = Path(__file__).resolve().parents[1] / "src" / "scmwatch" / "audit" / "collect.ps1"
    assert packaged.read_text(encoding="utf-8") == PS


def test_collector_brackets_balance_outside_strings_and_comments():
    code = _ps_code_only(PS)
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for n, c in enumerate(code):
        if c in "([{":
            stack.append(c)
        elif c in pairs:
            assert stack and stack[-1] == pairs[c], f"unbalanced {c!r} near {code[max(0, n - 40) : n + 1]!r}"
            stack.pop()
    assert not stack


def test_collector_uses_only_builtin_cmdlets_and_the_expected_sources():
    assert "Import-Module" not in PS and "#Requires -Modules" not in PS and "Install-Module" not in PS
    for needle in (
        "sc.exe sdshow",
        "Get-SdShow 'scmanager'",
        "Get-MpPreference",
        "AttackSurfaceReductionRules_Ids",
        "AttackSurfaceReductionRules_Actions",
        "Get-Acl -LiteralPath",
        "Win32_Service",
        "Win32_SystemDriver",
        "Win32_OperatingSystem",
        "ConvertTo-Json -InputObject",
        "Get-CimInstance",
        "Get-WmiObject",
        "$env:COMPUTERNAME",
        "UTF8Encoding",
    ):
        assert needle in PS, needle
    # Only ASCII: PowerShell 5.1 reads BOM-less scripts in the ANSI code page.
    assert PS.isascii()


def _hashtable_keys(src: str) -> set[str]:
    return set(re.findall(r"^\s*(\w+)\s*=\s", src, re.MULTILINE)) | set(
        re.findall(r"[{;]\s*(\w+)\s*=\s", src)
    )


def test_collector_writes_the_schema_audit_reads():
    assert f"$SchemaName = '{S.SCHEMA_NAME}'" in PS
    assert f"$SchemaVersion = {S.SCHEMA_VERSION}" in PS
    keys = _hashtable_keys(PS)
    for fields in (
        S.TOP_FIELDS,
        S.HOST_FIELDS,
        S.SCM_FIELDS,
        S.SERVICE_FIELDS,
        S.PATH_FIELDS,
        S.DEFENDER_FIELDS,
        S.ASR_FIELDS,
    ):
        missing = set(fields) - keys
        assert not missing, f"collector does not write {missing}"


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell (pwsh) is not installed here")
def test_collector_parses_in_powershell(tmp_path):
    script = tmp_path / "collect.ps1"
    script.write_text(PS)
    cmd = (
        "$e=$null; [void][System.Management.Automation.Language.Parser]::"
        f"ParseFile('{script}',[ref]$null,[ref]$e);"
        " if ($e) { $e | ForEach-Object { $_.ToString() }; exit 1 }"
    )
    r = subprocess.run(["pwsh", "-NoProfile", "-Command", cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sc_text_saved_by_powershell_redirection_is_utf16(tmp_path):
    p = tmp_path / "WS03.sc.txt"
    p.write_bytes(b"\xff\xfe" + (FLEET / "WS03.sc.txt").read_text().encode("utf-16-le"))
    hd = read_one(p, AuditLog())
    assert hd is not None and hd.host == "WS03" and hd.services["weaksvc"].sddl == GEN.SVC_WEAK_AU


def test_collector_functions_are_defined_before_use_and_try_has_catch():
    code = _ps_code_only(PS)
    defined = {m.group(1): m.start(1) for m in re.finditer(r"\bfunction\s+([\w-]+)", code)}
    assert set(defined) >= {"Get-SdShow", "Resolve-ServiceBinary", "Get-PathAcl", "Expand-ImagePath"}
    for name, pos in defined.items():
        found = re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])", code)
        uses = [m.start() for m in found if m.start() != pos]
        assert uses and min(uses) > pos, f"{name} used before it is defined (or never used)"
    assert len(re.findall(r"\btry\s*\{", code)) == len(re.findall(r"\}\s*catch\s*\{", code))
