"""One large file hunted as ranges (EVTX chunk ranges, NDJSON line ranges) equals its whole-file hunt.

Real files throughout: EVTX built chunk by chunk (tests/evtxbuild.py) or from the shared
recordings, NDJSON from the simulator. The split threshold is set low (``split_bytes``) so that
small files split into many ranges.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest

import evtxbuild
from lateral_ndjson import lateral, line, logon
from paths import ATTACK_SAMPLES, evtx_files
from scmwatch import split
from scmwatch.events.ranges import FileRange, split_file
from scmwatch.events.read import InputFile
from scmwatch.hunt import run_hunt
from scmwatch.rules import PACK_DIR
from scmwatch.sigma import Engine, load_rules
from scmwatch.simulate import Options, simulate

SMALL = 1 << 12  # split threshold for these tests: every test file is "large"


@pytest.fixture(scope="module")
def pack():
    rs = load_rules([str(PACK_DIR)])
    return rs, Engine(rs)


def _hunt(paths, pack, **kw):
    rs, engine = pack
    errors: list[str] = []
    res = run_hunt([str(p) for p in paths], rs, engine=engine, on_error=lambda e: errors.append(e.line()),
                   **kw)
    return [a.to_dict() for a in res.alerts], res.summary, errors


def _same(paths, pack, *, reread: int = 0, **kw) -> dict:
    """Hunt whole and split; assert identical alerts, counts and problem lines; the split summary."""
    one, s1, e1 = _hunt(paths, pack, **kw)
    two, s2, e2 = _hunt(paths, pack, jobs=2, split_bytes=SMALL, **kw)
    assert two == one
    for key in ("files", "events", "errors", "files_failed", "correlation", "lineage", "alerts_by_rule"):
        assert s2.get(key) == s1.get(key), key
    assert s2["memory"]["candidates"] == s1["memory"]["candidates"]
    assert sorted(e2) == sorted(e1)
    par = s2["parallelism"]
    assert par["files_split"] >= 1 and par["ranges"] > par["files_split"]
    assert par["files_reread_whole"] == reread
    assert s2["jobs"] == 2 and s1["parallelism"]["ranges"] == 0
    return s2


# -- EVTX -----------------------------------------------------------------------------------------

def test_evtx_chunk_ranges_equal_the_whole_file(tmp_path: Path, pack) -> None:
    path = tmp_path / "big.evtx"
    path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(12)))
    s = _same([path], pack)
    assert s["parallelism"]["ranges"] == 8  # RANGES_PER_JOB x 2 workers
    alerts, _, _ = _hunt([path], pack, jobs=2, split_bytes=SMALL)
    ids = [a["record_id"] for a in alerts]
    assert ids and all(a["source"] == str(path) for a in alerts)
    assert sorted(set(ids)) == list(range(17, 601, 17))  # exactly the PsExec records, by their own ids


def test_evtx_ranges_with_a_preallocated_tail(tmp_path: Path, pack) -> None:
    """Zeroed chunks past the declared ones (how Windows preallocates) go to the last range."""
    path = tmp_path / "prealloc.evtx"
    zeroed = [bytes(evtxbuild.CHUNK)] * 3
    path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(6) + zeroed, declared=6))
    _same([path], pack)


@pytest.mark.parametrize("damage", ["zeroed-chunk", "bad-record"])
def test_a_damaged_range_rereads_the_whole_file(tmp_path: Path, pack, damage: str) -> None:
    chunks = evtxbuild.service_chunks(8)
    if damage == "zeroed-chunk":
        chunks[5] = bytes(evtxbuild.CHUNK)  # a chunk the header counts, without a chunk header
    else:
        c = bytearray(chunks[3])
        struct.pack_into("<I", c, evtxbuild.RECORDS_AT + 4, 0xFFFFFF)  # a record size past the chunk
        chunks[3] = bytes(c)
    path = tmp_path / "damaged.evtx"
    path.write_bytes(evtxbuild.evtx_file(chunks))
    s = _same([path], pack, reread=1)
    assert s["errors"]


def test_truncated_and_small_files_are_not_split(tmp_path: Path) -> None:
    data = evtxbuild.evtx_file(evtxbuild.service_chunks(4))
    (tmp_path / "cut.evtx").write_bytes(data[:-100])
    assert split_file(InputFile("cut", str(tmp_path / "cut.evtx")), 4, SMALL) is None
    (tmp_path / "ok.evtx").write_bytes(data)
    assert split_file(InputFile("ok", str(tmp_path / "ok.evtx")), 4, len(data) + 1) is None
    ranges = split_file(InputFile("ok", str(tmp_path / "ok.evtx")), 4, SMALL)
    assert ranges is not None and [(r.start, r.end) for r in ranges] == [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.mark.skipif(not ATTACK_SAMPLES.is_dir(), reason="../shared corpus not present")
@pytest.mark.parametrize("enrich", [True, False])
def test_recordings_concatenated_split_equal_whole(tmp_path: Path, pack, enrich: bool) -> None:
    """Real recordings as one file: with lineage enrichment the old-Windows process creations
    past the first range make the file be read again whole; without it the ranges stand."""
    path = tmp_path / "lateral.evtx"
    path.write_bytes(evtxbuild.concat([str(p) for p in evtx_files(ATTACK_SAMPLES / "Lateral Movement")]))
    _same([path], pack, reread=1 if enrich else 0, enrich=enrich)


# -- NDJSON ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def attack(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(Options(scenarios=["all"], out=out, events=5000, seed=21, hosts=6,
                     labels=out.parent / "l.jsonl"))
    return out


def _joined(attack: Path, dest: Path, *, old_host: bool) -> Path:
    """Every simulated log in one NDJSON file (times out of order across the parts); without the
    host whose Security log lacks process parents unless ``old_host``."""
    with dest.open("wb") as fh:
        for p in sorted(attack.rglob("*.jsonl")):
            data = p.read_bytes()
            if not old_host and any(b'"EventID":4688' in ln and b'"ParentProcessName"' not in ln
                                    for ln in data.splitlines()):
                continue
            fh.write(data)
    return dest


def test_ndjson_ranges_equal_the_whole_file_with_correlations(tmp_path: Path, pack, attack: Path) -> None:
    path = _joined(attack, tmp_path / "all.jsonl", old_host=False)
    one, s1, _ = _hunt([path], pack)
    assert any(a.get("correlation") for a in one)  # cross-host correlations are in play
    assert s1["correlation"]["late_events"] and s1["correlation"]["link_facts"]
    _same([path], pack)


def test_larger_files_get_more_ranges_and_the_same_output(tmp_path: Path, pack, attack: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A file over ``RANGE_BYTES`` per worker is cut into more ranges (the idle end of a split
    run is up to one range); the output is still the whole file's."""
    path = _joined(attack, tmp_path / "all.jsonl", old_host=False)
    size = path.stat().st_size
    assert split.range_count(size, 2) == 2 * split.RANGES_PER_JOB
    monkeypatch.setattr(split, "RANGE_BYTES", -(-size // 14))  # 7 per worker
    assert split.range_count(size, 2) == 14 and split.range_count(None, 2) == 2 * split.RANGES_PER_JOB
    assert _same([path], pack)["parallelism"]["ranges"] == 14


def test_range_weights_shrink_the_last_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last round of ranges is cut into a shrinking tail (1/2, 1/4, 1/8 and 1/8 of a range
    per worker) down to TAIL_BYTES; a file whose ranges are already small has none."""
    assert split.range_weights(32 << 20, 2) == [1] * 8  # 4 MiB ranges: nothing to cut
    w = split.range_weights(1 << 30, 2)
    assert w == [8] * 14 + [4, 4, 2, 2, 1, 1, 1, 1]
    assert sum(w) == 8 * split.range_count(1 << 30, 2)  # the tail is one round of the body
    monkeypatch.setattr(split, "TAIL_BYTES", 1 << 20)
    assert split.range_weights(48 << 20, 3) == [4] * 9 + [2, 2, 2, 1, 1, 1, 1, 1, 1]  # 2 halvings
    assert split.range_weights(24 << 20, 3) == [2] * 9 + [1] * 6


@pytest.mark.parametrize("kind", ["evtx", "ndjson"])
def test_weighted_ranges_follow_the_weights_and_tile_the_file(tmp_path: Path, attack: Path,
                                                              kind: str) -> None:
    if kind == "evtx":
        path = tmp_path / "big.evtx"
        path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(40)))
    else:
        path = _joined(attack, tmp_path / "all.jsonl", old_host=False)
    weights = [4, 4, 4, 2, 1, 1]
    ranges = split_file(InputFile(str(path), str(path)), len(weights), SMALL, weights)
    assert ranges is not None and [r.part for r in ranges] == list(range(6))
    assert all(r.parts == 6 for r in ranges)
    assert [a.end for a in ranges[:-1]] == [b.start for b in ranges[1:]] and ranges[0].start == 0
    sizes = [r.end - r.start for r in ranges]
    for size, w in zip(sizes, weights, strict=True):  # within a chunk / a line of its share
        assert abs(size - w * sizes[-1]) <= (1 if kind == "evtx" else 2048) * w
    few = split_file(InputFile(str(path), str(path)), 3, SMALL, [100, 1, 1])  # cuts merge, never empty
    assert few is not None and all(r.end > r.start for r in few)


@pytest.mark.parametrize("kind", ["evtx", "ndjson"])
def test_a_shrinking_tail_gives_the_whole_files_output(tmp_path: Path, pack, attack: Path, kind: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of unequal sizes (the shrinking tail), each a pool task of its own: the output,
    correlations and link facts included, is the whole file's."""
    if kind == "evtx":
        path = tmp_path / "big.evtx"
        path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(64)))
    else:
        path = _joined(attack, tmp_path / "all.jsonl", old_host=False)
    monkeypatch.setattr(split, "TAIL_BYTES", path.stat().st_size // 64)
    weights = split.range_weights(path.stat().st_size, 2)
    assert len(set(weights)) == 4
    s = _same([path], pack)
    assert s["parallelism"]["ranges"] == len(weights) == 14


@pytest.mark.parametrize("budget", [8, 100_000])
def test_ranges_short_hit_runs_are_gathered_as_they_come_in(tmp_path: Path, pack, attack: Path,
                                                             budget: int) -> None:
    """Each range's last, short run of hits joins its file's runs as the range comes in (sorted
    runs of ``run_size`` written then, the rest left to the memory budget): with runs and a
    budget much smaller than the hits (most written while ranges come in) or a budget that holds
    them, the alerts are the whole file's in the same order, and no buffer held more than its
    bound."""
    path = _joined(attack, tmp_path / "all.jsonl", old_host=False)
    s = _same([path], pack, run_size=16, memory_budget=budget)
    mem = s["memory"]
    assert mem["hits"] > 16 * s["parallelism"]["ranges"]
    assert mem["alerts_buffered_peak"] <= 16 and mem["held_peak"] <= budget


def test_a_range_result_is_handed_over_in_a_file(tmp_path: Path, pack) -> None:
    """A pool worker writes a range's result to a spill file and sends only its path through the
    pool's pipe; the parent reads the same result back and removes the file."""
    from scmwatch.hunt import HuntContext, hunt_unit
    from scmwatch.spill import SpillDir

    path = lateral(tmp_path)
    rs, engine = pack
    spill = SpillDir(str(tmp_path))
    ctx = HuntContext(rs, spill, engine=engine)
    ranges = split_file(InputFile(str(path), str(path)), 8, SMALL)
    assert ranges is not None
    r = hunt_unit(ctx, 3, ranges[3])
    handed = split.hand_over(spill, r)
    assert len(pickle.dumps(handed)) < 300 < len(pickle.dumps(r))
    back = handed.result()
    assert not Path(handed.path).exists()
    assert back.index == 3 and back.stats is not None and r.stats is not None
    assert back.stats.events == r.stats.events == 50 and back.hits == r.hits
    assert back.links is not None and r.links is not None and list(back.links.rows()) == list(r.links.rows())
    spill.cleanup()


def test_each_range_is_a_pool_task_of_its_own(tmp_path: Path) -> None:
    from scmwatch.hunt import _batches

    path = tmp_path / "big.evtx"
    path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(16)))
    ranges = split_file(InputFile(str(path), str(path)), 16, SMALL)
    assert ranges is not None
    small = [InputFile(f"s{i}", str(path)) for i in range(3)]
    units = list(enumerate([*ranges, *small]))
    batches = _batches(units, 2)
    assert [b for b in batches if len(b) == 1 and isinstance(b[0][1], FileRange)] == [[u] for u in units[:16]]


