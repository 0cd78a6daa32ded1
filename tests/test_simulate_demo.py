"""The bundled demo (``examples/demo``, hunted by ``make run``) is the simulator's output for a
fixed command, and hunting it gives exactly its labelled alerts.

If the simulator changes, regenerate it with ``make demo`` (the command below).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from scmwatch.cli import main
from scmwatch.simulate.verify import verify

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"
LABELS = REPO / "tests" / "fixtures" / "simulate" / "demo-labels.jsonl"
# keep in sync with the Makefile's `demo` target
DEMO_ARGS = ["all", "--events", "1500", "--hosts", "5", "--seed", "42", "--gzip"]


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_is_what_the_simulator_writes(tmp_path: Path) -> None:
    out, labels = tmp_path / "demo", tmp_path / "labels.jsonl"
    assert main(["simulate", *DEMO_ARGS, "--out", str(out), "--labels", str(labels)]) == 0
    assert _tree(out) == _tree(DEMO), "examples/demo is stale: run `make demo`"
    assert _truth(labels) == _truth(LABELS), "demo labels are stale: run `make demo`"


def _truth(path: Path) -> list[dict]:
    """Labels without the pack's rule-id table (it follows the pack, not the simulator)."""
    rows = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
    return [r for r in rows if r.get("kind") != "pack"]


def test_hunting_the_examples_gives_exactly_the_labelled_alerts(tmp_path: Path) -> None:
    alerts_path = tmp_path / "alerts.jsonl"
    assert main(["hunt", str(REPO / "examples"), "--format", "jsonl", "--output", str(alerts_path)]) == 0
    alerts = [orjson.loads(x) for x in alerts_path.read_bytes().splitlines() if x.strip()]
    verdict = verify(LABELS, alerts, DEMO)
    assert verdict.ok, verdict.summary()
    assert len(alerts) > 100 and verdict.corr_matched > 10
