"""The case writer: a sink that hunt streams its alerts into, plus the run and file records.

``CaseWriter`` has the sink interface (``write(alert)``, ``close()``, ``count``), so the CLI
puts it beside the terminal/JSONL/CSV sink and alerts still stream to both. The writer holds
the case's write lock from the start of the hunt (a locked or foreign file is reported before
any input is read) and the ids of the alerts already stored: an alert whose id is known adds
nothing, so re-hunting the same files leaves the alerts, evidence and links unchanged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scmwatch import __version__
from scmwatch.alerts import LEVEL_RANK, Alert, alert_id, evidence_of
from scmwatch.case import search
from scmwatch.case.entities import event_host, links_of
from scmwatch.case.events import EventKeeper
from scmwatch.case.files import EVTX_MAGIC, file_sha256
from scmwatch.case.rules import store_rules
from scmwatch.case.stage import Stager, dumps, sweep
from scmwatch.case.store import open_case
from scmwatch.correlate.links import short_host

_ALERT_COLS = {
    "alert_id": "VARCHAR", "run_id": "INTEGER", "rule_id": "VARCHAR", "title": "VARCHAR",
    "level": "VARCHAR", "level_rank": "INTEGER", "description": "VARCHAR", "tags": "VARCHAR[]",
    "time_us": "BIGINT", "host": "VARCHAR", "host_key": "VARCHAR", "source": "VARCHAR",
    "record_id": "BIGINT", "kind": "VARCHAR", "correlation": "JSON", "extra": "JSON", "event": "JSON",
    "evidence_count": "INTEGER",
}
_EVIDENCE_COLS = {
    "alert_id": "VARCHAR", "seq": "INTEGER", "time_us": "BIGINT", "host": "VARCHAR",
    "event_id": "INTEGER", "channel": "VARCHAR", "source": "VARCHAR", "record_id": "BIGINT",
    "event": "JSON",
}
_FILE_COLS = {
    "run_id": "INTEGER", "file_no": "INTEGER", "path": "VARCHAR", "size": "BIGINT", "sha256": "VARCHAR",
    "format": "VARCHAR", "events": "BIGINT", "errors": "JSON", "events_kept": "BOOLEAN",
}
_LINK_COLS = {
    "alert_id": "VARCHAR", "time_us": "BIGINT", "source_host": "VARCHAR", "source_ip": "VARCHAR",
    "target_host": "VARCHAR", "service": "VARCHAR", "how": "VARCHAR",
}
_ALERT_BATCH = 5000
_EVIDENCE_BATCH = 20_000
_NEVER = 1 << 62
# Rows a watch's commit leaves to be scanned by free text before it indexes them (see case/search.py)
_INDEX_TAIL = 50_000  # a stager the writer flushes itself
_TS = "CASE WHEN time_us IS NULL OR time_us = 0 THEN NULL ELSE make_timestamp(time_us) END"


def time_us(epoch: float) -> int | None:
    return int(round(epoch * 1e6)) if epoch else None


def _event_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**31) <= value < 2**31 else None
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


class CaseWriter:
    """Write one run into a case file (created if missing, migrated if older)."""

    def __init__(self, path: str, *, command: str, ruleset: Any = None, rule_paths: Iterable[str] = (),
                 builtin: bool = False, kind: str = "hunt", keep_events: bool = False,
                 tmpdir: str | None = None, wait: float = 0.0,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.con = open_case(path, write=True, create=True, wait=wait, on_wait=on_wait)
        sweep(tmpdir)
        con = self.con
        self.known = {r[0] for r in con.execute("SELECT alert_id FROM alert_rows").fetchall()}
        # One transaction per run: a run is kept whole or not at all, and thousands of small
        # files cost one commit, not one each (measured: 7x the hunt's time with a commit per file).
        con.execute("BEGIN TRANSACTION")
        self.run_id = int(con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs_t").fetchone()[0])
        self.identity: dict[str, str] = {}  # input name -> sha256
        self.files = 0
        self.count = 0  # alerts written to the case this run (new or already there)
        self.new = 0
        rules = getattr(ruleset, "rules", []) or []
        con.execute(
            "INSERT INTO runs_t (run_id, kind, started, command, scmwatch_version, rulepack, "
            "ruleset_hash, rules_loaded, correlations_loaded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [self.run_id, kind, datetime.now(UTC).replace(tzinfo=None), command, __version__,
             f"builtin {__version__}" if builtin else None, ruleset_hash(ruleset, rule_paths),
             len(rules), len(getattr(ruleset, "correlations", []) or [])])
        store_rules(con, ruleset, self.run_id, tmpdir)
        # A batch of alerts is loaded after its evidence (``_load``): the evidence goes through
        # the temporary table ``evidence_batch``, which gives each alert its search text
        # (case/search.py) in the INSERT itself. Only the writer flushes these two stagers.
        con.execute("CREATE OR REPLACE TEMP TABLE evidence_batch AS FROM evidence_rows LIMIT 0")
        self._alerts = Stager(con, "INSERT INTO alert_rows BY NAME SELECT alert_id, run_id, rule_id, title, "
                              f"level, level_rank, description, tags, {_TS} AS time, host, host_key, source, "
                              "record_id, kind, correlation, extra, event, evidence_count, "
                              f"(SELECT {search.text('b')} FROM evidence_batch b "
                              "WHERE b.alert_id = staged.alert_id) AS search", _ALERT_COLS, _NEVER, tmpdir)
        self._evidence = Stager(con, "INSERT INTO evidence_batch SELECT alert_id, seq, "
                                f"{_TS}, host, event_id, channel, source, record_id, event",
                                _EVIDENCE_COLS, _NEVER, tmpdir)
        self.keeper = EventKeeper(con, tmpdir) if keep_events else None
        self._files = Stager(con, "INSERT INTO file_rows SELECT *", _FILE_COLS, 5000, tmpdir)
        self._links = Stager(con, "INSERT INTO link_rows SELECT alert_id, "
                             f"{_TS}, source_host, source_ip, target_host, service, how",
                             _LINK_COLS, 20_000, tmpdir)

    # -- files ---------------------------------------------------------------------------------

    def add_file(self, inp: Any, events: int, errors: dict[str, int], fmt: str | None,
                 sha256: str | None = None, size: int | None = None, head: bytes = b"",
                 kept: bool = False) -> None:
        """Record one input file (``inp``: an :class:`~scmwatch.events.read.InputFile`); without
        ``sha256``, the file is read here to hash it."""
        if sha256 is None:
            sha256, size, head = file_sha256(inp)
        self._record(inp, events, errors, fmt, sha256, size, head, kept)

    def _record(self, inp: Any, events: int, errors: dict[str, int], fmt: str | None, sha256: str | None,
                size: int | None, head: bytes, kept: bool = False) -> None:
        if fmt is None and head.startswith(EVTX_MAGIC):
            fmt = "evtx"  # every record skipped by the read gate: no event said its format
        elif fmt is None and events:
            fmt = "json"  # the other gated reader: NDJSON of evtx_dump records
        if sha256 is not None:
            self.identity[inp.name] = sha256
        self.files += 1
        self._files.add({"run_id": self.run_id, "file_no": self.files, "path": inp.name, "size": size,
                         "sha256": sha256, "format": fmt, "events": events, "errors": dict(errors),
                         "events_kept": kept})

    # -- the sink ------------------------------------------------------------------------------

    def write(self, alert: Alert, aid: str | None = None) -> None:
        """Store one alert (once: ``aid``, its id, defaults to :func:`alert_id` of its evidence)."""
        evidence = evidence_of(alert)
        if aid is None:
            aid = alert_id(alert, evidence, self._identity)
        self.count += 1
        if aid in self.known:
            return
        self.known.add(aid)
        self.new += 1
        ev = alert.event
        self._alerts.add({
            "alert_id": aid, "run_id": self.run_id, "rule_id": alert.rule_id, "title": alert.title,
            "level": alert.level, "level_rank": LEVEL_RANK.get(alert.level, 0),
            "description": alert.description, "tags": list(alert.tags), "time_us": time_us(alert.time),
            "host": alert.host, "host_key": short_host(alert.host), "source": ev.source,
            "record_id": ev.record_id, "kind": "correlation" if alert.correlation is not None else "event",
            "correlation": alert.correlation, "extra": alert.extra or None, "event": ev.fields,
            "evidence_count": len(evidence),
        })
        for seq, e in enumerate(evidence):
            f = e.fields
            self._evidence.add({
                "alert_id": aid, "seq": seq, "time_us": time_us(e.time), "host": event_host(f),
                "event_id": _event_id(f.get("EventID")), "channel": f.get("Channel"),
                "source": e.source, "record_id": e.record_id, "event": f,
            })
        for link in links_of(evidence):
            self._links.add({
                "alert_id": aid, "time_us": time_us(link.time), "source_host": link.source_host,
                "source_ip": link.source_ip, "target_host": link.target_host,
                "service": link.service, "how": link.how,
            })
        if self._alerts.pending >= _ALERT_BATCH or self._evidence.pending >= _EVIDENCE_BATCH:
            self._load()

    def _load(self) -> None:
        """Load the staged evidence, then the staged alerts (whose evidence it is)."""
        self.con.execute("DELETE FROM evidence_batch")
        self._evidence.flush()
        self.con.execute("INSERT INTO evidence_rows FROM evidence_batch")
        self._alerts.flush()

    def add_result(self, inputs: list[Any], result: Any) -> None:
        """Record the input files of a :class:`~scmwatch.hunt.UnitResult` (one, or a batch's:
        ``result.files``; with ``--keep-events``, load their staged events)."""
        if result.files:
            for f in result.files:
                self._add_input(inputs[f.index], f.events, f.errors, f.fmt, f.digest)
            return
        stats = result.stats
        events, errors = (stats.events, dict(stats.errors)) if stats else (0, {})
        self._add_input(inputs[result.index], events, errors, result.fmt, result.digest)

    def _add_input(self, inp: Any, events: int, errors: dict[str, int], fmt: str | None,
                   digest: tuple[str | None, int | None, bytes] | None) -> None:
        meta = self.keeper.ingest(inp) if self.keeper is not None else None
        if meta is None and digest is not None:  # hashed where it was read (HuntContext.digests)
            self._record(inp, events, errors, fmt, *digest)
        elif meta is None:
            self.add_file(inp, events, errors, fmt)
        else:
            self.add_file(inp, events, errors, fmt, meta["sha256"], meta["size"],
                          bytes.fromhex(meta["head"]), meta["kept"])

    def recording(self, map_units: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """Wrap ``run_hunt``'s unit mapper: each file is recorded as its result arrives, in the
        parent, before any alert is emitted (so alert ids can use every file's hash). With
        ``--keep-events`` the units are read through the event keeper, in workers too; without,
        a runner that can hashes each file where it is read (a cluster's workers), and the
        parent hashes the rest."""

        def mapper(ctx: Any, inputs: list[Any], jobs: int, report: Any) -> Iterator[Any]:
            if self.keeper is not None:
                ctx.read = self.keeper.read
            else:
                ctx.digests = True
            for r in map_units(ctx, inputs, jobs, report):
                self.add_result(inputs, r)
                yield r

        return mapper

    def _identity(self, source: str) -> str:
        return self.identity.get(source, source)

    def commit(self) -> None:
        """Make every alert written so far durable, and go on in a new transaction: a watch
        (:mod:`scmwatch.live`) commits before each checkpoint, so that a restart finds what it
        delivered in ``known`` and adds it only once."""
        self._load()
        for st in (self._files, self._links):
            st.flush()
        self.con.execute("UPDATE runs_t SET files = ?, alerts = ?, alerts_new = ? WHERE run_id = ?",
                         [self.files, self.count, self.new, self.run_id])
        self.con.execute("COMMIT")
        search.catch_up(self.con, rows=_INDEX_TAIL)
        self.con.execute("BEGIN TRANSACTION")

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Load what is staged and close the run's record (``summary``: the hunt summary)."""
        try:
            self._load()
            for st in self._stagers():
                st.close()
            self.con.execute("DROP TABLE evidence_batch")
            s = summary or {}
            s["case_values_cut"] = sum(st.cut for st in (self._alerts, self._evidence))
            if self.keeper is not None:
                self.keeper.flush()
                s["events_kept"] = self.keeper.events
                s["case_values_cut"] += self.keeper.cut
                self.keeper.cleanup()
            self.con.execute(
                "UPDATE runs_t SET finished = ?, files = ?, events = ?, alerts = ?, alerts_new = ?, "
                "errors = ?, summary = ? WHERE run_id = ?",
                [datetime.now(UTC).replace(tzinfo=None), self.files, s.get("events"), self.count,
                 self.new, dumps(s.get("errors") or {}).decode(), dumps(s).decode(), self.run_id])
            self.con.execute("COMMIT")
            search.catch_up(self.con)
            self.con.execute("CHECKPOINT")
        finally:
            for st in self._stagers():
                st.discard()
            self.con.close()

    def _stagers(self) -> tuple[Stager, ...]:
        return self._files, self._alerts, self._evidence, self._links

    def abort(self) -> None:
        """Give up (the hunt failed or was interrupted): nothing of this run stays in the case."""
        if self.keeper is not None:
            self.keeper.abort()
        for st in self._stagers():
            st.discard()
        try:
            self.con.execute("ROLLBACK")
        finally:
            self.con.close()


def ruleset_hash(ruleset: Any, rule_paths: Iterable[str] = ()) -> str | None:
    """sha256 over the rule files the rule set was loaded from (every YAML file under
    ``rule_paths``, sorted by path; with no paths, the files its rules name)."""
    files: set[str] = set()
    for p in rule_paths:
        if os.path.isdir(p):
            files.update(str(f) for f in Path(p).rglob("*") if f.suffix.lower() in (".yml", ".yaml"))
        elif os.path.isfile(p):
            files.add(p)
    if not files:
        files = {r.path for r in getattr(ruleset, "rules", []) or [] if getattr(r, "path", None)}
    if not files:
        return None
    h = hashlib.sha256()
    for p in sorted(files):
        try:
            with open(p, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
        except OSError:
            h.update(p.encode("utf-8", "surrogatepass"))
    return h.hexdigest()
