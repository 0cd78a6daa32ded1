"""JSON exports: NDJSON, concatenated pretty-printed objects, and JSON arrays.

Three layouts exist in the wild and a file does not say which it is:

* NDJSON (Winlogbeat, NXLog, Security-Datasets): one object per line, parsed line by line
  with ``orjson`` (fast path; a broken line is counted and skipped).
* concatenated pretty-printed objects without an array (evtx_dump, SigmaHQ regression
  ``.json``), and JSON arrays: parsed incrementally with ``JSONDecoder.raw_decode`` over a
  sliding buffer, so no file is loaded whole.

Each object is then routed by its shape (evtx_dump, ECS, flat, Zeek) to its normalizer. The
provenance ``record_id`` is the line on which the object starts.

The flavour of an NDJSON file is told once, from its first object: a file of evtx_dump
records (JSON exports of EVTX files) or of flat objects (NXLog, Security-Datasets, the
simulator) is read by ``_flatten.NdjsonEvents`` when the C extension is built: blocks split
into lines in C, each line parsed straight into the normalized fields (``from_evtx_dict`` or
``from_flat``'s result, without orjson's dicts), the hunt's :class:`~scmwatch.events.model.ReadGate`
honoured as the EVTX reader does. Every line it is not sure about -- another shape, broken
JSON, a text EventID, a lone surrogate -- goes to the same per-line Python code
(:meth:`_Sink.line`) that reads every line of other files, so counts and messages are the same.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import orjson

from scmwatch.events.ecs import from_ecs
from scmwatch.events.model import Event, ReadGate, ReadStats, odd_event_id
from scmwatch.events.normalize import NdjsonEvents, from_evtx_dict, from_flat, shape_of
from scmwatch.events.sanitize import TooDeep, clean, suspicious
from scmwatch.events.text import CHUNK, Prefixed, TextChunks, read_blocks
from scmwatch.events.zeek_reader import ZEEK_LOGS, normalize_zeek

MAX_OBJECT = 64 << 20  # an object larger than this is treated as corrupt, not buffered forever
# How close to the end of the buffer a decode error may be and still mean "cut short, read on"
# rather than "broken": the longest token the decoder can stop inside (``-Infinity``, ``\uXXXX``).
_TAIL = 16


_NORMALIZERS: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "evtx": from_evtx_dict,
    "ecs": from_ecs,
    "flat": from_flat,
}


class _Sink:
    """Turns decoded objects into events, counting the ones that are not events."""

    __slots__ = ("bad_utf8", "kind", "name", "odd_ids", "replaced", "reported", "stats", "zeek_path")

    def __init__(self, name: str, stats: ReadStats, kind: str, zeek_path: str | None = None) -> None:
        self.name = name
        self.stats = stats
        self.reported: set[str] = set()
        self.odd_ids = 0
        self.kind = kind  # the problem kind of a bad object: json-line (NDJSON) or json-object
        self.replaced = 0
        self.bad_utf8 = 0  # NDJSON lines with invalid UTF-8
        self.zeek_path = zeek_path  # the Zeek log type the file name says, if any

    def line(self, line: bytes, lineno: int) -> Event | None:
        """One NDJSON line (its newline included) as an event; None for a blank line, and for
        broken JSON or an object that is no event (both counted and reported)."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if not line.strip():
                return None
            stats = self.stats
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_utf8 += 1
                if self.bad_utf8 == 1:
                    stats.error(self.name, "encoding",
                                "invalid UTF-8 (bytes replaced with U+FFFD; further lines counted)", lineno)
                else:
                    stats.errors["encoding"] += 1
                try:
                    obj = orjson.loads(line.decode("utf-8", errors="replace"))
                except orjson.JSONDecodeError as exc2:
                    stats.error(self.name, "json-line", f"broken JSON: {exc2}", lineno)
                    return None
            else:
                stats.error(self.name, "json-line", f"broken JSON: {exc}", lineno)
                return None
        return self.event(obj, lineno, self.zeek_path, suspicious(line))

    def too_long(self, lineno: int, size: int) -> None:
        """A line of ``size`` bytes, past MAX_OBJECT: reported, skipped (the C loop's call)."""
        self.stats.error(self.name, "json-line", _too_long(size), lineno)

    def event(self, obj: Any, line: int, zeek_path: str | None, check: bool = False) -> Event | None:
        """``check``: the raw text may hold a lone surrogate or deep nesting (sanitize.suspicious)."""
        if type(obj) is not dict:
            self._unknown(line, f"a JSON {type(obj).__name__}, not an object")
            return None
        if check and not self._clean(obj, line):
            return None
        shape = shape_of(obj)
        if shape is None and zeek_path and "ts" in obj:
            shape = "zeek"  # a Zeek JSON log named by its file (every Zeek log but loaded_scripts has ts)
        if shape is None:
            self._unknown(line, "object is not a Windows event (no Event/System, winlog, EventID or Channel)")
            return None
        if shape == "zeek":
            return self._zeek(obj, line, zeek_path)
        fields = _NORMALIZERS[shape](obj)
        if fields is None:
            self._unknown(line, "object has no usable event data")
            return None
        self.stats.events += 1
        if fields.get("EventID").__class__ is str:
            self.odd_ids += 1
            odd_event_id(self.stats, self.name, fields["EventID"], line, self.odd_ids == 1)
        return Event(fields, self.name, line, "json")

    def _zeek(self, obj: dict[str, Any], line: int, zeek_path: str | None) -> Event | None:
        path = obj.get("_path") or obj.get("@stream") or zeek_path
        if type(path) is not str or not path:
            self._problem("zeek", line, "Zeek line of unknown log type (no _path, @stream or log-named file)")
            return None
        if path not in ZEEK_LOGS and not path.replace("_", "").isalnum():
            self._problem("zeek", line, f"Zeek log type {path[:60]!r} is not a log name")
            return None
        fields, trouble = normalize_zeek(obj, path)
        if trouble:
            self._problem("zeek", line, trouble)
        self.stats.events += 1
        return Event(fields, self.name, line, "zeek")

    def _clean(self, obj: dict[str, Any], line: int) -> bool:
        try:
            n = clean(obj)
        except TooDeep as exc:
            self.stats.error(self.name, self.kind, f"object {exc}: skipped", line)
            return False
        if n:
            if not self.replaced:
                self.stats.error(self.name, "encoding", "lone UTF-16 surrogate escape (replaced with U+FFFD; "
                                 "further ones counted only)", line)
                n -= 1
            self.replaced += n
            self.stats.errors["encoding"] += n
        return True

    def _unknown(self, line: int, why: str) -> None:
        self._problem("json-not-event", line, why)

    def _problem(self, kind: str, line: int, why: str) -> None:
        # One line per file and kind is enough to explain it; every occurrence is counted.
        if kind in self.reported:
            self.stats.errors[kind] += 1
        else:
            self.reported.add(kind)
            self.stats.error(self.name, kind, why + " (further ones counted only)", line)


