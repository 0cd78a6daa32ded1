"""The XML reader's C fast path against the streaming ElementTree parser, its reference.

Both must give the same events (fields, record ids, order), the same counts and the same error
kinds for any input; messages may differ only in where a position is reported (the fast path
hands the rest of a file to the streaming parser, which then counts from there).
"""

from __future__ import annotations

import io
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paths import FIXTURES
from scmwatch.events import ReadStats, xml_reader

pytestmark = pytest.mark.skipif(xml_reader.fast_events is None, reason="the C extension is not in use")

_POS = re.compile(r": line \d+(, column \d+)?")


def _read(data: bytes, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple:
    monkeypatch.setattr(xml_reader, "fast_events", xml_reader._xml.parse_events if fast else None)
    stats = ReadStats()
    events = [(e.fields, e.record_id, e.fmt) for e in xml_reader.read_xml("x.xml", io.BytesIO(data), stats)]
    messages = [(e.kind, _POS.sub("", e.message)) for e in stats.first_errors]
    return events, dict(stats.errors), stats.events, messages


def same(data: bytes, monkeypatch: pytest.MonkeyPatch) -> list:
    fast = _read(data, True, monkeypatch)
    slow = _read(data, False, monkeypatch)
    assert fast == slow
    return fast[0]


def event(rid: str = "1", data: str = "<Data Name='ServiceName'>PSEXESVC</Data>", extra: str = "",
          ns: str = " xmlns='http://schemas.microsoft.com/win/2004/08/events/event'") -> str:
    return (f"<Event{ns}><System><Provider Name='Service Control Manager' Guid='{{555908d1}}' "
            "EventSourceName='Service Control Manager'/><EventID Qualifiers='16384'>7045</EventID>"
            "<Version>0</Version><Level>4</Level><TimeCreated SystemTime='2024-05-06T07:59:37.3407080Z'/>"
            f"<EventRecordID>{rid}</EventRecordID><Correlation/><Execution ProcessID='640' ThreadID='7'/>"
            "<Channel>System</Channel><Computer>WS1</Computer><Security UserID='S-1-5-18'/></System>"
            f"<EventData>{data}</EventData>{extra}</Event>")


def test_fixtures_and_simulated_xml_read_the_same(tmp_path, monkeypatch):
    from scmwatch.cli import main

    assert main(["simulate", "all", "--events", "3000", "--format", "xml", "--out", str(tmp_path / "s")]) == 0
    files = sorted((tmp_path / "s").rglob("*.xml")) + sorted(FIXTURES.rglob("*.xml"))
    assert len(files) > 10
    n = 0
    for f in files:
        n += len(same(f.read_bytes(), monkeypatch))
    assert n > 2000


@pytest.mark.parametrize("doc", [
    event(),
    "<?xml version='1.0' encoding='utf-8'?>\r\n<Events>\r\n" + event() + "\r\n" + event("2")
    + "\r\n</Events>\r\n",
    "<Events xmlns='urn:x'>" + event(ns="") + "</Events>",
    event(data="<Data Name='CommandLine'>cmd /c a &amp; b &lt;&gt; &quot;&apos; &#65;&#x42; "
          "\u00e9\u20ac\U0001f600</Data>"),
    event(data="<Data>one</Data><Data>two</Data><Binary>00FF</Binary><Data Name='Sp ace'/>"),
    event(data="", extra="<UserData><LogFileCleared xmlns='urn:u'><SubjectUserName>bob</SubjectUserName>"
          "<Empty/></LogFileCleared></UserData>"),
    event(extra="<RenderingInfo Culture='en-US'><Message>m</Message><Keywords><Keyword>A</Keyword></Keywords>"
          "</RenderingInfo>"),
    event(rid="abc") + event(rid="0x10") + event(rid=" 5") + event(rid="\u0665"),
    event(data="<Data Name='x'>  \t\n </Data>").replace("<Level>4</Level>", "<Level> \u2003 </Level>"),
    # outside the fast path's subset: the streaming parser must take over, with the same result
    event(data="<Data Name='x'><![CDATA[<b>]]></Data>") + event("2"),
    event(data="<!-- </Event> --><Data Name='x'>y</Data>") + event("2"),
    event(data="<Data Name='x'>a\rb</Data>") + event("2"),
    event(data="<Data Name='x' Name='y'>z</Data>"),
    event(data="<Data Name='x'>a<b>c</b>d</Data>"),
    event(data="<e:Data xmlns:e='urn:e' Name='x'>y</e:Data>"),
    event(data="<Data Name='x'>&unknown;</Data>") + event("2"),
    event(data="<Data Name='x'>&#0;</Data>") + event("2"),
    event(data="<Data Name='x'>a]]>b</Data>") + event("2"),
    event(data="<Data Name='x'>\x01</Data>") + event("2"),
    event(data="<Data Name='a\tb'>x</Data>"),
    event(data="<Event><System><EventID>1</EventID></System></Event>"),
    event(data="", extra="<UserData><Event><x>1</x></Event></UserData>"),
    event(extra="<RenderingInfo><Event><System><EventID>2</EventID></System></Event></RenderingInfo>"),
    event(extra="<Event/>"),
    event() + "<Other/>" + event("2") + "trailing text",
    "<!DOCTYPE x [<!ENTITY a 'b'>]><Events>" + event() + "</Events>",
    "<Events>" + event() + "</Events>" + event("2"),
    "<Events>" + event(),
    event()[:-3],
    event(data="<Data Name='x'>" + "A" * 300_000 + "</Data>") + event("2"),
    "",
    "<Events></Events>",
])
def test_cases_read_the_same(doc, monkeypatch):
    same(doc.encode("utf-8"), monkeypatch)


def test_every_truncation_reads_the_same(monkeypatch):
    second = event("2", data="<Data Name='a'>x &amp; y</Data>")
    doc = "<Events>\n" + event("1") + "\n" + second + "\n</Events>\n"
    data = doc.encode()
    for cut in range(0, len(data), 3):
        same(data[:cut], monkeypatch)


def test_utf16_and_invalid_bytes_read_the_same(monkeypatch):
    doc = "<Events>" + event(data="<Data Name='x'>\u00e9t\u00e9</Data>") + "</Events>"
    same(doc.encode("utf-16"), monkeypatch)
    same(doc.encode("utf-8").replace("\u00e9".encode(), b"\xff\xfe"), monkeypatch)


_piece = st.sampled_from([
    "<Data Name='a'>x</Data>", "<Data Name=\"b\">y &amp; z</Data>", "<Data/>", "<Data>u</Data>",
    "<Binary>0A</Binary>", "<Data Name='c'></Data>", " ", "\n", "\r\n", "<!--c-->", "<![CDATA[q]]>", "&lt;",
    "&#x41;", "&bad;", "<", ">", "]]>",
    "<Data Name='d'>\u00e9\U0001f600</Data>", "\x07", "<x:y/>", "<Data Name='e'><n/></Data>", "</EventData>",
    "<EventData>", "</Event>", "<Event>", "'", '"', "=", "\t",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_piece, max_size=12), st.lists(_piece, max_size=4), st.booleans())
def test_random_documents_read_the_same(monkeypatch, data, between, wrapped):
    doc = event("1", data="".join(data)) + "".join(between) + event("2")
    if wrapped:
        doc = "<Events>" + doc + "</Events>"
    same(doc.encode("utf-8", "surrogatepass"), monkeypatch)


def test_a_huge_event_is_read_in_linear_time(monkeypatch):
    """Refills double the buffer for an event that does not fit: a 20 MB field is parsed a few
    times, not once per 64 KiB read."""
    calls = []
    real = xml_reader._xml.parse_events

    def counting(buf, pos, final):
        calls.append(len(buf))
        return real(buf, pos, final)

    monkeypatch.setattr(xml_reader, "fast_events", counting)
    doc = event(data="<Data Name='x'>" + "A" * (20 << 20) + "</Data>").encode()
    stats = ReadStats()
    events = list(xml_reader.read_xml("big.xml", io.BytesIO(doc), stats))
    assert len(events) == 1 and len(events[0].fields["x"]) == 20 << 20
    assert len(calls) < 20 and sum(calls) < 3 * len(doc)


def test_recurring_strings_cache_never_mixes_values(monkeypatch):
    """Names and short values come from a bounded direct-mapped cache in C: thousands of distinct
    names and values (more than its 1,024 slots, near-identical ones, ones at and over its length
    limit) read exactly as the streaming parser reads them."""
    rng = random.Random(5)
    parts = []
    for i in range(3000):
        name = f"N{rng.randrange(5000)}" + "x" * rng.choice((0, 1, 38, 39, 40, 41))
        value = rng.choice((f"v{i}", f"v{i % 7}", "y" * rng.randrange(35, 45), ""))
        parts.append(event(str(i + 1), f"<Data Name='{name}'>{value}</Data><Data Name='A{i % 3}'>{i}</Data>"))
    events = same("\n".join(parts).encode(), monkeypatch)
    assert len(events) == 3000 and events[1234][0]["A1"] == "1234"


def test_system_time_shortcut_in_c_equals_iso_utc(monkeypatch):
    """The C parser cuts a valid SystemTime's 7th digit itself; every other value (out of range
    fields, 1969/2100, other lengths, non-digits) is left to iso_utc: the same as the streaming
    parser for valid and invalid times alike."""
    rng = random.Random(11)
    times = ["2024-02-29T12:00:00.1234567Z", "2023-02-29T12:00:00.1234567Z", "2000-02-29T00:00:00.0000000Z",
             "1970-01-01T00:00:00.0000000Z", "2099-12-31T23:59:59.9999999Z", "1969-12-31T23:59:59.9999999Z",
             "2100-01-01T00:00:00.0000000Z", "2024-01-01T24:00:00.0000000Z", "2024-01-01T00:60:00.0000000Z",
             "2024-01-01T00:00:60.0000000Z", "2024-01-01T00:00:00.000000aZ", "2024-01-01 00:00:00.0000000Z",
             "2024-01-01T00:00:00.00000000", "2024-01-01T00:00:00.000000Z", "2024-04-31T00:00:00.0000000Z"]
    times += [f"{rng.randint(1969, 2100):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
              f"{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}:{rng.randint(0, 60):02d}."
              f"{rng.randrange(10**7):07d}Z" for _ in range(1500)]
    doc = "\n".join(event(str(i + 1)).replace("2024-05-06T07:59:37.3407080Z", t) for i, t in enumerate(times))
    events = same(doc.encode(), monkeypatch)
    assert events[0][0]["TimeCreated"] == "2024-02-29T12:00:00.123456Z"
    assert events[1][0]["TimeCreated"] == "2023-02-29T12:00:00.1234567Z"


def test_batches_of_tiny_events_read_the_same(monkeypatch):
    """The C parser returns at most 256 events per call: tiny events (over a thousand per read)
    cross batch and read boundaries without a loss, with a wrapper and a CR LF mix."""
    tiny = [f"<Event><System><EventID>{i}</EventID></System></Event>" + ("\r\n" if i % 3 else "\n")
            for i in range(5000)]
    doc = "<Events>\r\n" + "".join(tiny) + "</Events>\n"
    events = same(doc.encode(), monkeypatch)
    assert [e[0]["EventID"] for e in events] == list(range(5000))
