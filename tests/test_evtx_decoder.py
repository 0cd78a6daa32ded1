"""The C EVTX decoder (``events/_evtx.c``) against the ``evtx`` package: the same events.

The reader decodes chunks itself and gives any chunk it is not sure of to the package; either
way the result must be the package's, event for event (fields with their types and order,
record ids) and problem for problem. The reference is every recording of the shared corpora;
damaged and crafted inputs check that doubt ends in the fallback, never in a difference, a
crash or a hang.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import evtxbuild
from paths import SHARED, evtx_files, need_shared
from scmwatch.events import evtx_reader
from scmwatch.events.model import ReadGate, ReadStats
from scmwatch.events.read import InputFile, read_input

pytestmark = pytest.mark.skipif(evtx_reader.DECODE_CHUNK is None, reason="the C decoder was not built")

CORPORA = SHARED / "corpora"
HEADER, CHUNK = evtx_reader.HEADER_SIZE, evtx_reader.CHUNK_SIZE


def read(source: str, c: bool, gate: ReadGate | None = None, sniffed: bool = False) -> tuple:
    """Everything a read gives, through the C decoder or through the package alone. ``sniffed``:
    read as a hunt reads a file (``read_input``: a small one read where it is sniffed)."""
    decode = evtx_reader.DECODE_CHUNK
    if not c:
        evtx_reader.DECODE_CHUNK = None
    try:
        stats = ReadStats()
        events = [(e.source, e.record_id, e.fmt, repr(list(e.fields.items())))
                  for e in (read_input(InputFile("in.evtx", source), stats, gate) if sniffed
                            else evtx_reader.read_evtx("in.evtx", source, stats, gate=gate))]
    finally:
        evtx_reader.DECODE_CHUNK = decode
    return (events, stats.events, stats.bytes, stats.files_failed, dict(stats.errors),
            [(e.kind, e.message, e.record) for e in stats.first_errors])


def assert_same(path: str) -> None:
    c, package = read(path, True), read(path, False)
    for part, a, b in zip(("events", "count", "bytes", "failed", "errors", "lines"), c, package, strict=True):
        assert a == b, f"{path}: C and package differ in {part}"
    if Path(path).read_bytes()[:8] == evtx_reader.MAGIC:
        assert read(path, True, sniffed=True) == c, f"{path}: read_input reads it otherwise"


def chunk_counts(path: str) -> tuple[int, int]:
    """(chunks, chunks the package decoded) of one file read through ChunkEvents."""
    events = evtx_reader.ChunkEvents(path, path, os.path.getsize(path))
    for _ in events:
        pass
    events.close()
    return events._chunks, events.fallback_chunks


def test_every_recording_of_the_corpora_is_read_as_the_package_reads_it() -> None:
    files = evtx_files(need_shared(CORPORA))
    assert len(files) > 100
    chunks = fallback = 0
    for path in files:
        assert_same(str(path))
        n, slow = chunk_counts(str(path))
        chunks += n
        fallback += slow
    # the decoder really does the work (18 of 863 chunks fell back when this was written)
    assert fallback < chunks * 0.05, (fallback, chunks)


def _corpus_chunks(limit: int) -> list[tuple[bytes, bytes]]:
    """(file header, chunk) of the first non-empty chunks of the attack samples, in a fixed order."""
    out = []
    for path in evtx_files(need_shared(CORPORA / "evtx-attack-samples")):
        data = path.read_bytes()
        for i in range((len(data) - HEADER) // CHUNK):
            chunk = data[HEADER + i * CHUNK:HEADER + (i + 1) * CHUNK]
            if chunk[:8] == b"ElfChnk\x00" and evtx_reader.DECODE_CHUNK(chunk, "x", None, {}) is not None:
                out.append((data[:HEADER], chunk))
                break
        if len(out) >= limit:
            break
    return out


def _mutations(chunk: bytes, rng: random.Random) -> list[bytes]:
    end = min(struct.unpack_from("<I", chunk, 48)[0], CHUNK)
    span = max(end - 512, 1)
    out = []
    for _ in range(3):
        b = bytearray(chunk)
        for _ in range(rng.choice((1, 2, 8))):  # bit flips in the tables and records
            at = rng.randrange(128, 512 + span)
            b[at] ^= 1 << rng.randrange(8)
        out.append(bytes(b))
    b = bytearray(chunk)  # a window of random bytes inside the records
    at = 512 + rng.randrange(span)
    b[at:at + 16] = rng.randbytes(16)
    out.append(bytes(b[:CHUNK]))
    b = bytearray(chunk)  # the records cut short at a random point
    cut = 512 + rng.randrange(span)
    b[cut:] = bytes(CHUNK - cut)
    out.append(bytes(b))
    return out


def test_damaged_chunks_of_real_recordings_read_as_the_package_reads_them(tmp_path: Path) -> None:
    rng = random.Random(13)
    cases = 0
    for header, chunk in _corpus_chunks(25):
        for mutated in _mutations(chunk, rng):
            path = tmp_path / f"m{cases}.evtx"
            path.write_bytes(header + mutated)
            assert_same(str(path))
            cases += 1
    assert cases >= 100


def _decoded(got: object) -> object:
    if isinstance(got, tuple):
        return [(e.record_id, repr(list(e.fields.items()))) for e in got[0]], got[1]
    return got


def test_a_prefix_of_a_chunk_decodes_as_the_whole_chunk_or_asks_for_it() -> None:
    """The reader gives the decoder a chunk up to its free-space offset: a prefix must decode
    exactly as the whole chunk does, or say (False) that it cannot, never differ; and the used
    part of an undamaged chunk is enough."""
    decode = evtx_reader.DECODE_CHUNK
    rng = random.Random(16)
    asked = cases = 0
    for _, chunk in _corpus_chunks(25):
        free = struct.unpack_from("<I", chunk, 48)[0]
        assert decode(chunk[:free], "x", None, {}) is not False
        for case in [chunk, *_mutations(chunk, rng)]:
            whole = _decoded(decode(case, "x", None, {}))
            free = struct.unpack_from("<I", case, 48)[0]
            cuts = {0, 100, 511, 512, 4096, free - 30, free - 1, free, free + 1, rng.randrange(512, CHUNK)}
            for cut in cuts | {CHUNK - 1}:
                if 0 <= cut < CHUNK:
                    got = decode(case[:cut], "x", None, {})
                    asked += got is False
                    assert got is False or _decoded(got) == whole, (cases, cut, free)
            cases += 1
    assert cases >= 100 and asked >= 100  # (cuts in the records, in the header)
    assert decode(bytes(CHUNK)[:4096], "x", None, {}) is False  # zeros so far: the rest decides


def test_a_chunk_is_read_up_to_its_free_space_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small files (read where sniffed) and large ones (pread chunk by chunk) alike: of a chunk
    only its header and records are read, the bytes past its free-space offset are not; a chunk
    of zeros is read whole (the package skips it only when all of it is zeros)."""
    from scmwatch.events import read as read_module

    chunks = [evtxbuild.chunk(evtxbuild.records(1 + 20 * k, 20), 1 + 20 * k, 20 + 20 * k) for k in range(2)]
    used = [struct.unpack_from("<I", c, 48)[0] for c in chunks]
    assert all(4096 < u < CHUNK // 2 for u in used)
    small = tmp_path / "small.evtx"
    small.write_bytes(evtxbuild.evtx_file([chunks[0], chunks[1], bytes(CHUNK)], declared=2))
    large = tmp_path / "large.evtx"
    large.write_bytes(evtxbuild.evtx_file([chunks[0], chunks[1], *[bytes(CHUNK)] * 3], declared=2))
    got = []
    real_read, real_pread = os.read, os.pread

    def spy_read(fd: int, n: int) -> bytes:
        got.append(real_read(fd, n))
        return got[-1]

    def spy_pread(fd: int, n: int, at: int) -> bytes:
        got.append(real_pread(fd, n, at))
        return got[-1]

    # each chunk's header is read, then the part it says (the header again); the large file's
    # header is read again by the chunk reader, the sniff's first chunk header unused
    for path, zeros, extra in ((small, 1, 0), (large, 3, HEADER + evtx_reader.PROBE)):
        got.clear()
        monkeypatch.setattr(os, "read", spy_read)
        monkeypatch.setattr(os, "pread", spy_pread)
        sniffed = read(str(path), True, sniffed=True)
        monkeypatch.setattr(os, "read", real_read)
        monkeypatch.setattr(os, "pread", real_pread)
        assert not sniffed[4], sniffed[4]  # a clean file: the chunk audit reads nothing more
        probes = (2 + zeros) * evtx_reader.PROBE
        assert sum(map(len, got)) == HEADER + probes + sum(used) + zeros * CHUNK + extra, path.name
        assert sniffed == read(str(path), False, sniffed=True)  # the package's events and problems
        assert [e[1] for e in sniffed[0]] == list(range(1, 41))
    assert read_module.WHOLE_EVTX >= small.stat().st_size and read_module.WHOLE_EVTX < large.stat().st_size


@pytest.mark.parametrize("free", [0, 100, 511, 512, 513, 2000, CHUNK - 1, CHUNK, CHUNK + 1, 2**32 - 1])
def test_a_lying_free_space_offset_reads_as_the_package_reads_it(tmp_path: Path, free: int) -> None:
    """Past the chunk, inside its header, inside its records: the reader then reads the whole
    chunk, or decodes what it read only where that decides it, and gives the package's result."""
    chunk = bytearray(evtxbuild.chunk(evtxbuild.records(1, 20), 1, 20))
    struct.pack_into("<I", chunk, 48, free)
    chunk[-200:] = random.Random(free).randbytes(200)  # the unused tail: not zeros
    good = evtxbuild.chunk(evtxbuild.records(21, 3), 21, 23)
    for name, body in (("one", [bytes(chunk)]), ("two", [bytes(chunk), good]),
                       ("many", [bytes(chunk), good, *[bytes(CHUNK)] * 4])):
        path = tmp_path / f"{name}.evtx"
        path.write_bytes(evtxbuild.evtx_file(body))
        assert_same(str(path))


@pytest.mark.parametrize("fields", [
    {},
    {"count": 40},
    {"nested": 3},
    {"nested": 60},  # deeper than the decoder goes: the package's path
    {"count": 1, "data": {"A": "x" * 30000}},  # one value of 60 KB of UTF-16
    {"data": {"Q": 'quote " backslash \\ tab \t nl \n \x01 é 漢 \uffff'}},
    {"data": {"Name With Space": "v", "EventID": "9", "Channel": "spoof"}},
    {"data": {"K" * 65: "long key", "L" * 300: "longer key, made per chunk", "K" * 64: "kept"}},
    {"data": {}},
    {"event_id": 4688, "channel": "Security", "computer": ""},
])
def test_built_files_read_as_the_package_reads_them(tmp_path: Path, fields: dict) -> None:
    count = fields.pop("count", 3)
    path = tmp_path / "b.evtx"
    path.write_bytes(evtxbuild.simple_file(count, **fields))
    assert_same(str(path))
    assert read(str(path), True)[1] == count


def test_files_of_many_chunks_preallocated_and_damaged_tails(tmp_path: Path) -> None:
    chunks = [evtxbuild.chunk(evtxbuild.records(1 + 10 * k, 10), 1 + 10 * k, 10 + 10 * k) for k in range(4)]
    zero = bytes(CHUNK)
    garbage = bytes(random.Random(1).randbytes(CHUNK))
    last_byte, first_byte = zero[:-1] + b"\x01", b"\x01" + zero[1:]  # not zeros: garbage too
    for name, body in (("plain", chunks), ("prealloc", [*chunks, zero, zero]),
                       ("gap", [chunks[0], zero, chunks[2]]), ("garbage", [chunks[0], garbage, chunks[1]]),
                       ("last-byte", [chunks[0], last_byte, chunks[1]]),
                       ("first-byte", [*chunks, first_byte])):
        path = tmp_path / f"{name}.evtx"
        path.write_bytes(evtxbuild.evtx_file(body))
        assert_same(str(path))
        cut = tmp_path / f"{name}-cut.evtx"
        cut.write_bytes(path.read_bytes()[:-1000])
        assert_same(str(cut))


def test_the_gate_skips_exactly_the_unwanted_records(tmp_path: Path) -> None:
    out = bytearray()
    for rid in range(1, 10):
        out += evtxbuild.record(rid, evtxbuild.RECORDS_AT + len(out), event_id=7045 if rid % 3 else 4624)
    path = tmp_path / "g.evtx"
    path.write_bytes(evtxbuild.evtx_file([evtxbuild.chunk(bytes(out), 1, 9)]))
    gate = ReadGate(lambda channel, eid: eid == 7045)
    c = read(str(path), True, gate)
    whole = read(str(path), True)
    assert [e[1] for e in c[0]] == [1, 2, 4, 5, 7, 8]
    assert c[1] == whole[1] == 9 and gate.skipped == 3
    assert c[0] == [e for e in whole[0] if e[1] % 3]


def test_chunk_ranges_use_the_decoder(tmp_path: Path) -> None:
    """``--jobs`` and the cluster read ranges of one file through the same reader."""
    from scmwatch.events.ranges import FileRange, read_range
    from scmwatch.events.read import InputFile

    chunks = [evtxbuild.chunk(evtxbuild.records(1 + 10 * k, 10), 1 + 10 * k, 10 + 10 * k) for k in range(4)]
    path = tmp_path / "r.evtx"
    path.write_bytes(evtxbuild.evtx_file(chunks))
    inp = InputFile(str(path), str(path))
    ids = []
    for part, (a, b) in enumerate(((0, 1), (1, 3), (3, 4))):
        unit = FileRange(inp, "evtx", part, 3, a, b, declared=4)
        stats = ReadStats()
        ids += [e.record_id for e in read_range(unit, stats)]
        assert not stats.errors
    assert ids == list(range(1, 41))


def test_pure_python_switches_the_decoder_off() -> None:
    code = "from scmwatch.events import evtx_reader as r; print(r.DECODE_CHUNK is None)"
    env = dict(os.environ, SCMWATCH_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize(("c", "refused"), [(True, False), (False, False), (True, True)],
                         ids=["decoder", "package-only", "loop-behind-a-refused-string"])
def test_a_string_table_that_loops_is_reported_not_followed(tmp_path: Path, c: bool, refused: bool) -> None:
    """The package follows a looping string table forever; the reader reports the chunk, also
    without the C decoder and when the decoder hands the chunk over for a string it refuses
    (a lone surrogate) before the loop."""
    body = evtxbuild.records(1, 2)
    chunk = bytearray(evtxbuild.chunk(body, 1, 2))
    end = struct.unpack_from("<I", chunk, 48)[0]
    a, b = end + 16, end + 64
    for at, nxt in ((a, b), (b, a)):  # two names, each the other's next
        struct.pack_into("<IHH", chunk, at, nxt, 0, 1)
        chunk[at + 8:at + 10] = "X".encode("utf-16-le")
    if refused:
        chunk[a + 8:a + 10] = b"\x00\xd8"
    struct.pack_into("<I", chunk, 128, a)
    good = evtxbuild.chunk(evtxbuild.records(3, 2), 3, 4)
    path = tmp_path / "loop.evtx"
    path.write_bytes(evtxbuild.evtx_file([bytes(chunk), good]))
    events, count, _, _, errors, lines = read(str(path), c)
    assert [e[1] for e in events] == [3, 4] and count == 2
    assert lines[0][:2] == ("evtx-record",
                            "Failed to parse chunk number 0: its string table loops (chunk skipped)")
    assert errors["evtx-record"] >= 2  # the loop, and the records 1-2 the audit finds missing


# Records made of template instances, as Windows writes them: the decoder renders the first
# record of each (template, value types and emptiness) in a chunk and replays the steps for the
# rest (``_evtx.c``, plans). These vary the types and emptiness of the values record by record
# (mostly alike, so plans are replayed), nest an instance in a BinXml value, take a key from a
# value, mix text and a substitution in one value, and cut the value list short.
_NS = ("xmlns", "http://schemas.microsoft.com/win/2004/08/events/event")
_SYSTEM = ("System", (), (
    ("Provider", (("Name", "Test-Provider"), ("Guid", evtxbuild.Sub(9, evtxbuild.GUID))), ()),
    ("EventID", (), (evtxbuild.Sub(0, evtxbuild.UINT32),)),
    ("Channel", (), (evtxbuild.Sub(1),)),
    ("Computer", (), (evtxbuild.Sub(2),)),
    ("Security", (("UserID", evtxbuild.Sub(3)),), ()),
))
_DATA = ("EventData", (), (
    ("Data", (("Name", "ServiceName"),), (evtxbuild.Sub(4),)),
    ("Data", (("Name", "ImagePath"),), (evtxbuild.Sub(5, optional=False),)),
    ("Data", (("Name", "ProcessGuid"),), (evtxbuild.Sub(6, evtxbuild.GUID),)),
    ("Data", (("Name", "Extra"),), (evtxbuild.Sub(7),)),
))
_TREES = {
    "flat": ("Event", (_NS,), (_SYSTEM, _DATA)),
    "nested": ("Event", (_NS,), (_SYSTEM, evtxbuild.Sub(10, evtxbuild.BINXML))),
    "key-from-value": ("Event", (_NS,), (_SYSTEM, ("EventData", (), (
        ("Data", (("Name", evtxbuild.Sub(7)),), (evtxbuild.Sub(8),)),)))),
    "text-and-value": ("Event", (_NS,), (_SYSTEM, ("EventData", (), (
        ("Data", (("Name", "M"),), ("pre-", evtxbuild.Sub(8))),)))),
    "positional": ("Event", (_NS,), (_SYSTEM, ("EventData", (), (
        ("Data", (), (evtxbuild.Sub(4),)), ("Data", (), (evtxbuild.Sub(5),)))))),
    "userdata": ("Event", (_NS,), (_SYSTEM, ("UserData", (), (("Thing", (), (evtxbuild.Sub(4),)),)))),
}


def _value(rng: random.Random, i: int) -> tuple[int, object]:
    kind = rng.choice(["str", "empty", "null", "num", "guid-text", "guid"])
    if rng.random() < 0.95:  # the usual type for the place
        kind = "num" if i == 0 else "guid" if i in (6, 9) else "str"
    return {
        "str": (evtxbuild.STRING, f"v{rng.randrange(3)}"),
        "empty": (evtxbuild.STRING, ""),
        "null": (0x00, None),
        "num": (evtxbuild.UINT32, rng.choice([0, 7045, 4688, 2**32 - 1])),
        "guid-text": (evtxbuild.STRING, "0CCE9243-69AE-11D9-BED3-505054503030"),
        "guid": (evtxbuild.GUID, rng.randbytes(16)),
    }[kind]


def _template_chunk(seed: int, n: int = 60) -> bytes:
    rng = random.Random(seed)
    defs: dict = {}
    body = bytearray()
    for k in range(n):
        name = rng.choice(list(_TREES))
        values = [_value(rng, i) for i in range(11)]
        if name == "nested":
            inner = [_value(rng, i) for i in range(11)]
            values[10] = (evtxbuild.BINXML, (_DATA, inner[: rng.choice([11, 11, 6])]))
        if rng.random() < 0.15:
            values = values[: rng.randrange(1, 11)]
        body += evtxbuild.template_record(k + 1, evtxbuild.RECORDS_AT + len(body), _TREES[name], values, defs)
    return evtxbuild.chunk(bytes(body), 1, n)


def test_template_records_read_as_the_package_reads_them(tmp_path: Path) -> None:
    for seed in range(20):
        path = tmp_path / f"t{seed}.evtx"
        path.write_bytes(evtxbuild.evtx_file([_template_chunk(seed)]))
        assert_same(str(path))
        assert chunk_counts(str(path)) == (1, 0)  # decoded in C, not handed over
        c = read(str(path), True, ReadGate(lambda channel, eid: eid == 7045))
        package = read(str(path), False, ReadGate(lambda channel, eid: eid == 7045))
        assert c == package


def test_chunks_in_holes_of_a_sparse_file_are_not_read(tmp_path: Path) -> None:
    """A preallocated file copied sparsely: its empty chunks are holes, known to be zeros without
    reading them; everything read is what reading the zeros gives."""
    chunks = [evtxbuild.chunk(evtxbuild.records(1 + 10 * k, 10), 1 + 10 * k, 10 + 10 * k) for k in range(2)]
    zero = bytes(CHUNK)
    dense = evtxbuild.evtx_file([chunks[0], zero, chunks[1], zero, zero])
    sparse = tmp_path / "sparse.evtx"
    with open(sparse, "wb") as fh:
        fh.write(dense[:HEADER + CHUNK])
        fh.seek(HEADER + 2 * CHUNK)
        fh.write(chunks[1])
        fh.truncate(len(dense))
    (tmp_path / "dense.evtx").write_bytes(dense)
    for c in (True, False):
        assert read(str(sparse), c) == read(str(tmp_path / "dense.evtx"), c)
    assert_same(str(sparse))
    fd = os.open(sparse, os.O_RDONLY)
    try:
        if not evtx_reader._has_holes(fd, len(dense)):
            pytest.skip("this filesystem stores no holes")
    finally:
        os.close(fd)
    events = evtx_reader.ChunkEvents(str(sparse), str(sparse), len(dense))
    assert len(list(events)) == 20
    events.close()
    assert events.hole_chunks == 3


def _edge_texts() -> list[str]:
    """Texts around the decoder's UTF-16 steps (16 units packed at a time) and its hash's sample
    (texts over 48 bytes): ASCII, then one Latin-1, DEL, C1 or CJK character at each edge."""
    out = []
    for n in (1, 7, 8, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49, 200):
        out.append("a" * n)
        for odd in ("é", "\x7f", "\x80", "ÿ", "漢"):
            for at in {0, n // 2, 15, 16, n - 1}:
                if at < n:
                    out.append("a" * at + odd + "b" * (n - at - 1))
    return out


def test_values_at_the_utf16_and_hash_edges_read_as_the_package_reads_them(tmp_path: Path) -> None:
    texts = _edge_texts()
    chunks, body, first = [], bytearray(), 1
    for rid, k in enumerate(range(0, len(texts), 8), 1):
        body += evtxbuild.record(rid, evtxbuild.RECORDS_AT + len(body),
                                 data={f"V{j}": t for j, t in enumerate(texts[k:k + 8])})
        if len(body) > 40000 or k + 8 >= len(texts):
            chunks.append(evtxbuild.chunk(bytes(body), first, rid))
            body, first = bytearray(), rid + 1
    path = tmp_path / "edges.evtx"
    path.write_bytes(evtxbuild.evtx_file(chunks))
    assert_same(str(path))
    got = [v for e in evtx_reader.read_evtx("in.evtx", str(path), ReadStats()) for k, v in e.fields.items()
           if k.startswith("V")]
    assert chunk_counts(str(path)) == (len(chunks), 0)  # all decoded in C
    assert got == texts


def test_long_values_that_share_the_hash_sample_stay_apart(tmp_path: Path) -> None:
    """Values of one length whose first, middle and last 16 bytes agree hash alike: each
    record must still get its own value, not a cached one of the same hash."""
    texts = ["H" * 8 + f"{k:08d}" + "M" * 8 + f"{k:08x}" + "T" * 8 for k in range(60)]  # 40 units
    assert len({len(t) for t in texts}) == 1 and len(set(texts)) == 60
    sample = {(t[:8], t[16:24], t[-8:]) for t in texts}  # bytes 0-15, 32-47, 64-79 of the UTF-16
    assert len(sample) == 1
    body = bytearray()
    for k, t in enumerate(texts):
        body += evtxbuild.record(k + 1, evtxbuild.RECORDS_AT + len(body), data={"CommandLine": t})
    path = tmp_path / "alike.evtx"
    path.write_bytes(evtxbuild.evtx_file([evtxbuild.chunk(bytes(body), 1, len(texts))]))
    assert_same(str(path))
    got = [e.fields["CommandLine"] for e in evtx_reader.read_evtx("in.evtx", str(path), ReadStats())]
    assert got == texts


# Plans are kept across chunks for templates of the same tokens and names (``template_key``):
# a chunk that refers to its names by offset must not take the plan of another chunk whose
# template has the same bytes but whose offsets hold other names.
def _system_with(tag: str) -> tuple:
    return ("System", (), (*_SYSTEM[2], (tag, (), (evtxbuild.Sub(8),))))


def _named_chunk(tag: str, shift: int = 0, n: int = 12) -> bytes:
    """Records of two templates, each name written once and referred to by offset afterwards:
    the second template's ``tag`` element is a reference to the name the first one wrote.
    ``shift`` records without templates come first (the templates then lie elsewhere)."""
    names: dict[str, int] = {}
    defs: dict = {}
    body = bytearray(evtxbuild.records(1, shift))
    first = ("Event", (_NS,), (_system_with(tag), _DATA))
    second = ("Event", (_NS,), (_system_with(tag), ("EventData", (), (
        ("Data", (("Name", "Only"),), (evtxbuild.Sub(4),)),))))
    s, g = evtxbuild.STRING, evtxbuild.GUID
    for k in range(n):
        values = [(evtxbuild.UINT32, 7045), (s, "System"), (s, f"HOST{k % 3}"), (s, "S-1-5-18"),
                  (s, f"svc{k}"), (s, "C:\\x.exe"), (g, bytes(range(16))), (s, ""), (s, f"t{k}"),
                  (g, bytes(range(16, 32)))]
        tree = first if k % 2 == 0 else second
        at = evtxbuild.RECORDS_AT + len(body)
        body += evtxbuild.template_record(shift + k + 1, at, tree, values, defs, names)
    return evtxbuild.chunk(bytes(body), 1, shift + n)


def test_templates_of_the_same_bytes_and_other_names_keep_apart(tmp_path: Path) -> None:
    """The second template of both chunks has the same bytes (its names are offsets into the
    first template, whose names have the same lengths), but those offsets name ``Alpha`` in one
    chunk and ``Gamma`` in the other: each chunk reads as the package reads it."""
    chunks = {tag: _named_chunk(tag) for tag in ("Alpha", "Gamma")}
    a, g = chunks["Alpha"], chunks["Gamma"]
    assert a != g and len(a) == len(g)
    for tag, chunk in chunks.items():
        path = tmp_path / f"{tag}.evtx"
        path.write_bytes(evtxbuild.evtx_file([chunk]))
        assert_same(str(path))
        assert chunk_counts(str(path)) == (1, 0)
        events = list(evtx_reader.read_evtx("in.evtx", str(path), ReadStats()))
        assert len(events) == 12 and all(e.fields[tag] == f"t{k}" for k, e in enumerate(events))


def test_plans_are_kept_across_chunks_and_files(tmp_path: Path) -> None:
    """A template met again in another chunk (here another file, its templates at other
    offsets) replays the plans its records made before: none of its records is rendered, and
    its templates are not even parsed."""
    counters = evtx_reader._evtx.counters
    first, moved = tmp_path / "first.evtx", tmp_path / "moved.evtx"
    first.write_bytes(evtxbuild.evtx_file([_named_chunk("Delta")]))
    moved.write_bytes(evtxbuild.evtx_file([_named_chunk("Delta", shift=3)]))
    assert_same(str(first))
    before = counters()
    assert_same(str(moved))
    after = counters()
    assert after["rendered"] == before["rendered"]
    assert after["parsed"] == before["parsed"]
    assert after["replayed"] > before["replayed"]
    assert after["plans"] == before["plans"] and after["plans"] > 0


def test_a_template_with_a_name_json_must_escape_goes_to_the_package_every_time(tmp_path: Path) -> None:
    """Template keys do not check names (``canon_name``): a template whose name the decoder
    refuses gets a key like any other, but never a plan, so each of its chunks, the second
    one too, is still handed to the package."""
    tree = ("Event", (_NS,), (_SYSTEM, ("EventData", (), (('Bad"Name', (), (evtxbuild.Sub(4),)),))))
    values = [(evtxbuild.UINT32, 7045), (evtxbuild.STRING, "System"), (evtxbuild.STRING, "HOST"),
              (evtxbuild.STRING, "S-1-5-18"), (evtxbuild.STRING, "svc")]
    for k in range(2):
        body = bytearray(evtxbuild.records(1, k))
        defs: dict = {}
        for rid in range(k + 1, k + 4):
            body += evtxbuild.template_record(rid, evtxbuild.RECORDS_AT + len(body), tree, values, defs)
        path = tmp_path / f"bad{k}.evtx"
        path.write_bytes(evtxbuild.evtx_file([evtxbuild.chunk(bytes(body), 1, k + 3)]))
        assert_same(str(path))
        events = evtx_reader.ChunkEvents(str(path), str(path), os.path.getsize(path))
        while True:  # the package's JSON of the name does not parse: an error per record
            try:
                next(events)
            except StopIteration:
                break
            except ValueError:
                continue
        events.close()
        assert events.fallback_chunks == 1
