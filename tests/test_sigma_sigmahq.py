"""SigmaHQ conformance and coverage: the engine against SigmaHQ's own rules and regression data.

Skips cleanly when ``../shared`` (beside the repo) is absent. Rules are loaded once per module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from paths import SIGMAHQ
from scmwatch.events.model import ReadStats
from scmwatch.events.read import discover, read_input
from scmwatch.sigma import Engine, load_rules

RULE_DIRS = ["rules", "rules-emerging-threats", "rules-threat-hunting"]

pytestmark = pytest.mark.skipif(not (SIGMAHQ / "rules").is_dir(), reason="../shared/corpora/sigmahq absent")


@pytest.fixture(scope="module")
def ruleset():
    return load_rules([SIGMAHQ / d for d in RULE_DIRS])


@pytest.fixture(scope="module")
def engine(ruleset):
    return Engine(ruleset)


def _regression_cases() -> list[tuple[str, str, Path, int]]:
    cases = []
    root = SIGMAHQ / "regression_data"
    if not root.is_dir():
        return cases
    for info in sorted(root.rglob("info.yml")):
        data = yaml.safe_load(info.read_text(encoding="utf-8"))
        rule_id = str(data["rule_metadata"][0]["id"])
        for test in data.get("regression_tests_info") or []:
            evtx = SIGMAHQ / test["path"]
            cases.append(
                (str(info.parent.relative_to(root)), rule_id, evtx, int(test.get("match_count") or 1))
            )
    return cases


CASES = _regression_cases()


def _hits(engine, rule_id: str, path: Path) -> tuple[int, int]:
    stats = ReadStats()
    hits = events = 0
    for inp in discover([str(path)], stats):
        for ev in read_input(inp, stats):
            events += 1
            if any(r.id == rule_id for r in engine.match(ev)):
                hits += 1
    assert not stats.errors, f"read errors on {path}: {dict(stats.errors)}"
    return hits, events


def test_regression_case_count():
    assert len(CASES) == 202


@pytest.mark.parametrize("suffix", [".evtx", ".json"])
def test_sigmahq_regression(engine, ruleset, suffix):
    """Every SigmaHQ regression test fires its rule, on the .evtx and on the .json twin."""
    ids = {r.id for r in ruleset.rules}
    failures = []
    for name, rule_id, evtx, want in CASES:
        assert rule_id in ids, f"{name}: rule {rule_id} not loaded"
        hits, events = _hits(engine, rule_id, evtx.with_suffix(suffix))
        if hits < want:
            failures.append(f"{name}: {hits}/{want} hits over {events} events")
    assert not failures, f"{len(failures)}/{len(CASES)} failed:\n" + "\n".join(failures)


def test_sigmahq_coverage(ruleset):
    """All SigmaHQ rules load and compile; the only rejects need placeholder values."""
    files = sum(1 for d in RULE_DIRS for p in (SIGMAHQ / d).rglob("*.yml"))
    assert files == 3754
    assert len(ruleset.rules) + len(ruleset.rejected) == files
    not_placeholder = [(p, r) for p, r in ruleset.rejected if "placeholder" not in r]
    assert not not_placeholder, not_placeholder
    for path, reason in ruleset.rejected:
        print(f"placeholder-only reject: {path}: {reason}")


def test_sigmahq_with_placeholders_all_compile(tmp_path):
    """Given placeholder values, the placeholder rules compile too (nothing silently dropped)."""
    ph = tmp_path / "ph.yml"
    ph.write_text("known_cdcs: ['dc01.corp.local', '10.0.0.5']\n", encoding="utf-8")
    rs = load_rules([SIGMAHQ / "rules-emerging-threats"], placeholders=ph)
    assert not rs.rejected, rs.rejected


def _regression_events():
    stats = ReadStats()
    out = []
    for _, _, evtx, _ in CASES:
        for inp in discover([str(evtx)], stats):
            out.extend(read_input(inp, stats))
    return out


def test_prefilter_never_loses_a_match(ruleset, engine):
    """Index + prefilter give exactly what evaluating every gated rule gives (Hyperscan and
    pyahocorasick scanners alike)."""
    from scmwatch.sigma.compile import Low

    fallback = Engine(ruleset, use_hyperscan=False)
    engine = Engine(ruleset, hyperscan_after=0)  # Hyperscan from the first event (when installed)
    events = _regression_events()
    assert len(events) >= 238
    for ev in events:
        b = engine.bucket(ev.fields.get("Channel"), ev.fields.get("EventID"))
        low = Low(ev.fields)
        brute = [
            u.rule.id for u in b.units if u.pred is True or (u.pred is not False and u.pred(ev.fields, low))
        ]
        fast = [r.id for r in engine.match(ev)]
        assert fast == list(dict.fromkeys(brute)), (ev.source, ev.record_id)
        assert [r.id for r in fallback.match(ev)] == fast


def test_warm_start_never_loses_a_match(ruleset):
    """A default engine whose buckets start on the databases and plans a first engine left in
    the cache (``Engine._warm_start``) answers as evaluating every gated rule does."""
    from scmwatch.sigma import index

    events = _regression_events()
    first = Engine(ruleset, hyperscan_after=0)  # compiles and stores every bucket's databases and plan
    fallback = Engine(ruleset, use_hyperscan=False)
    warm = Engine(ruleset)
    for ev in events:
        want = [r.id for r in fallback.match(ev)]
        assert [r.id for r in first.match(ev)] == want
        assert [r.id for r in warm.match(ev)] == want, (ev.source, ev.record_id)
    if index.hyperscan is not None:
        assert any(b.upgrade_in == -1 and b.seen for b in warm._normalized.values())


def test_gating_prevents_cross_source_hits(ruleset, engine):
    """Without gating raw_access_thread / process_creation rules would fire on other Sysmon events
    (logsource.py): every hit's rule must list a source whose keys include the event's key."""
    for ev in _regression_events():
        key = (str(ev.fields.get("Channel")).lower(), ev.fields.get("EventID"))
        for r in engine.match(ev):
            assert any(k[0] in (None, key[0]) and k[1] in (None, key[1]) for u in r.units for k in u.keys), (
                r.title,
                key,
            )