def test_ndjson_old_host_lineage_rereads_whole(tmp_path: Path, pack, attack: Path) -> None:
    _same([_joined(attack, tmp_path / "all.jsonl", old_host=True)], pack, reread=1)


def _flat(i: int, **extra: object) -> bytes:
    ev = {"EventID": 7045, "Channel": "System", "Computer": f"H{i % 3}",
          "Provider_Name": "Service Control Manager",
          "TimeCreated": f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000000Z",
          "ServiceName": "PSEXESVC" if i % 9 == 0 else f"svc{i}", "ImagePath": "C:\\Windows\\PSEXESVC.exe"
          if i % 9 == 0 else f"C:\\Program Files\\a{i}\\s.exe", **extra}
    return json.dumps(ev).encode()


@pytest.mark.parametrize("variant", ["lf", "crlf", "no-final-newline", "blank-lines", "long-line"])
def test_ndjson_line_ranges_edge_cases(tmp_path: Path, pack, variant: str) -> None:
    eol = b"\r\n" if variant == "crlf" else b"\n"
    lines = [_flat(i) for i in range(400)]
    if variant == "long-line":  # one line longer than a whole range
        lines[150] = _flat(150, Padding="x" * (4 * SMALL))
    body = eol.join(lines)
    if variant == "blank-lines":
        body = b"\n\n" + body.replace(lines[200] + eol, lines[200] + eol + b"\n  \n")
    if variant != "no-final-newline":
        body += eol
    path = tmp_path / "events.jsonl"
    path.write_bytes(body)
    _same([path], pack)
    alerts, _, _ = _hunt([path], pack, jobs=2, split_bytes=SMALL)
    text = body.split(b"\n")
    for a in alerts:  # record_id is the line the event is on, counted in the whole file
        assert b'"PSEXESVC"' in text[a["record_id"] - 1]


