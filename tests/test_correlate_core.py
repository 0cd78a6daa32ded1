"""Correlation semantics: every type, option and window edge, fed (event, matched rule) pairs.

The single-event engine is not involved here: each input names the rule(s) it matched, so a
failure points at the correlator alone. End-to-end runs through the engine and the CLI live
in test_correlate_pack.py.
"""

from __future__ import annotations

import heapq
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from scmwatch.correlate import (
    Candidate,
    CandidateSelector,
    Correlator,
    EntityLinks,
    rule_key,
    spec_from_sigma,
    time_us,
)
from scmwatch.correlate.links import extract_fact
from scmwatch.events.model import Event

BASE_RULES = """
title: rule a
name: a
id: 0a000000-0000-4000-8000-00000000000a
logsource: {product: windows}
detection: {sel: {EventID: 1}, condition: sel}
---
title: rule b
name: b
id: 0b000000-0000-4000-8000-00000000000b
logsource: {product: windows}
detection: {sel: {EventID: 2}, condition: sel}
---
title: rule c
name: c
logsource: {product: windows}
detection: {sel: {EventID: 3}, condition: sel}
"""

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Harness:
    """Loads rule documents with pySigma and pushes (matched refs, fields) pairs."""

    def __init__(self, corr_yaml: str, **kwargs) -> None:
        col = SigmaCollection.from_yaml(BASE_RULES + "---\n" + corr_yaml)
        self.keys = {r.name: rule_key(r) for r in col.rules if r.name}
        self.specs = [spec_from_sigma(r) for r in col.rules if isinstance(r, SigmaCorrelationRule)]
        kwargs.setdefault("lateness", 0)  # release at once: push() returns alerts immediately
        self.corr = Correlator(self.specs, **kwargs)
        self.n = 0
        self.alerts = []

    def event(self, refs: str, t: float, file_index: int = 0, **fields) -> Event:
        self.n += 1
        fields.setdefault("Computer", "HOST1")
        fields["TimeCreated"] = ts(t)
        return Event(fields, f"file{file_index}.json", self.n, "json")

    def cand(self, refs: str, t: float, file_index: int = 0, **fields) -> Candidate:
        ev = self.event(refs, t, file_index, **fields)
        keys = tuple(self.keys[r] for r in refs.split(",") if r)
        return Candidate(time_us(ev), file_index, self.n, ev, keys)

    def push(self, refs: str, t: float, **fields) -> list:
        out = self.corr.push(self.cand(refs, t, **fields))
        self.alerts.extend(out)
        return out

    def finish(self) -> list:
        self.alerts.extend(self.corr.finish())
        return self.alerts


def corr(body: str, title: str = "corr", extra: str = "") -> str:
    return f"title: {title}\nname: {title}\n{extra}correlation:\n" + "\n".join(
        "  " + line for line in body.strip().splitlines()
    )


# ---------------------------------------------------------------- event_count + window edges


EC3 = corr("type: event_count\nrules: [a]\ngroup-by: [Computer]\ntimespan: 60s\ncondition: {gte: 3}")


def test_event_count_fires_with_all_events_in_time_order():
    h = Harness(EC3)
    for t in (0, 10, 20):
        h.push("a", t)
    alerts = h.finish()
    assert len(alerts) == 1
    a = alerts[0]
    assert [e.record_id for e in a.events] == [1, 2, 3]
    d = a.to_dict()
    assert d["correlation"]["type"] == "event_count"
    assert d["correlation"]["group_by"] == {"Computer": "HOST1"}
    assert d["correlation"]["window"]["start"] == ts(0)
    assert d["correlation"]["window"]["end"] == ts(20)
    assert [e["record_id"] for e in d["events"]] == [1, 2, 3]
    assert all(e["source"] == "file0.json" for e in d["events"])
    assert d["record_id"] == 3 and d["timestamp"] == ts(20)


def test_window_edge_exactly_at_timespan_is_inside():
    h = Harness(EC3)
    for t in (0, 30, 60):
        h.push("a", t)
    assert len(h.finish()) == 1


