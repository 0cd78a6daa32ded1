"""Spill files: keep hunt's per-file results on disk so its memory does not grow with the input.

A hunt cannot emit anything before every file is read: alerts are sorted by time across files
and correlation merges every file's candidates by time. Holding those in memory made peak RSS
grow with the input (each correlation candidate keeps its whole event). Instead:

* each file's correlation candidates are appended to one spill file in file order (a *stream*,
  :class:`Stream`; kept in memory while short);
* each file's hits are buffered up to ``run_size`` records, sorted, and written as a sorted
  *run* (:class:`SortedSpiller`); correlation alerts go through the same kind of spiller;
* the short remainders stay in memory while the caller's budget allows (hunt.py), so small
  inputs never touch the disk;
* at the end :func:`merge_runs` k-way merges files and in-memory lists with ``heapq.merge`` --
  at most ``fan_in`` files open at once; beyond that, groups of files are first merged into
  intermediate files.

Records are pickled one at a time, so a reader holds one record plus its I/O buffer. With
unique keys, merging in groups gives exactly the order of one flat ``heapq.merge`` of all
streams -- even for streams that are not themselves sorted (candidate streams are in file
order, not time order; the correlator's reorder buffer repairs that): the head of a merged
group is always the least head of its members, so every comparison is the same.
"""

from __future__ import annotations

import heapq
import itertools
import os
import pickle
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

PROTOCOL = pickle.HIGHEST_PROTOCOL
_BUFFER = 1 << 16


def default_fan_in() -> int:
    """How many spill files one merge may open: 256, less when the descriptor limit is low."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(2, min(256, (soft - 64) // 2))


class SpillDir:
    """A private temporary directory (under ``TMPDIR``) removed as a whole at the end."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix="scmwatch-hunt-", dir=parent)
        self._names = itertools.count()

    def new_path(self, prefix: str) -> str:
        # the pid keeps names unique across forked --jobs workers
        return os.path.join(self.path, f"{prefix}-{os.getpid()}-{next(self._names)}.pkl")

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class StreamWriter:
    """Append records to one spill file, in the order given; the file is created on first write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[bytes] | None = None

    def write(self, record: Any) -> None:
        fh = self._fh
        if fh is None:
            fh = self._fh = open(self.path, "wb", buffering=_BUFFER)  # noqa: SIM115 - closed in close()
        pickle.dump(record, fh, PROTOCOL)
        self.count += 1

    def close(self) -> str | None:
        """Close the file; returns its path, or None when nothing was written."""
        if self._fh is None:
            return None
        self._fh.close()
        self._fh = None
        return self.path


def write_run(spill: SpillDir, prefix: str, records: Iterable[Any]) -> str | None:
    """Write records (already in the order wanted) to a new spill file; None when there are none."""
    w = StreamWriter(spill.new_path(prefix))
    for rec in records:
        w.write(rec)
    return w.close()


def read_stream(path: str) -> Iterator[Any]:
    """The records of one spill file, in the order written."""
    with open(path, "rb", buffering=_BUFFER) as fh:
        load = pickle.load  # one unpickler per record: each record was pickled on its own
        while True:
            try:
                yield load(fh)
            except EOFError:
                return


class Stream:
    """One file's records in file order: kept in memory up to ``limit``, then all on disk.

    Most inputs (a directory of .evtx files) produce a handful of records per file: creating,
    writing and reading back a file for each cost more than the whole hunt of a small file.
    """

    def __init__(self, spill: SpillDir, prefix: str, limit: int) -> None:
        self.spill = spill
        self.prefix = prefix
        self.limit = limit
        self.count = 0
        self.peak = 0  # most records held in memory at once
        self._mem: list[Any] | None = []
        self._w: StreamWriter | None = None

    def add(self, record: Any) -> None:
        self.count += 1
        mem = self._mem
        if mem is not None:
            mem.append(record)
            if len(mem) < self.limit:
                return
            self.peak = len(mem)
            self._w = StreamWriter(self.spill.new_path(self.prefix))
            for rec in mem:
                self._w.write(rec)
            self._mem = None
            return
        assert self._w is not None
        self._w.write(record)

    def finish(self) -> tuple[str | None, list[Any]]:
        """``(spill file or None, records still in memory)``; one of the two is empty."""
        if self._mem is not None:
            self.peak = max(self.peak, len(self._mem))
            mem, self._mem = self._mem, None
            return None, mem
        assert self._w is not None
        return self._w.close(), []


class SortedSpiller:
    """External sort, first half: buffer records, write each full buffer as one sorted run.

    ``key(record)`` must be unique per record (then the merged order is total and
    deterministic). At most ``run_size`` records are held at once; :attr:`peak` is the
    high-water mark, reported in the hunt summary. :meth:`finish` returns the last, partial
    buffer sorted but unwritten, for the caller to keep in memory or write.
    """

    def __init__(self, spill: SpillDir, prefix: str, key: Callable[[Any], Any], run_size: int) -> None:
        self.spill = spill
        self.prefix = prefix
        self.key = key
        self.run_size = max(1, run_size)
        self.runs: list[str] = []
        self.count = 0
        self.peak = 0
        self._buf: list[Any] = []

    def add(self, record: Any) -> None:
        buf = self._buf
        buf.append(record)
        self.count += 1
        if len(buf) >= self.run_size:
            self.flush()

    def flush(self) -> None:
        buf = self._buf
        if not buf:
            return
        self.peak = max(self.peak, len(buf))
        buf.sort(key=self.key)
        path = write_run(self.spill, self.prefix, buf)
        assert path is not None
        self.runs.append(path)
        self._buf = []

    def finish(self) -> tuple[list[str], list[Any]]:
        """``(sorted runs on disk, sorted tail still in memory)``."""
        buf, self._buf = self._buf, []
        self.peak = max(self.peak, len(buf))
        buf.sort(key=self.key)
        return self.runs, buf


def merge_runs(
    sources: Iterable[str | list[Any]], key: Callable[[Any], Any], spill: SpillDir, fan_in: int | None = None
) -> Iterator[Any]:
    """k-way merge by ``key`` of spill files (paths) and in-memory record lists, with at most
    ``fan_in`` files open at once: beyond that, groups of files are merged into one file first."""
    fan_in = max(2, fan_in or default_fan_in())
    sources = list(sources)
    paths = [s for s in sources if isinstance(s, str)]
    lists = [s for s in sources if not isinstance(s, str)]
    while len(paths) > fan_in:
        merged: list[str] = []
        for i in range(0, len(paths), fan_in):
            group = paths[i : i + fan_in]
            if len(group) == 1:
                merged.append(group[0])
                continue
            out = write_run(spill, "merge", heapq.merge(*(read_stream(p) for p in group), key=key))
            if out is not None:
                merged.append(out)
            for p in group:
                os.unlink(p)
        paths = merged
    return heapq.merge(*(read_stream(p) for p in paths), *lists, key=key)