def test_ndjson_broken_line_at_a_range_start(tmp_path: Path, pack) -> None:
    lines = [_flat(i) for i in range(400)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    ranges = split_file(InputFile(str(path), str(path)), 8, SMALL)
    assert ranges
    data = bytearray(path.read_bytes())
    at = ranges[3].start
    data[at:at + 1] = b"#"  # the first line of the fourth range is broken JSON now
    path.write_bytes(bytes(data))
    s = _same([path], pack, reread=1)
    assert s["errors"] == {"json-line": 1}


def test_ndjson_range_bounds_fall_on_line_starts(tmp_path: Path) -> None:
    line = b'{"EventID": 1, "Channel": "x"}\n'  # 31 bytes
    path = tmp_path / "x.jsonl"
    path.write_bytes(line * 64)  # 1984 bytes: a quarter is 496 = 16 lines exactly
    ranges = split_file(InputFile(str(path), str(path)), 4, 1)
    assert ranges is not None
    assert [(r.start, r.first_line) for r in ranges] == [(0, 1), (496, 17), (992, 33), (1488, 49)]
    assert all(isinstance(r, FileRange) and r.fmt == "ndjson" for r in ranges)


def test_ndjson_line_numbers_are_counted_when_a_range_is_handed_out(tmp_path: Path) -> None:
    """No line count before the ranges start: a range's first line is counted when it is
    pickled for a worker (or read here), counting only the ranges before it, each once."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b'{"EventID": %d, "Channel": "x"}\n' % (i % 10) for i in range(100)))
    ranges = split_file(InputFile(str(path), str(path)), 4, 1)
    assert ranges is not None and len(ranges) == 4
    counter = ranges[0].lines
    assert counter is not None and counter.known == [1]  # nothing counted by splitting
    sent = pickle.loads(pickle.dumps(ranges[2]))
    assert counter.known == [1, ranges[1].start // 31 + 1, ranges[2].start // 31 + 1]
    assert sent.lines is None and sent.first_line == ranges[2].first_line
    data = path.read_bytes()
    for r in ranges:
        assert pickle.loads(pickle.dumps(r)).first_line == data[:r.start].count(b"\n") + 1
    assert len(counter.known) == 4  # the last range's end (the file size) is never counted


def test_ndjson_line_counts_are_shared_with_forked_workers(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool worker that takes its range from the plan it inherited by fork (not pickled) asks
    the counter itself: what it counts is the parent's too (shared memory), so no range is
    counted twice, whichever process asks first."""
    import multiprocessing

    from scmwatch.events import ranges as ranges_mod

    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b'{"EventID": %d, "Channel": "x"}\n' % (i % 10) for i in range(100)))
    ranges = split_file(InputFile(str(path), str(path)), 4, 1)
    assert ranges is not None and len(ranges) == 4
    child = multiprocessing.get_context("fork").Process(target=lambda: ranges[3].first_line)
    child.start()
    child.join()
    assert child.exitcode == 0

    def recount(*args: object) -> int:
        raise AssertionError("counted again")

    monkeypatch.setattr(ranges_mod, "_newlines", recount)
    data = path.read_bytes()
    assert [r.first_line for r in ranges] == [data[:r.start].count(b"\n") + 1 for r in ranges]


