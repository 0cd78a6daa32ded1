"""hunt on a real Dask LocalCluster (2 worker processes): the same alerts as one process.

Covers: equality with a local hunt on a simulated multi-host attack (cross-host correlations) and
on the shared corpus, a worker killed mid-hunt (its tasks rerun elsewhere, nothing lost or doubled),
inputs served over HTTP on loopback and read by the workers, and the CLI.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from paths import ATTACK_SAMPLES  # noqa: E402
from scmwatch import cluster as cl  # noqa: E402
from scmwatch.events.model import ReadStats  # noqa: E402
from scmwatch.events.read import discover  # noqa: E402
from scmwatch.hunt import local_units, run_hunt  # noqa: E402
from scmwatch.rules import PACK_DIR  # noqa: E402
from scmwatch.sigma import ruleset as ruleset_mod  # noqa: E402


@pytest.fixture(scope="module")
def _clusters():
    """The module's LocalCluster (the last one, when one had to be replaced)."""
    held: list[cl.Cluster] = [cl.Cluster("local:2")]
    yield held
    held[-1].close()


@pytest.fixture
def cluster(_clusters):
    """The module's cluster with both its workers: a test that SIGKILLs one leaves its nanny to
    start another, which the next test waits for (a full run once found one worker missing for
    the rest of the module); a cluster whose worker does not come back is replaced."""
    try:
        _clusters[-1].client.wait_for_workers(2, timeout=60)
    except TimeoutError:
        _clusters[-1].close()
        _clusters.append(cl.Cluster("local:2"))
    return _clusters[-1]


def _alerts(result) -> list[dict]:
    return [a.to_dict() for a in result.alerts]


# what depends on how a run was laid out, not on its input: timing, workers, units, spill files
RUNTIME = {"seconds", "seconds_total", "events_per_second", "jobs", "parallelism", "output_seconds", "memory",
           "cluster"}
# correlated in partitions: the peaks are the largest partition's (README, "Run on a cluster")
PARTITION_PEAKS = {"partitioned", "state_peak", "groups_peak", "reorder_peak"}


def _assert_same_summary(remote: dict, local: dict) -> None:
    """The whole summary of ``remote`` equals ``local``'s but for the layout-dependent fields."""
    def comparable(s: dict) -> dict:
        out = {k: v for k, v in s.items() if k not in RUNTIME}
        if "correlation" in s:
            skip = PARTITION_PEAKS if "partitioned" in remote.get("correlation", {}) else set()
            out["correlation"] = {k: v for k, v in s["correlation"].items() if k not in skip}
        return out

    assert comparable(remote) == comparable(local)


def _both(paths: list[str], cluster, pack, **kw):
    rs, engine = pack
    local = run_hunt(paths, rs, engine=engine)
    payload = cl.rule_payload([str(PACK_DIR)])
    remote = run_hunt(paths, rs, engine=engine, map_units=cluster.map_units(payload), **kw)
    return local, remote


def test_dask_errors_logged_in_a_worker_do_not_reach_the_terminal(capfd):
    """A worker whose heartbeat meets a scheduler closing under Ctrl-C logs an ERROR with a
    traceback (a loaded test run saw it in 2 of 3 runs); what the user sees is the hunt's own
    one-line report, failures that matter come back as task exceptions."""

    def heartbeat_failure() -> None:
        import logging

        try:
            raise OSError("scmwatch-test: scheduler gone")
        except OSError:
            logging.getLogger("distributed.worker").exception("Failed to communicate with scheduler")

    with cl.Cluster("local:1") as c:
        c.client.run(heartbeat_failure)
    assert "scmwatch-test" not in capfd.readouterr().err


def test_cluster_equals_local_on_a_multi_host_attack(cluster, pack, attack):
    local, remote = _both([str(attack)], cluster, pack)
    assert _alerts(local) and _alerts(remote) == _alerts(local)
    corr = [a for a in local.alerts if a.correlation]
    assert len({a.event.get("Computer") for a in corr}) > 1  # correlations on several hosts
    _assert_same_summary(remote.summary, local.summary)
    assert remote.summary["correlation"]["link_facts"] > 0


