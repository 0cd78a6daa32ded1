"""Input discovery and reader dispatch.

``discover`` expands the user's paths into readable units (files, directory trees, ``.zip``
members; ``.gz`` is decompressed on the fly). ``read_input`` sniffs each unit's content —
never trusting the extension alone — and hands it to the reader for its format. Every
problem becomes a counted :class:`~scmwatch.events.model.ReadError`; nothing raises to the
caller and the other inputs are still read.
"""

from __future__ import annotations

import errno
import io
import os
import select
import stat
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from scmwatch.events.evtx_reader import MAGIC, PROBE, read_evtx, read_small
from scmwatch.events.json_reader import read_json
from scmwatch.events.model import Event, ReadGate, ReadStats
from scmwatch.events.text import CHUNK, Prefixed, sniff_encoding
from scmwatch.events.zeek_reader import read_zeek_tsv, zeek_log_type
from scmwatch.native import pure_python

# Extensions a directory walk picks up (explicitly named files are always tried).
LOG_EXTENSIONS = frozenset({".evtx", ".json", ".jsonl", ".ndjson", ".xml", ".log", ".tsv", ".gz", ".zip"})
# The first bytes of the ground-truth file `scmwatch simulate` writes beside its logs
# (simulate/labels.py): not a log, so it is counted as skipped rather than read as events.
SIMULATOR_LABELS = b'{"kind":"pack"'
# A compressed or archived EVTX is inflated to a temporary file (the parser seeks). Past
# MAX_INFLATE bytes, or past MAX_RATIO times its compressed size once it is larger than
# RATIO_FLOOR, it is a decompression bomb, not a log: Windows caps a classic log at 4 GiB, and
# real EVTX files compress 5-30x (zeroed preallocated chunks are the 1,000x case, at most a
# few MiB of them).
MAX_INFLATE = 4 << 30
MAX_RATIO = 100
RATIO_FLOOR = 64 << 20
# A pipe named on the command line (``<(zcat x.gz)``, a FIFO) is read until its writer closes
# it; PIPE_IDLE seconds without a byte ends the read with an error instead of waiting forever.
PIPE_IDLE = 30.0


@dataclass(frozen=True, slots=True)
class InputFile:
    """One readable unit: a file on disk, or one member of a ``.zip`` archive."""

    name: str  # provenance name: the path, or ``archive.zip!member``
    path: str  # the file on disk
    member: str | None = None
    named: bool = True  # named by the user (not found by a directory walk): failure → exit 1
    pipe: bool = False  # a FIFO or pipe named on the command line: read with an idle timeout
    # bytes, when known without asking again: a remote listing's, a walk's stat of a plain file
    # (the client of a cluster hunt otherwise stat'ed each small file four times)
    size: int | None = None

    @property
    def url(self) -> bool:
        """A remote object (``s3://``, ``https://``, ...) read through fsspec, not a local path."""
        return is_url(self.path)

    def open(self) -> BinaryIO:
        """The unit's bytes. Raises OSError (or zipfile.BadZipFile) when it cannot be read; an
        archive member zipfile cannot extract (encrypted, deflate64, ...) is an OSError too."""
        if self.url:
            return _open_url(self.path)
        if self.pipe:
            return io.BufferedReader(_Pipe(self.path, PIPE_IDLE), CHUNK)
        if self.member is None:
            return open(self.path, "rb")
        import zipfile

        archive = zipfile.ZipFile(self.path)
        try:
            return archive.open(self.member)  # the member keeps the archive open until closed
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            archive.close()
            raise OSError(errno.EINVAL, f"cannot extract this member ({exc})") from exc

    def compressed_size(self) -> int | None:
        """Bytes on disk (or in the archive) behind this unit; None for a pipe."""
        if self.pipe:
            return None
        if self.url:
            if self.size is not None:
                return self.size
            try:
                return int(_fs(self.path)[0].size(self.path))
            except Exception:  # noqa: BLE001 - any backend's error: the size is only a hint
                return None
        try:
            if self.member is not None:
                import zipfile

                with zipfile.ZipFile(self.path) as archive:
                    return archive.getinfo(self.member).compress_size
            return os.path.getsize(self.path)
        except (OSError, KeyError, *_archive_errors()):
            return None

    @property
    def inner_name(self) -> str:
        """The name that says the format: without ``.gz``, of the member for archives."""
        name = self.member or self.path
        return name[:-3] if name.lower().endswith(".gz") else name


