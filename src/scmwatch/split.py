"""Work splitting, once for every runner: large files hunted as ranges, merged back exactly.

A runner that maps units to results (the local fork pool, the Dask cluster) wraps its mapper
with :func:`split_units`. The wrapper plans the units -- each large EVTX or NDJSON file as
:class:`~scmwatch.events.ranges.FileRange` units, everything else as one unit per file (the
runner batches small files) -- maps them, and hands ``run_hunt`` one :class:`UnitResult` per
*file*, or per batch of whole files whose statuses it lists (``UnitResult.files``: a cluster's
task), so the case store, the progress bar and the summary still see files.

Why the merged output equals the unsplit run's:

* Unit indexes follow file order and a file's ranges are consecutive, so the merge keys
  (hits: ``(..., unit, n)``, candidates: ``(time, unit, position)``) order a split file's
  records exactly as its whole-file run orders them, and relative to every other file.
* A file's candidates reach the correlator as *one* stream, its ranges chained in order: a
  k-way merge of several streams of one file would order its residual time disorder
  differently. The per-file dedup of link facts depends on every earlier event of the file,
  so ranges select facts undeduped (``CandidateSelector.select_range``) and the dedup
  (``FactDedup``) is replayed over the ranges in file order with whole-file positions.
* That replay runs in the parent *as the ranges come in* (:class:`_Replay`), between the
  ranges the parent hunts itself (``scmwatch.hunt._pool_units``): a range is replayed as soon
  as every range before it is in, its survivors written to the file's one stream, so when the
  last range arrives only that range is left to replay. Ranges are
  handed out in file order (:func:`dispatch_order`) so that they arrive nearly in order.
  Replaying after the last range instead left the parent reading ~2.7x the surviving records
  (most of them repeated address -> name facts) while both workers were already idle.
* When that file is the run's only input, its stream is the correlator's whole input (the
  k-way merge of one stream is that stream), so the parent also correlates each range as it
  is replayed, with a stage of its own: after the last range only that range and the
  correlator's end are left. If the file is hunted again whole, that stage is dropped.
* What a range cannot know exactly makes its file be hunted again as one unit: any read
  problem (so errors are reported and counted exactly as for the whole file), a process
  parent looked up past the first range (the lineage table holds the events before the
  range), or lineage facts dropped. When any unit of the run defers a process parent to the
  merge step (decided from every unit's SCM facts, which a range samples differently), every
  split file is hunted again whole. Those re-reads are counted (``files_reread_whole``).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

from scmwatch.correlate import (
    RANGE_FACT,
    Candidate,
    CandidateSelector,
    CorrelationStage,
    FactDedup,
    name_fact,
)
from scmwatch.correlate.partition import chained
from scmwatch.correlate.stream import when_us
from scmwatch.events.enrich import LineageFacts
from scmwatch.events.model import ReadError, ReadStats
from scmwatch.events.ranges import FileRange, split_file
from scmwatch.events.read import InputStream, read_input
from scmwatch.results import tally_sum
from scmwatch.spill import PROTOCOL, SortedSpiller, SpillDir, Stream, read_stream

if TYPE_CHECKING:
    from scmwatch.alerts import Alert
    from scmwatch.hunt import HuntContext, UnitResult

# Files from this size up are split when more than one worker runs. Measured per range (64
# ranges of a 206 MB EVTX file hunted one after another vs the whole file): ~4 ms, against
# ~1-3 s of hunting per 32 MiB (EVTX 10-25 MB/s, NDJSON 10-30 MB/s with the built-in pack), so
# the floor is set by balance, not by overhead: a 32 MiB file is about one second of work,
# where a directory of small files around it already keeps both workers busy.
SPLIT_BYTES = 32 << 20
# Ranges per worker for one large file: a few, so that a worker slowed by other load does not
# leave the others idle at the end, without many tasks.
RANGES_PER_JOB = 4
# ... and more for a larger file, so that no range is much over this size: the idle end of a
# split run is up to one range's hunt, and the parent replays the last range after it arrives.
# Measured on a 983 MB NDJSON file, --jobs 2, machine loaded 2-3 by other work, three
# interleaved pairs: 8 ranges of ~123 MB 18.6/14.6/18.0 s wall, 16 of ~61 MB 13.9/11.8/16.1 s,
# CPU the same; 32 ranges no faster than 16 (two pairs).
RANGE_BYTES = 64 << 20


# The last ranges shrink: one round of ``workers`` ranges is cut into rounds of 1/2, 1/4, 1/8
# ... of a range (and a second 1/8 round), down to TAIL_BYTES, so that the workers end within
# a small range of each other and the parent's replay of the last range is short. Measured on
# 1 GB NDJSON, --jobs 2: 16 equal ranges (tasks of one or two) left one worker alone for the
# last 1.3 of 8.9 s; with the tail (22 ranges, each a task) the two ended 0.03-0.07 s apart.
TAIL_BYTES = 4 << 20


def range_count(size: int | None, workers: int) -> int:
    """How many ranges of the body a file of ``size`` bytes is split into for ``workers``
    workers (before :func:`range_weights` cuts the last round smaller)."""
    per_job = -(-(size or 0) // (RANGE_BYTES * workers))
    return workers * max(RANGES_PER_JOB, per_job)


def range_weights(size: int | None, workers: int) -> list[int]:
    """The relative sizes of the ranges a file of ``size`` bytes is split into, in file order:
    :func:`range_count` equal ranges, the last ``workers`` of them cut into a shrinking tail
    (TAIL_BYTES)."""
    count = range_count(size, workers)
    one = (size or 0) // count  # bytes per range of the body
    halvings = 0
    while halvings < 3 and one >> (halvings + 1) >= TAIL_BYTES:
        halvings += 1
    if not halvings:
        return [1] * count
    unit = 1 << halvings  # a body range, in the smallest tail range's size
    tail = [unit >> h for h in range(1, halvings + 1)] + [1]
    return [unit] * (count - workers) + [w for w in tail for _ in range(workers)]

Report = Callable[[ReadError], None] | None
# A runner's mapper over (unit index, unit) pairs, results in any order, ``r.index`` = unit index.
PairMapper = Callable[["HuntContext", list[tuple[int, Any]], int, Report], Iterator["UnitResult"]]


class Waves:
    """(unit index, unit) pairs in waves, for a runner that starts each wave's units as it
    arrives (``split_units(waves=True)``): ``expected`` waves or so in all."""

    def __init__(self, waves: Iterable[list[tuple[int, Any]]], expected: int = 1) -> None:
        self._waves = waves
        self.expected = max(1, expected)

    def __iter__(self) -> Iterator[list[tuple[int, Any]]]:
        return iter(self._waves)


def split_units(pairs: PairMapper, workers: Callable[[], int] | None = None,
                waves: bool = False) -> Callable[..., Iterator[UnitResult]]:
    """A ``run_hunt(map_units=...)`` that splits large files and runs every unit with ``pairs``.

    ``workers`` tells how many units run at once (a cluster's worker count); by default the
    ``jobs`` that ``run_hunt`` passes. Splitting needs more than one and the default reader
    (``--keep-events`` reads whole files through the event keeper). With ``waves``, ``pairs``
    takes :class:`Waves` instead of a list: the units of each wave of an
    :class:`~scmwatch.events.read.InputStream` as it arrives (a walk still under way), so that
    they are hunted while the walk goes on; their indexes are those of the whole walk."""

    def mapper(ctx: HuntContext, inputs: Any, jobs: int, report: Report) -> Iterator[UnitResult]:
        start = time.perf_counter()
        n = workers() if workers is not None else jobs
        can_split = n > 1 and ctx.read is read_input
        streamed = waves and isinstance(inputs, InputStream)
        if not streamed:
            inputs = list(inputs)
        units: list[Any] = []
        file_of: list[int] = []
        first: dict[int, int] = {}
        ranges: dict[int, int] = {}
        replays: dict[int, _Replay] = {}
        planned: list[Any] = []  # the inputs planned so far (a stream's, as they arrive)
        # the run's one input split: its candidates are correlated as they come in (docstring);
        # a stream's inputs are not known in advance, so not then
        early = (not streamed and len(inputs) == 1 and ctx.stage is not None and ctx.correlate_at is None)
        ctx.parallelism = {"jobs": n, "units": 0, "files_split": 0, "ranges": 0, "files_reread_whole": 0}

        def plan(wave: list[Any]) -> list[tuple[int, Any]]:
            """The (unit index, unit) pairs of a wave of inputs, large files as ranges."""
            out: list[tuple[int, Any]] = []
            for fi, inp in enumerate(wave, len(planned)):
                parts = None
                # a file known to be smaller is not split (split_file's own first test): its
                # weights and the call skipped, ~1 ms of the parent's start on x5's 1,390 files
                if can_split and (inp.size is None or inp.size >= ctx.split_bytes):
                    weights = range_weights(inp.size, n)
                    parts = split_file(inp, len(weights), ctx.split_bytes, weights)
                first[fi] = len(units)
                if parts:
                    ranges[fi] = len(parts)
                    replays[fi] = _Replay(ctx, fi, len(parts), early)
                    out.extend(zip(range(len(units), len(units) + len(parts)), parts, strict=True))
                    units.extend(parts)
                    file_of.extend([fi] * len(parts))
                else:
                    out.append((len(units), inp))
                    units.append(inp)
                    file_of.append(fi)
            planned.extend(wave)
            ctx.parallelism.update(jobs=max(1, min(n, len(units))), units=len(units), files_split=len(ranges),
                                   ranges=sum(ranges.values()))
            return out

        def stream_waves() -> Iterator[list[tuple[int, Any]]]:
            while (wave := inputs.next_wave()) is not None:
                yield plan(wave)

        if streamed:
            first_pass = pairs(ctx, Waves(stream_waves(), inputs.expected), n, report)
        else:
            units_of = plan(inputs)
            used = ctx.parallelism["jobs"]
            first_pass = pairs(ctx, Waves([units_of]) if waves else units_of, used, report)
        done: dict[int, UnitResult] = {}
        redo: list[int] = []
        deferred = [False]  # did any unit defer a process parent to the merge step
        arrived: list[float] = []  # when each range's result came in
        with contextlib.closing(first_pass):  # closed at once when the hunt is interrupted
            yield from _gathered(ctx, first_pass, units, file_of, replays, done, redo, deferred, arrived)
        if arrived:
            ctx.parallelism["ranges_timeline"] = timeline(start, arrived)
        if deferred[0]:
            redo.extend(done)
            done.clear()
        yield from done.values()
        if redo:
            ctx.parallelism["files_reread_whole"] = len(redo)
            whole = [(first[fi], planned[fi]) for fi in sorted(redo)]
            again = pairs(ctx, Waves([whole]) if waves else whole, max(1, min(n, len(whole))), report)
            with contextlib.closing(again):
                for r in again:
                    _by_file(r, file_of)
                    r.progress_done = True
                    yield r

    return mapper


def _gathered(ctx: HuntContext, results: Iterator[UnitResult], units: list[Any], file_of: list[int],
              replays: dict[int, _Replay], done: dict[int, UnitResult], redo: list[int],
              deferred: list[bool], arrived: list[float]) -> Iterator[UnitResult]:
    """Pass whole files' results on (indexed by file); replay each split file's ranges as they
    come in, in file order (``replays``: by file, each with its stage when the ranges are
    correlated as they come in), and when all are in combine them (``done``) or mark the file
    to be hunted again whole (``redo``); note when each range came in (``arrived``)."""
    clock = time.perf_counter
    for r in results:
        if type(r) is Handed:
            r = r.result()
        fi = file_of[r.index]
        deferred[0] = deferred[0] or bool(r.deferred)
        if fi not in replays:  # a whole file, or a batch of them
            _by_file(r, file_of)
            yield r
            continue
        arrived.append(clock())
        if ctx.progress is not None:
            ctx.progress(units[r.index].nbytes, r.stats.events if r.stats else 0)
        rep = replays[fi]
        rep.add(units[r.index].part, r)
        if rep.complete():
            del replays[fi]
            merged = rep.combine(fi)
            if merged is None:
                redo.append(fi)
            else:
                done[fi] = merged


def timeline(start: float, arrived: list[float]) -> dict[str, float]:
    """When the ranges' results came in, in seconds from the plan (the summary's
    ``parallelism.ranges_timeline``, which bench/split_throughput.py prints): the first and the
    last, and the last one's lead over the one before it (with two workers, how long one of
    them had no range left while the other finished its last)."""
    return {"first_result": round(arrived[0] - start, 3), "last_result": round(arrived[-1] - start, 3),
            "last_lead": round(arrived[-1] - arrived[-2], 3) if len(arrived) > 1 else 0.0}


class Handed(NamedTuple):
    """A range's result as a pool worker hands it over (:func:`hand_over`): pickled into a
    spill file, only its path through the pool's result pipe.

    The pool's worker-handler thread waits for the result pipe to be readable (besides its
    workers' exits), so while a large message is still being read it wakes up again and again:
    a range's result, ~1 MB of link events and hits per 45 MB of NDJSON, cost the parent
    that thread's spinning beside the result thread's unpickling (1 GB of NDJSON: 0.10 and
    0.13 s of CPU), taken from two workers on two cores."""

    index: int
    path: str

    def result(self) -> UnitResult:
        with open(self.path, "rb") as fh:
            r = pickle.load(fh)
        os.remove(self.path)
        return r


def hand_over(spill: SpillDir, r: UnitResult) -> Handed:
    """A pool worker's range result, written for the parent to read (:class:`Handed`)."""
    path = spill.new_path("range")
    with open(path, "wb") as fh:
        pickle.dump(r, fh, PROTOCOL)
    return Handed(r.index, path)


