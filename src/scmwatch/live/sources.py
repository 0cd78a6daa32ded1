"""Sources a watcher follows: growing files, directories of them, stdin.

Each source hands the watcher :class:`Batch` es: complete records (NDJSON lines, Zeek TSV lines,
Windows XML ``<Event>`` elements) read past its position, at most ``BATCH_BYTES`` at a time,
never a record cut in half. A batch is a unit of :func:`scmwatch.hunt.hunt_unit`, read by
:func:`read_batch` with the line numbers the batch hunt gives the same lines. Whole-file formats
(EVTX, ``.gz``, ``.zip``) are one unit once complete: their size and modification time unchanged
for ``settle`` seconds (a collector copying a file in makes it grow for a while).

Positions (:class:`Position`) are plain JSON-able records: the file's identity -- device, inode
and a fingerprint of its first ``FP_BYTES`` bytes (an inode number is reused after a delete) --
and the byte offset, line and event count read so far. They are what a checkpoint stores.

Rotation, as log shippers and logrotate do it:

* **rename + new file**: the path names another inode. The old file is read to its end through
  the descriptor still open on it, then the new file from its start (a new *generation*).
* **copytruncate**: the same inode shrank below our offset. The new content is read from the
  start; if the copy appears in a watched directory (same fingerprint as the generation we were
  reading), the part of it we had not read yet is read from it and nothing twice.
* a file that appears under a watched directory with the identity or fingerprint of a file we
  already read is that file (renamed or copied), not a new one.

Network listeners spool what they receive as NDJSON files under a directory the watcher follows
(``STATE_DIR/spool/<source>/``), so they are ordinary followed files here.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import select
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from scmwatch.events.evtx_reader import MAGIC
from scmwatch.events.json_reader import read_ndjson_batch
from scmwatch.events.model import Event, ReadGate, ReadStats
from scmwatch.events.read import LOG_EXTENSIONS, SIMULATOR_LABELS, TEXT_FORMATS, InputFile, read_input
from scmwatch.events.text import sniff_encoding
from scmwatch.events.xml_reader import read_xml
from scmwatch.events.zeek_reader import read_zeek_tsv, zeek_log_type

BATCH_BYTES = 1 << 20  # most bytes one batch reads: bounds memory and the time between checkpoints
# The fingerprint covers this many first bytes (fewer while the file is shorter). It must reach past
# the first record's own values (time, record id, computer): logs of one channel from different
# hosts begin with the same provider header, and a file whose fingerprint matches a followed one is
# taken for its rotated copy and skipped. The simulator's five System.jsonl files share their first
# 256 bytes (their EventRecordID starts at byte 313, Computer at 406): with 256, a host's System log
# that appears after another host's is taken for its copy and never read. Hashing 4,096 bytes costs
# ~2.7 us per source poll instead of ~0.6 us (sha256, measured).
FP_BYTES = 4096
MAX_HEADER = 64  # Zeek ``#`` header lines kept for the next batches (the last ones win)
WHOLE_FILE = frozenset({".evtx", ".gz", ".zip"})  # read once complete, not followed
STDIN = "<stdin>"
_XML_END = b"</Event>"


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data[:FP_BYTES]).hexdigest()[:32]


@dataclass
class Position:
    """Where a source is: what a checkpoint stores, one per file generation (JSON-able)."""

    sid: int  # the source number: orders units (ties of equal time), stable across restarts
    name: str  # provenance: the path as watched (``Event.source``)
    dev: int = 0
    ino: int = 0
    fp: str = ""  # fingerprint of the first min(size, FP_BYTES) bytes
    fp_len: int = 0
    offset: int = 0  # bytes consumed (always at a record boundary)
    line: int = 0  # lines consumed (the next batch starts at line + 1)
    events: int = 0  # events read (the next batch's first position)
    fmt: str | None = None  # json, zeek, xml; evtx/whole for whole-file units
    header: list[str] = field(default_factory=list)  # Zeek header lines (latin-1 text)
    generation: int = 0  # times this path was replaced (rotation); part of alert identity
    done: bool = False  # fully read and retired (rotated away) or hunted (whole file)
    size: int = 0  # whole files: the size hunted

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Position:
        return Position(**{k: v for k, v in data.items() if k in Position.__dataclass_fields__})


@dataclass
class Batch:
    """Complete records of one source: a unit for ``hunt_unit`` (``read=read_batch``)."""

    pos: Position  # the source's position *before* the batch (name, format, header)
    data: bytes
    first_line: int
    first_event: int
    end_offset: int
    lines: int
    whole: InputFile | None = None  # a whole-file unit (EVTX, .gz, .zip)
    last_time: float = 0.0  # newest event time read (set while reading)


def read_batch(batch: Batch, stats: ReadStats, gate: ReadGate) -> Iterator[Event]:
    """The events of a batch, with the provenance the batch hunt gives the same records."""
    pos = batch.pos
    if batch.whole is not None:
        events: Iterable[Event] = read_input(batch.whole, stats, gate)
    elif pos.fmt == "json":
        events = read_ndjson_batch(pos.name, batch.data, stats, batch.first_line, zeek_log_type(pos.name))
    elif pos.fmt == "zeek":
        header = [h.encode("latin-1") for h in pos.header]
        events = read_zeek_tsv(pos.name, io.BytesIO(batch.data), stats, header=header,
                               first_line=batch.first_line)
    else:
        events = read_xml(pos.name, io.BytesIO(batch.data), stats)
    newest = 0.0
    for ev in events:
        yield ev
        t = ev.time
        if t > newest:
            newest = t
    batch.last_time = newest


def sniff_text(head: bytes) -> str | None:
    """The followed format of a file's first bytes: json, zeek or xml; None if undecided or
    unsupported (not UTF-8, or not one of the text formats)."""
    if sniff_encoding(head) not in ("utf-8", "utf-8-sig"):
        return None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    for fmt in TEXT_FORMATS:
        if fmt.sniff(text):
            return fmt.name
    return None


class FileFollower:
    """One path, followed across rotations; yields batches of its current (and retired) file."""

    kind = "file"

    def __init__(self, path: str, pos: Position, new_sid: Any, *, whole: bool = False) -> None:
        self.path = path
        self.new_sid = new_sid
        self.pos = pos
        self.whole = whole or os.path.splitext(path.lower())[1] in WHOLE_FILE
        self.fd: int | None = None
        self.retired: list[tuple[int, Position]] = []  # old generations read to their end
        self.finished: list[Position] = []  # generations left behind, for the history to collect
        self._retired_growth: dict[int, float] = {}  # retired sid -> when it last gave a batch
        self.size = 0  # last size seen
        self.last_data = time.monotonic()  # when bytes last arrived (idle detection)
        self.newest = 0.0  # newest event time read
        self.problem: str | None = None  # the last one-line problem (reported once each)
        self.unreadable = False  # not a followed format: skipped, holds nothing back
        self._stable: tuple[int, int, float] | None = None  # whole files: (size, mtime, since)

    # -- identity ----------------------------------------------------------------------------

    def open(self, notes: list[str]) -> None:
        """Open the path and resume at the saved position if it is still the same file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._note(notes, f"{self.path}: cannot open: {exc.strerror}")
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self._note(notes, f"{self.path}: not a regular file: not followed")
            return
        p = self.pos
        same = p.ino and (p.dev, p.ino) == (st.st_dev, st.st_ino) and self._fp_ok(fd, p)
        if p.ino and not same:
            old = _find_inode(os.path.dirname(self.path) or ".", p)
            if old is not None:  # renamed by a rotation while we were stopped: read it to its end
                self.retired.append((old, p))
            else:
                notes.append(f"{self.path}: replaced while not watched and the old file is gone: read "
                             "the new one from its start")
            self.pos = Position(self.new_sid(), p.name, generation=p.generation + 1)
        if same and st.st_size < p.offset:
            notes.append(f"{self.path}: truncated while not watched: read from its start")
            self.pos = Position(p.sid, p.name, dev=p.dev, ino=p.ino, generation=p.generation + 1)
        self.pos.dev, self.pos.ino = st.st_dev, st.st_ino
        self.fd = fd
        self.size = st.st_size

    @staticmethod
    def _fp_ok(fd: int, p: Position) -> bool:
        if not p.fp_len:
            return True
        return fingerprint(os.pread(fd, p.fp_len, 0)) == p.fp

    def _note(self, notes: list[str], text: str) -> None:
        if text != self.problem:
            self.problem = text
            notes.append(text)

    def identities(self) -> set[tuple[int, int]]:
        out = {(p.dev, p.ino) for _, p in self.retired}
        if self.fd is not None:
            out.add((self.pos.dev, self.pos.ino))
        return out

    # -- reading -----------------------------------------------------------------------------

    def poll(self, notes: list[str], settle: float) -> Batch | None:
        """The next batch, or None when there is nothing complete to read now."""
        now = time.monotonic()
        for fd, p in list(self.retired):  # rotated-away generations first: older data
            b = self._read(fd, p, notes, final=True)
            if b is not None:
                self._retired_growth[p.sid] = now
                return b
            # the writer may still append to the renamed file until it reopens (logrotate's
            # postrotate signal): read on until it has been quiet for ``settle`` seconds
            if now - self._retired_growth.setdefault(p.sid, now) < settle:
                continue
            os.close(fd)
            p.done = True
            self.retired.remove((fd, p))
            self._retired_growth.pop(p.sid, None)
            self.finished.append(p)
        if self.fd is None:
            self.open(notes)
            if self.fd is None:
                return None
        self._check_rotation(notes)
        if self.whole:
            return self._whole(notes, settle)
        return self._read(self.fd, self.pos, notes, final=False)

    def _check_rotation(self, notes: list[str]) -> None:
        assert self.fd is not None
        st_fd = os.fstat(self.fd)
        try:
            st = os.stat(self.path)
        except OSError:
            st = None  # renamed away, nothing new yet: keep reading the old file
        p = self.pos
        if st is not None and (st.st_dev, st.st_ino) != (st_fd.st_dev, st_fd.st_ino):
            # rename rotation: finish the old file, then follow the new one from its start
            self.retired.append((self.fd, p))
            self.fd = None
            self.pos = Position(self.new_sid(), p.name, generation=p.generation + 1)
            self.open(notes)
            return
        if st_fd.st_size < p.offset or (p.fp_len and st_fd.st_size >= p.fp_len
                                         and fingerprint(os.pread(self.fd, p.fp_len, 0)) != p.fp):
            # copytruncate (shrank, or rewritten from the start): the new content from its start;
            # the old generation goes to the history, where a copy of it may pick it up
            notes.append(f"{self.path}: truncated (copytruncate rotation): read from its start")
            p.done = True
            self.finished.append(p)
            self.pos = Position(self.new_sid(), p.name, dev=p.dev, ino=p.ino, generation=p.generation + 1)
            self.size = st_fd.st_size

    def _read(self, fd: int, p: Position, notes: list[str], final: bool) -> Batch | None:
        if p.done or (self.unreadable and fd == self.fd):
            return None
        size = os.fstat(fd).st_size
        if fd == self.fd:
            if size != self.size:
                self.last_data = time.monotonic()
            self.size = size
        if size <= p.offset:
            return None
        if p.fp_len < FP_BYTES and size > p.fp_len:
            head = os.pread(fd, FP_BYTES, 0)
            p.fp, p.fp_len = fingerprint(head), len(head)
        if p.fmt is None:
            head = os.pread(fd, 4096, 0)
            if head.startswith(MAGIC):
                self.whole = True
                return None
            if head.startswith(SIMULATOR_LABELS):  # the simulator's ground truth, not a log
                self.unreadable = True
                return None
            p.fmt = sniff_text(head)
            if p.fmt is None:
                if b"\n" in head or len(head) >= 4096:
                    self.unreadable = True
                    self._note(notes, f"{p.name}: not a followed format (UTF-8 NDJSON, Windows XML, Zeek): "
                               "not read")
                return None
        data = os.pread(fd, min(BATCH_BYTES, size - p.offset), p.offset)
        end = data.rfind(_XML_END) + len(_XML_END) if p.fmt == "xml" else data.rfind(b"\n") + 1
        if p.fmt == "xml" and end < len(_XML_END):
            end = 0
        if end <= 0:
            if len(data) >= BATCH_BYTES:  # one record longer than a batch: skip it, say so
                self._note(notes, f"{p.name}: a record longer than {BATCH_BYTES >> 20} MiB at byte "
                           f"{p.offset}: skipped")
                p.offset += len(data)
            return None
        data = data[:end]
        lines = data.count(b"\n")
        if p.fmt == "zeek":
            self._keep_header(p, data)
        return Batch(Position(**p.to_json()), data, p.line + 1, p.events, p.offset + end, lines)

    @staticmethod
    def _keep_header(p: Position, data: bytes) -> None:
        """Zeek header lines of this batch, kept for the next ones (after this one is read)."""
        if b"#" not in data:
            return
        for line in data.split(b"\n"):
            if line.startswith(b"#"):
                p.header.append(line.decode("latin-1"))
        del p.header[:-MAX_HEADER]

    def _whole(self, notes: list[str], settle: float) -> Batch | None:
        p = self.pos
        if p.done:
            return None
        st = os.fstat(self.fd) if self.fd is not None else None
        if st is None or st.st_size == 0:
            return None
        now = time.monotonic()
        key = (st.st_size, st.st_mtime_ns)
        if self._stable is None or self._stable[:2] != key:
            self._stable = (*key, now)
            self.last_data = now
            return None
        if now - self._stable[2] < settle:
            return None
        p.fmt = "whole"
        p.size = st.st_size
        inp = InputFile(p.name, self.path, named=False)
        return Batch(Position(**p.to_json()), b"", 1, 0, st.st_size, 0, whole=inp)

    def commit(self, batch: Batch, events: int) -> None:
        """The batch was processed: advance its position."""
        p = self._position_of(batch)
        if p is None:
            return
        if batch.whole is not None:
            p.done = True
            p.offset = batch.end_offset
            return
        p.offset = batch.end_offset
        p.line += batch.lines
        p.events += events
        if batch.last_time > self.newest:
            self.newest = batch.last_time

    def _position_of(self, batch: Batch) -> Position | None:
        sid = batch.pos.sid
        if self.pos.sid == sid:
            return self.pos
        for _, p in self.retired:
            if p.sid == sid:
                return p
        return None

    def positions(self) -> list[Position]:
        return [p for _, p in self.retired] + [self.pos]

    def pending(self) -> bool:
        """Unread bytes remain (the source is behind, not idle)."""
        if self.retired:
            return True
        return not self.whole and not self.unreadable and self.size > self.pos.offset

    def lag_bytes(self) -> int:
        return max(0, self.size - self.pos.offset) if not (self.whole or self.unreadable) else 0

    def gone(self, settle: float) -> bool:
        """Deleted after it was read to its end (a spool segment pruned, an old rotation
        removed) and quiet for ``settle`` seconds: nothing more can come from it."""
        if self.fd is None or self.retired or self.pending() or time.monotonic() - self.last_data < settle:
            return False
        try:
            os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return False

    def close(self) -> None:
        for fd, _ in self.retired:
            os.close(fd)
        self.retired = []
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_ROTATED = re.compile(r"([.-]\d+)+$")  # logrotate's and shippers' suffixes: x.log.1, x.jsonl-20240506


