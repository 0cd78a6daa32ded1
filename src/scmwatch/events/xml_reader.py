"""Windows event XML as ``wevtutil qe /f:xml`` or Event Viewer "Save as XML" write it.

``wevtutil`` writes ``<Event>`` elements back to back with no root element, which is not a
well-formed document. Two readers share the work:

* the fast path (C, ``events/_xml.c``: ``XmlEvents``) reads the file's UTF-8 bytes (UTF-16
  text is re-encoded) in blocks, one ``<Event>`` at a time, straight into Event objects, as
  long as the file has the plain shape these tools write (an optional XML declaration and
  ``<Events>`` wrapper, events, white space) and each event stays inside the strict XML subset
  the C parser is sure to read exactly as expat. The loop is the iterator the reader returns:
  1.38-1.45x the JSONL reader's events/s on the same events, 23x the streaming parser's
  (``bench/read_throughput.py --xml 50000``, three runs; 0.69x before the parser's field
  cache, and 0.49-0.50x when the bytes were decoded and re-encoded and a Python loop went
  over batches of dicts);
* the streaming parser (ElementTree, the reference) takes over from the first byte the fast
  path does not accept, to the end of the file: it feeds a synthetic root around the text
  (after dropping any XML declaration) into an incremental parser and removes each
  ``<Event>`` once it is normalized -- and every other element outside an ``<Event>`` as soon
  as it ends -- so memory stays flat whatever the file holds.

Neither expands entities beyond XML's predefined ones or fetches anything (no DTD is read).
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NamedTuple
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from scmwatch.events.model import Event, ReadStats, odd_event_id
from scmwatch.events.normalize import SYSTEM_ATTRS, SYSTEM_INTS, _int, iso_utc
from scmwatch.events.text import CHUNK, Prefixed, TextChunks, read_blocks
from scmwatch.native import pure_python

try:
    from scmwatch.events import _xml
except ImportError:  # no compiler at install time
    _xml = None  # type: ignore[assignment]

_DECL = re.compile(r"^\s*(<\?xml[^>]*\?>)?", re.S)
_PROLOG = re.compile(r"\s*(?:(<Events(?:\s+xmlns\s*=\s*(?:'[^'<&]*'|\"[^\"<&]*\"))?\s*>)\s*)?")
# An <Event> start tag as the C loop takes one (XML white space or '>' after the name), in
# decoded text and in UTF-8 bytes.
_FIRST_EVENT = re.compile(r"<Event[ \t\r\n>]")
_EVENT_START = re.compile(_FIRST_EVENT.pattern.encode())

fast_events = None  # ``_xml.XmlEvents`` when built and not switched off
if _xml is not None:
    _xml.configure(SYSTEM_ATTRS, SYSTEM_INTS, Event)
    if not pure_python():
        fast_events = _xml.XmlEvents


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag


def event_from_xml(elem: Element) -> dict[str, Any]:
    """One ``<Event>`` element → flat fields, matching what the EVTX reader produces."""
    out: dict[str, Any] = {}
    for part in elem:
        kind = _local(part.tag)
        if kind == "System":
            for child in part:
                key = _local(child.tag)
                if child.text is not None and child.text.strip():
                    out[key] = _int(child.text) if key in SYSTEM_INTS else child.text
                if child.attrib:
                    names = SYSTEM_ATTRS.get(key)
                    for attr, value in child.attrib.items():
                        name = (names.get(attr) if names else None) or f"{key}_{attr}"
                        out[name] = _int(value) if name in SYSTEM_INTS else value
                elif key not in out:
                    out[key] = None
        elif kind == "EventData":
            _data(part, out)
        elif kind == "UserData":
            for wrapper in part:
                _data(wrapper, out)
    if "TimeCreated" in out and out["TimeCreated"]:
        out["TimeCreated"] = iso_utc(out["TimeCreated"])
    return out


def _data(parent: Element, out: dict[str, Any]) -> None:
    unnamed: list[str] = []
    for item in parent:
        key = _local(item.tag)
        text = item.text if item.text is not None else ""
        name = item.get("Name") if key == "Data" else key
        if name is None:
            unnamed.append(text)
            continue
        if len(item):  # nested structure (rare): keep its text content
            text = "".join(item.itertext())
        out[name.replace(" ", "")] = text
    if unnamed:
        out["Data"] = unnamed if len(unnamed) > 1 else unnamed[0]


def read_xml(name: str, stream: BinaryIO, stats: ReadStats, encoding: str = "utf-8") -> Iterator[Event]:
    """Normalized events from Windows event XML (``encoding`` as sniffed by the dispatcher).

    A plain function that reads the head of the file now and returns the reader's iterator: the
    C loop's events reach the caller through ``itertools.chain``, without a generator frame of
    this module per event."""
    walk = _Walk(name, stats)
    if fast_events is None:
        text = TextChunks(name, stream, encoding, stats)
        return _streamed(_Rest("", _DECL.sub("", text.read(), count=1), None), text, walk)
    if encoding in ("utf-8", "utf-8-sig"):
        return _fast_bytes(stream, walk)
    return _fast_text(TextChunks(name, stream, encoding, stats), walk)


class _Rest(NamedTuple):
    """Where the fast path stopped: the streaming parser goes on from there."""

    wrapper: str  # the ``<Events>`` start tag still open, or ""
    text: str  # the text not read yet (more follows from the stream)
    lines: int | None  # line breaks before it (None: it is the whole file), for positions


def _breaks(data: bytes) -> int:
    """Line breaks as XML counts them (CR LF, LF, CR); one pass when there is no CR at all."""
    if b"\r" not in data:
        return data.count(b"\n")
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _prolog(before: str) -> tuple[str, int] | None:
    """The ``<Events>`` start tag (or "") and the line breaks in ``before``, the text before the
    first ``<Event>`` with any XML declaration removed; None when that text is something else."""
    before = _DECL.sub("", before, count=1)
    prolog = _PROLOG.fullmatch(before)
    if prolog is None:
        return None
    wrapper = re.sub(r"\s+", " ", prolog.group(1) or "")  # one line: positions stay right
    return wrapper, _breaks(before.encode("utf-8", "surrogatepass"))


def _fast_bytes(stream: BinaryIO, walk: _Walk) -> Iterator[Event]:
    """UTF-8 (the usual case): the C loop reads the file's own bytes, from its first ``<Event>``."""
    head = stream.read(CHUNK)
    bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    head = head[bom:]
    start = _EVENT_START.search(head)
    prolog = None
    if start is not None:
        try:
            prolog = _prolog(head[: start.start()].decode("utf-8"))
        except UnicodeDecodeError:
            pass
    if start is None or prolog is None:
        text = TextChunks(walk.name, Prefixed(head, stream), "utf-8", walk.stats)
        return _streamed(_Rest("", _DECL.sub("", text.read(), count=1), None), text, walk)
    stats = walk.stats
    before = start.start()

    def end(nbytes: int, count: int) -> None:
        stats.bytes += bom + before + nbytes
        stats.events += count
        walk.events += count

    def more(unread: bytes) -> tuple[str, TextChunks]:
        return "", TextChunks(walk.name, Prefixed(unread, stream), "utf-8", stats)

    blocks = itertools.chain((head[before:],), read_blocks(stream))
    events = fast_events(blocks, walk.name, bool(prolog[0]), walk.slow, end)
    return itertools.chain(events, _after(events, prolog, more, walk))


