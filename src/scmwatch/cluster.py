"""Hunt on a Dask cluster: the same seam as ``--jobs``, with Dask workers as the pool.

``hunt --cluster tcp://scheduler:8786`` (or ``--cluster local[:N]`` for a LocalCluster of N worker
processes on this machine) keeps everything of a local hunt but *where arrow 1 runs*
(:func:`scmwatch.hunt.hunt_unit`): each range of a large file, split as for ``--jobs``
(:mod:`scmwatch.split`), each large file and each run of consecutive small files is a task on a
worker, which

* builds its own :class:`~scmwatch.hunt.HuntContext` once per rule set from the **rule texts**
  shipped with the task (compiled predicates are closures and cannot be pickled; the texts are
  small and the same texts in the same order compile to the same rules, so alert ids, order and
  evidence equal a local run's);
* reads the files itself (shared paths, or fsspec URLs such as ``s3://`` / ``https://`` that the
  worker opens with its own credentials from the environment), matches, and returns ONE
  :class:`~scmwatch.hunt.UnitResult` for the task with its hits and correlation candidates *in
  memory* (a remote worker's spill files would not be visible to the client) and each file's
  status (:func:`batch_result`): the client's work grows with tasks, not files.

The client merges by time and correlates exactly as locally (:class:`~scmwatch.hunt.AlertMerge`,
which spills what exceeds its budget). Dask retries a task whose worker died on another worker;
a unit's result is a pure function of its bytes and the rules, so a retried task gives the same
result and the merge takes each unit once (by index), never twice.

Where the single client stops scaling is measured by ``bench/cluster_throughput.py`` and stated
in the README ("Run on a cluster").
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scmwatch.alerts import Alert
from scmwatch.case.files import file_sha256, hashed_while_read
from scmwatch.correlate import CorrelationStage
from scmwatch.correlate.partition import (
    Plan,
    Router,
    caps_reached,
    correlate_partition,
    late_possible,
    merged_summary,
    stream_order,
)
from scmwatch.events.model import ReadError, ReadStats
from scmwatch.events.ranges import FileRange, count_newlines
from scmwatch.events.read import InputFile, InputStream, dir_inputs, discover, is_url, walk_level, walk_tree
from scmwatch.hunt import _CAND_KEY, _KEY, HuntContext, UnitResult, batch_result, hunt_unit
from scmwatch.sigma import load_rules
from scmwatch.sigma.cache import cache_root
from scmwatch.sigma.load import rule_files
from scmwatch.sigma.tune import apply_tune, parse_tune
from scmwatch.spill import SpillDir, read_stream
from scmwatch.split import Waves, inline_links, replayed, split_units, unit_size
from scmwatch.workers import stops_deferred

LOCAL = "local"
# Inputs per task: consecutive small files are batched and come back as ONE result, so that the
# client's work grows with tasks, not files (a Dask task costs the client ~1 ms; a small EVTX
# file of the dev corpus, ~30 events, costs a worker about as much to hunt). At most
# BATCH_BYTES or BATCH_FILES per task, and at most 1/(4 * workers) of the input's bytes, so
# that every worker still gets several tasks.
BATCH_BYTES = 32 << 20
BATCH_FILES = 256
# The directory walk runs on the workers (Cluster.discover): the client lists directory *names*
# only, level by level (at most WALK_LEVELS), until there are LIST_TASKS_PER_WORKER subtrees per
# worker, then hands consecutive subtrees and runs of a directory's file names (at most
# LIST_NAMES per task) to about that many listing tasks, which ``stat`` every file. A walk on
# the client cost ~13-15 us per file, most of it the ``stat`` (measured on the corpus x20).
WALK_LEVELS = 3
LIST_TASKS_PER_WORKER = 4
LIST_NAMES = 4096
# A worker keeps the rule files of this many rule sets (cluster._rule_folder).
PAYLOADS_KEPT = 4
PLACEHOLDERS = "placeholders.yml.txt"
STALE_STAGING = 3600  # seconds after which a half-written payload folder (a killed worker's) goes


class ClusterError(Exception):
    """The cluster could not be used (bad address, scheduler unreachable, Dask not installed)."""


@dataclass(frozen=True)
class RulePayload:
    """What a worker needs to build the rules: the texts of the rule files, in load order."""

    files: tuple[tuple[str, str], ...]  # (relative name, YAML text)
    placeholders: str | None
    options: tuple[tuple[str, Any], ...]  # HuntContext keyword options
    tune: str | None = None  # the tuning file's text (sigma/tune.py)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name, text in self.files:
            h.update(name.encode() + b"\0" + text.encode() + b"\0")
        h.update(repr((self.placeholders, self.options, self.tune)).encode())
        return h.hexdigest()


def rule_payload(rule_paths: list[str], placeholders: str | None = None, tune: str | None = None,
                 **options: Any) -> RulePayload:
    """The texts of the rule files ``rule_paths`` names (files and directories), in load order."""
    rejected: list[tuple[str, str]] = []
    files = []
    for i, path in enumerate(rule_files(rule_paths, rejected)):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # the client's own load reports it; the worker simply lacks it, as locally
        files.append((f"{i:05d}_{Path(path).name}", text))
    ph = Path(placeholders).read_text(encoding="utf-8") if placeholders else None
    tune_text = Path(tune).read_text(encoding="utf-8") if tune else None
    return RulePayload(tuple(files), ph, tuple(sorted(options.items())), tune_text)


# One compiled rule set per worker process and payload (tasks of one hunt share it).
_CONTEXTS: dict[str, HuntContext] = {}


def _context(payload: RulePayload) -> HuntContext:
    key = payload.digest
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        with _rule_folder(payload) as root:
            ph = None if payload.placeholders is None else root / PLACEHOLDERS
            ruleset = load_rules([str(root / n) for n, _ in payload.files], placeholders=ph)
        if payload.tune is not None:  # the client checked it against the same rules
            apply_tune(ruleset, parse_tune(payload.tune))
        for old in _CONTEXTS.values():  # one hunt's rules at a time per worker
            old.spill.cleanup()
        _CONTEXTS.clear()
        ctx = _CONTEXTS[key] = HuntContext(ruleset, SpillDir(), **dict(payload.options))
    return ctx


@contextlib.contextmanager
def _rule_folder(payload: RulePayload) -> Iterator[Path]:
    """A folder holding the payload's rule files while they are loaded.

    The rule cache keys a rule set by its files' paths as well as their contents, so the folder
    is the payload's, named by its digest, in the cache directory: the next hunt with the same
    rules, and every worker process of the machine, loads them from the cache (all SigmaHQ:
    ~0.2 s) instead of compiling them again (~6 s per worker and hunt). It is made under a
    temporary name and renamed into place, so concurrent workers never see half a folder, and
    the PAYLOADS_KEPT most recently used are kept (all SigmaHQ: ~16 MB each); before, every hunt
    left a folder in the temporary directory of every worker. With the cache off, or not
    writable, the files go to a temporary folder removed after the load.
    """
    root = cache_root()
    if root is not None:
        parent = os.path.join(root, "payloads")
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            folder = Path(parent, payload.digest)
            if not _owned(folder):
                staging = _write_payload(payload, parent)
                try:
                    os.rename(staging, folder)
                except OSError:  # a concurrent worker's folder, the same files, is in place
                    shutil.rmtree(staging, ignore_errors=True)
                if not _owned(folder):  # another user's: its rule files are not trusted
                    raise PermissionError(folder)
            os.utime(folder)
            _prune_payloads(parent)
        except OSError:
            pass
        else:
            yield folder
            return
    staging = _write_payload(payload, None)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _owned(folder: Path) -> bool:
    try:
        return os.stat(folder).st_uid == os.getuid()
    except OSError:
        return False


def _write_payload(payload: RulePayload, parent: str | None) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=".scmwatch-rules-" if parent else "scmwatch-rules-", dir=parent))
    try:
        for name, text in payload.files:
            (staging / name).write_text(text, encoding="utf-8")
        if payload.placeholders is not None:
            (staging / PLACEHOLDERS).write_text(payload.placeholders, encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _prune_payloads(parent: str) -> None:
    """Keep the PAYLOADS_KEPT most recently used payload folders (the cache keeps 8 rule sets),
    and remove what killed workers left half written."""
    found = []
    stale = time.time() - STALE_STAGING
    with os.scandir(parent) as it:
        for e in it:
            with contextlib.suppress(OSError):
                mtime = e.stat().st_mtime
                if not e.name.startswith("."):
                    found.append((mtime, e.path))
                elif mtime < stale:
                    shutil.rmtree(e.path, ignore_errors=True)
    for _, path in sorted(found, reverse=True)[PAYLOADS_KEPT:]:
        shutil.rmtree(path, ignore_errors=True)


def _in_memory(ctx: HuntContext, r: UnitResult) -> UnitResult:
    """Bring a unit's spilled runs back into the result (the client cannot see the worker's disk)."""
    if r.hit_runs:
        runs = [list(read_stream(p)) for p in r.hit_runs]
        r.hit_tail = list(heapq.merge(*runs, r.hit_tail, key=_KEY))
        for p in r.hit_runs:
            os.unlink(p)
        r.hit_runs = []
    if r.cand_runs:
        r.cand_mem = _drain(r.cand_runs) + r.cand_mem
        r.cand_runs = []
    return r


def _drain(paths: list[str]) -> list[tuple]:
    """The records of spill files, in order; the files are removed."""
    records: list[tuple] = []
    for p in paths:
        records.extend(read_stream(p))
        os.unlink(p)
    return records


def _hunt(ctx: HuntContext, index: int, unit: Any, digests: bool = False) -> UnitResult:
    """One unit on a worker, its results in memory; with ``digests``, a whole file's
    (sha256, size, first bytes) for the case too, taken as the hunt reads it
    (:func:`~scmwatch.case.files.hashed_while_read`). The candidate selector's per-file dedup
    starts afresh: the worker's context serves every hunt with the same rules, and a file index
    of this hunt may be the last one the selector saw in the previous hunt (its facts were then
    dropped as repeats: ``link_facts`` 142 instead of 164)."""
    if ctx.selector is not None:
        ctx.selector.reset()
    if not digests or type(unit) is FileRange:
        return _in_memory(ctx, hunt_unit(ctx, index, unit, collect_errors=True))
    teed, digest = hashed_while_read(unit)
    r = _in_memory(ctx, hunt_unit(ctx, index, teed, collect_errors=True))
    r.digest = digest()
    return r


def file_digest(inp: Any) -> tuple[str | None, int | None, bytes]:
    """A worker task beside the ranges of a split file: the whole file's (sha256, size, first
    bytes) for the case, once (SHA-256 cannot be combined from the ranges' hashes)."""
    return file_sha256(inp)


class Batch:
    """A task's (unit index, unit) pairs as one opaque argument: Dask walks the lists, tuples
    and dataclasses of a task's arguments in search of futures, which cost the client ~13
    calls per small file (measured: a third of its CPU on the dev corpus).

    An NDJSON range travels without its file's line counter: its first line number comes from
    :func:`~scmwatch.events.ranges.count_newlines` tasks over the ranges before it, passed to
    its task (:meth:`numbered`), so that the client reads none of a large file's bytes."""

    __slots__ = ("digests", "units")

    def __init__(self, units: list[tuple[int, Any]], digests: bool = False) -> None:
        self.units = [(i, replace(u, lines=None)) if type(u) is FileRange and u.lines is not None else (i, u)
                      for i, u in units]
        self.digests = digests  # also hash each whole file for the case (HuntContext.digests)

    def __getstate__(self) -> tuple[Any, ...]:
        """Packed as the client pickles it fastest: the indexes, the names and sizes of plain
        files (a walk's), the other units whole by position. Measured on 256 files of the dev
        corpus: 4.1 us per file to pickle the InputFile objects, 136 bytes each."""
        indexes = [i for i, _ in self.units]
        plain = [u if type(u) is InputFile else None for _, u in self.units]
        return (indexes, *_packed([u or _NOT_PLAIN for u in plain]), self.digests,
                {k: u for k, (_, u) in enumerate(self.units) if plain[k] is None})

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        indexes, names, sizes, other, self.digests, units = state
        found: list[Any] = _unpacked(names, sizes, other)
        for k, u in units.items():
            found[k] = u
        self.units = list(zip(indexes, found, strict=True))

    def numbered(self, counts: tuple[int, ...]) -> list[tuple[int, Any]]:
        """The units, an NDJSON range given its first line number from the newline counts of
        the ranges before it (a range is alone in its batch)."""
        if not counts:
            return self.units
        (i, unit), = self.units
        return [(i, replace(unit, counted=1 + sum(counts)))]


def hunt_batch(payload: RulePayload, batch: Batch, *counts: int) -> UnitResult:
    """A worker task: hunt each (index, unit) with the payload's rules (a unit: an input file or
    a range of one); one result for all, in memory. ``counts``: for an NDJSON range, the
    newlines of its file's ranges before it."""
    ctx = _context(payload)
    return batch_result([_hunt(ctx, i, unit, batch.digests) for i, unit in batch.numbered(counts)])


def hunt_batch_parts(payload: RulePayload, batch: Batch, partitions: int,
                     *counts: int) -> tuple[UnitResult, list[list[tuple]], list[tuple]]:
    """A worker task when correlation is partitioned: :func:`hunt_batch`, but the candidates
    stay here, cut into ``partitions`` lists (``Router``), and whole for when one correlator
    must see them all (``late_possible``); the result carries none, only how far they are out of
    time order (``UnitResult.order``). Returns (result, per partition the batch's candidate
    records in stream order, all of them in stream order)."""
    ctx = _context(payload)
    router = Router(ctx.stage, Plan(ctx.stage.specs, partitions))
    lateness_us = ctx.stage.correlator.buffer.lateness_us
    results = [_hunt(ctx, i, unit, batch.digests) for i, unit in batch.numbered(counts)]
    for r in results:
        inline_links(r)  # a range's link events back among its candidates, replayed where kept
        r.order = stream_order(r.cand_mem, lateness_us)
    r = batch_result(results)
    whole, r.cand_mem = r.cand_mem, []
    return r, router.split(whole), whole


def _results(out: tuple[UnitResult, list, list]) -> UnitResult:
    return out[0]


def _part(out: tuple[UnitResult, list, list], p: int) -> list[tuple]:
    return out[1][p]


def _whole(out: tuple[UnitResult, list, list]) -> list[tuple]:
    return out[2]


def correlate_part(payload: RulePayload, partitions: int, p: int, streams: list[Any],
                   resolved: list[tuple], batch_ids: list[int],
                   *parts: list[tuple]) -> tuple[list[Alert], dict[str, Any]]:
    """A worker task: correlate partition ``p``. ``streams`` names each result's candidates by
    its batch id, or a split file's chain of those with range offsets; ``parts`` are the
    batches' lists for ``p`` (in ``batch_ids`` order); ``resolved``: the records of deferred
    process creations the client decided, for this partition. The summary also says how many
    records the split files' fact dedup removed here (``replay_dropped``)."""
    ctx = _context(payload)
    stage = CorrelationStage.for_ruleset(ctx.ruleset, lateness=ctx.lateness, **ctx.caps)
    assert stage is not None
    table = dict(zip(batch_ids, parts, strict=True))

    def records(ref: int) -> list[tuple]:
        return table[ref]

    dropped = [0]
    its: list[Any] = []
    for kind, ref in streams:
        if kind == "unit":
            its.append(records(ref))
        else:
            its.append(replayed([(records(r), off) for r, off in ref], dropped))
    if resolved:
        its.append(resolved)
    alerts, summary = correlate_partition(stage, Plan(stage.specs, partitions), p, its)
    summary["replay_dropped"] = dropped[0]
    return alerts, summary


# stands in _packed for a unit that is no InputFile (a range of a file)
_NOT_PLAIN = InputFile("", "\0", named=True)

# A listing task's inputs, compact (_packed), its counts, and its problems in order.
Listing = tuple[tuple[list[str], list[int | None], dict[int, InputFile]], ReadStats, list[ReadError]]


def list_inputs(parts: list[tuple[str, str, list[str] | None]]) -> Listing:
    """A worker task: the inputs of consecutive parts of the input paths, as a local
    :func:`~scmwatch.events.read.discover` finds them there, with their problems in order. A
    part: ``("tree", dir, None)``, every input under a directory; ``("files", dir, names)``,
    those among some of its files; ``("path", path, None)``, a URL (a remote file, or a prefix
    listed with fsspec ``find``) or a path named on the command line."""
    return _listed(lambda stats: [inp for kind, path, names in parts for inp in (
        walk_tree(path, stats) if kind == "tree" else
        dir_inputs(path, names or (), stats) if kind == "files" else discover([path], stats))])


def _listed(find: Callable[[ReadStats], list[InputFile]]) -> Listing:
    errors: list[ReadError] = []
    stats = ReadStats(on_error=errors.append)
    found = find(stats)
    stats.on_error = None
    return _packed(found), stats, errors


def _packed(found: list[InputFile]) -> tuple[list[str], list[int | None], dict[int, InputFile]]:
    """Inputs as the client unpickles them fastest: the name and size of each plain file a walk
    found (its path is its name), the others whole by position. Measured on 27,700 inputs:
    ~1.6 us per input against ~4.4 us for the InputFile objects."""
    names: list[str] = []
    sizes: list[int | None] = []
    other: dict[int, InputFile] = {}
    for i, inp in enumerate(found):
        if inp.path == inp.name and inp.member is None and not inp.named and not inp.pipe:
            names.append(inp.name)
            sizes.append(inp.size)
        else:
            other[i] = inp
            names.append("")
            sizes.append(None)
    return names, sizes, other


def _unpacked(names: list[str], sizes: list[int | None], other: dict[int, InputFile]) -> list[InputFile]:
    found = [InputFile(n, n, None, False, False, size) for n, size in zip(names, sizes, strict=True)]
    for i, inp in other.items():
        found[i] = inp
    return found


def _same(payload: RulePayload) -> RulePayload:
    return payload


def _batches(units: list[tuple[int, Any]], workers: int, digests: bool = False,
             waves: int = 1) -> list[Batch]:
    """Consecutive whole files batched (BATCH_BYTES / BATCH_FILES, at most 1/(4 * workers) of
    the input's bytes), a range of a split file or a file of that size alone. Consecutive, so
    that a batch's result sits in unit order among the others; handed out largest first, a
    split file's ranges in file order (as :func:`scmwatch.split.dispatch_order`). ``units``:
    one of ``waves`` waves of the input (a walk still under way), which gets its share of the
    tasks: 4 * workers / waves, at least one."""
    sizes = [unit_size(u) for _, u in units]
    cap = max(1, min(BATCH_BYTES, sum(sizes) * max(1, waves) // (4 * max(1, workers))))
    out: list[tuple[int, list[tuple[int, Any]]]] = []
    cur: list[tuple[int, Any]] = []
    cur_bytes = 0
    for pair, size in zip(units, sizes, strict=True):
        alone = type(pair[1]) is FileRange or size >= cap
        if cur and (alone or cur_bytes + size > cap or len(cur) >= BATCH_FILES):
            out.append((cur_bytes, cur))
            cur, cur_bytes = [], 0
        if alone:
            out.append((size, [pair]))
        else:
            cur.append(pair)
            cur_bytes += size
    if cur:
        out.append((cur_bytes, cur))

    def first(b: tuple[int, list[tuple[int, Any]]]) -> tuple[int, int]:
        index, unit = b[1][0]
        size = (unit.inp.compressed_size() or 0) if type(unit) is FileRange else b[0]
        return (-size, index)

    return [Batch(b, digests) for _, b in sorted(out, key=first)]


def _subtrees(top: str, want: int) -> list[tuple[str, str, list[str] | None]]:
    """The directory ``top`` as listing parts in walk order (:func:`list_inputs`): names listed
    level by level here until there are ``want`` subtrees (or WALK_LEVELS levels)."""
    plan: list[tuple[str, str, list[str] | None]] = [("tree", top, None)]
    for _ in range(WALK_LEVELS):
        if sum(kind == "tree" for kind, _, _ in plan) >= want:
            break
        deeper: list[tuple[str, str, list[str] | None]] = []
        for kind, path, names in plan:
            if kind != "tree":
                deeper.append((kind, path, names))
                continue
            files, subs = walk_level(path)
            deeper.extend(("files", path, files[k:k + LIST_NAMES]) for k in range(0, len(files), LIST_NAMES))
            deeper.extend(("tree", sub, None) for sub in subs)
        plan = deeper
    return plan


def _grouped(parts: list[Any], tasks: int) -> list[list[Any]]:
    """Consecutive parts in about ``tasks`` groups (one listing task each)."""
    size = max(1, -(-len(parts) // max(1, tasks)))
    return [parts[k:k + size] for k in range(0, len(parts), size)]


def parse_address(spec: str) -> tuple[str, int | None]:
    """``local`` / ``local:N`` -> (LOCAL, N or None); ``tcp://host:port`` -> (address, None)."""
    if spec == LOCAL or spec.startswith(LOCAL + ":"):
        n = spec.partition(":")[2]
        if n and (not n.isdigit() or int(n) < 1):
            raise ClusterError(f"--cluster {spec}: the worker count after 'local:' must be a positive number")
        return LOCAL, int(n) if n else None
    if "://" not in spec:
        raise ClusterError(f"--cluster {spec}: give a scheduler address (tcp://host:8786) or local[:N]")
    return spec, None


class Cluster:
    """A Dask client for one hunt (a LocalCluster it owns, or a connection to a scheduler)."""

    def __init__(self, spec: str) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ClusterError("--cluster needs Dask: pip install 'scmwatch[cluster]'") from exc
        address, n = parse_address(spec)
        self.spec = spec
        self._local = None
        try:
            # Interrupted half-way, a LocalCluster has workers still starting that it can then
            # neither use nor close (Dask's own exit hook fails on them with a traceback, and
            # they outlive the hunt); held back for the 2-3 s of start-up, the stop arrives when
            # the cluster can be shut down cleanly. Dask's own logs stay quiet up to CRITICAL: a
            # worker whose heartbeat meets the scheduler closing under Ctrl-C logs an ERROR with
            # a traceback (2 of 3 loaded test runs), while the failures that matter come back as
            # task exceptions, reported by the hunt in one line.
            with stops_deferred():
                if address == LOCAL:
                    self._local = LocalCluster(n_workers=n or max(1, os.cpu_count() or 1),
                                               threads_per_worker=1, processes=True, host="127.0.0.1",
                                               dashboard_address=None, silence_logs=logging.CRITICAL)
                    self.client = Client(self._local)
                else:
                    self.client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ClusterError(f"--cluster {spec}: cannot reach the scheduler: {exc}") from None
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def worker_pids(self) -> list[int]:
        return list(self.client.run(os.getpid).values())

    def discover(self, paths: Iterable[str], stats: ReadStats) -> InputStream | list[InputFile]:
        """``run_hunt(expand=...)``: the inputs of ``paths`` in the order, with the problems (in
        the order, same lines and counts) of :func:`~scmwatch.events.read.discover`, listed by
        the workers: directory trees walked and files ``stat``-ed there, URL prefixes listed
        there (with the workers' credentials). The client lists directory names only, a few
        levels down until there are a few subtrees per worker, and reads the other paths named
        (files, pipes) itself, in their place.

        With listing tasks, the inputs come as an :class:`~scmwatch.events.read.InputStream`:
        one wave per listing (or path read here), in order, each as soon as it and those before
        it are in, so that the hunt starts on the first while the workers list the rest. A
        listing's problems are reported when its wave is taken."""
        want = LIST_TASKS_PER_WORKER * max(1, self.workers)
        runs: list[Any] = []  # in path order: runs of listing parts for the workers, or a local path
        for path in map(os.fspath, paths):
            url = is_url(path)
            if not url and not os.path.isdir(path):
                runs.append(path)
                continue
            if not runs or isinstance(runs[-1], str):
                runs.append([])
            runs[-1].extend(_subtrees(path, want) if not url else [("path", path, None)])
        slots: list[Any] = []  # a local path, or a listing task's future
        for run in runs:
            if isinstance(run, str):
                slots.append(run)
            else:
                slots.extend(self.client.submit(list_inputs, g, pure=False, retries=3)
                             for g in _grouped(run, want))
        waves = self._waves(slots, stats)
        if len(slots) == len(runs) and all(isinstance(s, str) for s in slots):
            return [inp for wave in waves for inp in wave]  # nothing listed elsewhere
        return InputStream(waves, expected=len(slots))

    def _waves(self, slots: list[Any], stats: ReadStats) -> Iterator[list[InputFile]]:
        """Each slot's inputs in order (a listing task's, or a path's read here), its problems
        reported as it is taken; the listings not taken are cancelled when this stops."""
        try:
            for slot in slots:
                packed, part, errors = (_listed(lambda st, p=slot: list(discover([p], st)))
                                        if isinstance(slot, str) else slot.result())
                self._took(stats, part, errors)
                yield _unpacked(*packed)
        finally:
            self.client.cancel([s for s in slots if not isinstance(s, str)])

    @staticmethod
    def _took(stats: ReadStats, part: ReadStats, errors: list[ReadError]) -> None:
        """Add a listing's counts and report its problems (in order) as if found here."""
        stats.files_failed += part.files_failed
        stats.named_failed += part.named_failed
        stats.files_skipped += part.files_skipped
        for e in errors:  # counted again by stats.error
            stats.error(e.source, e.kind, e.message, e.record)

    def map_units(self, payload: RulePayload,
                  partitions: int | None = None) -> Callable[..., Iterator[UnitResult]]:
        """A ``run_hunt(map_units=...)`` that runs every unit on the cluster, large files as
        ranges over the workers (:func:`scmwatch.split.split_units`).

        ``partitions`` (P > 0) also correlates on the cluster: each worker cuts its units'
        candidates by (correlation, group key) into P partitions and keeps them; after the last
        unit, P tasks correlate one partition each (:mod:`scmwatch.correlate.partition`) and the
        client only merges their alerts by time. 0 or None: the candidates come to the client,
        which correlates them all."""
        # a task that returns the payload, not scattered data: if the worker holding it dies,
        # the scheduler recomputes it instead of cancelling every task that needs it
        remote = None

        def payload_future() -> Any:
            nonlocal remote
            if remote is None:
                remote = self.client.submit(_same, payload, pure=False)
            return remote

        batches: dict[int, Any] = {}  # batch id -> its hunt future (holds its partitions' candidates)

        def partitioned(ctx: HuntContext, waves: Waves) -> Iterator[UnitResult]:
            ctx.correlate_at = lambda results, resolved: self._correlate(
                ctx, payload_future(), partitions or 1, batches, results, resolved)

            def submit(units: list[tuple[int, Any]]) -> tuple[dict[Any, Any], dict[Any, int]]:
                work = _batches(units, self.workers, ctx.digests, waves.expected)
                ids = range(len(batches), len(batches) + len(work))
                hunted = self._tasks(hunt_batch_parts, payload_future(), work, units, partitions)
                batches.update(zip(ids, hunted, strict=True))
                results = self.client.map(_results, hunted, pure=False, retries=3)
                futures = dict(zip(results, ids, strict=True))
                return futures, self._digests(ctx, units)

            try:
                for ref, r in self._arrivals(map(submit, waves)):
                    r.cand_ref = ref
                    yield r
            except BaseException:  # interrupted: nothing will correlate what the workers keep
                self.client.cancel(list(batches.values()))
                raise

        def mapper(ctx: HuntContext, waves: Waves, jobs: int,
                   report: Callable[[ReadError], None] | None) -> Iterator[UnitResult]:
            if partitions and ctx.stage is not None:
                yield from partitioned(ctx, waves)
                return

            def submit(units: list[tuple[int, Any]]) -> tuple[dict[Any, Any], dict[Any, int]]:
                work = _batches(units, self.workers, ctx.digests, waves.expected)
                futures = self._tasks(hunt_batch, payload_future(), work, units)
                return dict.fromkeys(futures), self._digests(ctx, units)

            for _, r in self._arrivals(map(submit, waves)):
                yield r

        return split_units(mapper, workers=lambda: self.workers, waves=True)

    def _tasks(self, fn: Callable[..., Any], remote: Any, work: list[Batch], units: list[tuple[int, Any]],
               *args: Any) -> list[Any]:
        """One ``fn(payload, batch, *args)`` task per batch, in order; an NDJSON range's also
        gets the futures of the newline counts of its file's ranges before it (one
        :func:`~scmwatch.events.ranges.count_newlines` task per range but the last, on the
        workers: the client reads none of the file)."""
        ranges: dict[Any, list[FileRange]] = {}
        for _, u in units:
            if type(u) is FileRange and u.fmt == "ndjson" and u.part < u.parts - 1:
                ranges.setdefault(u.inp, []).append(u)
        counts: dict[tuple[Any, int], Any] = {}
        for inp, rs in ranges.items():
            futures = self.client.map(count_newlines, [inp.path] * len(rs), [r.start for r in rs],
                                      [r.end for r in rs], pure=False, retries=3)
            counts.update(((inp, r.part), f) for r, f in zip(rs, futures, strict=True))

        def before(batch: Batch) -> list[Any]:
            unit = batch.units[0][1]
            if type(unit) is not FileRange or unit.fmt != "ndjson":
                return []
            return [counts[unit.inp, k] for k in range(unit.part)]

        if not counts:
            columns = [[a] * len(work) for a in args]
            return self.client.map(fn, [remote] * len(work), work, *columns, pure=False, retries=3)
        return [self.client.submit(fn, remote, b, *args, *before(b), pure=False, retries=3) for b in work]

    def _digests(self, ctx: HuntContext, units: list[tuple[int, Any]]) -> dict[Any, int]:
        """For the case (``ctx.digests``): a :func:`file_digest` task per split file, scheduled
        with its ranges; future -> the unit index of the file's first range."""
        if not ctx.digests:
            return {}
        first = [(i, u.inp) for i, u in units if type(u) is FileRange and u.part == 0]
        futures = self.client.map(file_digest, [inp for _, inp in first], pure=False, retries=3)
        return dict(zip(futures, (i for i, _ in first), strict=True))

    def _arrivals(self, submitted: Iterable[tuple[dict[Any, Any], dict[Any, int]]]
                  ) -> Iterator[tuple[Any, UnitResult]]:
        """(what a wave's ``results`` maps its future to, the result) of each task as it finishes,
        each unit once (a retried task's result may come twice); a split file's first range
        waits for its file's digest, which the file's combined result then carries (it is built
        from the first range's: :func:`scmwatch.split.combine`). ``submitted``: per wave of
        units, the futures of its tasks (-> what they stand for) and of its digests (-> the unit
        index of the file's first range); between waves (taking the next one may wait for a
        listing) the results already in are handed on."""
        from distributed import as_completed

        results: dict[Any, Any] = {}
        digests: dict[Any, int] = {}
        first: dict[int, Any] = {}
        waiting: dict[int, tuple[Any, UnitResult]] = {}
        seen: set[int] = set()
        arrived = as_completed()

        def took(fut: Any) -> Iterator[tuple[Any, UnitResult]]:
            if fut in digests:
                got = waiting.pop(digests[fut], None)
                if got is not None:
                    got[1].digest = fut.result()
                    yield got
                return
            r = fut.result()
            if r.index in seen:
                return
            seen.add(r.index)
            digest = first.get(r.index)
            if digest is not None and not digest.done():
                waiting[r.index] = (results[fut], r)
                return
            if digest is not None:
                r.digest = digest.result()
            yield results[fut], r

        try:
            for wave_results, wave_digests in submitted:
                results.update(wave_results)
                digests.update(wave_digests)
                first.update((i, fut) for fut, i in wave_digests.items())
                arrived.update([*wave_results, *wave_digests])
                while arrived.has_ready():
                    for fut in arrived.next_batch(block=False):
                        yield from took(fut)
            for fut in arrived:
                yield from took(fut)
        finally:
            self.client.cancel([*results, *digests])

    def _correlate(self, ctx: HuntContext, remote: Any, partitions: int, batches: dict[int, Any],
                   results: list[UnitResult], resolved: list[tuple]) -> Iterator[Alert]:
        """``HuntContext.correlate_at`` of a partitioned hunt: one task per partition over the
        candidates the workers kept, and one task over all of them instead when a candidate can
        be late (``late_possible``) or when one correlator could have reached a state cap that
        the partitions' peaks do not rule out (``caps_reached``); the alerts come back to the
        client, nothing else."""
        assert ctx.stage is not None
        buffer = ctx.stage.correlator.buffer
        whole = late_possible((r.order for r in results), len(resolved), buffer.lateness_us, buffer.max_held)
        streams: list[tuple[str, Any]] = []
        used: set[int] = set()
        for r in results:
            ref = r.cand_ref
            if ref is None:
                continue
            if isinstance(ref, list):  # a split file: its ranges' streams chained in file order
                streams.append(("chain", ref))
                used.update(b for b, _ in ref)
            else:
                streams.append(("unit", ref))
                used.add(ref)
        ids = sorted(used)
        resolved = sorted(resolved, key=_CAND_KEY)

        def run(partitions: int, whole: bool) -> list[tuple[list[Alert], dict[str, Any]]]:
            assert ctx.stage is not None
            plan = Plan(ctx.stage.specs, partitions)
            resolved_parts = [resolved] if whole else Router(ctx.stage, plan).split(resolved)
            n = len(ids)
            if whole:
                cut = self.client.map(_whole, [batches[b] for b in ids], pure=False, retries=3)
            else:
                cut = self.client.map(_part, [batches[b] for _ in range(partitions) for b in ids],
                                      [p for p in range(partitions) for _ in ids], pure=False, retries=3)
            tasks = [self.client.submit(correlate_part, remote, partitions, p, streams, resolved_parts[p],
                                        ids, *cut[p * n:(p + 1) * n], pure=False, retries=3)
                     for p in range(partitions)]
            try:
                return self.client.gather(tasks)
            finally:
                self.client.cancel(tasks)

        try:
            outs = run(1 if whole else partitions, whole)
            if not whole and partitions > 1 and caps_reached([s for _, s in outs], ctx.stage):
                whole = True
                outs = run(1, True)
        finally:
            self.client.cancel(list(batches.values()))
            batches.clear()
        plan = Plan(ctx.stage.specs, 1 if whole else partitions)
        # the records that reached the correlator, as locally: those the units selected but the
        # ones the split files' fact dedup removed -- only fact-only records are removed, and every
        # partition that learns links replays the same dedup over all of them (the others none)
        dropped = max(s.pop("replay_dropped") for _, s in outs)
        candidates = sum(r.candidates for r in results) + len(resolved) - dropped
        ctx.correlation_summary = merged_summary([s for _, s in outs], plan, candidates)
        ctx.correlation_summary["partitioned"]["one_correlator"] = whole
        paths = {s.key: s.path for s in ctx.stage.specs if s.path}
        for alerts, _ in outs:
            for a in alerts:
                if "rule_path" in a.extra:  # the worker's copy of the rule file: name the original
                    a.extra["rule_path"] = paths.get(a.rule_id, a.extra["rule_path"])
                yield a

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._local is not None:
            self._local.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
