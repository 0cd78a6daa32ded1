"""Hunt runs in bounded memory: per-file results are spilled and merged, alerts are streamed.

Asserted structurally, never by timing or RSS: the summary's ``memory`` high-water marks stay
under their bounds however many alerts a run produces, the number of events alive while
alerts are streamed is small even when thousands matched, and the spilled, merged output is
exactly the output of one in-memory sort (and of ``--jobs 2``).
"""

from __future__ import annotations

import gc
import json
import os
import random
from pathlib import Path

import pytest

from scmwatch import hunt, spill
from scmwatch.alerts import alert_sort_key
from scmwatch.cli import main
from scmwatch.events.model import Event
from scmwatch.hunt import run_hunt
from scmwatch.sigma import load_rules
from scmwatch.sinks import table as table_mod

FIX = Path(__file__).resolve().parent / "fixtures" / "hunt"
FILES = 4
EVENTS_PER_FILE = 700


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[list[str], Path]:
    """Four files of PsExec service installs on 40 hosts, each file slightly out of time order
    (writers buffer), plus benign installs; a correlation counts installs per host."""
    root = tmp_path_factory.mktemp("memory")
    rng = random.Random(5)
    paths = []
    for f in range(FILES):
        lines = []
        for i in range(EVENTS_PER_FILE):
            sec = f * 7 + i * 3 + rng.randint(-20, 20)  # record order != time order
            name = "PSEXESVC" if rng.random() < 0.8 else "Spooler"
            ev = {
                "EventID": 7045, "Channel": "System", "Provider_Name": "Service Control Manager",
                "Computer": f"WS{rng.randint(0, 39)}", "TimeCreated": _ts(sec), "ServiceName": name,
                "ImagePath": f"%SystemRoot%\\{name}.exe", "ServiceType": "user mode service",
                "StartType": "demand start", "AccountName": "LocalSystem",
            }
            lines.append(json.dumps(ev))
        p = root / f"log{f}.ndjson"
        p.write_text("\n".join(lines) + "\n")
        paths.append(str(p))
    rules = root / "rules"
    rules.mkdir()
    (rules / "base.yml").write_text((FIX / "rules" / "psexec_service.yml").read_text())
    (rules / "corr.yml").write_text(
        "title: PsExec installs repeated on a host\nid: 0a3c1d52-7b61-4c3e-9d0e-5a1f0c2b7e19\nlevel: high\n"
        "correlation:\n  type: event_count\n  rules: [test_psexec_service]\n  group-by: [Computer]\n"
        "  timespan: 2m\n  generate: true\n  condition: {gte: 2}\n"
    )
    return paths, rules


def _ts(sec: int) -> str:
    base = 1714557600 + sec  # 2024-05-01T10:00:00Z
    from datetime import UTC, datetime

    return datetime.fromtimestamp(base, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dicts(alerts) -> list[dict]:
    return [a.to_dict() for a in alerts]


def test_spilled_merge_equals_one_in_memory_sort(stream):
    paths, rules = stream
    rs = load_rules([rules])
    # everything in memory, one flat merge -- vs. many runs on disk, merged in groups of 3
    whole = run_hunt(paths, rs, run_size=10**9, memory_budget=10**9, fan_in=10**6)
    small = run_hunt(paths, rs, run_size=16, memory_budget=40, fan_in=3)
    jobs = run_hunt(paths, rs, run_size=16, memory_budget=40, fan_in=3, jobs=2)
    n_corr = sum(1 for a in whole.alerts if a.correlation)
    assert n_corr > 50 and len(whole.alerts) > 2000  # a stream with many alerts of both kinds
    keys = [alert_sort_key(a) for a in whole.alerts]
    assert keys == sorted(keys)
    assert _dicts(small.alerts) == _dicts(whole.alerts)
    assert _dicts(jobs.alerts) == _dicts(whole.alerts)
    assert small.summary["correlation"] == whole.summary["correlation"]
    assert whole.summary["memory"]["files_written"] == 0
    mem = small.summary["memory"]
    assert mem["files_written"] > 3 * FILES  # spilling really happened
    assert mem["hits"] + mem["correlation_alerts"] == len(whole.alerts)
    assert mem["candidates"] == whole.summary["correlation"]["candidates"]


def test_small_input_stays_in_memory(stream):
    """A few records per file never touch the disk (a directory of small .evtx files)."""
    paths, rules = stream
    rs = load_rules([rules])
    res = run_hunt(paths, rs, run_size=10_000, memory_budget=10_000)
    mem = res.summary["memory"]
    assert mem["files_written"] == 0 and mem["spill_bytes"] == 0
    assert 0 < mem["held_peak"] <= 10_000


def test_default_budget_holds_the_tails_of_a_few_thousand_hits(tmp_path, monkeypatch):
    """Four files hunted one by one (as files beyond hunt.BATCH_BYTES are): each one's hits stay
    under its run size, but together they exceed 4,096 (the budget before). By default the
    tails are all held, none written out and read back."""
    monkeypatch.setattr(hunt, "BATCH_BYTES", 1)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "base.yml").write_text((FIX / "rules" / "psexec_service.yml").read_text())
    rs = load_rules([rules])
    paths = []
    for f in range(4):
        ev = {"EventID": 7045, "Channel": "System", "Computer": "WS1", "ServiceName": "PSEXESVC"}
        lines = [json.dumps({**ev, "TimeCreated": _ts(f * 2000 + i)}) for i in range(1500)]
        p = tmp_path / f"log{f}.ndjson"
        p.write_text("\n".join(lines) + "\n")
        paths.append(str(p))
    held = run_hunt(paths, rs).summary["memory"]
    assert held["hits"] == 6000 and held["held_peak"] == 6000
    assert held["files_written"] == 0 and held["merge_open_peak"] == 0
    assert run_hunt(paths, rs, memory_budget=4096).summary["memory"]["files_written"] > 0


