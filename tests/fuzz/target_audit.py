"""Fuzz target: hostile bytes through every audit reader (snapshot JSON, .reg export, sc.exe text).

The same bytes are read as each kind in turn, and once recognised by content as ``scmwatch
audit`` does. Properties: no exception escapes a reader, the checks or a report format; an input
that is refused is refused with a reported problem (never dropped without a word); the time stays
linear in the input.
"""

from __future__ import annotations

import time

from fuzzlib import Violation, check_time

from scmwatch.audit.load import READERS, AuditLog, read_data
from scmwatch.audit.report import RENDERERS, run_audit


def target(data: bytes) -> None:
    start = time.perf_counter()
    hosts = []
    for kind in (*READERS, None):
        log = AuditLog()
        hd = read_data(data, f"fuzz.{kind or 'any'}", log, kind)
        if hd is None and not log.problems:
            raise Violation(f"{kind or 'any'}: input refused without a reported problem")
        if hd is not None:
            hosts.append(hd)
    if hosts:
        res = run_audit(hosts)
        for render in RENDERERS.values():
            render(res).encode("utf-8")  # every output is writable: no lone surrogate left
    check_time(time.perf_counter() - start, len(data), "audit")
