"""Correlation partitioned by group-by key (correlate/partition.py), in one process: every unit's
candidates cut into P partitions, each correlated by its own correlator, give exactly the
alerts (ids, order, evidence) of the one correlator of a plain hunt -- on a simulated
multi-host attack with cross-host correlations and on the shared corpus. The Dask runner
(tests/test_cluster_partition.py) moves the same steps onto workers.
"""

from __future__ import annotations

import pytest

from paths import ATTACK_SAMPLES
from scmwatch.correlate import CorrelationStage, _link_needs
from scmwatch.correlate.partition import (
    Plan,
    Router,
    StreamOrder,
    caps_reached,
    chained,
    correlate_partition,
    late_possible,
    merged_summary,
    stream_order,
    together,
)
from scmwatch.hunt import local_units, run_hunt
from scmwatch.spill import read_stream


def partitioned(partitions: int, used: list[set[int]], summaries: list | None = None):
    """A ``map_units`` that hunts locally, cuts each unit's candidates into partitions (as a
    cluster worker does) and correlates the partitions one after another (their own summaries
    into ``summaries``)."""

    def mapper(ctx, inputs, jobs, report):
        plan = Plan(ctx.stage.specs, partitions)
        router = Router(ctx.stage, plan)
        kept: dict[int, list[list[tuple]]] = {}

        def correlate_at(results, resolved):
            outs = []
            extra = router.split(sorted(resolved, key=lambda r: r[:3]))
            for p in range(partitions):
                streams = [kept[r.cand_ref][p] for r in results] + [extra[p]]
                fresh = CorrelationStage.for_ruleset(ctx.ruleset, lateness=ctx.lateness, **ctx.caps)
                alerts, summary = correlate_partition(fresh, plan, p, streams)
                if alerts:
                    used[0].add(p)
                outs.append((alerts, summary))
            if summaries is not None:
                summaries[:] = [dict(s) for _, s in outs]
            ctx.correlation_summary = merged_summary([s for _, s in outs], plan,
                                                     sum(r.candidates for r in results))
            for alerts, _ in outs:
                yield from alerts

        ctx.correlate_at = correlate_at
        for r in local_units(ctx, inputs, 1, report):
            records = [rec for p in r.cand_runs for rec in read_stream(p)] + r.cand_mem
            kept[r.index] = router.split(records)
            r.cand_runs, r.cand_mem, r.cand_ref = [], [], r.index
            yield r

    return mapper


def _check(paths: list[str], pack, counts=(1, 3, 7)) -> list:
    rs, engine = pack
    local = run_hunt(paths, rs, engine=engine)
    want = [a.to_dict() for a in local.alerts]
    assert local.summary["correlation"]["late_events"] == 0
    for n in counts:
        used: list[set[int]] = [set()]
        got = run_hunt(paths, rs, engine=engine, map_units=partitioned(n, used))
        assert [a.to_dict() for a in got.alerts] == want, f"{n} partitions"
        corr, base = got.summary["correlation"], local.summary["correlation"]
        for k in ("alerts", "late_events", "missing_group_field", "missing_value_field", "link_facts",
                  "untimed_events"):
            assert corr[k] == base[k], (n, k)
        assert corr["partitioned"]["partitions"] == n
        if n > 1:
            assert len(used[0]) > 1  # the alerts really came from several partitions
    return local.alerts


def test_plan_cuts_keyed_correlations_by_group_and_keeps_link_and_chain_families_whole(pack):
    stage = CorrelationStage.for_ruleset(pack[0])
    plan = Plan(stage.specs, 8)
    by_key = {s.key: s for s in stage.specs}
    assert plan.keyed and plan.fact_parts
    for k in plan.keyed:  # their group-by never needs the learned links
        assert not {"link.source_ip", "link.source_host", "link.target_host"} & set(by_key[k].group_by)
    whole = set(by_key) - plan.keyed
    assert any(_link_needs([by_key[k]]) for k in whole)  # the cross-host one (link.target_host)
    parts = {plan.partition(k, (f"host-{i}",)) for k in plan.keyed for i in range(50)}
    assert len(parts) == 8  # groups of one correlation spread over every partition
    assert {plan.partition(k, ("x",)) for k in whole} == {plan.home[k] for k in whole}


def test_partitions_equal_one_correlator_on_a_multi_host_attack(pack, attack):
    alerts = _check([str(attack)], pack)
    corr = [a for a in alerts if a.correlation]
    assert len({a.event.get("Computer") for a in corr}) > 1
    assert any(a.correlation["group_by"].get("target") for a in corr)  # the cross-host chain


@pytest.mark.skipif(not ATTACK_SAMPLES.is_dir(), reason="../shared corpus not present")
def test_partitions_equal_one_correlator_on_the_corpus(pack):
    alerts = _check([str(ATTACK_SAMPLES)], pack, counts=(4,))
    assert any(a.correlation for a in alerts)