def _walked_maker() -> Callable[[str, int], InputFile]:
    """``walked(path, size)``: ``InputFile(path, path, named=False, size=size)``, made without
    the frozen dataclass's ``__init__``, which looks up and calls ``object.__setattr__`` for each
    field (~9k instructions per file: 13M of the 22.5M a walk of x5's 1,390 files cost before
    its hunt forks, callgrind); each slot's own setter instead, 865 -> 420 ns per file. A
    field added to ``InputFile`` fails the unpacking here, at import."""
    set_name, set_path, set_member, set_named, set_pipe, set_size = (
        InputFile.__dict__[f].__set__ for f in InputFile.__dataclass_fields__)
    new = object.__new__

    def walked(path: str, size: int) -> InputFile:
        f = new(InputFile)
        set_name(f, path)
        set_path(f, path)
        set_member(f, None)
        set_named(f, False)
        set_pipe(f, False)
        set_size(f, size)
        return f

    return walked


_walked = _walked_maker()


class _Pipe(io.RawIOBase):
    """A FIFO or pipe, read without ever blocking longer than ``idle`` seconds.

    Opened non-blocking, so a FIFO no writer ever opens does not hang ``open``; each read waits
    for data with ``poll`` and a timeout (Linux reports such a FIFO neither readable nor hung
    up). End of data: the writer closed its end (``POLLHUP``, then an empty read).
    """

    def __init__(self, path: str, idle: float) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._idle = idle
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if not self._poll.poll(self._idle * 1000):
                raise OSError(errno.ETIMEDOUT, f"no data for {self._idle:g} s (a FIFO nobody writes to?)")
            try:
                data = os.read(self._fd, len(buffer))
            except BlockingIOError:
                continue
            buffer[: len(data)] = data
            return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def is_url(path: str) -> bool:
    """``scheme://...`` other than ``file://``: read with fsspec (``scmwatch[remote]``)."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isalnum() and scheme.lower() != "file"


#: URL scheme -> the extra that installs its fsspec implementation (pyproject.toml).
URL_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az",
              "http": "remote", "https": "remote"}


def _fs(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise OSError(errno.ENOTSUP, "reading URLs needs fsspec: pip install 'scmwatch[remote]'") from exc
    try:
        return url_to_fs(url)
    except ImportError as exc:  # the scheme's implementation is not installed
        extra = URL_EXTRAS.get(url.split("://", 1)[0].lower())
        hint = f": pip install 'scmwatch[{extra}]'" if extra else ""
        raise OSError(errno.ENOTSUP, f"{exc}{hint}") from exc
    except ValueError as exc:  # no implementation known for the scheme, or a bad URL
        raise OSError(errno.ENOTSUP, str(exc)) from exc


def _open_url(url: str) -> BinaryIO:
    """Open a remote object through its fsspec implementation; credentials come from that
    implementation's own environment and config (never from scmwatch's command line)."""
    fs, path = _fs(url)
    try:
        return fs.open(path, "rb")
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - backends raise their own types (aiohttp, botocore)
        raise OSError(errno.EIO, f"{type(exc).__name__}: {exc}") from exc


def _url_inputs(url: str, stats: ReadStats) -> Iterator[InputFile]:
    """A remote file, or every log file under a remote directory (fsspec ``find``)."""
    try:
        fs, path = _fs(url)
        if fs.isdir(path):
            # with their sizes, once, for the progress bar, batching and splitting: S3/GCS/Azure
            # list them; an HTTP index page does not, so each is asked (HEAD) here
            found = fs.find(path, detail=True)
            proto = url.split("://", 1)[0]
            for name in sorted(found):
                full = name if "://" in name else f"{proto}://{name}"
                if _is_log_name(full):
                    size = _known_size(found[name])
                    if size is None:
                        size = _info_size(fs, name)
                    yield InputFile(full, full, named=False, size=size)
                else:
                    stats.files_skipped += 1
            return
        size = _info_size(fs, path)
    except OSError as exc:
        stats.files_failed += 1
        stats.named_failed += 1
        stats.error(url, "unreadable", _why(exc))
        return
    except Exception as exc:  # noqa: BLE001 - a backend's own error type
        stats.files_failed += 1
        stats.named_failed += 1
        stats.error(url, "unreadable", f"{type(exc).__name__}: {exc}")
        return
    yield InputFile(url, url, named=True, size=size)


def _info_size(fs: Any, path: str) -> int | None:
    try:
        return _known_size(fs.info(path))
    except Exception:  # noqa: BLE001 - only a hint; reading the object says what is wrong
        return None


def _known_size(info: Any) -> int | None:
    """The size in an fsspec info dict (None when the backend does not say: the bar then counts
    the object as 0 bytes rather than ask again)."""
    size = info.get("size") if isinstance(info, dict) else None
    return size if isinstance(size, int) and size >= 0 else None


_LOG_SUFFIXES = tuple(LOG_EXTENSIONS)


def _is_log_name(name: str) -> bool:
    """``os.path.splitext(name.lower())[1] in LOG_EXTENSIONS``, without ``splitext``'s Python
    code: the lower-cased name ends in one of the extensions (each a dot and letters), and its
    base name holds something other than dots before that dot (``splitext`` gives ``.evtx`` or
    ``a/..evtx`` no extension). The walk of the attack corpus x5 asks it for each of its 1,530
    names before the ``--jobs`` worker forks (:class:`Prewalk`; :func:`dir_inputs` again for the
    140 it did not list): ~0.6 us a name with ``splitext``."""
    lower = name.lower()
    if not lower.endswith(_LOG_SUFFIXES):
        return False
    dot = lower.rfind(".")
    return lower[lower.rfind("/", 0, dot) + 1:dot].strip(".") != ""


def discover(paths: Iterable[str], stats: ReadStats, prewalk: Prewalk | None = None) -> Iterator[InputFile]:
    """Expand paths (files, directories recursively, zip archives) into inputs, in a stable order.

    A walk takes regular files only: a FIFO, socket or device in a directory is counted
    (``special-file``) and skipped -- opening a FIFO nobody writes to would block forever. A
    path named on the command line may be a pipe (read with an idle timeout, see ``_Pipe``).
    ``prewalk``: the listing and the stats of the directories among ``paths``, begun earlier.
    """
    for path in paths:
        path = os.fspath(path)
        if is_url(path):
            yield from _url_inputs(path, stats)
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            stats.files_failed += 1
            stats.named_failed += 1
            stats.error(path, "unreadable", _why(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            levels = prewalk.levels(path) if prewalk is not None else None
            if levels is None:
                yield from _walk(path, stats)
            else:
                looked = prewalk.looked()
                for root, files in levels:
                    yield from dir_inputs(root, files, stats, looked)
        elif stat.S_ISREG(st.st_mode):
            yield from _expand(path, stats, named=True, size=st.st_size)
        elif stat.S_ISFIFO(st.st_mode):
            yield InputFile(path, path, named=True, pipe=True)
        else:
            stats.files_failed += 1
            stats.named_failed += 1
            stats.error(path, "unreadable", "not a regular file, directory or pipe (a device or socket)")


class InputStream:
    """The inputs of a walk that arrive in waves, in walk order: a cluster's workers list the
    directories while the inputs of the first listings are already being hunted
    (``run_hunt(expand=...)``). Iterating it gives every input, waiting for each wave; indexing
    and ``len`` see the inputs arrived so far; a unit mapper takes each wave as it arrives
    (:meth:`next_wave`). ``expected``: about how many waves come (a mapper gives each wave its
    share of the tasks); ``on_wave`` is called with each wave as it arrives (the progress
    bar's total); ``done``: the last wave is in."""

    def __init__(self, waves: Iterable[list[InputFile]], expected: int = 1) -> None:
        self._waves = iter(waves)
        self.arrived: list[InputFile] = []
        self.expected = max(1, expected)
        self.done = False
        self.on_wave: Callable[[list[InputFile]], None] | None = None

    def next_wave(self) -> list[InputFile] | None:
        """The next wave (waiting for it), or None after the last."""
        if self.done:
            return None
        wave = next(self._waves, None)
        if wave is None:
            self.done = True
            return None
        self.arrived.extend(wave)
        if self.on_wave is not None:
            self.on_wave(wave)
        return wave

    def close(self) -> None:
        """Stop waiting for the waves still to come (an interrupted hunt)."""
        close = getattr(self._waves, "close", None)
        if close is not None:
            close()
        self.done = True

    def __iter__(self) -> Iterator[InputFile]:
        i = 0
        while True:
            while i < len(self.arrived):
                yield self.arrived[i]
                i += 1
            if self.next_wave() is None:
                return

    def __len__(self) -> int:
        return len(self.arrived)

    def __getitem__(self, i: int) -> InputFile:
        return self.arrived[i]


def _why(exc: OSError) -> str:
    """An OSError as the user should read it (``os.strerror`` says "Too many levels of ...")."""
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    return exc.strerror or str(exc)


def _walk(top: str, stats: ReadStats) -> Iterator[InputFile]:
    for root, files in _levels(top):
        yield from dir_inputs(root, files, stats)


def _levels(top: str) -> Iterator[tuple[str, list[str]]]:
    """Each directory of the walk of ``top`` with its file names, in walk order."""
    for root, dirs, files in os.walk(top):
        dirs.sort()
        yield root, files


def _py_modes(paths: list[str]) -> list[tuple[int, int] | None]:
    """Each path's ``(st_mode, st_size)``, None where it cannot be stat'ed: the Python twin of
    ``scmwatch.sigma._stat.modes``."""
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_mode, st.st_size))
    return out


