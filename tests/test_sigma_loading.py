"""Loading (bad rules reported, rest used), logsource gating and the Security-4688 source."""

from __future__ import annotations

import textwrap
from pathlib import Path

from scmwatch.events.model import Event
from scmwatch.sigma import Engine, load_rules

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return p


GOOD = """
title: good rule
id: 6f1c2b9e-0000-4000-8000-00000000000a
name: good_rule
level: medium
tags: [attack.execution, attack.t1569.002]
maxpatrol_rule: mp_123
logsource: {product: windows, category: process_creation}
detection:
  sel:
    Image|endswith: '\\psexesvc.exe'
  condition: sel
"""


def ev(**fields) -> Event:
    return Event(fields, "t.json", 1, "json")


def match_titles(engine: Engine, **fields) -> list[str]:
    return [r.title for r in engine.match(ev(**fields))]


def test_bad_rules_reported_rest_used(tmp_path):
    write(tmp_path, "good.yml", GOOD)
    write(tmp_path, "broken.yml", "title: x\ndetection: [unclosed\n")
    write(
        tmp_path,
        "dupkey.yml",
        GOOD.replace("    Image|endswith: '\\psexesvc.exe'", "    Image: a.exe\n    Image: b.exe").replace(
            "0000000a", "0000000b"
        ),
    )
    write(
        tmp_path,
        "modifier.yml",
        GOOD.replace("Image|endswith", "Image|frobnicate").replace("0000000a", "0000000c"),
    )
    write(
        tmp_path,
        "pipe.yml",
        GOOD.replace("condition: sel", "condition: sel | count() by Image > 5").replace(
            "0000000a", "0000000d"
        ),
    )
    write(tmp_path, "notarule.yml", "- just\n- a list\n")
    rs = load_rules([tmp_path])
    assert [r.title for r in rs.rules] == ["good rule"]
    reasons = {Path(p).name: r for p, r in rs.rejected}
    assert set(reasons) == {"broken.yml", "dupkey.yml", "modifier.yml", "pipe.yml", "notarule.yml"}
    assert "(line " in reasons["broken.yml"]
    assert "Duplicate key 'Image'" in reasons["dupkey.yml"]
    assert "frobnicate" in reasons["modifier.yml"]
    assert "pipe" in reasons["pipe.yml"].lower()
    assert all("\n" not in r for r in reasons.values())


def test_rejected_reason_names_the_file_once_and_gives_the_line(tmp_path):
    other = GOOD.replace("0000000a", "0000000e").replace("good rule", "second rule")
    bad = other.replace("Image|endswith", "Image|frobnicate").replace("second rule", "third rule")
    bad = bad.replace("0000000e", "0000000f")
    cond = GOOD.replace("condition: sel", "condition: sel and nothere").replace("0000000a", "00000010")
    write(tmp_path, "multi.yml", other + "---\n" + bad.lstrip("\n"))
    write(tmp_path, "cond.yml", cond)
    rs = load_rules([tmp_path])
    reasons = {Path(p).name: r for p, r in rs.rejected}
    assert not any(str(tmp_path) in r for r in reasons.values()), reasons  # the path is the key, once
    def line_of(name: str, needle: str) -> int:
        return next(i for i, t in enumerate((tmp_path / name).read_text().splitlines(), 1) if needle in t)

    # the second document's modifier line, not a line of the first document
    assert reasons["multi.yml"].endswith(f"(line {line_of('multi.yml', 'frobnicate')})")
    assert line_of("multi.yml", "frobnicate") > line_of("multi.yml", "third rule")
    assert "'third rule'" in reasons["multi.yml"] and "frobnicate" in reasons["multi.yml"]
    assert reasons["cond.yml"].endswith(f"(line {line_of('cond.yml', 'nothere')})")


def test_missing_path_is_rejected_not_raised(tmp_path):
    rs = load_rules([tmp_path / "nope"])
    assert rs.rejected == [(str(tmp_path / "nope"), "no such file or directory")]


def test_rule_attributes(tmp_path):
    rs = load_rules([write(tmp_path, "good.yml", GOOD)])
    (r,) = rs.rules
    assert r.id == "6f1c2b9e-0000-4000-8000-00000000000a"
    assert r.name == "good_rule" and r.level == "medium"
    assert r.tags == ["attack.execution", "attack.t1569.002"]
    assert r.custom == {"maxpatrol_rule": "mp_123"}
    assert r.logsource["category"] == "process_creation"
    assert r.path.endswith("good.yml") and r.sigma.title == "good rule"