@pytest.mark.skipif(not ATTACK_SAMPLES.is_dir(), reason="../shared corpus not present")
def test_cluster_equals_local_on_the_corpus(cluster, pack):
    local, remote = _both([str(ATTACK_SAMPLES / "Lateral Movement")], cluster, pack)
    assert _alerts(local) and _alerts(remote) == _alerts(local)
    _assert_same_summary(remote.summary, local.summary)


def test_a_worker_starts_each_file_afresh_across_hunts(attack):
    """A worker's rules (and candidate selector) serve every hunt with the same rule texts; the
    selector's per-file fact dedup must not carry over when the next hunt's file has the index
    of the last file the worker saw (its facts were dropped as repeats: link_facts 142 vs 164)."""
    payload = cl.rule_payload([str(PACK_DIR)])
    unit = next(u for u in discover([str(attack)], ReadStats()) if Path(u.path).name == "Security.jsonl")
    first, again = (cl.hunt_batch(payload, cl.Batch([(0, unit)])) for _ in range(2))
    facts = [rec[4] for rec in first.cand_mem if rec[4] is not None]
    assert facts and [rec[4] for rec in again.cand_mem if rec[4] is not None] == facts


def _fresh_context(payload):
    """The context of a worker process that has not hunted these rules yet."""
    for ctx in cl._CONTEXTS.values():
        ctx.spill.cleanup()
    cl._CONTEXTS.clear()
    return cl._context(payload)


def test_a_workers_rules_come_from_the_cache_on_the_next_hunt(tmp_path, monkeypatch):
    """The rule files shipped to a worker live in a folder named by their digest, so the rule
    cache (keyed by paths and contents) serves the next hunt, or another worker process, and no
    hunt leaves a folder of rule files in the temporary directory."""
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    opened = []
    real = ruleset_mod.open_entry
    monkeypatch.setattr(ruleset_mod, "open_entry",
                        lambda *a: opened.append(real(*a)[1] is not None) or real(*a))
    payload = cl.rule_payload([str(PACK_DIR)])
    cold = _fresh_context(payload).ruleset.rules
    warm = _fresh_context(payload).ruleset.rules
    assert opened == [False, True]  # compiled from the files, then the cache's entry
    assert [r.id for r in warm] == [r.id for r in cold] and warm
    assert os.listdir(tmp_path / "cache" / "payloads") == [payload.digest]
    spill = cl._CONTEXTS[payload.digest].spill.path
    assert os.listdir(tmp_path / "tmp") == [os.path.basename(spill)]
    _fresh_context(cl.rule_payload([str(next(PACK_DIR.rglob("*.yml")))]))  # the next rule set
    assert not os.path.exists(spill)  # the last context's spill folder went with it


def test_payload_folders_are_pruned_and_removed_without_a_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    rules = sorted(PACK_DIR.rglob("*.yml"))[:cl.PAYLOADS_KEPT + 2]
    digests = []
    for r in rules:  # one rule set per rule file, each used once
        payload = cl.rule_payload([str(r)])
        with cl._rule_folder(payload) as folder:
            assert (folder / payload.files[0][0]).read_text(encoding="utf-8") == payload.files[0][1]
        digests.append(payload.digest)
    left = set(os.listdir(tmp_path / "cache" / "payloads"))
    assert len(left) == cl.PAYLOADS_KEPT and digests[-1] in left and digests[0] not in left
    payload = cl.rule_payload([str(rules[0])])
    foreign = tmp_path / "cache" / "payloads" / payload.digest
    shutil.rmtree(foreign, ignore_errors=True)
    foreign.mkdir()
    (foreign / payload.files[0][0]).write_text("title: planted", encoding="utf-8")
    monkeypatch.setattr(cl, "_owned", lambda folder: False)  # as if another user's folder
    with cl._rule_folder(payload) as folder:  # not used: a temporary folder of this run's own
        assert folder.parent == tmp_path / "tmp"
        assert (folder / payload.files[0][0]).read_text(encoding="utf-8") == payload.files[0][1]
    assert os.listdir(tmp_path / "tmp") == []
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")  # caching off: a temporary folder, removed
    with cl._rule_folder(cl.rule_payload([str(rules[0])])) as folder:
        assert folder.parent == tmp_path / "tmp" and any(folder.iterdir())
    assert os.listdir(tmp_path / "tmp") == []


