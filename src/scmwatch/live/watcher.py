"""The watch loop: the third runner on the hunt seam (docs/architecture.md).

Every batch a source yields is one unit: ``hunt_unit(ctx, source id, batch, read=read_batch,
enricher=the source's, first=its first event's position)`` reads, enriches and matches it
exactly as a hunt does. Its hits become alerts at once (:func:`scmwatch.hunt.alerts_from_hits`).
Its correlation candidates go through :class:`WatermarkMerge` into the correlator's ``push``
(:class:`scmwatch.correlate.Correlator`), the streaming form of what ``AlertMerge`` does at
the end of a hunt: the merge releases candidates in ``(time, source, position)`` order up to
the watermark, the newest event time that every *active* source has reached, so a source that
lags behind (catching up after a restart, a slow shipper) does not make the others' events
late; the correlator's reorder buffer (``--lateness``) repairs what disorder remains inside a
source. A source that has had no new data for ``--idle-timeout`` seconds stops holding the
watermark back; when every source is idle, everything held (here and in the reorder buffer)
is released, so alerts are not held back by a quiet network either. Events that arrive later
than that are counted as late, not correlated.

Process lineage (``events.enrich``): each source keeps its own enricher across batches, so a
parent process is found wherever the batch boundaries fall; what one source cannot resolve is
held until the watermark passes its time, then decided against every source's Service Control
Manager facts seen so far (the merge step of a hunt sees all of them, including later ones).
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from scmwatch.alerts import LEVEL_RANK, Alert, alert_id, evidence_of
from scmwatch.correlate import Candidate
from scmwatch.events.enrich import Enricher, LineageFacts
from scmwatch.events.lineage import SERVICES_EXE, Fact, LineageTable
from scmwatch.events.model import ReadError, ReadStats
from scmwatch.hunt import HuntContext, alerts_from_hits, hunt_unit
from scmwatch.live.checkpoint import StateDir
from scmwatch.live.deliver import Deliveries
from scmwatch.live.sources import Batch, FileFollower, Sources, read_batch
from scmwatch.spill import read_stream

# Candidates the watermark merge holds at most (a lagging source that is not idle): beyond it
# the oldest is released early and counted, as the correlator's reorder buffer does.
MAX_HELD = 50_000
# Process creations held for the watermark at most (beyond it the oldest is decided early).
MAX_DEFERRED = 20_000
_HIT_KEY = itemgetter(0)  # hunt.Hit: its sort key
_CAND_KEY = itemgetter(0, 1, 2)  # candidate records: (time_us, source, position)
# Lines of one kind of read problem shown per source (the counts stay exact).
MAX_ERROR_LINES = 5
# Alert ids are remembered this long (event time) behind the watermark, besides the
# correlations' own windows and the lateness: a replay cannot produce older alerts again.
ID_RETENTION = 3600.0


class WatermarkMerge:
    """Candidates of all sources, released in ``(time, source, position)`` order up to the
    watermark (the smallest newest-event-time over the active sources)."""

    def __init__(self, max_held: int = MAX_HELD) -> None:
        self.heap: list[tuple] = []
        self.max_held = max_held
        self.overflow = 0
        self.peak = 0

    def add(self, records: list[tuple]) -> None:
        for rec in records:
            heapq.heappush(self.heap, rec[:3] + (rec,))
        if len(self.heap) > self.peak:
            self.peak = len(self.heap)

    def release(self, watermark: float) -> list[tuple]:
        """Candidate records at or before ``watermark`` (µs), plus the oldest beyond the cap."""
        heap = self.heap
        out = []
        while heap and heap[0][0] <= watermark:
            out.append(heapq.heappop(heap)[3])
        while len(heap) > self.max_held:
            out.append(heapq.heappop(heap)[3])
            self.overflow += 1
        return out

    def __len__(self) -> int:
        return len(self.heap)


class Watcher:
    """Follow ``sources``, match and correlate, deliver alerts, checkpoint into ``state``.

    ``run()`` loops until :meth:`stop` (a signal handler calls it), until stdin ends when it is
    the only source, or until every source has been quiet for ``exit_idle`` seconds; then it
    checkpoints and returns. :meth:`metrics` may be called from another thread at any time.
    """

    def __init__(self, ctx: HuntContext, sources: Sources, state: StateDir, deliveries: Deliveries, *,
                 rules_digest: str, keep: Callable[[Alert], bool] | None = None,
                 checkpoint_interval: float = 5.0, idle_timeout: float = 30.0, exit_idle: float | None = None,
                 poll_interval: float = 0.2, status: Callable[[str], None] | None = None,
                 status_interval: float = 10.0, on_error: Callable[[ReadError], None] | None = None) -> None:
        self.ctx = ctx
        self.sources = sources
        self.state = state
        self.deliveries = deliveries
        self.rules_digest = rules_digest
        self.keep = keep
        self.checkpoint_interval = checkpoint_interval
        self.idle_timeout = idle_timeout
        self.exit_idle = exit_idle
        self.poll_interval = poll_interval
        self.status = status
        self.status_interval = status_interval
        self.on_error = on_error
        self.by_id = ctx.ruleset.by_id()
        self.correlator = ctx.stage.correlator if ctx.stage is not None else None
        self.merge = WatermarkMerge()
        # process creations whose parent no source could tell yet: (time, seq, hunt.Deferred)
        self.deferred: list[tuple] = []
        self._seq = 0
        self.enrichers: dict[int, Enricher] = {}
        self.lineage = LineageTable(max_pids=1 << 20)
        self.generations: dict[str, int] = {}  # source name -> rotation generation (alert identity)
        self.newest: dict[int, float] = {}  # source id -> newest event time read
        self.counts: dict[str, int] = {"events": 0, "batches": 0, "alerts": 0, "filtered": 0,
                                       "checkpoints": 0, "flushes": 0, "whole_files": 0}
        self.stats = ReadStats()
        self._lines: dict[tuple[str, str], int] = {}
        self._stop = False
        self._flushed = False  # everything held was released for idleness, nothing new since
        self._started = time.monotonic()
        self._rate: list[tuple[float, int]] = []  # (monotonic time, events) samples for events/s
        span = max((s.timespan_us for s in ctx.stage.specs), default=0) if ctx.stage is not None else 0
        self._retention = ctx.stage.correlator.buffer.lateness_us / 1e6 + 2 * span / 1e6 + ID_RETENTION \
            if ctx.stage is not None else ID_RETENTION

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Resume from the state directory's checkpoint (or start fresh) and write the first
        checkpoint at once, so every later restart has one."""
        saved = self.state.load()
        if saved is not None and saved.get("rules") != self.rules_digest:
            from scmwatch.live.checkpoint import StateError

            raise StateError(f"{self.state.path}: the checkpoint was written with other rules or options "
                             "(--rules, --lateness, --min-level); use another --state to start over")
        if saved is not None:
            if self.correlator is not None and saved.get("correlator") is not None:
                self.correlator = saved["correlator"]
            self.merge = saved.get("merge") or self.merge
            self.deferred = saved.get("deferred", [])
            self._seq = saved.get("deferred_seq", 0)
            self.enrichers = saved.get("enrichers", {})
            self.lineage = saved.get("lineage") or self.lineage
            self.generations = saved.get("generations", {})
            self.newest = saved.get("newest", {})
            self.counts.update(saved.get("counts", {}))
        self.sources.start(saved.get("sources") if saved else None)
        for src in self.sources.all():
            src.newest = self.newest.get(src.pos.sid, 0.0)
        self.deliveries.start(saved)
        self.checkpoint()

    def stop(self) -> None:
        """Ask the loop to end after the current batch (safe from a signal handler)."""
        self._stop = True

    def run(self) -> None:
        last_ckpt = last_status = time.monotonic()
        quiet_since = time.monotonic()
        while not self._stop:
            got = self.sources.poll()
            self._notes()
            now = time.monotonic()
            if got is not None:
                self._process(*got)
                quiet_since = now
                self._flushed = False
            else:
                self._advance(now)
                idle_exit = self.exit_idle is not None and now - quiet_since >= self.exit_idle
                if idle_exit or self._input_ended():
                    self.finish()
                    break
                time.sleep(self.poll_interval)
            now = time.monotonic()
            if now - last_ckpt >= self.checkpoint_interval:
                self.checkpoint()
                last_ckpt = now
            if self.status is not None and now - last_status >= self.status_interval:
                self.status(self.status_line())
                last_status = now
        self.checkpoint()

    def _input_ended(self) -> bool:
        """Only stdin was named and it has ended: the end of input, as for a hunt."""
        src = self.sources
        return src.stdin is not None and src.stdin.done and not src.followers and not src.dirs

    def finish(self) -> None:
        """End of input: release everything held and close every correlation window."""
        self._resolve(float("inf"))
        if self.correlator is not None:
            for rec in self.merge.release(float("inf")):
                self._correlate(rec)
            for a in self.correlator.finish():
                self._emit_correlation(a)

    # -- one batch -------------------------------------------------------------------------------

    def _process(self, src: Any, batch: Batch) -> None:
        pos = batch.pos
        sid = pos.sid
        enricher = self.enrichers.get(sid)
        if enricher is None:
            enricher = self.enrichers[sid] = Enricher()
        self.generations[pos.name] = pos.generation
        r = hunt_unit(self.ctx, sid, batch, read=read_batch, on_error=self._report, enricher=enricher,
                      first=batch.first_event)
        stats = r.stats
        events = stats.events if stats is not None else 0
        if stats is not None:
            stats.on_error = None
            self.stats.merge(stats)
        self.counts["events"] += events
        self.counts["batches"] += 1
        if batch.whole is not None:
            self.counts["whole_files"] += 1
        src.commit(batch, events)
        if batch.last_time:
            self.newest[sid] = max(self.newest.get(sid, 0.0), batch.last_time)
        # process lineage: this unit's SCM facts join the table every source's deferred use
        self._learn(r.lineage)
        enricher.facts = LineageFacts()
        hits = list(r.hit_tail)
        for p in r.hit_runs:
            hits.extend(read_stream(p))
            os.unlink(p)
        cands = []
        for p in r.cand_runs:
            cands.extend(read_stream(p))
            os.unlink(p)
        cands.extend(r.cand_mem)
        for d in r.deferred:
            self._seq += 1
            heapq.heappush(self.deferred, (d.time, self._seq, d))
        hits.sort(key=_HIT_KEY)
        for alert in alerts_from_hits(hits, self.by_id):
            self._emit(alert)
        if self.correlator is not None and cands:
            cands.sort(key=_CAND_KEY)
            self.merge.add(cands)
        if batch.whole is not None and isinstance(src, FileFollower):
            self.enrichers.pop(sid, None)  # a whole file is read once: its lineage is complete
        self._release()

    def _learn(self, facts: LineageFacts) -> None:
        for host, t in facts.boots:
            self.lineage.add_boot(host, t)
        for host, pid, t in facts.scm:
            self.lineage.add(Fact(host, pid, SERVICES_EXE, t, scm=True))

    # -- time ------------------------------------------------------------------------------------

    def watermark(self, now: float | None = None) -> float:
        """The event time (µs) every active source has reached; +inf when none is active."""
        now = time.monotonic() if now is None else now
        marks = []
        for src in self.sources.all():
            t = src.newest
            if not t:
                if src.pending():
                    return float("-inf")  # not read yet: its first events may be the oldest
                continue  # no event yet: nothing to hold back
            if src.pending() or now - src.last_data < self.idle_timeout:
                marks.append(t)
        return min(marks) * 1e6 if marks else float("inf")

    def _release(self) -> None:
        mark = self.watermark()
        self._resolve(mark)
        if self.correlator is None:
            return
        for rec in self.merge.release(mark):
            self._correlate(rec)

    def _resolve(self, mark: float) -> None:
        """Decide the deferred process creations the watermark (µs) has passed: by then every
        source has given its Service Control Manager facts up to their time."""
        held = self.deferred
        hits: list = []
        cands: list[tuple] = []
        while held and (held[0][0] * 1e6 <= mark or len(held) > MAX_DEFERRED):
            d = heapq.heappop(held)[2]
            d.decide(self.lineage.image(d.host, d.pid, d.time) == SERVICES_EXE, hits, cands)
        hits.sort(key=_HIT_KEY)
        for alert in alerts_from_hits(hits, self.by_id):
            self._emit(alert)
        if cands and self.correlator is not None:
            cands.sort(key=_CAND_KEY)
            self.merge.add(cands)

    def _advance(self, now: float) -> None:
        """Nothing to read: release what the watermark allows; when every source is idle,
        release everything held, the reorder buffer's too (once per quiet period)."""
        if self.correlator is None:
            self._resolve(self.watermark(now))
            return
        mark = self.watermark(now)
        self._resolve(mark)
        for rec in self.merge.release(mark):
            self._correlate(rec)
        if mark == float("inf") and not self._flushed and len(self.correlator.buffer):
            self._flushed = True
            self.counts["flushes"] += 1
            for a in self.correlator.flush():
                self._emit_correlation(a)

    def _correlate(self, rec: tuple) -> None:
        for a in self.correlator.push(Candidate.from_record(rec)):
            self._emit_correlation(a)

    # -- alerts ----------------------------------------------------------------------------------

    def _emit_correlation(self, alert: Alert) -> None:
        if LEVEL_RANK.get(alert.level, 0) >= self.ctx.min_rank:
            self._emit(alert)

    def _emit(self, alert: Alert) -> None:
        if self.keep is not None and not self.keep(alert):
            self.counts["filtered"] += 1
            return
        aid = alert_id(alert, evidence_of(alert), self.identity)
        if self.deliveries.emit(aid, alert):
            self.counts["alerts"] += 1

    def identity(self, source: str) -> str:
        """A source's part of an alert id: its name, and the rotation generation after the
        first (line numbers start again in a rotated file)."""
        gen = self.generations.get(source, 0)
        return source if not gen else f"{source}\x00{gen}"

    # -- checkpoint ------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Targets durable first, then the state that says they are: a crash in between makes
        the replay deliver again what the targets then report as held (deliver.py)."""
        live = [t for sid, t in self.newest.items() if t]
        horizon = (min(live) - self._retention) if live else 0.0
        delivered = self.deliveries.sync(horizon)
        positions = self.sources.positions()
        active = {p["sid"] for p in positions["positions"] if not p["done"]}
        self.enrichers = {sid: e for sid, e in self.enrichers.items() if sid in active}
        self.newest = {sid: t for sid, t in self.newest.items() if sid in active}
        self.counts["checkpoints"] += 1
        self.state.save({
            "rules": self.rules_digest,
            "sources": positions,
            "correlator": self.correlator,
            "merge": self.merge,
            "deferred": self.deferred,
            "deferred_seq": self._seq,
            "enrichers": self.enrichers,
            "lineage": self.lineage,
            "generations": self.generations,
            "newest": self.newest,
            "counts": self.counts,
            **delivered,
        })

    # -- reporting -------------------------------------------------------------------------------

    def _report(self, err: ReadError) -> None:
        key = (err.source, err.kind)
        n = self._lines[key] = self._lines.get(key, 0) + 1
        if self.on_error is not None and n <= MAX_ERROR_LINES:
            self.on_error(err)

    def _notes(self) -> None:
        notes = self.sources.notes
        if notes and self.status is not None:
            for line in notes:
                self.status(line)
        notes.clear()
        for t in self.deliveries.targets:
            extra = getattr(t, "notes", None)
            if extra and self.status is not None:
                for line in extra:
                    self.status(line)
                extra.clear()

    def metrics(self) -> dict[str, Any]:
        """A snapshot for a status line or a metrics endpoint (JSON-able; any thread)."""
        now = time.monotonic()
        events = self.counts["events"]
        self._rate.append((now, events))
        while len(self._rate) > 2 and now - self._rate[0][0] > 10.0:
            self._rate.pop(0)
        t0, e0 = self._rate[0]
        rate = (events - e0) / (now - t0) if now > t0 else 0.0
        wall = time.time()
        sources = []
        for src in self.sources.all():
            newest = src.newest
            sources.append({
                "name": src.pos.name, "kind": "whole-file" if src.whole else src.kind,
                "offset": src.pos.offset, "lag_bytes": src.lag_bytes(),
                "lag_seconds": round(wall - newest, 3) if newest else None,
                "idle_seconds": round(now - src.last_data, 3), "events": src.pos.events,
            })
        corr = self.correlator
        return {
            "uptime_seconds": round(now - self._started, 3),
            "events": events,
            "events_per_second": round(rate, 1),
            "alerts": self.counts["alerts"],
            "alerts_filtered": self.counts["filtered"],
            "alerts_replayed": self.deliveries.duplicates,
            "late_events": corr.buffer.late if corr is not None else 0,
            "watermark_held": len(self.merge),
            "watermark_overflow": self.merge.overflow,
            "state_bytes": self.state.bytes,
            "checkpoints": self.counts["checkpoints"],
            "errors": dict(self.stats.errors),
            "sources": sources,
        }

    def status_line(self) -> str:
        m = self.metrics()
        lag = max((s["lag_bytes"] for s in m["sources"]), default=0)
        return (f"watch: {m['events']:,} events ({m['events_per_second']:,.0f}/s), {m['alerts']:,} alerts, "
                f"{len(m['sources'])} sources (max lag {lag:,} bytes), {m['late_events']:,} late, "
                f"state {m['state_bytes'] / 1024:,.0f} KiB")