def test_window_edge_one_microsecond_past_timespan_is_outside():
    h = Harness(EC3)
    for t in (0, 30, 60.000001):
        h.push("a", t)
    assert h.finish() == []


def test_event_count_resets_after_alert_and_groups_are_separate():
    h = Harness(EC3)
    for t in range(6):
        h.push("a", t)  # two bursts of three on HOST1
    for t in range(2):
        h.push("a", t + 10, Computer="HOST2")
    alerts = h.finish()
    assert [a.correlation["group_by"]["Computer"] for a in alerts] == ["HOST1", "HOST1"]
    assert [len(a.events) for a in alerts] == [3, 3]


def test_group_values_compare_case_insensitively():
    h = Harness(EC3)
    h.push("a", 0, Computer="HOST1")
    h.push("a", 1, Computer="host1")
    h.push("a", 2, Computer="Host1")
    assert len(h.finish()) == 1


def test_event_without_group_field_is_skipped_and_counted():
    h = Harness(EC3)
    for t in range(3):
        h.push("a", t, Computer="")
    assert h.finish() == []
    assert h.corr.summary()["missing_group_field"] == 3


def test_no_group_by_means_one_global_group():
    h = Harness(corr("type: event_count\nrules: [a, b]\ntimespan: 1m\ncondition: {gt: 2}"))
    h.push("a", 0, Computer="X")
    h.push("b", 1, Computer="Y")
    h.push("a", 2, Computer="Z")
    assert len(h.finish()) == 1


@pytest.mark.parametrize(
    "op,counts,expected",
    [
        ("lt: 3", [2], 1),
        ("lt: 3", [3], 0),
        ("lte: 3", [3], 1),
        ("eq: 2", [2, 3], 1),
        ("neq: 2", [2, 1], 1),
    ],
)
def test_non_monotone_conditions_are_evaluated_when_the_window_closes(op, counts, expected):
    h = Harness(
        corr(f"type: event_count\nrules: [a]\ngroup-by: [Computer]\ntimespan: 60s\ncondition: {{{op}}}")
    )
    start = 0
    for n in counts:
        for i in range(n):
            h.push("a", start + i)
        start += 1000  # next window, far away
    alerts = h.finish()
    assert len(alerts) == expected
    # an at-close alert carries the whole window
    for a in alerts:
        assert len(a.events) in counts


def test_lt_window_is_closed_by_a_later_event_not_only_at_end_of_input():
    h = Harness(
        corr("type: event_count\nrules: [a]\ngroup-by: [Computer]\ntimespan: 60s\ncondition: {lt: 2}")
    )
    assert h.push("a", 0) == []
    closed = h.push("a", 61)  # the first window [0, 60] is over: evaluated now
    assert len(closed) == 1 and [e.record_id for e in closed[0].events] == [1]


# ---------------------------------------------------------------- value_* types


def test_value_count_counts_distinct_values_per_group():
    h = Harness(
        corr(
            "type: value_count\nrules: [a]\ngroup-by: [IpAddress]\ntimespan: 10m\n"
            "condition: {gte: 3, field: Computer}"
        )
    )
    for i, host in enumerate(["B", "b", "C", "C"]):  # only 2 distinct (case-insensitive)
        h.push("a", i, IpAddress="10.0.0.9", Computer=host)
    assert h.corr.alerts == 0
    h.push("a", 5, IpAddress="10.0.0.9", Computer="D")
    alerts = h.finish()
    assert len(alerts) == 1
    assert len(alerts[0].events) == 5
    assert alerts[0].correlation["group_by"] == {"IpAddress": "10.0.0.9"}


def test_value_count_ignores_events_without_the_field():
    h = Harness(
        corr("type: value_count\nrules: [a]\ntimespan: 10m\ncondition: {gte: 2, field: TargetUserName}")
    )
    h.push("a", 0, TargetUserName="x")
    h.push("a", 1)
    assert h.finish() == []
    assert h.corr.summary()["missing_value_field"] == 1