def test_multidoc_global_and_filter(tmp_path):
    write(
        tmp_path,
        "multi.yml",
        """
    action: global
    title: multi
    logsource: {product: windows, category: process_creation}
    level: high
    detection:
      condition: sel
    ---
    id: 6f1c2b9e-0000-4000-8000-000000000101
    detection:
      sel:
        Image|endswith: '\\one.exe'
    ---
    id: 6f1c2b9e-0000-4000-8000-000000000102
    detection:
      sel:
        Image|endswith: '\\two.exe'
    """,
    )
    write(
        tmp_path,
        "filter.yml",
        """
    title: ignore admin host
    id: 6f1c2b9e-0000-4000-8000-000000000103
    logsource: {product: windows, category: process_creation}
    filter:
      rules: [6f1c2b9e-0000-4000-8000-000000000101]
      selection:
        Computer: ADMIN01
      condition: not selection
    """,
    )
    rs = load_rules([tmp_path])
    assert not rs.rejected, rs.rejected
    assert len(rs.rules) == 2
    eng = Engine(rs)
    base = {"Channel": SYSMON, "EventID": 1}
    assert len(eng.match(ev(**base, Image="c:\\one.exe", Computer="WS1"))) == 1
    assert eng.match(ev(**base, Image="c:\\one.exe", Computer="ADMIN01")) == []  # filtered
    assert len(eng.match(ev(**base, Image="c:\\two.exe", Computer="ADMIN01"))) == 1  # filter is per rule


def test_correlations_loaded_and_bad_reference_rejected(tmp_path):
    write(tmp_path, "good.yml", GOOD)
    write(
        tmp_path,
        "corr.yml",
        """
    title: many psexec
    id: 6f1c2b9e-0000-4000-8000-000000000201
    correlation:
      type: event_count
      rules: [good_rule]
      group-by: [Computer]
      timespan: 5m
      condition: {gte: 3}
    """,
    )
    write(
        tmp_path,
        "corr_bad.yml",
        """
    title: dangling
    id: 6f1c2b9e-0000-4000-8000-000000000202
    correlation:
      type: event_count
      rules: [no_such_rule]
      group-by: [Computer]
      timespan: 5m
      condition: {gte: 3}
    """,
    )
    rs = load_rules([tmp_path])
    assert [c.title for c in rs.correlations] == ["many psexec"]
    assert len(rs.rules) == 1
    assert any("corr_bad.yml" in p and "no_such_rule" in r for p, r in rs.rejected), rs.rejected


# ------------------------------------------------------------------ gating


def rule_file(tmp: Path, detection: str, logsource: str, n: int = 0) -> Path:
    det = textwrap.indent(textwrap.dedent(detection).strip(), "  ")
    text = f"title: r{n}\nid: 6f1c2b9e-0000-4000-8000-{n:012d}\nlevel: high\nlogsource: {logsource}\n"
    p = tmp / f"r{n}.yml"
    p.write_text(text + "detection:\n" + det + "\n", encoding="utf-8")
    return p


def test_category_gating(tmp_path):
    eng = Engine(
        load_rules(
            [
                rule_file(
                    tmp_path,
                    "sel:\n  Image|endswith: '\\x.exe'\ncondition: sel",
                    "{product: windows, category: process_creation}",
                )
            ]
        )
    )
    assert match_titles(eng, Channel=SYSMON, EventID=1, Image="c:\\x.exe") == ["r0"]
    assert match_titles(eng, Channel=SYSMON, EventID=11, Image="c:\\x.exe") == []  # file_event
    assert match_titles(eng, Channel="Security", EventID=4689, NewProcessName="c:\\x.exe") == []
    assert match_titles(eng, Channel="Security", EventID=4688, NewProcessName="c:\\x.exe") == ["r0"]
    assert match_titles(eng, Channel="Security", EventID=4688, Image="c:\\x.exe") == []  # 4688 has no Image


def test_4688_needs_sysmon_only_field_is_flagged(tmp_path):
    rs = load_rules(
        [
            rule_file(
                tmp_path,
                "sel:\n  OriginalFileName: 'psexec.c'\ncondition: sel",
                "{product: windows, category: process_creation}",
            )
        ]
    )
    (r,) = rs.rules
    assert r.sources == ["process_creation"]
    assert any("Security/4688" in f and "OriginalFileName" in f for f in r.flags)
    eng = Engine(rs)
    assert match_titles(eng, Channel=SYSMON, EventID=1, OriginalFileName="psexec.c") == ["r0"]
    assert match_titles(eng, Channel="Security", EventID=4688, OriginalFileName="psexec.c") == []


