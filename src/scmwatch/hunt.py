"""Hunt: read logs, match every event against the rule set, correlate, return alerts + summary.

Data flow per input file (inline for ``jobs=1``, in a worker process for ``jobs>1``)::

    read_input(file) → Engine.match(event) → single-event hits (minus suppressed rules)
                                           → correlation candidates (CorrelationStage.selector)

The parent then merges every file's candidates by time and runs correlation once
(``CorrelationStage.correlate``), so ``--jobs N`` gives exactly the alerts of ``--jobs 1``. Alerts
are sorted by (time, source, record id, rule id) for the same reason.

Bounded memory: nothing can be emitted before every file is read, yet holding every file's hits
and candidates (each with its whole event) made peak RSS grow with the input. So each file's
candidates go to a spill file in file order and its hits to sorted spill runs
(:mod:`scmwatch.spill`); at the end the candidate files are k-way merged by time into the
correlator, correlation alerts are spilled the same way as hits, and one last k-way merge of all
alert runs streams the alerts, in order, to the caller's sink. Short per-file remainders stay in
memory up to a fixed budget of records (``memory_budget``), so a directory of small .evtx files
never touches the disk. The summary's ``memory`` object reports how much was held at once
(buffers <= ``run_size``, kept remainders <= ``memory_budget``, open files <= ``fan_in``).

Workers are forked after the rules are compiled, so compiled predicates (closures, which cannot
be pickled) are shared copy-on-write; only spill file names and counts travel back.
"""

from __future__ import annotations

import gc
import heapq
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from scmwatch import readiness
from scmwatch.alerts import LEVEL_RANK, Alert
from scmwatch.events.model import Event, ReadError, ReadGate, ReadStats
from scmwatch.events.read import InputFile, discover, read_input
from scmwatch.progress import Progress
from scmwatch.sigma import CompiledRule, Engine, RuleSet
from scmwatch.spill import SortedSpiller, SpillDir, Stream, default_fan_in, merge_runs, write_run

# Hits (or correlation alerts, or candidates) one file's buffer holds before it goes to disk.
RUN_SIZE = 2048
# Records (hits, candidates, correlation alerts) the parent keeps in memory over all files
# instead of writing them out: a few MB at most, whatever the input size.
MEMORY_BUDGET = 4096
_KEY = itemgetter(0)  # spilled alert records: (sort key, ...)
_CAND_KEY = itemgetter(0, 1, 2)  # spilled candidate records: (time_us, file index, position, ...)

BUILTIN_RULES = Path(__file__).resolve().parent / "rules"


def builtin_rule_files() -> list[Path]:
    """The built-in pack's rule files (empty while the pack is being written)."""
    if not BUILTIN_RULES.is_dir():
        return []
    return sorted(p for p in BUILTIN_RULES.rglob("*") if p.suffix.lower() in (".yml", ".yaml"))


@dataclass
class FileResult:
    """What one input file produced (returned by workers to the parent)."""

    index: int
    hit_runs: list[str] = field(default_factory=list)  # spill files: sorted runs of alert records
    hit_tail: list[tuple] = field(default_factory=list)  # the last, short sorted run, in memory
    hits: int = 0
    hits_peak: int = 0  # most hits held in memory at once (the sort buffer)
    # spill files of correlation candidates (this file's stream; with --jobs also its batch's
    # merged remainders), and the short remainder still in memory, in file order
    cand_runs: list[str] = field(default_factory=list)
    cand_mem: list[tuple] = field(default_factory=list)
    candidates: int = 0
    cands_peak: int = 0
    stats: ReadStats | None = None
    seconds: float = 0.0
    seen: set[tuple[Any, Any]] = field(default_factory=set)  # (Channel, EventID) present: readiness
    errors: list[ReadError] = field(default_factory=list)  # --jobs: reported by the parent, in order


@dataclass
class HuntResult:
    alerts: list[Alert]  # empty when the caller passed a ``sink`` (alerts were streamed to it)
    summary: dict[str, Any]
    stats: ReadStats
    exit_code: int
    readiness: Any = None  # scmwatch.readiness.Readiness: rules that could not fire on this input