def read_json(
    name: str, stream: BinaryIO, stats: ReadStats, encoding: str = "utf-8", zeek_path: str | None = None,
    gate: ReadGate | None = None,
) -> Iterator[Event]:
    """Normalized events from a JSON/NDJSON stream (see module docstring).

    ``encoding`` is what :func:`~scmwatch.events.text.sniff_encoding` found; NDJSON in UTF-8
    (the common case) takes the bytes fast path, everything else is decoded in chunks.
    ``gate``: see :class:`~scmwatch.events.model.ReadGate` (NDJSON read by the C loop only).
    A plain function that reads the first line now and returns the reader's iterator: the C
    loop's events reach the caller without a generator frame of this function in between.
    """
    if encoding == "utf-8":
        # NDJSON iff the first non-blank line is a whole object (lines may be far longer than a chunk).
        blank: list[bytes] = []
        first = stream.readline(MAX_OBJECT)
        while first and not first.strip():
            blank.append(first)
            first = stream.readline(MAX_OBJECT)
        skipped = b"".join(blank)
        if first.lstrip()[:1] == b"{" and is_object_line(first):
            sink = _Sink(name, stats, "json-line", zeek_path)
            flavour = _flavour(first)
            if flavour:
                return _c_lines(skipped + first, stream, sink, 1, gate, flavour)
            lines = itertools.chain(blank, [first], _lines(stream, name, stats, len(blank) + 2))
            return _ndjson_bytes(lines, sink)
        stream = io.BufferedReader(Prefixed(skipped + first, stream), CHUNK)
    sink = _Sink(name, stats, "json-object")
    return _stream(TextChunks(name, stream, encoding, stats), sink, zeek_path, name, stats)