def test_4688_or_alternative_and_filter_do_not_overfire(tmp_path):
    det = """
    sel:
      - Image|endswith: '\\psexec.exe'
      - OriginalFileName: 'psexec.c'
    filter:
      Company: 'Sysinternals'
    condition: sel and not filter
    """
    rs = load_rules([rule_file(tmp_path, det, "{product: windows, category: process_creation}")])
    (r,) = rs.rules
    # Sysmon: filter works; 4688: Company unknown, so the rule cannot be certain → never fires there.
    eng = Engine(rs)
    assert match_titles(eng, Channel=SYSMON, EventID=1, Image="c:\\psexec.exe") == ["r0"]
    assert match_titles(eng, Channel=SYSMON, EventID=1, Image="c:\\psexec.exe", Company="Sysinternals") == []
    assert match_titles(eng, Channel="Security", EventID=4688, NewProcessName="c:\\psexec.exe") == []
    assert any("Company" in f for f in r.flags)

    rs2 = load_rules(
        [
            rule_file(
                tmp_path,
                det.replace("and not filter", ""),
                "{product: windows, category: process_creation}",
                1,
            )
        ]
    )
    eng2 = Engine(rs2)
    assert match_titles(eng2, Channel="Security", EventID=4688, NewProcessName="c:\\psexec.exe") == ["r1"]
    assert match_titles(eng2, Channel="Security", EventID=4688, NewProcessName="c:\\other.exe") == []


def test_4688_hex_pids(tmp_path):
    eng = Engine(
        load_rules(
            [
                rule_file(
                    tmp_path,
                    "sel:\n  Image|endswith: '\\x.exe'\n  ParentProcessId: 888\ncondition: sel",
                    "{product: windows, category: process_creation}",
                )
            ]
        )
    )
    assert match_titles(
        eng, Channel="Security", EventID=4688, NewProcessName="c:\\x.exe", ProcessId="0x378"
    ) == ["r0"]
    assert (
        match_titles(eng, Channel="Security", EventID=4688, NewProcessName="c:\\x.exe", ProcessId="0x379")
        == []
    )
    assert match_titles(eng, Channel=SYSMON, EventID=1, Image="c:\\x.exe", ParentProcessId=888) == ["r0"]


def test_registry_add_needs_createkey(tmp_path):
    eng = Engine(
        load_rules(
            [
                rule_file(
                    tmp_path,
                    "sel:\n  TargetObject|contains: '\\Services\\evil'\ncondition: sel",
                    "{product: windows, category: registry_add}",
                )
            ]
        )
    )
    key = "HKLM\\System\\CurrentControlSet\\Services\\evil"
    assert match_titles(eng, Channel=SYSMON, EventID=12, EventType="CreateKey", TargetObject=key) == ["r0"]
    assert match_titles(eng, Channel=SYSMON, EventID=12, EventType="DeleteKey", TargetObject=key) == []


def test_service_gating_and_eventid_narrowing(tmp_path):
    rs = load_rules(
        [
            rule_file(
                tmp_path,
                "sel:\n  EventID: 7045\n  ServiceName: 'PSEXESVC'\ncondition: sel",
                "{product: windows, service: system}",
            )
        ]
    )
    (r,) = rs.rules
    assert r.units[0].keys == [("system", 7045)]
    eng = Engine(rs)
    assert match_titles(eng, Channel="System", EventID=7045, ServiceName="psexesvc") == ["r0"]
    assert match_titles(eng, Channel="Security", EventID=7045, ServiceName="psexesvc") == []
    assert match_titles(eng, Channel="System", EventID=7036, ServiceName="psexesvc") == []


def test_unmapped_sources_are_not_run_with_reason(tmp_path):
    rs = load_rules(
        [
            rule_file(
                tmp_path,
                "sel:\n  FileName|endswith: '.x'\ncondition: sel",
                "{product: windows, category: file_access}",
            ),
            rule_file(
                tmp_path,
                "sel:\n  Image|endswith: '/bash'\ncondition: sel",
                "{product: linux, category: process_creation}",
                1,
            ),
        ]
    )
    assert not rs.rejected
    reasons = sorted(reason for _, reason in rs.not_run)
    assert len(reasons) == 2
    assert "file_access" in reasons[0] and "linux" in reasons[1]
    eng = Engine(rs)
    assert match_titles(eng, Channel=SYSMON, EventID=1, Image="/bin/bash", FileName="a.x") == []