def _modes() -> Callable[[list[str]], list[tuple[int, int] | None]]:
    """``_stat.modes``, or its Python twin (pure Python, or built without the C extensions)."""
    if pure_python():
        return _py_modes
    try:
        from scmwatch.sigma._stat import modes
    except ImportError:
        return _py_modes
    return modes


class Prewalk:
    """The walk of the directories among ``paths`` begun before the hunt needs it: the names
    are listed at once, and the log files among them stat'ed in a thread that releases the GIL
    for all of them (``_stat.modes``), while this one goes on (the CLI loads the rule set
    meanwhile: a second core does the stats). :func:`discover` then takes the listing and the
    stats from here; a file whose stat failed is stat'ed again there, for its error.

    Measured on the EVTX attack samples x5 (81 directories, 1,391 log files): the walk took
    17-41 ms of the serial start of a hunt (load 4-6), its stats ~10-15 ms of it."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._levels: dict[str, list[tuple[str, list[str]]]] = {}
        names: list[str] = []
        for path in paths:
            if path in self._levels or is_url(path) or not os.path.isdir(path):
                continue
            levels = self._levels[path] = list(_levels(path))
            for root, files in levels:
                prefix = os.path.join(root, "")
                names += [prefix + f for f in files if _is_log_name(f)]
        self._names = names
        self._modes: list[tuple[int, int] | None] = []
        self._thread: threading.Thread | None = None
        if names:
            self._thread = threading.Thread(target=self._stat, args=(_modes(),), name="scmwatch-prewalk",
                                            daemon=True)
            self._thread.start()

    def _stat(self, modes: Callable[[list[str]], list[tuple[int, int] | None]]) -> None:
        self._modes = modes(self._names)

    def levels(self, top: str) -> list[tuple[str, list[str]]] | None:
        """The walk of ``top`` (:func:`_levels`), or None when it was not listed here."""
        return self._levels.get(top)

    def looked(self) -> dict[str, tuple[int, int] | None]:
        """Each listed log file's ``(st_mode, st_size)`` (None: stat it again), once stat'ed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if len(self._modes) != len(self._names):  # the thread failed: each is stat'ed again
            return {}
        return dict(zip(self._names, self._modes, strict=True))