def test_a_killed_worker_loses_and_doubles_nothing(cluster, pack, attack, monkeypatch):
    monkeypatch.setattr(cl, "BATCH_FILES", 1)  # one file per task: many tasks in flight
    rs, engine = pack
    local = run_hunt([str(attack)], rs, engine=engine)
    mapper = cluster.map_units(cl.rule_payload([str(PACK_DIR)]))
    killed = []

    def killing(ctx, inputs, jobs, report):
        for i, r in enumerate(mapper(ctx, inputs, jobs, report)):
            if i == 2:  # mid-run: SIGKILL one worker process; its tasks must run elsewhere
                pid = cluster.worker_pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            yield r

    remote = run_hunt([str(attack)], rs, engine=engine, map_units=killing)
    assert killed
    assert _alerts(remote) == _alerts(local)
    assert remote.summary["events"] == local.summary["events"]


@pytest.fixture()
def http_root(tmp_path: Path, attack: Path):
    """A loopback HTTP server over a copy of one host's logs (stops with the test), and the GET
    requests it served, by path."""
    host = next(p for p in sorted(attack.iterdir()) if p.is_dir() and p.name.startswith("WS"))
    root = tmp_path / "www"
    root.mkdir()
    for f in sorted(host.iterdir()):
        (root / f.name).write_bytes(f.read_bytes())
    served: collections.Counter = collections.Counter()

    class Counting(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            served[self.path] += 1
            super().do_GET()

    handler = functools.partial(Counting, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_workers_read_inputs_served_over_http(cluster, pack, http_root):
    root, base, served = http_root
    files = sorted(p.name for p in root.iterdir())
    rs, engine = pack
    local = run_hunt([str(root / f) for f in files], rs, engine=engine)
    payload = cl.rule_payload([str(PACK_DIR)])
    remote = run_hunt([f"{base}/{f}" for f in files], rs, engine=engine, map_units=cluster.map_units(payload))

    def strip(alerts):  # the same events, named by their URL instead of their path
        return [{k: v for k, v in a.items() if k not in ("source", "events")} for a in alerts]

    assert _alerts(local) and strip(_alerts(remote)) == strip(_alerts(local))
    assert all(a["source"].startswith(base) for a in _alerts(remote))
    # a URL that does not exist is one counted problem, not a failed run
    bad = run_hunt([f"{base}/missing.jsonl"], rs, engine=engine, map_units=cluster.map_units(payload))
    assert bad.summary["errors"].get("unreadable") == 1 and bad.exit_code == 1


def test_cli_cluster_output_equals_jobs_1(attack, tmp_path):
    def hunt(*extra):
        out = subprocess.run([sys.executable, "-m", "scmwatch", "hunt", str(attack), "--format", "jsonl",
                              "--summary", str(tmp_path / "s.json"), *extra],
                             capture_output=True, text=True, check=False, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout, json.loads((tmp_path / "s.json").read_text())

    one, s1 = hunt("--jobs", "1")
    clustered, summary = hunt("--cluster", "local:2")
    assert one and clustered == one
    _assert_same_summary(summary, s1)
    assert summary["cluster"] == {"address": "local:2", "workers": 2, "partitions": 2}
    assert summary["jobs"] == 2
    assert summary["correlation"]["partitioned"]["partitions"] == 2


@pytest.mark.parametrize("spec, code", [("local:0", 2), ("nowhere", 2), ("tcp://127.0.0.1:1", 1)])
def test_cli_bad_cluster_address_is_one_line(attack, spec, code):
    out = subprocess.run([sys.executable, "-m", "scmwatch", "hunt", str(attack), "--cluster", spec],
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == code
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("scmwatch: ") and "Traceback" not in out.stderr


def test_cluster_splits_one_large_evtx_by_chunk_ranges(cluster, pack, tmp_path):
    """One EVTX file as chunk ranges over the two workers: the alerts (source, record ids) of
    the whole-file hunt, the ranges counted in the summary."""
    import evtxbuild

    path = tmp_path / "big.evtx"
    path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(10)))
    rs, engine = pack
    local = run_hunt([str(path)], rs, engine=engine)
    payload = cl.rule_payload([str(PACK_DIR)])
    remote = run_hunt([str(path)], rs, engine=engine, map_units=cluster.map_units(payload),
                      split_bytes=1 << 12)
    assert _alerts(local) and _alerts(remote) == _alerts(local)
    assert sorted({a["record_id"] for a in _alerts(remote)}) == list(range(17, 501, 17))
    par = remote.summary["parallelism"]
    assert par["ranges"] == 8 and par["files_reread_whole"] == 0
    assert remote.summary["errors"] == local.summary["errors"] == {}
    # correlated in partitions: each partition chains the ranges' candidates in file order
    parted = run_hunt([str(path)], rs, engine=engine, map_units=cluster.map_units(payload, 2),
                      split_bytes=1 << 12)
    assert _alerts(parted) == _alerts(local) and parted.summary["parallelism"]["ranges"] == 8
    assert parted.summary["correlation"]["candidates"] == local.summary["correlation"]["candidates"] > 0


def test_cluster_replays_link_facts_across_ranges(cluster, pack, tmp_path, monkeypatch):
    """Link facts of one NDJSON file that decide two correlations ranges later: the ranges' link
    events replayed by the client (one correlation) or inside each partition (two), the alerts,
    facts, candidates and whole summary of the whole-file hunt. The ranges' line numbers (the
    alerts' record ids) are counted by the workers: the client counts none of the file's lines."""
    from lateral_ndjson import lateral
    from scmwatch.events import ranges

    path = lateral(tmp_path)
    rs, engine = pack
    local = run_hunt([str(path)], rs, engine=engine)
    chains = [a for a in _alerts(local) if a["title"].startswith("Lateral movement chain")]
    assert len(chains) == 2
    assert any(a["record_id"] > 200 for a in _alerts(local))  # in a later range (50 lines each)
    payload = cl.rule_payload([str(PACK_DIR)])

    def not_here(*args):
        raise AssertionError("the client counted lines")

    monkeypatch.setattr(ranges.LineCounter, "first_line", not_here)
    for partitions in (None, 2):
        remote = run_hunt([str(path)], rs, engine=engine, split_bytes=1 << 12,
                          map_units=cluster.map_units(payload, partitions))
        assert _alerts(remote) == _alerts(local) and remote.summary["parallelism"]["ranges"] == 8
        corr, base = remote.summary["correlation"], local.summary["correlation"]
        for key in ("alerts", "candidates", "link_facts"):
            assert corr[key] == base[key], (partitions, key)
        _assert_same_summary(remote.summary, local.summary)


def test_a_killed_worker_during_ranges_loses_and_doubles_nothing(cluster, pack, tmp_path):
    """A worker SIGKILLed while the ranges of one file run: its ranges rerun elsewhere, each is
    taken once, and the alerts are the whole-file hunt's."""
    import evtxbuild

    path = tmp_path / "big.evtx"
    path.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(40)))
    rs, engine = pack
    local = run_hunt([str(path)], rs, engine=engine)
    mapper = cluster.map_units(cl.rule_payload([str(PACK_DIR)]))
    killed = []

    def killing(ctx, inputs, jobs, report):
        advance = ctx.progress

        def progress(nbytes, events):  # called as each range's result arrives
            if not killed:
                pid = cluster.worker_pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            advance(nbytes, events)

        ctx.progress = progress
        yield from mapper(ctx, inputs, jobs, report)

    remote = run_hunt([str(path)], rs, engine=engine, map_units=killing, split_bytes=1 << 12)
    assert killed
    assert _alerts(remote) == _alerts(local)
    assert remote.summary["events"] == local.summary["events"] == 2000
    assert remote.summary["parallelism"]["files_reread_whole"] == 0


