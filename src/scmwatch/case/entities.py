"""What the case stores per alert besides the alert itself: its id, evidence and entity links.

The alert id is deterministic -- a hash of the rule id and the provenance of every evidence
event -- so hunting the same files again finds the ids already stored and adds nothing, and
hunting new files appends. Provenance is the input's *content* (its sha256) plus the record id,
not its path: the same EVTX file hunted from another directory, or after a copy, is the same
evidence. A source the case has no hash for (a synthetic correlation event) falls back to
its name.

Entity links (:mod:`scmwatch.correlate.lateral`) are derived from the alert's own evidence only,
so a retro-hunt gives the same links.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from scmwatch.alerts import Alert
from scmwatch.correlate.lateral import Link, evidence_of, links_of
from scmwatch.events.model import Event


def alert_id(alert: Alert, evidence: list[Event], identity: Callable[[str], str]) -> str:
    """``sha256(rule id, (content identity of the source, record id) per evidence event)``."""
    h = hashlib.sha256(alert.rule_id.encode("utf-8", "surrogatepass"))
    for ev in evidence:
        rid = ev.record_id
        h.update(b"\x00")
        h.update(identity(ev.source).encode("utf-8", "surrogatepass"))
        h.update(b"#" + str(rid if rid is not None else ev.fields.get("TimeCreated")).encode(
            "utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def event_host(fields: dict[str, Any]) -> str:
    return str(fields.get("Computer") or "")


__all__ = ["Link", "alert_id", "event_host", "evidence_of", "links_of"]