class _Context:
    """Everything a worker needs; a module global so forked workers inherit it unpickled."""

    def __init__(self, engine: Engine, stage: Any, min_rank: int, on_error: Callable | None,
                 spill: SpillDir, run_size: int) -> None:
        self.engine = engine
        self.spill = spill
        self.run_size = run_size
        self.stage = stage
        self.selector = stage.selector if stage is not None else None
        suppressed = stage.suppressed if stage is not None else frozenset()
        # Rule ids whose own alerts ``generate: false`` suppresses (the correlator still sees them).
        self.suppressed_ids = frozenset(
            r.id for r in engine.ruleset.rules if suppressed and _rule_key(r) in suppressed)
        self.min_rank = min_rank
        self.on_error = on_error
        self.rule_rank = {r.id: LEVEL_RANK.get(r.level, 0) for r in engine.ruleset.rules}


_CTX: _Context | None = None


def make_correlation_stage(ruleset: RuleSet, lateness: float = 300.0) -> Any:
    """CORRELATION HOOK: build the correlation stage for this rule set (None when not needed).

    The correlation engine (``scmwatch.correlate.CorrelationStage``) exposes ``selector``
    (worker-side gate producing candidates), ``suppressed`` (rule keys whose own alerts
    ``generate: false`` suppresses), ``run(per_file_candidates)`` and ``summary()``.
    """
    if not ruleset.correlations:
        return None
    from scmwatch.correlate import CorrelationStage

    stage = CorrelationStage(ruleset.correlations, lateness=lateness)
    return stage if stage.active else None


def _rule_key(rule: CompiledRule) -> str:
    from scmwatch.correlate import rule_key

    return rule_key(rule)


def hunt_file(index: int, inp: InputFile) -> FileResult:
    """Match one input file (runs in a worker for ``--jobs``)."""
    ctx = _CTX
    assert ctx is not None, "hunt context not initialised"
    res = FileResult(index)
    on_error = ctx.on_error
    if on_error is _collect_errors:  # in a --jobs worker: hand the errors to the parent
        def on_error(err: ReadError) -> None:
            if len(res.errors) < MAX_WORKER_ERRORS:
                res.errors.append(err)

    stats = ReadStats(on_error=on_error)
    start = time.perf_counter()
    engine = ctx.engine
    match_in = engine.match_in
    bucket_of = engine.bucket
    no_rules: list = []
    select = ctx.selector.select if ctx.selector is not None else None
    suppressed = ctx.suppressed_ids
    min_rank = ctx.min_rank
    rank = ctx.rule_rank
    hits = SortedSpiller(ctx.spill, f"hits{index}", _KEY, ctx.run_size)
    add_hit = hits.add
    cands = Stream(ctx.spill, f"cand{index}", ctx.run_size)
    # (Channel, EventID) -> the engine's bucket for it: one lookup per event, and its keys are
    # the pairs this file had (for the readiness report)
    buckets: dict[tuple, Any] = {}
    buckets_get = buckets.get
    wanted_ids = ctx.selector.gate if ctx.selector is not None else frozenset()

    def want(channel: Any, eid: Any) -> bool:
        """Does any rule (or the correlation stage) look at events of this pair? The EVTX
        reader does not even parse the others past their System part."""
        key = (channel, eid)
        b = buckets_get(key)
        if b is None:
            b = buckets[key] = bucket_of(channel, eid)
        return not b.empty or eid in wanted_ids

    gate = ReadGate(want)
    n = 0
    for pos, ev in enumerate(read_input(inp, stats, gate)):
        if select is not None:
            pos += gate.skipped  # number events as if the skipped ones had been seen
        f = ev.fields
        key = (f.get("Channel"), f.get("EventID"))
        try:
            b = buckets_get(key)
        except TypeError:  # a list or object where a name or number belongs (odd JSON exports)
            key = tuple(k if k is None or isinstance(k, str | int) else repr(k) for k in key)
            b = buckets_get(key)
        if b is None:
            b = buckets[key] = bucket_of(*key)
        rules = no_rules if b.empty else match_in(b, f)
        if rules:
            for r in rules:
                if rank[r.id] >= min_rank and r.id not in suppressed:
                    # the sort key of the alert (alert_sort_key), then (hit, file, n): the order a
                    # stable sort of all files' hits in file order, then correlation alerts, gives
                    rid = ev.record_id
                    add_hit(((ev.time, ev.source, rid if rid is not None else -1, r.id, 0, index, n),
                             f, rid, ev.fmt))
                    n += 1
        if select is not None:
            cand = select(ev, rules, index, pos)
            if cand is not None:
                cands.add(cand.to_record())
    res.seen = set(buckets)
    res.hit_runs, res.hit_tail = hits.finish()
    res.hits = hits.count
    res.hits_peak = hits.peak
    cand_path, res.cand_mem = cands.finish()
    if cand_path is not None:
        res.cand_runs.append(cand_path)
    res.candidates = cands.count
    res.cands_peak = cands.peak
    res.stats = stats
    res.seconds = time.perf_counter() - start
    # Keep the (possibly huge) stats callback out of the pickled result.
    stats.on_error = None
    return res