@pytest.mark.parametrize("run_size", [8, 64])
def test_high_water_marks_bounded_independent_of_alert_count(stream, run_size):
    paths, rules = stream
    rs = load_rules([rules])
    one = run_hunt(paths[:1], rs, run_size=run_size, memory_budget=100, fan_in=4)
    all_ = run_hunt(paths, rs, run_size=run_size, memory_budget=100, fan_in=4)
    assert all_.summary["alerts"] > 3 * one.summary["alerts"]  # 4x the input, ~4x the alerts
    for res in (one, all_):
        mem = res.summary["memory"]
        assert mem["alerts_buffered_peak"] <= run_size
        assert mem["candidates_buffered_peak"] <= run_size
        assert mem["held_peak"] <= 100
        assert mem["merge_open_peak"] <= 4
    # what is held at once does not grow with the input
    for key in ("alerts_buffered_peak", "candidates_buffered_peak"):
        assert all_.summary["memory"][key] == one.summary["memory"][key] == run_size


@pytest.mark.parametrize("block", [1, spill.BLOCK])
def test_events_alive_while_streaming_stay_bounded(stream, monkeypatch, block):
    """When the first alert reaches the sink every file has been read and correlated; the old
    pipeline held every hit's and candidate's event then. Count the events alive (their field
    dicts: spilled records keep the fields, not the Event). A reader holds one block of records:
    with 1-byte blocks that is one record per open run; with the default, at most a block each."""
    monkeypatch.setattr(spill, "BLOCK", block)
    paths, rules = stream
    rs = load_rules([rules])
    alive: list[int] = []
    n = 0

    def sink(alert) -> None:
        nonlocal n
        n += 1
        if n in (1, 500, 1500):
            gc.collect()
            alive.append(sum(1 for o in gc.get_objects() if _is_event(o)))

    res = run_hunt(paths, rs, sink=sink, run_size=32, memory_budget=50, fan_in=8)
    assert res.alerts == [] and res.summary["alerts"] == n > 2000
    # <= 50 kept in memory + heads of <= 8 open runs (a correlation alert carries its evidence);
    # with real blocks, <= 8 runs of run_size=32 records each on top
    assert alive and max(alive) < (120 if block == 1 else 120 + 8 * 32), alive


def _is_event(o: object) -> bool:
    return type(o) is Event or (type(o) is dict and "EventID" in o and "TimeCreated" in o)


def test_cli_streams_jsonl_and_reports_memory(stream, tmp_path, capsys):
    paths, rules = stream
    out, summ = tmp_path / "a.jsonl", tmp_path / "s.json"
    rc = main(["hunt", *paths, "--rules", str(rules), "--format", "jsonl", "--output", str(out),
               "--summary", str(summ)])
    _, err = capsys.readouterr()
    data = json.loads(summ.read_text())
    lines = out.read_bytes().splitlines()
    assert rc == 0 and len(lines) == data["alerts"] > 2000
    assert f"{data['alerts']:,} alerts" in err
    mem = data["memory"]
    assert mem["alerts_buffered_peak"] <= mem["run_size"] and mem["merge_open_peak"] <= mem["fan_in"]


def test_table_keeps_its_cap_and_counts_the_rest(stream, capsys, monkeypatch):
    paths, rules = stream
    monkeypatch.setattr(table_mod, "MAX_ROWS", 5)
    rc = main(["hunt", *paths, "--rules", str(rules), "--format", "table"])
    out, err = capsys.readouterr()
    total = int(err.split(" alerts")[0].rsplit(" ", 1)[-1].replace(",", ""))
    assert rc == 0 and total > 2000
    assert f"… {total - 5:,} more alerts not shown" in out


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_write_error_is_one_line(stream, capsys):
    paths, rules = stream
    rc = main(["hunt", *paths, "--rules", str(rules), "--format", "jsonl", "--output", "/dev/full"])
    _, err = capsys.readouterr()
    assert rc == 1 and "/dev/full: cannot write alerts" in err and "Traceback" not in err