def _flavour(line: bytes) -> str | None:
    """The C loop's flavour for a file whose first object is this line: ``evtx`` or ``flat``
    (None: another shape, or the C loop not built). Decides the file's reader."""
    if NdjsonEvents is None:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    shape = shape_of(obj) if type(obj) is dict else None
    return shape if shape in ("evtx", "flat") else None


def _c_lines(head: bytes, stream: BinaryIO | None, sink: _Sink, first_line: int, gate: ReadGate | None,
             flavour: str) -> Iterator[Event]:
    """NDJSON lines through ``_flatten.NdjsonEvents``: ``head`` (whole lines), then ``stream``
    in blocks. Lines the C loop is not sure about go to :meth:`_Sink.line`. The loop itself is
    the iterator; it adds its bytes and events to the stats when it ends, fails or is closed."""
    blocks: Iterable[Any] = [head] if head else []
    if stream is not None:
        blocks = itertools.chain(blocks, read_blocks(stream))
    stats = sink.stats

    def end(nbytes: int, count: int, skipped: int) -> None:
        stats.bytes += nbytes
        stats.events += count + skipped  # skipped lines were read, as in read_evtx

    events = NdjsonEvents(blocks, sink.name, first_line, sink.line, sink.too_long, MAX_OBJECT,
                          gate.want if gate is not None else None, flavour == "flat", end)
    if gate is not None:
        gate.reader = events
    return events


def _lines(stream: BinaryIO, name: str, stats: ReadStats, lineno: int) -> Iterator[bytes]:
    """The stream's lines (the first is line ``lineno``), none longer than MAX_OBJECT: a longer
    one is reported and given as an empty line (so line numbers stay right), never held whole.
    ``_flatten.NdjsonEvents`` does the same in C."""
    readline = stream.readline
    while True:
        line = readline(MAX_OBJECT)
        if not line:
            return
        if len(line) == MAX_OBJECT and not line.endswith(b"\n"):
            size = len(line)
            while line and not line.endswith(b"\n"):
                line = readline(MAX_OBJECT)
                size += len(line)
            stats.bytes += size
            stats.error(name, "json-line", _too_long(size), lineno)
            line = b""
        lineno += 1
        yield line


def _too_long(size: int) -> str:
    return f"line of {size:,} bytes is longer than {MAX_OBJECT >> 20} MiB: skipped"


def is_object_line(line: bytes) -> bool:
    """Is this line one whole JSON object (what makes a file NDJSON)?"""
    try:
        return type(orjson.loads(line.decode("utf-8", errors="replace"))) is dict
    except orjson.JSONDecodeError:
        return False


def read_ndjson_lines(name: str, stream: BinaryIO, stats: ReadStats, first_line: int,
                      zeek_path: str | None = None, gate: ReadGate | None = None) -> Iterator[Event]:
    """The events of NDJSON lines that start at line ``first_line`` of their file (a
    range of a split file, ``events.ranges``): the same reading as the rest of a whole file.
    ``stream`` must be buffered (``peek`` tells the flavour from the first line)."""
    sink = _Sink(name, stats, "json-line", zeek_path)
    head = stream.peek(CHUNK)  # type: ignore[attr-defined]
    nl = head.find(b"\n")
    flavour = _flavour(head[:nl + 1]) if nl != -1 else None
    if flavour:
        return _c_lines(b"", stream, sink, first_line, gate, flavour)
    return _ndjson_bytes(_lines(stream, name, stats, first_line), sink, first_line)