def walk_level(top: str) -> tuple[list[str], list[str]]:
    """One level of a directory walk, names only (no ``stat``): ``top``'s file names, sorted,
    and the subdirectories the walk descends into (not symlinks), in walk order. The walk of
    ``top`` is :func:`dir_inputs` of those names followed by the walk of each subdirectory, so
    the parts can be walked apart (by a cluster's workers) and joined in this order."""
    for root, dirs, files in os.walk(top):
        dirs.sort()
        subs = [os.path.join(root, d) for d in dirs]
        return sorted(files), [d for d in subs if not os.path.islink(d)]
    return [], []


def walk_tree(top: str, stats: ReadStats) -> list[InputFile]:
    """Every input under the directory ``top``, as the walk of a directory named on the command
    line finds them there."""
    return list(_walk(top, stats))


def dir_inputs(root: str, files: Iterable[str], stats: ReadStats,
               looked: dict[str, tuple[int, int] | None] | None = None) -> Iterator[InputFile]:
    """The inputs among the files ``files`` of the directory ``root``, in name order;
    ``looked``: their ``(st_mode, st_size)`` stat'ed before (:class:`Prewalk`), which lists only
    log files' names, so a name found there is not asked :func:`_is_log_name` again."""
    prefix = os.path.join(root, "")  # each name joined as os.path.join does, without a call per file
    for fname in sorted(files):
        full = prefix + fname
        got = looked.get(full) if looked is not None else None
        if got is not None:
            mode, size = got
        else:
            if not _is_log_name(fname):
                stats.files_skipped += 1
                continue
            try:
                st = os.stat(full)
            except OSError as exc:
                stats.files_failed += 1
                stats.error(full, "unreadable", _why(exc))
                continue
            mode, size = st.st_mode, st.st_size
        if not stat.S_ISREG(mode):
            stats.files_skipped += 1
            stats.error(full, "special-file", "not a regular file (FIFO, socket or device): skipped")
        elif fname[-4:].lower() == ".zip":
            yield from _expand(full, stats, named=False, size=size)
        else:
            yield _walked(full, size)