def is_log_name(name: str) -> bool:
    """A log file by its name, rotated copies (``x.log.1``, ``x.jsonl-20240506``) included."""
    lower = name.lower()
    return os.path.splitext(lower)[1] in LOG_EXTENSIONS or \
        os.path.splitext(_ROTATED.sub("", lower))[1] in LOG_EXTENSIONS


class DirWatcher:
    """A directory: every log file under it (recursively) is followed; new files join."""

    def __init__(self, path: str) -> None:
        self.path = path

    def scan(self) -> list[str]:
        out = []
        for root, dirs, files in os.walk(self.path):
            dirs.sort()
            for name in sorted(files):
                if is_log_name(name):
                    out.append(os.path.join(root, name))
        return out


class StdinSource:
    """Standard input: lines as they come (never blocking); not replayable after a restart."""

    kind = "stdin"

    def __init__(self, sid: int, fd: int = 0) -> None:
        self.fd = fd
        self.pos = Position(sid, STDIN)
        self.buf = b""
        self.eof = False
        self.size = 0
        self.last_data = time.monotonic()
        self.newest = 0.0
        self.whole = False
        self.problem: str | None = None
        os.set_blocking(fd, False)

    def poll(self, notes: list[str], settle: float) -> Batch | None:
        while not self.eof and len(self.buf) < BATCH_BYTES:
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                break
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
            self.size += len(chunk)
            self.last_data = time.monotonic()
        p = self.pos
        if p.fmt is None and self.buf:
            if b"\n" not in self.buf and not self.eof:
                return None
            p.fmt = sniff_text(self.buf[:4096])
            if p.fmt is None:
                if self.problem is None:
                    self.problem = f"{STDIN}: not a followed format (UTF-8 NDJSON, Windows XML, Zeek)"
                    notes.append(self.problem)
                self.buf = b""
                return None
        if self.eof and self.buf and not self.buf.endswith(b"\n"):
            self.buf += b"\n"  # the last line without its newline is still a line
        end = self.buf.rfind(_XML_END) + len(_XML_END) if p.fmt == "xml" else self.buf.rfind(b"\n") + 1
        if p.fmt == "xml" and end < len(_XML_END):
            end = 0
        if end <= 0:
            if len(self.buf) >= BATCH_BYTES:
                notes.append(f"<stdin>: a record longer than {BATCH_BYTES >> 20} MiB: skipped")
                self.buf = b""
            return None
        data, self.buf = self.buf[:end], self.buf[end:]
        if p.fmt == "zeek":
            FileFollower._keep_header(p, data)
        return Batch(Position(**p.to_json()), data, p.line + 1, p.events, p.offset + end, data.count(b"\n"))

    def commit(self, batch: Batch, events: int) -> None:
        p = self.pos
        p.offset = batch.end_offset
        p.line += batch.lines
        p.events += events
        if batch.last_time > self.newest:
            self.newest = batch.last_time

    @property
    def done(self) -> bool:
        return self.eof and not self.buf

    def positions(self) -> list[Position]:
        return [self.pos]

    def identities(self) -> set[tuple[int, int]]:
        return set()

    def pending(self) -> bool:
        return bool(self.buf)

    def lag_bytes(self) -> int:
        return len(self.buf)

    def close(self) -> None:
        pass


