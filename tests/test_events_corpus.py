"""Readers on the shared real-world corpora (skipped cleanly when ../shared is absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from paths import ATTACK_SAMPLES, SIGMAHQ, evtx_files, evtx_records, need_shared
from scmwatch.events import ReadStats, iter_events, read_input
from scmwatch.events.read import InputFile


def _raw_count(path: Path) -> int:
    """What the evtx package itself yields for a file (records it cannot decode excluded)."""
    return sum(1 for _ in evtx_records(path))


def test_every_attack_sample_reads_with_evtx_own_count() -> None:
    root = need_shared(ATTACK_SAMPLES)
    files = evtx_files(root)
    assert len(files) > 250
    mismatched = []
    for path in files:
        stats = ReadStats()
        events = list(read_input(InputFile(str(path), str(path)), stats))
        if len(events) != _raw_count(path):
            mismatched.append(path.name)
        # (ETW-sourced recordings legitimately have Channel null; every record has an EventID)
        assert all(isinstance(e.fields.get("EventID"), int) for e in events), path
        assert all(e.source == str(path) and e.fmt == "evtx" for e in events)
    assert mismatched == []


def test_whole_attack_folder_run_succeeds() -> None:
    root = need_shared(ATTACK_SAMPLES)
    stats = ReadStats()
    n = sum(1 for _ in iter_events([str(root)], stats))
    assert n == stats.events > 8000
    # The folder holds one IIS text log (not a Windows log): reported, counted, not fatal.
    assert set(stats.errors) <= {"format"} and stats.errors.get("format", 0) <= 1
    assert stats.exit_code == 0


def test_regression_json_twins_match_evtx() -> None:
    root = need_shared(SIGMAHQ / "regression_data")
    pairs = [(p, p.with_suffix(".json")) for p in evtx_files(root) if p.with_suffix(".json").exists()]
    assert len(pairs) >= 200
    for evtx_path, json_path in pairs:
        key = lambda e: (e.fields["EventID"], e.fields["Computer"], e.fields["EventRecordID"])  # noqa: E731
        stats = ReadStats()
        from_evtx = [key(e) for e in iter_events([str(evtx_path)], stats)]
        from_json = [key(e) for e in iter_events([str(json_path)], stats)]
        assert from_json == from_evtx, json_path
        assert not stats.errors, (json_path, stats.errors)


def test_truncated_and_corrupt_evtx_are_reported_and_rest_read(tmp_path: Path) -> None:
    src = need_shared(ATTACK_SAMPLES / "Lateral Movement" / "LM_sysmon_psexec_smb_meterpreter.evtx")
    data = src.read_bytes()
    trunc = tmp_path / "trunc.evtx"
    trunc.write_bytes(data[: 4096 + 30000])
    corrupt = tmp_path / "corrupt.evtx"
    bad = bytearray(data)
    bad[8000:9000] = b"A" * 1000  # inside the first chunk's records
    corrupt.write_bytes(bytes(bad))
    good = tmp_path / "good.evtx"
    shutil.copy(src, good)
    stats = ReadStats()
    events = list(iter_events([str(trunc), str(corrupt), str(good)], stats))
    assert stats.errors["evtx-truncated"] == 1
    assert stats.errors.get("evtx-record", 0) >= 1
    full = _raw_count(src)
    assert len([e for e in events if e.source == str(good)]) == full
    assert 0 < len([e for e in events if e.source == str(corrupt)]) < full
    assert stats.exit_code == 0  # partial parse errors are reported and counted


@pytest.mark.parametrize("garbage", [b"ElfFile\x00" + b"\x00" * 50, b"ElfFile\x00" + b"\xff" * 5000])
def test_evtx_header_garbage(tmp_path: Path, garbage: bytes) -> None:
    p = tmp_path / "bad.evtx"
    p.write_bytes(garbage)
    stats = ReadStats()
    assert list(iter_events([str(p)], stats)) == []
    assert stats.errors and stats.exit_code == 1


def test_c_and_python_normalization_agree_on_every_real_record() -> None:
    import orjson

    from scmwatch.events import normalize

    if normalize._flatten is None:
        pytest.skip("the C extension was not built (no compiler at install time)")
    root = need_shared(ATTACK_SAMPLES)
    checked = 0
    for path in evtx_files(root) + evtx_files(SIGMAHQ / "regression_data"):
        for rec in evtx_records(path):
            in_c = normalize._flatten.from_evtx_dict(orjson.loads(rec["data"]))
            in_py = normalize.from_evtx_dict_py(orjson.loads(rec["data"]))
            assert in_c == in_py, (path, rec["event_record_id"])
            assert list(in_c) == list(in_py)  # same key order too
            checked += 1
    assert checked > 8000
