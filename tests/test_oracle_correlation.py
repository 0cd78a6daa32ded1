"""Differential test: the streaming correlator against a brute-force reference written from
the README's correlation rules (``correlation_reference.py``), on seeded random cases of all
eight types with chains, aliases, ranges, boolean conditions, equal timestamps and files out of
time order. More cases: ``bench/oracle_correlation.py --cases N``."""

from __future__ import annotations

import pytest

from correlation_cases import TYPES, make_case, run_case

CASES_PER_TYPE = 200


@pytest.mark.parametrize("ctype", TYPES)
def test_streaming_correlator_agrees_with_brute_force(ctype):
    bad = []
    alerts = 0
    for seed in range(CASES_PER_TYPE):
        case = make_case(seed, ctype)
        got, want = run_case(case)
        alerts += sum(want.values())
        if got != want:
            bad.append((seed, sorted(got - want, key=str)[:2], sorted(want - got, key=str)[:2]))
    assert not bad, f"{len(bad)}/{CASES_PER_TYPE} {ctype} cases differ, first: {bad[:3]}"
    assert alerts > CASES_PER_TYPE // 10  # the generator produces cases that fire


def test_chained_cases_fire():
    fired = 0
    for seed in range(40):
        got, want = run_case(make_case(seed, "event_count", chain=True))
        assert got == want, seed
        fired += sum(1 for k in want if k[0] == "name:outer" or "outer" in k[0])
    assert fired
