"""Build small EVTX files in tests, so no binary log has to be stored in the repository.

Records are written in the simplest BinXML the format allows (no templates: every element and
attribute name inline, every value a UTF-16 string), which is enough for the ``evtx`` parser to
render ``{"Event": {"System": ..., "EventData": ...}}`` exactly as it does for Windows' own
files. Chunk and file headers carry correct signatures, record ranges and CRC32 checksums.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

FILE_HEADER = 4096
CHUNK = 65536
RECORDS_AT = 512  # records start after the chunk header and its string/template tables
FILETIME_2024 = 133485408000000000  # 2024-01-01T00:00:00Z


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


class _Writer:
    """One record's BinXML; names are inline, so their offsets are absolute chunk offsets."""

    def __init__(self, at: int) -> None:
        self.at = at  # chunk offset of self.b[0]
        self.b = bytearray(b"\x0f\x01\x01\x00")  # fragment header

    def _name(self, name: str) -> None:
        self.b += struct.pack("<I", self.at + len(self.b) + 4)  # the name follows right here
        self.b += struct.pack("<IHH", 0, 0, len(name)) + _utf16(name) + b"\x00\x00"

    def _text(self, text: str) -> None:
        self.b += b"\x05\x01" + struct.pack("<H", len(text)) + _utf16(text)

    def element(self, tag: str, attrs: Sequence[tuple[str, str]] = (), text: str | None = None,
                children: Sequence[tuple] = ()) -> None:
        self.b += bytes([0x41 if attrs else 0x01])
        size_at = len(self.b)
        self.b += b"\x00\x00\x00\x00"
        self._name(tag)
        if attrs:
            list_at = len(self.b)
            self.b += b"\x00\x00\x00\x00"
            for i, (key, value) in enumerate(attrs):
                self.b += bytes([0x46 if i < len(attrs) - 1 else 0x06])
                self._name(key)
                self._text(value)
            struct.pack_into("<I", self.b, list_at, len(self.b) - list_at - 4)
        if text is None and not children:
            self.b += b"\x03"
        else:
            self.b += b"\x02"
            if text is not None:
                self._text(text)
            for child in children:
                self.element(*child)
            self.b += b"\x04"
        struct.pack_into("<I", self.b, size_at, len(self.b) - size_at - 4)


def record(rid: int, at: int, event_id: int = 7045, data: dict[str, str] | None = None,
           channel: str = "System", computer: str = "HOST1",
           time: str = "2024-01-01T00:00:00.000000Z", nested: int = 0) -> bytes:
    """One EVTX record (header, BinXML, size copy) to be placed at chunk offset ``at``;
    ``nested`` adds a chain of that many elements inside ``EventData``."""
    data = {"ServiceName": "PSEXESVC", "ImagePath": "%SystemRoot%\\PSEXESVC.exe"} if data is None else data
    w = _Writer(at + 24)
    system = [
        ("Provider", [("Name", "Service Control Manager")]),
        ("EventID", (), str(event_id)),
        ("TimeCreated", [("SystemTime", time)]),
        ("EventRecordID", (), str(rid)),
        ("Channel", (), channel),
        ("Computer", (), computer),
    ]
    items: list[tuple] = [("Data", [("Name", k)], v) for k, v in data.items()]
    if nested:
        chain: tuple = ("Leaf", (), "x")
        for _ in range(nested):
            chain = ("Nest", (), None, [chain])
        items.append(chain)
    w.element("Event", [("xmlns", "http://schemas.microsoft.com/win/2004/08/events/event")], None,
              [("System", (), None, system), ("EventData", (), None, items)])
    w.b += b"\x00"  # end of stream
    size = 24 + len(w.b) + 4
    return struct.pack("<IIQQ", 0x00002A2A, size, rid, FILETIME_2024) + bytes(w.b) + struct.pack("<I", size)


def records(first: int, count: int, **fields: object) -> bytes:
    """``count`` consecutive records from id ``first``, laid out from RECORDS_AT."""
    out = bytearray()
    for rid in range(first, first + count):
        out += record(rid, RECORDS_AT + len(out), **fields)  # type: ignore[arg-type]
    return bytes(out)


