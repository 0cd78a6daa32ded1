"""Windows event XML as ``wevtutil qe /f:xml`` or Event Viewer "Save as XML" write it.

``wevtutil`` writes ``<Event>`` elements back to back with no root element, which is not a
well-formed document; the reader therefore feeds a synthetic root around the text (after
dropping any XML declaration) into an incremental parser and removes each ``<Event>`` once it
is normalized -- and every other element outside an ``<Event>`` as soon as it ends -- so memory
stays flat whatever the file holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from scmwatch.events.model import Event, ReadStats, odd_event_id
from scmwatch.events.normalize import SYSTEM_ATTRS, SYSTEM_INTS, _int, iso_utc
from scmwatch.events.text import TextChunks

_DECL = re.compile(r"^\s*(<\?xml[^>]*\?>)?", re.S)


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
    parser = XMLPullParser(events=("start", "end"))
    parser.feed("<scmwatch-root>")
    first = True
    walk = _Walk(name, stats)
    try:
        while True:
            chunk = text.read()
            if not chunk:
                break
            if first:
                chunk = _DECL.sub("", chunk, count=1)
                first = False
            parser.feed(chunk)
            yield from walk.drain(parser)
        parser.feed("</scmwatch-root>")
        yield from walk.drain(parser)
        parser.close()
    except ParseError as exc:
        stats.error(name, "xml", f"malformed XML ({exc}); {walk.events} events before it were read")
        return
    if not walk.events and not walk.skipped:
        stats.error(name, "xml", "no <Event> element in the file: nothing read")


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
                fields = event_from_xml(elem)
                if "EventID" not in fields:
                    self.skipped += 1
                    self.stats.error(self.name, "xml", "<Event> without System/EventID skipped")
                else:
                    self.events += 1
                    self.stats.events += 1
                    rid = fields.get("EventRecordID")
                    if fields["EventID"].__class__ is str:
                        odd_event_id(self.stats, self.name, fields["EventID"], rid,
                                     "eventid-not-decimal" not in self.stats.errors)
                    yield Event(fields, self.name, rid if type(rid) is int else None, "xml")
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
