"""``scmwatch hunt`` evidence and results (issue 14): the "why" column, CSV evidence columns, the
results summary (table and ``--summary``), ``--readiness``, ``--timezone``, the timing line."""

from __future__ import annotations

import csv
import gc
import io
import json
import weakref
from pathlib import Path

import pytest
from rich.cells import cell_len
from tests.paths import ATTACK_SAMPLES, SIGMAHQ, need_shared

from scmwatch.alerts import Alert
from scmwatch.cli import main
from scmwatch.events.model import Event
from scmwatch.results import Results
from scmwatch.sinks.explain import explain, where

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"
FIX = ROOT / "tests" / "fixtures" / "hunt"
LOGS = [str(FIX / "a.ndjson"), str(FIX / "b.ndjson")]
RULES = str(FIX / "rules")


def hunt(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["hunt", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> dict:
    """The demo hunted once: its JSONL alerts and its --summary."""
    tmp = tmp_path_factory.mktemp("demo")
    assert main(["hunt", str(DEMO), "--format", "jsonl", "-o", str(tmp / "a.jsonl"),
                 "--summary", str(tmp / "s.json")]) == 0
    return {"alerts": [json.loads(x) for x in (tmp / "a.jsonl").read_text().splitlines()],
            "summary": json.loads((tmp / "s.json").read_text())}


# -- the "why" column -------------------------------------------------------------------------

def test_eventid_only_rule_shows_key_fields_on_real_evtx(capsys):
    """SigmaHQ's 1102 rule tests EventID and Provider_Name only: the row still says who cleared
    the log, and where the record is."""
    log = need_shared(ATTACK_SAMPLES / "Defense Evasion" / "DE_1102_security_log_cleared.evtx")
    rule = need_shared(SIGMAHQ / "rules" / "windows" / "builtin" / "security"
                       / "win_security_audit_log_cleared.yml")
    rc, out, _ = hunt(capsys, str(log), "--rules", str(rule))
    assert rc == 0 and "Security Eventlog Cleared" in out
    assert "SubjectUserName=user01" in out and "1102 DE_1102_security_log_cleared.evtx#1" in out


def test_key_fields_by_channel_and_eventid():
    def alert(fields: dict) -> Alert:
        return Alert("r", "t", "high", "", [], Event(fields, "/logs/Security.evtx", 42, "evtx"))

    a = alert({"EventID": 4624, "Channel": "Security", "TargetUserName": "adm", "IpAddress": "10.0.0.5",
               "LogonType": 3, "SubjectUserName": "-"})
    assert explain(a, None) == [("TargetUserName", "adm"), ("IpAddress", "10.0.0.5"), ("LogonType", "3")]
    assert where(a) == "4624 Security.evtx#42"
    # near miss: the same EventID in another channel is another event (Sysmon 1 is not Security 1)
    b = alert({"EventID": "1", "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\x.exe",
               "User": "SYSTEM", "SubjectUserName": "nobody"})
    assert [k for k, _ in explain(b, None)] == ["Image", "User"]
    c = alert({"EventID": 1, "Channel": "Application", "SubjectUserName": "nobody"})
    assert explain(c, None) == [] and where(c) == "1 Security.evtx#42"


def test_why_is_never_empty_and_correlation_shows_its_source(capsys, demo_run):
    rc, out, _ = hunt(capsys, str(DEMO), "--include-rule", "*svcctl opened from a remote*")
    assert rc == 0
    # the svcctl -> install correlation: its source address, then its chain
    assert "from 10.1.10.251 → fs01" in out and "5145 RelativeTargetName=svcctl" in out
    rc, out, _ = hunt(capsys, str(DEMO), "--level", "low")
    rows = [line for line in out.splitlines() if line.startswith("│ 2024")]
    n_low = sum(1 for a in demo_run["alerts"] if a["level"] == "low")
    assert len(rows) >= n_low
    for line in rows:  # the first line of each alert's "why" cell is never blank
        assert line.rstrip("│ ").rsplit("│", 1)[1].strip()


# -- CSV ---------------------------------------------------------------------------------------

def test_csv_has_eventid_channel_and_the_chain(capsys, tmp_path, demo_run):
    out = tmp_path / "a.csv"
    assert main(["hunt", str(DEMO), "--format", "csv", "-o", str(out)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == len(demo_run["alerts"])
    for row, a in zip(rows, demo_run["alerts"], strict=True):
        assert row["EventID"] == str(a["event"].get("EventID", ""))
        assert row["Channel"] == a["event"]["Channel"]
        if "events" in a:  # a correlation keeps its chain: every evidence event, findable
            chain = json.loads(row["evidence"])
            assert [(e["source"], e["record_id"]) for e in chain] == \
                [(e["source"], e["record_id"]) for e in a["events"]]
        else:
            assert row["evidence"] == ""
    assert any(r["evidence"] for r in rows)


# -- results summary ----------------------------------------------------------------------------

def test_summary_json_results(demo_run):
    res, alerts = demo_run["summary"]["results"], demo_run["alerts"]
    assert res["alerts"] == len(alerts) == demo_run["summary"]["alerts"]
    assert sum(res["by_level"].values()) == len(alerts)
    assert list(res["by_level"]) == [lvl for lvl in ("critical", "high", "medium", "low", "informational")
                                     if lvl in res["by_level"]]
    by_rule = {}
    for a in alerts:
        by_rule[a["rule_id"]] = by_rule.get(a["rule_id"], 0) + 1
    top = res["top_rules"][0]
    assert top["alerts"] == max(by_rule.values()) == by_rule[top["rule_id"]]
    assert res["rules"] == len(by_rule)
    assert res["by_technique"]["T1569.002"] == sum("attack.t1569.002" in a["tags"] for a in alerts)
    hosts = {h["host"]: h for h in res["top_hosts"]}
    fs01 = [a["timestamp"] for a in alerts if a["host"] == "FS01.corp.example.com"]
    assert hosts["FS01.corp.example.com"]["alerts"] == len(fs01)
    assert (hosts["FS01.corp.example.com"]["first_alert"], hosts["FS01.corp.example.com"]["last_alert"]) == \
        (min(fs01), max(fs01))
    assert res["first_event"] <= min(a["timestamp"] for a in alerts)
    assert res["last_event"] == max(a["timestamp"] for a in alerts)
    links = {(x["source_host"], x["target_host"]): x for x in res["lateral_movement"]}
    # PsExec from WS9001 to FS01 (command line) and the svcctl open from its address (inbound)
    assert ("ws9001", "fs01") in links and "10.1.10.251" in links[("10.1.10.251", "fs01")]["source_ips"]
    assert all(src != dst for src, dst in links)


def test_results_follow_the_filters(capsys, tmp_path):
    summ = tmp_path / "s.json"
    rc, _, _ = hunt(capsys, str(DEMO), "--format", "jsonl", "--summary", str(summ), "--include-host", "fs01")
    res = json.loads(summ.read_text())["results"]
    assert rc == 0 and [h["host"] for h in res["top_hosts"]] == ["FS01.corp.example.com"]
    assert all("fs01" in (x["source_host"], x["target_host"]) for x in res["lateral_movement"])


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_results_summary_is_made_only_where_it_is_read(capsys, tmp_path, monkeypatch, jobs):
    """The table's footer, ``--summary`` and a case read the results summary; JSON lines alone
    do not, and then no alert is counted into one (its counts and output are still right)."""
    made = []
    real_init = Results.__init__

    def init(self, *args, **kwargs):
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Results, "__init__", init)
    out, summ = tmp_path / "a.jsonl", tmp_path / "s.json"
    rc, _, err = hunt(capsys, str(DEMO), "--format", "jsonl", "-o", str(out), "--jobs", jobs)
    assert rc == 0 and made == []
    n = len(out.read_text().splitlines())
    assert n > 0 and f"{n:,} alerts" in err
    rc, _, _ = hunt(capsys, str(DEMO), "--format", "jsonl", "-o", str(out), "--jobs", jobs,
                    "--summary", str(summ))
    assert rc == 0 and len(made) == 1 and made[0].total == n
    assert json.loads(summ.read_text())["results"]["alerts"] == n
    rc, table, _ = hunt(capsys, str(DEMO), "--jobs", jobs)
    assert rc == 0 and len(made) == 2 and made[1].total == n and "alerts" in table


def test_line_hits_look_for_lateral_links_only_for_the_results_summary(capsys, tmp_path, monkeypatch):
    """Only the results summary reads a line hit's lateral links: a JSON-lines hunt that keeps
    none does not look for them in the hits' events; with ``--summary`` they are found and
    counted, and the alert lines are the same either way."""
    import scmwatch.hunt as hunt_mod

    asked = []
    real = hunt_mod.may_link

    def may_link(fields):
        asked.append(fields)
        return real(fields)

    monkeypatch.setattr(hunt_mod, "may_link", may_link)
    plain, summed, summ = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "s.json"
    rc, _, _ = hunt(capsys, str(DEMO), "--format", "jsonl", "-o", str(plain), "--jobs", "1")
    assert rc == 0 and asked == []
    rc, _, _ = hunt(capsys, str(DEMO), "--format", "jsonl", "-o", str(summed), "--jobs", "1",
                    "--summary", str(summ))
    assert rc == 0 and asked
    assert json.loads(summ.read_text())["results"]["lateral_movement"]
    assert plain.read_bytes() == summed.read_bytes()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_hunt_without_results_tallies_the_rules_only_and_counts_the_same(tmp_path, monkeypatch, jobs):
    """Without a results summary the line hits' tallies keep the rules only (``Tally.add_rule``):
    the run summary's alert counts by level and by rule, and the lines, are those of a run that
    keeps one (whose tallies are whole)."""
    from scmwatch.hunt import run_hunt
    from scmwatch.results import Tally
    from scmwatch.rules import PACK_DIR
    from scmwatch.sigma import load_rules
    from scmwatch.sinks.jsonl import JsonlSink

    ruleset = load_rules([str(PACK_DIR)])
    lean = []  # this process's rules-only adds (a forked worker's are its own)
    real_add = Tally.add_rule

    def add_rule(self, *args, **kwargs):
        lean.append(args[0])
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(Tally, "add_rule", add_rule)
    runs = []
    for keep in (None, Results()):
        out = io.StringIO()
        sink = JsonlSink(out)
        res = run_hunt([str(DEMO)], ruleset, jobs=jobs, sink=sink.write, lines=True,
                       write_lines=sink.write_lines, results=keep)
        sink.close()
        runs.append((res.summary, out.getvalue(), len(lean)))
    (plain, plain_out, lean_plain), (kept, kept_out, lean_both) = runs
    assert plain_out == kept_out and plain["alerts"] == kept["alerts"] > 0
    assert plain["alerts_by_level"] == kept["alerts_by_level"]
    assert plain["alerts_by_rule"] == kept["alerts_by_rule"]
    if jobs == 1:  # the hits of the run that keeps a summary are tallied whole
        assert lean_plain > 0 and lean_both == lean_plain


def test_a_hunt_in_its_own_process_leaves_its_merge_unfreed(capsys, tmp_path, monkeypatch):
    """A hunt whose process ends with it (``scmwatch.cli.entry``) hands what it leaves behind to
    ``cli.hunt._UNFREED`` rather than freeing it object by object just before the process
    exits; in-process callers (``main`` without ``own_process``) keep ordinary lifetimes."""
    import scmwatch.cli as cli
    import scmwatch.cli.hunt as cli_hunt
    import scmwatch.hunt as hunt_mod

    merges: list[weakref.ref] = []
    real_init = hunt_mod.AlertMerge.__init__

    def init(self, *args, **kwargs):
        merges.append(weakref.ref(self))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(hunt_mod.AlertMerge, "__init__", init)
    monkeypatch.setattr(cli_hunt, "_UNFREED", [])
    out = tmp_path / "a.jsonl"
    argv = ["hunt", str(DEMO), "--format", "jsonl", "-o", str(out), "--jobs", "2"]
    assert main(argv) == 0
    gc.collect()
    assert len(merges) == 1 and merges[0]() is None and cli_hunt._UNFREED == []
    expected = out.read_bytes()
    # the process's own parser, without its gc.freeze of the test process's objects
    monkeypatch.setattr(cli, "_build_lasting", cli.build_parser)
    assert main(argv, own_process=True) == 0
    gc.collect()
    assert out.read_bytes() == expected
    assert len(merges) == 2 and merges[1]() is not None
    assert [left[0] for left in cli_hunt._UNFREED] == [merges[1]()]
    capsys.readouterr()


def _event(host: str, t: str, **extra: object) -> Event:
    fields = {"EventID": 7045, "Channel": "System", "Computer": host, "TimeCreated": t, **extra}
    return Event(fields, "x.evtx", 1, "evtx")


def test_results_table_fits_80_columns_with_hostile_names():
    r = Results()
    hostile = ["\x1b]52;c;cGF5bG9hZA==\x07evil", "漢字" * 20,
               "x" * 300, "=cmd|' /C calc'!A0", "line\nbreak\u202e"]
    for i, host in enumerate(hostile * 3):
        r.add(Alert(f"rule{i}", "T" * 200 + host, "high", "", ["attack.t1569.002", "attack.t1021.002"],
                    _event(host, f"2024-05-0{1 + i % 5}T10:00:00Z",
                           CommandLine=f"psexec \\\\{host[:40]} cmd")))
    lines = r.lines(width=80)
    assert lines and all(cell_len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "\\x1b" in text and r.to_dict()["hosts"] == len(hostile)


def test_results_keys_are_bounded():
    r = Results(max_keys=5)
    for i in range(20):
        r.add(Alert(f"rule{i}", f"title {i}", "low", "", [], _event(f"host{i}", "2024-05-01T10:00:00Z")))
    d = r.to_dict()
    assert d["alerts"] == 20 and d["rules"] == 5 and d["hosts"] == 5 and d["untracked"] == 30


def test_table_ends_with_results_and_short_readiness(capsys):
    rc, out, err = hunt(capsys, *LOGS, "--rules", "builtin")
    tail = out[out.index("Results summary"):].splitlines()
    assert rc == 0 and all(cell_len(line) <= 80 for line in tail)
    assert any(line.startswith("readiness:") for line in tail)
    assert "(--readiness full)" in out
    _, full, _ = hunt(capsys, *LOGS, "--rules", "builtin", "--readiness", "full")
    assert "(--readiness full)" not in full
    assert len(full.splitlines()) > len(out.splitlines())
    rc, out, _ = hunt(capsys, *LOGS, "--rules", RULES, "--format", "jsonl")
    assert "Results summary" not in out  # machine formats stay clean


def test_results_object_made_only_for_what_keeps_it(capsys, tmp_path, monkeypatch):
    """The summary's ``results`` object is made for ``--summary`` (and a case), not for a hunt
    that writes neither: there it was the parent's work after the last result for nothing."""
    made = []
    real = Results.to_dict

    def counted(self, *args, **kwargs):
        made.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Results, "to_dict", counted)
    rc, out, _ = hunt(capsys, *LOGS, "--rules", RULES, "--format", "jsonl")
    assert rc == 0 and out and not made
    summ = tmp_path / "s.json"
    rc, again, _ = hunt(capsys, *LOGS, "--rules", RULES, "--format", "jsonl", "--summary", str(summ))
    assert rc == 0 and again == out and made == [1]
    assert json.loads(summ.read_text())["results"]["alerts"] == len(out.splitlines())


# -- --timezone and timing -----------------------------------------------------------------------

def test_timezone_for_display_only(capsys, tmp_path):
    rc, out, _ = hunt(capsys, *LOGS, "--rules", RULES, "--timezone", "Europe/Berlin")
    assert rc == 0 and "time (Europe/Berlin)" in out
    assert "2024-05-01 12:00:03" in out and "2024-05-01 10:00:03" not in out  # CEST: UTC+2 in May
    assert "(Europe/Berlin)" in out[out.index("Results summary"):]
    _, jsonl, _ = hunt(capsys, *LOGS, "--rules", RULES, "--format", "jsonl", "--timezone", "Asia/Tokyo")
    _, plain, _ = hunt(capsys, *LOGS, "--rules", RULES, "--format", "jsonl")
    assert jsonl == plain and '"timestamp":"2024-05-01T10:00:03' in plain
    rc, out, _ = hunt(capsys, *LOGS, "--rules", RULES, "--timezone", "local")
    assert rc == 0 and "time (" in out
    rc, out, err = hunt(capsys, *LOGS, "--rules", RULES, "--timezone", "Mars/Olympus")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "not a time zone" in err


def test_stderr_line_tells_wall_and_match_time(capsys, tmp_path):
    summ = tmp_path / "s.json"
    rc, _, err = hunt(capsys, *LOGS, "--rules", RULES, "--format", "jsonl", "--summary", str(summ))
    data = json.loads(summ.read_text())
    assert rc == 0 and " s wall, match " in err
    assert data["seconds_total"] >= data["seconds"]
