"""Input discovery and reader dispatch.

``discover`` expands the user's paths into readable units (files, directory trees, ``.zip``
members; ``.gz`` is decompressed on the fly). ``read_input`` sniffs each unit's content —
never trusting the extension alone — and hands it to the reader for its format. Every
problem becomes a counted :class:`~scmwatch.events.model.ReadError`; nothing raises to the
caller and the other inputs are still read.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from scmwatch.events.evtx_reader import MAGIC, read_evtx
from scmwatch.events.json_reader import read_json
from scmwatch.events.model import Event, ReadGate, ReadStats
from scmwatch.events.text import CHUNK, Prefixed, sniff_encoding
from scmwatch.events.xml_reader import read_xml
from scmwatch.events.zeek_reader import read_zeek_tsv, zeek_path_from_name

# Extensions a directory walk picks up (explicitly named files are always tried).
LOG_EXTENSIONS = frozenset({".evtx", ".json", ".jsonl", ".ndjson", ".xml", ".log", ".tsv", ".gz", ".zip"})
# The first bytes of the ground-truth file `scmwatch simulate` writes beside its logs
# (simulate/labels.py): not a log, so it is counted as skipped rather than read as events.
SIMULATOR_LABELS = b'{"kind":"pack"'
ZEEK_LOGS = frozenset(
    {"dce_rpc", "smb_files", "smb_mapping", "conn", "ntlm", "kerberos", "dns", "files", "rdp"}
)


@dataclass(frozen=True, slots=True)
class InputFile:
    """One readable unit: a file on disk, or one member of a ``.zip`` archive."""

    name: str  # provenance name: the path, or ``archive.zip!member``
    path: str  # the file on disk
    member: str | None = None
    named: bool = True  # named by the user (not found by a directory walk): failure → exit 1

    def open(self) -> BinaryIO:
        if self.member is None:
            return open(self.path, "rb")
        archive = zipfile.ZipFile(self.path)
        return archive.open(self.member)  # the member keeps the archive open until closed

    @property
    def inner_name(self) -> str:
        """The name that says the format: without ``.gz``, of the member for archives."""
        name = self.member or self.path
        return name[:-3] if name.lower().endswith(".gz") else name


def _is_log_name(name: str) -> bool:
    lower = name.lower()
    return os.path.splitext(lower)[1] in LOG_EXTENSIONS


def discover(paths: Iterable[str], stats: ReadStats) -> Iterator[InputFile]:
    """Expand paths (files, directories recursively, zip archives) into inputs, in a stable order."""
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for fname in sorted(files):
                    full = os.path.join(root, fname)
                    if _is_log_name(fname):
                        yield from _expand(full, stats, named=False)
                    else:
                        stats.files_skipped += 1
        elif os.path.exists(path):
            yield from _expand(path, stats, named=True)
        else:
            stats.files_failed += 1
            stats.named_failed += 1
            stats.error(path, "unreadable", "no such file or directory")


def _expand(path: str, stats: ReadStats, named: bool) -> Iterator[InputFile]:
    if not path.lower().endswith(".zip"):
        yield InputFile(path, path, named=named)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        stats.files_failed += 1
        stats.named_failed += named
        stats.error(path, "unreadable", f"not a readable zip archive ({exc})")
        return
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
    layer less per event and no buffered file object per file. Everything else (text formats,
    ``.gz``, archive members) goes through :func:`_read_stream`. ``gate`` (optional) lets
    the EVTX reader skip records nobody wants (:class:`~scmwatch.events.model.ReadGate`).
    """
    if inp.member is None and not inp.name.lower().endswith(".gz"):
        try:
            fd = os.open(inp.path, os.O_RDONLY)
            try:
                head = os.read(fd, SNIFF)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as exc:
            stats.files += 1
            stats.files_failed += 1
            stats.named_failed += inp.named
            stats.error(inp.name, "unreadable", exc.strerror or str(exc))
            return iter(())
        if head.startswith(MAGIC):
            stats.files += 1
            return read_evtx(inp.name, inp.path, stats, head, size, named=inp.named, gate=gate)
    return _read_stream(inp, stats)


