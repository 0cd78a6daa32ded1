"""Hunt: read logs, match every event against the rule set, correlate, stream sorted alerts.

The hunt is three arrows, each one call, so a local ``--jobs`` worker, a cluster worker or a
follower loop can drive the same code (docs/architecture.md has the picture)::

    unit of input ──hunt_unit──▶ UnitResult ──AlertMerge.add/alerts──▶ Alert ──sink──▶ output
    (a file today)   read, enrich,   (picklable: Hit     merge by time,          (any callable,
                     match           records, candidate  correlate               scmwatch.sinks)
                                     records, ReadStats)

1. :func:`hunt_unit` ``(ctx, index, unit)`` reads one unit (``read_input`` for a file; any
   ``read(unit, stats, gate)`` callable for a chunk range or a batch), matches every event
   with the compiled rules of the :class:`HuntContext` and asks the correlation stage for
   candidates. It returns a :class:`UnitResult`: the unit's :class:`Hit` records and
   candidate records (sorted runs in spill files plus a short tail in memory), its read stats
   and errors. ``index`` orders units: results may arrive in any order. :func:`hunt_files`
   does the same for a run of small whole files in one call (one result for all of them).
2. :class:`AlertMerge` takes results (``add``) and then yields every alert in order
   (``alerts``): hits k-way merged by time, candidates merged by ``(time, unit, position)``
   into ``CorrelationStage.correlate``. So ``--jobs N`` gives exactly the alerts of ``--jobs 1``;
   alerts are sorted by (time, source, record id, rule id).
3. A sink is any ``Callable[[Alert], None]``; the CLI passes ``scmwatch.sinks.open_sink``'s.

:func:`run_hunt` is the local orchestration of the three: discover files, map them with
:func:`local_units` (inline, or with forked workers), merge, sink, summarise.

Bounded memory: nothing can be emitted before every unit is read, and holding every unit's hits
and candidates (each with its whole event) made peak RSS grow with the input. So each unit's
hits go to sorted spill runs of at most ``run_size`` records and its candidates to a spill file
(:mod:`scmwatch.spill`); short remainders stay in memory up to ``memory_budget`` records over
all units (:class:`scmwatch.spill.SpillBudget`), so a directory of small .evtx files never
touches the disk. The summary's ``memory`` object reports how much was held at once.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import mmap
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

from scmwatch import readiness
from scmwatch.alerts import LEVEL_RANK, Alert, HitLine, alert_sort_key
from scmwatch.correlate import Candidate, CorrelationStage, LinkEvents
from scmwatch.correlate.lateral import links_of
from scmwatch.correlate.partition import together
from scmwatch.events.enrich import Enricher, LineageFacts, Pending, classify, global_table
from scmwatch.events.lineage import SERVICES_EXE
from scmwatch.events.model import Event, ReadError, ReadGate, ReadStats
from scmwatch.events.ranges import FileRange, read_range
from scmwatch.events.read import InputFile, InputStream, discover, read_input
from scmwatch.progress import Progress, input_size, unit_bytes
from scmwatch.readiness import Readiness
from scmwatch.results import Results, Tally, may_link, rule_key, tally_sum
from scmwatch.sigma import CompiledRule, Engine, RuleSet
from scmwatch.sigma.cache import freeze_gc, unfreeze_gc
from scmwatch.sinks.jsonl import HitLines, rule_extra
from scmwatch.spill import SortedSpiller, SpillBudget, SpillDir, Stream, default_fan_in, write_merged
from scmwatch.split import SPLIT_BYTES, Handed, dispatch_order, hand_over, split_units, unit_size
from scmwatch.workers import STOP_SIGNALS, FileLock, Workers, stops_deferred

if TYPE_CHECKING:
    from scmwatch.dedup import Dedup

# Hits (or correlation alerts, or candidates) one unit's buffer holds before it goes to disk.
RUN_SIZE = 2048
# Records (hits, candidates, correlation alerts) the parent keeps in memory over all units
# instead of writing them out, whatever the input size. A held hit of all SigmaHQ on the attack
# corpus NDJSON is ~1.9 KB with its event (tracemalloc; a hit as its JSON line ~1.6 KB), so this
# is ~16 MB at most. At 4,096 the hunt of that corpus x4 with --jobs 1 (6,164 hits, four units)
# wrote and read back half its hits, ~5 % of its time (marshal, zstd, the spill's own files);
# held, they raised the CLI's peak RSS from 86.1 to 87.1 MB (its 4,776 hits of SigmaHQ's rules/).
MEMORY_BUDGET = 8192
# Read errors a worker hands back per unit; the counts in the summary stay exact beyond it.
MAX_WORKER_ERRORS = 10_000
# Process creations one unit may leave to the merge step (each matched a rule only with the SCM
# as parent: rare by construction); beyond it they stay unresolved and are counted.
MAX_DEFERRED = 20_000

# The cyclic GC's young-generation threshold while a hunt runs (Python's default: 700). Hits wait
# in their unit's buffer until a run is spilled and lineage entries live for the unit: at 700
# each is walked by a young and again by a middle collection before it dies, 27 ms of
# collections per pass of the attack corpus NDJSON x4 (33,020 lines, all SigmaHQ, gc
# callbacks timed: 0.8 us of ~15 us per line); at 50,000 the count of live young objects
# rises and falls with the buffers and no collection ran in six passes. Garbage cycles are still
# collected, every 50,000 net allocations.
HUNT_GC_THRESHOLD = 50_000
HITS, CANDS = "hits", "cand"  # record kinds, also their spill file prefixes
_KEY = itemgetter(0)  # Hit and CorrelationHit: their sort key
_CAND_KEY = itemgetter(0, 1, 2)  # candidate records (Candidate.to_record): (time_us, unit, position, ...)
_INDEX = attrgetter("index")
_FIRST = itemgetter(0)
_BRACE = ord("{")


class Hit(NamedTuple):
    """A single-event alert as it is spilled and merged: sort key, then what rebuilds the Alert.

    The hunt loop builds these as plain tuples of this layout: pickling a
    NamedTuple calls back into Python for every record (``__getnewargs__`` to write it, its
    ``__new__`` to read it), which cost ~1.9 us of the ~11 us that spilling and reading back a
    hit of all SigmaHQ took (measured on the attack samples' hits).
    """

    key: tuple  # alert_sort_key (time, source, record id or -1, rule id), then (0, unit index, n)
    fields: dict[str, Any]
    record_id: int | None
    fmt: str
    derived: tuple[str, ...] = ()  # fields the hunt inferred (events.enrich), not the log


class LineHit(NamedTuple):
    """A hit already written as its JSON line (``HuntContext.lines``), spilled and merged like a
    :class:`Hit` (built as a plain tuple too) and handed to the sink as a
    :class:`~scmwatch.alerts.HitLine`."""

    key: tuple  # as Hit.key
    body: bytes  # HitLines.bodies: the line without the rule's part
    host: str
    links: tuple | None  # the lateral links its event shows (HitLine.links)


class Deferred(NamedTuple):
    """A process creation whose parent one unit could not resolve, for the merge step to decide.

    Matching it with the Service Control Manager as parent gave ``hits`` (and the candidate
    ``cand_scm``) that the plain event did not (its candidate: ``cand_plain``); the merge step
    knows every unit's SCM PIDs and keeps whichever version is true.
    """

    host: str
    pid: int
    time: float
    hits: list[Hit]
    cand_scm: tuple | None
    cand_plain: tuple | None

    def decide(self, scm_parent: bool, hits: list[Hit], cands: list[tuple]) -> None:
        """Add the version that is true (started by the SCM or not) to ``hits`` and ``cands``."""
        if scm_parent:
            hits.extend(self.hits)
        cand = self.cand_scm if scm_parent else self.cand_plain
        if cand is not None:
            cands.append(cand)


class FileStatus(NamedTuple):
    """One input file of a batch's result (:attr:`UnitResult.files`): what is reported per file
    (the case store's file rows, the progress bar's bytes)."""

    index: int  # the unit index of the file (the file index once the mapper hands it on)
    events: int
    errors: dict[str, int]  # problems by kind, as ReadStats.errors
    fmt: str | None
    digest: tuple[str | None, int | None, bytes] | None = None  # as UnitResult.digest


class CorrelationHit(NamedTuple):
    """A correlation alert as it is spilled and merged beside the hits."""

    key: tuple  # alert_sort_key, then (1, evidence_key): after hits with an equal key
    alert: Alert


@dataclass
class UnitResult:
    """What one unit of input produced: small and picklable (it travels back from workers).

    Spill file paths name files in the run's :class:`~scmwatch.spill.SpillDir`, so the worker
    that wrote them must share the parent's file system.
    """

    index: int
    hit_runs: list[str] = field(default_factory=list)  # spill files: sorted runs of Hit
    hit_tail: list[Hit] = field(default_factory=list)  # the last, short sorted run, in memory
    hits: int = 0
    hits_peak: int = 0  # most hits held in memory at once (the sort buffer)
    # spill files of candidate records (this unit's stream; with --jobs also its batch's merged
    # remainders), and the short remainder still in memory, in unit order
    cand_runs: list[str] = field(default_factory=list)
    cand_mem: list[tuple] = field(default_factory=list)
    candidates: int = 0
    cands_peak: int = 0
    stats: ReadStats | None = None
    fmt: str | None = None  # the reader that read it (``evtx``, ``json`` ...); None when no event
    seconds: float = 0.0
    seen: set[tuple[Any, Any]] = field(default_factory=set)  # (Channel, EventID) present: readiness
    errors: list[ReadError] = field(default_factory=list)  # collect_errors: for the parent to report
    lineage: LineageFacts = field(default_factory=LineageFacts)  # SCM PIDs and boots seen
    deferred: list[Deferred] = field(default_factory=list)  # parents only the merge step can tell
    derived: int = 0  # events given a derived field in the unit
    deferred_overflow: int = 0  # unresolved process creations beyond MAX_DEFERRED (left unresolved)
    tuned_out: int = 0  # (rule, event) matches the tuning file's exclusions took away
    lookups: int = 0  # process parents looked up in the unit's own lineage table
    # a range of a split file: its link events, for the parent to replay the per-file fact
    # dedup over (scmwatch.split)
    links: LinkEvents | None = None
    parts: int = 0  # a file hunted as ranges (scmwatch.split): how many
    # its candidate stream then (the ranges' streams chained, the replay's decisions applied):
    # a callable giving the records in file order; None for every other unit
    cand_stream: Callable[[], Iterator[tuple]] | None = None
    # or, when that file is the run's only input, the correlation alerts of its candidates
    # (correlated as its ranges came in) and no candidate at all
    correlated: Callable[[], Iterator[Alert]] | None = None
    progress_done: bool = False  # its bytes were already counted on the progress bar
    # where a runner keeps the unit's candidates instead of the result (a cluster correlating
    # in partitions: see HuntContext.correlate_at); None when they are in the result
    cand_ref: Any = None
    # what the results summary counts of its line hits (HuntContext.lines), gathered where they
    # were matched; None: its hits are not tallied (each is counted as it is merged)
    tally: Tally | None = None
    # a result that stands for a batch of whole files (a cluster task's: scmwatch.cluster), its
    # files in unit order, the first being ``index``; empty: the result is of one file or range
    files: list[FileStatus] = field(default_factory=list)
    # with a runner that keeps the candidates (cand_ref): how far they are out of time order
    # (correlate.partition.StreamOrder), to tell whether any can be late
    order: Any = None
    # (sha256, size, first bytes) of the whole input file (case.files.file_sha256), when the
    # runner computed it where the file is read (HuntContext.digests); None: not computed
    digest: tuple[str | None, int | None, bytes] | None = None
    # a --jobs worker's result: the rules' parts of lines it encoded since its last result
    # (HitLines.new_prefixes), for the parent's HitLines (AlertMerge.add)
    prefixes: dict[str, bytes | None] = field(default_factory=dict)


@dataclass
class HuntResult:
    """What :func:`run_hunt` returns: alerts (unless streamed), summary, stats and readiness."""

    alerts: list[Alert]  # empty when the caller passed a ``sink`` (alerts were streamed to it)
    summary: dict[str, Any]
    stats: ReadStats
    exit_code: int
    readiness: Readiness | None = None  # rules that could not fire on this input


class HuntContext:
    """What matching a unit needs; built once per process from the rule set.

    Not picklable (compiled predicates are closures): ``--jobs`` workers inherit it by fork
    after the rules are compiled, so they share it copy-on-write; a worker on another process
    tree builds its own from the same rule files and options.
    """

    def __init__(self, ruleset: RuleSet, spill: SpillDir, *, engine: Engine | None = None,
                 lateness: float = 300.0, min_level: str | None = None, run_size: int = RUN_SIZE,
                 enrich: bool = True, correlation_caps: dict[str, int] | None = None) -> None:
        self.ruleset = ruleset
        self.engine = engine or Engine(ruleset)
        # the correlator's state caps when not its defaults (CorrelationStage.for_ruleset): every
        # stage of the hunt, wherever it runs, is built with them
        self.caps = dict(correlation_caps or {})
        self.stage = CorrelationStage.for_ruleset(ruleset, lateness=lateness, **self.caps)
        self.selector = self.stage.selector if self.stage is not None else None
        self.suppressed_ids = (self.stage.suppressed_rule_ids(ruleset.rules) if self.stage is not None
                               else frozenset())
        self.min_rank = LEVEL_RANK.get(min_level, 0) if min_level else 0
        # rules whose matches give no hit: below --min-level, or only there for a correlation
        self.dropped_ids = self.suppressed_ids | (
            {r.id for r in ruleset.rules if LEVEL_RANK.get(r.level, 0) < self.min_rank} if self.min_rank
            else frozenset())
        self.spill = spill
        self.run_size = run_size
        # records (hits, candidates) the merge holds in memory over all units (run_hunt's
        # ``memory_budget``); a --jobs worker hands over its share of it through its pipe
        self.memory_budget = MEMORY_BUDGET
        # how units are read when hunt_unit is not told otherwise (--jobs workers inherit it):
        # the case store swaps in a reader that also keeps every event (--keep-events)
        self.read: Reader = read_input
        self.enrich = enrich  # derived fields (events.enrich); off only to measure what they cost
        self.split_bytes = SPLIT_BYTES  # files from this size up are split into ranges (scmwatch.split)
        self.progress: Callable[[int, int], None] | None = None  # (bytes, events) read, as they are
        self.parallelism: dict[str, int] = {}  # what the unit mapper used: the summary's ``parallelism``
        self.lateness = lateness
        # A runner that keeps the candidates where they were selected correlates them there:
        # ``correlate_at(results, resolved)`` (the results' ``cand_ref``s, the candidate records of
        # deferred process creations the merge decided) yields the correlation alerts in any order
        # and sets ``correlation_summary``. None: the merge correlates the results' candidates.
        self.correlate_at: Callable[[list[UnitResult], list[tuple]], Iterator[Alert]] | None = None
        self.correlation_summary: dict[str, Any] | None = None
        # The case store wants each input's sha256 (its file rows, alert ids): a runner whose
        # workers read the inputs computes it there (UnitResult.digest), so that the client
        # never reads an input itself; the others leave it to the case store.
        self.digests = False
        # Set when the run's sink takes JSON lines (run_hunt's ``lines``): each hit is written as
        # its line where it is matched (a --jobs worker), not by the parent after the merge.
        self.lines: HitLines | None = None
        # Whether the results summary reads the line hits: their lateral links (HitLine.links)
        # and what a tally keeps beside the rules (hosts, links, times). A run that keeps none and
        # writes its lines as bytes (run_hunt's ``write_lines``) looks for no links in each hit's
        # event and tallies the rules only (the alert counts'): on x5 (all SigmaHQ, 4,520 hit
        # events, 310 of which may link, 5,970 hits) 2.9 ms and ~2.2 ms of the processes' CPU.
        self.line_links = True
        # What the units' gates answered per (Channel, EventID) (ReadGate.decisions), shared by
        # the units of one run (the local mapper sets it): the answers are the same for all, so
        # asked once per pair and process rather than once per pair and file. A unit not asked
        # does not list the pair in its ``seen``; the readiness report takes the union over the
        # run's units, which the unit asked first made complete. None: each unit asks afresh (a
        # cluster worker's context outlives a run).
        self.gate_answers: dict | None = None
        # the results summary's key per rule (results.rule_key), for the tallies of all units
        self.rule_keys: dict[str, tuple] = {}
        # Work of the run's end that needs no unit's result: the local mapper calls it while the
        # workers still hunt, once this process has taken its own queue of the plan (else after
        # its last unit): done after its last unit, it was mostly the parent's alone, the workers'
        # last result already in (x5, all SigmaHQ, --jobs 2: ~4 ms).
        self.idle: Callable[[], None] | None = None


Reader = Callable[[Any, ReadStats, ReadGate], Iterable[Event]]
Reporter = Callable[[ReadError], None]


def hunt_unit(ctx: HuntContext, index: int, unit: Any, *, on_error: Callable[[ReadError], None] | None = None,
              collect_errors: bool = False, read: Reader | None = None, enricher: Enricher | None = None,
              first: int = 0) -> UnitResult:
    """Arrow 1: read, enrich and match one unit of input.

    ``unit`` is whatever ``read(unit, stats, gate)`` reads (``ctx.read`` by default:
    :func:`~scmwatch.events.read.read_input` of an :class:`InputFile`). ``index`` orders this
    unit among all units of the hunt (ties of equal time break on it). Read errors go to
    ``on_error`` as they happen, or with ``collect_errors`` into ``UnitResult.errors`` (a worker
    process hands them to the parent, which reports them in unit order).

    A follower (:mod:`scmwatch.live`) reads one growing source as many small units: it passes
    the source's own ``enricher`` (so process lineage spans its batches, whatever their
    boundaries) and ``first``, the position of the unit's first event in the source (so
    correlation candidates are numbered as if the source were one unit).
    """
    return _hunt([(index, unit)], ctx, on_error, collect_errors, read, enricher, first)


def hunt_files(ctx: HuntContext, files: list[tuple[int, Any]], *, on_error: Reporter | None = None,
               collect_errors: bool = False) -> UnitResult:
    """:func:`hunt_unit` of several whole files (``(unit index, unit)`` pairs in unit order) in
    one pass: one result for all of them, the same as :func:`batch_result` of their
    :func:`hunt_unit` results (each file still has its own unit index, lineage table,
    candidate stream, error cap and :class:`FileStatus`).

    Why: what :func:`hunt_unit` sets up and hands back per unit (its closures, hit spiller and
    tally, the (Channel, EventID) lookups, the result the merge takes in and its spill budget
    entry) is paid once per batch instead of once per file. Counted with callgrind (whole
    process, ``--jobs 1``, all SigmaHQ; instructions do not drift with the machine's load): the
    attack corpus x5 (1,385 small EVTX files) 6,168M -> 6,066M instructions; per EVTX file
    beyond its events (bench/many_files.py's two inputs) ~277k -> ~204k."""
    return _hunt(files, ctx, on_error, collect_errors)


def _hunt(units: list[tuple[int, Any]], ctx: HuntContext, on_error: Reporter | None = None,
          collect_errors: bool = False, read: Reader | None = None, enricher: Enricher | None = None,
          first: int = 0) -> UnitResult:
    """:func:`hunt_unit` of ``units`` (one unit, or several whole files: :func:`hunt_files`)."""
    index = units[0][0]
    many = len(units) > 1
    res = UnitResult(index)
    file_errors = 0  # errors collected of the file being read: at most MAX_WORKER_ERRORS each
    if collect_errors:
        def on_error(err: ReadError) -> None:
            nonlocal file_errors
            if file_errors < MAX_WORKER_ERRORS:
                file_errors += 1
                res.errors.append(err)

    total = ReadStats()
    start = time.perf_counter()
    engine = ctx.engine
    match_in = engine.match_in
    bucket_of = engine.bucket
    no_rules: list = []
    dropped = ctx.dropped_ids
    hits = SortedSpiller(ctx.spill, f"hits{index}", _KEY, ctx.run_size)
    add_hits = hits.extend
    # (Channel, EventID) -> (the engine's bucket for it, its enrichment kind: events.enrich):
    # one lookup per event, and its keys are the pairs these units had (for the readiness report)
    pairs: dict[tuple, tuple[Any, int]] = {}
    pairs_get = pairs.get
    wanted_ids = ctx.selector.gate if ctx.selector is not None else frozenset()
    enriching = ctx.enrich

    def pair(key: tuple) -> tuple[Any, int]:
        entry = pairs[key] = (bucket_of(*key), classify(*key) if enriching else 0)
        return entry

    def want(channel: Any, eid: Any) -> bool:
        """Does any rule, the correlation stage or the enricher look at events of this pair?
        The EVTX reader does not even parse the others past their System part."""
        key = (channel, eid)
        b, kind = pairs_get(key) or pair(key)
        return not b.empty or eid in wanted_ids or bool(kind)

    lines = ctx.lines
    line_links = ctx.line_links
    tally = res.tally = Tally() if lines is not None else None
    rule_keys = ctx.rule_keys

    def tally_key(r: CompiledRule) -> tuple:
        k = rule_keys[r.id] = rule_key(r.id, r.title, r.level, r.tags)
        return k

    def hits_of(ev: Event, f: dict, rules: list, derived: tuple, tallied: bool = True) -> list[Hit]:
        nonlocal n
        out = []
        rid = ev.record_id
        t, source, order = ev.time, ev.source, rid if rid is not None else -1
        if lines is not None:
            kept = [r for r in rules if r.id not in dropped]
            if not kept:
                return out
            host = str(f.get("Computer") or "")
            links = ((tuple(links_of([Event(f, source, None, "", t)])) or None) if line_links and may_link(f)
                     else None)
            if not tallied or tally is None:
                count = None
            elif line_links:
                count = tally.add
            else:
                count = tally.add_rule
            for r, body in zip(kept, lines.bodies(kept, t, source, rid, f, derived), strict=True):
                key = (t, source, order, r.id, 0, index, n)
                out.append((key, body, host, links))  # a LineHit as a plain tuple (see Hit)
                n += 1
                if count is not None:
                    count(key, rule_keys.get(r.id) or tally_key(r), host, t, links)
            return out
        fmt = ev.fmt
        for r in rules:
            if r.id not in dropped:
                out.append(((t, source, order, r.id, 0, index, n), f, rid, fmt, derived))  # a Hit (see Hit)
                n += 1
        return out

    excluded_before = engine.excluded
    lineage = res.lineage
    held: list[list[tuple]] = []  # the files' short candidate lists (in unit order), while few
    held_count = 0
    for index, unit in units:
        ranged = type(unit) is FileRange
        reader = read if read is not None else read_range if ranged else ctx.read
        select = None
        # a range's link events go apart, column by column, for the parent's replay (scmwatch.split)
        range_links = LinkEvents() if ranged and ctx.selector is not None else None
        if ctx.selector is not None:
            select = (ctx.selector.select if range_links is None
                      else partial(ctx.selector.select_range, range_links))
        cands = Stream(ctx.spill, f"cand{index}", ctx.run_size)
        if enricher is None or many:
            enricher = Enricher()
        enrich = enricher.enrich
        gate = ReadGate(want)
        if ctx.gate_answers is not None:
            gate.decisions = ctx.gate_answers
        stats = ReadStats(on_error=on_error)
        n = 0
        ev = None
        untimed = 0
        file_errors = 0
        for pos, ev in enumerate(reader(unit, stats, gate), first):
            if select is not None:
                pos += gate.skipped  # number events as if the skipped ones had been seen
            f = ev.fields
            key = (f.get("Channel"), f.get("EventID"))
            try:
                entry = pairs_get(key)
            except TypeError:  # a list or object where a name or number belongs (odd JSON exports)
                key = tuple(k if k is None or isinstance(k, str | int) else repr(k) for k in key)
                entry = pairs_get(key)
            b, kind = entry or pair(key)
            derived: tuple[str, ...] = ()
            pending = None
            if kind:
                derived, pending = enrich(ev, kind)
                if derived:
                    res.derived += 1
            rules = no_rules if b.empty else match_in(b, f)
            if pending is not None and not b.empty and _defer(res, ctx, ev, f, b, rules, pending, hits_of,
                                                              select, index, pos):
                add_hits(hits_of(ev, f, rules, ()))  # what it matches anyway is not in doubt
                continue  # its candidate is decided by the merge step
            if rules:
                add_hits(hits_of(ev, f, rules, derived))
            if select is not None:
                cand = select(ev, rules, index, pos)
                if cand is not None:
                    if cand.time_us <= 0:  # the correlator cannot place it in time: say so, once per unit
                        untimed += 1
                        if untimed == 1:
                            stats.error(ev.source, "time", f"event has no usable time (TimeCreated "
                                        f"{str(f.get('TimeCreated'))[:60]!r}): left out of correlation; "
                                        "further ones counted only", ev.record_id)
                        else:
                            stats.errors["time"] += 1
                    if not cand.keys and range_links is not None:  # an untimed link event: in range_links
                        continue
                    cands.add(cand.to_record())
        fmt = ev.fmt if ev is not None else None
        cand_path, cand_mem = cands.finish()
        if cand_path is not None:
            res.cand_runs.append(cand_path)
        res.candidates += cands.count
        res.cands_peak = max(res.cands_peak, cands.peak)
        facts = enricher.facts
        res.lookups += enricher.lookups
        stats.on_error = None  # keep the callback out of the pickled result
        if not many:
            res.stats = stats
            res.lineage = facts
            res.fmt = fmt
            res.cand_mem = cand_mem
            res.links = range_links
            break
        total.merge(stats)
        lineage.scm |= facts.scm
        lineage.boots |= facts.boots
        lineage.dropped += facts.dropped
        res.fmt = res.fmt or fmt
        res.files.append(FileStatus(index, stats.events, dict(stats.errors), fmt))
        if cand_mem:
            held.append(cand_mem)
            held_count += len(cand_mem)
            if held_count > ctx.run_size:  # merged early: the same order as merged at the end
                res.cand_runs.append(write_merged(ctx.spill, CANDS, held, _CAND_KEY))
                held, held_count = [], 0
    if many:
        res.stats = total
        res.cand_mem = held[0] if len(held) == 1 else list(heapq.merge(*held, key=_CAND_KEY))
    res.tuned_out = engine.excluded - excluded_before
    res.seen = set(pairs)
    res.hit_runs, res.hit_tail = hits.finish()
    res.hits = hits.count
    res.hits_peak = hits.peak
    res.seconds = time.perf_counter() - start
    return res


def _defer(res: UnitResult, ctx: HuntContext, ev: Event, f: dict, bucket: Any, rules: list, pending: Pending,
           hits_of: Callable, select: Callable | None, index: int, pos: int) -> bool:
    """A process creation without a resolvable parent: if the Service Control Manager as its
    parent would change what it matches, leave the decision to the merge step (True)."""
    parent = pending.parent_field
    scm_fields = dict(f)
    scm_fields[parent] = SERVICES_EXE
    scm_rules = ctx.engine.match_in(bucket, scm_fields)
    have = {r.id for r in rules}
    extra = [r for r in scm_rules if r.id not in have]
    if not extra:
        return False
    if len(res.deferred) >= MAX_DEFERRED:
        res.deferred_overflow += 1
        return False
    scm_ev = Event(scm_fields, ev.source, ev.record_id, ev.fmt, ev._epoch)
    cand_scm = cand_plain = None
    if select is not None:
        c = select(scm_ev, scm_rules, index, pos)
        cand_scm = c.to_record() if c is not None else None
        c = select(ev, rules, index, pos)
        cand_plain = c.to_record() if c is not None else None
    # its hits count only if the merge step keeps them: not tallied here
    res.deferred.append(Deferred(pending.host, pending.pid, ev.time,
                                 hits_of(scm_ev, scm_fields, extra, (parent,), False), cand_scm, cand_plain))
    return True


class AlertMerge:
    """Arrow 2: merge units' hits by time, correlate their candidates, yield alerts in order.

    ``add`` each :class:`UnitResult` (any order) as it arrives, then iterate :meth:`alerts`
    once. Afterwards ``stats`` (all units' read stats, merged in unit order), ``seen`` and
    :meth:`memory` describe the run.
    """

    def __init__(self, ctx: HuntContext, stats: ReadStats, *, memory_budget: int = MEMORY_BUDGET,
                 fan_in: int | None = None) -> None:
        self.ctx = ctx
        self.stats = stats
        self.budget = SpillBudget(ctx.spill, memory_budget, fan_in or default_fan_in(),
                                  {HITS: _KEY, CANDS: _CAND_KEY}, frozenset({HITS}))
        self.results: list[UnitResult] = []
        self.seen: set[tuple[Any, Any]] = set()
        self.lineage: dict[str, int] = {}  # process-lineage counts (after alerts())
        self._memory: dict[str, Any] = {}
        # the results' tallies added up (UnitResult.tally), while every result so far has one;
        # after alerts(): the tally of every alert it yields, or None (count each alert yielded)
        self.tally: Tally | None = Tally() if ctx.lines is not None else None

    def add(self, r: UnitResult) -> None:
        """Take one unit's result; its short in-memory tails join the budget (or go to disk)."""
        if r.prefixes:
            if self.ctx.lines is not None:
                self.ctx.lines.adopt(r.prefixes)
            r.prefixes = {}
        if self.tally is not None:
            self.tally.merge(r.tally)
            r.tally = None
            if self.tally.overflow:
                self.tally = None
        written = self.budget.keep({HITS: r.hit_tail, CANDS: r.cand_mem})
        if HITS in written:
            r.hit_runs.append(written[HITS])
        if CANDS in written:
            r.cand_runs.append(written[CANDS])
        r.hit_tail = []
        r.cand_mem = []
        self.results.append(r)

    def alerts(self) -> Iterator[Alert | HitLine]:
        """Every alert of the hunt, sorted by (time, source, record id, rule id); a
        :class:`HitLine` for a hit written as its line. Everything but the final merge is done
        when this returns, so :attr:`tally` then says whether the alerts are tallied."""
        return alerts_from_hits(self.records(), self.ctx.ruleset.by_id(), self.ctx.lines)

    def records(self) -> Iterator[Hit | LineHit | CorrelationHit]:
        """The hit records :meth:`alerts` makes its alerts of, in their order (the same
        preparation; :func:`line_blocks` takes them too)."""
        ctx, budget = self.ctx, self.budget
        tally = self.tally
        results = sorted(self.results, key=lambda r: r.index)
        for r in results:
            if r.stats is not None:
                r.stats.on_error = None
                self.stats.merge(r.stats)
            self.seen |= r.seen
            r.seen = set()
        mem = self._memory = {
            "run_size": ctx.run_size,
            "memory_budget": budget.limit,
            "fan_in": budget.fan_in,
            "alerts_buffered_peak": max((r.hits_peak for r in results), default=0),
            "candidates_buffered_peak": max((r.cands_peak for r in results), default=0),
            "hits": sum(r.hits for r in results),
            "candidates": sum(r.candidates for r in results),
            "correlation_alerts": 0,
        }
        runs: list[str | list] = [p for r in results for p in r.hit_runs]
        runs += budget.sources(HITS)
        resolved_hits, resolved_cands = self._resolve_lineage(results)
        if resolved_hits:
            runs.append(sorted(resolved_hits, key=_KEY))
            if tally is not None:
                by_id = ctx.ruleset.by_id()
                for key, _, host, links in resolved_hits:
                    rule = by_id[key[3]]
                    tally.add(key, rule_key(rule.id, rule.title, rule.level, rule.tags), host, key[0], links)
        if ctx.stage is not None:
            # Correlation alerts come out in decision order, not time order: spill them as
            # sorted runs too.
            corr = SortedSpiller(ctx.spill, "corr", _KEY, ctx.run_size)
            streams: list[Any] = [p for r in results for p in r.cand_runs]
            streams += budget.sources(CANDS)
            early = [r.correlated for r in results if r.correlated is not None]
            if ctx.correlate_at is not None:
                decided = ctx.correlate_at(results, resolved_cands)
            elif early:  # the run's one input, split and correlated as it came in (scmwatch.split)
                decided = early[0]()
            else:
                streams += [r.cand_stream() for r in results if r.cand_stream is not None]
                if resolved_cands:
                    streams.append(sorted(resolved_cands, key=_CAND_KEY))
                decided = ctx.stage.correlate(map(Candidate.from_record, budget.merge(streams, _CAND_KEY)))
            for a in decided:
                if LEVEL_RANK.get(a.level, 0) >= ctx.min_rank:
                    key = alert_sort_key(a) + (1, evidence_key(a))
                    corr.add(CorrelationHit(key, a))
                    if tally is not None:
                        tally.add_alert(key, a)
            budget.release(CANDS)
            corr_runs, corr_tail = corr.finish()
            runs.extend(corr_runs)
            if corr_tail:
                runs.append(budget.keep_list("corr", corr_tail))
            mem["alerts_buffered_peak"] = max(mem["alerts_buffered_peak"], corr.peak)
            mem["correlation_alerts"] = corr.count
        mem["spill_bytes"], mem["files_written"] = ctx.spill.usage()
        if tally is not None and tally.overflow:
            self.tally = None
        return budget.merge(runs, _KEY)

    def _resolve_lineage(self, results: list[UnitResult]) -> tuple[list[Hit], list[tuple]]:
        """Decide the units' deferred process creations with every unit's SCM PIDs and boots."""
        deferred = [d for r in results for d in r.deferred]
        table = global_table([r.lineage for r in results]) if deferred else None
        hits: list[Hit] = []
        cands: list[tuple] = []
        resolved = 0
        for d in deferred:
            scm = table is not None and table.image(d.host, d.pid, d.time) == SERVICES_EXE
            resolved += scm
            d.decide(scm, hits, cands)
        self.lineage = {
            "derived_in_units": sum(r.derived for r in results),
            "deferred": len(deferred),
            "resolved_by_merge": resolved,
            "deferred_overflow": sum(r.deferred_overflow for r in results),
            "facts_dropped": sum(r.lineage.dropped for r in results),
        }
        for r in results:
            r.deferred = []
        return hits, cands

    def memory(self) -> dict[str, Any]:
        """The summary's ``memory`` object (after :meth:`alerts`): what was held at once.

        Per unit (in the worker): at most ``run_size`` hits (``alerts_buffered_peak``; also the
        correlation alerts' buffer) and ``run_size`` candidates (``candidates_buffered_peak``)
        before they go to disk. Over all units: short remainders kept instead of written, at
        most ``memory_budget`` records (``held_peak``). Merges: at most ``fan_in`` files open
        (``merge_open_peak``). None of these depends on the input size.
        """
        m, b = self._memory, self.budget
        keys = ("run_size", "memory_budget", "fan_in", "alerts_buffered_peak", "candidates_buffered_peak")
        out = {k: m[k] for k in keys}
        out["held_peak"] = b.held_peak
        out["merge_open_peak"] = b.merge_open_peak
        for k in ("hits", "candidates", "correlation_alerts", "files_written", "spill_bytes"):
            out[k] = m[k]
        return out


def evidence_key(a: Alert) -> tuple:
    """Orders correlation alerts whose sort key is equal (same rule, same last event) by their
    evidence, so the order does not depend on which correlator decided first."""
    return tuple((e.source, e.record_id if e.record_id is not None else -1, e.time) for e in a.events or ())


def alerts_from_hits(records: Iterable[Hit | LineHit | CorrelationHit], by_id: dict[str, CompiledRule],
                     lines: HitLines | None = None) -> Iterator[Alert | HitLine]:
    """Alerts from (merged) hit records: the rule's title, level and custom attributes added;
    a :class:`HitLine` for a hit already written as its line."""
    # rule id -> (id, title, level, description, tags, custom attributes): one lookup per hit
    rules: dict[str, tuple] = {}
    heads: dict[str, tuple] = {}  # rule id -> (its part of the line, id, title, level, tags)
    new = tuple.__new__  # a HitLine without its Python-level __new__: ~0.25 us of the parent's per line
    for rec in records:
        if type(rec) is CorrelationHit:
            yield rec.alert
            continue
        if len(rec) == 4:  # a LineHit
            key, body, host, links = rec
            head = heads.get(key[3])
            if head is None:
                rule = by_id[key[3]]
                if lines is None:
                    lines = HitLines()
                head = heads[rule.id] = (lines.prefix(rule), rule.id, rule.title, rule.level, rule.tags)
            line = body if body[0] == _BRACE else head[0] + body  # a whole line, or the body (HitLines)
            yield new(HitLine, (line, head[1], head[2], head[3], head[4], key[0], host, key[1], links))
            continue
        key, fields, rid, fmt, derived = rec
        r = rules.get(key[3])
        if r is None:
            rule = by_id[key[3]]
            r = rules[rule.id] = (rule.id, rule.title, rule.level, rule.description, rule.tags,
                                  rule_extra(rule))
        more = dict(r[5])
        if derived:
            more["derived"] = list(derived)
        ev = Event(fields, key[1], rid, fmt, key[0])
        yield Alert(r[0], r[1], r[2], r[3], list(r[4]), ev, None, None, more)


# Lines per block of :func:`line_blocks`, one write each: ~200 KB of x5's alert lines. Blocks
# of 1,024 lines (~1.6 MB) were mostly joined into memory malloc mapped afresh (above its mmap
# threshold) and faulted in page by page: x5's parent (--jobs 2) took ~1,450 page faults after
# the workers' last result, now ~600, and 21.5 -> 18.9 ms of CPU there (bench/fork_overhead.py,
# four alternated runs of 5-7 rounds).
LINE_BLOCK = 128


def line_blocks(records: Iterable[Hit | LineHit | CorrelationHit], by_id: dict[str, CompiledRule],
                lines: HitLines | None, size: int = LINE_BLOCK) -> Iterator[tuple[bytes, int] | Alert]:
    """What :func:`alerts_from_hits` yields, for a JSON-lines sink that writes bytes: runs of
    line hits as ``(block, count)``, up to ``size`` whole lines joined into one bytes object
    (each a rule's part and its body, as :class:`HitLine` has them), other records as their
    Alerts, in the same order. The parent's final loop over x5's 5,970 alerts cost ~4 us per
    line through a :class:`HitLine`, the line's own concatenation and one sink call each."""
    prefixes: dict[str, bytes | None] = {}
    parts: list[bytes] = []
    count = 0
    for rec in records:
        if type(rec) is not CorrelationHit and len(rec) == 4:  # a LineHit
            body = rec[1]
            if body[0] != _BRACE:  # a body: its rule's part goes before it (HitLines)
                rid = rec[0][3]
                prefix = prefixes.get(rid)
                if prefix is None:
                    if lines is None:
                        lines = HitLines()
                    prefix = prefixes[rid] = lines.prefix(by_id[rid])
                assert prefix is not None, "a rule whose part orjson refuses has whole lines only"
                parts.append(prefix)
            parts.append(body)
            count += 1
            if count == size:
                yield b"".join(parts), count
                parts, count = [], 0
            continue
        if count:
            yield b"".join(parts), count
            parts, count = [], 0
        yield from alerts_from_hits((rec,), by_id, lines)
    if count:
        yield b"".join(parts), count


UnitMapper = Callable[[HuntContext, list[InputFile], int, bool], Iterator[UnitResult]]


def _pool_units(ctx: HuntContext, units: list[tuple[int, Any]], jobs: int,
                report: Callable[[ReadError], None] | None) -> Iterator[UnitResult]:
    """Hunt (index, unit) pairs inline (``jobs == 1``), or here and in ``jobs - 1`` forked
    workers (:class:`~scmwatch.workers.Workers`); yields results as they finish. Errors go to
    ``report`` inline as they happen; with workers, with each result (``UnitResult.errors``),
    this process's too (the mapper may drop a result and hunt its file again whole,
    ``scmwatch.split``).

    This process is one of the ``jobs``: it would otherwise only wait for results, so one
    worker fewer is forked and started, and this process's units' results cross no pipe and
    keep their short remainders in memory. Between its units it takes the results the workers
    finished (without waiting), so progress and memory stay as with workers only. Measured on
    the EVTX attack samples x5 (1,390 files, all SigmaHQ, ``--jobs 2``, 12 alternated runs,
    load 2.1-3.0): whole-process CPU median 1.52 -> 1.45 s, wall 0.93 -> 0.91 s.

    Ranges of a split file too (the summary's ``parallelism.ranges_here`` counts this
    process's): the replay and correlation of the ranges (:mod:`scmwatch.split`) run between
    its own ranges, and the plan's work stealing gives it fewer ranges for that. A forked
    worker beside a parent that only replayed made three processes on two cores, and each of
    that worker's ranges was pickled, written, read and unpickled. 983 MB of NDJSON,
    ``--jobs 2``, 5 alternated pairs at load 5-8 from other work: whole-process CPU median
    20.82 -> 20.59 s (lower in 4 of the 5 pairs; wall times at that load say nothing)."""
    ctx.gate_answers = {}
    if jobs == 1:
        for files in _file_batches(units):
            yield _hunt(files, ctx, report)
        return
    # Buckets are built lazily in each process for the (channel, EventID) pairs it meets: in
    # parallel, and only those needed (warming all 300+ SigmaHQ buckets up front costs ~1 s of
    # Hyperscan compilation in the parent alone).
    global _CTX, _COLLECT, _PLAN, _HAND_OVER
    plan = _Plan(_queues(units, jobs))
    plan.join()  # the first queue is this process's; the workers take the others
    _CTX, _COLLECT, _PLAN = ctx, report is not None, plan
    _HAND_OVER = ctx.memory_budget // jobs
    if any(type(u) is FileRange for _, u in units):
        ctx.parallelism["ranges_here"] = 0
    # Largest units first so one big file does not finish last alone; batches of files per
    # take, because directories of small .evtx files are common. This process takes its first
    # batch before any worker is forked, so that it hunts at least one unit however the
    # processes are scheduled; the workers start on theirs at once (scmwatch.workers).
    batch = plan.take()
    # A Ctrl-C or SIGTERM while the workers are forked would leave those forked so far running
    # with no one to stop them: the signals wait until they are in ``workers``, which the
    # ``finally`` terminates. The workers inherit them blocked and set their own in
    # ``_worker_signals``.
    workers = None
    try:
        with stops_deferred():
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                workers = Workers(jobs - 1, _work)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        idle = ctx.idle
        while batch:
            for files in _file_batches(sorted(batch, key=_FIRST)):
                if type(files[0][1]) is FileRange:  # a range alone (_file_batches)
                    ctx.parallelism["ranges_here"] += 1
                # errors in the result, as a worker's: it may be dropped
                yield _hunt(files, ctx, collect_errors=report is not None)
                for results in workers.finished():
                    yield from results
            if idle is not None and plan.own_done():
                idle()
                idle = None
            batch = plan.take()
        if idle is not None:
            idle()
        for results in workers.rest():
            yield from results
        _retiring.append(workers)  # reaped after the merge (join_retired)
        workers = None
    finally:
        if workers is not None:  # interrupted, or a unit failed: stopped before anything goes on
            workers.terminate()
        _CTX = _PLAN = None
        _HAND_OVER = 0


_retiring: list[Workers] = []


def join_retired() -> None:
    """Wait for the workers of finished hunts to exit: each tells it is done with its last
    result, then the kernel frees its heap (10-11 ms of the parent's wall time on the dev
    corpus x5 when the parent waited for it before the merge), so this is done after the merge."""
    while _retiring:
        _retiring.pop().join()


local_units = split_units(_pool_units)
local_units.__doc__ = """Hunt every input file inline (``jobs == 1``) or here and in ``jobs - 1`` forked
workers, large files as ranges (:func:`scmwatch.split.split_units`); one result per file inline, per
batch of whole files from a worker (:func:`batch_result`), per range of a split file."""


def _work(send: Callable[[list[UnitResult | Handed]], None]) -> None:
    """A forked worker's life (:class:`~scmwatch.workers.Workers`): its signals, its queue of
    the plan, then each batch the plan gives it, hunted and its results sent."""
    _worker_signals()
    assert _PLAN is not None, "dispatch plan not initialised"
    _PLAN.join()
    while batch := _PLAN.take():
        send(_hunt_batch(batch))


def _worker_signals() -> None:
    """In a worker: Ctrl-C is the parent's to handle (it terminates the workers), and SIGTERM
    (what ``Workers.terminate`` sends) ends the worker at once, without a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked while the workers were forked


# The forked workers inherit these (compiled rules cannot be pickled).
_CTX: HuntContext | None = None
_COLLECT = False
_PLAN: _Plan | None = None
# Short remainders (records) a worker may still send through its pipe (_hunt_batch): its share
# of the merge's memory budget, counted down in the worker.
_HAND_OVER = 0


def batch_result(results: list[UnitResult]) -> UnitResult:
    """One result for a task's whole files (in unit order), so that the parent or the cluster
    client handles one result per task, not per file: hits and candidates merged into one run
    and one stream (merging early gives the same order, see :mod:`scmwatch.spill`) beside the
    files' own spilled runs, read stats merged in unit order, errors and deferred process
    creations in unit order, and each file's status in ``files`` for what is reported per file.

    Measured on the dev corpus x20 (5,560 small .evtx files, ``--jobs 2``): a result per file
    cost the parent ~13 us to unpickle and ~10 us more to add, merge and report, and the worker
    ~9 us to pickle. Per batch: 33 instead of 328 bytes per file through the pipe, ~1.5 us per
    file to pickle and unpickle, and the parent's CPU outside the final merge 31-36 instead of
    67-71 us per file."""
    if len(results) == 1:
        return results[0]
    stats = ReadStats()
    out = UnitResult(results[0].index, stats=stats, lineage=LineageFacts(),
                     tally=tally_sum(r.tally for r in results))
    for r in results:
        st = r.stats
        out.files.append(FileStatus(r.index, st.events if st else 0, dict(st.errors) if st else {}, r.fmt,
                                    r.digest))
        if st is not None:
            stats.merge(st)
        out.hit_runs += r.hit_runs
        out.hits += r.hits
        out.hits_peak = max(out.hits_peak, r.hits_peak)
        out.cand_runs += r.cand_runs
        out.candidates += r.candidates
        out.cands_peak = max(out.cands_peak, r.cands_peak)
        out.fmt = out.fmt or r.fmt
        out.seconds += r.seconds
        out.seen |= r.seen
        out.errors += r.errors
        out.lineage.scm |= r.lineage.scm
        out.lineage.boots |= r.lineage.boots
        out.lineage.dropped += r.lineage.dropped
        out.deferred += r.deferred
        out.derived += r.derived
        out.deferred_overflow += r.deferred_overflow
        out.tuned_out += r.tuned_out
        out.lookups += r.lookups
    out.order = together(r.order for r in results)
    out.hit_tail = list(heapq.merge(*(r.hit_tail for r in results if r.hit_tail), key=_KEY))
    out.cand_mem = list(heapq.merge(*(r.cand_mem for r in results if r.cand_mem), key=_CAND_KEY))
    return out


def _hunt_batch(batch: list[tuple[int, Any]]) -> list[UnitResult | Handed]:
    """A worker's task: hunt a batch of units; one result for its whole files, their short
    remainders in it while the worker's share of the merge's memory budget lasts, else written.

    Remainders in the result go through the pipe and into the parent's budget
    (``AlertMerge.add``), where they are merged in memory at the end. Written, each batch is one
    sorted run of hits and one merged stream of candidates (merging early gives the same order,
    see spill.py) that the parent reads back in its serial tail, after the workers are done.
    On the EVTX attack samples x5 (all SigmaHQ, ``--jobs 2``, ~3,000 of the 5,970 hits the
    worker's) the parent's CPU from the workers' last result to the end went from 29.4 to
    22.2 ms (medians of 10 alternated runs), callgrind 105.7M -> 62.5M instructions, its zstd
    decompression and run files gone; both processes after the fork 4,431M -> 4,366M. Beyond
    the share (many hits), the parent would hold them only to write them again itself
    (``SpillBudget.keep``): the worker writes them, in parallel.
    A range of a split file keeps its own result and (short) remainders, handed over in a file
    (:class:`~scmwatch.split.Handed`): the parent replays its file's ranges in order as they
    come in, and a file hunted again whole drops its ranges' results.
    """
    global _HAND_OVER
    ctx = _CTX
    assert ctx is not None, "hunt context not initialised"
    out: list[UnitResult | Handed] = [hand_over(ctx.spill, hunt_unit(ctx, i, unit, collect_errors=_COLLECT))
                                      for i, unit in batch if type(unit) is FileRange]
    whole = sorted((pair for pair in batch if type(pair[1]) is not FileRange), key=_FIRST)
    if whole:
        r = hunt_files(ctx, whole, collect_errors=_COLLECT)
        if ctx.lines is not None:
            r.prefixes = ctx.lines.new_prefixes()
        held = len(r.hit_tail) + len(r.cand_mem)
        if held <= _HAND_OVER:  # through the pipe, into the merge's memory budget
            _HAND_OVER -= held
            out.append(r)
            return out
        if r.hit_tail:
            r.hit_runs.append(write_merged(ctx.spill, HITS, [r.hit_tail], _KEY))
        if r.cand_mem:
            r.cand_runs.append(write_merged(ctx.spill, CANDS, [r.cand_mem], _CAND_KEY))
        r.hit_tail = []
        r.cand_mem = []
        out.append(r)
    return out


# Whole files one call of hunt_files takes at most (in unit order), and input bytes: a batch of
# small files shares its per-unit state and its result, a large file is hunted alone.
BATCH_FILES = 64
BATCH_BYTES = 4 << 20


def _file_batches(units: list[tuple[int, Any]]) -> Iterator[list[tuple[int, Any]]]:
    """``units`` (in unit order) as runs of whole files for :func:`hunt_files`, each at most
    BATCH_FILES files and (beyond its first) BATCH_BYTES of known size; a range of a split file
    alone."""
    cur: list[tuple[int, Any]] = []
    size = 0
    for pair in units:
        u = pair[1]
        if type(u) is FileRange:
            if cur:
                yield cur
                cur, size = [], 0
            yield [pair]
            continue
        nbytes = getattr(u, "size", None) or 0  # not unit_size: no stat of an archive member per file
        if cur and (len(cur) >= BATCH_FILES or size + nbytes > BATCH_BYTES):
            yield cur
            cur, size = [], 0
        cur.append(pair)
        size += nbytes
    if cur:
        yield cur


# What a file's fixed cost (open, header, per-unit state, its spill) is worth in bytes when
# batches are sized: ~0.4 ms, about what reading and matching 30 KB of EVTX costs.
FILE_COST = 1 << 15


def _batches(units: list[tuple[int, Any]], jobs: int) -> list[list[tuple[int, Any]]]:
    """Units, largest first, grouped by estimated cost (bytes + FILE_COST per file): each batch
    a quarter of the cost still to hand out per worker, between 1/(32*jobs) and 1/(8*jobs) of
    the whole (guided self-scheduling). Few tasks keep Pool overhead small (~0.5 ms of parent
    CPU per round trip); small ones at the end let workers finish close together: with equal
    batches of 1/(8*jobs), a worker waited 10-120 ms (four runs, load 2-2.7) for the other's last
    batch of 173 small files on the dev corpus x5 (16 batches; now 27, the last ones 37 files).
    A range of a split file is a task alone: its size is chosen for balance
    (``scmwatch.split.range_weights``), and two ranges in one task made tasks of one and two
    ranges whose ends were up to a range apart (1 GB NDJSON, ``--jobs 2``: one worker idle for
    the last 1.3 of 8.9 s)."""
    cost = {i: unit_size(u) + FILE_COST for i, u in units}
    return _cut(dispatch_order(units), cost, jobs, sum(cost.values()) or 1, 1)


def _cut(order: list[tuple[int, Any]], cost: dict[int, int], jobs: int, total: int,
         spread: int) -> list[list[tuple[int, Any]]]:
    """:func:`_batches` of ``order`` (in dispatch order), one of ``spread`` equal shares of
    units costing ``total`` in all: its batches are sized as if the other shares shrank alike."""
    largest, smallest = total / (8 * jobs), total / (32 * jobs)
    remaining = sum(cost[i] for i, _ in order)

    def target() -> float:
        return min(largest, max(smallest, remaining * spread / (4 * jobs)))

    out: list[list[tuple[int, Any]]] = []
    cur: list[tuple[int, Any]] = []
    size = 0
    goal = target()
    for pair in order:
        if type(pair[1]) is FileRange:
            if cur:
                out.append(cur)
                remaining -= size
                cur, size = [], 0
            out.append([pair])
            remaining -= cost[pair[0]]
            goal = target()
            continue
        cur.append(pair)
        size += cost[pair[0]]
        if size >= goal:
            out.append(cur)
            remaining -= size
            cur, size = [], 0
            goal = target()
    if cur:
        out.append(cur)
    return out


def affinity_key(unit: Any) -> str:
    """Files that are likely to hold the same kinds of events: the same base name (a triage
    collection's ``Security.evtx`` of every host, copies of one recording)."""
    return (unit.member or unit.path).rpartition("/")[2].lower()


def _queues(units: list[tuple[int, Any]], jobs: int) -> list[list[list[tuple[int, Any]]]]:
    """The batches of each worker's queue (:class:`_Plan`): whole files of one
    :func:`affinity_key` go to one worker as long as its share of the estimated cost allows,
    so that each worker meets fewer of the engine's buckets. Every worker builds, fills with
    predicates and ramps up each bucket it meets (``sigma.index``); on the EVTX attack samples
    x5 (1,390 files, 41k events, all SigmaHQ) batches handed out in one order made the two
    workers meet 281 buckets between them, these queues 181 (one process: 142), and the whole
    ``--jobs 2`` hunt's CPU went from 1.78-1.87 to 1.65-1.75 s (medians of 6 alternated runs,
    twice, load 3.4-4.6). Ranges of a split file keep the one queue of :func:`_batches`, in
    dispatch order: their sizes are chosen for it."""
    if jobs == 1 or any(type(u) is FileRange for _, u in units):
        return [_batches(units, jobs)]
    cost = {i: unit_size(u) + FILE_COST for i, u in units}
    # dispatch_order's order (largest first, then by index) from the sizes known here: asking
    # each unit its size again was a fifth of this function's ~2 ms on x5 (1,390 files)
    unit = dict(units)
    order = [(i, unit[i]) for i in sorted(sorted(cost), key=cost.__getitem__, reverse=True)]
    groups: dict[str, list[int]] = {}
    for i, u in order:
        groups.setdefault(affinity_key(u), []).append(i)
    share = sum(cost.values()) / jobs
    load = [0] * jobs
    owner: dict[int, int] = {}
    for _, files in sorted(groups.items(), key=lambda kv: (-sum(map(cost.__getitem__, kv[1])), kv[0])):
        w = None
        for i in files:
            c = cost[i]
            if w is None or load[w] + c > share:  # its group's worker is full: the least loaded one
                w = load.index(min(load))
            owner[i] = w
            load[w] += c
    shares: list[list[tuple[int, Any]]] = [[] for _ in range(jobs)]
    for pair in order:
        shares[owner[pair[0]]].append(pair)
    total = sum(load) or 1
    return [_cut(mine, cost, jobs, total, jobs) for mine in shares]


class _Plan:
    """Which batch a hunting process takes next: its own queue's largest batch left, else the
    smallest batch left of the queue with most left (work stealing keeps the finish balanced).
    The parent builds it before the fork; workers inherit the batches and share only the
    queues' bounds (in shared memory, under a lock), so no list of files is pickled. The
    bounds live in an anonymous shared mapping, not a ``multiprocessing`` shared array: that
    imports ``ctypes``, ~5 ms of the parent's start-up before the fork; the lock is a
    :class:`~scmwatch.workers.FileLock` for the same reason."""

    def __init__(self, queues: list[list[list[tuple[int, Any]]]]) -> None:
        self.batches = [b for q in queues for b in q]
        bounds: list[int] = []
        for q in queues:
            start = bounds[-1] if bounds else 0
            bounds += [start, start + len(q)]
        # (head, end) of each queue in ``batches``, then how many workers joined
        self.shared = memoryview(mmap.mmap(-1, 8 * (len(bounds) + 1))).cast("q")
        for i, v in enumerate(bounds):
            self.shared[i] = v
        self.lock = FileLock()
        self.queues = len(queues)
        self.own = 0

    def join(self) -> None:
        """In a new worker: take the next queue as its own."""
        b = self.shared
        with self.lock:
            self.own = b[-1] % self.queues
            b[-1] += 1

    def own_done(self) -> bool:
        """Whether this process's own queue is taken (what is left, if anything, is stolen from
        the others' queues: their ends, so they are still hunting). Read without the lock: the
        bounds only ever close in, and a stale answer only delays the caller's choice."""
        b = self.shared
        return b[2 * self.own] >= b[2 * self.own + 1]

    def take(self) -> list[tuple[int, Any]]:
        """The next batch for this process; empty when none is left."""
        b = self.shared
        with self.lock:
            q = self.own
            if b[2 * q] < b[2 * q + 1]:
                b[2 * q] += 1
                return self.batches[b[2 * q] - 1]
            q = max(range(self.queues), key=lambda k: b[2 * k + 1] - b[2 * k])
            if b[2 * q] == b[2 * q + 1]:
                return []
            b[2 * q + 1] -= 1
            return self.batches[b[2 * q + 1]]


def run_hunt(
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
    map_units: UnitMapper = local_units,
    expand: Callable[[Sequence[str], ReadStats], Iterable[Any]] = discover,
    enrich: bool = True,
    keep: Callable[[Alert], bool] | None = None,
    split_bytes: int = SPLIT_BYTES,
    dedup: Dedup | None = None,
    correlation_caps: dict[str, int] | None = None,
    lines: bool = False,
    results: Results | None = None,
    write_lines: Callable[[bytes, int], None] | None = None,
    leftovers: list[Any] | None = None,
) -> HuntResult:
    """Hunt over ``paths`` with ``ruleset``: sorted alerts, the summary dict and readiness.

    With ``sink`` (a callable taking one :class:`Alert`) the alerts are streamed to it in order
    and never collected, so memory stays flat however many there are; without it they are
    returned in ``HuntResult.alerts``. ``jobs`` worker processes share the files
    (``expand`` turns ``paths`` into units, :func:`~scmwatch.events.read.discover` by default;
    ``map_units`` maps units to results: :func:`local_units` by default); ``min_level`` drops
    alerts below a level; ``lateness`` is the correlator's reorder window in seconds;
    ``run_size``, ``memory_budget``, ``fan_in`` and ``spill_dir`` bound memory (module
    docstring); ``engine`` reuses rules already compiled for ``ruleset``; ``enrich=False`` skips
    the derived fields (process lineage, random service names), for measuring their cost.
    ``keep`` (e.g. :class:`~scmwatch.alertfilter.AlertFilter`) sees the final alert stream, after
    correlation, so correlations still see every event; alerts it refuses are only counted
    (``alerts_filtered``). ``dedup`` (:class:`~scmwatch.dedup.Dedup`) then collapses repeated
    alerts into rows, emitted when the stream ends (``alerts`` counts rows,
    ``alerts_deduplicated`` the alerts folded into them). With more than one worker, files of
    ``split_bytes`` and more are hunted as ranges (:mod:`scmwatch.split`); the summary's
    ``parallelism`` says what was used. ``correlation_caps`` sets the correlator's state caps
    (:meth:`~scmwatch.correlate.CorrelationStage.for_ruleset`). ``lines``: the sink takes
    :class:`~scmwatch.alerts.HitLine` for a single-event alert (a JSON-lines sink of
    ``Alert.to_dict``): each hit is written as its line where it is matched, in the workers, and
    the parent only copies the lines in order (not with ``keep`` or ``dedup``, which need alerts).
    Measured on all SigmaHQ over the dev corpus x20 (23,880 alerts, ``--jobs 2``, a JSON-lines
    sink and the results summary): the parent's CPU after the last unit's result, the merge
    and the output, went from 0.39-0.40 to 0.22-0.23 s (16 to 9 us per alert; three
    interleaved pairs, load 3.0-3.3); the workers' bodies cost them ~5 us per hit.
    ``results`` (:class:`~scmwatch.results.Results`) is fed every alert emitted; with ``lines``,
    the workers tally what it and the summary's counts take of their line hits
    (:class:`~scmwatch.results.Tally`), so the parent then only merges and copies bytes.
    ``write_lines`` (with ``lines``; e.g. :meth:`~scmwatch.sinks.jsonl.JsonlSink.write_lines`)
    takes those bytes as blocks of whole lines and their count (:func:`line_blocks`) instead of
    a :class:`~scmwatch.alerts.HitLine` per alert through ``sink``; correlation alerts still go
    to ``sink``.

    ``leftovers``: a list that takes what the run leaves behind (its merge with every unit's
    result, its context with the buckets this process built, its inputs) instead of freeing it
    as this returns, for a caller whose process ends right after the hunt (the CLI's
    ``os._exit``) and so never has to free it. On the EVTX attack samples x5 (all SigmaHQ,
    ``--jobs 2``) that freeing was ~3 ms of the parent's serial tail (its CPU from the
    workers' reaping to the output's footer 3.2-4.7 -> 0.25-0.34 ms, 6 alternated runs).

    The compiled rules, indexes and pySigma objects are millions of long-lived objects: the
    cyclic GC is frozen for the run so that collections triggered by per-event allocations do
    not walk them again and again (measured: ~0.2 s per 15k alerts), and forked workers do not
    copy-on-write them by touching GC headers; and its young generation is collected only every
    ``HUNT_GC_THRESHOLD`` net allocations (restored afterwards).
    """
    spill: SpillDir | None = None
    stream: InputStream | None = None
    freeze_gc()
    thresholds = gc.get_threshold()
    gc.set_threshold(HUNT_GC_THRESHOLD, *thresholds[1:])  # forked --jobs workers inherit it
    try:
        # a Ctrl-C or SIGTERM between the directory's creation and ``spill`` would leave it behind
        with stops_deferred():
            spill = SpillDir(spill_dir)
        start = time.perf_counter()
        stats = ReadStats(on_error=on_error)
        found = expand(paths, stats)
        # a walk whose inputs arrive in waves (a cluster's workers list the directories): hunted
        # as they arrive, their problems reported after the walk's, as those of a local walk
        stream = found if isinstance(found, InputStream) else None
        inputs = stream if stream is not None else list(found)
        ctx = HuntContext(ruleset, spill, engine=engine, lateness=lateness, min_level=min_level,
                          run_size=run_size, enrich=enrich, correlation_caps=correlation_caps)
        ctx.split_bytes = split_bytes
        ctx.memory_budget = memory_budget
        if lines and keep is None and dedup is None:
            ctx.lines = HitLines()
            ctx.line_links = results is not None or write_lines is None
        jobs = max(1, jobs)
        # what a mapper that does not say otherwise used: one unit per file
        ctx.parallelism = {"jobs": min(jobs, max(1, len(inputs))), "units": len(inputs), "files_split": 0,
                           "ranges": 0, "files_reread_whole": 0}
        merge = AlertMerge(ctx, stats, memory_budget=memory_budget, fan_in=fan_in)
        ahead: list[dict[str, CompiledRule]] = []  # the rules by id, when made while waiting

        def idle() -> None:
            readiness.prepare(ruleset, ctx.min_rank, LEVEL_RANK, ctx.suppressed_ids)
            ahead.append(ruleset.by_id())

        ctx.idle = idle
        tuned_out = 0
        units = map_units(ctx, inputs, jobs, on_error)
        # closed on the way out: interrupted here, the workers are terminated before the spill dir
        # is removed (a worker still writing into it left it behind)
        closing = contextlib.closing(units) if hasattr(units, "close") else contextlib.nullcontext()
        held: list[ReadError] = []  # a stream's hunt problems while its walk goes on
        bar_of = Progress(inputs if stream is None else [], enabled=show_progress, growing=stream is not None)
        with bar_of as bar, closing:
            ctx.progress = bar.advance
            if stream is not None:
                stream.on_wave = lambda wave: bar.grow(input_size(wave))
            for r in units:
                merge.add(r)
                if on_error is not None:
                    held += r.errors
                    if stream is None or stream.done:
                        for err in held:
                            on_error(err)
                        held.clear()
                r.errors = []
                tuned_out += r.tuned_out
                if not r.progress_done:
                    for f in r.files:  # a batch's files one by one, as results of their own would
                        bar.advance(unit_bytes(inputs[f.index]), f.events)
                    if not r.files:
                        bar.advance(unit_bytes(inputs[r.index]), r.stats.events if r.stats else 0)
            ctx.progress = None
        for err in held if on_error is not None else ():
            on_error(err)
        counts = _AlertCounts()
        collected: list[Alert] = []
        emit = sink if sink is not None else collected.append
        clock = time.perf_counter
        output = 0.0  # time spent in the caller's sink: reported apart
        filtered = 0
        stream = merge.records()
        by_id = ahead[0] if ahead else ruleset.by_id()
        tally = merge.tally
        if tally is not None and results is not None and not results.absorbable(tally):
            tally = None
        if tally is not None:  # lines, so neither keep nor dedup: nothing per alert but the output
            if write_lines is not None:
                for block in line_blocks(stream, by_id, ctx.lines):
                    t0 = clock()
                    if type(block) is tuple:
                        write_lines(*block)
                    else:
                        emit(block)
                    output += clock() - t0
            else:
                for alert in alerts_from_hits(stream, by_id, ctx.lines):
                    t0 = clock()
                    emit(alert)
                    output += clock() - t0
            counts.absorb(tally)
            if results is not None:
                results.absorb(tally, checked=True)
        else:
            count = counts.add if results is None else _both(counts, results)
            for alert in alerts_from_hits(stream, by_id, ctx.lines):
                if keep is not None and not keep(alert):
                    filtered += 1
                    continue
                if dedup is not None:
                    dedup.add(alert)
                    continue
                count(alert)
                t0 = clock()
                emit(alert)
                output += clock() - t0
            for alert in dedup.alerts() if dedup is not None else ():
                count(alert)
                t0 = clock()
                emit(alert)
                output += clock() - t0
        seconds = time.perf_counter() - start - output
        summary = make_summary(stats, ruleset, counts, seconds, ctx.parallelism["jobs"])
        summary["parallelism"] = dict(ctx.parallelism)
        summary["output_seconds"] = round(output, 3)
        summary["alerts_filtered"] = filtered
        if dedup is not None:
            summary["alerts_deduplicated"] = dedup.collapsed
        if ruleset.tuned:
            summary["tune"] = {**ruleset.tuned, "matches_tuned_out": tuned_out}
        ready = readiness.compute(ruleset, merge.seen, ctx.min_rank, LEVEL_RANK,
                                  exclude_ids=ctx.suppressed_ids)
        summary["readiness"] = ready.to_dict()
        if ctx.stage is not None:
            summary["correlation"] = ctx.correlation_summary or ctx.stage.summary()
        summary["memory"] = merge.memory()
        summary["lineage"] = merge.lineage
        if leftovers is not None:
            leftovers.append((merge, ctx, inputs, units))
        return HuntResult(collected, summary, stats, stats.exit_code, ready)
    finally:
        if stream is not None:
            stream.close()  # interrupted: the listings still under way are not waited for
        # What the hunt leaves alive in the young generation (its result's alerts, hits, lineage:
        # ~38k objects after a pass of the NDJSON bench input) joins the old one unwalked: with the
        # caller's threshold back, the next allocation collected them all, 10-35 ms for no garbage
        # (~6 % of that pass's CPU, measured); the cycles among them wait for a full collection.
        gc.freeze()
        gc.set_threshold(*thresholds)
        unfreeze_gc()
        join_retired()
        if spill is not None:
            spill.cleanup()


class _AlertCounts:
    """The summary's alert counts, kept while alerts stream past (no alert list needed)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_level: dict[str, int] = {}
        self.by_rule: dict[str, int] = {}

    def add(self, a: Alert | HitLine) -> None:
        self.total += 1
        self.by_level[a.level] = self.by_level.get(a.level, 0) + 1
        self.by_rule[a.title] = self.by_rule.get(a.title, 0) + 1

    def absorb(self, tally: Tally) -> None:
        """Count the alerts of a complete tally, as :meth:`add` one by one in merge order."""
        for (_, title, level, _), (count, _) in sorted(tally.rules.items(), key=lambda kv: kv[1][1]):
            self.total += count
            self.by_level[level] = self.by_level.get(level, 0) + count
            self.by_rule[title] = self.by_rule.get(title, 0) + count


def _both(counts: _AlertCounts, results: Results) -> Callable[[Alert | HitLine], None]:
    def count(a: Alert | HitLine) -> None:
        counts.add(a)
        results.add(a)
    return count


def make_summary(stats: ReadStats, ruleset: RuleSet, counts: _AlertCounts, seconds: float,
                 jobs: int) -> dict[str, Any]:
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
        "correlations_loaded": ruleset.correlation_count,
        "jobs": jobs,
        "alerts_by_level": counts.by_level,
        "alerts_by_rule": dict(sorted(counts.by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