def test_bom_and_non_ndjson_files_are_not_split(tmp_path: Path, pack) -> None:
    body = b"\n".join(_flat(i) for i in range(300)) + b"\n"
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + body)
    (tmp_path / "array.json").write_bytes(b"[" + body.replace(b"}\n{", b"},\n{") + b"]")
    for name in ("bom.jsonl", "array.json"):
        p = tmp_path / name
        assert split_file(InputFile(str(p), str(p)), 4, SMALL) is None
        one, _, _ = _hunt([p], pack)
        two, s2, _ = _hunt([p], pack, jobs=2, split_bytes=SMALL)
        assert one and two == one and s2["parallelism"]["files_split"] == 0


def test_summary_reports_the_parallelism_used(tmp_path: Path, pack) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(b"\n".join(_flat(i) for i in range(50)) + b"\n")
    _, s, _ = _hunt([path], pack, jobs=2)  # one small file: one unit, one worker used
    assert s["jobs"] == 1 and s["parallelism"] == {"jobs": 1, "units": 1, "files_split": 0, "ranges": 0,
                                                   "files_reread_whole": 0}
    _, s, _ = _hunt([path], pack, jobs=2, split_bytes=SMALL)
    assert s["jobs"] == 2 and s["parallelism"]["units"] == s["parallelism"]["ranges"] > 1
    line = s["parallelism"]["ranges_timeline"]  # when the ranges' results came in
    assert 0 < line["first_result"] <= line["last_result"] <= s["seconds"]
    assert 0 <= line["last_lead"] <= line["last_result"] - line["first_result"]


