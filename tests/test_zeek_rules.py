"""Zeek logs through the Sigma engine: ``product: zeek`` rules see exactly their log's events."""

from __future__ import annotations

from pathlib import Path

from paths import FIXTURES, SIGMAHQ, need_shared
from scmwatch.events import ReadStats, iter_events
from scmwatch.sigma import Engine, load_rules

RULES = """\
title: svcctl service created over DCE/RPC
id: 5b0c6a51-3a0d-4d8e-9c43-0f2a4d1d7e01
status: test
logsource: {product: zeek, service: dce_rpc}
detection:
  sel: {endpoint: svcctl, operation|startswith: CreateService}
  condition: sel
level: medium
---
title: PsExec service binary written over SMB
id: 5b0c6a51-3a0d-4d8e-9c43-0f2a4d1d7e02
status: test
logsource: {product: zeek, service: smb_files}
detection:
  sel: {name|endswith: PSEXESVC.exe}
  condition: sel
level: high
---
title: the same fields in a Windows rule never see Zeek events
id: 5b0c6a51-3a0d-4d8e-9c43-0f2a4d1d7e03
status: test
logsource: {product: windows, service: system}
detection:
  sel: {endpoint: svcctl}
  condition: sel
level: high
"""


def hits(rules_path: Path, *logs: Path) -> list[tuple[str, str]]:
    engine = Engine(load_rules([str(rules_path)]))
    stats = ReadStats()
    out = []
    for event in iter_events([str(p) for p in logs], stats):
        out += [
            (r.title, event.fields.get("operation") or event.fields.get("name")) for r in engine.match(event)
        ]
    assert not stats.errors
    return out


def test_zeek_rules_are_gated_by_log(tmp_path: Path) -> None:
    rules = tmp_path / "zeek.yml"
    rules.write_text(RULES)
    ev = FIXTURES / "events"
    assert hits(rules, ev / "dce_rpc.log", ev / "smb_files.log") == [
        ("svcctl service created over DCE/RPC", "CreateServiceW"),
        ("PsExec service binary written over SMB", "PSEXESVC.exe"),
    ]


def test_sigmahq_bzar_execution_rule_runs_on_zeek_dce_rpc() -> None:
    rule = need_shared(SIGMAHQ / "rules" / "network" / "zeek" / "zeek_dce_rpc_mitre_bzar_execution.yml")
    found = hits(rule, FIXTURES / "events" / "dce_rpc.log")
    assert [op for _, op in found] == ["CreateServiceW", "StartServiceW"]


def _default_zeek_psexec(tmp_path: Path) -> list[Path]:
    """PsExec over SMB as a stock Zeek logs it (TSV): no FILE_WRITE, the binary copy is a FILE_OPEN."""
    head = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
    smb = tmp_path / "smb_files.log"
    smb.write_text(
        head + "#path\tsmb_files\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tfuid\taction"
        "\tpath\tname\tsize\tprev_name\ttimes.modified\ttimes.accessed\ttimes.created\ttimes.changed\n"
        "#types\ttime\tstring\taddr\tport\taddr\tport\tstring\tenum\tstring\tstring\tcount\tstring\ttime\ttime"
        "\ttime\ttime\n"
        "1714557600.10\tCa\t10.0.0.5\t50100\t10.0.0.7\t445\t-\tSMB::FILE_OPEN\t\\\\\\\\10.0.0.7\\\\ADMIN$"
        "\tPSEXESVC.exe\t0\t-\t1714557600.10\t1714557600.10\t1714557600.10\t1714557600.10\n"
    )
    dce = tmp_path / "dce_rpc.log"
    dce.write_text(
        head + "#path\tdce_rpc\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\trtt\tnamed_pipe"
        "\tendpoint\toperation\n#types\ttime\tstring\taddr\tport\taddr\tport\tinterval\tstring\tstring\tstring\n"
        "1714557600.50\tCb\t10.0.0.5\t50100\t10.0.0.7\t445\t0.0004\t\\\\pipe\\\\ntsvcs\tsvcctl\tOpenSCManagerW\n"
        "1714557600.51\tCb\t10.0.0.5\t50100\t10.0.0.7\t445\t0.0004\t\\\\pipe\\\\ntsvcs\tsvcctl\tCreateServiceW\n"
        "1714557600.60\tCb\t10.0.0.5\t50100\t10.0.0.7\t445\t0.0004\t\\\\pipe\\\\ntsvcs\tsvcctl\tStartServiceW\n"
    )
    return [smb, dce]


def test_default_zeek_psexec_gives_a_high_alert(tmp_path: Path) -> None:
    from scmwatch.hunt import run_hunt
    from scmwatch.rules import pack_paths

    ruleset = load_rules(pack_paths())
    result = run_hunt([str(p) for p in _default_zeek_psexec(tmp_path)], ruleset)
    levels = {a.title: a.level for a in result.alerts}
    assert any(level == "high" and "copied to ADMIN$/C$" in title for title, level in levels.items()), levels
    assert "medium" in levels.values()  # svcctl create and the tool binary opened


def test_rules_coverage_states_the_zeek_settings_each_rule_needs() -> None:
    from scmwatch.coverage import compute
    from scmwatch.rules import pack_paths

    settings = dict(compute(load_rules(pack_paths())).zeek)
    assert settings["corr_zeek_copy_then_svcctl"] == "default"
    assert settings["zeek_svcctl_create_or_change_service"] == "default"
    assert settings["zeek_psexesvc_written"] == "SMB::logged_file_actions += { SMB::FILE_WRITE }"
    assert settings["zeek_psexec_pipes"] == "SMB::logged_file_actions += { SMB::PIPE_OPEN }"
    assert "not stated" not in settings.values()
