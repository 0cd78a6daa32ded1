"""End to end: simulate every scenario inside benign background, hunt it with the built-in
pack through the CLI, and check the alerts against the labels.

Exactly the labelled detections must fire on the labelled events (required ``expect``; the
few ``allow`` overlaps are documented in ``scmwatch/simulate/scenarios/__init__.py``), every
expected correlation must fire on that instance's events, and the benign background must raise
nothing. Run for each output format, and for a second seed and network size.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from scmwatch.cli import main
from scmwatch.simulate import Options, simulate
from scmwatch.simulate.labels import read_labels
from scmwatch.simulate.scenarios import load_all
from scmwatch.simulate.verify import verify


def _hunt(tmp: Path, fmt: str, seed: int, hosts: int, events: int) -> tuple[Path, Path, list[dict]]:
    out = tmp / f"logs-{fmt}-{seed}"
    labels = tmp / f"labels-{fmt}-{seed}.jsonl"
    simulate(
        Options(scenarios=["all"], out=out, events=events, seed=seed, hosts=hosts, fmt=fmt, labels=labels)
    )
    alerts_path = tmp / f"alerts-{fmt}-{seed}.jsonl"
    code = main(["hunt", str(out), "--format", "jsonl", "--output", str(alerts_path)])
    assert code == 0
    alerts = [orjson.loads(line) for line in alerts_path.read_bytes().splitlines() if line.strip()]
    return out, labels, alerts


@pytest.mark.parametrize(
    ("fmt", "seed", "hosts"),
    [("jsonl", 1, 8), ("jsonl", 2, 14), ("xml", 3, 6), ("ecs", 4, 6)],
)
def test_exactly_the_labelled_detections_fire(tmp_path: Path, fmt: str, seed: int, hosts: int) -> None:
    out, labels, alerts = _hunt(tmp_path, fmt, seed, hosts, 12000)
    verdict = verify(labels, alerts, out)
    assert verdict.ok, verdict.summary()
    events, instances = read_labels(labels)
    # every scenario ran, and each one that has detections was caught
    assert {i["scenario"] for i in instances} == set(load_all())
    expected = sum(len(e["expect"]) for e in events)
    assert verdict.matched == expected > 100
    assert verdict.corr_matched == sum(len(i["correlations"]) for i in instances) > 10
    caught = {e["scenario"] for e in events if e["expect"]}
    assert caught == set(load_all())


def test_background_alone_raises_nothing(tmp_path: Path) -> None:
    out = tmp_path / "benign"
    labels = tmp_path / "benign-labels.jsonl"
    res = simulate(Options(scenarios=["none"], out=out, events=15000, seed=11, hosts=10, labels=labels))
    assert res.events >= 15000 and res.labelled == 0
    alerts_path = tmp_path / "benign-alerts.jsonl"
    assert main(["hunt", str(out), "--format", "jsonl", "--output", str(alerts_path)]) == 0
    alerts = [orjson.loads(x) for x in alerts_path.read_bytes().splitlines() if x.strip()]
    assert alerts == [], [(a["title"], a["source"], a["record_id"]) for a in alerts[:10]]