@pytest.mark.parametrize(
    "ctype,cond,values,fires",
    [
        ("value_sum", "gt: 100", [40, 40, 30], True),
        ("value_sum", "gt: 100", [40, 40, 20], False),
        ("value_avg", "gte: 50", [10, 70, "80"], True),  # decimal strings parse
        ("value_avg", "gte: 50", [10, 70, 40], False),
        ("value_median", "gt: 5", [1, 9, 7], True),
        ("value_median", "gt: 5", [1, 9, 3], False),
        ("value_percentile", "gt: 70, percentile: 90", [10, 20, 30, 40, 100], True),  # p90 = 76
        ("value_percentile", "gt: 70, percentile: 50", [10, 20, 30, 40, 100], False),
        ("value_sum", "lt: 10", [1, 2, 3], True),  # at close
        ("value_sum", "lt: 10", [5, 5], False),
    ],
)
def test_numeric_aggregations(ctype, cond, values, fires):
    h = Harness(
        corr(
            f"type: {ctype}\nrules: [a]\ngroup-by: [Computer]\ntimespan: 1h\n"
            f"condition: {{{cond}, field: Bytes}}"
        )
    )
    for i, v in enumerate(values):
        h.push("a", i, Bytes=v)
    alerts = h.finish()
    assert len(alerts) == (1 if fires else 0)
    if fires:
        assert len(alerts[0].events) == len(values)


def test_numeric_aggregation_ignores_non_numbers():
    h = Harness(corr("type: value_sum\nrules: [a]\ntimespan: 1h\ncondition: {gte: 2, field: Bytes}"))
    h.push("a", 0, Bytes="lots")
    for padded in (" 5", "5 ", "0x5", "inf", "nan", "1e3", "\uff15", "+5", "05"):  # parsed strictly
        h.push("a", 0, Bytes=padded)
    h.push("a", 1, Bytes=1)
    assert h.corr.alerts == 0
    h.push("a", 2, Bytes="1")
    assert len(h.finish()) == 1


def test_sliding_window_drops_old_values_from_sum():
    h = Harness(corr("type: value_sum\nrules: [a]\ntimespan: 10s\ncondition: {gte: 10, field: N}"))
    h.push("a", 0, N=6)
    h.push("a", 11, N=6)  # the first one slid out
    assert h.finish() == []


# ---------------------------------------------------------------- temporal / temporal_ordered

TEMPORAL = corr("type: temporal\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 30s")
ORDERED = corr("type: temporal_ordered\nrules: [a, b, c]\ngroup-by: [Computer]\ntimespan: 30s")


def test_temporal_any_order_within_window():
    h = Harness(TEMPORAL)
    h.push("b", 0)
    h.push("a", 30)
    alerts = h.finish()
    assert len(alerts) == 1
    assert [r["ref"] for r in alerts[0].correlation["rules"]] == ["b", "a"]


def test_temporal_outside_window_or_other_group():
    h = Harness(TEMPORAL)
    h.push("a", 0)
    h.push("b", 31)
    h.push("a", 40, Computer="HOST2")
    h.push("b", 41, Computer="HOST3")
    assert h.finish() == []


def test_temporal_repeated_single_rule_is_not_enough():
    h = Harness(TEMPORAL)
    for t in range(5):
        h.push("a", t)
    assert h.finish() == []


def test_temporal_ordered_in_order_fires_with_the_chain():
    h = Harness(ORDERED)
    h.push("a", 0)
    h.push("a", 1)
    h.push("b", 10)
    h.push("c", 30)  # exactly at the edge for the first a
    alerts = h.finish()
    assert len(alerts) == 1
    assert [e.record_id for e in alerts[0].events] == [1, 3, 4]


@pytest.mark.parametrize("order", [("b", "a", "c"), ("a", "c", "b"), ("c", "b", "a")])
def test_temporal_ordered_wrong_order_does_not_fire(order):
    h = Harness(ORDERED)
    for i, ref in enumerate(order):
        h.push(ref, i)
    assert h.finish() == []