def test_partitioned_correlation_equals_local(cluster, pack, attack):
    """Candidates kept on the workers, cut by (correlation, group key) into 3 partitions, each
    correlated in its own task: the alerts of the local hunt, on a multi-host attack with a
    cross-host chain and on the corpus; no candidate reaches the client."""
    paths = [[str(attack)]]
    if ATTACK_SAMPLES.is_dir():
        paths.append([str(ATTACK_SAMPLES / "Lateral Movement")])
    rs, engine = pack
    payload = cl.rule_payload([str(PACK_DIR)])
    seen = []

    def mapper(ctx, inputs, jobs, report):
        for r in cluster.map_units(payload, 3)(ctx, inputs, jobs, report):
            seen.append((len(r.cand_mem), len(r.cand_runs)))
            yield r

    for p in paths:
        local = run_hunt(p, rs, engine=engine)
        seen.clear()
        remote = run_hunt(p, rs, engine=engine, map_units=mapper)
        assert _alerts(local) and _alerts(remote) == _alerts(local)
        assert seen and set(seen) == {(0, 0)}  # the client received no candidate
        corr, base = remote.summary["correlation"], local.summary["correlation"]
        assert corr["partitioned"]["partitions"] == 3
        assert corr["link_facts"] == base["link_facts"]
        _assert_same_summary(remote.summary, local.summary)