def _by_file(r: UnitResult, file_of: list[int]) -> None:
    """Index a result of whole files (one, or a batch's) by file instead of by unit."""
    r.index = file_of[r.index]
    if r.files:
        r.files = [f._replace(index=file_of[f.index]) for f in r.files]


def _stands(r: UnitResult, part: int) -> bool:
    """Can this range's result stand for its part of the whole-file read (module docstring)?"""
    st = r.stats
    if st is None or st.errors or st.files_failed or r.errors or r.deferred or r.deferred_overflow:
        return False
    return not (r.lineage.dropped or (part and r.lookups))


class _Replay:
    """One split file while its ranges come in: the per-file fact dedup replayed over each range
    as soon as every range before it is in.

    A range hands in its link events apart (``UnitResult.links``: position, time, raw values,
    fact, keyed, column by column), so the replay reads those small records only: the link
    events that matched no rule and survive become candidate records (``survivors``), and for
    the others, which are in the range's candidate stream with their event, the replay notes
    the fact to keep (``decisions``). The file's candidate stream is then the ranges' streams
    chained, the decisions applied, merged by (unit, position) with the survivors
    (:meth:`stream`): file order, and exactly the unsplit file's records.

    With ``early`` (the run's only input), each range's stream goes through a correlation stage
    of the file's own right after its replay, and the result carries the alerts it decided
    (``UnitResult.correlated``) instead of a candidate stream.

    The ranges' short in-memory hit runs (``hit_tail``) are gathered as the ranges come in
    (``hits``), sorted runs of ``run_size`` written while the workers still hunt, the rest left
    to the merge's memory budget: writing each range's tail as a file of its own when the
    last range was in cost the parent 14 ms of serial time on 1 GB of EVTX (22 ranges, 2,852
    hits), and the merge opened 22 files instead of one.

    Ranges whose candidates stay where they were selected (``cand_ref``: a cluster correlating
    in partitions) are replayed there instead (:func:`replayed`)."""

    def __init__(self, ctx: HuntContext, index: int, parts: int, early: bool = False) -> None:
        self.ctx = ctx
        self.index = index
        self.parts: list[UnitResult | None] = [None] * parts
        self.next = 0  # the first range not replayed yet
        self.offset = 0  # events of the file before it
        self.ok = True  # every range replayed so far can stand
        self.dedup = FactDedup()
        self.survivors = Stream(ctx.spill, f"facts{index}", ctx.run_size)
        self.decisions = Stream(ctx.spill, f"decided{index}", ctx.run_size)
        self.stage = (CorrelationStage.for_ruleset(ctx.ruleset, lateness=ctx.lateness, **ctx.caps) if early
                      else None)
        self.decided = Stream(ctx.spill, f"corr{index}", ctx.run_size)  # alerts the stage decided
        self.fed = 0  # candidate records the stage took
        self.peak = 0
        self.hits = SortedSpiller(ctx.spill, "hits", _KEY, ctx.run_size)

    def add(self, part: int, r: UnitResult) -> None:
        self.parts[part] = r
        if self.ok:
            self.hits.extend(r.hit_tail)
            r.hit_tail = []
        while self.ok and self.next < len(self.parts):
            got = self.parts[self.next]
            if got is None:
                return
            if not _stands(got, self.next):
                self.ok = False  # the file is hunted again whole: nothing more to replay
                return
            if got.cand_ref is None and not self._replay(got):
                self.ok = False  # a link fact kept without a usable time: reported by the whole read
                return
            assert got.stats is not None
            self.offset += got.stats.events
            self.next += 1

    def _replay(self, r: UnitResult) -> bool:
        """Replay the fact dedup over one range's link events (False: the range cannot stand).

        Inline rather than through :meth:`FactDedup.decide`, and an event's time parsed only
        when its fact is kept (:func:`~scmwatch.correlate.stream.when_us`): most link events
        repeat raw values seen just before and are dropped on their position alone."""
        dedup, offset, unit = self.dedup, self.offset, r.index
        raw_fresh, fresh = dedup.raw_fresh, dedup.fresh
        raw_refresh, fact_refresh = CandidateSelector.RAW_REFRESH, CandidateSelector.FACT_REFRESH_US
        survivors, decisions = self.survivors, self.decisions
        if self.stage is not None:  # this range's only, correlated right after
            survivors = Stream(self.ctx.spill, f"facts{self.index}", self.ctx.run_size)
            decisions = Stream(self.ctx.spill, f"decided{self.index}", self.ctx.run_size)
        keep, decided = survivors.add, decisions.add
        links = r.links
        timed = True
        if links is not None:
            raws, facts, rest = links.raws, links.facts, links.rest
            parse = self.ctx.selector.key_fact if self.ctx.selector is not None else name_fact
            columns = (links.pos, links.when, links.raw, links.fact, links.keyed)
            for pos, when, ri, fi, keyed in zip(*columns, strict=True):
                raw = raws[ri]
                if raw is not None and not raw_fresh(raw, offset + pos, raw_refresh):
                    fact = None
                else:
                    fact = facts[fi] if fi >= 0 else parse(raw + rest[~fi])
                    if fact is not None:
                        t = when if when.__class__ is int else when_us(when)
                        timed = timed and t > 0
                        fact = fresh(fact, t, fact_refresh)
                if keyed:
                    decided(fact)
                elif fact is not None:
                    keep((t, unit, pos, (), fact, None))
        r.links = None
        if not timed:
            return False
        if self.stage is not None:
            self._correlate(r, survivors, decisions)
        return True

    def _correlate(self, r: UnitResult, survivors: Stream, decisions: Stream) -> None:
        """Push one replayed range's candidate records through the file's correlation stage."""
        kept = [s for s in survivors.finish() if s]
        decided = [s for s in decisions.finish() if s]
        events = [s for s in (*r.cand_runs, r.cand_mem) if s]
        assert self.stage is not None
        push, add = self.stage.correlator.push, self.decided.add
        for cand in map(Candidate.from_record, _file_stream(events, decided, kept)):
            for alert in push(cand):
                add(alert)
        self.fed += r.candidates + survivors.count
        self.peak = max(self.peak, survivors.peak, decisions.peak)
        for path in (*r.cand_runs, *kept, *decided):
            if isinstance(path, str):
                with contextlib.suppress(OSError):
                    os.remove(path)
        r.cand_runs = []
        r.cand_mem = []

    def _alerts(self) -> Iterator[Alert]:
        """Every correlation alert of the file: those decided as its ranges came in, then the
        correlator's end; the stage's summary becomes the hunt's."""
        assert self.stage is not None
        yield from _records([s for s in self.decided.finish() if s])
        yield from self.stage.correlator.finish()
        self.ctx.correlation_summary = self.stage.summary()

    def complete(self) -> bool:
        return all(r is not None for r in self.parts)

    def combine(self, index: int) -> UnitResult | None:
        """The file's result from its ranges', or None when a range cannot stand for its part
        of the whole-file read (module docstring)."""
        if not self.ok:
            return None
        parts = [r for r in self.parts if r is not None]
        out = combine(index, parts)
        runs, out.hit_tail = self.hits.finish()
        out.hit_runs += runs
        out.hits_peak = max(out.hits_peak, self.hits.peak)
        if out.cand_ref is not None:  # replayed where the candidates are (module docstring)
            return out
        if self.stage is not None:
            out.correlated = self._alerts
            out.candidates = self.fed
            out.cands_peak = max(out.cands_peak, self.peak)
        else:
            events: list[str | list[tuple]] = [s for r in parts for s in (*r.cand_runs, r.cand_mem) if s]
            survivors = [s for s in self.survivors.finish() if s]
            decisions = [s for s in self.decisions.finish() if s]
            out.cand_stream = lambda: _file_stream(events, decisions, survivors)
            out.candidates = sum(r.candidates for r in parts) + self.survivors.count
            out.cands_peak = max(out.cands_peak, self.survivors.peak, self.decisions.peak)
        return out