def test_a_groups_life_does_not_depend_on_other_groups_traffic():
    """Sweeps run on the clock of every candidate a correlator sees; a partition sees fewer.
    Group ``foo`` idles 10.3 s (> its 10 s timespan): fed everything, a sweep at 10.1 drops it;
    fed only its partition's candidates, no sweep runs before it comes back. Either way it
    starts afresh (group-by values as seen again: ``foo``), so both alerts are the same."""
    from test_correlate_core import Harness, corr

    spec = corr("type: event_count\nrules: [a]\ngroup-by: [ServiceName]\ntimespan: 10s\ncondition: {gte: 2}")
    stream = [("Foo", 0.0, True), ("Bar", 9.0, False), ("Baz", 9.6, True), ("Qux", 10.1, False),
              ("foo", 10.3, True), ("FOO", 10.5, True)]
    out = []
    for everything in (True, False):
        h = Harness(spec)
        for name, t, mine in stream:
            c = h.cand("a", t, ServiceName=name)
            if everything or mine:
                h.alerts.extend(h.corr.push(c))
        alerts = h.finish()
        out.append([(a.correlation["group_by"], [e.record_id for e in a.events]) for a in alerts])
    assert out[0] == out[1] == [({"ServiceName": "foo"}, [5, 6])]


def test_late_is_possible_only_with_a_file_out_of_order_by_the_lateness():
    """stream_order / chained / late_possible: a candidate can be late only when its file has
    one behind an earlier one by the lateness or more, or with disorder when the buffer's cap
    can fire; time-ordered streams never."""
    s = 1_000_000
    recs = lambda *ts: [(t * s, 0, i) for i, t in enumerate(ts)]  # noqa: E731
    assert stream_order(recs(1, 2, 3), 300 * s) == StreamOrder(0, 3, s, 3 * s)
    assert stream_order([(0, 0, 0)], 300 * s) is None  # untimed records never reach the buffer
    behind = stream_order(recs(1000, 1200, 899), 300 * s)
    assert behind.disorder_us == 301 * s and behind.window == 2  # (900, 1200] holds 2
    assert stream_order(recs(400, 600, 700, 800), 300 * s).window == 3  # (500, 800] holds 3
    assert late_possible([behind], 0, 300 * s, 50_000)
    assert not late_possible([stream_order(recs(1000, 1200, 901), 300 * s)], 0, 300 * s, 50_000)
    assert late_possible([stream_order(recs(1000, 1200, 901), 300 * s)], 0, 300 * s, 2)  # the cap
    assert not late_possible([stream_order(recs(*range(100)), 300 * s)], 10**6, 300 * s, 2)  # ordered
    # ranges of one file: the second range trails the first's latest by 400 s
    ranges = [stream_order(recs(100, 500), 300 * s), stream_order(recs(100, 600), 300 * s)]
    assert chained(ranges).disorder_us == 400 * s and late_possible([chained(ranges)], 0, 300 * s, 50_000)
    assert not late_possible([together(ranges)], 0, 300 * s, 50_000)  # as separate files: ordered


# what a state cap changes in the correlation summary (besides the alerts)
CAPPED = ("alerts", "groups_evicted", "entries_truncated", "held_released_early", "reorder_overflow")


@pytest.mark.parametrize("cap,values", [("max_groups", (12, 20, 28, 60, 200)),
                                        ("max_state", (30, 60, 100, 200)),
                                        ("max_held", (40, 228, 460)),
                                        ("max_entries_per_group", (3, 12, 40))])
def test_partitions_below_the_caps_equal_one_correlator_and_caps_reached_says_when_not(pack, attack, cap,
                                                                                      values):
    """The state caps hold over the whole run: for each cap, from values that make one
    correlator evict (or release early) to values it never reaches, either the partitions'
    peaks rule the cap out (``caps_reached`` False) and their alerts and counts are those of
    one correlator with the same cap, or ``caps_reached`` says the runner must correlate
    again with one correlator. Both outcomes occur."""
    rs, engine = pack
    verdicts = set()
    for v in values:
        caps = {cap: v}
        local = run_hunt([str(attack)], rs, engine=engine, correlation_caps=caps)
        summaries: list = []
        got = run_hunt([str(attack)], rs, engine=engine, map_units=partitioned(3, [set()], summaries),
                       correlation_caps=caps)
        reached = caps_reached(summaries, CorrelationStage.for_ruleset(rs, **caps))
        verdicts.add(reached)
        corr, base = got.summary["correlation"], local.summary["correlation"]
        if not reached:
            assert [a.to_dict() for a in got.alerts] == [a.to_dict() for a in local.alerts], caps
            assert {k: corr[k] for k in CAPPED} == {k: base[k] for k in CAPPED}, caps
        if base["groups_evicted"] or base["held_released_early"] or base["reorder_overflow"]:
            assert reached, caps  # one correlator hit the cap: never left to the partitions
    assert verdicts == {True, False}


def test_a_facts_copy_of_another_partitions_candidate_is_not_counted_as_removed():
    """A partition that learns links gets a copy (keys None) of each link event another partition
    owns, for its fact. When the split file's fact dedup removes such a copy's fact, the event is
    still the other partition's candidate: not counted among the records the dedup removed
    (that made a partitioned hunt count one candidate less than --jobs 1 on 164 MB of simulated
    NDJSON)."""
    from scmwatch.correlate import RANGE_FACT
    from scmwatch.split import replayed

    raw = (4624, "DC01", "10.0.0.9", "VICTIM", None, None, None, None)
    fact = ("ipname", "10.0.0.9", "victim")
    t = 1_700_000_000_000_000
    recs = [(t, 0, 0, (), (RANGE_FACT, raw, fact), None),  # learnt: kept
            (t + 1, 0, 1, None, (RANGE_FACT, raw, fact), None),  # a copy, its fact a repeat
            (t + 2, 0, 2, (), (RANGE_FACT, raw, fact), None)]  # a repeat of no one's: removed
    dropped = [0]
    assert [r[2] for r in replayed([(recs, 0)], dropped)] == [0]
    assert dropped == [1]