def _fast_text(text: TextChunks, walk: _Walk) -> Iterator[Event]:
    """Another encoding (UTF-16): the C loop reads the decoded text encoded as UTF-8."""
    first = text.read()
    start = _FIRST_EVENT.search(first)
    prolog = _prolog(first[: start.start()]) if start else None
    if start is None or prolog is None:
        return _streamed(_Rest("", _DECL.sub("", first, count=1), None), text, walk)

    def end(nbytes: int, count: int) -> None:
        walk.stats.events += count  # the bytes were counted as they were decoded
        walk.events += count

    def more(unread: bytes) -> tuple[str, TextChunks]:
        return unread.decode("utf-8", "surrogatepass"), text

    encoded = (chunk.encode("utf-8", "surrogatepass") for chunk in iter(text.read, ""))
    blocks = itertools.chain((first[start.start():].encode("utf-8", "surrogatepass"),), encoded)
    events = fast_events(blocks, walk.name, bool(prolog[0]), walk.slow, end)
    return itertools.chain(events, _after(events, prolog, more, walk))


def _after(events: Any, prolog: tuple[str, int], more: Callable[[bytes], tuple[str, TextChunks]],
           walk: _Walk) -> Iterator[Event]:
    """After the C loop ``events`` stopped: the streaming parser from where it stopped, if that
    was before the end of the file or inside the ``<Events>`` wrapper (``more(unread)`` gives the
    text from there), then the check that the file had an event."""
    unread, wrapper, lines = events.rest()
    if unread or wrapper:
        first, text = more(unread)
        yield from _stream(_Rest(prolog[0] if wrapper else "", first, prolog[1] + lines), text, walk)
    walk.finish()