def _records(sources: list[str | list[Any]]) -> Iterator[Any]:
    for src in sources:
        yield from read_stream(src) if isinstance(src, str) else src


def _file_stream(events: list[str | list[tuple]], decisions: list[str | list[tuple]],
                 survivors: list[str | list[tuple]]) -> Iterator[tuple]:
    """A split file's candidate records in file order (:class:`_Replay`): its ranges' records
    chained, each link event among them given the fact the replay decided, merged with the
    surviving link facts by (range unit, position)."""
    decided = _records(decisions)

    def applied() -> Iterator[tuple]:
        for rec in _records(events):
            if rec[4] is not None:  # a link event that matched a rule: (RANGE_FACT, raw, fact)
                rec = (*rec[:4], next(decided), *rec[5:])
            yield rec

    return heapq.merge(applied(), _records(survivors), key=_UNIT_POSITION)


_UNIT_POSITION = itemgetter(1, 2)
_KEY = itemgetter(0)  # a hit record's sort key (scmwatch.hunt.Hit)


def combine(index: int, parts: list[UnitResult]) -> UnitResult:
    """One file's result from its ranges' (in file order, every one able to stand for its part):
    hit runs, stats, lineage facts and counts; its candidates and the ranges' in-memory hit
    runs are the caller's (:class:`_Replay`), but for ranges that keep their candidates where
    they were selected (``cand_ref``), chained here."""
    stats = ReadStats()
    lineage = LineageFacts()
    out = replace(parts[0], index=index, hit_runs=[], hit_tail=[], cand_runs=[], cand_mem=[], cand_ref=None,
                  hits=0, candidates=0, stats=stats, fmt=None, seconds=0.0, seen=set(), errors=[],
                  lineage=lineage, derived=0, tuned_out=0, parts=len(parts), progress_done=True, lookups=0)
    offset = 0
    for r in parts:
        out.hit_runs += r.hit_runs
        if r.cand_ref is not None:  # kept by the runner (see HuntContext.correlate_at): chained there
            out.cand_ref = (out.cand_ref or []) + [(r.cand_ref, offset)]
            out.candidates += r.candidates
        out.hits += r.hits
        out.hits_peak = max(out.hits_peak, r.hits_peak)
        out.cands_peak = max(out.cands_peak, r.cands_peak)
        assert r.stats is not None
        r.stats.on_error = None
        stats.merge(r.stats)
        out.fmt = r.fmt or out.fmt
        out.seconds += r.seconds
        out.seen |= r.seen
        lineage.scm |= r.lineage.scm
        lineage.boots |= r.lineage.boots
        out.derived += r.derived
        out.tuned_out += r.tuned_out
        offset += r.stats.events
    out.order = chained(r.order for r in parts)
    out.tally = tally_sum(r.tally for r in parts)
    return out