@pytest.mark.parametrize("kind", ["evtx", "ndjson"])
def test_this_process_hunts_ranges_beside_the_worker(tmp_path: Path, pack, attack: Path, kind: str) -> None:
    """With ``--jobs 2`` this process hunts ranges of the split file beside one forked worker,
    replaying and correlating the ranges that come in between its own; the output is still the
    whole file's (correlations across ranges included for NDJSON)."""
    if kind == "evtx":
        path = tmp_path / "big.evtx"
        path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(12)))
    else:
        path = _joined(attack, tmp_path / "all.jsonl", old_host=False)
    par = _same([path], pack)["parallelism"]
    assert 1 <= par["ranges_here"] <= par["ranges"]


def test_progress_advances_by_range_bytes(tmp_path: Path, pack, monkeypatch) -> None:
    """The bar moves as each range is read, by the range's bytes, and reaches the file size."""
    from scmwatch import progress

    seen: list[int] = []
    real = progress.Progress.advance

    def advance(self, nbytes: int, events: int) -> None:
        seen.append(nbytes)
        real(self, nbytes, events)

    monkeypatch.setattr(progress.Progress, "advance", advance)
    path = tmp_path / "big.evtx"
    path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(8)))
    _, s, _ = _hunt([path], pack, jobs=2, split_bytes=SMALL)
    assert len(seen) == s["parallelism"]["ranges"] == 8
    assert sum(seen) == path.stat().st_size


