"""Windows event XML as ``wevtutil qe /f:xml`` or Event Viewer "Save as XML" write it.

``wevtutil`` writes ``<Event>`` elements back to back with no root element, which is not a
well-formed document. Two readers share the work:

* the fast path (C, ``events/_xml.c``) reads one ``<Event>`` at a time from the UTF-8 bytes
  into the flat fields, as long as the file has the plain shape these tools write (an optional
  ``<Events>`` wrapper, events, white space) and each event stays inside the strict XML subset
  the C parser is sure to read exactly as expat: 8x the streaming parser's events/s and
  0.51-0.55x the JSONL reader's on the same events (``bench/read_throughput.py --xml 50000``;
  that reader reads 200k events/s since its own C loop);
* the streaming parser (ElementTree, the reference) takes over from the first byte the fast
  path does not accept, to the end of the file: it feeds a synthetic root around the text
  (after dropping any XML declaration) into an incremental parser and removes each
  ``<Event>`` once it is normalized -- and every other element outside an ``<Event>`` as soon
  as it ends -- so memory stays flat whatever the file holds.

Neither expands entities beyond XML's predefined ones or fetches anything (no DTD is read).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from scmwatch.events.model import Event, ReadStats, odd_event_id
from scmwatch.events.normalize import SYSTEM_ATTRS, SYSTEM_INTS, _int, iso_utc
from scmwatch.events.text import TextChunks
from scmwatch.native import pure_python

try:
    from scmwatch.events import _xml
except ImportError:  # no compiler at install time
    _xml = None  # type: ignore[assignment]

_DECL = re.compile(r"^\s*(<\?xml[^>]*\?>)?", re.S)
_FIRST_EVENT = re.compile(r"<Event[\s>]")
_PROLOG = re.compile(r"\s*(?:(<Events(?:\s+xmlns\s*=\s*(?:'[^'<&]*'|\"[^\"<&]*\"))?\s*>)\s*)?")
_END_WRAPPER = re.compile(rb"</Events[ \t\r\n]*>")
_STOP_LOW, _STOP_MORE, _STOP_OTHER, _STOP_REJECT, _STOP_BATCH = range(5)  # why _xml.parse_events stopped

fast_events = None  # ``_xml.parse_events`` when built and not switched off
if _xml is not None:
    _xml.configure(SYSTEM_ATTRS, SYSTEM_INTS)
    if not pure_python():
        fast_events = _xml.parse_events


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
    """Yield normalized events from Windows event XML (``encoding`` as sniffed by the dispatcher)."""
    text = TextChunks(name, stream, encoding, stats)
    walk = _Walk(name, stats)
    first = _DECL.sub("", text.read(), count=1)
    rest = _Rest("", first, None)
    if fast_events is not None:
        rest = yield from _fast(first, text, walk)
    if rest is not None:
        yield from _stream(rest, text, walk)
    if not walk.events and not walk.skipped:
        stats.error(name, "xml", "no <Event> element in the file: nothing read")


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


def _fast(first: str, text: TextChunks, walk: _Walk) -> Iterator[Event]:
    """The fast path over the file (see the module docstring); returns None when it read the
    whole file, else where the streaming parser must go on (a generator's return value)."""
    assert fast_events is not None
    start = _FIRST_EVENT.search(first)
    prolog = _PROLOG.fullmatch(first, 0, start.start()) if start else None
    if start is None or prolog is None:
        return _Rest("", first, None)
    wrapper = re.sub(r"\s+", " ", prolog.group(1) or "")  # one line: positions stay right
    lines = _breaks(first[: start.start()].encode("utf-8", "surrogatepass"))
    buf = first[start.start():].encode("utf-8", "surrogatepass")
    pos = 0
    eof = False
    while True:
        batch, pos, why = fast_events(buf, pos, eof)
        for fields in batch:
            tc = fields.get("TimeCreated")
            if tc and (len(tc) != 27 or tc[10] != "T" or tc[26] != "Z"):  # C wrote the canonical form
                fields["TimeCreated"] = iso_utc(tc)
            event = walk.emit(fields)
            if event is not None:
                yield event
        if why == _STOP_BATCH:
            continue
        if why == _STOP_LOW or why == _STOP_MORE:
            want = 64 if why == _STOP_LOW else 2 * (len(buf) - pos)
            buf, pos, lines, eof = _refill(buf, pos, lines, text, want)
            continue
        if why == _STOP_REJECT:
            break
        if pos == len(buf):
            return _Rest(wrapper, "", lines + _breaks(buf[:pos])) if wrapper else None
        end = _END_WRAPPER.match(buf, pos) if wrapper else None
        if end is None:
            break
        wrapper = ""
        pos = end.end()
    return _Rest(wrapper, buf[pos:].decode("utf-8", "surrogatepass"), lines + _breaks(buf[:pos]))


def _refill(buf: bytes, pos: int, lines: int, text: TextChunks, want: int) -> tuple[bytes, int, int, bool]:
    """Drop what was read, then read until ``want`` unread bytes are in the buffer (or the end):
    doubling ``want`` for an event that does not fit keeps a huge one linear, not quadratic."""
    if pos and buf[pos - 1 : pos] == b"\r":
        pos -= 1  # a CR LF split across reads stays one line break
    lines += _breaks(buf[:pos])
    parts = [buf[pos:]]
    have = len(parts[0])
    while have < want:
        chunk = text.read()
        if not chunk:
            return b"".join(parts), 0, lines, True
        data = chunk.encode("utf-8", "surrogatepass")
        parts.append(data)
        have += len(data)
    return b"".join(parts), 0, lines, False


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
