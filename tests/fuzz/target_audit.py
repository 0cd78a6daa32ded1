"""Fuzz target: hostile bytes through every audit reader (snapshot JSON, .reg export, sc.exe text).

The same bytes are read as each kind in turn, and once recognised by content as ``scmwatch
audit`` does. Properties: no exception escapes a reader, the checks or a report format; an input
that is refused is refused with a reported problem (never dropped without a word).
"""

from __future__ import annotations

from scmwatch.audit.load import READERS, AuditLog, read_data
from scmwatch.audit.report import RENDERERS, run_audit


def target(data: bytes) -> None:
    hosts = []
    for kind in (*READERS, None):
        log = AuditLog()
        hd = read_data(data, f"fuzz.{kind or 'any'}", log, kind)
        assert hd is not None or log.problems, f"{kind}: input refused without a reported problem"
        if hd is not None:
            hosts.append(hd)
    if hosts:
        res = run_audit(hosts)
        for render in RENDERERS.values():
            render(res).encode("utf-8", "surrogatepass")
