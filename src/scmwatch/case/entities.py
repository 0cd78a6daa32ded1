"""What the case stores per alert besides the alert itself: its id, evidence and entity links.

The alert id (``alerts.alert_id``) is deterministic -- a hash of the rule id and the provenance
of every evidence event -- so hunting the same files again finds the ids already stored and adds nothing, and
hunting new files appends. Provenance is the input's *content* (its sha256) plus the record id,
not its path: the same EVTX file hunted from another directory, or after a copy, is the same
evidence. A source the case has no hash for (a synthetic correlation event) falls back to
its name.

Entity links (:mod:`scmwatch.correlate.lateral`) are derived from the alert's own evidence only,
so a retro-hunt gives the same links.
"""

from __future__ import annotations

from typing import Any

from scmwatch.correlate.lateral import Link, links_of


def event_host(fields: dict[str, Any]) -> str:
    return str(fields.get("Computer") or "")


__all__ = ["Link", "event_host", "links_of"]
