"""Spill files: keep hunt's per-file results on disk so its memory does not grow with the input.

A hunt cannot emit anything before every file is read: alerts are sorted by time across files
and correlation merges every file's candidates by time. Holding those in memory made peak RSS
grow with the input (each correlation candidate keeps its whole event). Instead:

* each file's correlation candidates are appended to one spill file in file order (a *stream*,
  :class:`Stream`; kept in memory while short);
* each file's hits are buffered up to ``run_size`` records, sorted, and written as a sorted
  *run* (:class:`SortedSpiller`); correlation alerts go through the same kind of spiller;
* the short remainders stay in memory while a :class:`SpillBudget` allows, so small inputs
  never touch the disk;
* at the end :func:`merge_runs` k-way merges files and in-memory lists with ``heapq.merge`` --
  at most ``fan_in`` files open at once; beyond that, groups of files are first merged into
  intermediate files.

Records are written in small compressed blocks (:class:`StreamWriter`), so a reader holds one
block's records plus its I/O buffer. With unique keys, merging in groups gives exactly the order
of one flat ``heapq.merge`` of all streams -- even for streams that are not themselves sorted
(candidate streams are in file order, not time order; the correlator's reorder buffer repairs
that): the head of a merged group is always the least head of its members, so every
comparison is the same.
"""

from __future__ import annotations

import heapq
import itertools
import marshal
import os
import pickle
import resource
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

PROTOCOL = pickle.HIGHEST_PROTOCOL
_BUFFER = 1 << 16
BLOCK = 1 << 15  # uncompressed bytes of serialised records per compressed block (about)
_GUESS = 512  # bytes per record assumed for a file's first block (a hit of all SigmaHQ: ~800)
_MARSHAL, _PICKLE = b"m", b"p"  # a block's first byte (after decompression): how it is encoded


