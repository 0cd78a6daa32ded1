"""Seeded random correlation cases, run through the streaming correlator and the brute-force
reference (``correlation_reference``); shared by ``test_oracle_correlation.py`` (a few hundred
cases per type) and ``bench/oracle_correlation.py`` (as many as asked for).

A case: one correlation of the given type (random rules, group-by or aliases, timespan,
condition, ranges, boolean conditions), sometimes wrapped by an outer correlation that
references it (a chain), and 8-24 events on a coarse time grid (equal timestamps are common),
each matching one or more of three base rules, spread over up to three "files" whose records
are slightly out of time order (the reorder buffer repairs that).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from correlation_reference import RefEvent, canon, correlate
from scmwatch.correlate import Candidate, Correlator, rule_key, spec_from_sigma
from scmwatch.correlate.spec import split_range_condition
from scmwatch.events.model import Event, format_time

TYPES = ("event_count", "value_count", "temporal", "temporal_ordered",
         "value_sum", "value_avg", "value_percentile", "value_median")
BASE = [
    {"title": f"rule {n}", "name": n, "logsource": {"product": "windows"},
     "detection": {"sel": {"EventID": i}, "condition": "sel"}}
    for i, n in enumerate("abc", 1)
]
T0 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp()) * 1_000_000
LATENESS_S = 5


@dataclass
class Case:
    seed: int
    ctype: str
    docs: list[dict]
    events: list[tuple[int, int, int, tuple[str, ...], dict]]  # (t_us, file, pos, refs, fields)


def _condition(rng: random.Random, ctype: str, refs: list[str]) -> object:
    if ctype in ("temporal", "temporal_ordered"):
        pick = rng.random()
        if pick < 0.3:
            return None  # default: gte len(rules)
        if pick < 0.55 and len(refs) >= 2:
            a, b, *rest = refs
            form = rng.choice(["{a} and {b}", "{a} or {b}", "{a} and not {b}", "not {a} and {b}"])
            text = form.format(a=a, b=b)
            for r in rest:
                text = f"({text}) {rng.choice(['and', 'or'])} {r}"
            return text
        op = rng.choice(["gte", "gt", "lt", "lte", "eq"])
        return {op: rng.randint(1, len(refs))}
    lo = {"event_count": 1, "value_count": 1}.get(ctype, 0)
    hi = {"event_count": 5, "value_count": 4}.get(ctype, 12)
    cond: dict = {}
    if rng.random() < 0.2:  # a range
        a, b = sorted(rng.sample(range(lo, hi + 2), 2))
        cond[rng.choice(["gt", "gte"])] = a
        cond[rng.choice(["lt", "lte"])] = b
    else:
        cond[rng.choice(["gte", "gt", "lt", "lte", "eq", "neq"])] = rng.randint(lo, hi)
    if ctype == "value_count":
        cond["field"] = "User"
    elif ctype != "event_count":
        cond["field"] = "N"
    if ctype == "value_percentile":
        cond["percentile"] = rng.choice([10, 25, 50, 75, 90, 100])
    return cond


def _correlation(rng: random.Random, ctype: str, name: str, refs: list[str], group: str | None) -> dict:
    body: dict = {"type": ctype, "rules": refs, "timespan": f"{rng.choice([3, 5, 10, 20])}s"}
    if group == "host":
        body["group-by"] = ["host"]
        body["aliases"] = {"host": {r: ("Host" if r == "b" else "Computer") for r in refs}}
    elif group:
        body["group-by"] = [group]
    cond = _condition(rng, ctype, refs)
    if cond is not None:
        body["condition"] = cond
    if rng.random() < 0.2:
        body["generate"] = True
    return {"title": name, "name": name, "correlation": body}


def make_case(seed: int, ctype: str, chain: bool | None = None) -> Case:
    rng = random.Random(f"{ctype}:{seed}")
    n_refs = rng.randint(2, 3) if ctype.startswith("temporal") else rng.randint(1, 2)
    refs = sorted(rng.sample("abc", n_refs))
    group = rng.choice([None, "Computer", "Computer", "host"])
    inner = _correlation(rng, ctype, "inner", refs, group)
    docs = [*BASE, inner]
    if chain if chain is not None else rng.random() < 0.3:
        outer_type = rng.choice(["event_count", "temporal", "temporal_ordered"])
        other = rng.choice([r for r in "abc"])
        outer_refs = ["inner", other] if outer_type != "event_count" else ["inner"]
        outer = _correlation(rng, outer_type, "outer", outer_refs, None)
        body = outer["correlation"]
        body.pop("aliases", None)
        if group == "host":
            body["group-by"] = ["host"]
            body["aliases"] = {"host": {"inner": "host", other: "Computer"}}
        elif group:
            body["group-by"] = [group]
        else:
            body.pop("group-by", None)
        body["timespan"] = f"{rng.choice([3, 5, 10, 30])}s"
        docs.append(outer)
    events = []
    t = 0.0
    files: dict[int, int] = {}
    for _ in range(rng.randint(8, 24)):
        t += rng.choice([0, 0, 0.5, 1, 1, 2, 3, 7])
        refs_hit = tuple(sorted(rng.sample("abc", 2 if rng.random() < 0.15 else 1)))
        fields = {
            "Computer": rng.choice(["H1", "h1", "H2", "H1", ""]),
            "Host": rng.choice(["H1", "H2", "h2"]),
            "N": rng.choice([1, 2, "3", 5.0, " 4", "x", None, 2.5, "-1"]),
            "User": rng.choice(["Admin", "admin", "bob", 3, "3", True, "", "03"]),
        }
        f = rng.randint(0, 2)
        files[f] = files.get(f, 0) + 1
        events.append([int(round(t * 1_000_000)), f, 0, refs_hit, fields])
    # each file's records in slightly disturbed time order (writers buffer, clocks step)
    per_file: dict[int, list] = {}
    for ev in events:
        per_file.setdefault(ev[1], []).append(ev)
    out = []
    for f, evs in per_file.items():
        for i in range(len(evs) - 1):
            if rng.random() < 0.2 and evs[i + 1][0] - evs[i][0] < LATENESS_S * 1_000_000:
                evs[i], evs[i + 1] = evs[i + 1], evs[i]
        for pos, ev in enumerate(evs):
            out.append((ev[0], f, pos, ev[3], ev[4]))
    return Case(seed, ctype, docs, out)


def _specs(case: Case):
    col = SigmaCollection.from_dicts([split_range_condition(d) for d in case.docs])
    keys = {r.name: rule_key(r) for r in col.rules if r.name}
    specs = [spec_from_sigma(r) for r in col.rules if isinstance(r, SigmaCorrelationRule)]
    return keys, specs


def run_case(case: Case) -> tuple[Counter, Counter]:
    """(engine alerts, reference alerts) as multisets of (rule, group, end time, evidence ids)."""
    keys, specs = _specs(case)
    corr = Correlator(specs, lateness=LATENESS_S)
    streams: dict[int, list[Candidate]] = {}
    ref_events = []
    ordered = sorted(case.events, key=lambda e: (e[0], e[1], e[2]))
    for seq, (t, f, pos, refs, fields) in enumerate(ordered):
        ident = f * 1000 + pos
        ev = Event(dict(fields, TimeCreated=format_time((T0 + t) / 1e6)), f"file{f}", ident, "json")
        ev._epoch = (T0 + t) / 1e6
        cand_keys = tuple(keys[r] for r in refs)
        streams.setdefault(f, []).append(Candidate(T0 + t, f, pos, ev, cand_keys))
        ref_events.append(RefEvent(T0 + t, seq, ident, frozenset(cand_keys), fields))
    for lst in streams.values():
        lst.sort(key=lambda c: c.position)  # each file in record order, slightly out of time order
    got = Counter()
    # heapq-based merge of slightly unsorted files: every candidate once, disorder below the
    # lateness, which the correlator's reorder buffer repairs
    for alert in corr.feed(heapq.merge(*(streams[f] for f in sorted(streams)), key=Candidate.sort_key)):
        c = alert.correlation
        group = tuple(canon(v) for v in c["group_by"].values())
        got[(alert.rule_id, group, c["window"]["end"], frozenset(e.record_id for e in alert.events))] += 1
    want = Counter()
    for a in correlate(specs, ref_events):
        if a.key in corr.suppressed:
            continue
        want[(a.key, a.group, format_time(a.t / 1e6), a.evidence)] += 1
    return got, want
