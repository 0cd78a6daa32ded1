"""Zeek logs, TSV or JSON: the first byte picks the file name (``dce_rpc.log``, a sensor-prefixed
``HOST1_smb_files.log``, or ``capture.log``, which names no log), the rest is the file. Read, then
hunt (``fuzzlib.read_and_hunt``). Beyond the shared properties: every data line of a TSV log with
a header is an event or a counted problem (a bad ``#separator``, an absurd ``ts``, a short row)."""

from __future__ import annotations

from fuzzlib import Violation, read_and_hunt

_NAMES = ("dce_rpc.log", "HOST1_smb_files.log", "capture.log")


def target(data: bytes) -> None:
    name, body = (_NAMES[data[0] % len(_NAMES)], data[1:]) if data else (_NAMES[0], b"")
    events, stats = read_and_hunt(body, name)
    if body.lstrip().startswith(b"#") and b"\n#fields" in body and not stats.files_failed:
        rows = sum(1 for line in body.split(b"\n") if line.strip(b"\r") and not line.startswith(b"#"))
        problems = sum(stats.errors.values())
        if len(events) + problems < rows:
            raise Violation(f"{rows} data lines gave {len(events)} events and {problems} problems")