def read_ndjson_batch(name: str, data: bytes, stats: ReadStats, first_line: int = 1,
                      zeek_path: str | None = None) -> Iterator[Event]:
    """Events from ``data``, complete NDJSON lines starting at line ``first_line`` of ``name``:
    a follower (:mod:`scmwatch.live`) reads a growing file in pieces and keeps its line numbers."""
    sink = _Sink(name, stats, "json-line", zeek_path)
    nl = data.find(b"\n")
    flavour = _flavour(data[:nl + 1] if nl != -1 else data)
    if flavour:
        return _c_lines(data, None, sink, first_line, None, flavour)
    return _ndjson_bytes(io.BytesIO(data), sink, first_line)


def _ndjson_bytes(stream: Iterable[bytes], sink: _Sink, first_line: int = 1) -> Iterator[Event]:
    stats = sink.stats
    line_event = sink.line
    for lineno, line in enumerate(stream, first_line):
        stats.bytes += len(line)
        event = line_event(line, lineno)
        if event is not None:
            yield event


def _stream(
    text: TextChunks, sink: _Sink, zeek_path: str | None, name: str, stats: ReadStats
) -> Iterator[Event]:
    """Concatenated objects or arrays, decoded incrementally from a text stream.

    Linear in the input whatever it holds: an object cut by the end of the buffer is decoded
    again only once the buffer has grown to twice its size (so an object of n characters costs
    O(n) decoding, not O(n²/CHUNK)), and after a broken object the search for the next one
    looks at each character once and keeps only the unsearched text.
    """
    decode = json.JSONDecoder().raw_decode
    buf = ""
    pos = 0
    line = 1  # line number at buf[pos]
    eof = False
    objects = 0  # decoded or reported: none at all is worth a line too

    def fill(want: int = 1) -> bool:
        """Append at least ``want`` characters (fewer only at the end); False if none came."""
        nonlocal buf, pos, eof
        parts = [buf[pos:]]
        got = 0
        while got < want and not eof:
            chunk = text.read(line)
            if not chunk:
                eof = True
                break
            parts.append(chunk)
            got += len(chunk)
        if got:
            buf = "".join(parts)
            pos = 0
        return got > 0

    fill()
    while True:
        # Skip separators: white space, and the brackets/commas of an array.
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,[]":
                ch = buf[pos]
                if ch == "\n":
                    line += 1
                pos += 1
            if pos < len(buf) or eof or not fill():
                break
        if pos >= len(buf):
            break
        objects += 1
        start_line = line
        try:
            obj, end = decode(buf, pos)
        except json.JSONDecodeError as exc:
            pending = len(buf) - pos
            cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(buf) - _TAIL
            if cut and not eof and pending < MAX_OBJECT:
                # the object continues: read as much again (up to the cap), then retry
                fill(max(min(pending, MAX_OBJECT - pending), CHUNK))
                continue
            if cut and not eof:
                why = f"object larger than {MAX_OBJECT >> 20} MiB: treated as broken"
            else:
                why = f"broken JSON: {exc.msg}"
            where = start_line + buf.count("\n", pos, min(exc.pos, len(buf)))
        except (ValueError, RecursionError) as exc:
            # an integer beyond Python's digit limit; nesting deeper than the interpreter's stack
            why = f"broken JSON: {str(exc).split(';')[0][:200]}"
            where = start_line
        else:
            line += buf.count("\n", pos, end)
            check = suspicious(buf, pos, end)
            pos = end
            event = sink.event(obj, start_line, zeek_path, check)
            if event is not None:
                yield event
            continue
        # A broken object: report it, then resynchronize on the next line that opens an object.
        stats.error(name, "json-object", why, where)
        scan = pos + 1
        while True:
            nxt = buf.find("\n{", scan)
            if nxt != -1 or eof:
                break
            keep = len(buf) - 1  # a "\n" at the very end may start the match
            line += buf.count("\n", pos, keep)
            pos = keep
            if not fill():
                break
            scan = 0
        if nxt == -1:
            break
        line += buf.count("\n", pos, nxt + 1)
        pos = nxt + 1
    if not objects:
        stats.error(name, "json-not-event", "no JSON object in the file (only brackets and commas)")