def test_temporal_ordered_same_events_fire_as_temporal():
    unordered = Harness(corr("type: temporal\nrules: [a, b, c]\ngroup-by: [Computer]\ntimespan: 30s"))
    for i, ref in enumerate(("c", "b", "a")):
        unordered.push(ref, i)
    assert len(unordered.finish()) == 1


def test_temporal_ordered_count_condition_counts_longest_ordered_chain():
    h = Harness(
        corr(
            "type: temporal_ordered\nrules: [a, b, c]\ngroup-by: [Computer]\ntimespan: 30s\n"
            "condition: {gte: 2}"
        )
    )
    h.push("c", 0)
    h.push("a", 1)
    assert h.corr.alerts == 0  # c before a: chain length 1
    h.push("c", 2)
    alerts = h.finish()
    assert len(alerts) == 1
    assert [r["ref"] for r in alerts[0].correlation["rules"]] == ["a", "c"]


def test_extended_condition_without_not_is_eager():
    h = Harness(
        corr(
            "type: temporal\nrules: [a, b, c]\ngroup-by: [Computer]\ntimespan: 1m\ncondition: a and (b or c)"
        )
    )
    h.push("a", 0)
    assert h.push("c", 5) != []


def test_extended_condition_with_not_waits_for_the_window_to_close():
    h = Harness(
        corr("type: temporal\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m\ncondition: a and not b")
    )
    h.push("a", 0)  # HOST1: a then b -> no alert
    h.push("b", 30)
    h.push("a", 31, Computer="HOST2")  # HOST2: a only -> alert
    alerts = h.finish()
    assert [a.correlation["group_by"]["Computer"] for a in alerts] == ["HOST2"]
    assert alerts[0].correlation["condition"] == "(a and not b)"


def test_extended_condition_on_temporal_ordered_respects_order():
    h = Harness(
        corr(
            "type: temporal_ordered\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m\n"
            "condition: a and not b"
        )
    )
    h.push("b", 0)  # b *before* a does not count as "b followed"
    h.push("a", 1)
    h.push("a", 0, Computer="HOST2")
    h.push("b", 1, Computer="HOST2")  # a then b: condition false
    alerts = h.finish()
    assert [a.correlation["group_by"]["Computer"] for a in alerts] == ["HOST1"]


# ---------------------------------------------------------------- aliases, generate, chains


def test_aliases_join_different_field_names():
    h = Harness(
        corr(
            "type: temporal_ordered\nrules: [a, b]\ngroup-by: [who]\ntimespan: 1m\n"
            "aliases:\n  who:\n    a: SubjectUserName\n    b: TargetUserName"
        )
    )
    h.push("a", 0, SubjectUserName="alice", Computer="X")
    h.push("b", 5, TargetUserName="ALICE", Computer="Y")
    h.push("a", 6, SubjectUserName="bob")
    h.push("b", 7, TargetUserName="carol")
    alerts = h.finish()
    assert len(alerts) == 1
    assert alerts[0].correlation["group_by"] == {"who": "alice"}


def test_generate_false_suppresses_referenced_rules_true_keeps_them():
    quiet = Harness(corr("type: temporal\nrules: [a, b]\ntimespan: 1m"))
    loud = Harness(corr("type: temporal\nrules: [a, b]\ntimespan: 1m\ngenerate: true"))
    assert quiet.corr.suppressed == {quiet.keys["a"], quiet.keys["b"]}
    assert loud.corr.suppressed == frozenset()
    assert quiet.keys["a"] == "0a000000-0000-4000-8000-00000000000a"  # rules join by UUID
    assert quiet.keys["c"] == "name:c"  # ... or by name when they have none


def test_generate_true_anywhere_wins_over_false():
    h = Harness(
        corr("type: temporal\nrules: [a, b]\ntimespan: 1m", "x")
        + "\n---\n"
        + corr("type: event_count\nrules: [a]\ntimespan: 1m\ngenerate: true\ncondition: {gte: 5}", "y")
    )
    assert h.corr.suppressed == {h.keys["b"]}


