"""Sigma rule YAML: loading (as ``hunt --rules`` and ``rules check`` do) gives rules or one-line
rejections, never an exception; whatever loads is compiled and run against one event."""

from __future__ import annotations

import os
import tempfile
import time

from fuzzlib import Violation, check_time

from scmwatch.events import Event
from scmwatch.sigma import Engine, load_rules

EVENT = Event({"EventID": 7045, "Channel": "System", "Provider_Name": "Service Control Manager",
               "ServiceName": "PSEXESVC", "ImagePath": "%SystemRoot%\\PSEXESVC.exe", "Computer": "HOST1",
               "TimeCreated": "2024-01-01T00:00:00.000000Z"}, "fuzz", 1, "json")


def target(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="scmwatch-fuzz-") as folder:
        path = os.path.join(folder, "rule.yml")
        with open(path, "wb") as fh:
            fh.write(data)
        start = time.perf_counter()
        ruleset = load_rules([path])
        for where, reason in ruleset.rejected:
            if not isinstance(reason, str) or "\n" in reason or "Traceback" in reason:
                raise Violation(f"rejection of {where} is not one line: {reason!r}")
        if ruleset.rules:
            engine = Engine(ruleset)
            engine.match(EVENT)
        check_time(time.perf_counter() - start, len(data), "load+match")
