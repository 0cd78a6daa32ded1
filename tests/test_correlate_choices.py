"""Issue 20: the correlation defects found by differential testing (each with the issue's example)
and the choices the README "Correlation" section documents, one test each."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from scmwatch.correlate import Correlator, rule_key, spec_from_sigma
from scmwatch.correlate.spec import split_range_condition
from scmwatch.sigma import load_rules
from test_correlate_core import BASE_RULES, Harness, corr


class RangeHarness(Harness):
    """Harness loading documents the way ``load_sigma`` does (range conditions split)."""

    def __init__(self, corr_yaml: str, **kwargs) -> None:
        docs = [split_range_condition(d) for d in yaml.safe_load_all(BASE_RULES + "---\n" + corr_yaml)]
        col = SigmaCollection.from_dicts(docs)
        self.keys = {r.name: rule_key(r) for r in col.rules if r.name}
        self.specs = [spec_from_sigma(r) for r in col.rules if isinstance(r, SigmaCorrelationRule)]
        kwargs.setdefault("lateness", 0)
        self.corr = Correlator(self.specs, **kwargs)
        self.n = 0
        self.alerts = []


# ---------------------------------------------------------------- defect 1: chained alert lost

LOST_CHAIN = (
    corr("type: event_count\nrules: [a]\ngroup-by: [Computer]\ntimespan: 10s\ncondition: {lt: 5}", "inner")
    + "\n---\n"
    + corr("type: temporal_ordered\nrules: [inner, b]\ngroup-by: [Computer]\ntimespan: 5s", "outer")
)


def test_chained_alert_judged_at_close_is_not_lost_to_unrelated_traffic():
    """The issue's example: inner matches at t=0, b at t=2; another host's event at t=8 used to
    drop the outer group before the inner window closed (at t=10), losing the outer alert."""
    for other_host in (False, True):
        h = Harness(LOST_CHAIN)
        h.push("a", 0)
        h.push("b", 2)
        if other_host:
            h.push("c", 8, Computer="HOST9")
        titles = [a.title for a in h.finish()]
        assert titles == ["outer"], (other_host, titles)


def test_chained_alert_with_later_traffic_on_the_same_clock():
    """Inner decided by a sweep long after its event time: outer still sees it at t=0."""
    h = Harness(LOST_CHAIN)
    h.push("a", 0)
    h.push("b", 2)
    for t in range(8, 60, 3):
        h.push("c", t, Computer="HOST9")
    alerts = h.finish()
    assert [a.title for a in alerts] == ["outer"]
    assert [r["ref"] for r in alerts[0].correlation["rules"]] == ["inner", "b"]


# ---------------------------------------------------------------- defect 2: rejection is loud

PERCENTILE_NO_KEY = """
title: base
name: base
logsource: {product: windows, service: security}
detection: {sel: {EventID: 4625}, condition: sel}
---
title: spec example without percentile
correlation:
  type: value_percentile
  rules: [base]
  group-by: [TargetUserName]
  timespan: 1d
  condition: {field: LogonType, gte: 60}
---
title: outer of the rejected one
correlation:
  type: event_count
  rules: [spec example without percentile]
  timespan: 1d
  condition: {gte: 1}
