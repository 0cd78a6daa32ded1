"""The read gate: hunt does not parse EVTX records no rule and no correlation looks at.

The gate must change nothing but speed: the same alerts (single-event and correlation), the
same event counts and the same readiness report as a hunt that reads every record whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from paths import ATTACK_SAMPLES, SIGMAHQ, need_shared
from scmwatch import hunt as hunt_mod
from scmwatch.events import normalize
from scmwatch.hunt import run_hunt
from scmwatch.rules import pack_paths
from scmwatch.sigma import load_rules

pytestmark = pytest.mark.skipif(normalize.EvtxEvents is None, reason="the C reader was not built")


class _Counting(hunt_mod.ReadGate):
    """The real gate, counting how many (Channel, EventID) pairs it turned away."""

    refused = 0

    def __init__(self, want) -> None:
        def counted(channel, eid):
            ok = want(channel, eid)
            _Counting.refused += not ok
            return ok

        super().__init__(counted)


class _Open(hunt_mod.ReadGate):
    """A gate that lets everything through (what hunt did before the gate existed)."""

    def __init__(self, want) -> None:
        def everything(channel, eid):
            want(channel, eid)  # still records the pair, as the real gate does
            return True

        super().__init__(everything)


def _hunt(monkeypatch, gate_cls, paths, rules, jobs=1, **options):
    monkeypatch.setattr(hunt_mod, "ReadGate", gate_cls)
    res = run_hunt([str(p) for p in paths], rules, jobs=jobs, **options)
    return [a.to_dict() for a in res.alerts], res.summary


def _same(a, b) -> None:
    alerts_a, sum_a = a
    alerts_b, sum_b = b
    assert alerts_a == alerts_b
    for key in ("events", "files", "alerts", "readiness", "correlation"):
        assert sum_a.get(key) == sum_b.get(key), key


@pytest.mark.parametrize("jobs", [1, 2])
def test_gate_changes_nothing_with_the_builtin_pack(monkeypatch, jobs):
    root = need_shared(ATTACK_SAMPLES)
    rules = load_rules(pack_paths())
    assert rules.correlations  # the selector's link events must still get through
    _Counting.refused = 0
    gated = _hunt(monkeypatch, _Counting, [root], rules, jobs)
    if jobs == 1:
        assert _Counting.refused > 50  # the gate really turned pairs away
    _same(gated, _hunt(monkeypatch, _Open, [root], rules, jobs))
    assert gated[1]["events"] > 8000 and gated[1]["alerts"] > 30


def test_gate_changes_nothing_with_sigmahq_rules(monkeypatch):
    root = need_shared(ATTACK_SAMPLES)
    windows = need_shared(SIGMAHQ / "rules" / "windows")
    rules = load_rules([windows / "process_creation", windows / "builtin"])
    _same(_hunt(monkeypatch, _Counting, [root], rules), _hunt(monkeypatch, _Open, [root], rules))


def test_gate_changes_nothing_on_flat_json(monkeypatch, tmp_path: Path):
    """Flat NDJSON (the simulator's) is gated too (the C loop): the same alerts with or without."""
    from scmwatch.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "psexec", "--out", str(out), "--events", "200", "--seed", "3"]) == 0
    rules = load_rules(pack_paths())
    _Counting.refused = 0
    _same(_hunt(monkeypatch, _Counting, [out], rules), _hunt(monkeypatch, _Open, [out], rules))
    assert _Counting.refused > 0


@pytest.mark.parametrize("jobs", [1, 2])
def test_gate_changes_nothing_on_ndjson_of_evtx_records(monkeypatch, tmp_path: Path, jobs):
    """NDJSON of evtx_dump records is gated like EVTX (the C loop): same alerts, counts and
    readiness as reading every line whole, also when the file is split into ranges."""
    import orjson

    from paths import evtx_files, evtx_records

    root = need_shared(ATTACK_SAMPLES)
    path = tmp_path / "corpus.ndjson"
    with open(path, "wb") as fh:
        for f in evtx_files(root):
            for rec in evtx_records(f):
                fh.write(orjson.dumps(orjson.loads(rec["data"])) + b"\n")
    rules = load_rules(pack_paths())
    _Counting.refused = 0
    gated = _hunt(monkeypatch, _Counting, [path], rules, jobs, split_bytes=1 << 20)
    if jobs == 1:
        assert _Counting.refused > 20  # the gate really turned pairs away
    _same(gated, _hunt(monkeypatch, _Open, [path], rules, jobs, split_bytes=1 << 20))
    if jobs == 2:
        assert gated[1]["parallelism"]["files_split"] == 1
    assert gated[1]["events"] > 8000 and gated[1]["alerts"] > 30
