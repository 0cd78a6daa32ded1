"""Compressed and archived inputs (``.gz``, ``.zip`` members). The first byte picks the shape:

0: the rest is a ``.json.gz`` file as is;  1: the rest is a ``.zip`` file as is;
2: the rest is EVTX record bytes as ``target_evtx`` takes them, built into a file and
   gzip-compressed as ``.evtx.gz`` (a valid stream of fuzzed content, spooled to disk);
3: the rest as the one member ``log.json`` of a zip whose header flags and method come from
   the next three bytes (encrypted, deflate64, ... members).
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

from fuzzlib import read_and_hunt
from target_evtx import evtx_bytes


def _zip_with_flags(payload: bytes) -> bytes:
    flags, method = struct.unpack("<BH", payload[:3].ljust(3, b"\x00"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("log.json", payload[3:])
    raw = bytearray(buf.getvalue())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = raw.find(sig)
        if at >= 0:
            raw[at + flag_at] |= flags & 0x41  # bit 0: encrypted, bit 6: strong encryption
            if method & 1:
                struct.pack_into("<H", raw, at + method_at, (9, 14, 12, 99)[(method >> 1) % 4])
    return bytes(raw)


def target(data: bytes) -> None:
    shape, rest = (data[0] % 4, data[1:]) if data else (0, b"")
    if shape == 0:
        read_and_hunt(rest, "fuzz.json.gz")
    elif shape == 1:
        read_and_hunt(rest, "fuzz.zip")
    elif shape == 2:
        read_and_hunt(gzip.compress(evtx_bytes(rest), compresslevel=1), "fuzz.evtx.gz")
    else:
        read_and_hunt(_zip_with_flags(rest), "fuzz.zip")
