"""Times as people read them: ``--timezone`` for the table and the results summary.

Machine outputs (JSONL, CSV, Timesketch, ECS) always keep UTC; only what a person reads in a
terminal is shown in the zone asked for: an IANA name (``Europe/Berlin``), ``UTC`` or
``local`` (this machine's zone).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo


class ZoneError(ValueError):
    """A ``--timezone`` value that names no zone (its message is the one-line error)."""


def parse_zone(name: str | None) -> tzinfo:
    """``--timezone`` value -> tzinfo; ``None`` or ``UTC`` -> UTC.

    ``zoneinfo`` is imported only for a zone other than UTC: it cost ~2.8 ms of every start."""
    if name is None or name.strip().upper() in ("UTC", "Z"):
        return UTC
    import zoneinfo

    text = name.strip()
    if text.lower() == "local":
        return _local_zone()
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ZoneError(f"--timezone {name}: not a time zone (an IANA name such as Europe/Berlin, "
                        "UTC, or local)") from None


def _local_zone() -> tzinfo:
    """This machine's zone with its DST rules ($TZ, /etc/localtime), else its current offset."""
    import zoneinfo

    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return zoneinfo.ZoneInfo(env)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return zoneinfo.ZoneInfo.from_file(fh, key="local")
    except (OSError, ValueError):
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC


def zone_label(tz: tzinfo) -> str:
    """A column header's zone: ``UTC``, ``Europe/Berlin``, or the local zone's abbreviation."""
    if tz is UTC:
        return "UTC"
    key = getattr(tz, "key", None)
    if key and key != "local":
        return key
    return f"local, {datetime.now(tz).tzname() or 'UTC'}"


def show_time(epoch: float, tz: tzinfo, digits: int = 3) -> str:
    """``2024-05-06 11:52:35.182`` in ``tz`` (``-`` for an event without a time); the offset is
    the column header's business, so rows stay narrow."""
    if not epoch:
        return "-"
    try:
        dt = datetime.fromtimestamp(epoch, UTC).astimezone(tz)
    except (OverflowError, OSError, ValueError):
        dt = datetime.fromtimestamp(epoch, UTC)
    text = dt.strftime("%Y-%m-%d %H:%M:%S")
    if digits:
        text += f".{dt.microsecond:06d}"[: digits + 1]
    return text