def chunk(body: bytes, first: int, last: int) -> bytes:
    """A 64 KiB chunk holding ``body`` (records from RECORDS_AT) with header range first..last."""
    if RECORDS_AT + len(body) > CHUNK:
        body = body[: CHUNK - RECORDS_AT]
    out = bytearray(CHUNK)
    out[RECORDS_AT:RECORDS_AT + len(body)] = body
    end = RECORDS_AT + len(body)
    struct.pack_into("<8sQQQQIII", out, 0, b"ElfChnk\x00", first, last, first, last, 128, RECORDS_AT, end)
    struct.pack_into("<I", out, 52, zlib.crc32(body))
    struct.pack_into("<I", out, 124, zlib.crc32(bytes(out[:120]) + bytes(out[128:RECORDS_AT])))
    return bytes(out)


def evtx_file(chunks: Sequence[bytes], declared: int | None = None, next_id: int | None = None) -> bytes:
    """A file header (``declared`` chunks, default all) followed by the chunks."""
    n = len(chunks) if declared is None else declared
    out = bytearray(FILE_HEADER)
    lasts = [struct.unpack_from("<Q", c, 32)[0] for c in chunks if c[:8] == b"ElfChnk\x00"]
    nxt = next_id if next_id is not None else (max(lasts, default=0) + 1) & 0xFFFF_FFFF_FFFF_FFFF
    struct.pack_into("<8sQQQIHHHH", out, 0, b"ElfFile\x00", 0, max(n - 1, 0), nxt, 128, 1, 3, FILE_HEADER,
                     n & 0xFFFF)
    struct.pack_into("<I", out, 124, zlib.crc32(bytes(out[:120])))
    return bytes(out) + b"".join(chunks)


def simple_file(count: int = 3, **fields: object) -> bytes:
    """One chunk of ``count`` records (ids 1..count)."""
    return evtx_file([chunk(records(1, count, **fields), 1, count)])


def concat(paths: Sequence[str]) -> bytes:
    """One EVTX file of the valid chunks the files ``paths`` declare, in order (records keep
    their ids): a large file made of real recordings."""
    chunks = []
    for path in paths:
        with open(path, "rb") as fh:
            data = fh.read()
        if data[:8] != b"ElfFile\x00":
            continue
        declared = struct.unpack_from("<H", data, 42)[0]
        for i in range(declared):
            c = data[FILE_HEADER + i * CHUNK:FILE_HEADER + (i + 1) * CHUNK]
            if len(c) == CHUNK and c[:8] == b"ElfChnk\x00":
                chunks.append(c)
    return evtx_file(chunks)


def service_chunks(n_chunks: int, per_chunk: int = 50, psexec_every: int = 17) -> list[bytes]:
    """Chunks of 7045 service installs on three hosts, every ``psexec_every``-th record PsExec's
    (ids 1, 2, ... in order); the first record of every third chunk is 40 s older than the one
    before it, as real logs are out of order near chunk boundaries."""
    chunks = []
    rid = 1
    for c in range(n_chunks):
        body = bytearray()
        for k in range(per_chunk):
            if rid % psexec_every == 0:
                data = {"ServiceName": "PSEXESVC", "ImagePath": "%SystemRoot%\\PSEXESVC.exe"}
            else:
                data = {"ServiceName": f"svc{rid % 40}",
                        "ImagePath": f"C:\\Program Files\\App{rid % 40}\\svc.exe"}
            sec = max(0, rid * 3 - (40 if k == 0 and c % 3 == 1 else 0))
            time = f"2024-01-01T{sec // 3600 % 24:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.000000Z"
            body += record(rid, RECORDS_AT + len(body), 7045, data, computer=f"HOST{rid % 3}", time=time)
            rid += 1
        chunks.append(chunk(bytes(body), rid - per_chunk, rid - 1))
    return chunks


# ---- records made of template instances, as Windows writes them -------------------------------

STRING, UINT32, GUID, BINXML = 0x01, 0x08, 0x0F, 0x21


class Sub(NamedTuple):
    """A substitution in a template: value ``index`` of the instance, declared ``vtype``."""

    index: int
    vtype: int = STRING
    optional: bool = True


