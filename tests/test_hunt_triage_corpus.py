"""``hunt`` end to end on the shared EVTX corpus with triage filters, a tuning file and ``--dedup``
(issue 14); skipped when ../shared is absent."""

from __future__ import annotations

import json

import pytest

from paths import ATTACK_SAMPLES, need_shared
from scmwatch.cli import main

REMCOM = "df77c445-3d56-458d-9b50-88de3c4a047b"  # built-in pack: RemCom / impacket psexec over SMB
TUNE = f"""\
drop: ['Service ImagePath, ServiceDll or FailureCommand written*']
levels: {{'PsExec named pipes*': low}}
exclude:
  {REMCOM}:
    IpAddress: '::1'
"""


def hunt(capsys, *args: str) -> list[dict]:
    rc = main(["hunt", str(need_shared(ATTACK_SAMPLES)), "--format", "jsonl", *args])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def every(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("corpus") / "all.jsonl"
    assert main(["hunt", str(need_shared(ATTACK_SAMPLES)), "--format", "jsonl", "-o", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_filters_keep_exactly_what_they_select(capsys, every):
    kept = hunt(capsys, "--include-host", "pc01", "--exclude-rule", "*named pipes*", "--level", "HIGH",
                "--from", "2000-01-01", "--exclude-tag", "attack.t0000")
    want = [a for a in every if a["host"].split(".")[0].upper() == "PC01" and a["level"] == "high"
            and "named pipes" not in a["title"]]
    assert kept == want and len(want) >= 10


def test_tune_then_dedup(capsys, tmp_path, every):
    tune = tmp_path / "tune.yml"
    tune.write_text(TUNE)
    tuned = hunt(capsys, "--tune", str(tune))
    local = [a for a in every if a["rule_id"] == REMCOM and a["event"].get("IpAddress") == "::1"]
    assert len(local) == 6  # the corpus: RemCom copied over C$ from ::1 six times
    assert [a for a in tuned if a["rule_id"] == REMCOM] == [
        a for a in every if a["rule_id"] == REMCOM and a not in local]
    assert not any(a["title"].startswith("Service ImagePath, ServiceDll") for a in tuned)
    assert {a["level"] for a in tuned if a["title"].startswith("PsExec named pipes")} == {"low"}
    assert [a for a in tuned if "correlation" in a] == [a for a in every if "correlation" in a]

    rows = hunt(capsys, "--tune", str(tune), "--dedup")
    assert sum(r["count"] for r in rows) == len(tuned) and len(rows) < len(tuned)
    assert [r for r in rows if "correlation" in r] == [
        {**a, "count": 1, "first_timestamp": a["timestamp"], "last_timestamp": a["timestamp"]}
        for a in tuned if "correlation" in a]
    remcom = [r for r in rows if r["rule_id"] == REMCOM]
    assert [r["count"] for r in remcom] == [6]  # the same file, share and source, six times
    assert [r["first_timestamp"] for r in rows] == sorted(r["first_timestamp"] for r in rows)
