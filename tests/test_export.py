"""``rules export``: every pack rule exported or listed with a reason, for every target; the SQLite
form proven equal to the engine on the pack's own fixtures (positive, near-miss, correlation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paths import FIXTURES, SIGMAHQ, need_shared
from scmwatch.cli import main as cli_main
from scmwatch.export.convert import export_rules
from scmwatch.export.targets import TARGETS, BackendMissing, Target, backend_class
from scmwatch.export.verify import verify
from scmwatch.rules import pack_paths
from scmwatch.sigma import load_rules

CORRELATION_FIXTURES = sorted(str(p) for p in (FIXTURES / "correlate" / "pack").glob("*.ndjson"))


@pytest.fixture(scope="module")
def pack():
    return load_rules(pack_paths())


@pytest.fixture(scope="module")
def pack_verification():
    return verify(pack_paths(), CORRELATION_FIXTURES)


def test_whole_pack_matches_the_engine_in_sqlite(pack, pack_verification):
    assert len(CORRELATION_FIXTURES) > 50
    res = pack_verification
    assert res.events > 600
    engine_only = {r.name for r in pack.rules if "derived." in _rule_text(r)}  # events.enrich fields
    assert engine_only and set(res.skipped) == engine_only
    assert res.rules_compared == len(pack.rules) - len(engine_only)
    assert res.errors == []
    assert res.differences == [], res.differences[:5]
    assert res.rules_equal == res.rules_compared
    assert res.matches > len(pack.rules)  # every rule has positives; most match more than one event


def test_pack_correlations_cross_checked_with_link_columns(pack, pack_verification):
    """Not exportable (link.*), but the SQLite backend's correlations over link.* columns must alert
    for the same groups as the engine, except where its semantics are known to differ."""
    from scmwatch.correlate import CorrelationStage
    from scmwatch.export.verify import KNOWN_DIFFERENCES

    res = pack_verification
    stage = CorrelationStage.for_ruleset(pack)
    emitted = [c for c in pack.correlations if str(c.id) not in stage.suppressed]
    # every emitted correlation is compared: over link.* columns, or exported as it is (Zeek's)
    assert res.linked_compared + res.correlations_compared == len(emitted) and res.linked_compared >= 8
    differing = {line.split(":", 1)[0] for line in res.linked_differences}
    assert differing <= set(KNOWN_DIFFERENCES), res.linked_differences
    assert res.linked_equal >= res.linked_compared - len(KNOWN_DIFFERENCES)


def _rule_text(rule) -> str:
    """The YAML document of one pack rule (its file may hold several)."""
    return Path(rule.path).read_text().split(f"id: {rule.id}")[1].split("\n---")[0]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_pack_rule_is_exported_or_listed_with_a_reason(pack, target):
    exp = export_rules(pack_paths(), target)
    assert not exp.rejected
    rules = [e for e in exp.entries if e.kind == "rule"]
    corrs = [e for e in exp.entries if e.kind == "correlation"]
    assert {e.id for e in rules} == {r.id for r in pack.rules}
    assert len(corrs) == len(pack.correlations)
    for e in exp.entries:
        assert e.exported or e.reason, e.label
        assert not (e.exported and e.reason)
    # only rules on scmwatch's derived fields (events.enrich) need the engine
    assert all(e.exported or "derived." in e.reason for e in rules), [
        (e.label, e.reason) for e in rules if not e.exported]
    assert sum(not e.exported for e in rules) == sum("derived." in _rule_text(r) for r in pack.rules)
    for e in corrs:
        if not e.exported:
            assert any(n.startswith("equivalent exported: its base rules") for n in e.notes)
    derived = [e for e in corrs if "link." in (e.reason or "")]
    assert derived  # the pack's correlations join on scmwatch's derived link.* fields


def _write_rules(tmp: Path) -> Path:
    rules = tmp / "rules"
    (rules / "tests").mkdir(parents=True)
    (rules / "proc.yml").write_text("""
title: Shell started by services.exe
id: 0b0b0b0b-0000-4000-8000-000000000001
name: t_shell
status: test
level: high
tags: [attack.t1569.002]
logsource: {product: windows, category: process_creation}
detection:
  sel_parent:
    ParentImage|endswith: '\\\\services.exe'
  sel_img:
    - Image|endswith: '\\\\cmd.exe'
    - OriginalFileName: 'Cmd.Exe'
  filter_wrapper:
    Description: 'Known wrapper'
    CommandLine|contains: 'wrapper'
  condition: sel_parent and sel_img and not filter_wrapper