def _expand(path: str, stats: ReadStats, named: bool, size: int | None = None) -> Iterator[InputFile]:
    if not path.lower().endswith(".zip"):
        yield InputFile(path, path, named=named, size=size)
        return
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.filename.endswith("/")]
    except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on a damaged directory
        stats.files_failed += 1
        stats.named_failed += named
        stats.error(path, "unreadable", f"not a readable zip archive ({type(exc).__name__}: {exc})")
        return
    if not members:
        stats.error(path, "empty", "zip archive holds no file")
    for member in members:
        if _is_log_name(member.filename):
            yield InputFile(f"{path}!{member.filename}", path, member.filename, named=False)
        else:
            stats.files_skipped += 1


def read_input(inp: InputFile, stats: ReadStats, gate: ReadGate | None = None) -> Iterator[Event]:
    """Sniff one input and return an iterator of its normalized events; problems are counted,
    not raised.

    A plain EVTX file on disk (the common case, and often thousands of small files) is sniffed
    with raw ``os`` calls and its reader returned directly, without a wrapping generator: one
    layer less per event and no buffered file object per file; a small one (``WHOLE_EVTX``) is
    read right there (each chunk's used part: :func:`~scmwatch.events.evtx_reader.read_small`),
    so it is opened once. Everything else (text formats,
    ``.gz``, archive members, pipes) goes through :func:`_read_stream`. ``gate`` (optional) lets
    the EVTX reader, and the NDJSON reader of evtx_dump lines, skip records nobody wants
    (:class:`~scmwatch.events.model.ReadGate`).
    """
    if inp.member is None and not inp.pipe and not inp.url and not inp.name.lower().endswith(".gz"):
        try:
            fd = os.open(inp.path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, even on a FIFO
            try:
                st = os.fstat(fd)
                head = os.read(fd, SNIFF + PROBE) if stat.S_ISREG(st.st_mode) else b""
                size = st.st_size
                body = (read_small(fd, inp.path, head, size) if SNIFF < size <= WHOLE_EVTX
                        and len(head) >= SNIFF and head.startswith(MAGIC) else None)
                head = head[:SNIFF]
            finally:
                os.close(fd)
        except OSError as exc:
            stats.files += 1
            stats.files_failed += 1
            stats.named_failed += inp.named
            stats.error(inp.name, "unreadable", _why(exc))
            return iter(())
        if not stat.S_ISREG(st.st_mode):  # replaced since discovery: not opened blocking
            stats.files += 1
            stats.files_failed += 1
            stats.named_failed += inp.named
            stats.error(inp.name, "special-file", "no longer a regular file: skipped")
            return iter(())
        if head.startswith(MAGIC):
            stats.files += 1
            return read_evtx(inp.name, inp.path, stats, head, size, named=inp.named, gate=gate, body=body)
    return _read_stream(inp, stats, gate)


def _archive_errors() -> tuple[type[Exception], ...]:
    """What a damaged archive or compressed stream raises besides ``OSError``, ``EOFError`` and
    ``zlib.error``. Asked only while an exception is handled: ``zipfile`` is imported at the
    first archive or failure, not at every start (~1 ms)."""
    import lzma
    import zipfile

    return (lzma.LZMAError, zipfile.BadZipFile)


def _gunzip(raw: BinaryIO) -> BinaryIO:
    import gzip  # at the first .gz input

    return gzip.GzipFile(fileobj=raw)


def _read_stream(inp: InputFile, stats: ReadStats, gate: ReadGate | None = None) -> Iterator[Event]:
    """Open, sniff and read one input as a stream (text formats, compressed or archived).

    Readers count bad input themselves; an exception that still escapes one (a bug, which the
    fuzz tests hunt for) is reported as ``reader-error`` and the next input is read.
    """
    stats.files += 1
    before = stats.events
    failed_before = stats.files_failed
    try:
        raw = inp.open()
    except (OSError, *_archive_errors()) as exc:
        stats.files_failed += 1
        stats.named_failed += inp.named
        stats.error(inp.name, "unreadable", _why(exc) if isinstance(exc, OSError) else str(exc))
        return
    try:
        stream: BinaryIO = _gunzip(raw) if inp.name.lower().endswith(".gz") else raw
        yield from _dispatch(inp, stream, stats, gate)
    except (OSError, EOFError, zlib.error, struct.error, *_archive_errors()) as exc:
        # a damaged compressed stream, whichever decompressor (gzip, deflate, bzip2, lzma) read it
        read = stats.events - before
        stats.error(inp.name, "unreadable", f"read failed after {read} events: {exc}")
        if not read:
            stats.files_failed += 1
    except Exception as exc:  # noqa: BLE001 - one input's bug must not end the run
        read = stats.events - before
        stats.error(inp.name, "reader-error", f"{type(exc).__name__}: {str(exc)[:200]} (after {read} "
                    "events; rest of this input skipped)")
    finally:
        raw.close()
        if inp.named and stats.files_failed > failed_before:
            stats.named_failed += 1


SNIFF = 4096  # enough to tell the formats apart, and an EVTX file's header
# An EVTX file up to this size is read where it is sniffed and not opened again
# (read_evtx(body=...)): 5 system calls instead of 9 for a one-chunk file, most of the attack
# samples. Larger files are read chunk by chunk (their holes not read). Either way a chunk is
# read up to its free-space offset, the first sniff read taking the first chunk's first page.
WHOLE_EVTX = SNIFF + 4 * 65536


def _dispatch(inp: InputFile, stream: BinaryIO, stats: ReadStats, gate: ReadGate | None) -> Iterator[Event]:
    """The reader for this input's content (a plain function: one generator layer less per event)."""
    head = stream.read(SNIFF)
    name = inp.name
    if head.startswith(MAGIC):
        if inp.member is None and not inp.pipe and not inp.url and not inp.name.lower().endswith(".gz"):
            return read_evtx(name, inp.path, stats, head, os.fstat(stream.fileno()).st_size)
        return _spooled_evtx(inp, head, stream, stats)
    if not head.strip():
        stats.error(name, "empty", "file is empty")
        return iter(())
    if head.startswith(SIMULATOR_LABELS):
        stats.files -= 1
        stats.files_skipped += 1
        return iter(())
    rest = io.BufferedReader(Prefixed(head, stream), CHUNK)
    encoding = sniff_encoding(head)
    if encoding is None:
        stats.files_failed += 1
        stats.error(name, "format", "binary content that is not EVTX, JSON, XML or a Zeek log")
        return iter(())
    text_head = head.decode(encoding, errors="replace").lstrip("\ufeff \t\r\n")
    for fmt in TEXT_FORMATS:
        if fmt.sniff(text_head):
            return fmt.read(inp, rest, stats, encoding, gate)
    stats.files_failed += 1
    stats.error(name, "format", "not a supported log format (EVTX, JSON/NDJSON, Windows XML, Zeek)")
    return iter(())


def is_zeek_tsv(text: str) -> bool:
    """Zeek TSV starts with its ``#separator`` header (or a ``zeek-cut -m`` names line), maybe after
    other ``#`` lines (a btest banner)."""
    for line in text.split("\n", 4)[:4]:
        if line.startswith(("#separator", "ts\tuid\t")):  # the latter: ``zeek-cut -m`` output
            return True
        if not line.startswith("#"):
            return False
    return False


@dataclass(frozen=True, slots=True)
class TextFormat:
    """A text log format: recognised by the start of its decoded text (BOM and leading white
    space removed), read by ``read(input, stream, stats, encoding, gate)``."""

    name: str
    sniff: Callable[[str], bool]
    read: Callable[[InputFile, BinaryIO, ReadStats, str, ReadGate | None], Iterator[Event]]


def _zeek_tsv(inp: InputFile, stream: BinaryIO, stats: ReadStats, encoding: str,
              gate: ReadGate | None) -> Iterator[Event]:
    return read_zeek_tsv(inp.name, stream, stats)


def _json(inp: InputFile, stream: BinaryIO, stats: ReadStats, encoding: str,
          gate: ReadGate | None) -> Iterator[Event]:
    # Zeek JSON lines without _path/@stream are told apart by their file name
    return read_json(inp.name, stream, stats, encoding, zeek_log_type(inp.inner_name), gate)


def _xml(inp: InputFile, stream: BinaryIO, stats: ReadStats, encoding: str,
         gate: ReadGate | None) -> Iterator[Event]:
    """Windows event XML. Its reader (with ``xml.etree`` and its C twin) is imported when the
    first XML input is met: ~3.5 ms of every start that reads none (``-X importtime``)."""
    from scmwatch.events.xml_reader import read_xml

    return read_xml(inp.name, stream, stats, encoding)


# The reader registry. EVTX is recognised first, by its binary magic (``read_input``); the text
# formats are tried in this order. A new format is one reader module plus one row here.
TEXT_FORMATS: tuple[TextFormat, ...] = (
    TextFormat("zeek", is_zeek_tsv, _zeek_tsv),
    TextFormat("json", lambda text: text[:1] in "{[", _json),
    TextFormat("xml", lambda text: text[:1] == "<", _xml),
)


def _spooled_evtx(inp: InputFile, head: bytes, stream: BinaryIO, stats: ReadStats) -> Iterator[Event]:
    """The EVTX parser needs to seek: a compressed, archived or piped EVTX file is spooled to
    disk first, up to the inflation cap (MAX_INFLATE, MAX_RATIO)."""
    packed = inp.compressed_size()
    limit = MAX_INFLATE if packed is None else min(MAX_INFLATE, max(RATIO_FLOOR, MAX_RATIO * packed))
    with tempfile.TemporaryFile() as tmp:
        tmp.write(head)
        written = len(head)
        while True:
            block = stream.read(CHUNK)
            if not block:
                break
            written += len(block)
            if written > limit:
                stats.files_failed += 1
                ratio = f", {MAX_RATIO}x its {packed:,} compressed bytes" if packed is not None else ""
                stats.error(inp.name, "inflate-cap", f"EVTX inflates past {limit:,} bytes (cap: "
                            f"{MAX_INFLATE >> 30} GiB{ratio}): a decompression bomb? not read")
                return
            tmp.write(block)
        yield from read_evtx(inp.name, tmp, stats)


def iter_events(paths: Iterable[str], stats: ReadStats) -> Iterator[Event]:
    """All events of all inputs, file by file, in discovery order."""
    for inp in discover(paths, stats):
        yield from read_input(inp, stats)