CHAIN = (
    corr("type: temporal_ordered\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m", "pair")
    + "\n---\n"
    + corr(
        "type: event_count\nrules: [pair]\ngroup-by: [Computer]\ntimespan: 1h\ncondition: {gte: 2}", "pairs"
    )
)


def test_chained_correlation_fires_on_inner_alerts_and_keeps_all_evidence():
    h = Harness(CHAIN)
    assert h.keys["pair"] in h.corr.suppressed  # inner generate false: not emitted alone
    h.push("a", 0)
    h.push("b", 10)
    h.push("a", 600)
    h.push("b", 601)
    h.push("a", 700, Computer="HOST2")
    h.push("b", 701, Computer="HOST2")
    alerts = h.finish()
    assert [a.title for a in alerts] == ["pairs"]
    a = alerts[0]
    assert [e.record_id for e in a.events] == [1, 2, 3, 4]
    assert len(a.correlation["chain"]) == 2
    assert a.correlation["chain"][0]["title"] == "pair"
    assert a.correlation["window"]["start"] == ts(0)


def test_chained_inner_generate_true_is_emitted_too():
    h = Harness(CHAIN.replace("timespan: 1h", "timespan: 1h\n  generate: true"))
    h.push("a", 0)
    h.push("b", 10)
    assert [a.title for a in h.finish()] == ["pair"]


# An inner correlation evaluated when its window closes (`not` condition), listed AFTER the
# correlation that references it: closing must still go inner-first.
CHAIN_CLOSE_OUTER_FIRST = (
    corr("type: event_count\nrules: [lone]\ngroup-by: [Computer]\ntimespan: 1h\ncondition: {lte: 3}", "outer")
    + "\n---\n"
    + corr(
        "type: temporal\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 1m\ncondition: a and not b", "lone"
    )
)


@pytest.mark.parametrize("at_end", [True, False], ids=["end-of-input", "sweep"])
@pytest.mark.parametrize("outer_first", [True, False], ids=["outer-listed-first", "inner-listed-first"])
def test_chain_with_close_evaluated_inner_does_not_depend_on_rule_order(at_end: bool, outer_first: bool):
    h = Harness(CHAIN_CLOSE_OUTER_FIRST)
    specs = sorted(h.specs, key=lambda s: (s.title != "outer") if outer_first else (s.title == "outer"))
    assert (specs[0].title == "outer") == outer_first
    h.corr = Correlator(specs, lateness=0)
    h.push("a", 0)  # no b follows within a minute: "lone" holds when its window closes
    if not at_end:
        h.push("c", 300, Computer="HOST2")  # later traffic sweeps the closed window
    assert [a.title for a in h.finish()] == ["outer"]


# ---------------------------------------------------------------- ordering and lateness


def test_out_of_order_within_lateness_equals_in_order():
    in_order = Harness(ORDERED, lateness=60)
    shuffled = Harness(ORDERED, lateness=60)
    script = [("a", 0), ("b", 5), ("c", 9), ("a", 100, "HOST2"), ("b", 101, "HOST2"), ("c", 102, "HOST2")]
    cands = [
        in_order.cand(r, t, Computer=h) for r, t, *rest in script for h in [rest[0] if rest else "HOST1"]
    ]
    for c in cands:
        in_order.alerts += in_order.corr.push(c)
    swapped = [cands[2], cands[0], cands[1], cands[5], cands[3], cands[4]]  # c arrives before a, b
    for c in swapped:
        shuffled.alerts += shuffled.corr.push(c)
    a1, a2 = in_order.finish(), shuffled.finish()
    assert len(a1) == 2
    assert [json.dumps(x.to_dict(), sort_keys=True) for x in a1] == [
        json.dumps(x.to_dict(), sort_keys=True) for x in a2
    ]
    assert shuffled.corr.summary()["late_events"] == 0