def default_fan_in() -> int:
    """How many spill files one merge may open: 256, less when the descriptor limit is low."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(2, min(256, (soft - 64) // 2))


PREFIX = "scmwatch-hunt-"


class SpillDir:
    """A private temporary directory (under ``TMPDIR``) removed as a whole at the end.

    Its name carries the pid of the hunt (``scmwatch-hunt-<pid>-<random>``): a hunt killed
    where no cleanup can run (SIGKILL, power loss) leaves it behind, and the next hunt removes
    such directories of processes that no longer exist (:func:`remove_stale`).
    """

    def __init__(self, parent: str | None = None) -> None:
        remove_stale(parent)
        self.path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)
        self._names = itertools.count()

    def new_path(self, prefix: str) -> str:
        # the pid keeps names unique across forked --jobs workers
        return os.path.join(self.path, f"{prefix}-{os.getpid()}-{next(self._names)}.spill")

    def usage(self) -> tuple[int, int]:
        """``(bytes, files)`` in the directory now."""
        total = files = 0
        for entry in os.scandir(self.path):
            try:
                total += entry.stat().st_size
                files += 1
            except OSError:
                pass
        return total, files

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_stale(parent: str | None = None, prefix: str = PREFIX) -> int:
    """Remove what dead processes left under ``parent`` (default ``TMPDIR``): by default spill
    directories of dead hunts, else files or directories named with ``prefix`` the same way
    (the case store's staging, which a SIGKILL leaves too).

    Only entries named ``<prefix><pid>-...``, owned by this user, whose pid no longer runs; never
    a symlink. Returns how many were removed.
    """
    base = parent or tempfile.gettempdir()
    me = os.getuid()
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        pid = entry.name[len(prefix):].split("-", 1)[0] if entry.name.startswith(prefix) else ""
        if not pid.isdigit():
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        kind = stat.S_ISDIR(st.st_mode)
        if not (kind or stat.S_ISREG(st.st_mode)) or st.st_uid != me or _running(int(pid)):
            continue
        if kind:
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                continue
        removed += 1
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # not a pid this system can have
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


class StreamWriter:
    """Append records to one spill file, in the order given; the file is created on first write.

    Records are kept until about ``BLOCK`` bytes of them are due, then written as one block:
    the block's record list serialised in one call, so that an object several records share
    (the fields of an event that many rules matched) is stored once, and compressed with
    zstd (level 1) behind a 4-byte length; a reader holds one block's records at a time.

    The list is marshalled: records are builtin values (tuples, dicts, strings, numbers) and
    ``marshal`` writes exactly those types, refusing anything else (a NamedTuple, a dataclass),
    whose block is then pickled instead. Measured on the hits of all SigmaHQ on the attack
    samples (1,541 hits of 1,039 events, CPU time, best of 15): pickle + zlib 5.9 us to write
    and 3.9 us to read back a hit, 161 bytes each on disk; marshal + zlib 4.6 + 3.1 us, 133
    bytes; marshal + zstd **1.8 + 2.0 us, 103 bytes** (serialising alone, without compression:
    0.9 + 1.6 us, 785 bytes). The records must not change once written (the hunt's do not:
    hits and candidates are built once), as a block is serialised when it is full.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[bytes] | None = None
        self._records: list[Any] = []
        self._per_block = max(1, BLOCK // _GUESS)
        self._zstd = _zstandard().ZstdCompressor(level=1)  # one per writer: not thread-safe

    def write(self, record: Any) -> None:
        records = self._records
        records.append(record)
        self.count += 1
        if len(records) >= self._per_block:
            self._flush()

    def _flush(self) -> None:
        records = self._records
        if not records:
            return
        try:
            data = _MARSHAL + marshal.dumps(records, 4)
        except ValueError:  # a type marshal does not write exactly (or nesting beyond its limit)
            data = _PICKLE + pickle.dumps(records, PROTOCOL)
        # as many records next time as make about BLOCK bytes, judging by these
        self._per_block = max(1, min(1 << 14, BLOCK * len(records) // len(data)))
        self._records = []
        fh = self._fh
        if fh is None:
            fh = self._fh = open(self.path, "wb", buffering=_BUFFER)  # noqa: SIM115 - closed in close()
        packed = self._zstd.compress(data)
        fh.write(len(packed).to_bytes(4, "little"))
        fh.write(packed)

    def close(self) -> str | None:
        """Close the file; returns its path, or None when nothing was written."""
        self._flush()
        if self._fh is None:
            return None
        self._fh.close()
        self._fh = None
        return self.path


def _zstandard() -> Any:
    """The ``zstandard`` module, imported by the first spill file written or read: a hunt whose
    results fit its memory budget (the attack corpus x5 with all SigmaHQ) writes none, and
    importing it (an 11 MB extension to map and relocate) cost every start ~1.5M instructions
    before its ``--jobs`` worker forks."""
    import zstandard

    return zstandard


def write_run(spill: SpillDir, prefix: str, records: Iterable[Any]) -> str | None:
    """Write records (already in the order wanted) to a new spill file; None when there are none."""
    w = StreamWriter(spill.new_path(prefix))
    for rec in records:
        w.write(rec)
    return w.close()


def write_merged(spill: SpillDir, prefix: str, lists: list[list[Any]], key: Callable[[Any], Any],
                 runs: bool = False) -> str:
    """Write non-empty record lists, k-way merged by ``key``, as one new spill file (``runs``:
    each list is sorted, see :func:`merge_sorted`)."""
    if len(lists) == 1:
        merged: Iterable[Any] = lists[0]
    else:
        merged = merge_sorted(lists, key) if runs else heapq.merge(*lists, key=key)
    path = write_run(spill, prefix, merged)
    assert path is not None
    return path


def merge_sorted(lists: list[list[Any]], key: Callable[[Any], Any]) -> list[Any]:
    """Lists each sorted by ``key`` (unique over all of them) as one sorted list: the order of
    ``heapq.merge``, by one sort of their concatenation, whose runs Timsort merges in C. A
    directory of small files leaves hundreds of short sorted runs of hits: measured on 513 runs
    of 3,434 hits, 0.9 ms instead of heapq.merge's 7-9 ms."""
    return sorted(itertools.chain.from_iterable(lists), key=key)


def read_stream(path: str) -> Iterator[Any]:
    """The records of one spill file, in the order written."""
    unzstd = _zstandard().ZstdDecompressor()
    with open(path, "rb", buffering=_BUFFER) as fh:
        while True:
            head = fh.read(4)
            if not head:
                return
            data = memoryview(unzstd.decompress(fh.read(int.from_bytes(head, "little"))))
            if data[:1] == _MARSHAL:
                yield from marshal.loads(data[1:])
            else:
                yield from pickle.loads(data[1:])


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

    def extend(self, records: list[Any]) -> None:
        """:meth:`add` of each record (one event's hits), in one call while the buffer has room."""
        buf = self._buf
        if len(buf) + len(records) < self.run_size:
            buf += records
            self.count += len(records)
            return
        for rec in records:
            self.add(rec)

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


class SpillBudget:
    """Short record lists held in memory over many producers, at most ``limit`` records in all.

    Records come in *kinds* (``keys``: kind -> sort key; the kind is also the spill file
    prefix). Each producer hands over one short list per kind (:meth:`keep`); when the budget
    would overflow, everything held is first written out as *one* merged file per kind: one
    file per ``limit`` records rather than one per producer, which with thousands of small
    .evtx files and many alerts cost more than the hunt itself. Merging held lists early gives
    the same order as merging them at the end (module docstring). :meth:`merge` opens at most
    ``fan_in`` files at once. The peaks (``held_peak``, ``merge_open_peak``) do not depend on
    the input size: that is the bounded-memory property, asserted by tests/test_hunt_memory.py.
    """

    def __init__(self, spill: SpillDir, limit: int, fan_in: int,
                 keys: dict[str, Callable[[Any], Any]], sorted_kinds: frozenset[str] = frozenset()) -> None:
        self.spill = spill
        self.limit = limit
        self.fan_in = fan_in
        self.keys = keys
        # kinds whose lists are each sorted by the kind's key: merged by merge_sorted
        self.sorted_kinds = sorted_kinds
        self.held = 0
        self.held_peak = 0
        self.merge_open_peak = 0
        self._lists: dict[str, list[list[Any]]] = {k: [] for k in keys}
        self._runs: dict[str, list[str]] = {k: [] for k in keys}

    def keep(self, lists: dict[str, list[Any]]) -> dict[str, str]:
        """Take one producer's short lists (kind -> records in that kind's order).

        Returns kind -> spill file for lists that alone exceed the budget: those go straight
        to disk and belong to the caller (the producer's own runs).
        """
        n = sum(map(len, lists.values()))
        if not n:
            return {}
        if self.held + n > self.limit:
            self.flush()
        if n > self.limit:
            return {k: write_merged(self.spill, k, [v], self.keys[k]) for k, v in lists.items() if v}
        self._hold(n)
        for k, v in lists.items():
            if v:
                self._lists[k].append(v)
        return {}

    def keep_list(self, prefix: str, records: list[Any]) -> str | list[Any]:
        """One more list held if the budget allows (returned as is), else written (its path)."""
        if self.held + len(records) <= self.limit:
            self._hold(len(records))
            return records
        path = write_run(self.spill, prefix, records)
        assert path is not None
        return path

    def flush(self) -> None:
        """Write what is held as one merged file per kind."""
        for k, held in self._lists.items():
            if held:
                self._runs[k].append(write_merged(self.spill, k, held, self.keys[k], k in self.sorted_kinds))
            self._lists[k] = []
        self.held = 0

    def sources(self, kind: str) -> list[str | list[Any]]:
        """The files written and the lists held for ``kind`` (for :meth:`merge`); a sorted
        kind's lists as one."""
        held = self._lists[kind]
        if len(held) > 1 and kind in self.sorted_kinds:
            held = [merge_sorted(held, self.keys[kind])]
        return [*self._runs[kind], *held]

    def release(self, kind: str) -> None:
        """Forget the lists held for ``kind`` (they were merged and consumed)."""
        self.held -= sum(map(len, self._lists[kind]))
        self._lists[kind] = []

    def merge(self, sources: list[str | list[Any]], key: Callable[[Any], Any]) -> Iterator[Any]:
        """:func:`merge_runs` of ``sources``, counting the files it opens at once."""
        files = sum(1 for s in sources if isinstance(s, str))
        self.merge_open_peak = max(self.merge_open_peak, min(files, self.fan_in))
        return merge_runs(sources, key, self.spill, self.fan_in)

    def _hold(self, n: int) -> None:
        self.held += n
        self.held_peak = max(self.held_peak, self.held)
