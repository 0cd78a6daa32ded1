"""Ground truth: the detection keys scenarios expect, and the pack rules that carry them.

Scenarios name detections by the MaxPatrol code the rule pack puts in each rule's
``maxpatrol_rule`` attribute (``"PT-CR-589 Remoting_SysInternals_PsExec"`` → ``PT-CR-589``;
``none`` for the MITRE analytic). Keying labels on the detection, not on one rule file, keeps
them valid however the pack splits a detection into files (Sysmon/Security variants,
correlations); ``labels.jsonl`` also lists the concrete rule ids found in the pack at
generation time (its first line, ``{"kind": "pack", "rules_by_detection": {...}}``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from scmwatch.detections import ATTR, detection_key
from scmwatch.rules import PACK_DIR

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def iter_pack_rules(pack: Path = PACK_DIR) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every YAML document of the pack that has an ``id`` (rules and correlation rules)."""
    if not pack.is_dir():
        return
    for path in sorted(pack.rglob("*.yml")):
        try:
            docs = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader))
        except (OSError, yaml.YAMLError):
            continue
        for doc in docs:
            if isinstance(doc, dict) and doc.get("id"):
                yield path, doc


def pack_rules_by_detection(pack: Path = PACK_DIR) -> dict[str, list[str]]:
    """Detection key → ids of the pack rules that cover it (empty when no pack is installed)."""
    out: dict[str, list[str]] = {}
    for _, doc in iter_pack_rules(pack):
        key = detection_key(doc.get(ATTR))
        if key:
            out.setdefault(key, []).append(str(doc["id"]))
    return out


def read_labels(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``labels.jsonl`` → (event entries, instance entries); the ``pack`` line is skipped."""
    events: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            kind = obj.get("kind")
            if kind == "instance":
                instances.append(obj)
            elif kind == "event":
                events.append(obj)
    return events, instances
