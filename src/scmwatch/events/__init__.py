"""Reading: log files in, normalized :class:`Event` objects out (see ``read.py``)."""

from scmwatch.events.model import Event, ReadError, ReadGate, ReadStats, format_time, parse_time
from scmwatch.events.read import InputFile, discover, iter_events, read_input

__all__ = [
    "Event",
    "InputFile",
    "ReadError",
    "ReadGate",
    "ReadStats",
    "discover",
    "format_time",
    "iter_events",
    "parse_time",
    "read_input",
]
