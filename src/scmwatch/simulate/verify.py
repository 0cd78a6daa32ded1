"""Compare a hunt's alerts with a simulation's ``labels.jsonl``.

The contract the end-to-end test enforces: every single-event alert lands on a labelled event
that expects its detection; every expected (event, detection) pair is raised; every
correlation alert is made only of one instance's events and is one of the correlations that
instance expects, and each expected correlation is raised; benign background raises nothing.
Alerts are tied to events by (file, line/record): ``source`` and ``record_id`` of the alert
contract, which for text formats is the 1-based line or object number the simulator labels.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmwatch.detections import detection_key
from scmwatch.simulate.labels import read_labels


@dataclass
class Verdict:
    false_positives: list[dict[str, Any]] = field(default_factory=list)  # alerts on benign events
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # wrong detection on a labelled event
    missing: list[dict[str, Any]] = field(default_factory=list)  # labelled (event, detection) not raised
    corr_missing: list[dict[str, Any]] = field(default_factory=list)
    corr_unexpected: list[dict[str, Any]] = field(default_factory=list)
    matched: int = 0
    corr_matched: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.false_positives
            or self.unexpected
            or self.missing
            or self.corr_missing
            or self.corr_unexpected
        )

    def summary(self, limit: int = 12) -> str:
        lines = [
            f"matched {self.matched} single-event and {self.corr_matched} correlation expectations; "
            f"{len(self.false_positives)} false positives, {len(self.unexpected)} unexpected, "
            f"{len(self.missing)} missing, {len(self.corr_unexpected)} unexpected correlations, "
            f"{len(self.corr_missing)} missing correlations"
        ]
        for name in ("false_positives", "unexpected", "missing", "corr_unexpected", "corr_missing"):
            for item in getattr(self, name)[:limit]:
                lines.append(f"  {name}: {item}")
        return "\n".join(lines)


def _rel(source: str, root: Path) -> str:
    try:
        return Path(os.path.relpath(source, root)).as_posix()
    except ValueError:
        return source


def verify(labels_path: Path, alerts: list[dict[str, Any]], root: Path | None = None) -> Verdict:
    """Check ``alerts`` (``Alert.to_dict()`` objects) against the labels of a simulation in ``root``."""
    root = root or labels_path.parent
    events, instances = read_labels(labels_path)
    # Alerts name events by line/object number in NDJSON, by EventRecordID in XML (the readers' choice)
    by_loc = {
        (e["file"], e["record_id"] if e["file"].endswith((".xml", ".xml.gz")) else e["line"]): e
        for e in events
    }
    inst_corr = {i["instance"]: set(i.get("correlations", ())) for i in instances}
    inst_ok = {
        i["instance"]: inst_corr[i["instance"]] | set(i.get("allowed_correlations", ())) for i in instances
    }
    verdict = Verdict()
    raised: dict[tuple[str, int], set[str]] = defaultdict(set)
    corr_raised: dict[int, set[str]] = defaultdict(set)
    for alert in alerts:
        det = detection_key(alert.get("maxpatrol_rule")) or "?"
        brief = {"rule": alert.get("title"), "detection": det}
        if alert.get("events"):
            owners = set()
            benign = 0
            for ev in alert["events"]:
                loc = (_rel(str(ev.get("source", "")), root), ev.get("record_id"))
                lab = by_loc.get(loc)
                if lab is None:
                    benign += 1
                else:
                    owners.add(lab["instance"])
            if not owners:
                verdict.false_positives.append(
                    {**brief, "correlation": True, "host": alert.get("host"), "time": alert.get("timestamp")}
                )
            elif benign or any(det not in inst_ok.get(o, set()) for o in owners):
                verdict.corr_unexpected.append(
                    {**brief, "instances": sorted(owners), "benign_events": benign}
                )
            else:  # several instances may share one window (two WannaMine infections of a host)
                for o in owners:
                    corr_raised[o].add(det)
            continue
        loc = (_rel(str(alert.get("source", "")), root), alert.get("record_id"))
        lab = by_loc.get(loc)
        if lab is None:
            ev = alert.get("event") or {}
            verdict.false_positives.append(
                {**brief, "file": loc[0], "line": loc[1], "EventID": ev.get("EventID")}
            )
        elif det not in lab["expect"] and det not in lab.get("allow", ()):
            verdict.unexpected.append(
                {
                    **brief,
                    "scenario": lab["scenario"],
                    "file": loc[0],
                    "line": loc[1],
                    "event_id": lab["event_id"],
                    "expect": lab["expect"],
                }
            )
        elif det in lab["expect"]:
            raised[loc].add(det)
    for e in events:
        loc = (e["file"], e["record_id"] if e["file"].endswith((".xml", ".xml.gz")) else e["line"])
        for det in e["expect"]:
            if det in raised.get(loc, ()):
                verdict.matched += 1
            else:
                verdict.missing.append(
                    {
                        "detection": det,
                        "scenario": e["scenario"],
                        "file": e["file"],
                        "line": e["line"],
                        "event_id": e["event_id"],
                    }
                )
    for i in instances:
        for det in i.get("correlations", ()):
            if det in corr_raised.get(i["instance"], ()):
                verdict.corr_matched += 1
            else:
                verdict.corr_missing.append(
                    {"detection": det, "scenario": i["scenario"], "instance": i["instance"]}
                )
    return verdict