class _Bin:
    """BinXML at a known chunk offset (names are written inline, so they need it). ``names``:
    the chunk's names written so far (name -> offset), when a name written once is to be
    referred to by its offset afterwards, as Windows refers to a chunk's string table."""

    def __init__(self, at: int, names: dict[str, int] | None = None) -> None:
        self.at = at
        self.b = bytearray()
        self.names = names

    def here(self) -> int:
        return self.at + len(self.b)

    def name(self, name: str) -> None:
        if self.names is not None and name in self.names:
            self.b += struct.pack("<I", self.names[name])
            return
        if self.names is not None:
            self.names[name] = self.here() + 4
        self.b += struct.pack("<I", self.here() + 4)
        self.b += struct.pack("<IHH", 0, 0, len(name)) + _utf16(name) + b"\x00\x00"

    def value(self, v: str | Sub) -> None:
        if isinstance(v, Sub):
            self.b += bytes([0x0E if v.optional else 0x0D]) + struct.pack("<HB", v.index, v.vtype)
        else:
            self.b += b"\x05\x01" + struct.pack("<H", len(v)) + _utf16(v)

    def element(self, tag: str, attrs: Sequence[tuple[str, str | Sub]] = (), content: Sequence = ()) -> None:
        """``content``: child elements as (tag, attrs, content) tuples, and values."""
        self.b += bytes([0x41 if attrs else 0x01]) + b"\xff\xff"  # dependency id
        size_at = len(self.b)
        self.b += b"\x00\x00\x00\x00"
        self.name(tag)
        if attrs:
            list_at = len(self.b)
            self.b += b"\x00\x00\x00\x00"
            for i, (key, v) in enumerate(attrs):
                self.b += bytes([0x46 if i < len(attrs) - 1 else 0x06])
                self.name(key)
                self.value(v)
            struct.pack_into("<I", self.b, list_at, len(self.b) - list_at - 4)
        if not content:
            self.b += b"\x03"
        else:
            self.b += b"\x02"
            for c in content:
                if isinstance(c, tuple) and not isinstance(c, Sub):
                    self.element(*c)
                else:
                    self.value(c)
            self.b += b"\x04"
        struct.pack_into("<I", self.b, size_at, len(self.b) - size_at - 4)

    def instance(self, tree: tuple, values: Sequence[tuple[int, object]], defs: dict) -> None:
        """A template instance of ``tree``, defined inline the first time (``defs``: tree -> offset)."""
        self.b += b"\x0c\x01" + struct.pack("<I", len(defs) + 1)
        known = defs.get(tree)
        if known is None:
            known = defs[tree] = self.here() + 4
        self.b += struct.pack("<I", known)
        if known == self.here():
            body = _Bin(self.here() + 24, self.names)
            body.b += b"\x0f\x01\x01\x00"
            body.element(*tree)
            body.b += b"\x00"
            self.b += struct.pack("<I", 0) + bytes(range(16)) + struct.pack("<I", len(body.b)) + body.b
        encoded = []
        for vtype, v in values:
            if vtype == BINXML:  # v: (tree, values) of a nested instance, or None for an empty one
                if v is None:
                    encoded.append((vtype, b""))
                    continue
                encoded.append((vtype, v))
            elif vtype == STRING:
                encoded.append((vtype, _utf16(str(v)) + b"\x00\x00"))
            elif vtype == UINT32:
                encoded.append((vtype, struct.pack("<I", int(v))))  # type: ignore[call-overload]
            elif vtype == GUID:
                encoded.append((vtype, bytes(v)))  # type: ignore[call-overload]
            else:
                encoded.append((vtype, b""))
        self.b += struct.pack("<I", len(encoded))
        desc_at = len(self.b)
        self.b += bytes(4 * len(encoded))
        for i, (vtype, data) in enumerate(encoded):
            start = len(self.b)
            if isinstance(data, tuple):
                self.b += b"\x0f\x01\x01\x00"
                self.instance(data[0], data[1], defs)
                self.b += b"\x00"
            else:
                self.b += data
            struct.pack_into("<HBB", self.b, desc_at + 4 * i, len(self.b) - start, vtype, 0)


def template_record(rid: int, at: int, tree: tuple, values: Sequence[tuple[int, object]],
                    defs: dict, names: dict[str, int] | None = None) -> bytes:
    """One record made of a template instance of ``tree`` with ``values`` ((type, value) pairs;
    a BINXML value is (tree, values) of a nested instance or None), to be placed at chunk offset
    ``at``; ``defs`` holds the chunk's template definitions written so far, ``names`` (optional)
    the names written so far, each then referred to by its offset (see :class:`_Bin`)."""
    w = _Bin(at + 24, names)
    w.b += b"\x0f\x01\x01\x00"
    w.instance(tree, values, defs)
    w.b += b"\x00"
    size = 24 + len(w.b) + 4
    return struct.pack("<IIQQ", 0x00002A2A, size, rid, FILETIME_2024) + bytes(w.b) + struct.pack("<I", size)
