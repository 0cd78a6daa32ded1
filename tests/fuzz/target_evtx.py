"""EVTX record bytes: the input is the first and last record id a chunk header declares
(``<QQ``) followed by the chunk's record area; the target wraps it in a valid chunk and file
header, so damage to record sizes, BinXML and ids reaches the parser and the chunk audit."""

from __future__ import annotations

import struct

from fuzzlib import read_and_hunt

import evtxbuild


def evtx_bytes(data: bytes) -> bytes:
    first, last = struct.unpack("<QQ", data[:16].ljust(16, b"\x00"))
    return evtxbuild.evtx_file([evtxbuild.chunk(data[16:], first, last)])


def target(data: bytes) -> None:
    read_and_hunt(evtx_bytes(data), "fuzz.evtx")