def _streamed(rest: _Rest, text: TextChunks, walk: _Walk) -> Iterator[Event]:
    """The whole file through the streaming parser."""
    yield from _stream(rest, text, walk)
    walk.finish()


def _stream(rest: _Rest, text: TextChunks, walk: _Walk) -> Iterator[Event]:
    """The streaming parser from where ``rest`` says, to the end of the file."""
    parser = XMLPullParser(events=("start", "end"))
    parser.feed("<scmwatch-root>" + rest.wrapper)
    try:
        chunk = rest.text
        while True:
            if chunk:
                parser.feed(chunk)
                yield from walk.drain(parser)
            chunk = text.read()
            if not chunk:
                break
        parser.feed("</scmwatch-root>")
        yield from walk.drain(parser)
        parser.close()
    except ParseError as exc:
        walk.stats.error(walk.name, "xml", f"malformed XML ({_where(exc, rest.lines)}); {walk.events} events "
                         "before it were read")


def _where(exc: ParseError, lines: int | None) -> str:
    """The parser's message, its position moved to the whole file when it started after ``lines``
    line breaks (the column is the parser's own only after its first line)."""
    if lines is None:
        return str(exc)
    line, column = exc.position
    reason = str(exc).rsplit(": line ", 1)[0]
    return f"{reason}: line {line + lines}" + (f", column {column}" if line > 1 else "")


class _Walk:
    """Turns the parser's start/end events into Events, dropping every finished element."""

    def __init__(self, name: str, stats: ReadStats) -> None:
        self.name = name
        self.stats = stats
        self.stack: list[Element] = []
        self.in_event = 0  # <Event> elements open on the stack
        self.events = 0
        self.skipped = 0
        self.other = 0  # elements outside any <Event> (other than an <Events> wrapper)

    def emit(self, fields: dict[str, Any]) -> Event | None:
        """The Event of one ``<Event>``'s fields, counted; None (counted) without an EventID."""
        if "EventID" not in fields:
            self.skipped += 1
            self.stats.error(self.name, "xml", "<Event> without System/EventID skipped")
            return None
        self.events += 1
        self.stats.events += 1
        rid = fields.get("EventRecordID")
        if fields["EventID"].__class__ is str:
            first = "eventid-not-decimal" not in self.stats.errors
            odd_event_id(self.stats, self.name, fields["EventID"], rid, first)
        return Event(fields, self.name, rid if type(rid) is int else None, "xml")

    def slow(self, fields: dict[str, Any]) -> Event | None:
        """``emit`` for an event the C loop is not sure about, its TimeCreated made canonical."""
        tc = fields.get("TimeCreated")
        if tc and (len(tc) != 27 or tc[10] != "T" or tc[26] != "Z"):
            fields["TimeCreated"] = iso_utc(tc)
        return self.emit(fields)

    def finish(self) -> None:
        """At the end of the file: report one that had no event at all."""
        if not self.events and not self.skipped:
            self.stats.error(self.name, "xml", "no <Event> element in the file: nothing read")

    def drain(self, parser: XMLPullParser) -> Iterator[Event]:
        stack = self.stack
        for kind, elem in parser.read_events():
            is_event = _local(elem.tag) == "Event"
            if kind == "start":
                stack.append(elem)
                self.in_event += is_event
                continue
            stack.pop()
            if is_event:
                self.in_event -= 1
                event = self.emit(event_from_xml(elem))
                if event is not None:
                    yield event
            elif self.in_event:
                continue  # part of an <Event>: kept until the whole event is read
            elif stack and _local(elem.tag) != "Events":  # not the root, not Event Viewer's wrapper
                self.other += 1
                if self.other == 1:
                    tag = _local(elem.tag)[:60]
                    self.stats.error(self.name, "xml", f"<{tag}> is not an <Event>: skipped (further ones "
                                     "counted only)")
                else:
                    self.stats.errors["xml"] += 1
            if stack:
                stack[-1].remove(elem)  # free it: the parent would otherwise keep every element