"""


def test_correlation_rejected_at_conversion_is_reported_and_fails_rules_check(tmp_path):
    p = tmp_path / "corr.yml"
    p.write_text(PERCENTILE_NO_KEY.replace("rules: [spec example without percentile]",
                                           "rules: [pct]").replace(
        "title: spec example without percentile", "title: spec example without percentile\nname: pct"),
        encoding="utf-8")
    rs = load_rules([p])
    reasons = [r for _, r in rs.rejected]
    assert any("value_percentile needs 'percentile:'" in r for r in reasons), reasons
    assert any("references a rejected correlation" in r for r in reasons), reasons
    assert rs.correlations == []
    run = subprocess.run([sys.executable, "-m", "scmwatch", "rules", "check", str(p)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "value_percentile needs 'percentile:'" in run.stdout + run.stderr


# ---------------------------------------------------------------- choices


def test_an_event_counts_once_per_correlation():
    """An event matching two referenced rules counts once, as the first in the rules list."""
    h = Harness(corr("type: event_count\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m\n"
                     "condition: {gte: 2}"))
    h.push("a,b", 0)
    assert h.finish() == []
    h = Harness(corr("type: value_sum\nrules: [a, b]\ntimespan: 1m\ncondition: {gte: 2, field: N}"))
    h.push("a,b", 0, N=1)
    assert h.finish() == []
    for ctype in ("temporal", "temporal_ordered"):
        h = Harness(corr(f"type: {ctype}\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m"))
        h.push("b,a", 0)  # one event is not "a and b"
        assert h.finish() == []
        h = Harness(corr(f"type: {ctype}\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m"))
        h.push("b,a", 0)
        h.push("b", 1)  # ... but it counts as a (first in the list), so a later b completes it
        assert len(h.finish()) == 1


def test_temporal_ordered_ties_follow_the_rules_list_not_file_position():
    for first, second in (("a", "b"), ("b", "a")):
        h = Harness(corr("type: temporal_ordered\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m"))
        h.push(first, 5)
        h.push(second, 5)
        alerts = h.finish()
        assert len(alerts) == 1, (first, second)
        assert [r["ref"] for r in alerts[0].correlation["rules"]] == ["a", "b"]
    # strictly reversed times still do not count
    h = Harness(corr("type: temporal_ordered\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m"))
    h.push("b", 5)
    h.push("a", 6)
    assert h.finish() == []


def test_group_by_and_value_count_compare_like_rule_matching():
    """Case-insensitive strings, numbers equal to their decimal text: "3", 3 and 3.0 are one
    group / one distinct value, "Admin" and "admin" too; " 3" and "03" are other strings."""
    h = Harness(corr("type: event_count\nrules: [a]\ngroup-by: [LogonType]\ntimespan: 1m\n"
                     "condition: {gte: 3}"))
    h.push("a", 0, LogonType="3")
    h.push("a", 1, LogonType=3)
    h.push("a", 2, LogonType=3.0)
    alerts = h.finish()
    assert len(alerts) == 1 and len(alerts[0].events) == 3
    same = ["Admin", "admin", "ADMIN", 3, "3", 3.0, True, "true"]  # admin, 3, true
    for threshold, fires in ((3, True), (4, False)):
        h = Harness(corr("type: value_count\nrules: [a]\ntimespan: 1m\n"
                         f"condition: {{gte: {threshold}, field: User}}"))
        for i, user in enumerate(same):
            h.push("a", i, User=user)
        assert len(h.finish()) == (1 if fires else 0), threshold
    h = Harness(corr("type: value_count\nrules: [a]\ntimespan: 1m\ncondition: {gte: 5, field: User}"))
    for i, user in enumerate(["admin", 3, True, " 3", "03"]):  # padded numbers are other strings
        h.push("a", i, User=user)
    assert len(h.finish()) == 1


def test_range_condition_gt_and_lte():
    body = "type: event_count\nrules: [a]\ngroup-by: [Computer]\ntimespan: 1m\ncondition: {gt: 1, lte: 3}"
    for n, fires in ((1, False), (2, True), (3, True), (4, False)):
        h = RangeHarness(corr(body))
        assert not h.specs[0].eager  # lte: judged when the window closes
        for i in range(n):
            h.push("a", i)
        assert len(h.finish()) == (1 if fires else 0), n
    h = RangeHarness(corr(body))
    assert h.specs[0].describe_condition() == "count gt 1 and count lte 3"
    eager = RangeHarness(corr(body.replace("lte: 3", "gte: 3")))
    assert eager.specs[0].eager


def test_range_condition_loads_through_rules_check(tmp_path):
    p = tmp_path / "r.yml"
    p.write_text(textwrap.dedent("""
        title: base
        name: base
        logsource: {product: windows, service: security}
        detection: {sel: {EventID: 4625}, condition: sel}
        ---
        title: few failures
        correlation:
          type: event_count
          rules: [base]
          group-by: [TargetUserName]
          timespan: 1h
          condition: {gt: 100, lte: 200}
        """), encoding="utf-8")
    rs = load_rules([p])
    assert not rs.rejected, rs.rejected
    assert len(rs.correlations) == 1
    assert "x-scmwatch-range" not in spec_from_sigma(rs.correlations[0]).extra


def test_generate_any_true_wins_documented():
    """``generate``: a referenced rule alerts alone when ANY correlation referencing it says
    ``true`` (pySigma's backends: any ``false`` wins); the outcome does not depend on order."""
    a = corr("type: temporal\nrules: [a, b]\ntimespan: 1m", "x")
    b = corr("type: event_count\nrules: [a]\ntimespan: 1m\ngenerate: true\ncondition: {gte: 5}", "y")
    for text in (a + "\n---\n" + b, b + "\n---\n" + a):
        h = Harness(text)
        assert h.corr.suppressed == {h.keys["b"]}


def test_hold_back_heap_is_bounded_and_counts_early_releases():
    h = Harness(LOST_CHAIN, max_entries_per_group=50)
    for i in range(400):
        h.push("b", i / 100)  # 400 inputs of the outer rule within its hold-back lag
    assert max(len(st.held) for st in h.corr._states) <= 50
    assert h.corr.summary()["held_released_early"] == 350
    h.finish()