MAX_WORKER_ERRORS = 10_000  # per file; the counts in the summary stay exact beyond it


def _collect_errors(err: ReadError) -> None:
    """Marker: workers collect read errors in their FileResult for the parent to report."""


def run_hunt(paths: Sequence[str], ruleset: RuleSet, **kwargs: Any) -> HuntResult:
    """Hunt over ``paths`` with ``ruleset``; returns sorted alerts and the summary dict.

    Keyword arguments: ``jobs``, ``min_level``, ``on_error``, ``show_progress``, ``engine``,
    ``lateness``, ``sink``, ``run_size``, ``memory_budget``, ``fan_in``, ``spill_dir`` (see
    :func:`_run_hunt`).
    With ``sink`` (a callable taking one :class:`Alert`) the alerts are streamed to it in order
    and never collected, so memory stays flat however many there are; without it they are
    returned in ``HuntResult.alerts``.

    The compiled rules, indexes and pySigma objects are millions of long-lived objects: the
    cyclic GC is frozen for the run so that collections triggered by per-event allocations do
    not walk them again and again (measured: ~0.2 s per 15k alerts), and forked workers do not
    copy-on-write them by touching GC headers.
    """
    gc.freeze()
    try:
        return _run_hunt(paths, ruleset, **kwargs)
    finally:
        gc.unfreeze()


def _run_hunt(
    paths: Sequence[str],
    ruleset: RuleSet,
    *,
    jobs: int = 1,
    min_level: str | None = None,
    on_error: Callable[[ReadError], None] | None = None,
    show_progress: bool | None = False,
    engine: Engine | None = None,
    lateness: float = 300.0,
    sink: Callable[[Alert], None] | None = None,
    run_size: int = RUN_SIZE,
    memory_budget: int = MEMORY_BUDGET,
    fan_in: int | None = None,
    spill_dir: str | None = None,
) -> HuntResult:
    spill = SpillDir(spill_dir)
    try:
        memory = _Memory(run_size, memory_budget, fan_in or default_fan_in())
        return _hunt(paths, ruleset, spill, memory, jobs, min_level, on_error, show_progress, engine,
                     lateness, sink)
    finally:
        spill.cleanup()