def test_a_killed_worker_during_correlation_loses_nothing(cluster, pack, attack):
    """A worker SIGKILLed as the partitions start: the candidates it kept are hunted again and
    its partitions correlated elsewhere; the alerts are the local hunt's."""
    rs, engine = pack
    local = run_hunt([str(attack)], rs, engine=engine)
    mapper = cluster.map_units(cl.rule_payload([str(PACK_DIR)]), 2)
    killed = []

    def killing(ctx, inputs, jobs, report):
        yield from mapper(ctx, inputs, jobs, report)
        correlate = ctx.correlate_at

        def kill_then_correlate(results, resolved):
            pid = cluster.worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            yield from correlate(results, resolved)

        ctx.correlate_at = kill_then_correlate

    remote = run_hunt([str(attack)], rs, engine=engine, map_units=killing)
    assert killed
    assert _alerts(remote) == _alerts(local)
    assert remote.summary["correlation"]["alerts"] == local.summary["correlation"]["alerts"]


DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
TUNE = """drop:
  - "Remote service started over MS-SCMR*"
levels:
  "Remote connection to the SCM pipe*": informational
exclude:
  "Service installed with a binary outside the Windows system directories*":
    ServiceName: [PSEXESVC, PAExec-*]
"""


def test_cli_dedup_and_tune_on_the_cluster_equal_jobs_1(tmp_path):
    """--dedup and --tune end to end on a LocalCluster (workers apply the tuning file, the
    partitions correlate, the client deduplicates): the output and counts of --jobs 1."""
    tune = tmp_path / "tune.yml"
    tune.write_text(TUNE)

    def hunt(*extra):
        out = subprocess.run([sys.executable, "-m", "scmwatch", "hunt", str(DEMO), "--format", "jsonl",
                              "--dedup", "--tune", str(tune), "--summary", str(tmp_path / "s.json"), *extra],
                             capture_output=True, text=True, check=False, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout, json.loads((tmp_path / "s.json").read_text())

    one, s1 = hunt("--jobs", "1")
    clustered, s2 = hunt("--cluster", "local:2")
    assert one and clustered == one
    _assert_same_summary(s2, s1)
    assert s1["tune"]["matches_tuned_out"] > 0 and s1["alerts_deduplicated"] > 0
    assert s2["correlation"]["partitioned"]["partitions"] == 2


@pytest.fixture(scope="module")
def many_small(attack, tmp_path_factory) -> Path:
    """The attack's files one per directory, with a broken EVTX file and an NDJSON file with a
    bad line among them: many small files, some failing."""
    root = tmp_path_factory.mktemp("many")
    for i, f in enumerate(sorted(p for p in attack.rglob("*") if p.is_file())):
        d = root / f"{i:03d}"
        d.mkdir()
        (d / f.name).write_bytes(f.read_bytes())
        if i == 5:
            (d / "broken.evtx").write_bytes(b"ElfFile\0" + b"\xff" * 5000)
        if i == 9:
            (d / "bad.jsonl").write_text('{"EventID": 7045, "Channel": "System"}\nnot json\n')
    return root


def test_small_files_come_back_as_one_result_per_task(cluster, pack, many_small, monkeypatch):
    """Consecutive small files are hunted in one task that returns ONE result: the client
    handles fewer results than files, and the alerts, the summary, every reported problem and
    the bytes on the progress bar are the local hunt's."""
    import scmwatch.hunt as hunt_mod

    advanced: list[int] = []

    class Counting(hunt_mod.Progress):
        def advance(self, nbytes: int, events: int) -> None:
            advanced[-1] += nbytes
            super().advance(nbytes, events)

    monkeypatch.setattr(hunt_mod, "Progress", Counting)
    rs, engine = pack
    runs = []
    results: list[int] = []  # files per result the cluster mapper handed on
    mapper = cluster.map_units(cl.rule_payload([str(PACK_DIR)]), 2)

    def counted(ctx, inputs, jobs, report):
        for r in mapper(ctx, inputs, jobs, report):
            results.append(len(r.files) or 1)
            yield r

    for kw in ({}, {"map_units": counted}):
        errors: list = []
        advanced.append(0)
        res = run_hunt([str(many_small)], rs, engine=engine, on_error=errors.append, **kw)
        runs.append((res, sorted(map(repr, errors))))
    (local, local_errors), (remote, remote_errors) = runs
    files = local.summary["files"]
    assert files == sum(results) and len(results) < files / 2  # one result per task, not per file
    assert _alerts(local) and _alerts(remote) == _alerts(local)
    _assert_same_summary(remote.summary, local.summary)
    assert local.summary["files_failed"] == 1 and local.summary["errors"]
    assert remote_errors == local_errors and any("broken.evtx" in e for e in local_errors)
    assert advanced[0] == advanced[1] == sum(p.stat().st_size for p in many_small.rglob("*") if p.is_file())


def test_cli_case_records_every_file_of_a_batch(many_small, tmp_path):
    """--case on the cluster: a batch's files are each recorded as locally (size, hash, format,
    events, problems)."""
    duckdb = pytest.importorskip("duckdb")

    def files(*extra) -> list:
        case = tmp_path / f"case{len(extra)}.duckdb"
        out = subprocess.run([sys.executable, "-m", "scmwatch", "hunt", str(many_small), "--case", str(case),
                              "-o", os.devnull, *extra],
                             capture_output=True, text=True, check=False, timeout=300)
        assert out.returncode == 0, out.stderr
        con = duckdb.connect(str(case), read_only=True)
        try:
            return con.execute("SELECT path, size, sha256, format, events, errors FROM files "
                               "ORDER BY path").fetchall()  # file_no: in the order results arrived
        finally:
            con.close()

    local = files()
    assert len(local) > 30 and any(r[5] and "{}" not in str(r[5]) for r in local)
    assert files("--cluster", "local:2") == local


def test_a_file_out_of_order_by_the_lateness_is_correlated_as_by_one_correlator(cluster, pack, attack,
                                                                               tmp_path):
    """Every simulated log in one NDJSON file, times out of order across its parts by more than
    --lateness: some candidates are late. Partitions would judge them against their own newest
    candidate; the cluster sees the disorder and correlates with one correlator, so the alerts
    and the whole summary (late events and their examples too) are the local hunt's, whole or as
    ranges on both workers."""
    path = tmp_path / "all.jsonl"
    with path.open("wb") as fh:
        for p in sorted(attack.rglob("*.jsonl")):
            data = p.read_bytes()
            lines = data.splitlines()
            if not any(b'"EventID":4688' in ln and b'"ParentProcessName"' not in ln for ln in lines):
                fh.write(data)  # (a host without process parents would make the ranges be re-read)
    rs, engine = pack
    local = run_hunt([str(path)], rs, engine=engine)
    assert local.summary["correlation"]["late_events"] > 0 and _alerts(local)
    payload = cl.rule_payload([str(PACK_DIR)])
    for split in (1 << 30, 1 << 18):
        remote = run_hunt([str(path)], rs, engine=engine, map_units=cluster.map_units(payload, 3),
                          split_bytes=split)
        assert _alerts(remote) == _alerts(local)
        _assert_same_summary(remote.summary, local.summary)
        assert remote.summary["correlation"]["partitioned"]["one_correlator"] is True
        assert (remote.summary["parallelism"]["ranges"] > 1) == (split < 1 << 30)
    # in time order (the attack as it is): the partitions correlate
    remote = run_hunt([str(attack)], rs, engine=engine, map_units=cluster.map_units(payload, 3))
    assert remote.summary["correlation"]["partitioned"]["one_correlator"] is False


@pytest.mark.parametrize("caps,whole", [({"max_state": 30}, True), ({"max_groups": 20, "max_held": 40}, True),
                                        ({"max_groups": 200}, False)])
def test_state_caps_hold_over_the_whole_partitioned_run(cluster, pack, attack, caps, whole):
    """Small state caps that one correlator overflows (groups evicted, the reorder buffer
    released early): 3 partitions would each stay under them and give other alerts and counts.
    The partitions' peaks show it, and the candidates are correlated again by one correlator on
    a worker: the alerts and the whole summary (evictions and overflows too) are --jobs 1's.
    With a cap the partitions' peaks rule out, they correlate."""
    rs, engine = pack
    local = run_hunt([str(attack)], rs, engine=engine, correlation_caps=caps)
    base = local.summary["correlation"]
    assert (base["groups_evicted"] + base["reorder_overflow"] > 0) == whole
    payload = cl.rule_payload([str(PACK_DIR)], correlation_caps=caps)
    remote = run_hunt([str(attack)], rs, engine=engine, map_units=cluster.map_units(payload, 3),
                      correlation_caps=caps)
    assert _alerts(local) and _alerts(remote) == _alerts(local)
    _assert_same_summary(remote.summary, local.summary)
    assert remote.summary["correlation"]["partitioned"]["one_correlator"] is whole


def _case(path: Path, paths: list[str], pack, map_units, **kw) -> tuple[list, list, int]:
    """Hunt ``paths`` into a new case through its writer; (file rows, alert ids) of the case and
    how many files were split."""
    duckdb = pytest.importorskip("duckdb")
    from scmwatch.case import CaseWriter

    rs, engine = pack
    writer = CaseWriter(str(path), command="test", ruleset=rs)
    try:
        res = run_hunt(paths, rs, engine=engine, sink=writer.write, map_units=writer.recording(map_units),
                       **kw)
    except BaseException:
        writer.abort()
        raise
    writer.close(res.summary)
    con = duckdb.connect(str(path), read_only=True)
    try:
        files = con.execute("SELECT path, size, sha256, format, events, errors, events_kept FROM files "
                            "ORDER BY path").fetchall()  # file_no: in the order results arrived
        ids = [r[0] for r in con.execute("SELECT alert_id FROM alerts ORDER BY alert_id").fetchall()]
    finally:
        con.close()
    return files, ids, res.summary["parallelism"]["files_split"]


def test_case_files_are_hashed_on_the_workers(cluster, pack, http_root, tmp_path, monkeypatch):
    """--case on the cluster: every input's sha256 is computed where it is read -- whole files
    in their task, a split file by a task of its own beside its ranges, a URL by the worker
    that fetches it -- and the client reads no input for the case; the file rows and the alert
    ids (which name files by their hash) are those of a local --jobs 1 run. A URL is hashed as
    its worker reads it: fetched once."""
    import evtxbuild
    import scmwatch.case.writer as writer_mod

    big = tmp_path / "big.evtx"
    big.write_bytes(evtxbuild.evtx_file(evtxbuild.service_chunks(10)))
    root, base, served = http_root
    paths = [str(big), *(f"{base}/{p.name}" for p in sorted(root.iterdir())[:3])]
    if ATTACK_SAMPLES.is_dir():
        paths.append(str(ATTACK_SAMPLES / "Lateral Movement"))
    hashed: list[str] = []

    def spy(inp):
        hashed.append(inp.name)
        return file_sha256(inp)

    file_sha256 = writer_mod.file_sha256
    monkeypatch.setattr(writer_mod, "file_sha256", spy)
    split = {"split_bytes": 1 << 19}
    served.clear()
    local = _case(tmp_path / "local.duckdb", paths, pack, local_units, **split)
    assert len(hashed) == len(local[0]) and local[1]
    hashed.clear()
    fetched = dict(served)  # per URL: listed, read, and read again to hash it
    assert len(fetched) == 3
    payload = cl.rule_payload([str(PACK_DIR)])
    for partitions in (None, 2):
        served.clear()
        remote = _case(tmp_path / f"remote{partitions}.duckdb", paths, pack,
                       cluster.map_units(payload, partitions), **split)
        assert hashed == []  # the client hashed nothing
        assert remote[:2] == local[:2] and remote[2] >= 1
        # hashed as the worker read it: each URL fetched once less
        assert served == {path: n - 1 for path, n in fetched.items()}
    rows = {r[0]: r for r in local[0]}
    assert rows[str(big)][2] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert sum(p.startswith(base) for p in rows) == 3


def test_the_workers_walk_the_directories_as_a_local_walk(cluster, many_small, http_root, tmp_path,
                                                          monkeypatch):
    """Cluster.discover (directory trees walked and files stat'ed by the workers, the client
    listing a few levels of names): the inputs in the order, the problems in the order (same
    lines) and the counts of a local discover -- over nested directories deeper than the
    levels the client lists, a directory's files in several listing tasks, files beside
    directories, a dangling symlink, a FIFO, a symlinked directory (not followed), a zip
    archive, non-log files, a missing path, a named file and URLs."""
    import zipfile

    root, base, served = http_root
    tree = tmp_path / "tree"
    deep = tree / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    for i, d in enumerate([tree, tree / "a", tree / "a" / "b", deep]):
        for name in (f"{i}.jsonl", f"x{i}.evtx", f"notes{i}.txt"):
            (d / name).write_text('{"EventID": 7045, "Channel": "System"}\n')
    (tree / "a" / "gone.evtx").symlink_to(tmp_path / "nowhere.evtx")
    os.mkfifo(tree / "a" / "b" / "pipe.jsonl")
    (tree / "linked").symlink_to(many_small, target_is_directory=True)
    with zipfile.ZipFile(tree / "a" / "kape.zip", "w") as z:
        z.writestr("Logs/System.jsonl", '{"EventID": 7045}\n')
        z.writestr("Logs/readme.txt", "x")
    (tree / "empty").mkdir()
    named = next(p for p in sorted(root.iterdir()))
    paths = [str(tree), str(many_small), str(tmp_path / "missing"), str(named), f"{base}/{named.name}",
             f"{base}/missing.jsonl", str(many_small / "000")]

    def listed(discover_fn) -> tuple:
        errors: list = []
        stats = ReadStats(on_error=errors.append)
        found = list(discover_fn(paths, stats))
        return (found, [e.line() for e in errors], stats.files_failed, stats.named_failed,
                stats.files_skipped, dict(stats.errors))

    local = listed(discover)
    assert local[0] and len(local[1]) == 3 and local[3] == 1  # gone, pipe; missing (named)
    monkeypatch.setattr(cl, "LIST_NAMES", 2)
    assert listed(cluster.discover) == local
    monkeypatch.setattr(cl, "WALK_LEVELS", 1)
    assert listed(cluster.discover) == local


def test_hunting_starts_while_the_workers_still_list(cluster, pack, attack, tmp_path):
    """The walk overlaps the hunt: the inputs of each listing are hunted as soon as it (and those
    before it) are in. Two hosts' logs under two URL prefixes on a loopback HTTP server, each
    prefix listed by its own task; the server holds the second listing back until a hunting
    task has fetched a file of the first (at most 30 s). Had the hunt waited for the last
    listing, the server would have given up waiting. The alerts, the summary and the problem
    lines (the walk's -- a missing path named last -- before the hunt's -- a bad line --, as locally)
    are those of a local hunt of the same URLs."""
    root = tmp_path / "www"
    hosts = [p for p in sorted(attack.iterdir()) if p.is_dir() and (p / "System.jsonl").is_file()][:2]
    for sub, host in zip("ab", hosts, strict=True):
        (root / sub).mkdir(parents=True)
        for f in sorted(host.iterdir()):
            (root / sub / f.name).write_bytes(f.read_bytes())
    (root / "a" / "bad.jsonl").write_text('{"EventID": 7045, "Channel": "System"}\n{not json\n')
    armed, hunted = threading.Event(), threading.Event()
    order: list[str] = []

    class Holding(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.rstrip("/")
            if armed.is_set() and path.startswith("/a/"):
                order.append("hunt a")
                hunted.set()
            elif armed.is_set() and path == "/b":
                order.append("list b: " + ("after a hunting task" if hunted.wait(30) else "gave up waiting"))
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Holding, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    paths = [f"{base}/a/", f"{base}/b/", str(tmp_path / "missing")]
    rs, engine = pack

    def hunt(**kw):
        lines: list[str] = []
        res = run_hunt(paths, rs, engine=engine, on_error=lambda e: lines.append(e.line()), **kw)
        return res, lines

    try:
        local, local_lines = hunt()
        assert _alerts(local) and len(local_lines) == 3 and "missing" in local_lines[0]
        armed.set()
        remote, remote_lines = hunt(map_units=cluster.map_units(cl.rule_payload([str(PACK_DIR)])),
                                    expand=cluster.discover)
    finally:
        server.shutdown()
        server.server_close()
    assert "list b: after a hunting task" in order and order.index("hunt a") < order.index(
        "list b: after a hunting task")
    assert _alerts(remote) == _alerts(local)
    _assert_same_summary(remote.summary, local.summary)
    assert remote_lines == local_lines
