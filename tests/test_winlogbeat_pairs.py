"""Winlogbeat's own output read as the EVTX it came from.

``../shared/corpora/winlogbeat-modules/`` holds, for each ``.evtx``, the JSON Winlogbeat (security
and powershell modules, its default configuration) wrote for it. The events from both forms must
be the same for every field the EVTX record has, except the documented unrecoverable ones (README,
"Winlogbeat / Elastic exports"), and a hunt with all SigmaHQ rules plus the pack must give the
same alerts. Skips cleanly when ``../shared`` is absent.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

from paths import ROOT, SHARED, SIGMAHQ, need_shared
from scmwatch.events import ReadStats, iter_events

PAIRS = SHARED / "corpora" / "winlogbeat-modules"
_GUID = re.compile(r"\{[0-9A-Fa-f-]{36}\}")


def _pairs() -> list[tuple[Path, Path]]:
    if not PAIRS.is_dir():
        return []
    return [(e, e.with_name(e.name + ".golden.json")) for e in sorted(PAIRS.rglob("*.evtx"))]


def _events(path: Path) -> dict[int, dict]:
    stats = ReadStats()
    events = list(iter_events([str(path)], stats))
    assert not stats.errors, (path, dict(stats.errors))
    return {e.fields["EventRecordID"]: e.fields for e in events}


def _unrecoverable(name: str, evtx: dict) -> bool:
    """The documented losses: Winlogbeat drops empty values and EventID_Qualifiers, and writes
    provider-specific Task/Opcode names that say no number."""
    if name == "EventID_Qualifiers":
        return True
    if name == "Task":
        return evtx.get("Provider_Name") != "Microsoft-Windows-Security-Auditing"
    if name == "Opcode":
        return evtx["Opcode"] not in (0, 1, 2)
    return False


def _same(a: object, b: object) -> bool:
    """Equal, up to what Winlogbeat cannot keep: CR-LF line ends inside values (its XML decoder
    makes them LF) and the letter case of GUIDs Windows wrote as text."""
    if a == b:
        return True
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str):
        if _GUID.fullmatch(a) and a.upper() == b.upper():
            return True
        return a.replace("\r\n", "\n") == b.replace("\r\n", "\n")
    return False


def test_every_pair_gives_the_evtx_fields() -> None:
    pairs = _pairs()
    if not pairs:
        need_shared(PAIRS)
    counts = collections.Counter()
    for evtx_path, golden in pairs:
        assert golden.exists(), golden
        evtx, gold = _events(evtx_path), _events(golden)
        assert evtx.keys() == gold.keys(), evtx_path.name
        for rid, fields in evtx.items():
            counts["events"] += 1
            for name, value in fields.items():
                if value in (None, ""):
                    counts["empty"] += 1  # Winlogbeat drops empty values: documented
                    continue
                if _unrecoverable(name, fields):
                    counts["unrecoverable"] += 1
                    continue
                assert name in gold[rid], f"{evtx_path.name} record {rid}: {name} missing"
                assert _same(value, gold[rid][name]), (evtx_path.name, rid, name, value, gold[rid][name])
                counts["equal" if value == gold[rid][name] else "equal_up_to_crlf_or_case"] += 1
    assert len(pairs) >= 96 and counts["events"] >= 138
    assert counts["equal"] >= 3000, counts
    assert counts["equal_up_to_crlf_or_case"] <= 15, counts


def test_hunt_gives_the_same_alerts_on_both_forms(tmp_path: Path) -> None:
    need_shared(PAIRS)
    need_shared(SIGMAHQ / "rules")
    out = tmp_path / "alerts.jsonl"
    rules = [
        a
        for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")
        for a in ("--rules", SIGMAHQ / d)
    ]
    run = subprocess.run(
        [sys.executable, "-m", "scmwatch", "hunt", str(PAIRS), *map(str, rules), "--rules", "builtin"]
        + ["--format", "jsonl", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    alerts: dict[str, collections.Counter] = {"evtx": collections.Counter(), "json": collections.Counter()}
    for line in out.read_text().splitlines():
        alert = json.loads(line)
        form = "json" if alert["source"].endswith(".golden.json") else "evtx"
        pair = Path(alert["source"].removesuffix(".golden.json")).name
        alerts[form][(alert["rule_id"], pair, alert["event"]["EventRecordID"])] += 1
    assert sum(alerts["evtx"].values()) >= 16
    assert alerts["evtx"] == alerts["json"]