def _hunt(paths: Sequence[str], ruleset: RuleSet, spill: SpillDir, memory: _Memory, jobs: int,
          min_level: str | None, on_error: Callable[[ReadError], None] | None, show_progress: bool | None,
          engine: Engine | None, lateness: float, sink: Callable[[Alert], None] | None) -> HuntResult:
    global _CTX
    start = time.perf_counter()
    stats = ReadStats(on_error=on_error)
    inputs = list(discover(paths, stats))
    engine = engine or Engine(ruleset)
    stage = make_correlation_stage(ruleset, lateness)
    min_rank = LEVEL_RANK.get(min_level, 0) if min_level else 0
    run_size, fan_in = memory.run_size, memory.fan_in
    _CTX = _Context(engine, stage, min_rank, on_error, spill, run_size)
    suppressed_ids = _CTX.suppressed_ids
    jobs = max(1, min(jobs, len(inputs))) if inputs else 1
    results: list[FileResult] = []
    bar = Progress(inputs, enabled=show_progress)
    events_seen = 0

    def progress(inp: InputFile, n: int) -> None:
        nonlocal events_seen
        events_seen += n
        bar.file_done(inp, events_seen)

    try:
        bar.__enter__()
        if jobs == 1:
            for i, inp in enumerate(inputs):
                r = hunt_file(i, inp)
                memory.keep(r, spill)
                results.append(r)
                progress(inp, r.stats.events if r.stats else 0)
        else:
            # Buckets are built lazily in each worker for the (channel, EventID) pairs it meets:
            # in parallel, and only those needed (warming all 300+ SigmaHQ buckets up front
            # costs ~1 s of Hyperscan compilation in the parent alone).
            # Workers hand read errors back with their results; the parent reports them (one
            # line each, in file order per batch) so they reach whatever stderr the caller has.
            _CTX.on_error = _collect_errors if on_error is not None else None
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(jobs) as pool:
                # Largest files first so one big file does not finish last alone; batches of
                # files per task, because a Pool round trip costs ~0.5 ms of parent CPU and
                # directories of small .evtx files are common.
                order = sorted(range(len(inputs)), key=lambda i: -_size(inputs[i]))
                batches = _batches(order, inputs, jobs)
                for batch in pool.imap_unordered(_hunt_batch, batches, chunksize=1):
                    for r in batch:
                        memory.keep(r, spill)
                        results.append(r)
                        if on_error is not None:
                            for err in r.errors:
                                on_error(err)
                        r.errors = []
                        progress(inputs[r.index], r.stats.events if r.stats else 0)
    finally:
        bar.__exit__(None, None, None)
        _CTX = None
    results.sort(key=lambda r: r.index)
    for r in results:
        if r.stats is not None:
            r.stats.on_error = None
            stats.merge(r.stats)

    seen: set[tuple[Any, Any]] = set()
    for r in results:
        seen |= r.seen
        r.seen = set()
    memory.alerts_buffered_peak = max((r.hits_peak for r in results), default=0)
    memory.candidates_buffered_peak = max((r.cands_peak for r in results), default=0)
    memory.hits = sum(r.hits for r in results)
    memory.candidates = sum(r.candidates for r in results)
    runs: list[str | list] = [p for r in results for p in r.hit_runs]
    runs += memory.hit_runs + memory.hit_lists

    if stage is not None:
        # Correlation alerts come out in decision order, not time order: spill them as sorted
        # runs too. Tie-break (1, 0, n) puts them after hits with an equal key, as before.
        corr = SortedSpiller(spill, "corr", _KEY, run_size)
        streams: list[str | list] = [p for r in results for p in r.cand_runs]
        streams += memory.cand_runs + memory.cand_lists
        memory.open(streams)
        from scmwatch.correlate import Candidate

        merged = map(Candidate.from_record, merge_runs(streams, _CAND_KEY, spill, fan_in))
        for n, a in enumerate(stage.correlate(merged)):
            if LEVEL_RANK.get(a.level, 0) >= min_rank:
                corr.add((alert_sort_key(a) + (1, 0, n), a))
        memory.held -= sum(map(len, memory.cand_lists))  # merged and released
        memory.cand_lists = []
        corr_runs, corr_tail = corr.finish()
        runs.extend(corr_runs)
        if corr_tail:
            runs.append(memory.keep_list(corr_tail, spill, "corr"))
        memory.alerts_buffered_peak = max(memory.alerts_buffered_peak, corr.peak)
        memory.correlation_alerts = corr.count

    memory.spill_bytes, memory.files_written = _dir_usage(spill.path)
    memory.open(runs)
    counts = _AlertCounts()
    collected: list[Alert] = []
    emit = sink if sink is not None else collected.append
    clock = time.perf_counter
    output = 0.0  # time spent in the caller's sink: reported apart, as before streaming
    for alert in _alerts_from(merge_runs(runs, _KEY, spill, fan_in), ruleset.by_id()):
        counts.add(alert)
        t0 = clock()
        emit(alert)
        output += clock() - t0
    seconds = time.perf_counter() - start - output
    summary = make_summary(stats, ruleset, counts, seconds, jobs)
    summary["output_seconds"] = round(output, 3)
    ready = readiness.compute(ruleset, seen, min_rank, LEVEL_RANK, exclude_ids=suppressed_ids)
    summary["readiness"] = ready.to_dict()
    if stage is not None:
        summary["correlation"] = stage.summary()
    summary["memory"] = memory.to_dict()
    return HuntResult(collected, summary, stats, stats.exit_code, ready)