def test_event_later_than_lateness_is_counted_not_correlated():
    h = Harness(ORDERED, lateness=5)
    h.push("b", 3)
    h.push("c", 4)
    h.push("a", 100, Computer="elsewhere")  # pushes the watermark far ahead
    h.push("a", 0)  # 100 s late
    assert h.finish() == []
    s = h.corr.summary()
    assert s["late_events"] == 1
    assert s["late_examples"][0]["record_id"] == 4
    assert s["late_examples"][0]["behind_seconds"] >= 95


def test_candidates_merged_by_sort_key_correlate_across_files():
    h = Harness(TEMPORAL)
    f0 = [h.cand("a", t, file_index=0) for t in (0, 50, 100)]
    f1 = [h.cand("b", t, file_index=1) for t in (10, 60, 70)]
    merged = list(heapq.merge(f1, f0, key=Candidate.sort_key))
    assert [c.time_us for c in merged] == sorted(c.time_us for c in merged)
    for c in merged:
        h.alerts += h.corr.push(c)
    # (0, 10), (50, 60), and (70, 100): exactly 30 s apart, inside the window (edge inclusive)
    assert [[e.record_id for e in a.events] for a in h.finish()] == [[1, 4], [2, 5], [6, 3]]


def test_untimed_candidates_are_counted():
    h = Harness(TEMPORAL)
    ev = Event({"Computer": "X"}, "f", 1, "json")
    h.corr.push(Candidate(time_us(ev), 0, 0, ev, (h.keys["a"],)))
    assert h.corr.summary()["untimed_events"] == 1


# ---------------------------------------------------------------- bounded state


