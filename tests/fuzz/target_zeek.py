"""Fuzz target: bytes as a Zeek log, TSV or JSON, through the reader the content sniffs to.

The first byte picks the file name (``dce_rpc.log``, a sensor-prefixed ``HOST1_smb_files.log``,
or a name that says no log), the rest is the file. Properties (issue 11): no exception escapes the
reader; a file with content gives events or counted problems, and every data line of a TSV log
with a header is an event or a counted problem; the read ends in time linear in the input.
"""

from __future__ import annotations

import os
import tempfile
import time

from scmwatch.events import ReadStats, discover, read_input

_NAMES = ("dce_rpc.log", "HOST1_smb_files.log", "capture.log")
MAX_SECONDS = 5.0
SECONDS_PER_BYTE = 20e-6


def target(data: bytes) -> None:
    name, body = (_NAMES[data[0] % len(_NAMES)], data[1:]) if data else (_NAMES[0], b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as fh:
            fh.write(body)
        stats = ReadStats()
        start = time.monotonic()
        events = [ev for inp in discover([path], stats) for ev in read_input(inp, stats)]
        seconds = time.monotonic() - start
    problems = sum(stats.errors.values())
    if body.strip() and not events and not problems:
        raise AssertionError(f"{len(body)} bytes gave neither events nor a counted problem")
    if body.lstrip().startswith(b"#") and b"\n#fields" in body and not stats.files_failed:
        data_lines = sum(1 for line in body.split(b"\n") if line.strip(b"\r") and not line.startswith(b"#"))
        if len(events) + problems < data_lines:
            raise AssertionError(f"{data_lines} data lines, {len(events)} events, {problems} problems")
    if seconds > MAX_SECONDS + SECONDS_PER_BYTE * len(data):
        raise AssertionError(f"{len(data)} bytes took {seconds:.1f} s")