@dataclass
class _Memory:
    """What the hunt holds in memory at once, and its bounds (summary ``memory``).

    Per file (in the worker): at most ``run_size`` hits (``alerts_buffered_peak``; also the
    correlation alerts' buffer) and ``run_size`` candidates (``candidates_buffered_peak``)
    before they go to disk. Over all files (in the parent): short remainders kept instead of
    written, at most ``memory_budget`` records (``held_peak``). Merges: at most ``fan_in`` files
    open (``merge_open_peak``), one record each. None of these depends on the input size: that
    is the bounded-memory property, asserted by tests/test_hunt_memory.py.
    """

    run_size: int
    memory_budget: int
    fan_in: int
    alerts_buffered_peak: int = 0
    candidates_buffered_peak: int = 0
    held: int = 0
    held_peak: int = 0
    merge_open_peak: int = 0
    # held in memory (short sorted hit lists, candidate lists in file order) and written runs
    hit_lists: list = field(default_factory=list, repr=False)
    cand_lists: list = field(default_factory=list, repr=False)
    hit_runs: list = field(default_factory=list, repr=False)
    cand_runs: list = field(default_factory=list, repr=False)
    hits: int = 0
    candidates: int = 0
    correlation_alerts: int = 0
    files_written: int = 0
    spill_bytes: int = 0

    def keep(self, r: FileResult, spill: SpillDir) -> None:
        """Take a file's short remainders (sorted hits, candidates in file order) into memory.

        When the budget would overflow, everything held is first written out as *one* run of
        hits and one of candidates (merged): one file per ``memory_budget`` records rather
        than one per input file, which with thousands of small .evtx files and many alerts
        cost more than the hunt itself. Merging the held candidate lists early gives the same
        order as merging them at the end (see spill.py).
        """
        n = len(r.hit_tail) + len(r.cand_mem)
        if not n:
            return
        if self.held + n > self.memory_budget:
            self.flush(spill)
        if n > self.memory_budget:  # alone more than the budget: straight to disk
            if r.hit_tail:
                r.hit_runs.append(self._write(spill, "hits", [r.hit_tail], _KEY))
            if r.cand_mem:
                r.cand_runs.append(self._write(spill, "cand", [r.cand_mem], _CAND_KEY))
        else:
            self.held += n
            self.held_peak = max(self.held_peak, self.held)
            if r.hit_tail:
                self.hit_lists.append(r.hit_tail)
            if r.cand_mem:
                self.cand_lists.append(r.cand_mem)
        r.hit_tail = []
        r.cand_mem = []

    def flush(self, spill: SpillDir) -> None:
        """Write what is held as one sorted run of hits and one merged run of candidates."""
        if self.hit_lists:
            self.hit_runs.append(self._write(spill, "hits", self.hit_lists, _KEY))
        if self.cand_lists:
            self.cand_runs.append(self._write(spill, "cand", self.cand_lists, _CAND_KEY))
        self.hit_lists, self.cand_lists = [], []
        self.held = 0

    @staticmethod
    def _write(spill: SpillDir, prefix: str, lists: list[list], key: Callable[[Any], Any]) -> str:
        path = write_run(spill, prefix, lists[0] if len(lists) == 1 else heapq.merge(*lists, key=key))
        assert path is not None
        return path

    def keep_list(self, records: list, spill: SpillDir, prefix: str) -> str | list:
        if self.held + len(records) <= self.memory_budget:
            self.held += len(records)
            self.held_peak = max(self.held_peak, self.held)
            return records
        path = write_run(spill, prefix, records)
        assert path is not None
        return path

    def open(self, sources: list) -> None:
        files = sum(1 for s in sources if isinstance(s, str))
        self.merge_open_peak = max(self.merge_open_peak, min(files, self.fan_in))

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("held", "hit_lists", "cand_lists", "hit_runs", "cand_runs"):
            del out[key]
        return out


