"""Timesketch: JSONL a Timesketch importer loads as it is (``--format timesketch``).

Timesketch requires ``message``, ``datetime`` (ISO 8601) and ``timestamp_desc`` on every line
(``TIMESKETCH_FIELDS`` of timesketch/lib/utils.py) and takes ``timestamp`` (microseconds) when
given; any other key becomes a searchable attribute. The alert's own attributes come first;
the event's fields follow under their own names, flat, each value as text (OpenSearch maps a
field by the first type it sees, so a number in one line and a word in the next would make the
importer reject the second line). A field name is cut to what OpenSearch keeps as one plain
attribute (letters, digits, ``_`` and ``-``: no dots, which would nest, no leading ``_``, which
Timesketch scrubs) and gets an ``event_`` prefix when it would collide with an attribute above.
"""

from __future__ import annotations

import re
from typing import Any

from scmwatch.alerts import Alert
from scmwatch.events.model import format_time
from scmwatch.sinks.csv_sink import evidence_json
from scmwatch.sinks.explain import explain
from scmwatch.sinks.jsonl import as_text

TIMESTAMP_DESC = "Event Recorded"
REQUIRED = ("message", "datetime", "timestamp_desc")
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")


def field_name(name: Any) -> str:
    """A log field name as one plain Timesketch attribute name."""
    text = _UNSAFE.sub("_", str(name)).lstrip("_-")
    return text[:120] or "field"


def timesketch_line(a: Alert, rule: Any | None) -> dict[str, Any]:
    """The Timesketch object for one alert."""
    t = a.time
    why = "; ".join(f"{k}={v}" for k, v in explain(a, rule))
    message = f"[{a.level}] {a.title}" + (f" on {a.host}" if a.host else "") + (f": {why}" if why else "")
    out: dict[str, Any] = {
        "message": message,
        "datetime": format_time(t).replace("Z", "+00:00") if t else "1970-01-01T00:00:00+00:00",
        "timestamp": round(t * 1_000_000) if t else 0,
        "timestamp_desc": TIMESTAMP_DESC if t else "No time in the event",
        "data_type": "scmwatch:alert",
        "level": a.level,
        "rule_title": a.title,
        "rule_id": a.rule_id,
        "tags": [str(t) for t in a.tags],
        "host": a.host,
        "source_file": a.event.source,
        "record_id": a.event.record_id,
        "evidence": evidence_json(a),
    }
    if a.repeat is not None:  # hunt --dedup
        out["count"] = a.repeat.count
        out["first_timestamp"] = format_time(a.repeat.first) if a.repeat.first else ""
        out["last_timestamp"] = format_time(a.repeat.last) if a.repeat.last else ""
    for name, value in a.event.fields.items():
        key = field_name(name)
        if key in out:
            key = "event_" + key
            n = 2
            while key in out:
                key, n = f"event_{field_name(name)}_{n}", n + 1
        out[key] = as_text(value)
    return out
