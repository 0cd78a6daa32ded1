"""The pack's correlation rules end to end: reader -> engine -> correlator -> alerts (and the CLI).

Fixtures in tests/fixtures/correlate/pack/ are built by make_pack_fixtures.py beside them; a file
``<correlation name>__pos_<case>.ndjson`` must give exactly one alert of that correlation and
``__neg_<case>.ndjson`` none. Every fixture must also reach the correlator (its events match the
building blocks), so a negative cannot pass just because nothing matched at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paths import ATTACK_SAMPLES
from scmwatch.cli import main as cli_main
from scmwatch.hunt import run_hunt
from scmwatch.rules import pack_paths
from scmwatch.sigma import Engine, load_rules

HERE = Path(__file__).resolve().parent
PACK = HERE / "fixtures" / "correlate" / "pack"
LM = ATTACK_SAMPLES / "Lateral Movement"
FIXTURES = sorted(PACK.glob("*.ndjson"))
# negatives where a building block deliberately does not match (local client, plain path, ...)
BLOCK_NEGATIVES = {"neg_local_client", "neg_local_psexec", "neg_plain_path", "neg_user_account"}


@pytest.fixture(scope="module")
def pack():
    ruleset = load_rules(pack_paths())
    return ruleset, Engine(ruleset)


def _corr_ids(ruleset) -> dict[str, str]:
    return {c.name: str(c.id) for c in ruleset.correlations}


def _block_ids(ruleset) -> set[str]:
    """Rule ids referenced by some correlation with generate: false everywhere (never alert alone)."""
    return {r.id for r in ruleset.rules if (r.name or "").startswith("corr_")}


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_pack_correlation_fixture(pack, path):
    ruleset, engine = pack
    name, case = path.stem.split("__", 1)
    corr_id = _corr_ids(ruleset)[name]
    result = run_hunt([str(path)], ruleset, engine=engine)
    got = [a for a in result.alerts if a.rule_id == corr_id]
    assert len(got) == (1 if case.startswith("pos") else 0), [a.title for a in result.alerts]
    summary = result.summary["correlation"]
    # the fixture really exercised the correlation (block-level negatives leave one part out)
    assert summary["candidates"] >= (1 if case in BLOCK_NEGATIVES else 2)
    assert summary["late_events"] == 0
    blocks = _block_ids(ruleset)
    assert not [a.title for a in result.alerts if a.rule_id in blocks]  # generate: false
    for a in got:
        times = [e.time for e in a.events]
        assert times == sorted(times) and len(a.events) >= 2
        assert all(e.source == str(path) and e.record_id for e in a.events)
        d = a.to_dict()
        assert d["correlation"]["window"]["start"] <= d["correlation"]["window"]["end"]
        assert d["maxpatrol_rule"].startswith("PT-CR-")


def test_every_pack_correlation_has_the_required_fixture_kinds(pack):
    ruleset, _ = pack
    from scmwatch.correlate import CorrelationStage

    stage = CorrelationStage(ruleset.correlations)
    emitted = [s for s in stage.specs if s.key not in stage.suppressed]
    names = {p.stem.split("__")[0] for p in FIXTURES}
    for spec in emitted:
        name = next(c.name for c in ruleset.correlations if str(c.id) == spec.key)
        assert name in names, f"no fixtures for {name}"
        kinds = {p.stem.split("__")[1] for p in FIXTURES if p.stem.split("__")[0] == name}
        need = {"pos_basic", "pos_out_of_order", "pos_boundary", "neg_past_boundary", "neg_wrong_group"}
        if spec.type == "temporal_ordered" or "set_then" in str(spec.refs):
            need.add("neg_wrong_order")
        assert need <= kinds, f"{name}: missing {sorted(need - kinds)}"


def test_out_of_order_fixture_is_really_out_of_order():
    lines = (PACK / "corr_svcctl_then_service_install__pos_out_of_order.ndjson").read_text().splitlines()
    times = [json.loads(x)["TimeCreated"] for x in lines]
    assert times != sorted(times)


def test_lateral_chain_across_two_files_and_jobs_equality(pack, tmp_path):
    """Source host and target host logs in separate files; --jobs 2 gives the --jobs 1 alerts."""
    ruleset, engine = pack
    events = [
        json.loads(x)
        for x in (PACK / "corr_lateral_movement_chain__pos_basic.ndjson").read_text().splitlines()
    ]
    src, dst = tmp_path / "ws1.ndjson", tmp_path / "ws2.ndjson"
    src.write_text("".join(json.dumps(e) + "\n" for e in events if e["Computer"].startswith("WS1")))
    dst.write_text("".join(json.dumps(e) + "\n" for e in events if e["Computer"].startswith("WS2")))
    one = run_hunt([str(dst), str(src)], ruleset, engine=engine)
    chain = [a for a in one.alerts if a.title.startswith("Lateral movement chain")]
    assert len(chain) == 1
    assert {e.source for e in chain[0].events} == {str(src), str(dst)}
    assert chain[0].correlation["group_by"] == {"target": "ws2"}
    many = run_hunt([str(dst), str(src)] + [str(p) for p in FIXTURES[:20]], ruleset, jobs=2)
    base = run_hunt([str(dst), str(src)] + [str(p) for p in FIXTURES[:20]], ruleset, jobs=1, engine=engine)
    dump = [json.dumps(a.to_dict(), sort_keys=True, default=str) for a in base.alerts]
    assert dump == [json.dumps(a.to_dict(), sort_keys=True, default=str) for a in many.alerts]
    assert base.summary["correlation"]["alerts"] >= 1


@pytest.mark.skipif(not LM.is_dir(), reason="../shared corpus not present")
def test_corpus_remote_service_halves_give_one_linked_alert(tmp_path):
    """LM_Remote_Service01 (5145 svcctl) + LM_Remote_Service02 (7045) hunted together via the CLI."""
    files = [LM / "LM_Remote_Service01_5145_svcctl.evtx", LM / "LM_Remote_Service02_7045.evtx"]
    out, summary = tmp_path / "alerts.jsonl", tmp_path / "summary.json"
    rc = cli_main(
        ["hunt", *map(str, files), "--format", "jsonl", "--output", str(out), "--summary", str(summary)]
    )
    assert rc == 0
    alerts = [json.loads(x) for x in out.read_text().splitlines()]
    linked = [a for a in alerts if a.get("correlation")]
    assert len(linked) == 1
    a = linked[0]
    assert a["title"].startswith("Remote service creation")
    assert [Path(e["source"]).name for e in a["events"]] == [f.name for f in files]
    assert [e["EventID"] for e in a["events"]] == [5145, 7045]
    assert a["events"][1]["ServiceName"] == "remotesvc"
    assert a["correlation"]["type"] == "temporal_ordered"
    s = json.loads(summary.read_text())["correlation"]
    assert s["alerts"] == 1 and s["late_events"] == 0
    # each half alone links nothing
    for f in files:
        rc = cli_main(["hunt", str(f), "--format", "jsonl", "--output", str(out)])
        assert rc == 0
        assert not [x for x in out.read_text().splitlines() if '"correlation"' in x]


def test_cli_lateness_option_counts_late_events(tmp_path):
    """The out-of-order fixture correlates with the default lateness and not with --lateness 0."""
    fixture = PACK / "corr_svcctl_then_service_install__pos_out_of_order.ndjson"
    for lateness, linked, late in (("300", 1, 0), ("0", 0, 1)):
        out, summary = tmp_path / f"a{lateness}.jsonl", tmp_path / f"s{lateness}.json"
        rc = cli_main(
            [
                "hunt",
                str(fixture),
                "--lateness",
                lateness,
                "--format",
                "jsonl",
                "--output",
                str(out),
                "--summary",
                str(summary),
            ]
        )
        assert rc == 0
        got = [json.loads(x) for x in out.read_text().splitlines()]
        assert len([a for a in got if a.get("correlation")]) == linked
        corr = json.loads(summary.read_text())["correlation"]
        assert corr["late_events"] == late and corr["lateness_seconds"] == float(lateness)
        if late:
            assert corr["late_examples"][0]["source"] == str(fixture)
