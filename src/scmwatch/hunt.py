"""Hunt: read logs, match every event against the rule set, correlate, return alerts + summary.

Data flow per input file (inline for ``jobs=1``, in a worker process for ``jobs>1``)::

    read_input(file) → Engine.match(event) → single-event hits (minus suppressed rules)
                                           → correlation candidates (CorrelationStage.selector)

The parent then merges every file's candidates by time and runs correlation once
(``CorrelationStage.run``), so ``--jobs N`` gives exactly the alerts of ``--jobs 1``. Alerts are
sorted by (time, source, record id, rule id) for the same reason.

Workers are forked after the rules are compiled, so compiled predicates (closures, which cannot
be pickled) are shared copy-on-write; only (rule id, event) pairs and candidates travel back.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmwatch import readiness
from scmwatch.alerts import LEVEL_RANK, Alert
from scmwatch.events.model import Event, ReadError, ReadStats
from scmwatch.events.read import InputFile, discover, read_input
from scmwatch.progress import Progress
from scmwatch.sigma import CompiledRule, Engine, RuleSet

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
    hits: list[tuple[str, Event]] = field(default_factory=list)  # (rule id, event), file order
    candidates: list[Any] = field(default_factory=list)  # correlation candidates, file order
    stats: ReadStats | None = None
    seconds: float = 0.0
    seen: set[tuple[Any, Any]] = field(default_factory=set)  # (Channel, EventID) present: readiness
    errors: list[ReadError] = field(default_factory=list)  # --jobs: reported by the parent, in order


@dataclass
class HuntResult:
    alerts: list[Alert]
    summary: dict[str, Any]
    stats: ReadStats
    exit_code: int
    readiness: Any = None  # scmwatch.readiness.Readiness: rules that could not fire on this input


class _Context:
    """Everything a worker needs; a module global so forked workers inherit it unpickled."""

    def __init__(self, engine: Engine, stage: Any, min_rank: int, on_error: Callable | None) -> None:
        self.engine = engine
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
    match = ctx.engine.match_fields
    select = ctx.selector.select if ctx.selector is not None else None
    suppressed = ctx.suppressed_ids
    min_rank = ctx.min_rank
    rank = ctx.rule_rank
    hits = res.hits
    seen_add = res.seen.add
    for pos, ev in enumerate(read_input(inp, stats)):
        f = ev.fields
        seen_add((f.get("Channel"), f.get("EventID")))
        rules = match(f)
        if rules:
            for r in rules:
                if rank[r.id] >= min_rank and r.id not in suppressed:
                    ev.time  # noqa: B018 - parse the timestamp here, in the worker: the parent sorts by it
                    hits.append((r.id, ev))
        if select is not None:
            cand = select(ev, rules, index, pos)
            if cand is not None:
                res.candidates.append(cand)
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
    ``lateness`` (see :func:`_run_hunt`).

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
) -> HuntResult:
    global _CTX
    start = time.perf_counter()
    stats = ReadStats(on_error=on_error)
    inputs = list(discover(paths, stats))
    engine = engine or Engine(ruleset)
    stage = make_correlation_stage(ruleset, lateness)
    min_rank = LEVEL_RANK.get(min_level, 0) if min_level else 0
    _CTX = _Context(engine, stage, min_rank, on_error)
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
                        results.append(r)
                        if on_error is not None:
                            for err in r.errors:
                                on_error(err)
                        progress(inputs[r.index], r.stats.events if r.stats else 0)
    finally:
        bar.__exit__(None, None, None)
        _CTX = None
    results.sort(key=lambda r: r.index)
    for r in results:
        if r.stats is not None:
            r.stats.on_error = None
            stats.merge(r.stats)

    by_id = ruleset.by_id()
    alerts = [_alert(by_id[rid], ev) for r in results for rid, ev in r.hits]
    corr_alerts: list[Alert] = []
    if stage is not None:
        corr_alerts = [a for a in stage.run([r.candidates for r in results])
                       if LEVEL_RANK.get(a.level, 0) >= min_rank]
    alerts.extend(corr_alerts)
    alerts.sort(key=alert_sort_key)
    seconds = time.perf_counter() - start
    summary = make_summary(stats, ruleset, alerts, seconds, jobs)
    ready = readiness.compute(ruleset, set().union(*(r.seen for r in results)), min_rank, LEVEL_RANK,
                              exclude_ids=suppressed_ids)
    summary["readiness"] = ready.to_dict()
    if stage is not None:
        summary["correlation"] = stage.summary()
    return HuntResult(alerts, summary, stats, stats.exit_code, ready)


def _hunt_batch(batch: list[tuple[int, InputFile]]) -> list[FileResult]:
    return [hunt_file(i, inp) for i, inp in batch]


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


def _alert(rule: CompiledRule, ev: Event) -> Alert:
    extra: dict[str, Any] = {}
    if rule.custom:
        extra.update({k: v for k, v in rule.custom.items() if isinstance(v, str | int | float | bool | list)})
    return Alert(rule.id, rule.title, rule.level, rule.description, list(rule.tags), ev, extra=extra)


def alert_sort_key(a: Alert) -> tuple:
    return (a.time, a.event.source, a.event.record_id if a.event.record_id is not None else -1, a.rule_id)


def make_summary(stats: ReadStats, ruleset: RuleSet, alerts: Iterable[Alert], seconds: float,
                 jobs: int) -> dict[str, Any]:
    alerts = list(alerts)
    by_level: dict[str, int] = {}
    by_rule: dict[str, int] = {}
    for a in alerts:
        by_level[a.level] = by_level.get(a.level, 0) + 1
        by_rule[a.title] = by_rule.get(a.title, 0) + 1
    return {
        "files": stats.files,
        "files_failed": stats.files_failed,
        "files_skipped": stats.files_skipped,
        "events": stats.events,
        "alerts": len(alerts),
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