---
title: Only Sysmon knows this one
id: 0b0b0b0b-0000-4000-8000-000000000002
name: t_pe_only
status: test
level: low
tags: [attack.t1569.002]
logsource: {product: windows, category: process_creation}
detection:
  selection:
    OriginalFileName: 'psexec.c'
  condition: selection
""", encoding="utf-8")
    sysmon = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": "h",
              "TimeCreated": "2024-05-01T10:00:00Z"}
    svc = "C:\\Windows\\System32\\services.exe"
    sec = {"Channel": "Security", "EventID": 4688, "Computer": "h", "TimeCreated": "2024-05-01T10:00:01Z"}
    lines = [
        {**sysmon, "ParentImage": "C:\\Windows\\System32\\services.exe", "Image": "C:\\x\\CMD.EXE",
         "_expect": ["t_shell"]},
        {**sysmon, "ParentImage": "C:\\Windows\\System32\\services.exe", "Image": "C:\\x\\cmd.exe",
         "Description": "Known wrapper", "CommandLine": "wrapper /c", "_expect": [], "_near": ["t_shell"]},
        {**sec, "ParentProcessName": svc, "NewProcessName": "C:\\x\\cmd.exe",
         "CommandLine": "wrapper /c", "_expect": [], "_near": ["t_shell"]},
        {**sec, "ParentProcessName": svc, "NewProcessName": "C:\\x\\cmd.exe",
         "_expect": ["t_shell"]},
        {**sec, "ParentProcessName": "C:\\Windows\\explorer.exe", "NewProcessName": "C:\\x\\cmd.exe",
         "_expect": [], "_near": ["t_shell"]},
        {**sysmon, "OriginalFileName": "psexec.c", "_expect": ["t_pe_only"]},
        {**sec, "OriginalFileName": "psexec.c", "_expect": [], "_near": ["t_pe_only"]},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    (rules / "tests" / "proc.jsonl").write_text(text, encoding="utf-8")
    return rules


def test_security_4688_branch_folds_sysmon_only_fields_like_the_engine(tmp_path):
    rules = _write_rules(tmp_path)
    exp = export_rules([rules], "sqlite")
    by = {e.name: e for e in exp.entries}
    assert "EventID=4688" in by["t_shell"].queries[0] and "NewProcessName" in by["t_shell"].queries[0]
    branch_4688 = by["t_shell"].queries[0].split("4688", 1)[1]
    assert "Description" not in branch_4688 and "OriginalFileName" not in branch_4688
    assert "CommandLine LIKE '%wrapper%'" in branch_4688
    assert "4688" not in by["t_pe_only"].queries[0]
    assert any("never fires on Security/4688" in n for n in by["t_pe_only"].notes)
    res = verify([rules], exported=exp)
    assert res.ok and res.rules_compared == 2 and res.matches == 3


def test_verify_reports_a_query_that_means_something_else(tmp_path):
    rules = _write_rules(tmp_path)
    exp = export_rules([rules], "sqlite")
    shell = next(e for e in exp.entries if e.name == "t_shell")
    shell.queries = [shell.queries[0].split(" OR ((Channel='Security'")[0]]  # drop the 4688 branch
    res = verify([rules], exported=exp)
    assert not res.ok
    assert [(d.rule, d.engine, d.sqlite) for d in res.differences] == [("t_shell", True, False)]


def test_cli_export_verify_and_outputs(tmp_path, capsys):
    rules = _write_rules(tmp_path)
    assert cli_main(["rules", "export", "-t", "sqlite", "--rules", str(rules), "--verify"]) == 0
    out, err = capsys.readouterr()
    assert out.count("SELECT * FROM logs") == 2
    assert "# 0b0b0b0b-0000-4000-8000-000000000001  t_shell  [high]" in out
    assert "2 rules compared: 2 equal" in err
    outdir = tmp_path / "out"
    assert cli_main(["rules", "export", "-t", "splunk", "--rules", str(rules), "-o", f"{outdir}/"]) == 0
    conf = (outdir / "savedsearches.conf").read_text(encoding="utf-8")
    assert conf.count("\nsearch = ") + conf.startswith("search = ") == 2 and "alert.severity = 4" in conf
    assert (outdir / "queries.txt").exists() and (outdir / "not-exported.tsv").exists()
    single = tmp_path / "rules.ndjson"
    assert cli_main(["rules", "export", "-t", "lucene", "--rules", str(rules), "-o", str(single)]) == 0
    docs = [json.loads(line) for line in single.read_text(encoding="utf-8").splitlines()]
    assert {d["rule_id"] for d in docs} == {"0b0b0b0b-0000-4000-8000-000000000001",
                                            "0b0b0b0b-0000-4000-8000-000000000002"}
    assert all(d["language"] == "lucene" and "winlog.channel" in d["query"] for d in docs)


def test_cli_export_lists_every_correlation_it_cannot_export(capsys):
    assert cli_main(["rules", "export", "-t", "splunk"]) == 0
    _out, err = capsys.readouterr()
    assert err.count("not exported: correlation") == len(load_rules(pack_paths()).correlations)


@pytest.mark.parametrize("argv, code, message", [
    (["-t", "splunk", "--verify"], 2, "use --target sqlite"),
    (["-t", "sqlite", "--events", "x.ndjson"], 2, "--events is for --verify"),
    (["-t", "sqlite", "-p", "no_such_pipeline"], 1, "unknown pipeline 'no_such_pipeline'"),
    (["-t", "sqlite", "--rules", "/nonexistent/rules"], 1, "nothing exported"),
    (["-t", "kusto", "-o", "RULES/"], 2, "lies inside the rule directory"),
    (["-t", "kusto", "-o", "RULES/proc.yml"], 2, "lies inside the input directory"),
    (["-t", "kusto", "--rules", "RULES/proc.yml", "-o", "RULES/proc.yml"], 2, "is the input"),
])
def test_cli_export_usage_errors(argv, code, message, capsys, tmp_path):
    rules = _write_rules(tmp_path)
    before = (rules / "proc.yml").read_text(encoding="utf-8")
    argv = [a.replace("RULES", str(rules)) for a in argv]
    if "-o" in argv and "--rules" not in argv:
        argv += ["--rules", str(rules)]
    assert cli_main(["rules", "export", *argv]) == code
    assert message in capsys.readouterr().err
    assert (rules / "proc.yml").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in rules.iterdir()) == ["proc.yml", "tests"]


def test_a_missing_backend_names_the_extra():
    fake = Target("fake", "sigma.backends.no_such_backend", "X", "pysigma-backend-fake")
    hint = r"pip install 'scmwatch\[export\]'.*--no-deps pysigma-backend-fake"
    with pytest.raises(BackendMissing, match=hint):
        backend_class(fake)


def test_detection_names_a_condition_cannot_spell_are_renamed(tmp_path):
    """Names only a selector reaches (SigmaHQ has `select_tree_execution|endswith` and
    `filter_main_mdadm.conf`) are renamed when the gated condition is written out."""
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    (rules / "odd.yml").write_text("""
title: Odd detection names
id: 0b0b0b0b-0000-4000-8000-000000000003
name: t_odd
status: test
level: low
tags: [attack.t1569.002]
logsource: {product: windows, service: system}
detection:
  select_a|endswith:
    ServiceName: 'evil'
  select_b:
    ImagePath|endswith: '.bat'
  filter_x.conf:
    ImagePath|contains: 'trusted'
  condition: 1 of select* and not 1 of filter_*