HISTORY = 256  # finished generations remembered (to recognise a renamed or copied file)


class Sources:
    """Every source of one watch: the paths and directories named, stdin, their positions.

    ``restore`` takes a checkpoint's positions; ``poll`` returns the next batch of any source
    (round robin, so a busy file does not starve the others); ``positions`` is what the next
    checkpoint stores.
    """

    def __init__(self, paths: list[str], *, settle: float = 2.0) -> None:
        self.settle = settle
        self.followers: dict[str, FileFollower] = {}  # path -> follower
        self.dirs: list[DirWatcher] = []
        self.stdin: StdinSource | None = None
        self.history: list[Position] = []  # finished generations (renamed/copied files match them)
        self.next_sid = 0
        self.notes: list[str] = []  # one-line problems and events for the operator
        self.named_missing: list[str] = []
        self._order: list[Any] = []
        self._turn = 0
        self._last_scan = 0.0
        self.paths = paths

    def new_sid(self) -> int:
        self.next_sid += 1
        return self.next_sid - 1

    def start(self, saved: dict[str, Any] | None) -> None:
        """Set up the named sources, resuming the positions of a checkpoint (``saved``)."""
        if saved:
            self.next_sid = saved.get("next_sid", 0)
            self.history = [Position.from_json(p) for p in saved.get("history", [])]
            for data in saved.get("positions", []):
                self._restore(Position.from_json(data))
        for path in self.paths:
            if path == "-":
                if self.stdin is None:
                    self.stdin = StdinSource(self.new_sid())
                continue
            if os.path.isdir(path):
                self.dirs.append(DirWatcher(path))
            elif path not in self.followers:
                self.followers[path] = FileFollower(path, Position(self.new_sid(), path), self.new_sid)
        for f in self.followers.values():
            if f.fd is None:
                f.open(self.notes)
        self.scan(force=True)

    def _restore(self, p: Position) -> None:
        if p.done:
            return
        f = self.followers.get(p.name)
        if f is None:
            f = self.followers[p.name] = FileFollower(p.name, p, self.new_sid)
            return
        # two live generations of one path: the older one was rotated away while being read
        older, newer = (p, f.pos) if p.generation < f.pos.generation else (f.pos, p)
        f.pos = newer
        fd = _find_inode(os.path.dirname(p.name) or ".", older)
        if fd is None:
            self.notes.append(f"{p.name}: the rotated file (generation {older.generation}) is gone: the rest "
                              "of it was not read")
        else:
            f.retired.append((fd, older))

    def scan(self, force: bool = False) -> None:
        """Look for new files in the watched directories (at most once a second)."""
        now = time.monotonic()
        if not force and now - self._last_scan < 1.0:
            return
        self._last_scan = now
        for path, f in list(self.followers.items()):
            if path not in self.paths and f.gone(self.settle):
                f.close()
                f.pos.done = True
                self.history.append(f.pos)
                del self.followers[path]
        del self.history[:-HISTORY]
        known: set[tuple[int, int]] = set()
        live: list[Position] = []
        for f in self.followers.values():
            known |= f.identities()
            if f.pos.fp_len:
                live.append(f.pos)
        for d in self.dirs:
            for path in d.scan():
                if path in self.followers:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in known:
                    continue  # a followed file under another name (renamed by a rotation)
                if any(_same_start(path, st, p) for p in live):
                    continue  # a copy of a followed file (copytruncate under way): wait for the truncation
                f = self.followers[path] = FileFollower(path, self._resume(path, st), self.new_sid)
                f.open(self.notes)
        self._order = list(self.followers.values()) + ([self.stdin] if self.stdin is not None else [])

    def _resume(self, path: str, st: os.stat_result) -> Position:
        """A new file's position: where we stopped if it is a generation we read before (a
        renamed or copied file starts with the same bytes and is at least as long)."""
        for i, old in enumerate(self.history):
            if old.offset <= st.st_size and _same_start(path, st, old):
                del self.history[i]
                self.notes.append(f"{path}: a rotated copy of {old.name}: read on from byte {old.offset}")
                return Position(self.new_sid(), path, fp=old.fp, fp_len=old.fp_len, offset=old.offset,
                                line=old.line, events=old.events, fmt=old.fmt, header=list(old.header))
        return Position(self.new_sid(), path)

    def poll(self) -> tuple[Any, Batch] | None:
        """The next batch of any source, or None when none has a complete record to read."""
        self.scan()
        order = self._order
        n = len(order)
        for i in range(n):
            src = order[(self._turn + i) % n]
            try:
                batch = src.poll(self.notes, self.settle)
            except OSError as exc:
                self.notes.append(f"{getattr(src, 'path', STDIN)}: read failed: {exc.strerror or exc}")
                batch = None
            if isinstance(src, FileFollower) and src.finished:
                self.history.extend(src.finished)
                src.finished = []
                del self.history[:-HISTORY]
            if batch is not None:
                self._turn = (self._turn + i + 1) % n
                return src, batch
        return None

    def all(self) -> list[Any]:
        return list(self._order)

    def positions(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for f in self.followers.values():
            out.extend(p.to_json() for p in f.positions())
        return {"next_sid": self.next_sid, "positions": out, "history": [p.to_json() for p in self.history]}

    def close(self) -> None:
        for f in self.followers.values():
            f.close()


def _same_start(path: str, st: os.stat_result, p: Position) -> bool:
    """Does the file begin with the bytes ``p`` fingerprinted?"""
    if not p.fp_len or st.st_size < p.fp_len:
        return False
    try:
        with open(path, "rb") as fh:
            return fingerprint(fh.read(p.fp_len)) == p.fp
    except OSError:
        return False


def _find_inode(directory: str, p: Position) -> int | None:
    """An open descriptor on the file with ``p``'s identity in ``directory`` (renamed by a
    rotation while we were stopped), or None."""
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for name in names:
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (p.dev, p.ino):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            if FileFollower._fp_ok(fd, p):
                return fd
            os.close(fd)
    return None
