"""The few event fields that explain why a rule fired (for the table and CSV views)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scmwatch.alerts import Alert

# Gating fields say nothing the rule title does not already say.
_SKIP = frozenset({"EventID", "Channel", "Provider_Name", "Provider_Guid"})
# When a rule names no field (keyword rules, correlations), these usually tell the story.
_FALLBACK = ("ServiceName", "ImagePath", "ServiceFileName", "Image", "CommandLine", "ParentImage",
             "TargetObject", "Details", "RelativeTargetName", "ShareName", "IpAddress", "TargetUserName")
MAX_FIELDS = 4
MAX_VALUE = 160


def explain(alert: Alert, rule: Any | None, max_fields: int = MAX_FIELDS) -> list[tuple[str, str]]:
    """``[(field, value)]``: the rule's ``fields:`` first, then the fields its condition tests."""
    f = alert.event.fields
    names: list[str] = []
    if rule is not None:
        names.extend(getattr(rule, "fields", None) or [])
        names.extend(getattr(rule, "detection_fields", None) or [])
    if alert.correlation:
        gb = alert.correlation.get("group_by")
        if isinstance(gb, Mapping):
            return [(str(k), _short(v)) for k, v in list(gb.items())[:max_fields]]
    names.extend(_FALLBACK)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n in names:
        if n in seen or n in _SKIP:
            continue
        seen.add(n)
        v = f.get(n)
        if v in (None, "", []):
            continue
        out.append((n, _short(v)))
        if len(out) >= max_fields:
            break
    return out


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else str(v)
    if not text.isprintable() or "  " in text:
        text = " ".join(text.split())  # display only: multi-line / tab-padded values on one line
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"