def test_many_groups_state_stays_bounded_by_expiry():
    h = Harness(
        corr("type: event_count\nrules: [a]\ngroup-by: [IpAddress]\ntimespan: 10s\ncondition: {gte: 3}")
    )
    for i in range(50_000):  # a new group every 0.1 s; each lives 10 s -> ~100 alive
        h.push("a", i * 0.1, IpAddress=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    h.finish()
    s = h.corr.summary()
    assert s["groups_peak"] <= 110
    assert s["state_peak"] <= 110
    assert s["groups_evicted"] == 0
    assert not h.corr._states[0].groups


def test_group_cap_evicts_oldest_and_counts():
    h = Harness(
        corr("type: event_count\nrules: [a]\ngroup-by: [IpAddress]\ntimespan: 1d\ncondition: {gte: 2}"),
        max_groups=100,
    )
    for i in range(1000):
        h.push("a", i, IpAddress=f"ip{i}")
    h.push("a", 1001, IpAddress="ip999")  # recent group survived the cap
    alerts = h.finish()
    s = h.corr.summary()
    assert s["groups_peak"] == 100
    assert s["groups_evicted"] == 900
    assert len(alerts) == 1


def test_entries_per_group_cap():
    h = Harness(
        corr("type: event_count\nrules: [a]\ntimespan: 1d\ncondition: {gte: 1000}"), max_entries_per_group=50
    )
    for i in range(200):
        h.push("a", i)
    h.finish()
    s = h.corr.summary()
    assert s["state_peak"] <= 51 and s["entries_truncated"] == 150


def test_randomized_stream_matches_brute_force_temporal_ordered():
    """The streaming result equals a direct search over all pairs (eager, reset after alert)."""
    rng = random.Random(7)
    h = Harness(corr("type: temporal_ordered\nrules: [a, b]\ngroup-by: [Computer]\ntimespan: 20s"))
    t = 0.0
    script = []
    for _ in range(400):
        t += rng.choice([0.5, 3, 7, 15])
        script.append((rng.choice("ab"), round(t, 3), rng.choice(["H1", "H2"])))
    for ref, when, host in script:
        h.push(ref, when, Computer=host)
    got = [(a.correlation["group_by"]["Computer"], a.correlation["window"]["end"]) for a in h.finish()]
    expected = []
    for host in ("H1", "H2"):
        pending: list[int] = []  # a-times (µs) since the last alert
        for ref, when, hh in script:
            if hh != host:
                continue
            when_us = round(when * 1_000_000)
            if ref == "a":
                pending.append(when_us)
            elif any(x >= when_us - 20_000_000 for x in pending):
                expected.append((host, ts(when)))
                pending = []
    assert sorted(got) == sorted(expected)


# ---------------------------------------------------------------- entity links


def test_links_resolve_logon_session_source_and_names():
    links = EntityLinks()
    logon = {
        "EventID": 4624,
        "Channel": "Security",
        "Computer": "B.corp.local",
        "LogonType": 3,
        "TargetLogonId": "0x3e7abc",
        "IpAddress": "::ffff:10.0.0.5",
        "WorkstationName": "ALPHA",
    }
    links.apply(extract_fact(logon))
    install = {"EventID": 4697, "Computer": "b.corp.local", "SubjectLogonId": "0x3E7ABC"}
    assert links.derive(install, "link.source_ip") == "10.0.0.5"
    assert links.derive(install, "link.source_host") == "alpha"
    assert links.derive(install, "link.host") == "b"
    # an address-only session still finds the name through the host<->IP map
    links.apply(
        extract_fact(
            {
                "EventID": 5145,
                "Channel": "Security",
                "Computer": "B",
                "IpAddress": "10.0.0.5",
                "SubjectLogonId": "0x99",
            }
        )
    )
    assert links.derive({"Computer": "B", "SubjectLogonId": "0x99"}, "link.source_host") == "alpha"
    # unknown session: nothing derived
    assert links.derive({"Computer": "B", "SubjectLogonId": "0x1"}, "link.source_ip") is None


@pytest.mark.parametrize(
    "cmd,target",
    [
        (r"PsExec.exe \\bravo -accepteula -s cmd.exe", "bravo"),
        (r'"C:\Windows\system32\sc.exe" \\BRAVO.corp.local create evil binPath= c:\x.exe', "bravo"),
        (r"paexec.exe \\10.0.0.7 -s cmd", "bravo7"),
        (r"sc.exe \\192.168.9.9 start x", "192.168.9.9"),
        (r"cmd.exe /c echo hi > \\.\pipe\x", None),
        (r"sc.exe create x binPath= c:\x.exe", None),
    ],
)
def test_links_target_host_from_command_line(cmd, target):
    links = EntityLinks()
    links.apply(("ipname", "10.0.0.7", "bravo7"))
    assert links.derive({"CommandLine": cmd}, "link.target_host") == target


def test_links_learn_host_ips_from_sysmon_network_and_dns():
    links = EntityLinks()
    links.apply(
        extract_fact(
            {
                "EventID": 3,
                "Channel": "Microsoft-Windows-Sysmon/Operational",
                "Computer": "alpha.corp",
                "Initiated": "true",
                "SourceIp": "10.0.0.5",
                "DestinationIp": "10.0.0.7",
                "DestinationHostname": "bravo.corp",
            }
        )
    )
    links.apply(
        extract_fact(
            {
                "EventID": 22,
                "Channel": "Microsoft-Windows-Sysmon/Operational",
                "Computer": "alpha",
                "QueryName": "charlie.corp",
                "QueryResults": "type:  5 x.corp;::ffff:10.0.0.8;",
            }
        )
    )
    assert links.ip_names["10.0.0.5"] == "alpha"
    assert links.ip_names["10.0.0.7"] == "bravo"
    assert links.ip_names["10.0.0.8"] == "charlie"


def _ev(n: int, t: float, **fields) -> Event:
    return Event({"TimeCreated": ts(t), **fields}, "f", n, "json")


def test_selector_gates_link_events_by_event_id_and_need():
    sessions = CandidateSelector(frozenset({"k"}), needs={"sessions"})
    names = CandidateSelector(frozenset({"k"}), needs={"names"})
    nothing = CandidateSelector(frozenset({"k"}))
    assert sessions.select(_ev(1, 0, EventID=4688, Computer="x"), [], 0, 0) is None
    logon = _ev(
        2, 0, EventID="4624", Computer="b", TargetLogonId="0x1", IpAddress="10.1.1.1", WorkstationName="A"
    )
    c = sessions.select(logon, [], 0, 1)
    assert c is not None and c.event is None and c.fact[0] == "session"
    assert names.select(logon, [], 0, 1).fact == ("ipname", "10.1.1.1", "a")
    assert nothing.select(logon, [], 0, 1) is None
    share = _ev(
        3, 0, EventID=5145, Channel="Security", Computer="b", SubjectLogonId="0x2", IpAddress="10.1.1.1"
    )
    assert names.select(share, [], 0, 2) is None and sessions.select(share, [], 0, 2) is not None


def test_selector_skips_repeated_name_facts_within_a_file_only():
    sel = CandidateSelector(frozenset(), needs={"names"})
    conn = {
        "EventID": 3,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Computer": "alpha",
        "Initiated": "true",
        "SourceIp": "10.0.0.5",
        "DestinationIp": "8.8.8.8",
    }
    assert sel.select(_ev(1, 0, **conn), [], 0, 0).fact == ("ipname", "10.0.0.5", "alpha")
    assert sel.select(_ev(2, 30, **conn), [], 0, 1) is None  # same raw event again: skipped unparsed
    other = dict(conn, DestinationIp="1.1.1.1")  # new raw values, same fact within 60 s: dropped
    assert sel.select(_ev(3, 40, **other), [], 0, 2) is None
    assert sel.select(_ev(4, 61, **dict(conn, DestinationIp="9.9.9.9")), [], 0, 3) is not None  # refreshed
    moved = dict(conn, Computer="bravo")  # the address now belongs to another host: emitted at once
    assert sel.select(_ev(5, 62, **moved), [], 0, 4).fact == ("ipname", "10.0.0.5", "bravo")
    assert sel.select(_ev(6, 63, **conn), [], 1, 0) is not None  # a new file starts afresh
    sel.RAW_REFRESH = 3
    assert sel.select(_ev(7, 200, **conn), [], 1, 3) is not None  # raw repeat, but 3 events later


def test_cross_host_chain_via_links():
    """host A runs `psexec \\\\B`, B logs a network logon from A's address, then the install."""
    h = Harness(
        corr(
            "type: temporal_ordered\nrules: [a, b]\ngroup-by: [target, source]\ntimespan: 1m\n"
            "aliases:\n"
            "  target: {a: link.target_host, b: link.host}\n"
            "  source: {a: link.host, b: link.source_host}"
        )
    )
    h.push("a", 0, Computer="ALPHA.corp", CommandLine=r"psexec.exe \\bravo -s cmd")
    fact = extract_fact(
        {
            "EventID": 4624,
            "Computer": "BRAVO.corp",
            "TargetLogonId": "0x77",
            "IpAddress": "10.0.0.5",
            "WorkstationName": "-",
        }
    )
    h.corr.push(Candidate(time_us(h.event("", 1)), 0, 99, None, (), fact))
    h.corr.push(Candidate(time_us(h.event("", 1)), 0, 100, None, (), ("ipname", "10.0.0.5", "alpha")))
    h.push("b", 2, Computer="BRAVO.corp", SubjectLogonId="0x77")
    # a different source on the same target does not join
    h.push("b", 3, Computer="BRAVO.corp", SubjectLogonId="0x78")
    alerts = h.finish()
    assert len(alerts) == 1
    assert alerts[0].correlation["group_by"] == {"target": "bravo", "source": "alpha"}


def test_fast_time_parse_agrees_with_the_event_model():
    from scmwatch.correlate.stream import _fast_us
    from scmwatch.events.model import parse_time

    rng = random.Random(3)
    for _ in range(2000):
        when = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 4e9))
        for text in (
            when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "3Z",
        ):  # EVTX writes 7 digits
            assert _fast_us(text) == round(parse_time(text) * 1_000_000), text
    assert _fast_us("2024-05-01 10:00:00") is None  # other shapes fall back to Event.time
    ev = Event({"TimeCreated": "2024-05-01T10:00:00+02:00"}, "f", 1, "json")
    assert time_us(ev) == round(parse_time("2024-05-01T08:00:00Z") * 1_000_000)
