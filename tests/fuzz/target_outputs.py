"""Fuzz target: hostile event values through every alert sink (table, CSV, JSONL).

The input bytes are decoded with ``surrogateescape`` (invalid UTF-8 becomes lone surrogates)
and split on ``\\x1f`` into values that fill an alert's host, title, source and fields, plus a
correlation alert whose group-by values and events carry them too. Properties: no sink raises;
the CSV parses back to exactly one row per alert (a CR or newline never splits a row) and no
cell starts a formula; every JSONL line is valid JSON; the table holds no raw control character.
"""

from __future__ import annotations

import csv
import io
import json

from scmwatch.alerts import Alert
from scmwatch.events.model import Event
from scmwatch.sinks import write_alerts

_EPOCH = 1_714_557_600.0  # 2024-05-01T10:00:00Z: times are the readers' business, not the sinks'
_NAMES = ("ServiceName", "ImagePath", "Computer", "CommandLine", "TargetObject")


def _alerts(data: bytes) -> list[Alert]:
    text = data.decode("utf-8", "surrogateescape")
    values = text.split("\x1f") or [""]
    pick = [values[i % len(values)] for i in range(8)]
    fields = {name: pick[i] for i, name in enumerate(_NAMES)}
    fields[pick[5] or "x"] = pick[6]  # a hostile field name too
    fields["EventID"] = 7045
    ev = Event(fields, pick[7], 1, "json", _EPOCH)
    single = Alert("rule-1", pick[1], "high", pick[2], [pick[3]], ev)
    corr = Alert("corr-1", pick[4], "critical", "", [], ev, events=[ev, Event(dict(fields), pick[0], None,
                 "json", _EPOCH + 1)], correlation={"type": "temporal", "group_by": {pick[5]: pick[6]}})
    return [single, corr]


def target(data: bytes) -> None:
    alerts = _alerts(data)

    out = io.StringIO()
    write_alerts(alerts, "csv", out, {})
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert len(rows) == 1 + len(alerts), rows
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row
    out.getvalue().encode("utf-8")  # writable as UTF-8

    out = io.StringIO()
    write_alerts(alerts, "jsonl", out, {})
    lines = out.getvalue().splitlines()
    assert len(lines) == len(alerts)
    for line in lines:
        json.loads(line)

    out = io.StringIO()
    write_alerts(alerts, "table", out, {}, color=False)
    table = out.getvalue()
    table.encode("utf-8")
    assert not any(c in table for c in "\x1b\x07\r\x9b\x9d"), repr(table)