class _AlertCounts:
    """The summary's alert counts, kept while alerts stream past (no alert list needed)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_level: dict[str, int] = {}
        self.by_rule: dict[str, int] = {}

    def add(self, a: Alert) -> None:
        self.total += 1
        self.by_level[a.level] = self.by_level.get(a.level, 0) + 1
        self.by_rule[a.title] = self.by_rule.get(a.title, 0) + 1


def _alerts_from(records: Iterator[tuple], by_id: dict[str, CompiledRule]) -> Iterator[Alert]:
    """Alerts from merged spill records: ``(key, alert)`` (correlations) or ``(key, fields,
    record id, format)`` (single-event hits; key = time, source, -, rule id, ...)."""
    extras: dict[str, dict[str, Any]] = {}
    for rec in records:
        if len(rec) == 2:
            yield rec[1]
            continue
        key, fields, rid, fmt = rec
        rule = by_id[key[3]]
        extra = extras.get(rule.id)
        if extra is None:
            extra = extras[rule.id] = _extra(rule)
        ev = Event(fields, key[1], rid, fmt, key[0])
        yield Alert(rule.id, rule.title, rule.level, rule.description, list(rule.tags), ev, extra=dict(extra))


def _dir_usage(path: str) -> tuple[int, int]:
    """(bytes, files) in the spill directory."""
    total = files = 0
    for entry in os.scandir(path):
        try:
            total += entry.stat().st_size
            files += 1
        except OSError:
            pass
    return total, files


def _hunt_batch(batch: list[tuple[int, InputFile]]) -> list[FileResult]:
    """A worker's task: hunt a batch of files, then write their short remainders to disk.

    The hits (each with its event's fields) would otherwise be pickled through the pipe,
    unpickled by the parent -- serial work that limited the --jobs speed-up -- and often
    spilled again there. Here each worker writes one sorted run of hits and one merged stream
    of candidates per batch (merging early gives the same order, see spill.py) and the parent
    receives only paths and counts.
    """
    ctx = _CTX
    assert ctx is not None, "hunt context not initialised"
    results = [hunt_file(i, inp) for i, inp in batch]
    tails = [r.hit_tail for r in results if r.hit_tail]
    cands = [r.cand_mem for r in results if r.cand_mem]
    if tails:
        results[0].hit_runs.append(_Memory._write(ctx.spill, "hits", tails, _KEY))
    if cands:
        results[0].cand_runs.append(_Memory._write(ctx.spill, "cand", cands, _CAND_KEY))
    for r in results:
        r.hit_tail = []
        r.cand_mem = []
    return results


def _batches(order: list[int], inputs: list[InputFile], jobs: int) -> list[list[tuple[int, InputFile]]]:
    """Consecutive files (largest first) grouped to ~1/(8*jobs) of the input bytes each: few
    enough tasks to keep Pool overhead small, enough that workers finish close together."""
    total = sum(_size(inputs[i]) for i in order) or 1
    target = total / (8 * jobs)
    out: list[list[tuple[int, InputFile]]] = []
    cur: list[tuple[int, InputFile]] = []
    size = 0
    for i in order:
        cur.append((i, inputs[i]))
        size += _size(inputs[i])
        if size >= target:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def _size(inp: InputFile) -> int:
    try:
        return os.path.getsize(inp.path)
    except OSError:
        return 0


def _extra(rule: CompiledRule) -> dict[str, Any]:
    """The rule's custom attributes that travel with its alerts (e.g. ``maxpatrol_rule``)."""
    if not rule.custom:
        return {}
    return {k: v for k, v in rule.custom.items() if isinstance(v, str | int | float | bool | list)}


def alert_sort_key(a: Alert) -> tuple:
    return (a.time, a.event.source, a.event.record_id if a.event.record_id is not None else -1, a.rule_id)


def make_summary(stats: ReadStats, ruleset: RuleSet, counts: _AlertCounts, seconds: float,
                 jobs: int) -> dict[str, Any]:
    by_level = counts.by_level
    by_rule = counts.by_rule
    return {
        "files": stats.files,
        "files_failed": stats.files_failed,
        "files_skipped": stats.files_skipped,
        "events": stats.events,
        "alerts": counts.total,
        "seconds": round(seconds, 3),
        "events_per_second": round(stats.events / seconds, 1) if seconds > 0 else 0.0,
        "errors": dict(stats.errors),
        "rules_loaded": len(ruleset.rules),
        "rules_rejected": len(ruleset.rejected),
        "rules_not_run": len(ruleset.not_run),
        "correlations_loaded": len(ruleset.correlations),
        "jobs": jobs,
        "alerts_by_level": by_level,
        "alerts_by_rule": dict(sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