def _read_stream(inp: InputFile, stats: ReadStats) -> Iterator[Event]:
    """Open, sniff and read one input as a stream (text formats, compressed or archived)."""
    stats.files += 1
    before = stats.events
    failed_before = stats.files_failed
    try:
        raw = inp.open()
    except OSError as exc:
        stats.files_failed += 1
        stats.named_failed += inp.named
        stats.error(inp.name, "unreadable", exc.strerror or str(exc))
        return
    try:
        stream: BinaryIO = gzip.GzipFile(fileobj=raw) if inp.name.lower().endswith(".gz") else raw
        yield from _dispatch(inp, stream, stats)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        read = stats.events - before
        stats.error(inp.name, "unreadable", f"read failed after {read} events: {exc}")
        if not read:
            stats.files_failed += 1
    finally:
        raw.close()
        if inp.named and stats.files_failed > failed_before:
            stats.named_failed += 1


SNIFF = 4096  # enough to tell the formats apart; the EVTX parser re-reads the file itself


def _dispatch(inp: InputFile, stream: BinaryIO, stats: ReadStats) -> Iterator[Event]:
    """The reader for this input's content (a plain function: one generator layer less per event)."""
    head = stream.read(SNIFF)
    name = inp.name
    if head.startswith(MAGIC):
        if inp.member is None and not inp.name.lower().endswith(".gz"):
            return read_evtx(name, inp.path, stats, head, os.fstat(stream.fileno()).st_size)
        return _spooled_evtx(name, head, stream, stats)
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
            return fmt.read(inp, rest, stats, encoding)
    stats.files_failed += 1
    stats.error(name, "format", "not a supported log format (EVTX, JSON/NDJSON, Windows XML, Zeek)")
    return iter(())


@dataclass(frozen=True, slots=True)
class TextFormat:
    """A text log format: recognised by the start of its decoded text (BOM and leading white
    space removed), read by ``read(input, stream, stats, encoding)``."""

    name: str
    sniff: Callable[[str], bool]
    read: Callable[[InputFile, BinaryIO, ReadStats, str], Iterator[Event]]


def _zeek_tsv(inp: InputFile, stream: BinaryIO, stats: ReadStats, encoding: str) -> Iterator[Event]:
    return read_zeek_tsv(inp.name, stream, stats)


def _json(inp: InputFile, stream: BinaryIO, stats: ReadStats, encoding: str) -> Iterator[Event]:
    zeek = zeek_path_from_name(inp.inner_name)  # Zeek JSON logs are told apart by their file name
    return read_json(inp.name, stream, stats, encoding, zeek if zeek in ZEEK_LOGS else None)


def _xml(inp: InputFile, stream: BinaryIO, stats: ReadStats, encoding: str) -> Iterator[Event]:
    return read_xml(inp.name, stream, stats, encoding)


# The reader registry. EVTX is recognised first, by its binary magic (``read_input``); the text
# formats are tried in this order. A new format is one reader module plus one row here.
TEXT_FORMATS: tuple[TextFormat, ...] = (
    TextFormat("zeek", lambda text: text.startswith("#separator"), _zeek_tsv),
    TextFormat("json", lambda text: text[:1] in "{[", _json),
    TextFormat("xml", lambda text: text[:1] == "<", _xml),
)


def _spooled_evtx(name: str, head: bytes, stream: BinaryIO, stats: ReadStats) -> Iterator[Event]:
    """The EVTX parser needs to seek: a compressed or archived EVTX file is spooled to disk first."""
    with tempfile.TemporaryFile() as tmp:
        tmp.write(head)
        shutil.copyfileobj(stream, tmp, CHUNK)
        yield from read_evtx(name, tmp, stats)


def iter_events(paths: Iterable[str], stats: ReadStats) -> Iterator[Event]:
    """All events of all inputs, file by file, in discovery order."""
    for inp in discover(paths, stats):
        yield from read_input(inp, stats)