""", encoding="utf-8")
    base = {"Channel": "System", "EventID": 7045, "Computer": "h", "TimeCreated": "2024-05-01T10:00:00Z"}
    lines = [{**base, "ServiceName": "evil", "ImagePath": "c:\\x.exe", "_expect": ["t_odd"]},
             {**base, "ServiceName": "evil", "ImagePath": "c:\\trusted\\x.bat", "_expect": [],
              "_near": ["t_odd"]},
             {**base, "ServiceName": "good", "ImagePath": "c:\\x.bat", "_expect": ["t_odd"]}]
    (rules / "tests" / "odd.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    exp = export_rules([rules], "splunk")
    assert exp.entries[0].exported, exp.entries[0].reason
    res = verify([rules])
    assert res.ok and res.rules_compared == 1 and res.matches == 2


def test_sigmahq_rules_match_the_engine_on_their_regression_events():
    """Every SigmaHQ rule the engine runs and the sqlite target exports matches exactly the
    regression events (all 238 records, every rule against every record) the engine matches."""
    need_shared(SIGMAHQ / "regression_data")
    evtx = sorted(str(p) for p in (SIGMAHQ / "regression_data").rglob("*.evtx"))
    rules = [str(SIGMAHQ / d) for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")]
    res = verify(rules, evtx)
    assert res.events >= 200 and res.rules_compared > 2500
    assert res.differences == [] and res.errors == []
    assert res.rules_equal == res.rules_compared and res.matches >= 300


def test_cli_export_escapes_hostile_names_on_stderr(tmp_path, capsys):
    rules = _write_rules(tmp_path)
    (rules / "bad\x1b[2J.yml").write_text("title: [unclosed\n", encoding="utf-8")
    assert cli_main(["rules", "export", "-t", "sqlite", "--rules", str(rules)]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "bad\\x1b[2J.yml: rule rejected" in err