def test_link_facts_replayed_across_ranges_in_file_order(tmp_path: Path, pack) -> None:
    """The parent replays the ranges as they come in: same alerts, link facts and candidates as
    the whole file, whose facts decide which chains correlate."""
    path = lateral(tmp_path)
    one, s1, _ = _hunt([path], pack)
    chains = sorted(a["host"] for a in one if a["title"].startswith("Lateral movement chain"))
    assert chains == ["BETA.corp.example", "VICTIM.corp.example"]  # ALPHA was renamed before the chain
    assert s1["correlation"]["link_facts"] == 3  # the 392 repeats of the first logon dropped
    s2 = _same([path], pack)
    assert s2["parallelism"]["ranges"] == 8


def test_ranges_arriving_last_first_are_replayed_in_file_order(tmp_path: Path, pack) -> None:
    """Results in reverse file order (a runner's workers finish in any order): each range waits
    for the ranges before it, and the output is still the whole file's."""
    from scmwatch.hunt import hunt_unit
    from scmwatch.split import split_units

    def last_first(ctx, units, jobs, report):
        yield from reversed([hunt_unit(ctx, i, u, collect_errors=True) for i, u in units])

    path = lateral(tmp_path)
    one, s1, _ = _hunt([path], pack)
    two, s2, _ = _hunt([path], pack, jobs=2, split_bytes=SMALL, map_units=split_units(last_first))
    assert two == one and s2["parallelism"]["ranges"] == 8
    assert s2["correlation"] == s1["correlation"]
    assert s2["memory"]["candidates"] == s1["memory"]["candidates"]


def test_lists_and_objects_in_link_fields_whole_and_split(tmp_path: Path, pack) -> None:
    """A list or object where an address or a host name belongs (attacker-controlled JSON): the
    per-file fact dedup takes it (no exception), whole and split alike."""
    lines = [line(i, EventID=4624, Channel="Security", Computer="DC01", LogonType=3,
                  IpAddress=["10.0.0.1"], WorkstationName={"n": i % 2}) if i % 3
             else logon(i, "10.0.0.9", "VICTIM") for i in range(300)]
    lines[7] = line(7, EventID=22, Channel="Microsoft-Windows-Sysmon/Operational", Computer="WS1",
                    QueryName=["evil.example"], QueryResults="10.0.0.5")
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"".join(lines))
    one, s1, errors = _hunt([path], pack)
    assert s1["events"] == 300 and not errors
    _same([path], pack)


def test_two_split_files_replayed_each_and_merged(tmp_path: Path, pack) -> None:
    """Two split inputs: each file's ranges replayed into its own stream (no early correlation,
    which needs the run's one input), the streams merged by time: the unsplit run's output."""
    first = lateral(tmp_path)
    second = tmp_path / "again.jsonl"
    second.write_bytes(first.read_bytes().replace(b"VICTIM", b"TARGET"))
    s = _same([first, second], pack)
    assert s["parallelism"]["files_split"] == 2 and s["parallelism"]["ranges"] == 16