def replayed(chain: list[tuple[str | list[tuple], int]], dropped: list[int]) -> Iterator[tuple]:
    """A split file's candidate records as one stream, where they were kept (a cluster's
    partition): its ranges' streams (spill files or lists) in file order, the per-file fact
    dedup replayed with whole-file positions (range offset + position in range). Records the
    dedup removes are counted in ``dropped[0]``, but for the copies a partition that learns
    links gets of other partitions' candidates for their facts (keys None:
    ``correlate.partition.Router``), which are no candidates of their own."""
    dedup = FactDedup()
    for path, offset in chain:
        records: Iterable[tuple] = read_stream(path) if isinstance(path, str) else path
        for rec in records:
            out = dedup.replay(rec, offset + rec[2])
            if out is None:
                dropped[0] += rec[3] is not None
            else:
                yield out


def inline_links(r: UnitResult) -> None:
    """A range's link events put back among its candidate records (in memory, in range order),
    as :func:`replayed` takes them: for a runner that replays where the candidates are kept."""
    if not r.links:
        r.links = None
        return
    alone = [(t, r.index, pos, (), (RANGE_FACT, raw, fact), None)
             for pos, t, raw, fact, keyed in r.links.rows() if not keyed]
    r.cand_mem = list(heapq.merge(r.cand_mem, alone, key=_UNIT_POSITION))
    r.candidates += len(alone)
    r.links = None


def dispatch_order(units: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """(index, unit) pairs in the order to hand them out: largest files first, so that one big
    file does not finish last alone, and a split file's ranges in file order, so that the
    parent can replay each as it arrives (:class:`_Replay`)."""
    def key(pair: tuple[int, Any]) -> tuple[int, int]:
        unit = pair[1]
        size = (unit.inp.compressed_size() or 0) if isinstance(unit, FileRange) else unit_size(unit)
        return (-size, pair[0])

    return sorted(units, key=key)


def unit_size(unit: Any) -> int:
    """Bytes behind a unit (a range's share, a file's size): for batching and progress."""
    if isinstance(unit, FileRange):
        return unit.nbytes
    if unit.size is not None and unit.member is None:
        return unit.size
    return unit.compressed_size() or 0
