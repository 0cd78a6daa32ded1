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