def test_ranges_parse_address_name_facts_only_where_the_replay_keeps_them(
        tmp_path: Path, pack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS query repeated with a changing answer: the whole file parses its first event's fact
    (the raw dedup drops the repeats unparsed), and so do the ranges, which leave each fact
    unparsed for the replay that alone knows the repeats; the output is the whole file's."""
    from scmwatch import correlate
    from scmwatch.hunt import hunt_unit
    from scmwatch.split import split_units

    dns = [line(i, EventID=22, Channel="Microsoft-Windows-Sysmon/Operational", Computer="WS1",
                QueryName="fs.corp.example", QueryResults=f"10.0.{i // 200}.{i % 200 + 1}")
           for i in range(400)]
    path = tmp_path / "dns.jsonl"
    path.write_bytes(b"".join(dns))
    parsed: list[str] = []
    real = correlate.extract_fact

    def counted(fields, *args):
        parsed.append(fields["QueryResults"])
        return real(fields, *args)

    monkeypatch.setattr(correlate, "extract_fact", counted)
    one, s1, _ = _hunt([path], pack)
    assert parsed == ["10.0.0.1"] and s1["correlation"]["link_facts"] == 1
    parsed.clear()

    def in_order(ctx, units, jobs, report):
        for i, u in units:
            r = hunt_unit(ctx, i, u, collect_errors=True)
            assert len(r.links.rest) == r.stats.events  # each distinct, none parsed in the range
            yield r

    two, s2, _ = _hunt([path], pack, jobs=2, split_bytes=SMALL, map_units=split_units(in_order))
    assert two == one and s2["correlation"] == s1["correlation"] and s2["parallelism"]["ranges"] == 8
    assert parsed == ["10.0.0.1"]


@pytest.mark.parametrize("fresh", [True, False])
def test_a_link_event_without_a_usable_time(tmp_path: Path, pack, fresh: bool) -> None:
    """A range keeps its link events' time text and the replay parses it only for the facts it
    keeps: a kept one without a usable time makes the file be read again whole (which reports
    it as the whole-file read does); a repeat the dedup drops is no problem in either read."""
    path = lateral(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    ip, ws = ("10.0.0.99", "NEWHOST") if fresh else ("10.0.0.9", "VICTIM")
    bad = logon(170, ip, ws).replace(b"2024-01-01T01:02:50.000000Z", b"not a time at all, really!!")
    assert len(bad) == len(lines[170])
    lines[170] = bad
    path.write_bytes(b"".join(lines))
    one, s1, e1 = _hunt([path], pack)
    assert bool(s1["errors"].get("time")) == fresh and bool(e1) == fresh
    _same([path], pack, reread=1 if fresh else 0)


def test_link_events_columns_pickle_and_time_text_parses_as_time_us() -> None:
    """``LinkEvents`` travels from a worker as columns; the time text it keeps gives exactly the
    microseconds ``time_us`` gives the event, canonical or not."""
    from scmwatch.correlate import LinkEvents
    from scmwatch.correlate.stream import time_us, when_us
    from scmwatch.events.model import Event

    texts = ["2024-01-01T01:02:03.123456Z", "2024-01-01T01:02:03Z", "2024-01-01T01:02:03.1234567Z",
             "2024-01-01T03:02:03.5+02:00", "2024-02-30T01:02:03Z", "garbage", ""]
    for text in texts:
        assert when_us(text) == time_us(Event({"TimeCreated": text}, "s", 1, "json")), text
    links = LinkEvents()
    raw = ("4624", "DC01", "10.0.0.9", "VICTIM", None, None, None, None)
    fact = ("ipname", "10.0.0.9", "victim")
    for pos in range(5):
        when = texts[pos % 2] if pos != 3 else 77
        links.add(pos, when, links.index(raw if pos % 2 else None, fact), pos == 4)
    links.add(5, "x", links.index(raw, (["unhashable"],)), False)
    back = pickle.loads(pickle.dumps(links))
    assert len(back.raws) == 2 and len(back.facts) == 3
    assert list(back.rows()) == list(links.rows())
    rows = list(back.rows())
    assert rows[3] == (3, 77, raw, fact, False) and rows[4][4] is True and rows[5][3] == (["unhashable"],)
    assert rows[0] == (0, when_us(texts[0]), None, fact, False)


def test_newline_counts_c_and_python_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C newline count (``events/_lines.c``) and its Python twin agree on any bytes and end,
    and the line numbers of NDJSON ranges are the same through either."""
    import random

    from scmwatch.events import ranges

    rng = random.Random(7)
    blobs = [b"", b"\n", b"\n\n", b"abc", bytes(rng.randrange(256) for _ in range(5000)),
             b"\r\n".join(b"x" * rng.randrange(40) for _ in range(300))]
    for blob in blobs:
        buf = bytearray(blob)
        for end in {0, 1, len(buf) // 3, len(buf)}:
            want = blob[:end].count(b"\n")
            assert ranges.py_newlines_in(buf, end) == want
            if ranges._lines is not None:
                assert ranges._lines.count_newlines(buf, end) == want
                assert ranges._lines.count_newlines(memoryview(buf), end) == want
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b'{"EventID": %d}\n' % i + b"\n" * (i % 3) for i in range(500)))
    firsts = []
    for count in (ranges.newlines_in, ranges.py_newlines_in):
        monkeypatch.setattr(ranges, "newlines_in", count)
        parts = split_file(InputFile(str(path), str(path)), 6, 1)
        assert parts is not None
        firsts.append([pickle.loads(pickle.dumps(r)).first_line for r in parts])
    data = path.read_bytes()
    assert firsts[0] == firsts[1] == [data[:r.start].count(b"\n") + 1 for r in parts]
